"""The stream worker (``quartier streams worker``) as a real process, on the real broker and InfluxDB."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from quartier import events, topics
from quartier.events import AlertEvent, MeterReading, ReadingBatch, RejectedReading, alert_id, shard_of
from quartier.kafka import ensure_topics, read_all
from quartier.settings import Settings
from quartier.stack.component import pick_port
from quartier.stack.influx import count_points
from tests.support import isolated_settings
from tests.streams.worker_support import WorkerProcess, alerts_of, batches, quiet_rules, readings, scrape, send

METER_ALERTED = "100000000001"  # has a 3,000 W limit
METER_FREE = "100000000002"  # no rules: never alerted, whatever it draws
METER_LATE = "100000000003"  # gets its rules while the worker runs
METER_BAD = "100000000004"  # one of its frames is malformed


class Running:
    def __init__(self, settings: Settings, worker: WorkerProcess, metrics_port: int) -> None:
        self.settings = settings
        self.worker = worker
        self.metrics_port = metrics_port

    def metric(self, name: str) -> float:
        return scrape(self.metrics_port).get(name, 0.0)


@pytest.fixture(scope="module")
async def running(broker: dict[str, Any], influx: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Running]:
    tmp: Path = tmp_path_factory.mktemp("worker")
    settings = isolated_settings(tmp / "state", broker, influx)
    await ensure_topics(settings)
    # Rules set before the worker starts: it must read them from the beginning of alerts.rules.
    await send(
        settings,
        topics.ALERTS_RULES.name,
        [(METER_ALERTED.encode(), events.encode(quiet_rules(METER_ALERTED, power_max_w=3_000, for_s=10)))],
    )
    port = pick_port(0)
    argv = ["-m", "quartier.cli", "streams", "worker", "--app-id", settings.topic("worker"), "--metrics-port", str(port),
            "--deadman-interval", "0"]
    with WorkerProcess(argv, settings, tmp / "worker.log") as worker:
        running = Running(settings, worker, port)
        await worker.until(lambda: _async(running.metric("quartier_alert_rules_applied_total") >= 1), 60, "rules loaded")
        yield running


async def _async(value: Any) -> Any:
    return value


# Meter time a few minutes ago: InfluxDB refuses points older than the raw retention policy.
START_MS = (int(time.time()) - 600) * 1000


async def test_power_above_raises_once_and_resolves_once_with_the_same_id(running: Running) -> None:
    settings = running.settings
    alerted = readings(METER_ALERTED, START_MS, [1_000] * 20 + [5_000] * 30 + [1_000] * 20)
    free = readings(METER_FREE, START_MS, [8_000] * 70)
    await send(settings, topics.METER_READINGS.name, batches(settings, alerted) + batches(settings, free))

    found = await running.worker.until(
        lambda: _two(alerts_of(settings, METER_ALERTED)), 60, "the raised and resolved power alerts"
    )
    raised, resolved = found
    first_above = alerted[20].time_ms
    assert (raised.kind, raised.state, resolved.state) == ("power_above", "raised", "resolved")
    assert raised.id == resolved.id == alert_id(METER_ALERTED, "power_above", first_above)
    assert raised.episode_start_ms == first_above
    assert raised.at_ms - first_above >= 10_000  # held for for_s (meter time) before it raised
    assert resolved.at_ms == alerted[50].time_ms  # the first reading back under the limit
    assert raised.threshold == 3_000 and raised.value == 5_000
    assert await alerts_of(settings, METER_FREE) == []

    async def all_points() -> bool:
        where = f"meter = '{METER_ALERTED}' OR meter = '{METER_FREE}'"
        return count_points(settings, "reading", where) == 140 and count_points(settings, "alert") >= 2

    await running.worker.until(all_points, 60, "140 reading points and the alert points in InfluxDB")
    assert running.metric('quartier_alert_events_total{kind=power_above,state=raised}') >= 1
    assert running.metric('quartier_alert_events_total{kind=power_above,state=resolved}') >= 1


async def _two(pending: Any) -> list[AlertEvent] | None:
    found = await pending
    return found if len(found) >= 2 else None


async def test_malformed_readings_are_rejected_with_the_field_and_the_rest_goes_on(running: Running) -> None:
    settings = running.settings
    before = running.metric("quartier_readings_consumed_total")
    good = readings(METER_BAD, START_MS, [500] * 3)
    shard = shard_of(METER_BAD, settings.kafka.reading_shards)
    batch = msgspec.json.decode(events.encode(ReadingBatch(shard=shard, readings=good)))
    batch["readings"][1]["drawn_va"] = -7  # one bad frame inside a batch
    # Valid by the contract, impossible by physics: the energy index went down.
    backwards = msgspec.structs.replace(good[2], time_ms=good[2].time_ms + 1000, seq=3, withdrawn_wh=good[2].withdrawn_wh - 900)
    key = str(shard).encode()
    await send(
        settings,
        topics.METER_READINGS.name,
        [(key, msgspec.json.encode(batch)), (key, b'{"type": "reading", "meter": '), (key, events.encode(backwards))],
    )

    async def rejected() -> list[RejectedReading] | None:
        found = await read_all(
            settings, settings.topic(topics.METER_READINGS_REJECTED.name), events.decoder(RejectedReading).decode  # type: ignore[arg-type]
        )
        return found if len(found) >= 3 else None

    bad_frame, garbage, unphysical = sorted(
        await running.worker.until(rejected, 60, "three rejected readings"), key=lambda r: r.source_offset
    )
    assert "$.readings[1].drawn_va" in bad_frame.reason
    assert bad_frame.meter == METER_BAD
    assert msgspec.json.decode(bad_frame.raw)["drawn_va"] == -7
    assert "malformed JSON" in garbage.reason and garbage.raw == b'{"type": "reading", "meter": '
    assert bad_frame.source_topic == settings.topic(topics.METER_READINGS.name)
    assert garbage.source_offset > bad_frame.source_offset
    assert unphysical.reason.startswith("withdrawn_wh: ") and unphysical.meter == METER_BAD
    assert events.decoder(MeterReading).decode(unphysical.raw) == backwards
    # The two good frames of the batch went on; every reading counts as consumed, valid or not.
    await running.worker.until(
        lambda: _async(count_points(settings, "reading", f"meter = '{METER_BAD}'") == 2), 60, "the two good frames"
    )
    assert running.metric("quartier_readings_consumed_total") - before == 5
    assert running.metric("quartier_readings_rejected_total") >= 3
    assert running.worker.alive()


async def test_a_rule_change_applies_without_a_restart(running: Running) -> None:
    settings = running.settings
    applied = running.metric("quartier_alert_rules_applied_total")
    consumed = running.metric("quartier_readings_consumed_total")
    early = readings(METER_LATE, START_MS, [2_500] * 15)
    await send(settings, topics.METER_READINGS.name, batches(settings, early))
    await running.worker.until(
        lambda: _async(running.metric("quartier_readings_consumed_total") >= consumed + 15), 60, "the early readings"
    )
    await send(
        settings,
        topics.ALERTS_RULES.name,
        [(METER_LATE.encode(), events.encode(quiet_rules(METER_LATE, power_max_w=2_000, for_s=2)))],
    )
    await running.worker.until(
        lambda: _async(running.metric("quartier_alert_rules_applied_total") > applied), 60, "the new rules applied"
    )
    later = readings(METER_LATE, START_MS + 15_000, [2_500] * 10, seq0=15)
    await send(settings, topics.METER_READINGS.name, batches(settings, later))

    async def raised() -> list[AlertEvent] | None:
        return [a for a in await alerts_of(settings, METER_LATE) if a.state == "raised"] or None

    (alert,) = await running.worker.until(raised, 60, "the alert under the new rules")
    assert alert.episode_start_ms >= later[0].time_ms  # nothing judged before the rules existed
    assert alert.threshold == 2_000


async def test_metered_slots_come_from_index_differences(running: Running) -> None:
    """The market settles on meter.slots: a full quarter hour at 3,600 VA is 900 Wh, seen whole."""
    from streams.slots import SLOT_MS, slot_start

    settings = running.settings
    meter = "100000000005"
    boundary = slot_start(int(time.time() * 1000)) - 2 * SLOT_MS
    # From 30 s before a slot boundary to 30 s after the next one, one reading a second, 1 Wh a second.
    series = readings(meter, boundary - 30_000, [3_600] * (30 + 900 + 31))
    await send(settings, topics.METER_READINGS.name, batches(settings, series, size=100))

    async def slots() -> list[events.SlotEnergy]:
        found = await read_all(
            settings, settings.topic(topics.METER_SLOTS.name), events.decoder(events.SlotEnergy).decode  # type: ignore[arg-type]
        )
        mine = [s for s in found if s.meter == meter]
        return mine if len(mine) >= 2 else []

    first, full = sorted(await running.worker.until(slots, 60, "two closed slots"), key=lambda s: s.slot_start_ms)
    assert (first.slot_start_ms, full.slot_start_ms) == (boundary - SLOT_MS, boundary)
    assert first.imported_wh == 30 and first.completeness == pytest.approx(30 / 900)  # seen from its last 30 s
    assert full.imported_wh == 900 and full.completeness == 1.0
    assert full.exported_wh == 0 and full.zone == "rennes-01"


async def test_sigterm_stops_the_worker_cleanly_with_every_point_written(running: Running) -> None:
    settings = running.settings
    last = readings(METER_FREE, START_MS + 100_000, [900] * 50, seq0=100)
    consumed = running.metric("quartier_readings_consumed_total")
    await send(settings, topics.METER_READINGS.name, batches(settings, last, size=50))
    await running.worker.until(
        lambda: _async(running.metric("quartier_readings_consumed_total") >= consumed + 50), 60, "the last readings"
    )
    assert running.worker.terminate() == 0
    where = f"meter = '{METER_FREE}' AND time >= {last[0].time_ms}ms"
    assert count_points(settings, "reading", where) == 50
