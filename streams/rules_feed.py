"""Every worker reads the whole ``alerts.rules`` topic, from the beginning, and keeps following it.

The rules are keyed by meter while readings are keyed by shard, so the worker that judges a meter
does not own that meter's ``alerts.rules`` partition: each worker needs all of them, like a Faust
GlobalTable. They are read with a plain consumer outside the consumer group instead, because every
record must go through the alert engine (a rule switched off resolves an open episode), and Faust
documents GlobalTables shared by several workers as prone to recovery loops. The topic is the
household's latest preferences per meter (compacted on Kafka; Tansu keeps every record, which is
still right: the last one per meter wins).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition

from quartier.events import AlertRules, ContractError, Decoder, ResolutionChosen
from quartier.kafka import TopicMissingError, end_offsets
from quartier.settings import Settings

log = logging.getLogger(__name__)

_decoder = Decoder(AlertRules)


class RulesFeed:
    """Follows ``alerts.rules``; ``ready`` is set once everything there at start has been applied."""

    def __init__(
        self,
        settings: Settings,
        topic: str,
        on_rules: Callable[[AlertRules], None] | Callable[[ResolutionChosen], None],
        on_removed: Callable[[str], None],
        on_rejected: Callable[[str, str], None],
        decoder: Decoder = _decoder,
    ) -> None:
        # decoder: the topic's record; another compacted per-meter topic (meter.resolution) is followed
        # the same way with its own.
        self.decoder = decoder
        self.settings = settings
        self.topic = topic
        self.on_rules = on_rules
        self.on_removed = on_removed
        self.on_rejected = on_rejected
        self.ready = asyncio.Event()

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.kafka.bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            cluster = await consumer._client.fetch_all_metadata()  # all topics: naming one would create it
            partitions = cluster.partitions_for_topic(self.topic)
            if partitions is None:
                raise TopicMissingError(f"topic {self.topic!r} does not exist")
            tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await end_offsets(consumer, tps, self.settings.kafka.flavour)
            while True:
                if not self.ready.is_set() and all([await consumer.position(tp) >= ends[tp] for tp in tps]):
                    log.info("alert rules loaded from %s", self.topic)
                    self.ready.set()
                batch = await consumer.getmany(timeout_ms=1000)
                for records in batch.values():
                    for record in records:
                        self._apply(record.key, record.value, record.offset)
        finally:
            await consumer.stop()

    def _apply(self, key: bytes | None, value: bytes | None, offset: int) -> None:
        if value is None:
            if key:
                self.on_removed(key.decode(errors="replace"))
            return
        try:
            rules = self.decoder.decode(value)
        except ContractError as error:
            self.on_rejected(f"{self.topic} offset {offset}: {error}", key.decode(errors="replace") if key else "")
            return
        self.on_rules(rules)  # type: ignore[arg-type]
