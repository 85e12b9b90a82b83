"""Kafka helpers every package shares: topic creation, the true end offsets, client settings, read-all.

Topic names given as strings are full names (``settings.topic(...)`` already applied); ``Topic``
declarations from :mod:`quartier.topics` get this deployment's prefix here.

Two facts about the embedded broker (Tansu 0.6) shape this module (docs/operations.md):

- a Metadata request that names an unknown topic creates it with 4 partitions, so topics are
  looked up by asking for *all* topics, never by name;
- its ListOffsets answer for the latest offset is wrong (the first offset of the last record batch
  plus one, not the last offset plus one), so on flavour ``tansu`` the end of a partition is the
  high watermark of a Fetch response instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from aiokafka import AIOKafkaClient, AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
import stamina
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code
from aiokafka.protocol.fetch import FetchRequest

from quartier import events
from quartier.settings import Settings
from quartier.topics import ALL, RETAINED_MS, Topic

T = TypeVar("T")

log = logging.getLogger(__name__)

#: Max wait of the Fetch requests that read high watermarks, in ms, tried in turn. Tansu answers a
#: Fetch with ``max_wait_ms=0`` with no partitions at all; 1 ms answers at once. The longer waits
#: only matter if a busy broker leaves partitions out of its first answer.
_HIGH_WATERMARK_WAITS_MS = (1, 10, 100, 1000)


class TopicMismatchError(RuntimeError):
    """A topic exists with another partition count than declared; Kafka cannot shrink it."""


class TopicMissingError(LookupError):
    """A topic that must exist does not."""


# --- client settings --------------------------------------------------------------------------


def consumer_config(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``aiokafka.AIOKafkaConsumer``, for this broker.

    The session timeout is short because Tansu completes a group's first join only after half of it.
    Offsets are committed by the caller after it has handled the records (at-least-once).
    """
    session_ms = int(settings.kafka.session_timeout_s * 1000)
    return {
        "bootstrap_servers": settings.kafka.bootstrap,
        "session_timeout_ms": session_ms,
        # Kafka wants heartbeats well within the session timeout.
        "heartbeat_interval_ms": max(100, session_ms // 3),
        "auto_offset_reset": "earliest",
        "enable_auto_commit": False,
        **fetch_wait_config(settings),
    }


def fetch_wait_config(settings: Settings) -> dict[str, Any]:
    """The consumer's fetch max wait: Tansu delays every fetch by it (``KafkaSettings.fetch_max_wait_ms``)."""
    if settings.kafka.flavour != "tansu":
        return {}
    return {"fetch_max_wait_ms": settings.kafka.fetch_max_wait_ms}


def producer_config(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``aiokafka.AIOKafkaProducer``, for this broker.

    No idempotence and no transactions: Tansu answers both with UnknownError. Sinks are made
    idempotent by deterministic ids instead.
    """
    return {
        "bootstrap_servers": settings.kafka.bootstrap,
        "acks": "all",
        "enable_idempotence": False,
        "linger_ms": 5,
    }


# --- topics -------------------------------------------------------------------------------------


async def ensure_topics(
    settings: Settings,
    topics: Iterable[Topic] = ALL,
    extra: Mapping[str, int] | None = None,
) -> dict[str, int]:
    """Creates each declared topic (prefixed) and each ``extra`` topic (full name → partitions).

    Idempotent: an existing topic is kept when its partition count is the declared one, and raises
    :class:`TopicMismatchError` otherwise. Returns ``{full name: partitions}`` of every topic handled.
    """
    wanted: dict[str, int] = {settings.topic(t.name): t.partitions for t in topics}
    compacted = {settings.topic(t.name) for t in topics if t.compacted}
    retained = {settings.topic(t.name): RETAINED_MS[t.name] for t in topics if t.name in RETAINED_MS}
    for name, partitions in (extra or {}).items():
        if wanted.get(name, partitions) != partitions:
            raise TopicMismatchError(f"topic {name!r} asked for with {partitions} and {wanted[name]} partitions")
        wanted[name] = partitions
    for name, partitions in wanted.items():
        if partitions < 1:
            raise ValueError(f"topic {name!r}: partitions must be at least 1, got {partitions}")

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap)
    await admin.start()
    try:
        existing = await _partition_counts(admin)
        new = [
            NewTopic(
                name,
                partitions,
                1,
                topic_configs=_topic_configs(name in compacted, retained.get(name)),
            )
            for name, partitions in wanted.items()
            if name not in existing
        ]
        if new:
            response = await admin.create_topics(new)
            for name, code, message in response.topic_errors:
                # Another client may have created it in between; its partitions are checked below.
                if code not in (0, TopicAlreadyExistsError.errno):
                    raise for_code(code)(f"cannot create topic {name!r}: {message}")
            existing = await _partition_counts(admin)
    finally:
        await admin.close()

    for name, partitions in wanted.items():
        actual = existing.get(name)
        if actual is None:
            raise TopicMissingError(f"topic {name!r} was created but the broker does not list it")
        if actual != partitions:
            raise TopicMismatchError(
                f"topic {name!r} has {actual} partitions, declared {partitions}; "
                "delete it (or restart the embedded broker) to recreate it"
            )
    return wanted


def _topic_configs(compacted: bool, retention_ms: int | None) -> dict[str, str] | None:
    """The configs a new topic is created with: what Apache Kafka applies (the embedded broker does not)."""
    configs = {}
    if compacted:
        configs["cleanup.policy"] = "compact"
    if retention_ms is not None:
        configs["retention.ms"] = str(retention_ms)
    return configs or None


async def topic_partitions(settings: Settings) -> dict[str, int]:
    """Every topic on the broker and its partition count (asks for all topics: creates none)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap)
    await admin.start()
    try:
        return await _partition_counts(admin)
    finally:
        await admin.close()


async def _partition_counts(admin: AIOKafkaAdminClient) -> dict[str, int]:
    # describe_topics(None) sends a Metadata request for all topics; naming topics would create them.
    return {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(None)}


# --- end offsets --------------------------------------------------------------------------------


async def end_offsets(
    consumer: AIOKafkaConsumer, tps: Iterable[TopicPartition], flavour: str
) -> dict[TopicPartition, int]:
    """The offset after the last record of each partition, through a started consumer.

    On ``tansu`` read from a Fetch response's high watermark (ListOffsets is wrong there),
    otherwise the usual ListOffsets lookup.
    """
    tps = list(tps)
    if flavour == "tansu":
        return await fetch_high_watermarks(consumer._client, tps)
    return dict(await consumer.end_offsets(tps))


async def latest_offsets(settings: Settings, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
    """The corrected end offsets ("latest") of the given partitions, for this broker's flavour."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        return await end_offsets(consumer, tps, settings.kafka.flavour)
    finally:
        await consumer.stop()


async def fetch_high_watermarks(
    client: AIOKafkaClient, tps: Iterable[TopicPartition]
) -> dict[TopicPartition, int]:
    """Each partition's high watermark (offset after its last record), from Fetch responses.

    Fetches from offset 0 with a 1-byte limit, so the broker answers with at most a batch or two
    per partition: Tansu keeps every record (no retention), so offset 0 is always in range.
    """
    missing = set(tps)
    found: dict[TopicPartition, int] = {}
    for wait_ms in _HIGH_WATERMARK_WAITS_MS:
        if not missing:
            break
        by_leader = await _by_leader(client, missing)
        for node_id, node_tps in by_leader.items():
            by_topic: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
            for tp in node_tps:
                by_topic[tp.topic].append((tp.partition, 0, 1))
            request = FetchRequest(wait_ms, 0, 1, 0, list(by_topic.items()))
            response = await client.send(node_id, request)
            for topic, partitions in response.topics:
                for partition, error_code, high_watermark, *_ in partitions:
                    tp = TopicPartition(topic, partition)
                    if tp not in missing:
                        continue
                    if error_code:
                        raise for_code(error_code)(f"reading the high watermark of {tp}")
                    found[tp] = high_watermark
                    missing.discard(tp)
    if missing:
        raise KafkaError(f"the broker did not report high watermarks for {sorted(missing)}")
    return found


async def _by_leader(
    client: AIOKafkaClient, tps: Iterable[TopicPartition]
) -> dict[int, list[TopicPartition]]:
    cluster = client.cluster
    if any(cluster.leader_for_partition(tp) is None for tp in tps):
        # A metadata request for all topics: asking by name would create unknown topics on Tansu.
        cluster = await client.fetch_all_metadata()
    by_leader: dict[int, list[TopicPartition]] = defaultdict(list)
    for tp in tps:
        leader = cluster.leader_for_partition(tp)
        if leader is None or leader < 0:
            raise TopicMissingError(f"no leader for {tp}: does the topic exist with that partition?")
        by_leader[leader].append(tp)
    return by_leader


# --- following a topic ---------------------------------------------------------------------------


async def follow_topic(
    settings: Settings, topic: Topic, apply: Callable[[Any], None], ready: asyncio.Event,
    reset: Callable[[], None],
) -> None:
    """Folds every record of ``topic`` from its start, then follows it (no group, nothing committed).

    ``ready`` is set once the fold has reached the end the topic had when the follower started, so
    a reader waiting on it sees every record written before. After a reconnection the fold starts
    again from an empty state (``reset``) and the topic's start, so a record is never counted twice.
    A record that breaks the contract is logged with its offset and skipped."""
    decode = events.decoder(topic.record).decode

    @stamina.retry(on=(KafkaError, OSError), attempts=None, timeout=None, wait_max=10.0)
    async def run() -> None:
        config = consumer_config(settings)
        config.pop("session_timeout_ms", None)
        config.pop("heartbeat_interval_ms", None)
        # Created with its declared partitions first: the embedded broker would make an unknown topic
        # with 4, for good, the moment this consumer asked for it.
        await ensure_topics(settings, [topic])
        consumer = AIOKafkaConsumer(**config, group_id=None)
        try:
            await consumer.start()
            name = settings.topic(topic.name)
            partitions = [TopicPartition(name, p) for p in range(topic.partitions)]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            ends = await end_offsets(consumer, partitions, settings.kafka.flavour)
            reset()
            while True:
                if not ready.is_set() and all([await consumer.position(tp) >= ends[tp] for tp in partitions]):
                    ready.set()
                batches = await consumer.getmany(timeout_ms=500, max_records=5000)
                for records in batches.values():
                    for record in records:
                        if record.value is None:
                            continue
                        try:
                            apply(decode(record.value))
                        except events.ContractError as error:
                            log.warning("%s offset %s: %s (skipped)", name, record.offset, error)
        finally:
            await consumer.stop()

    await run()


# --- reading a whole topic ------------------------------------------------------------------------


async def read_all(
    settings: Settings,
    topic: str,
    decoder: Callable[[bytes], T],
    *,
    timeout_s: float = 60.0,
) -> list[T]:
    """Every record of ``topic`` (full name) from the beginning up to its current end, decoded.

    Records come partition by partition, in offset order within each. A record ``decoder`` cannot
    decode raises its error (tests and the demo count records; a bad one is worth seeing).
    """
    return [decoder(record.value) for record in await read_records(settings, topic, timeout_s=timeout_s)]


async def read_records(settings: Settings, topic: str, *, timeout_s: float = 60.0) -> list[Any]:
    """The raw ``ConsumerRecord``s of ``topic`` (full name) up to its current end."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        cluster = await consumer._client.fetch_all_metadata()
        partitions = cluster.partitions_for_topic(topic)
        if partitions is None:
            raise TopicMissingError(f"topic {topic!r} does not exist")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await end_offsets(consumer, tps, settings.kafka.flavour)
        records: dict[TopicPartition, list[Any]] = {tp: [] for tp in tps}
        async with asyncio.timeout(timeout_s):
            while pending := [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
                batch = await consumer.getmany(*pending, timeout_ms=500)
                for tp, got in batch.items():
                    records[tp].extend(r for r in got if r.offset < ends[tp])
        return [r for tp in tps for r in records[tp]]
    finally:
        await consumer.stop()
