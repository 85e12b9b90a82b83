"""Reading points with only what changed (``ReadingLines``): fewer field values, nothing lost.

Every value a full point holds can still be read back from InfluxDB at every reading's time (the
latest point carrying the field), and the charts and the 10-minute rollup give what they give from
full points.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import httpx

from quartier.events import MeterReading
from quartier.influx import ensure_database, query, rollup_range
from quartier.settings import Settings
from streams.charts import meter_chart
from streams.line_protocol import ReadingLines, reading_line

START_MS = (int(time.time() * 1000) - 2 * 3_600_000) // 600_000 * 600_000  # a 10-minute boundary


def reading(second: int, **changes: Any) -> MeterReading:
    values: dict[str, Any] = dict(
        meter="012345678901", zone="rennes-01", time_ms=START_MS + second * 1000, seq=second, drawn_va=1_200,
        withdrawn_wh=10_000, withdrawn_wh_by_register=(6_000, 4_000), tariff_register=1,
        subscribed_kva=6, cutoff_kva=6, voltage_v=231, current_a=5,
    )
    values.update(changes)
    return MeterReading(**values)


def fields(line: str) -> dict[str, int]:
    series, field_set, _ = line.rsplit(" ", 2)
    return {name: int(value.rstrip("i")) for name, value in (f.split("=") for f in field_set.split(","))}


def test_after_a_full_first_point_only_what_changed_is_written() -> None:
    lines = ReadingLines()
    first, same, register_moved, tariff_switched = lines.lines([
        reading(0),
        reading(1, drawn_va=1_300, voltage_v=232),
        reading(2, withdrawn_wh=10_001, withdrawn_wh_by_register=(6_001, 4_000)),
        reading(3, withdrawn_wh=10_002, withdrawn_wh_by_register=(6_001, 4_001), tariff_register=2),
    ])
    assert first == reading_line(reading(0))
    assert fields(same) == {"drawn_va": 1_300, "withdrawn_wh": 10_000, "voltage_v": 232, "current_a": 5}
    assert fields(register_moved) == {"drawn_va": 1_200, "withdrawn_wh": 10_001, "voltage_v": 231, "current_a": 5,
                                      "withdrawn_wh_r1": 6_001}
    assert fields(tariff_switched) == {"drawn_va": 1_200, "withdrawn_wh": 10_002, "voltage_v": 231, "current_a": 5,
                                       "tariff_register": 2, "withdrawn_wh_r2": 4_001}
    assert same.split(" ")[0] == first.split(" ")[0] == "reading,meter=012345678901,zone=rennes-01"


def test_a_producer_keeps_its_injection_fields_and_forgetting_makes_the_next_point_full() -> None:
    lines = ReadingLines()
    producer = dict(meter="012345678902", injected_va=800, injected_wh=2_000)
    lines.lines([reading(0, **producer)])
    [night] = lines.lines([reading(1, **{**producer, "injected_va": 0})])
    assert fields(night)["injected_va"] == 0 and fields(night)["injected_wh"] == 2_000
    lines.forget()  # the worker's partitions changed
    [again] = lines.lines([reading(2, **producer)])
    assert again == reading_line(reading(2, **producer))
    # The first point of the next 10-minute window is full too (START_MS is on a boundary).
    [same, next_window] = lines.lines([reading(599, **producer), reading(600, **producer)])
    assert "tariff_register" not in same and next_window == reading_line(reading(600, **producer))


def write(settings: Settings, lines: list[str]) -> None:
    answer = httpx.post(
        f"{settings.influx.url}/write", params={"db": settings.influx.database, "rp": "raw", "precision": "ms"},
        content="\n".join(lines),
    )
    assert answer.status_code == 204, answer.text


def day_of(meter: str, producer: bool) -> list[MeterReading]:
    """20 minutes of one meter at 1 Hz: power wandering, a register switch at minute 8, an index
    moving every few seconds; a producer injects for the first 5 minutes only."""
    out, withdrawn, registers, injected = [], 50_000.0, [30_000.0, 20_000.0], 7_000.0
    for second in range(1_200):
        tariff = 1 if second < 480 else 2
        drawn = 900 + (second * 37) % 1_100
        withdrawn += drawn / 3600
        registers[tariff - 1] += drawn / 3600
        injecting = producer and second < 300
        injected += 600 / 3600 if injecting else 0
        out.append(reading(
            second, meter=meter, drawn_va=drawn, withdrawn_wh=int(withdrawn),
            withdrawn_wh_by_register=(int(registers[0]), int(registers[1])), tariff_register=tariff,
            injected_va=600 if injecting else 0, injected_wh=int(injected) if producer else 0,
            voltage_v=228 + second % 5, current_a=drawn // 230,
        ))
    return out


def test_influxdb_gives_back_every_value_of_every_reading_and_the_same_charts_and_rollup(
    influx: dict[str, Any], make_settings: Callable[..., Settings]
) -> None:
    full, changed = make_settings(influx), make_settings(influx)
    ensure_database(full)
    ensure_database(changed)
    readings = day_of("012345678901", producer=False) + day_of("012345678902", producer=True)
    write(full, [reading_line(r) for r in readings])
    lines = ReadingLines()
    written = lines.lines(readings)
    write(changed, written)
    # 2,400 points of 9 fields in full; with indexes moving every 2-4 s here (900-2,000 W) and a
    # producer keeping its injection fields, 40 % fewer field values.
    assert sum(len(fields(reading_line(r))) for r in readings) == 21_600
    assert sum(len(fields(line)) for line in written) == 12_980

    # At every reading's time, the latest value of each field is the reading's own (one-second
    # buckets, each empty one filled with the value before it: what "value at time t" reads).
    names = ["drawn_va", "withdrawn_wh", "injected_va", "injected_wh", "withdrawn_wh_r1", "withdrawn_wh_r2",
             "tariff_register", "voltage_v", "current_a"]
    for meter in ("012345678901", "012345678902"):
        rows = query(changed, f"SELECT {', '.join(f'last({n}) AS {n}' for n in names)} FROM reading "
                              f"WHERE meter = '{meter}' AND time >= {START_MS}ms AND time < {START_MS + 1_200_000}ms "
                              "GROUP BY time(1s) fill(previous)")
        mine = [r for r in readings if r.meter == meter]
        assert [{n: row[n] for n in names} for row in rows] == [
            {"drawn_va": r.drawn_va, "withdrawn_wh": r.withdrawn_wh, "injected_va": r.injected_va,
             "injected_wh": r.injected_wh, "withdrawn_wh_r1": r.withdrawn_wh_by_register[0],
             "withdrawn_wh_r2": r.withdrawn_wh_by_register[1], "tariff_register": r.tariff_register,
             "voltage_v": r.voltage_v, "current_a": r.current_a}
            for r in mine
        ]

    # The charts read the same points, and the rollup (recomputed over the range) is the same.
    end_ms = START_MS + 1_200_000
    for meter in ("012345678901", "012345678902"):
        raw = meter_chart(changed, meter, 1_200, end_ms=end_ms)
        assert raw.plan.policy == "raw" and len(raw.points) == 600
        assert raw.points == meter_chart(full, meter, 1_200, end_ms=end_ms).points
    assert rollup_range(full, START_MS, end_ms) == rollup_range(changed, START_MS, end_ms) == 4
    rollup = 'SELECT * FROM "rollup"."reading_10m" GROUP BY * ORDER BY time'
    assert query(changed, rollup) == query(full, rollup)
    for meter in ("012345678901", "012345678902"):
        week = meter_chart(changed, meter, "7d", end_ms=end_ms)
        assert week.plan.policy == "rollup" and len(week.points) == 2
        assert week.points == meter_chart(full, meter, "7d", end_ms=end_ms).points


def test_the_worker_writes_changed_points_only_when_its_settings_say_so(tmp_path: Path) -> None:
    from streams.worker import StreamWorker

    rs = [reading(0), reading(1, drawn_va=1_300)]
    full = StreamWorker(Settings(state_dir=tmp_path / "full"), "full-points")
    changed = StreamWorker(Settings(state_dir=tmp_path / "changed", influx={"reading_points": "changed"}), "changed-points")
    assert full.reading_lines(rs) == [reading_line(r) for r in rs]
    assert changed.reading_lines(rs) == ReadingLines().lines(rs)
    assert "tariff_register" not in changed.reading_lines([reading(2)])[0]
