"""The stream worker killed with an alert raised, restarted: the episode resolves under its id, once."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from quartier import events, topics
from quartier.events import alert_id
from quartier.kafka import ensure_topics, latest_offsets
from quartier.settings import Settings
from tests.streams.worker_support import WorkerProcess, alerts_of, batches, quiet_rules, readings, send

METER = "200000000001"


async def committed_readings(settings: Settings, group: str) -> bool:
    """The worker committed every message of meter.readings (so the state it wrote is flushed)."""
    topic = settings.topic(topics.METER_READINGS.name)
    tps = [TopicPartition(topic, p) for p in range(topics.METER_READINGS.partitions)]
    ends = await latest_offsets(settings, tps)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return all([(await consumer.committed(tp) or 0) >= ends[tp] for tp in tps])
    finally:
        await consumer.stop()


async def test_a_raised_alert_survives_a_killed_worker_and_resolves_under_its_id(
    broker: dict[str, Any], influx: dict[str, Any], make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(broker, influx)
    app_id = settings.topic("worker")
    await ensure_topics(settings)
    await send(
        settings, topics.ALERTS_RULES.name,
        [(METER.encode(), events.encode(quiet_rules(METER, power_max_w=3_000, for_s=5)))],
    )
    argv = ["-m", "quartier.cli", "streams", "worker", "--app-id", app_id, "--deadman-interval", "0"]
    start_ms = (int(time.time()) - 600) * 1000
    before = readings(METER, start_ms, [1_000] * 10 + [5_000] * 20)
    after = readings(METER, start_ms + 30_000, [5_000] * 10 + [1_000] * 10, seq0=30)

    async def raised() -> bool:
        return any(a.state == "raised" for a in await alerts_of(settings, METER))

    with WorkerProcess(argv, settings, tmp_path / "worker-1.log") as worker:
        await send(settings, topics.METER_READINGS.name, batches(settings, before))
        await worker.until(raised, 60, "the alert raised")
        await worker.until(lambda: committed_readings(settings, app_id), 60, "the readings committed")
        worker.kill()

    with WorkerProcess(argv, settings, tmp_path / "worker-2.log") as worker:
        await send(settings, topics.METER_READINGS.name, batches(settings, after))

        async def resolved() -> bool:
            return any(a.state == "resolved" for a in await alerts_of(settings, METER))

        await worker.until(resolved, 60, "the alert resolved after the restart")
        assert worker.terminate() == 0

    alerts = await alerts_of(settings, METER)
    episode = alert_id(METER, "power_above", before[10].time_ms)
    assert [(a.id, a.state) for a in alerts] == [(episode, "raised"), (episode, "resolved")]
    assert alerts[1].at_ms == after[10].time_ms
