"""``accounts.events``: appending a command's events, and reading the log back.

The topic has one partition (quartier/topics.py says why), so offsets are the log's total order.
A command's events are appended as one record batch, each with its own key (household, or the
account before it has one), so they land together or not at all. Each event is encoded and decoded
again before it is appended: msgspec checks constraints only when decoding, and nothing that does
not satisfy the contract may reach the log.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from quartier import events as ev
from quartier import kafka, topics
from quartier.settings import Settings

from accounts.sealed import Sealing

MAX_BATCH_BYTES = 1 << 20
APPEND_TIMEOUT_MS = 10_000
PARTITION = 0

_decoder = ev.decoder(ev.AccountsEvent)


class LogCorrupt(RuntimeError):
    """A record of accounts.events that is not an accounts event; replay stops there, naming it."""


@dataclass(frozen=True, slots=True)
class Entry:
    offset: int
    key: str
    event: object


def checked(event: msgspec.Struct) -> bytes:
    """The event's JSON, once it decodes as an accounts event (raises ContractError naming the field)."""
    data = ev.encode(event)
    _decoder.decode(data)
    return data


class AccountsLog:
    def __init__(self, settings: Settings, sealing: Sealing | None = None) -> None:
        self.settings = settings
        # privacy: personal fields are sealed on the way in (accounts/sealed.py).
        self.sealing = sealing or Sealing.open_store(settings)
        self.topic = settings.topic(topics.ACCOUNTS_EVENTS.name)
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        await kafka.ensure_topics(self.settings, [topics.ACCOUNTS_EVENTS])
        config = kafka.producer_config(self.settings)
        config["linger_ms"] = 0  # a person waits for the answer
        config["request_timeout_ms"] = APPEND_TIMEOUT_MS
        producer = AIOKafkaProducer(**config, max_batch_size=MAX_BATCH_BYTES, max_request_size=MAX_BATCH_BYTES + 4096)
        await producer.start()
        self._producer = producer

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def append(self, keyed: Sequence[tuple[str, msgspec.Struct]]) -> int:
        """Appends (key, event) pairs atomically; returns the first offset once the broker has them."""
        if self._producer is None:
            raise RuntimeError("the accounts log is not started")
        batch = self._producer.create_batch()
        for key, event in keyed:
            if batch.append(key=key.encode(), value=checked(self.sealing.seal(event)), timestamp=None) is None:
                raise ValueError(f"{len(keyed)} events do not fit one record batch")
        metadata = await (await self._producer.send_batch(batch, self.topic, partition=PARTITION))
        return int(metadata.offset)


async def replay(settings: Settings, start: int = 0, sealing: Sealing | None = None) -> AsyncIterator[Entry]:
    """Every event of accounts.events from offset ``start`` up to the log's end when called, its personal
    fields opened (accounts/sealed.py)."""
    sealing = sealing or Sealing.open_store(settings)
    topic = settings.topic(topics.ACCOUNTS_EVENTS.name)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap, enable_auto_commit=False,
                                fetch_max_bytes=16 << 20, max_partition_fetch_bytes=4 << 20)
    await consumer.start()
    try:
        cluster = await consumer._client.fetch_all_metadata()
        if cluster.partitions_for_topic(topic) is None:
            return
        tp = TopicPartition(topic, PARTITION)
        consumer.assign([tp])
        end = (await kafka.end_offsets(consumer, [tp], settings.kafka.flavour))[tp]
        if start >= end:
            return
        consumer.seek(tp, start)
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=1000, max_records=10_000)
            for record in batch.get(tp, []):
                if record.offset >= end:
                    break
                try:
                    event = _decoder.decode(record.value)
                except ev.ContractError as exc:
                    raise LogCorrupt(f"{topic} offset {record.offset}: {exc}") from None
                yield Entry(record.offset, (record.key or b"").decode(), sealing.open(event))
    finally:
        await consumer.stop()
