"""Consumes ``meter.slots`` into the market's metered-energy store (consumer group ``market-settlement``).

Offsets are committed after the records are stored (at-least-once); storing a record twice changes
nothing, since the store keeps the most complete record per (meter, slot). A record that breaks the
topic's contract is logged with the field at fault and its offset, and skipped: settlement then
treats that meter as not having reported (it shows in ``missing_meters``), never as silence.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer, TopicPartition

from quartier import events as ev
from quartier import kafka, topics
from quartier.settings import Settings

from marketplace.metering import MeterStore

log = logging.getLogger(__name__)

GROUP = "market-settlement"


class MeterFeed:
    def __init__(self, settings: Settings, store: MeterStore) -> None:
        self.settings = settings
        self.store = store
        self.topic = settings.topic(topics.METER_SLOTS.name)
        self._decoder = ev.decoder(ev.SlotEnergy)
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        #: Per assigned partition, the offset up to which every record is stored.
        self._stored: dict[TopicPartition, int] = {}

    async def start(self) -> None:
        await kafka.ensure_topics(self.settings, [topics.METER_SLOTS])
        consumer = AIOKafkaConsumer(self.topic, group_id=self.settings.topic(GROUP),
                                    **kafka.consumer_config(self.settings))
        await consumer.start()
        self._consumer = consumer
        self._task = asyncio.create_task(self._run(), name="market-meter-feed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=500, max_records=5000)
            records: list[ev.SlotEnergy] = []
            for messages in batches.values():
                for message in messages:
                    try:
                        records.append(self._decoder.decode(message.value))  # type: ignore[arg-type]
                    except ev.ContractError as exc:
                        log.error("%s partition %d offset %d skipped: %s", self.topic, message.partition,
                                  message.offset, exc)
            if records:
                await asyncio.to_thread(self.store.record, records)
            if batches:
                await self._consumer.commit()
            # After the store: a position read here was fetched and stored (fetching happens in getmany).
            self._stored = {tp: await self._consumer.position(tp) for tp in self._consumer.assignment()}

    async def caught_up(self) -> bool:
        """Whether every record ``meter.slots`` held when asked is stored.

        Settlement allocates a slot at its deadline "with what arrived"; what arrived means what is on
        the topic, not what this process happened to have read: a market restarted after an outage
        would otherwise allocate the slots whose deadline passed meanwhile before reading the
        meters' records that were waiting for it (tests/marketplace/test_kill_drill.py).
        """
        consumer = self._consumer
        if consumer is None or not consumer.assignment():
            return False
        stored = self._stored
        ends = await consumer.end_offsets(list(consumer.assignment()))
        return all(tp in stored and stored[tp] >= end for tp, end in ends.items())
