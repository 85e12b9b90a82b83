"""The fleet page's figures against the same figures counted independently from the topics and InfluxDB.

A day and a half of a 150-home fleet (one reading every 5 minutes, outages on) is backfilled into the real
broker; the real stream worker writes it to the real InfluxDB while the console service folds the
topics. Connected and disconnected modules and firmware counts are then counted from the topics by
this test (the deadman rule of docs/console.md applied to every meter's readings), the fleet's power
from InfluxDB's last point per meter, and yesterday's energy from InfluxDB's first index of each
local day per meter.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable
from zoneinfo import ZoneInfo

import pytest

from console.service import build
from quartier import events, topics
from quartier.influx import InfluxError, count_points, query
from quartier.kafka import ensure_topics, read_records
from quartier.settings import Settings
from quartier.stack.component import pick_port
from simulator.config import FleetConfig
from simulator.run import RunPlan, run
from tests.streams.worker_support import WorkerProcess

PARIS = ZoneInfo("Europe/Paris")
INGEST = events.decoder(events.IngestMessage)
TELEMETRY = events.decoder(events.DeviceTelemetry)


def _local_midnight_ms(day_offset: int) -> int:
    today = datetime.now(PARIS).replace(hour=0, minute=0, second=0, microsecond=0)
    return int((today + timedelta(days=day_offset)).timestamp() * 1000)


async def test_fleet_figures_equal_the_topics_and_influxdb(
    broker: dict[str, Any], influx: dict[str, Any], make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(broker, influx, console={"clock": "fleet", "refresh_s": 0.5, "tick_s": 5})
    await ensure_topics(settings)
    yesterday_ms = _local_midnight_ms(-1)
    start_s = yesterday_ms / 1000 - 1800
    config = FleetConfig(meters=150, seed=5, malformed_fraction=0.0, disconnects_per_meter_day=20.0,
                         interval_s=300, shards=settings.kafka.reading_shards)
    summary = await run(config, RunPlan(duration_s=time.time() - start_s, speed=0, start_t=start_s), settings)

    port = pick_port(0)
    argv = ["-m", "quartier.cli", "streams", "worker", "--app-id", settings.topic("worker"), "--metrics-port", str(port),
            "--deadman-interval", "0"]
    console = build(settings)
    await console.start()
    stop = asyncio.Event()
    task = asyncio.create_task(console.run(stop))
    try:
        with WorkerProcess(argv, settings, tmp_path / "worker.log") as worker:
            async def written() -> bool:
                try:
                    return count_points(settings, "reading") >= summary.readings_produced
                except InfluxError:  # the worker creates the database as it starts
                    return False
            await worker.until(written, 180, "every reading in InfluxDB")
        deadline = time.monotonic() + 60
        while console.fleet.readings < summary.readings_produced or console.fleet.telemetry_reports < summary.telemetry:
            assert time.monotonic() < deadline, "the console did not fold every reading and report"
            await asyncio.sleep(0.2)
        console.fleet.refresh()
        figures = console.fleet.fleet()
    finally:
        stop.set()
        await task
        await console.stop()

    # --- from the topics ---
    last_ms: dict[str, int] = {}
    cadence: dict[str, float] = {}
    for record in await read_records(settings, settings.topic(topics.METER_READINGS.name)):
        message = INGEST.decode(record.value)
        for r in message.readings if isinstance(message, events.ReadingBatch) else [message]:
            if r.meter in last_ms:
                gap = r.time_ms - last_ms[r.meter]
                c = cadence.get(r.meter, 0.0)
                cadence[r.meter] = c + 0.1 * (min(gap, 2 * c) - c) if c > 0 else float(gap)
            last_ms[r.meter] = max(last_ms.get(r.meter, -1), r.time_ms)
    now_ms = max(last_ms.values())
    connected = {m for m, t in last_ms.items() if now_ms - t < max(10 * (cadence.get(m) or 1000.0), 30_000)}
    firmware: dict[str, str] = {}
    for record in await read_records(settings, settings.topic(topics.METER_TELEMETRY.name)):
        report = TELEMETRY.decode(record.value)
        firmware[report.meter] = report.firmware
    firmware_counts: dict[str, int] = defaultdict(int)
    for version in firmware.values():
        firmware_counts[version] += 1

    assert figures.modules == 150 and figures.never_seen == 0
    assert 0 < figures.disconnected < 150  # outages at 20 a day per module: some are away at the end
    assert figures.connected == len(connected)
    assert figures.disconnected == 150 - len(connected)
    assert figures.firmware == dict(firmware_counts)

    # --- from InfluxDB ---
    last_power = query(settings, "SELECT last(drawn_va) FROM reading GROUP BY meter")
    assert len(last_power) == 150
    assert figures.power_drawn_va == sum(int(row["last"]) for row in last_power if row["meter"] in connected)

    today_ms = _local_midnight_ms(0)
    def first_index(start: int, end: int) -> dict[str, int]:
        rows = query(settings, f"SELECT first(withdrawn_wh) FROM reading WHERE time >= {start}ms AND time < {end}ms GROUP BY meter")
        return {row["meter"]: int(row["first"]) for row in rows}
    day0 = first_index(yesterday_ms, today_ms)
    day1 = first_index(today_ms, _local_midnight_ms(1))
    both = day0.keys() & day1.keys()
    assert figures.yesterday_modules == len(both) > 100
    assert figures.yesterday_wh == sum(day1[m] - day0[m] for m in both)
    assert figures.yesterday_wh > 150 * 1000  # a home uses more than 1 kWh a day


async def test_a_restarted_console_resumes_from_its_snapshot_without_folding_twice(
    broker: dict[str, Any], make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(broker, console={"clock": "fleet", "refresh_s": 0.2, "tick_s": 5})
    config = FleetConfig(meters=50, seed=8, malformed_fraction=0.0, disconnects_per_meter_day=50.0, interval_s=60,
                         shards=settings.kafka.reading_shards)
    start_s = time.time() - 6 * 3600
    first = await run(config, RunPlan(duration_s=3 * 3600, speed=0, start_t=start_s), settings)

    async def follow(s: Settings, until: int) -> Any:
        console = build(s)
        await console.start()
        stop = asyncio.Event()
        task = asyncio.create_task(console.run(stop))
        deadline = time.monotonic() + 60
        while console.fleet.readings < until:
            assert time.monotonic() < deadline, f"folded {console.fleet.readings} of {until}"
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.5)
        stop.set()
        await task  # writes the snapshot as it stops
        await console.stop()
        return console

    await follow(settings, first.readings_produced)
    assert (settings.state_dir / "console").is_dir()
    second = await run(config, RunPlan(duration_s=3 * 3600, speed=0, start_t=start_s + 3 * 3600), settings)
    total = first.readings_produced + second.readings_produced
    resumed = await follow(settings, total)
    assert resumed.fleet.readings == total  # the first run's readings were not folded again
    fresh_settings = settings.model_copy(update={"state_dir": tmp_path / "fresh"})
    fresh = await follow(fresh_settings, total)
    assert fresh.fleet.readings == total
    resumed.fleet.refresh()
    fresh.fleet.refresh()
    # Everything but the 10-day curve, which samples the connected count whenever a refresh runs.
    assert resumed.fleet.fleet().as_dict() | {"connected_curve": None} == fresh.fleet.fleet().as_dict() | {"connected_curve": None}
    # Per module too, but for the outage history: the first console judged the fleet at the end of the
    # first run (some modules were silent then), the fresh one only once at the very end.
    def without_history(m: str, fleet: Any) -> dict[str, Any]:
        return {k: v for k, v in fleet.module(m).items() if k not in ("disconnections", "since_ms")}
    assert [without_history(m, resumed.fleet) for m in fresh.fleet.meters] == [
        without_history(m, fresh.fleet) for m in fresh.fleet.meters]
