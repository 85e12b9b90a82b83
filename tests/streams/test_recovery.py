"""A Faust worker killed with SIGKILL and restarted gets its table back exactly (on the embedded broker).

Tansu's ListOffsets answer for the latest offset is the first offset of the last record batch plus
one; Faust ends table recovery there, so without the correction in streams.tansu a restarted worker
loses the table updates of the changelog's last batch (seen in 4 of 4 restarts, DESIGN.md). The
counting worker (tests/streams/counting_worker.py) keeps per key the last sequence number it counted
and how many it counted, and skips what it has counted: a recovered table that lacks updates goes
on counting from a stale value, and the final counts come out short.

The first kill comes when the worker is idle with everything committed: the changelog's newest
batch then holds updates that no replay will redo (the case the correction is for). The second comes
in the middle of the stream: the uncommitted records are replayed and must not count twice.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from quartier.kafka import ensure_topics, latest_offsets, producer_config, read_records
from quartier.settings import Settings
from tests.streams.worker_support import WorkerProcess

KEYS = 20
PER_ROUND = 100  # records per key and round
PARTITIONS = 4


async def produce_round(settings: Settings, topic: str, round_: int) -> None:
    producer = AIOKafkaProducer(**producer_config(settings))
    await producer.start()
    try:
        for seq in range(round_ * PER_ROUND, (round_ + 1) * PER_ROUND):
            for key in range(KEYS):
                await producer.send(topic, str(seq).encode(), key=f"k{key}".encode())
        await producer.flush()
    finally:
        await producer.stop()


async def records_in(settings: Settings, topic: str) -> int:
    ends = await latest_offsets(settings, [TopicPartition(topic, p) for p in range(PARTITIONS)])
    return sum(ends.values())


async def committed_everything(settings: Settings, group: str, topic: str) -> bool:
    """The worker has processed and committed every record of ``topic`` (its offsets commit after its writes)."""
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    ends = await latest_offsets(settings, tps)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return all([(await consumer.committed(tp) or 0) >= ends[tp] for tp in tps])
    finally:
        await consumer.stop()


async def table_contents(settings: Settings, changelog: str) -> dict[bytes, tuple[int, int]]:
    """The table as the worker left it: the last value written per key to its changelog."""
    return {r.key: tuple(json.loads(r.value)) for r in await read_records(settings, changelog)}  # type: ignore[misc]


@pytest.mark.timeout(600)
async def test_a_killed_worker_recovers_its_table_exactly(
    broker: dict[str, Any], make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(broker)
    run = uuid.uuid4().hex[:8]
    source, app_id = f"counts-in-{run}", f"counter-{run}"
    changelog = f"{app_id}-counts-changelog"
    await ensure_topics(settings, (), extra={source: PARTITIONS})
    argv = ["-m", "tests.streams.counting_worker", "--app-id", app_id, "--source", source,
            "--partitions", str(PARTITIONS)]

    def all_committed() -> Any:
        return committed_everything(settings, app_id, source)

    # 1. Everything counted and committed, then killed while idle.
    await produce_round(settings, source, 0)
    with WorkerProcess(argv, settings, tmp_path / "worker-1.log") as worker:
        await worker.until(all_committed, 120, "the first round counted and committed")
        worker.kill()
    assert set((await table_contents(settings, changelog)).values()) == {(PER_ROUND - 1, PER_ROUND)}

    # 2. Restarted (its table recovered from the changelog), killed in the middle of the next round.
    await produce_round(settings, source, 1)
    with WorkerProcess(argv, settings, tmp_path / "worker-2.log") as worker:
        halfway = KEYS * PER_ROUND * 3 // 2

        async def half_counted() -> bool:
            return await records_in(settings, changelog) >= halfway

        await worker.until(half_counted, 120, "half of the second round counted")
        worker.kill()

    # 3. Restarted again: finishes the round and stops cleanly.
    with WorkerProcess(argv, settings, tmp_path / "worker-3.log") as worker:
        # The records the second worker counted but did not commit are fetched again. Without
        # streams.app.SeekFirstRecovery their offsets could come back as a gap, after which commits
        # crawled at one offset a second (over 4 minutes here) or stopped for good.
        await worker.until(all_committed, 120, "the second round counted and committed")
        # The second worker may have committed the whole round before its kill: then the line above
        # passes at once, and a SIGTERM before this one is up would meet Python's default handler.

        async def ready() -> bool:
            return "Worker ready" in worker.log(100_000)

        await worker.until(ready, 120, "the third worker ready")
        assert worker.terminate() == 0

    # Every key counted each of its records exactly once, across two recoveries.
    table = await table_contents(settings, changelog)
    assert len(table) == KEYS
    assert set(table.values()) == {(2 * PER_ROUND - 1, 2 * PER_ROUND)}, table
