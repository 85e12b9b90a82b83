"""Consent: a household's chosen resolution decides what InfluxDB stores of its meter; alerts still fire."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from quartier import events, topics
from quartier.events import ResolutionChosen
from quartier.kafka import ensure_topics
from quartier.stack.component import pick_port
from quartier.influx import query
from streams.resolution import ResolutionGate
from tests.streams.worker_support import WorkerProcess, alerts_of, batches, quiet_rules, readings, scrape, send
from tests.support import isolated_settings

HALF_HOUR_MS = 30 * 60 * 1000


def test_the_gate_keeps_1hz_lines_only_for_meters_that_chose_them_and_sums_each_window() -> None:
    gate = ResolutionGate("1hz")
    gate.choose(ResolutionChosen(meter="000000000030", resolution="30min", at_ms=0))
    start = 1_800_000_000_000 - 1_800_000_000_000 % HALF_HOUR_MS
    coarse_meter = readings("000000000030", start, [100, 300] + [200] * 1798 + [500])  # 1,801 readings
    fine_meter = readings("000000000001", start, [100, 200])
    detail, coarse = gate.lines(coarse_meter + fine_meter)
    assert [line.split(",", 1)[0] for line in detail] == ["reading", "reading"]
    assert all("meter=000000000001" in line for line in detail)
    # The first window closed when the 1,801st reading (next window) came: its point, exactly.
    first_window = coarse_meter[:1800]
    mean = sum(r.drawn_va for r in first_window) / 1800
    assert coarse == [
        f"reading_30m,meter=000000000030,zone=rennes-01 drawn_va={mean},drawn_va_max=300i,injected_va=0.0,"
        f"withdrawn_wh={first_window[-1].withdrawn_wh}i,injected_wh=0i,readings=1800i {start}"
    ]
    gate.choose(ResolutionChosen(meter="000000000030", resolution="1hz", at_ms=1))
    detail, coarse = gate.lines(readings("000000000030", start + HALF_HOUR_MS + 1000, [100], seq0=1801))
    assert len(detail) == 1 and coarse == []  # the window collected under 30min is never written


async def test_a_meter_at_30_minute_resolution_has_no_1hz_point_and_its_alerts_still_fire(
    broker: dict[str, Any], influx: dict[str, Any], tmp_path: Path
) -> None:
    settings = isolated_settings(tmp_path / "state", broker, influx)
    await ensure_topics(settings)
    coarse, fine = "000000000030", "000000000031"
    await send(settings, topics.METER_RESOLUTION.name, [
        (coarse.encode(), events.encode(ResolutionChosen(meter=coarse, resolution="30min", at_ms=1))),
        (fine.encode(), events.encode(ResolutionChosen(meter=fine, resolution="1hz", at_ms=1))),
    ])
    rules = quiet_rules(coarse, power_max_w=3000, for_s=10)
    await send(settings, topics.ALERTS_RULES.name, [(coarse.encode(), events.encode(rules))])
    now_ms = int(time.time() * 1000)
    start = now_ms - 2 * 3600_000 - now_ms % HALF_HOUR_MS
    # An hour and a second of readings: two whole windows, and a reading that closes the second one.
    # Minutes 10 to 11 draw 4,000 VA: over the 3,000 W limit for more than 10 s.
    powers = [4000 if 600 <= i < 660 else 500 for i in range(3601)]
    coarse_readings = readings(coarse, start, powers)
    fine_readings = readings(fine, start, [700] * 120)
    port = pick_port(0)
    argv = ["-m", "quartier.cli", "streams", "worker", "--app-id", settings.topic("worker"),
            "--metrics-port", str(port), "--deadman-interval", "0"]
    with WorkerProcess(argv, settings, tmp_path / "worker.log") as worker:
        await send(settings, topics.METER_READINGS.name,
                   batches(settings, coarse_readings, 200) + batches(settings, fine_readings, 60))

        async def consumed() -> bool:
            return scrape(port).get("quartier_readings_consumed_total", 0) >= 3601 + 120

        await worker.until(consumed, 120, "every reading consumed")

        async def windows() -> list[dict[str, Any]] | None:
            rows = query(settings, f'SELECT * FROM "rollup"."reading_30m" WHERE meter = \'{coarse}\'')
            return rows if len(rows) == 2 else None

        rows = await worker.until(windows, 60, "the two 30-minute points")

        async def fine_points() -> int | None:
            rows = query(settings, f"SELECT count(drawn_va) FROM reading WHERE meter = '{fine}'")
            return rows[0]["count"] if rows and rows[0]["count"] == 120 else None

        assert await worker.until(fine_points, 60, "the 1 Hz meter's 120 points") == 120
        raised = [a for a in await alerts_of(settings, coarse) if a.state == "raised"]
    assert [(a.kind, a.at_ms) for a in raised] == [("power_above", start + 610_000)]
    assert query(settings, f"SELECT count(drawn_va) FROM reading WHERE meter = '{coarse}'") == []
    assert query(settings, f"SELECT count(drawn_va) FROM \"rollup\".\"reading\" WHERE meter = '{coarse}'") == []
    assert [r["time"] for r in rows] == [start, start + HALF_HOUR_MS]
    assert [r["readings"] for r in rows] == [1800, 1800]
    assert [r["withdrawn_wh"] for r in rows] == [coarse_readings[1799].withdrawn_wh, coarse_readings[3599].withdrawn_wh]
    assert rows[0]["drawn_va"] == (60 * 4000 + 1740 * 500) / 1800 and rows[0]["drawn_va_max"] == 4000
