"""Each pipeline stage alone, on a real SQLite store, with a fixed clock where time matters."""

from __future__ import annotations

import datetime
import random
from collections import Counter
from typing import Callable
from zoneinfo import ZoneInfo

import pytest

from notifier.contacts import ContactStore, QuietPeriod, validate
from notifier.database import notifier_engine
from notifier.notification import Notification, Outcome
from notifier.pending import HOLD_QUIET_HOURS, PendingStore
from notifier.pipeline import Batch, Dedup, Group, QuietHours, RateLimit, Retry, Route, Snooze
from notifier.sent_log import SentLog
from notifier.snoozes import Snoozes
from quartier.events import AlertEvent, AlertSnoozed, alert_id
from quartier.settings import NotifierSettings, Settings

PARIS = ZoneInfo("Europe/Paris")
METER_A, METER_B = "100000000001", "100000000002"


def _alert(meter: str = METER_A, kind: str = "power_above", state: str = "raised", start_ms: int = 1_790_000_000_000) -> AlertEvent:
    return AlertEvent(
        id=alert_id(meter, kind, start_ms), meter=meter, kind=kind, state=state,  # type: ignore[arg-type]
        value=3_000.0, threshold=1_500.0, at_ms=start_ms, episode_start_ms=start_ms,
    )


def _push(alert: AlertEvent, user: str = "u1", token: str = "phone") -> Notification:
    return Notification((alert,), "push", token, "fr", user, PARIS)


def _paris(hour: int, minute: int = 0, day: int = 20) -> float:
    return datetime.datetime(2026, 11, day, hour, minute, tzinfo=PARIS).timestamp()


@pytest.fixture
def stores(make_settings: Callable[..., Settings]) -> tuple[ContactStore, SentLog, PendingStore]:
    engine = notifier_engine(make_settings())
    return ContactStore(engine), SentLog(engine), PendingStore(engine)


# --- quiet periods ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "local", "end"),
    [
        ("22:00-07:00", datetime.datetime(2026, 11, 20, 23, 30), datetime.datetime(2026, 11, 21, 7, 0)),
        ("22:00-07:00", datetime.datetime(2026, 11, 21, 6, 59), datetime.datetime(2026, 11, 21, 7, 0)),
        ("22:00-07:00", datetime.datetime(2026, 11, 21, 7, 0), None),
        ("22:00-07:00", datetime.datetime(2026, 11, 21, 12, 0), None),
        ("13:00-14:30", datetime.datetime(2026, 11, 21, 13, 15), datetime.datetime(2026, 11, 21, 14, 30)),
        # The night the clocks go back (25 March 2029 forward, 28 October 2029 back in Paris).
        ("01:00-03:30", datetime.datetime(2029, 3, 25, 1, 30), datetime.datetime(2029, 3, 25, 3, 30)),
    ],
)
def test_quiet_period_knows_when_it_ends(text: str, local: datetime.datetime, end: datetime.datetime | None) -> None:
    period = QuietPeriod.parse(text)
    found = period.end_after(local.replace(tzinfo=PARIS))
    assert (found.replace(tzinfo=None) if found else None) == end


def test_quiet_period_rejects_nonsense() -> None:
    for text in ("22h-7h", "22:00", "07:00-07:00"):
        with pytest.raises(ValueError, match="quiet hours"):
            QuietPeriod.parse(text)


# --- route --------------------------------------------------------------------------------------


async def test_route_follows_channels_muted_kinds_owners_and_operators(stores) -> None:
    contacts, _, _ = stores
    contacts.register([
        validate({"meter": METER_A, "user": "home", "tokens": ["p1", "p2"], "email": "home@example.test", "channels": ["push"]}),
        validate({"meter": METER_B, "user": "home", "muted_kinds": ["fuse_limit"]}),
        validate({"user": "ops", "operator": True, "email": "ops@example.test"}),
    ])
    down = AlertEvent(id="x", meter=None, kind="ingest_down", state="raised", value=30, threshold=15, at_ms=1, episode_start_ms=1)
    batch = await Route(contacts, ["push", "email"])(Batch([_alert(METER_A), _alert(METER_B, "fuse_limit"), down, _alert("999999999999")]))
    routed = Counter((n.alert.meter, n.channel, n.address) for n in batch.notifications)
    # home wants push only; B's fuse alert is muted (the user is shared); the operator gets ingest_down by email.
    assert routed == {(METER_A, "push", "p1"): 1, (METER_A, "push", "p2"): 1, (None, "email", "ops@example.test"): 1}
    suppressed = {(d.alert_id, d.channel): d.reason for d in batch.deliveries if d.status == "suppressed"}
    assert "muted" in suppressed[(_alert(METER_B, "fuse_limit").id, "push")]
    assert "no device or email registered" in suppressed[(_alert("999999999999").id, "email")]


# --- dedup --------------------------------------------------------------------------------------


async def test_dedup_drops_sent_waiting_and_repeated(stores) -> None:
    _, sent_log, pending = stores
    sent, waiting, fresh = _push(_alert(start_ms=1)), _push(_alert(start_ms=2)), _push(_alert(start_ms=3))
    sent_log.record([(sent.key, "projects/p/messages/1")])
    pending.hold([(waiting, 0, HOLD_QUIET_HOURS, None)])
    batch = await Dedup(sent_log, pending)(Batch(notifications=[sent, waiting, fresh, fresh]))
    assert batch.notifications == [fresh]
    assert sorted(d.reason or "" for d in batch.deliveries) == [
        "already sent", "already waiting (quiet hours or retry)", "repeated in the same batch"]


# --- quiet hours --------------------------------------------------------------------------------


