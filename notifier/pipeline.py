"""The delivery pipeline: small stages composed in one place (``build_pipelines``).

    route → dedup → snooze → quiet hours → group → rate limit → send → retry → record

Each stage takes the batch and returns it with its part done:

- **route** turns alert transitions into notifications: one per device and one per email address
  of the user who owns the meter (every operator for operator-level alerts), on the channels the
  user wants, leaving out kinds the user muted;
- **dedup** drops what the sent log says went out already, and what is already waiting (held
  through quiet hours or for a retry), so a replay or a restart never sends twice;
- **snooze** stops a raise of a kind a household member snoozed on that meter in the app, until
  the snooze ends (``notifier.snoozes``); resolutions pass, so an open episode still ends;
- **quiet hours** holds a user's non-urgent notifications until their quiet hours end (an
  urgent kind, the fuse limit, passes); a resolution that comes while its raise is held cancels both;
- **group** merges a user's notifications on one address into one message when the batch holds
  ``group_min_alerts`` distinct alert episodes or more (a storm); fewer go out one by one;
- **rate limit** stops a user's raised notifications beyond ``user_raised_per_hour`` per channel
  (resolutions and urgent kinds always pass); the global pace per channel is kept in send;
- **send** hands each channel its notifications, all channels at once;
- **retry** schedules transient failures again after an exponential backoff with full jitter, at
  least the Retry-After the provider asked for, up to ``max_attempts`` attempts in all;
- **record** writes the sent log, forgets held rows that are done, removes unregistered device
  tokens, and turns every outcome into a Delivery.

Every alert transition ends as at least one Delivery, so nothing is dropped silently. Held and
retried notifications come back through ``release``: dedup (sent log only) → snooze → quiet hours →
group → send → retry → record.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import msgspec
from aiolimiter import AsyncLimiter
from limits import RateLimitItemPerHour
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from quartier.events import AlertEvent, Channel, Delivery
from quartier.settings import NotifierSettings
from notifier.channels.base import DeliveryChannel
from notifier.contacts import ContactStore, QuietPeriod, Recipient
from notifier.notification import Notification, Outcome
from notifier.pending import HOLD_QUIET_HOURS, HOLD_RETRY, PendingStore
from notifier.sent_log import SentKey, SentLog
from notifier.snoozes import Snoozes

log = logging.getLogger(__name__)

#: The recipient field of a Delivery that reached no one (no contact registered).
NO_RECIPIENT = "none"

Clock = Callable[[], float]


@dataclass
class Batch:
    alerts: Sequence[AlertEvent] = ()
    notifications: list[Notification] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    #: (channel, status, cause) → count, for the metrics; cause says why for suppressed ones.
    counts: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    #: Seconds from each alert's production to its provider's acceptance, per channel.
    latencies: list[tuple[str, float]] = field(default_factory=list)

    def deliver(
        self, alert: AlertEvent, channel: str, recipient: str, status: str, attempts: int,
        provider_id: str | None = None, reason: str | None = None, cause: str = "",
    ) -> None:
        self.deliveries.append(
            Delivery(
                alert_id=alert.id, alert_state=alert.state, channel=channel,  # type: ignore[arg-type]
                recipient=recipient, status=status, attempts=attempts,  # type: ignore[arg-type]
                provider_id=provider_id, reason=reason, at_ms=int(time.time() * 1000),
            )
        )
        self.counts[(channel, status, cause)] += 1

    def deliver_all(self, notification: Notification, status: str, reason: str, cause: str, attempts: int = 0) -> None:
        for alert in notification.alerts:
            self.deliver(alert, notification.channel, notification.recipient, status, attempts, reason=reason, cause=cause)


class Stage(Protocol):
    async def __call__(self, batch: Batch) -> Batch: ...


class Route:
    """One notification per device and per email address of each user the alert concerns."""

    def __init__(self, contacts: ContactStore, channels: Sequence[Channel]) -> None:
        self.contacts = contacts
        self.channels = channels

    async def __call__(self, batch: Batch) -> Batch:
        by_meter = self.contacts.recipients_by_meter(a.meter for a in batch.alerts)
        for alert in batch.alerts:
            users = by_meter.get(alert.meter, [])
            routed: list[Notification] = []
            muted = 0
            for user in users:
                if alert.kind in user.muted_kinds:
                    muted += 1
                    continue
                routed += self._notifications(alert, user)
            if not routed:
                if muted:
                    reason, cause = f"{alert.kind} alerts are muted by the user", "muted"
                elif alert.meter is None:
                    reason, cause = "operator-level alert: no operator registered", "no_recipient"
                elif users:
                    reason, cause = f"no device or email on the user's channels for meter {alert.meter}", "no_recipient"
                else:
                    reason, cause = f"no device or email registered for meter {alert.meter}", "no_recipient"
                for channel in self.channels:
                    batch.deliver(alert, channel, NO_RECIPIENT, "suppressed", 0, reason=reason, cause=cause)
            batch.notifications.extend(routed)
        return batch

    def _notifications(self, alert: AlertEvent, user: Recipient) -> list[Notification]:
        out = []
        common = {"language": user.language, "user": user.user, "zone": user.time_zone}
        if "push" in self.channels and "push" in user.channels:
            out += [Notification((alert,), "push", token, **common) for token in user.tokens]  # type: ignore[arg-type]
        if "email" in self.channels and "email" in user.channels and user.email:
            out.append(Notification((alert,), "email", user.email, **common))  # type: ignore[arg-type]
        return out


class Dedup:
    """Drops notifications already sent (persisted sent log), already waiting (held or to be
    retried), or repeated within this batch."""

    def __init__(self, sent_log: SentLog, pending: PendingStore | None) -> None:
        self.sent_log = sent_log
        self.pending = pending

    async def __call__(self, batch: Batch) -> Batch:
        keys = [k for n in batch.notifications for k in n.keys]
        sent = self.sent_log.already_sent(keys)
        waiting = set(self.pending.pending(keys)) if self.pending is not None else set()
        fresh: list[Notification] = []
        seen: set[SentKey] = set()
        for notification in batch.notifications:
            key = notification.key
            if key in sent or key in waiting or key in seen:
                reason = (
                    "already sent" if key in sent
                    else "already waiting (quiet hours or retry)" if key in waiting
                    else "repeated in the same batch"
                )
                batch.deliver_all(notification, "deduplicated", reason, "dedup")
                continue
            seen.add(key)
            fresh.append(notification)
        batch.notifications = fresh
        return batch


class Snooze:
    """Stops raises of what a household member snoozed, until the snooze ends (urgent kinds too:
    the member chose it for that kind)."""

    def __init__(self, snoozes: Snoozes, clock: Clock = time.time) -> None:
        self.snoozes = snoozes
        self.clock = clock

    async def __call__(self, batch: Batch) -> Batch:
        now_ms = int(self.clock() * 1000)
        passing: list[Notification] = []
        for notification in batch.notifications:
            alert = notification.alert
            until = self.snoozes.until_ms(alert.id, alert.meter, alert.kind, now_ms) if alert.state == "raised" else None
            if until is None:
                passing.append(notification)
                continue
            ends = datetime.datetime.fromtimestamp(until / 1000, notification.zone).isoformat(timespec="minutes")
            batch.deliver_all(notification, "suppressed", f"snoozed by a household member until {ends}", "snoozed",
                              notification.attempts)
        batch.notifications = passing
        return batch


class QuietHours:
    """Holds non-urgent notifications of users in their quiet hours until those end."""

    def __init__(
        self, pending: PendingStore, quiet_periods: Callable[[set[str]], Mapping[str, QuietPeriod]], clock: Clock = time.time
    ) -> None:
        self.pending = pending
        self.quiet_periods = quiet_periods
        self.clock = clock

    async def __call__(self, batch: Batch) -> Batch:
        now = datetime.datetime.fromtimestamp(self.clock(), datetime.timezone.utc)
        periods = self.quiet_periods({n.user for n in batch.notifications if n.user})
        passing: list[Notification] = []
        held: list[tuple[Notification, int, str, str | None]] = []
        for notification in batch.notifications:
            period = periods.get(notification.user)
            quiet = period.end_after(now.astimezone(notification.zone)) if period is not None else None
            if quiet is None or notification.urgent:
                passing.append(notification)
                continue
            held.append((notification, int(quiet.timestamp() * 1000), HOLD_QUIET_HOURS, None))
        if not held:
            batch.notifications = passing
            return batch
        # A resolution whose raise is still held: the episode began and ended in the night.
        raised_keys = {
            SentKey(n.alert.id, "raised", n.channel, n.recipient): n for n, *_ in held if n.alert.state == "resolved"
        }
        still_held = self.pending.pending(raised_keys) if raised_keys else {}
        cancelled = {k for k, row in still_held.items() if row.hold == HOLD_QUIET_HOURS}
        if cancelled:
            self.pending.forget(cancelled)
        keep: list[tuple[Notification, int, str, str | None]] = []
        for notification, due_ms, hold, _ in held:
            if SentKey(notification.alert.id, "raised", notification.channel, notification.recipient) in cancelled:
                reason = "quiet hours: raised and resolved while quiet, neither sent"
                for alert_state in ("raised", "resolved"):
                    batch.deliver(
                        notification.alert if alert_state == "resolved" else _as_raised(notification.alert),
                        notification.channel, notification.recipient, "suppressed", notification.attempts,
                        reason=reason, cause="quiet_hours",
                    )
                continue
            until = datetime.datetime.fromtimestamp(due_ms / 1000, notification.zone).isoformat(timespec="minutes")
            reason = f"quiet hours: held until {until}"
            keep.append((notification, due_ms, hold, reason))
            batch.deliver_all(notification, "suppressed", reason, "quiet_hours", notification.attempts)
        self.pending.hold(keep)
        batch.notifications = passing
        return batch


def _as_raised(alert: AlertEvent) -> AlertEvent:
    return msgspec.structs.replace(alert, state="raised")


class Group:
    """Merges a storm: one message per address for a user with many alert episodes in the batch."""

    def __init__(self, min_alerts: int) -> None:
        self.min_alerts = min_alerts

    async def __call__(self, batch: Batch) -> Batch:
        by_address: dict[tuple[str, str, str], list[Notification]] = {}
        for notification in batch.notifications:
            by_address.setdefault((notification.user, notification.channel, notification.address), []).append(notification)
        out: list[Notification] = []
        for members in by_address.values():
            episodes = {a.id for n in members for a in n.alerts}
            if len(episodes) < self.min_alerts:
                out.extend(members)
                continue
            alerts = sorted((a for n in members for a in n.alerts), key=lambda a: (a.kind != "fuse_limit", a.at_ms))
            first = members[0]
            out.append(Notification(tuple(alerts), first.channel, first.address, first.language, first.user, first.zone,
                                    attempts=max(n.attempts for n in members), held=any(n.held for n in members),
                                    recipient=first.recipient))
        batch.notifications = out
        return batch


class RateLimit:
    """Per user and channel: at most ``per_hour`` messages carrying a raised alert (moving window)."""

    def __init__(self, per_hour: int) -> None:
        self.item = RateLimitItemPerHour(per_hour)
        self.limiter = MovingWindowRateLimiter(MemoryStorage())

    async def __call__(self, batch: Batch) -> Batch:
        passing: list[Notification] = []
        decisions: dict[tuple[str, str, str], bool] = {}
        for notification in batch.notifications:
            if notification.urgent or all(a.state == "resolved" for a in notification.alerts):
                passing.append(notification)
                continue
            # All devices of a user share one decision per alert: a user is limited, not a phone.
            decision_key = (notification.user, notification.channel, notification.alert.id)
            allowed = decisions.get(decision_key)
            if allowed is None:
                allowed = self.limiter.hit(self.item, notification.user, notification.channel)
                decisions[decision_key] = allowed
            if allowed:
                passing.append(notification)
            else:
                batch.deliver_all(
                    notification, "suppressed", f"rate limit: more than {self.item.amount} raised alerts an hour",
                    "rate_limit", notification.attempts,
                )
        batch.notifications = passing
        return batch


class Send:
    """Hands each channel its notifications, all channels at once, each paced to its provider's
    quota; outcomes keep each channel's order."""

    def __init__(self, channels: Mapping[Channel, DeliveryChannel], per_s: Mapping[Channel, float]) -> None:
        self.channels = channels
        self.limiters = {name: AsyncLimiter(per_s[name], 1.0) for name in channels}
        self.chunk = {name: max(1, int(per_s[name])) for name in channels}

    async def __call__(self, batch: Batch) -> Batch:
        work = {
            name: mine for name in self.channels if (mine := [n for n in batch.notifications if n.channel == name])
        }
        results = await asyncio.gather(*(self._send(name, mine) for name, mine in work.items()))
        for outcomes in results:
            batch.outcomes.extend(outcomes)
        return batch

    async def _send(self, name: Channel, notifications: list[Notification]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        size = self.chunk[name]
        for start in range(0, len(notifications), size):
            chunk = notifications[start : start + size]
            await self.limiters[name].acquire(len(chunk))
            try:
                outcomes += await self.channels[name].send(chunk)
            except Exception as exc:  # a channel bug must not lose what the other channel sent
                log.exception("channel %s failed on %d notifications", name, len(chunk))
                outcomes += [Outcome(n, "failed", reason=f"channel error: {exc!r}", transient=True) for n in chunk]
        return outcomes


class Retry:
    """Schedules transient failures again (exponential backoff, full jitter, Retry-After as a floor)."""

    def __init__(self, pending: PendingStore, settings: NotifierSettings, clock: Clock = time.time,
                 rng: random.Random | None = None) -> None:
        self.pending = pending
        self.settings = settings
        self.clock = clock
        self.rng = rng or random.Random()

    def delay_s(self, attempts: int, retry_after_s: float | None) -> float:
        ceiling = min(self.settings.retry_max_s, self.settings.retry_base_s * 2 ** (attempts - 1))
        # Half fixed, half random: spreads a crowd of retries without ever retrying at once.
        wait = ceiling / 2 + self.rng.uniform(0, ceiling / 2)
        return max(wait, retry_after_s or 0.0)

    async def __call__(self, batch: Batch) -> Batch:
        final: list[Outcome] = []
        again: list[tuple[Notification, int, str, str | None]] = []
        now = self.clock()
        for outcome in batch.outcomes:
            if outcome.status == "failed" and outcome.transient and outcome.attempts < self.settings.max_attempts:
                delay = self.delay_s(outcome.attempts, outcome.retry_after_s)
                again.append((outcome.notification.with_attempts(outcome.attempts), int((now + delay) * 1000),
                              HOLD_RETRY, outcome.reason))
                for alert in outcome.notification.alerts:
                    batch.deliver(alert, outcome.notification.channel, outcome.notification.recipient, "retrying",
                                  outcome.attempts, reason=f"{outcome.reason}; next attempt in {delay:.1f} s", cause="retry")
                continue
            if outcome.status == "failed" and outcome.transient:
                outcome = Outcome(outcome.notification, "failed",
                                  reason=f"gave up after {outcome.attempts} attempts: {outcome.reason}")
            final.append(outcome)
        if again:
            self.pending.hold(again)
        batch.outcomes = final
        return batch


class Record:
    """Writes the sent log (so a crash after it never sends twice), forgets held rows that are
    done, forgets unregistered device tokens, and turns every outcome into a Delivery."""

    def __init__(self, sent_log: SentLog, pending: PendingStore, contacts: ContactStore, clock: Clock = time.time) -> None:
        self.sent_log = sent_log
        self.pending = pending
        self.contacts = contacts
        self.clock = clock

    async def __call__(self, batch: Batch) -> Batch:
        sent = [o for o in batch.outcomes if o.status == "sent"]
        self.sent_log.record((key, o.provider_id) for o in sent for key in o.notification.keys)
        # Only released notifications have rows; a retried one was held again by the retry stage.
        self.pending.forget(key for o in batch.outcomes if o.notification.held for key in o.notification.keys)
        self.contacts.remove_tokens(
            o.notification.address for o in batch.outcomes if o.address_gone and o.notification.channel == "push"
        )
        now = self.clock()
        for o in batch.outcomes:
            n = o.notification
            status = "grouped" if o.status == "sent" and n.grouped else o.status
            reason = f"one message for {len(n.alerts)} alerts" if status == "grouped" else o.reason
            cause = "permanent" if o.status == "failed" else ""
            for alert in n.alerts:
                batch.deliver(alert, n.channel, n.recipient, status, o.attempts, o.provider_id, reason, cause)
                if o.status == "sent" and alert.produced_ms:
                    batch.latencies.append((n.channel, max(0.0, now - alert.produced_ms / 1000)))
        return batch


class Pipeline:
    def __init__(self, stages: Sequence[Stage]) -> None:
        self.stages = stages

    async def run(self, alerts: Sequence[AlertEvent] = (), notifications: Sequence[Notification] = ()) -> Batch:
        batch = Batch(alerts, list(notifications))
        for stage in self.stages:
            started = time.perf_counter()
            batch = await stage(batch)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%s: %.3f s, %d notifications on", type(stage).__name__, time.perf_counter() - started,
                          len(batch.notifications))
        return batch


