"""The notifier process: consumes ``alerts.events``, runs the delivery pipeline, logs deliveries.

At-least-once, with dedup: a window of alert transitions (what arrives within
``group_window_s`` of the first, so a storm lands in one batch) goes through the pipeline, whose
channels journal each acceptance the moment it happens and whose record stage writes the sent log;
the Delivery records are produced to ``notifications.deliveries`` and flushed, and only then are
the offsets committed. A crash anywhere before the commit replays the window; the sent log (with
what the journal recovered at start) turns the replay into ``deduplicated`` deliveries instead of
second sends. Between windows, notifications held through quiet hours or waiting for a retry are
released when due. What household members snoozed is followed from ``households.alert_actions``
(``notifier.snoozes``), read to its end before the first alert is routed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client import CollectorRegistry, start_http_server

from quartier import events, topics
from quartier.events import AlertEvent, ContractError, Delivery
from quartier.kafka import consumer_config, ensure_topics, follow_topic, producer_config
from quartier.settings import Settings
from notifier.accounts_projection import ContactsProjection
from notifier.channels.base import DeliveryChannel
from notifier.channels.email import EmailChannel
from notifier.channels.fcm import FcmChannel
from notifier.channels.fcm_processes import FcmProcesses
from notifier.contacts import ContactStore
from notifier.database import notifier_engine
from notifier.firebase import firebase_app
from notifier.metrics import NotifierMetrics
from notifier.pending import PendingStore
from notifier.pipeline import Batch, Pipelines, build_pipelines
from notifier.render import Renderer
from notifier.sent_log import SentJournal, SentLog
from notifier.snoozes import Snoozes

log = logging.getLogger(__name__)

#: Alert transitions handled per window at most (and per commit).
MAX_WINDOW_RECORDS = 2000
#: How often waiting notifications are looked at.
RELEASE_EVERY_S = 0.5
FETCH_MAX_WAIT_MS = 50
JOURNAL_FILE = "notifier-sent.journal"


ALL_CHANNELS = ("push", "email")


def window_offsets(records: list) -> dict[TopicPartition, int]:
    """The offsets to commit after a window: past its last record, on the partitions it read only.

    aiokafka's ``commit()`` without offsets writes every assigned partition's position, moved or not;
    on the embedded broker each is an object written to the store (docs/operations.md, "What the store
    is asked"), about 14 a second from the notifier alone at the reference load.
    """
    offsets: dict[TopicPartition, int] = {}
    for record in records:
        tp = TopicPartition(record.topic, record.partition)
        offsets[tp] = max(offsets.get(tp, 0), record.offset + 1)
    return offsets


def group_id(settings: Settings, channels: tuple[str, ...] = ALL_CHANNELS) -> str:
    # The topic prefix keeps test runs and demo runs in their own consumer groups; a process per
    # channel reads every alert in its own group (its dedup keys, held rows and journal are its own).
    suffix = "" if set(channels) == set(ALL_CHANNELS) else "-" + "-".join(sorted(channels))
    return f"{settings.kafka.topic_prefix}quartier-notifier{suffix}"


@dataclass
class NotifierStats:
    alerts: int = 0
    rejected: int = 0
    deliveries: dict[str, int] = field(default_factory=dict)


class Notifier:
    def __init__(
        self,
        settings: Settings,
        pipelines: Pipelines,
        channels: list[DeliveryChannel],
        sent_log: SentLog,
        registry: CollectorRegistry | None = None,
        projection: ContactsProjection | None = None,
        snoozes: Snoozes | None = None,
    ) -> None:
        self.settings = settings
        # The snoozes the pipeline's snooze stage reads, followed while the notifier runs (None: not followed).
        self.snoozes = snoozes
        # The contacts follow accounts.events while the notifier runs (None: only what is in the store).
        self.projection = projection
        self.channel_names = tuple(channel.name for channel in channels)
        self.pipelines = pipelines
        self.channels = channels
        self.sent_log = sent_log
        self.stats = NotifierStats()
        self.registry = registry or CollectorRegistry()
        self.metrics = NotifierMetrics(self.registry)
        self._decoder = events.decoder(AlertEvent)
        self._alerts_topic = settings.topic(topics.ALERTS_EVENTS.name)
        self._deliveries_topic = settings.topic(topics.NOTIFICATIONS_DELIVERIES.name)
        self._next_release = 0.0

    @classmethod
    def from_settings(cls, settings: Settings, channel_names: tuple[str, ...] = ALL_CHANNELS) -> "Notifier":
        """A notifier for ``channel_names``: both by default; one process per channel lets each
        use its own core (the push threads and the SMTP connections share one interpreter lock)."""
        if not channel_names or set(channel_names) - set(ALL_CHANNELS):
            raise ValueError(f"channels must be among {ALL_CHANNELS}, got {channel_names}")
        engine = notifier_engine(settings)
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        suffix = "" if set(channel_names) == set(ALL_CHANNELS) else "-" + "-".join(sorted(channel_names))
        journal = SentJournal(settings.state_dir / f"{settings.kafka.topic_prefix}{JOURNAL_FILE}{suffix}")
        contacts, sent_log, pending, renderer = ContactStore(engine), SentLog(engine, journal), PendingStore(engine), Renderer()
        options = settings.notifier
        channels: dict[str, DeliveryChannel] = {}
        if "push" in channel_names and options.push_processes > 1:
            channels["push"] = FcmProcesses(settings.fcm, journal.path, options.push_processes, options.push_threads)
        elif "push" in channel_names:
            channels["push"] = FcmChannel(firebase_app(settings.fcm), renderer, journal, threads=options.push_threads)
        if "email" in channel_names:
            channels["email"] = EmailChannel(settings.smtp, renderer, journal, connections=options.email_connections)
        snoozes = Snoozes()
        pipelines = build_pipelines(contacts, sent_log, pending, channels, options, snoozes=snoozes)  # type: ignore[arg-type]
        return cls(settings, pipelines, list(channels.values()), sent_log, projection=ContactsProjection(settings, engine),
                   snoozes=snoozes)

    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> NotifierStats:
        """Consumes until ``stop`` is set; the window in hand is finished and committed first."""
        recovered = self.sent_log.recover()
        if recovered:
            log.info("recovered %d sends from the journal of an interrupted run", recovered)
        if self.settings.metrics_port:
            start_http_server(self.settings.metrics_port, registry=self.registry)
        await ensure_topics(self.settings, [topics.ALERTS_EVENTS, topics.NOTIFICATIONS_DELIVERIES])
        if self.projection is not None:
            # Every account-derived contact rewritten from the log before the first alert is routed.
            await self.projection.start()
        following: asyncio.Task[None] | None = None
        if self.snoozes is not None:
            snoozes_read = asyncio.Event()
            following = asyncio.create_task(
                follow_topic(self.settings, topics.HOUSEHOLDS_ALERT_ACTIONS, self.snoozes.apply, snoozes_read,
                             self.snoozes.reset),
                name="notifier-snoozes",
            )
            read = asyncio.create_task(snoozes_read.wait())
            await asyncio.wait([following, read], return_when=asyncio.FIRST_COMPLETED)
            if following.done():
                read.cancel()
                following.result()  # a follower that failed for good stops the notifier with its error
        consumer = AIOKafkaConsumer(
            self._alerts_topic,
            group_id=group_id(self.settings, self.channel_names),
            max_poll_records=MAX_WINDOW_RECORDS,
            **{
                **consumer_config(self.settings),
                # aiokafka's default lets a fetch wait 500 ms for more data: half the latency budget.
                "fetch_max_wait_ms": FETCH_MAX_WAIT_MS,
            },
        )
        producer = AIOKafkaProducer(**producer_config(self.settings))
        await producer.start()
        await consumer.start()
        log.info("consuming %s as group %s", self._alerts_topic, group_id(self.settings, self.channel_names))
        if ready is not None:
            ready.set()
        try:
            while not stop.is_set():
                records = await self._window(consumer)
                if records:
                    await self._handle(records, producer)
                    await consumer.commit(window_offsets(records))
                if time.monotonic() >= self._next_release:
                    await self.release(producer)
                    self._next_release = time.monotonic() + RELEASE_EVERY_S
        finally:
            await consumer.stop()
            await producer.stop()
            if following is not None:
                following.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await following
            if self.projection is not None:
                await self.projection.stop()
            for channel in self.channels:
                await channel.close()
            if self.sent_log.journal is not None:
                self.sent_log.journal.close()
        return self.stats

    async def _window(self, consumer: AIOKafkaConsumer) -> list:
        """What arrives within ``group_window_s`` of the first record (at most MAX_WINDOW_RECORDS)."""
        polled = await consumer.getmany(timeout_ms=int(RELEASE_EVERY_S * 1000), max_records=MAX_WINDOW_RECORDS)
        records = [record for batch in polled.values() for record in batch]
        if not records:
            return records
        deadline = time.monotonic() + self.settings.notifier.group_window_s
        while len(records) < MAX_WINDOW_RECORDS and (left := deadline - time.monotonic()) > 0:
            polled = await consumer.getmany(timeout_ms=max(1, int(left * 1000)), max_records=MAX_WINDOW_RECORDS - len(records))
            records += [record for batch in polled.values() for record in batch]
        return records

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
        await self._finish(await self.pipelines.alerts.run(alerts), producer)

    async def release(self, producer: AIOKafkaProducer) -> None:
        """Sends what was held through quiet hours or waits for a retry, once due."""
        due = self.pipelines.pending.due(int(time.time() * 1000), self.channel_names)
        if due:
            await self._finish(await self.pipelines.release.run(notifications=due), producer)

    async def _finish(self, batch: Batch, producer: AIOKafkaProducer) -> None:
        await self._publish(batch.deliveries, producer)
        gone = [o.notification.address for o in batch.outcomes if o.address_gone and o.notification.channel == "push"]
        if gone and self.projection is not None:
            try:
                await self.projection.unregistered(gone)
            except Exception:
                # The store forgot them already (record stage); accounts forgets them on a later report.
                log.exception("could not tell accounts that %d device tokens are unregistered", len(gone))
        self.metrics.observe(batch.counts, batch.latencies)
        if self.sent_log.journal is not None:
            self.sent_log.journal.empty_if_large()

    async def _publish(self, deliveries: list[Delivery], producer: AIOKafkaProducer) -> None:
        pending = [
            await producer.send(self._deliveries_topic, events.encode(d), key=d.alert_id.encode()) for d in deliveries
        ]
        # Raises if any record was not written, so the offsets are not committed and the window replays.
        await asyncio.gather(*pending)
        for delivery in deliveries:
            self.stats.deliveries[delivery.status] = self.stats.deliveries.get(delivery.status, 0) + 1
