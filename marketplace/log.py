"""``market.events``: appending a command's events, and reading the log back.

A command's events are appended as **one record batch** to the zone's partition, so they land
together or not at all (a producer listing a window of 8 slots never leaves 3 of them behind), and
get consecutive offsets. The partition is the one Kafka's default partitioner gives the zone, so
any other writer keyed by zone agrees.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from quartier import events as ev
from quartier import kafka, topics
from quartier.settings import Settings

#: A command's events must fit one batch; a day's listing (96 offers) is about 25 kB.
MAX_BATCH_BYTES = 1 << 20

#: How long an append may wait for the broker before the command fails.
APPEND_TIMEOUT_MS = 10_000

_decoder = ev.decoder(ev.MarketEvent)


class LogCorrupt(RuntimeError):
    """A record of market.events that is not a market event; replay stops there, naming it."""


@dataclass(frozen=True, slots=True)
class Appended:
    partition: int
    first_offset: int
    count: int


@dataclass(frozen=True, slots=True)
class Entry:
    partition: int
    offset: int
    event: object


def partition_for(zone: str, partitions: Sequence[int]) -> int:
    return DefaultPartitioner()(zone.encode(), list(partitions), list(partitions))


class MarketLog:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = settings.topic(topics.MARKET_EVENTS.name)
        self._producer: AIOKafkaProducer | None = None
        self.partitions: list[int] = list(range(topics.MARKET_EVENTS.partitions))

    async def start(self) -> None:
        await kafka.ensure_topics(self.settings, [topics.MARKET_EVENTS])
        config = kafka.producer_config(self.settings)
        # A command's batch is complete when it is sent, and its partition waits for the ack before
        # the next command: waiting for more records (linger) would only add latency to every command.
        config["linger_ms"] = 0
        # A client waits for its command's answer: fail it (503) rather than hang for the default 40 s.
        config["request_timeout_ms"] = APPEND_TIMEOUT_MS
        producer = AIOKafkaProducer(**config, max_batch_size=MAX_BATCH_BYTES, max_request_size=MAX_BATCH_BYTES + 4096)
        await producer.start()
        self._producer = producer
        self.partitions = sorted(await producer.partitions_for(self.topic))

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    def partition_for(self, zone: str) -> int:
        return partition_for(zone, self.partitions)

    async def append(self, zone: str, events: Sequence[msgspec.Struct]) -> Appended:
        """Appends events of one zone atomically; returns where they landed once the broker has them."""
        if self._producer is None:
            raise RuntimeError("the market log is not started")
        batch = self._producer.create_batch()
        key = zone.encode()
        for event in events:
            if batch.append(key=key, value=ev.encode(event), timestamp=None) is None:
                raise ValueError(f"{len(events)} events do not fit one record batch of {MAX_BATCH_BYTES} bytes")
        partition = self.partition_for(zone)
        delivered = await self._producer.send_batch(batch, self.topic, partition=partition)
        metadata = await delivered
        return Appended(partition, metadata.offset, len(events))


async def replay(settings: Settings, start: Mapping[int, int] | None = None) -> AsyncIterator[Entry]:
    """Every event of market.events from ``start`` (partition -> offset; default: the beginning)
    up to the log's end when called, in offset order within each partition."""
    topic = settings.topic(topics.MARKET_EVENTS.name)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap, enable_auto_commit=False,
                                fetch_max_bytes=16 << 20, max_partition_fetch_bytes=4 << 20)
    await consumer.start()
    try:
        cluster = await consumer._client.fetch_all_metadata()
        partitions = cluster.partitions_for_topic(topic)
        if partitions is None:
            return
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        ends = await kafka.end_offsets(consumer, tps, settings.kafka.flavour)
        for tp in tps:
            consumer.seek(tp, (start or {}).get(tp.partition, 0))
        while pending := [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            batch = await consumer.getmany(*pending, timeout_ms=1000, max_records=10_000)
            for tp, records in batch.items():
                for record in records:
                    if record.offset >= ends[tp]:
                        break
                    try:
                        event = _decoder.decode(record.value)
                    except ev.ContractError as exc:
                        raise LogCorrupt(f"{topic} partition {tp.partition} offset {record.offset}: {exc}") from None
                    yield Entry(tp.partition, record.offset, event)
    finally:
        await consumer.stop()
