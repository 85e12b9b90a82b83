"""``quartier produce TOPIC``: JSON lines from stdin to a topic, each checked against the topic's contract.

For third parties and operators without a Kafka client that speaks to the embedded broker (Debian's
``kcat`` cannot: docs/events.md). Each non-blank line is decoded with the topic's record type
(``quartier.topics``), so a bad line is refused with its line number and msgspec's path to the field,
and nothing is sent for it; every good line is sent with the key the topic's consumers expect (the key
rules below). The command exits non-zero if any line was refused.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer

from quartier import events, topics
from quartier.kafka import ensure_topics, producer_config
from quartier.settings import Settings

#: Records sent per flush: a few hundred thousand lines from a file need not be awaited one by one.
FLUSH_EVERY = 1000


class LineError(ValueError):
    """A line refused: its number (1-based) and the reason, naming the field."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason


def _reading_key(record: Any, shards: int) -> str:
    if isinstance(record, events.ReadingBatch):
        if record.shard >= shards:
            raise ValueError(f"shard {record.shard} is not below the {shards} shards of the contract - at `$.shard`")
        for i, reading in enumerate(record.readings):
            if (shard := events.shard_of(reading.meter, shards)) != record.shard:
                raise ValueError(
                    f"meter {reading.meter} is in shard {shard}, not the batch's shard {record.shard}"
                    f" - at `$.readings[{i}].meter`"
                )
        return str(record.shard)
    return str(events.shard_of(record.meter, shards))


#: How each topic's records are keyed (docs/events.md, "Topics"); None sends no key.
KEYS: dict[str, Callable[[Any, int], str | None]] = {
    topics.METER_READINGS.name: _reading_key,
    topics.METER_READINGS_REJECTED.name: lambda record, _: record.meter,
    topics.METER_TELEMETRY.name: lambda record, _: record.meter,
    topics.METER_SLOTS.name: lambda record, _: record.meter,
    topics.ALERTS_RULES.name: lambda record, _: record.meter,
    topics.ALERTS_EVENTS.name: lambda record, _: record.meter,
    topics.NOTIFICATIONS_DELIVERIES.name: lambda record, _: record.alert_id,
    topics.MARKET_EVENTS.name: lambda record, _: record.zone,
    # An account's events before it has a household are keyed by the account (accounts/log.py).
    topics.ACCOUNTS_EVENTS.name: lambda record, _: getattr(record, "household", None) or record.account,
    topics.METER_RESOLUTION.name: lambda record, _: record.meter,
    topics.PRIVACY_ERASURES.name: lambda record, _: record.household,
    # Campaign events by campaign, firmware catalogue entries by version (console/service.py).
    topics.DEVICES_EVENTS.name: lambda record, _: getattr(record, "campaign", None) or record.version,
    topics.DEVICES_COMMANDS.name: lambda record, _: record.meter,
    topics.HOUSEHOLDS_ALERT_ACTIONS.name: lambda record, _: record.meter,
}


def topic_named(name: str) -> topics.Topic:
    """The declared topic of that (unprefixed) name; ValueError listing those ``produce`` knows."""
    for topic in topics.ALL:
        if topic.name == name and name in KEYS:
            return topic
    raise ValueError(f"TOPIC: {name!r} is not a topic quartier produce knows (one of: {', '.join(KEYS)})")


@dataclass(frozen=True)
class Message:
    line: int
    key: bytes | None
    value: bytes


def messages(topic: topics.Topic, lines: Iterable[str], shards: int) -> Iterator[Message | LineError]:
    """A message for each good line, a LineError for each bad one; blank lines are skipped."""
    decoder = events.Decoder(topic.record)
    key_of = KEYS[topic.name]
    for number, line in enumerate(lines, start=1):
        raw = line.strip().encode()
        if not raw:
            continue
        try:
            record = decoder.decode(raw)
            key = key_of(record, shards)
        except ValueError as error:  # ContractError is one
            yield LineError(number, str(error))
            continue
        # Re-encoded, so what is sent is the canonical form of what was validated.
        yield Message(number, key.encode() if key is not None else None, events.encode(record))  # type: ignore[arg-type]


async def _delivered(producer: AIOKafkaProducer, pending: list[Any]) -> None:
    await producer.flush()
    for sent in pending:
        sent.result()  # raises if the broker refused a record
    pending.clear()


@dataclass
class Outcome:
    sent: int = 0
    refused: int = 0


async def produce(
    settings: Settings, topic: topics.Topic, lines: Iterable[str], report: Callable[[LineError], None]
) -> Outcome:
    """Sends every good line to the topic (created first if missing); ``report`` hears of each bad one."""
    await ensure_topics(settings, [topic])
    producer = AIOKafkaProducer(**producer_config(settings))
    await producer.start()
    outcome = Outcome()
    try:
        pending = []
        for item in messages(topic, lines, settings.kafka.reading_shards):
            if isinstance(item, LineError):
                outcome.refused += 1
                report(item)
                continue
            pending.append(await producer.send(settings.topic(topic.name), item.value, key=item.key))
            outcome.sent += 1
            if len(pending) >= FLUSH_EVERY:
                await _delivered(producer, pending)
        await _delivered(producer, pending)
    finally:
        await producer.stop()
    return outcome
