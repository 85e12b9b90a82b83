"""The local stack's durable log: the records of truth survive ``quartier stack down`` and ``up``; the
readings' old batches are dropped by the retention once consumed, and nothing else is."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from quartier import events, topics
from quartier.events import AlertRules, OfferListed, ReadingBatch
from quartier.kafka import ensure_topics, latest_offsets, read_records
from quartier.settings import KafkaSettings, Settings
from quartier.stack import Stack, durable_broker
from quartier.stack.retention import sweep
from tests.streams.worker_support import readings
from tests.test_stack_and_demo import quartier

ACCOUNTS_EVENTS = topics.ACCOUNTS_EVENTS.name

def bootstrap_of(state_dir: Path) -> str:
    return json.loads((state_dir / "stack.json").read_text())["settings"]["kafka"]["bootstrap"]


async def produce(bootstrap: str, records: dict[str, list[tuple[bytes, bytes]]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for topic, pairs in records.items():
            for key, value in pairs:
                await producer.send(topic, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


async def read_topics(bootstrap: str, names: list[str]) -> dict[str, list[tuple[int, int, bytes, bytes]]]:
    settings = Settings(kafka=KafkaSettings(bootstrap=bootstrap))
    out = {}
    for name in names:
        records = await read_records(settings, name)
        out[name] = [(r.partition, r.offset, r.key, r.value) for r in records]
    return out


def test_stack_down_and_up_keeps_the_market_the_accounts_and_the_rules(tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert quartier(state, "stack", "up").returncode == 0
    try:
        bootstrap = bootstrap_of(state)
        settings = Settings(kafka=KafkaSettings(bootstrap=bootstrap))
        asyncio.run(ensure_topics(settings, topics.ALL))
        now = int(time.time() * 1000)
        offers = [
            OfferListed(offer_id=f"o{i}", producer="p1", zone="rennes-01", slot_start_ms=now + 900_000,
                        energy_wh=100 + i, price_cents_per_kwh=12, at_ms=now)
            for i in range(20)
        ]
        records = {
            topics.MARKET_EVENTS.name: [(b"rennes-01", events.encode(o)) for o in offers],
            topics.ALERTS_RULES.name: [
                (m.encode(), events.encode(AlertRules(meter=m, power_max_w=3000 + i)))
                for i, m in enumerate(f"20000000{i:04d}" for i in range(30))
            ],
            ACCOUNTS_EVENTS: [(f"h{i}".encode(), json.dumps({"household": f"h{i}", "v": 1}).encode()) for i in range(10)],
        }
        asyncio.run(produce(bootstrap, records))
        before = asyncio.run(read_topics(bootstrap, list(records)))
        assert {name: len(got) for name, got in before.items()} == {name: len(r) for name, r in records.items()}

        down = quartier(state, "stack", "down")
        assert down.returncode == 0, down.stderr
        up = quartier(state, "stack", "up")
        assert up.returncode == 0, up.stderr

        after = asyncio.run(read_topics(bootstrap_of(state), list(records)))
        assert after == before  # same records, same partitions, same offsets
        market = [events.decoder(events.MarketEvent).decode(v) for _, _, _, v in after[topics.MARKET_EVENTS.name]]
        assert sorted(o.offer_id for o in market) == sorted(o.offer_id for o in offers)
    finally:
        quartier(state, "stack", "down")


async def test_retention_drops_old_consumed_reading_batches_and_nothing_else(tmp_path: Path) -> None:
    components = durable_broker()
    store = components[0]
    stack = Stack(tmp_path / "stack", components[:2])  # the store and the broker; the sweep is run here
    overrides = stack.up()
    try:
        settings = Settings(kafka=KafkaSettings(**overrides["kafka"]))
        await ensure_topics(settings)
        readings_topic = topics.METER_READINGS.name
        tp = TopicPartition(readings_topic, 0)
        rs = readings("200000000001", 1_700_000_000_000, [1000] * 40)
        # Ten batches of four readings, each its own request (and so its own stored batch).
        for i in range(10):
            batch = ReadingBatch(shard=0, readings=rs[4 * i : 4 * i + 4])
            producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap)
            await producer.start()
            try:
                await producer.send_and_wait(readings_topic, events.encode(batch), key=b"0", partition=0)
            finally:
                await producer.stop()
        await produce(settings.kafka.bootstrap, {topics.MARKET_EVENTS.name: [(b"z", b"kept")] * 3})
        # A worker's group has handled the first six messages.
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap, group_id="worker", enable_auto_commit=False)
        await consumer.start()
        try:
            consumer.assign([tp])
            await consumer.commit({tp: 6})
        finally:
            await consumer.stop()

        bucket = store.bucket_dir()
        assert sweep(bucket, now_s=time.time()).batches_deleted == 0  # nothing is old yet
        later = time.time() + topics.RETAINED_MS[readings_topic] / 1000 + 60
        # The group committed "now": within the retention seen from "later", so it still counts.
        for path in bucket.glob("clusters/*/groups/consumers/worker/offsets/*/partitions/*"):
            os.utime(path, (later - 10, later - 10))
        done = sweep(bucket, now_s=later)
        assert done.batches_deleted == 6
        assert done.batches_kept_unconsumed == 1  # the first one the group has not handled stops it

        records = await read_records(settings, readings_topic)
        assert [(r.partition, r.offset) for r in records if r.partition == 0] == [(0, o) for o in range(6, 10)]
        assert (await latest_offsets(settings, [tp]))[tp] == 10
        kept = await read_records(settings, topics.MARKET_EVENTS.name)
        assert [r.value for r in kept] == [b"kept"] * 3

        # Once the group has handled everything, all but the newest batch go.
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap, group_id="worker", enable_auto_commit=False)
        await consumer.start()
        try:
            consumer.assign([tp])
            await consumer.commit({tp: 10})
        finally:
            await consumer.stop()
        for path in bucket.glob("clusters/*/groups/consumers/worker/offsets/*/partitions/*"):
            os.utime(path, (later - 10, later - 10))
        assert sweep(bucket, now_s=later).batches_deleted == 3
        assert [r.offset for r in await read_records(settings, readings_topic) if r.partition == 0] == [9]
    finally:
        stack.down()