@dataclass
class Pipelines:
    """The pipeline for new alert transitions, and the one for notifications that were waiting."""

    alerts: Pipeline
    release: Pipeline
    pending: PendingStore


def build_pipelines(
    contacts: ContactStore,
    sent_log: SentLog,
    pending: PendingStore,
    channels: Mapping[Channel, DeliveryChannel],
    settings: NotifierSettings,
    clock: Clock = time.time,
    snoozes: Snoozes | None = None,
) -> Pipelines:
    """The notifier's stages, in order: the one place they are composed."""
    snooze = Snooze(snoozes if snoozes is not None else Snoozes(), clock)
    quiet = QuietHours(pending, contacts.quiet_periods, clock)
    group = Group(settings.group_min_alerts)
    send = Send(channels, {"push": settings.push_per_s, "email": settings.email_per_s})
    retry = Retry(pending, settings, clock)
    record = Record(sent_log, pending, contacts, clock)
    return Pipelines(
        alerts=Pipeline([
            Route(contacts, list(channels)), Dedup(sent_log, pending), snooze, quiet, group,
            RateLimit(settings.user_raised_per_hour), send, retry, record,
        ]),
        release=Pipeline([Dedup(sent_log, None), snooze, quiet, group, send, retry, record]),
        pending=pending,
    )

