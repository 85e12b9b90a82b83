"""The delivery pipeline: small stages composed in one place (Alertmanager's ``notify`` style).

    route → dedup → send → record

Each stage takes the batch and returns it with its part done. ``route`` turns alert transitions into
notifications (one per device, one per email address); ``dedup`` drops what the sent log says went
out already; ``send`` hands each channel its notifications; ``record`` writes the sent log, forgets
unregistered device tokens and writes one Delivery per notification. Every alert transition ends as
at least one Delivery record, so nothing is dropped silently. The full notifier adds stages here
(quiet hours, grouping, rate limits, retry with backoff) without touching the others.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from quartier.events import AlertEvent, Channel, Delivery
from notifier.channels.base import DeliveryChannel
from notifier.contacts import ContactStore
from notifier.notification import Notification, Outcome
from notifier.sent_log import SentLog

log = logging.getLogger(__name__)

#: The recipient field of a Delivery that reached no one (no contact registered).
NO_RECIPIENT = "none"


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Batch:
    alerts: Sequence[AlertEvent]
    notifications: list[Notification] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)


class Stage(Protocol):
    async def __call__(self, batch: Batch) -> Batch: ...


class Route:
    """One notification per registered device and per email address of the alert's meter."""

    def __init__(self, contacts: ContactStore, channels: Sequence[Channel]) -> None:
        self.contacts = contacts
        self.channels = channels

    async def __call__(self, batch: Batch) -> Batch:
        recipients = self.contacts.recipients(a.meter for a in batch.alerts if a.meter)
        for alert in batch.alerts:
            found = recipients.get(alert.meter) if alert.meter else None
            routed = []
            if found is not None:
                if "push" in self.channels:
                    routed += [Notification(alert, "push", token, found.language) for token in found.tokens]
                if "email" in self.channels and found.email:
                    routed.append(Notification(alert, "email", found.email, found.language))
            if not routed:
                reason = (
                    "operator-level alert: no household recipient"
                    if alert.meter is None
                    else f"no device or email registered for meter {alert.meter}"
                )
                for channel in self.channels:
                    batch.deliveries.append(_delivery(alert, channel, NO_RECIPIENT, "suppressed", 0, reason=reason))
            batch.notifications.extend(routed)
        return batch


class Dedup:
    """Drops notifications already sent (persisted sent log) or repeated within this batch."""

    def __init__(self, sent_log: SentLog) -> None:
        self.sent_log = sent_log

    async def __call__(self, batch: Batch) -> Batch:
        already = self.sent_log.already_sent(n.key for n in batch.notifications)
        fresh: list[Notification] = []
        seen = set(already)
        for notification in batch.notifications:
            if notification.key in seen:
                batch.deliveries.append(
                    _delivery(
                        notification.alert, notification.channel, notification.recipient, "deduplicated", 0,
                        reason="already sent" if notification.key in already else "repeated in the same batch",
                    )
                )
                continue
            seen.add(notification.key)
            fresh.append(notification)
        batch.notifications = fresh
        return batch


class Send:
    """Hands each channel its notifications, all channels at once (pushes leave from a worker
    thread while emails go out on the event loop); outcomes keep each channel's order."""

    def __init__(self, channels: Mapping[Channel, DeliveryChannel]) -> None:
        self.channels = channels

    async def __call__(self, batch: Batch) -> Batch:
        work = {
            name: mine
            for name in self.channels
            if (mine := [n for n in batch.notifications if n.channel == name])
        }
        results = await asyncio.gather(*(self._send(name, mine) for name, mine in work.items()))
        for outcomes in results:
            batch.outcomes.extend(outcomes)
        return batch

    async def _send(self, name: Channel, notifications: list[Notification]) -> list[Outcome]:
        try:
            return await self.channels[name].send(notifications)
        except Exception as exc:  # a channel bug must not lose what the other channel sent
            log.exception("channel %s failed on %d notifications", name, len(notifications))
            return [Outcome(n, "failed", 1, reason=f"channel error: {exc!r}") for n in notifications]


class Record:
    """Writes the sent log first (so a crash after it never sends twice), forgets unregistered
    device tokens, and turns every outcome into a Delivery."""

    def __init__(self, sent_log: SentLog, contacts: ContactStore) -> None:
        self.sent_log = sent_log
        self.contacts = contacts

    async def __call__(self, batch: Batch) -> Batch:
        self.sent_log.record((o.notification.key, o.provider_id) for o in batch.outcomes if o.status == "sent")
        self.contacts.remove_tokens(
            o.notification.address for o in batch.outcomes if o.address_gone and o.notification.channel == "push"
        )
        for o in batch.outcomes:
            n = o.notification
            batch.deliveries.append(
                _delivery(n.alert, n.channel, n.recipient, o.status, o.attempts, o.provider_id, o.reason)
            )
        return batch


class Pipeline:
    def __init__(self, stages: Sequence[Stage]) -> None:
        self.stages = stages

    async def run(self, alerts: Sequence[AlertEvent]) -> list[Delivery]:
        batch = Batch(alerts)
        for stage in self.stages:
            batch = await stage(batch)
        return batch.deliveries


def build_pipeline(
    contacts: ContactStore, sent_log: SentLog, channels: Mapping[Channel, DeliveryChannel]
) -> Pipeline:
    """The notifier's stages, in order: the one place they are composed."""
    return Pipeline(
        [
            Route(contacts, list(channels)),
            Dedup(sent_log),
            Send(channels),
            Record(sent_log, contacts),
        ]
    )


def _delivery(
    alert: AlertEvent,
    channel: Channel,
    recipient: str,
    status: str,
    attempts: int,
    provider_id: str | None = None,
    reason: str | None = None,
) -> Delivery:
    return Delivery(
        alert_id=alert.id,
        alert_state=alert.state,
        channel=channel,
        recipient=recipient,
        status=status,  # type: ignore[arg-type]
        attempts=attempts,
        provider_id=provider_id,
        reason=reason,
        at_ms=now_ms(),
    )
