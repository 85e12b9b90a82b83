"""The household app's running parts in one API process, composed in ``build_service``.

- the live path (``households.live``): one feed of ``meter.readings`` into one hub, which tells the
  charts' cache of each reading that reached the log late;
- the alert actions' fold, following ``households.alert_actions`` from its start (what members did);
- the market sales' fold, following ``market.events`` from its start (``households.solar``);
- a producer for the commands the app writes (acknowledge, snooze), applied to the fold at once
  so the member who acted sees it on the next page (the follower applies it again: the fold is
  idempotent for these events).

Each follower reconnects with backoff (``stamina``) when the broker is away, so the API serves its
pages (and says "no live reading yet") while the broker comes back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import stamina
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from households.alert_history import AlertActions
from households.consumption import now_ms
from households.directory import HomeDirectory
from households.indexes import BoundaryCache
from households.live import LiveFeed, LiveHub
from households.solar import MarketSales
from quartier import events, topics
from quartier.kafka import follow_topic, producer_config
from quartier.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class HouseholdService:
    settings: Settings
    directory: HomeDirectory
    clock: Callable[[], int] = now_ms
    actions: AlertActions = field(default_factory=AlertActions)
    sales: MarketSales = field(default_factory=MarketSales)
    charts: BoundaryCache = field(default_factory=BoundaryCache)  # the charts' sealed buckets
    hub: LiveHub = field(init=False)  # tells the charts' cache of each reading that reached the log late
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _producer: AIOKafkaProducer | None = None
    _feed: LiveFeed | None = None
    actions_ready: asyncio.Event = field(default_factory=asyncio.Event)
    market_ready: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.hub = LiveHub(on_late=self.charts.reopen)

    async def start(self) -> None:
        self._feed = LiveFeed(self.settings, self.hub)
        self._tasks = [
            asyncio.create_task(self._run_feed(), name="households-live"),
            asyncio.create_task(
                follow_topic(self.settings, topics.HOUSEHOLDS_ALERT_ACTIONS, self.actions.apply, self.actions_ready,
                             self.actions.episodes.clear),
                name="households-alert-actions",
            ),
            asyncio.create_task(
                follow_topic(self.settings, topics.MARKET_EVENTS, self.sales.apply, self.market_ready, self.sales.reset),
                name="households-market-sales",
            ),
        ]

    async def _run_feed(self) -> None:
        assert self._feed is not None

        @stamina.retry(on=(KafkaError, OSError), attempts=None, timeout=None, wait_max=10.0)
        async def start_feed() -> None:
            await self._feed.start()  # type: ignore[union-attr]

        await start_feed()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception:  # noqa: BLE001 - a follower's failure is logged; stopping goes on
                log.exception("a household follower had failed")
        if self._feed is not None:
            await self._feed.stop()
        if self._producer is not None:
            await self._producer.stop()

    async def append(self, records: list[events.AlertAcknowledged | events.AlertSnoozed]) -> None:
        """Writes the app's commands' events, then applies them to the fold (read your own writes)."""
        if not records:
            return
        if self._producer is None:
            producer = AIOKafkaProducer(**producer_config(self.settings))
            await producer.start()
            self._producer = producer
        topic = self.settings.topic(topics.HOUSEHOLDS_ALERT_ACTIONS.name)
        check = events.decoder(topics.HOUSEHOLDS_ALERT_ACTIONS.record)
        for record in records:
            value = events.encode(record)
            check.decode(value)  # the contract, before the log: a record its readers would refuse never goes on it
            await self._producer.send_and_wait(topic, value, key=record.meter.encode())
            self.actions.apply(record)
