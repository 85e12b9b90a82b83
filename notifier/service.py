"""The notifier process: consumes ``alerts.events``, runs the delivery pipeline, logs deliveries.

At-least-once: a poll's alert transitions go through the pipeline (whose record stage writes the
sent log right after sending), their Delivery records are produced to ``notifications.deliveries``
and flushed, and only then are the offsets committed. A crash anywhere before the commit replays
the poll; the sent log turns the replay into ``deduplicated`` deliveries instead of second sends.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from quartier import events, topics
from quartier.events import AlertEvent, ContractError, Delivery
from quartier.kafka import consumer_config, ensure_topics, producer_config
from quartier.settings import Settings
from notifier.channels.base import DeliveryChannel
from notifier.channels.email import EmailChannel
from notifier.channels.fcm import FcmChannel
from notifier.contacts import ContactStore
from notifier.database import notifier_engine
from notifier.firebase import firebase_app
from notifier.pipeline import Pipeline, build_pipeline
from notifier.render import Renderer
from notifier.sent_log import SentLog

log = logging.getLogger(__name__)

#: Alert transitions handled per poll (and per commit).
MAX_POLL_RECORDS = 500


def group_id(settings: Settings) -> str:
    # The topic prefix keeps test runs and demo runs in their own consumer groups.
    return f"{settings.kafka.topic_prefix}quartier-notifier"


@dataclass
class NotifierStats:
    alerts: int = 0
    rejected: int = 0
    deliveries: dict[str, int] = field(default_factory=dict)


class Notifier:
    def __init__(self, settings: Settings, pipeline: Pipeline, channels: list[DeliveryChannel]) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.channels = channels
        self.stats = NotifierStats()
        self._decoder = events.decoder(AlertEvent)
        self._alerts_topic = settings.topic(topics.ALERTS_EVENTS.name)
        self._deliveries_topic = settings.topic(topics.NOTIFICATIONS_DELIVERIES.name)

    @classmethod
    def from_settings(cls, settings: Settings) -> "Notifier":
        engine = notifier_engine(settings)
        contacts, sent_log, renderer = ContactStore(engine), SentLog(engine), Renderer()
        channels: dict[str, DeliveryChannel] = {
            "push": FcmChannel(firebase_app(settings.fcm), renderer),
            "email": EmailChannel(settings.smtp, renderer),
        }
        return cls(settings, build_pipeline(contacts, sent_log, channels), list(channels.values()))  # type: ignore[arg-type]

    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> NotifierStats:
        """Consumes until ``stop`` is set; the poll in hand is finished and committed first."""
        await ensure_topics(self.settings, [topics.ALERTS_EVENTS, topics.NOTIFICATIONS_DELIVERIES])
        consumer = AIOKafkaConsumer(
            self._alerts_topic,
            group_id=group_id(self.settings),
            max_poll_records=MAX_POLL_RECORDS,
            **consumer_config(self.settings),
        )
        producer = AIOKafkaProducer(**producer_config(self.settings))
        await producer.start()
        await consumer.start()
        log.info("consuming %s as group %s", self._alerts_topic, group_id(self.settings))
        if ready is not None:
            ready.set()
        try:
            while not stop.is_set():
                polled = await consumer.getmany(timeout_ms=500, max_records=MAX_POLL_RECORDS)
                if not polled:
                    continue
                records = [record for batch in polled.values() for record in batch]
                await self._handle(records, producer)
                await consumer.commit()
        finally:
            await consumer.stop()
            await producer.stop()
            for channel in self.channels:
                await channel.close()
        return self.stats

    async def _handle(self, records: list, producer: AIOKafkaProducer) -> None:
        alerts: list[AlertEvent] = []
        for record in records:
            try:
                alerts.append(self._decoder.decode(record.value))  # type: ignore[arg-type]
            except ContractError as exc:
                # Not ours to fix: the streams engine owns this contract. Logged with its position.
                self.stats.rejected += 1
                log.error(
                    "%s[%d]@%d is not an AlertEvent, skipped: %s", record.topic, record.partition, record.offset, exc
                )
        self.stats.alerts += len(alerts)
        deliveries = await self.pipeline.run(alerts)
        await self._publish(deliveries, producer)

    async def _publish(self, deliveries: list[Delivery], producer: AIOKafkaProducer) -> None:
        pending = [
            await producer.send(self._deliveries_topic, events.encode(d), key=d.alert_id.encode()) for d in deliveries
        ]
        # Raises if any record was not written, so the offsets are not committed and the poll replays.
        await asyncio.gather(*pending)
        for delivery in deliveries:
            self.stats.deliveries[delivery.status] = self.stats.deliveries.get(delivery.status, 0) + 1