async def test_quiet_hours_hold_until_morning_but_urgent_passes(stores) -> None:
    contacts, _, pending = stores
    contacts.register([validate({"meter": METER_A, "user": "u1", "quiet_hours": "22:00-07:00"}),
                       validate({"meter": METER_B, "user": "u2"})])
    night = _paris(23, 30)
    stage = QuietHours(pending, contacts.quiet_periods, clock=lambda: night)
    power, fuse, other_user = _push(_alert()), _push(_alert(kind="fuse_limit")), _push(_alert(METER_B), user="u2")
    batch = await stage(Batch(notifications=[power, fuse, other_user]))
    assert batch.notifications == [fuse, other_user]
    [held] = [d for d in batch.deliveries]
    assert held.status == "suppressed" and held.reason == "quiet hours: held until 2026-11-21T07:00+01:00"
    assert pending.due(int(_paris(6, 59, 21) * 1000)) == []
    [released] = pending.due(int(_paris(7, 0, 21) * 1000))
    assert released.key == power.key and released.zone == PARIS


async def test_an_episode_raised_and_resolved_in_the_night_sends_nothing(stores) -> None:
    contacts, _, pending = stores
    contacts.register([validate({"meter": METER_A, "user": "u1", "quiet_hours": "22:00-07:00"})])
    stage = QuietHours(pending, contacts.quiet_periods, clock=lambda: _paris(1, 0))
    await stage(Batch(notifications=[_push(_alert(state="raised"))]))
    batch = await stage(Batch(notifications=[_push(_alert(state="resolved"))]))
    assert batch.notifications == []
    assert [(d.alert_state, d.status) for d in batch.deliveries] == [("raised", "suppressed"), ("resolved", "suppressed")]
    assert all("neither sent" in (d.reason or "") for d in batch.deliveries)
    assert pending.due(int(_paris(8, 0) * 1000 + 86_400_000)) == []


# --- group --------------------------------------------------------------------------------------


async def test_a_storm_becomes_one_message_per_address_and_a_few_alerts_stay_apart() -> None:
    storm = [_push(_alert(f"2000000000{i:02d}", "disconnected"), user="landlord") for i in range(40)]
    pair = [_push(_alert(METER_A), user="u1"), _push(_alert(METER_A, "energy_day_above"), user="u1")]
    episode = [_push(_alert(METER_B, state="raised"), user="u2"), _push(_alert(METER_B, state="resolved"), user="u2")]
    batch = await Group(min_alerts=3)(Batch(notifications=[*storm, *pair, *episode]))
    grouped = [n for n in batch.notifications if n.grouped]
    assert len(grouped) == 1 and len(grouped[0].alerts) == 40 and grouped[0].user == "landlord"
    assert [n for n in batch.notifications if not n.grouped] == [*pair, *episode]


# --- rate limit ---------------------------------------------------------------------------------


async def test_rate_limit_stops_a_flood_per_user_but_lets_resolutions_and_urgent_through() -> None:
    stage = RateLimit(per_hour=3)
    raised = [_push(_alert(start_ms=i), token=t) for i in range(5) for t in ("phone", "tablet")]
    batch = await stage(Batch(notifications=raised))
    # Three alerts pass on both devices (a user is limited, not a phone); two are stopped on both.
    assert len(batch.notifications) == 6
    assert Counter(d.status for d in batch.deliveries) == {"suppressed": 4}
    later = [_push(_alert(start_ms=9, state="resolved")), _push(_alert(start_ms=10, kind="fuse_limit")),
             _push(_alert(start_ms=11), user="someone-else")]
    assert (await stage(Batch(notifications=later))).notifications == later


# --- retry --------------------------------------------------------------------------------------


def test_backoff_grows_with_jitter_and_honours_retry_after(stores) -> None:
    _, _, pending = stores
    retry = Retry(pending, NotifierSettings(retry_base_s=2, retry_max_s=60), rng=random.Random(7))
    for attempt, ceiling in ((1, 2), (2, 4), (3, 8), (6, 60), (9, 60)):
        waits = [retry.delay_s(attempt, None) for _ in range(200)]
        assert ceiling / 2 <= min(waits) and max(waits) <= ceiling
        assert len({round(w, 3) for w in waits}) > 100  # jittered, not one fixed value
    assert retry.delay_s(1, retry_after_s=30) == 30


async def test_transient_failures_are_scheduled_then_given_up_permanent_ones_fail_at_once(stores) -> None:
    _, _, pending = stores
    now = 1_000.0
    retry = Retry(pending, NotifierSettings(retry_base_s=1, max_attempts=3), clock=lambda: now, rng=random.Random(1))
    flaky, last_try, broken = _push(_alert(start_ms=1)), _push(_alert(start_ms=2)).with_attempts(2), _push(_alert(start_ms=3))
    batch = await retry(Batch(outcomes=[
        Outcome(flaky, "failed", reason="UnavailableError", transient=True, retry_after_s=5),
        Outcome(last_try, "failed", reason="UnavailableError", transient=True),
        Outcome(broken, "failed", reason="InvalidArgumentError"),
    ]))
    assert [(d.status, d.attempts) for d in batch.deliveries] == [("retrying", 1)]
    assert [(o.notification.key, o.reason) for o in batch.outcomes] == [
        (last_try.key, "gave up after 3 attempts: UnavailableError"), (broken.key, "InvalidArgumentError")]
    [scheduled] = pending.due(int((now + 5) * 1000))  # not before the Retry-After
    assert scheduled.key == flaky.key and scheduled.attempts == 1
    assert pending.due(int((now + 4.9) * 1000)) == []
