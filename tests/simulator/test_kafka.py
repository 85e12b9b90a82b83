"""Runs against the real embedded broker: what the simulator says it produced is what is on the topics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from typing import Any, Callable

from quartier import topics
from quartier.events import ContractError, DeviceTelemetry, ReadingBatch, decoder, shard_of
from quartier.kafka import read_records
from quartier.settings import Settings
from simulator.config import FleetConfig
from simulator.run import RunPlan, run

from .conftest import INGEST

TELEMETRY = decoder(DeviceTelemetry)


async def test_a_backfill_run_puts_every_reported_frame_on_the_topics(
    broker: dict[str, Any], make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(broker)
    config = FleetConfig(meters=120, seed=41, malformed_fraction=0.01, disconnects_per_meter_day=200.0,
                         shards=settings.kafka.reading_shards)
    before = time.time()
    summary = await run(config, RunPlan(duration_s=300, speed=0), settings)
    assert summary.steps == 300 and not summary.interrupted

    records = await read_records(settings, settings.topic(topics.METER_READINGS.name))
    readings, malformed = [], 0
    for record in records:
        try:
            message = INGEST.decode(record.value)
        except ContractError:
            malformed += 1
            continue
        if isinstance(message, ReadingBatch):
            assert record.key == b"%d" % message.shard
            assert all(shard_of(r.meter, config.shards) == message.shard for r in message.readings)
            readings.extend(message.readings)
        else:  # a lone reading is a malformed frame that passes the schema (its index went backwards)
            malformed += 1
            assert record.key == b"%d" % shard_of(message.meter, config.shards)
    assert len(readings) == summary.readings_produced
    assert malformed == summary.malformed > 0
    assert summary.disconnect_episodes > 0
    assert summary.readings_produced + summary.malformed < 120 * 300  # the outages cost readings
    assert summary.messages == len(records)
    # Backfill: five minutes of history that ends about now.
    newest = max(r.time_ms for r in readings) / 1000
    oldest = min(r.time_ms for r in readings) / 1000
    assert before - 310 < oldest < newest < before + 5
    per_meter = Counter(r.meter for r in readings)
    assert len(per_meter) == 120

    reports = [TELEMETRY.decode(r.value) for r in await read_records(settings, settings.topic(topics.METER_TELEMETRY.name))]
    assert len(reports) == summary.telemetry
    assert {r.meter for r in reports} <= set(per_meter)
    assert all(-120 <= r.rssi_dbm <= 0 and r.firmware for r in reports)


async def test_real_time_sends_each_second_at_its_wall_clock_second(
    broker: dict[str, Any], make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(broker)
    config = FleetConfig(meters=40, seed=42, malformed_fraction=0.0, disconnects=False,
                         shards=settings.kafka.reading_shards)
    summary = await run(config, RunPlan(duration_s=3), settings)
    assert summary.readings_produced == 120
    assert summary.achieved_rate > 0 and summary.max_lag_s >= 0
    records = await read_records(settings, settings.topic(topics.METER_READINGS.name))
    for record in records:
        batch = INGEST.decode(record.value)
        for reading in batch.readings:
            # Never sent before its own second (meter clocks are within about a second of true time).
            assert record.timestamp >= reading.time_ms - 2_000


def test_the_command_reports_its_summary_as_json(broker: dict[str, Any], make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(broker)
    env = {
        **os.environ,
        "QUARTIER_KAFKA__BOOTSTRAP": settings.kafka.bootstrap,
        "QUARTIER_KAFKA__TOPIC_PREFIX": settings.kafka.topic_prefix,
    }
    start = datetime(2025, 1, 15, 6, 0, tzinfo=timezone.utc)
    out = subprocess.run(
        [sys.executable, "-m", "quartier.cli", "simulate", "--meters", "30", "--duration", "2m", "--speed", "0",
         "--seed", "5", "--start", start.isoformat(), "--json", "--no-progress"],
        env=env, capture_output=True, text=True, check=True, timeout=120,
    )
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(summary) >= {"readings_produced", "achieved_rate", "max_lag_s", "malformed", "disconnect_episodes"}
    assert summary["start"] == "2025-01-15T06:00:00Z"
    assert summary["readings_produced"] + summary["malformed"] <= 30 * 120
    assert summary["readings_produced"] > 0.95 * 30 * 120
