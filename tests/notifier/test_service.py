"""The notifier end to end: alerts.events on the real broker → pushes, emails, delivery records."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any
from zoneinfo import ZoneInfo

import psutil
import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord

from notifier.contacts import ContactStore, validate
from notifier.database import notifier_engine
from notifier.notification import recipient_hash
from notifier.pending import PendingStore
from notifier.sent_log import SentKey
from notifier.service import Notifier, NotifierStats, window_offsets
from quartier import events, topics
from quartier.events import AlertEvent, Delivery, alert_id
from quartier.kafka import ensure_topics, producer_config, read_all
from quartier.settings import Settings
from quartier.stack.fcm import count_messages, fetch_attempts, fetch_messages
from quartier.stack.smtp import read_mailbox

METER_A, METER_B, METER_C = "111111111111", "222222222222", "333333333333"


def _alert(meter: str, state: str, start_ms: int = 1_790_000_000_000) -> AlertEvent:
    return AlertEvent(
        id=alert_id(meter, "power_above", start_ms), meter=meter, kind="power_above", state=state,  # type: ignore[arg-type]
        value=3_100.0 if state == "raised" else 900.0, threshold=1_500.0,
        at_ms=start_ms + (0 if state == "raised" else 60_000), episode_start_ms=start_ms,
    )


async def _produce(settings: Settings, alerts: list[AlertEvent]) -> None:
    producer = AIOKafkaProducer(**producer_config(settings))
    await producer.start()
    try:
        for alert in alerts:
            await producer.send_and_wait(
                settings.topic(topics.ALERTS_EVENTS.name), events.encode(alert), key=(alert.meter or "").encode()
            )
    finally:
        await producer.stop()


async def _deliveries(settings: Settings) -> list[Delivery]:
    return await read_all(
        settings, settings.topic(topics.NOTIFICATIONS_DELIVERIES.name), events.decoder(Delivery).decode  # type: ignore[arg-type]
    )


class RunningNotifier:
    def __init__(self, settings: Settings) -> None:
        self.stop = asyncio.Event()
        ready = asyncio.Event()
        self.task = asyncio.create_task(Notifier.from_settings(settings).run(self.stop, ready))
        self.ready = ready

    async def started(self) -> "RunningNotifier":
        ready = asyncio.create_task(self.ready.wait())
        await asyncio.wait([ready, self.task], return_when=asyncio.FIRST_COMPLETED, timeout=60)
        if self.task.done():
            self.task.result()  # raises what stopped it
        return self

    async def until(self, check: Callable[[], Awaitable[bool]], timeout_s: float = 90.0) -> None:
        """Waits for a condition while the notifier runs; the timeout only bounds a failing test."""
        async with asyncio.timeout(timeout_s):
            while not await check():
                if self.task.done():
                    self.task.result()  # raises what stopped it
                    raise AssertionError("the notifier stopped before the condition held")
                await asyncio.sleep(0.3)

    async def stopped(self) -> NotifierStats:
        self.stop.set()
        return await asyncio.wait_for(self.task, 60)


@pytest.mark.timeout(240)
async def test_alerts_become_pushes_and_emails_once_even_when_replayed_or_restarted(
    broker: dict[str, Any], smtp: dict[str, Any], fcm: dict[str, Any], make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(broker, smtp, fcm)
    domain = f"{uuid.uuid4().hex[:8]}.example.test"
    await ensure_topics(settings, [topics.ALERTS_EVENTS, topics.NOTIFICATIONS_DELIVERIES])
    contacts = ContactStore(notifier_engine(settings))
    contacts.register([
        validate({"meter": METER_A, "tokens": ["a-phone", "a-tablet"], "email": f"a@{domain}", "language": "fr"}),
        validate({"meter": METER_B, "tokens": ["b-phone", "unregistered-b-old"], "email": f"b@{domain}", "language": "en"}),
    ])
    first_batch = [_alert(METER_A, "raised"), _alert(METER_B, "raised"), _alert(METER_C, "raised"),
                   _alert(METER_A, "resolved")]
    await _produce(settings, first_batch)

    def pushes() -> Counter[str]:
        return Counter(m["message"]["token"] for m in fetch_messages(settings, settings.fcm.project_id))

    def emails() -> Counter[str]:
        return Counter(m["To"] for m in read_mailbox(settings.smtp.maildir, recipient_domain=domain))

    notifier = await RunningNotifier(settings).started()
    try:
        # A: 2 devices + 1 email, twice; B: 2 devices (one gone) + 1 email; C: no one, per channel.
        await notifier.until(lambda: _count_at_least(settings, 3 + 3 + 3 + 2))
        assert pushes() == {"a-phone": 2, "a-tablet": 2, "b-phone": 1}
        assert emails() == {f"a@{domain}": 2, f"b@{domain}": 1}
        assert contacts.recipients([METER_B])[METER_B].tokens == ("b-phone",)

        deliveries = await _deliveries(settings)
        statuses = Counter((d.channel, d.status) for d in deliveries)
        assert statuses == {("push", "sent"): 5, ("push", "failed"): 1, ("email", "sent"): 3,
                            ("push", "suppressed"): 1, ("email", "suppressed"): 1}
        [gone] = [d for d in deliveries if d.status == "failed"]
        assert gone.alert_id == _alert(METER_B, "raised").id and "unregistered" in (gone.reason or "")
        assert all("@" not in d.recipient and "phone" not in d.recipient for d in deliveries)
        assert all(d.provider_id for d in deliveries if d.status == "sent")

        # The same transitions again (a replay): nothing is sent twice; each is logged as such.
        await _produce(settings, first_batch)
        await notifier.until(lambda: _count_at_least(settings, 11 + 3 + 3 + 2 + 2))
        statuses = Counter((d.channel, d.status) for d in await _deliveries(settings))
        assert statuses[("push", "deduplicated")] == 5 and statuses[("email", "deduplicated")] == 3
        assert statuses[("push", "sent")] == 5 and statuses[("email", "sent")] == 3
    finally:
        first_stats = await notifier.stopped()
    assert first_stats.alerts == 8

    # A restarted notifier resumes after the committed offsets and still never sends twice.
    await _produce(settings, [_alert(METER_B, "resolved"), _alert(METER_A, "raised")])
    notifier = await RunningNotifier(settings).started()
    try:
        await notifier.until(lambda: _count_at_least(settings, 21 + 2 + 3))
    finally:
        second_stats = await notifier.stopped()
    assert second_stats.alerts == 2
    assert pushes() == {"a-phone": 2, "a-tablet": 2, "b-phone": 2}
    assert emails() == {f"a@{domain}": 2, f"b@{domain}": 2}
    assert len(await _deliveries(settings)) == 26


def test_a_window_commits_past_its_last_record_on_the_partitions_it_read_only() -> None:
    def record(partition: int, offset: int) -> ConsumerRecord:
        return ConsumerRecord(
            topic="alerts.events", partition=partition, offset=offset, timestamp=0, timestamp_type=0, key=None,
            value=b"{}", checksum=None, serialized_key_size=0, serialized_value_size=2, headers=[],
        )

    window = [record(3, 40), record(0, 7), record(3, 41), record(3, 42), record(0, 8)]
    assert window_offsets(window) == {TopicPartition("alerts.events", 0): 9, TopicPartition("alerts.events", 3): 43}


async def _count_at_least(settings: Settings, expected: int) -> bool:
    return len(await _deliveries(settings)) >= expected


def _environment(settings: Settings) -> dict[str, str]:
    """The settings as QUARTIER_* variables, for a notifier run as its own process."""
    return {
        "QUARTIER_STATE_DIR": str(settings.state_dir),
        "QUARTIER_DATABASE_URL": settings.sqlite_url("notifier"),
        "QUARTIER_KAFKA": settings.kafka.model_dump_json(),
        "QUARTIER_SMTP": settings.smtp.model_dump_json(),
        "QUARTIER_FCM": settings.fcm.model_dump_json(),
        "QUARTIER_NOTIFIER": settings.notifier.model_dump_json(),
    }


@pytest.mark.timeout(180)
async def test_cli_registers_runs_and_stops_cleanly_on_sigterm(
    broker: dict[str, Any], smtp: dict[str, Any], fcm: dict[str, Any], make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(broker, smtp, fcm)
    env = {**os.environ, **_environment(settings)}
    quartier = [sys.executable, "-m", "quartier.cli"]
    registered = subprocess.run(
        [*quartier, "notifier", "register", "--meter", METER_A, "--token", "cli-phone", "--language", "en"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert registered.returncode == 0, registered.stderr
    await ensure_topics(settings, [topics.ALERTS_EVENTS, topics.NOTIFICATIONS_DELIVERIES])
    await _produce(settings, [_alert(METER_A, "raised")])

    process = await asyncio.create_subprocess_exec(
        *quartier, "notifier", "run", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(90):
            while not fetch_messages(settings, settings.fcm.project_id):
                assert process.returncode is None, "the notifier exited early"
                await asyncio.sleep(0.3)
        process.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(process.communicate(), 60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, output.decode()
    assert "stopped: 1 alert events, deliveries {'sent': 1}" in output.decode()
    [pushed] = fetch_messages(settings, settings.fcm.project_id)
    assert pushed["message"]["notification"]["title"] == "Power above your limit"


FAST_RETRY = {"notifier": {"retry_base_s": 0.2, "retry_max_s": 2.0, "max_attempts": 5}}


@pytest.mark.timeout(180)
async def test_unavailable_and_quota_are_retried_until_delivered_and_a_bad_token_fails_once(
    broker: dict[str, Any], fcm: dict[str, Any], smtp: dict[str, Any], make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(broker, smtp, fcm, FAST_RETRY)
    await ensure_topics(settings, [topics.ALERTS_EVENTS, topics.NOTIFICATIONS_DELIVERIES])
    ContactStore(notifier_engine(settings)).register([validate({
        "meter": METER_A, "tokens": ["flaky503-3-phone", "quota429-2-tablet", "invalid-watch", "ok-phone"],
    })])
    alert = _alert(METER_A, "raised")
    await _produce(settings, [alert])
    notifier = await RunningNotifier(settings).started()
    try:
        async def settled() -> bool:
            final = [d for d in await _deliveries(settings) if d.status in ("sent", "failed")]
            return len(final) == 4
        await notifier.until(settled)
    finally:
        stats = await notifier.stopped()
    deliveries = await _deliveries(settings)
    project = settings.fcm.project_id
    final = {d.recipient: d for d in deliveries if d.status in ("sent", "failed")}
    by_token = {recipient_hash(t): t for t in ("flaky503-3-phone", "quota429-2-tablet", "invalid-watch", "ok-phone")}
    outcome = {by_token[r]: (d.status, d.attempts) for r, d in final.items()}
    assert outcome == {"flaky503-3-phone": ("sent", 4), "quota429-2-tablet": ("sent", 3),
                       "invalid-watch": ("failed", 1), "ok-phone": ("sent", 1)}
    assert "INVALID_ARGUMENT" in (final[recipient_hash("invalid-watch")].reason or "")
    retrying = Counter(by_token[d.recipient] for d in deliveries if d.status == "retrying")
    assert retrying == {"flaky503-3-phone": 3, "quota429-2-tablet": 2}
    # The attempts the endpoint saw are the ones the log counts, and Retry-After was honoured.
    assert [a["status"] for a in fetch_attempts(settings, project, "flaky503-3-phone")] == [503, 503, 503, 200]
    quota = fetch_attempts(settings, project, "quota429-2-tablet")
    assert [a["status"] for a in quota] == [429, 429, 200] and not any(a["early"] for a in quota)
    assert Counter(m["message"]["token"] for m in fetch_messages(settings, project)) == {
        "flaky503-3-phone": 1, "quota429-2-tablet": 1, "ok-phone": 1}
    assert stats.deliveries["retrying"] == 5


def _quiet_hours_around_now(zone: str = "Europe/Paris") -> str:
    now = datetime.datetime.now(ZoneInfo(zone))
    start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(hours=2)
    return f"{start:%H:%M}-{end:%H:%M}"


@pytest.mark.timeout(180)
async def test_quiet_hours_hold_ordinary_alerts_but_not_the_fuse_limit(
    broker: dict[str, Any], fcm: dict[str, Any], smtp: dict[str, Any], make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(broker, smtp, fcm)
    await ensure_topics(settings, [topics.ALERTS_EVENTS, topics.NOTIFICATIONS_DELIVERIES])
    domain = f"{uuid.uuid4().hex[:8]}.example.test"
    engine = notifier_engine(settings)
    ContactStore(engine).register([validate({
        "meter": METER_A, "tokens": ["night-phone"], "email": f"night@{domain}", "language": "en",
        "quiet_hours": _quiet_hours_around_now(),
    })])
    power = _alert(METER_A, "raised")
    fuse = AlertEvent(id=alert_id(METER_A, "fuse_limit", 1_790_000_000_000), meter=METER_A, kind="fuse_limit",
                      state="raised", value=9_800, threshold=9_000, at_ms=1_790_000_000_000,
                      episode_start_ms=1_790_000_000_000, detail={"seconds_to_cut": 120.0})
    await _produce(settings, [power, fuse])
    notifier = await RunningNotifier(settings).started()
    try:
        await notifier.until(lambda: _count_at_least(settings, 4))
    finally:
        await notifier.stopped()
    statuses = {(d.alert_id, d.channel): (d.status, d.reason or "") for d in await _deliveries(settings)}
    assert statuses[(fuse.id, "push")][0] == "sent" and statuses[(fuse.id, "email")][0] == "sent"
    for channel in ("push", "email"):
        status, reason = statuses[(power.id, channel)]
        assert status == "suppressed" and reason.startswith("quiet hours: held until ")
    [pushed] = fetch_messages(settings, settings.fcm.project_id)
    assert pushed["message"]["data"]["kind"] == "fuse_limit"
    assert [m["X-Quartier-Alert-Kind"] for m in read_mailbox(settings.smtp.maildir, recipient=f"night@{domain}")] == ["fuse_limit"]
    held = PendingStore(engine).pending(
        [SentKey(power.id, "raised", "push", recipient_hash("night-phone"))])
    assert [row.hold for row in held.values()] == ["quiet_hours"]


@pytest.mark.timeout(180)
async def test_a_snoozed_kind_is_not_notified_again_on_that_meter_until_the_snooze_ends(
    broker: dict[str, Any], fcm: dict[str, Any], smtp: dict[str, Any], make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(broker, smtp, fcm)
    await ensure_topics(settings, [topics.ALERTS_EVENTS, topics.NOTIFICATIONS_DELIVERIES, topics.HOUSEHOLDS_ALERT_ACTIONS])
    domain = f"{uuid.uuid4().hex[:8]}.example.test"
    ContactStore(notifier_engine(settings)).register([
        validate({"meter": METER_A, "tokens": ["a-phone"], "email": f"a@{domain}"}),
        validate({"meter": METER_B, "tokens": ["b-phone"], "email": f"b@{domain}"}),
    ])
    now_ms = int(datetime.datetime.now().timestamp() * 1000)
    first_a = _alert(METER_A, "raised", start_ms=now_ms - 600_000)

    async def snooze(alert: AlertEvent) -> None:
        producer = AIOKafkaProducer(**producer_config(settings))
        await producer.start()
        try:
            record = events.AlertSnoozed(alert_id=alert.id, meter=alert.meter, household="hh_" + uuid.uuid4().hex[:16],  # type: ignore[arg-type]
                                         kind=alert.kind, by="acct_" + uuid.uuid4().hex[:16], until_ms=now_ms + 3_600_000, at_ms=now_ms)
            await producer.send_and_wait(settings.topic(topics.HOUSEHOLDS_ALERT_ACTIONS.name), events.encode(record),
                                         key=record.meter.encode())
        finally:
            await producer.stop()

    await snooze(first_a)  # before the notifier starts: read from the topic's start
    again_a, first_b = _alert(METER_A, "raised", start_ms=now_ms - 60_000), _alert(METER_B, "raised", start_ms=now_ms - 60_000)
    await _produce(settings, [again_a, first_b])
    notifier = Notifier.from_settings(settings)
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(notifier.run(stop, ready))
    try:
        await asyncio.wait_for(ready.wait(), 60)
        async with asyncio.timeout(60):
            while len(await _deliveries(settings)) < 4:
                await asyncio.sleep(0.3)
        await snooze(first_b)  # while it runs: followed
        async with asyncio.timeout(30):
            while (METER_B, "power_above") not in notifier.snoozes.by_kind:  # type: ignore[union-attr]
                await asyncio.sleep(0.1)
        again_b = _alert(METER_B, "raised", start_ms=now_ms - 30_000)
        await _produce(settings, [again_b, _alert(METER_A, "resolved", start_ms=now_ms - 60_000)])
        async with asyncio.timeout(60):
            while len(await _deliveries(settings)) < 8:
                await asyncio.sleep(0.3)
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
    outcomes = Counter((d.alert_id, d.alert_state, d.status) for d in await _deliveries(settings))
    assert outcomes == {
        (again_a.id, "raised", "suppressed"): 2, (first_b.id, "raised", "sent"): 2,
        (again_b.id, "raised", "suppressed"): 2, (again_a.id, "resolved", "sent"): 2,
    }
    assert {d.reason for d in await _deliveries(settings) if d.status == "suppressed"} == {
        "snoozed by a household member until "
        + datetime.datetime.fromtimestamp((now_ms + 3_600_000) / 1000, ZoneInfo("Europe/Paris")).isoformat(timespec="minutes")
    }
    assert Counter(m["message"]["token"] for m in fetch_messages(settings, settings.fcm.project_id)) == {"b-phone": 1, "a-phone": 1}


@pytest.mark.timeout(180)
async def test_a_zone_outage_is_one_message_per_address_of_the_building_manager(
    broker: dict[str, Any], fcm: dict[str, Any], smtp: dict[str, Any], make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(broker, smtp, fcm, notifier={"group_window_s": 1.0})
    await ensure_topics(settings, [topics.ALERTS_EVENTS, topics.NOTIFICATIONS_DELIVERIES])
    domain = f"{uuid.uuid4().hex[:8]}.example.test"
    flats = [f"4000000000{i:02d}" for i in range(30)]
    ContactStore(notifier_engine(settings)).register(
        [validate({"meter": m, "user": "manager", "tokens": ["manager-phone"], "email": f"manager@{domain}",
                   "language": "fr"}) for m in flats]
        + [validate({"meter": METER_C, "tokens": ["house-phone"], "email": f"house@{domain}"})]
    )
    outage = [
        AlertEvent(id=alert_id(m, "disconnected", 1_790_000_000_000), meter=m, kind="disconnected", state="raised",
                   value=31, threshold=30, at_ms=1_790_000_030_000, episode_start_ms=1_790_000_000_000)
        for m in [*flats, METER_C]
    ]
    await _produce(settings, outage)
    notifier = await RunningNotifier(settings).started()
    try:
        await notifier.until(lambda: _count_at_least(settings, 2 * len(outage)))
    finally:
        await notifier.stopped()
    pushes = Counter(m["message"]["token"] for m in fetch_messages(settings, settings.fcm.project_id))
    assert pushes == {"manager-phone": 1, "house-phone": 1}
    [summary] = read_mailbox(settings.smtp.maildir, recipient=f"manager@{domain}")
    assert summary["Subject"] == "30 alertes sur vos compteurs"
    assert all(flat in summary.get_body(("plain",)).get_content() for flat in flats)
    [single] = read_mailbox(settings.smtp.maildir, recipient=f"house@{domain}")
    assert single["Subject"] == "Votre compteur ne transmet plus"
    statuses = Counter((d.channel, d.status) for d in await _deliveries(settings))
    assert statuses == {("push", "grouped"): 30, ("email", "grouped"): 30, ("push", "sent"): 1, ("email", "sent"): 1}


@pytest.mark.timeout(240)
async def test_killed_mid_batch_and_restarted_every_notification_arrives_once(
    broker: dict[str, Any], smtp: dict[str, Any], fcm: dict[str, Any], make_settings: Callable[..., Settings]
) -> None:
    """kill -9 of the notifier (its push worker processes die with it) while a window is being
    sent; the restart replays the uncommitted window. The sent journal makes the replay skip what
    the providers had accepted. The one window left is the few microseconds between a provider's
    reply and its journal line, for the requests in flight at the kill (at most the push workers'
    threads plus the SMTP connections, here 2 x 2 + 2): docs/notifier.md. A push sent twice carries
    the same tag and APNs collapse id, so the phone shows it once."""
    in_flight = {"push_processes": 2, "push_threads": 2, "email_connections": 2}
    settings = make_settings(broker, smtp, fcm, notifier=in_flight)
    env = {**os.environ, **_environment(settings), "QUARTIER_NOTIFIER": json.dumps(in_flight)}
    domain = f"{uuid.uuid4().hex[:8]}.example.test"
    await ensure_topics(settings, [topics.ALERTS_EVENTS, topics.NOTIFICATIONS_DELIVERIES])
    meters = [f"5000000{i:05d}" for i in range(400)]
    ContactStore(notifier_engine(settings)).register([
        validate({"meter": m, "tokens": [f"k-{m}"], "email": f"h{m}@{domain}"}) for m in meters
    ])
    alerts = [_alert(m, "raised") for m in meters]
    await _produce(settings, alerts)
    expected = len(alerts)

    def on_the_phone() -> dict[str, set[tuple[str, str]]]:
        shown: dict[str, set[tuple[str, str]]] = {}
        for m in fetch_messages(settings, settings.fcm.project_id):
            message = m["message"]
            identifiers = (message["android"]["notification"]["tag"], message["apns"]["headers"]["apns-collapse-id"])
            shown.setdefault(message["token"], set()).add(identifiers)
        return shown

    def counts() -> tuple[Counter[str], Counter[str]]:
        pushes = Counter(m["message"]["token"] for m in fetch_messages(settings, settings.fcm.project_id))
        emails = Counter(m["X-RcptTo"] for m in read_mailbox(settings.smtp.maildir, recipient_domain=domain))
        return pushes, emails

    quartier = [sys.executable, "-m", "quartier.cli", "notifier", "run"]
    first = await asyncio.create_subprocess_exec(*quartier, env=env, stdout=asyncio.subprocess.DEVNULL,
                                                 stderr=asyncio.subprocess.DEVNULL, start_new_session=True)
    try:
        async with asyncio.timeout(120):
            while count_messages(settings, settings.fcm.project_id) < expected // 4:
                assert first.returncode is None, "the notifier exited early"
                await asyncio.sleep(0.05)
        workers = psutil.Process(first.pid).children()
        assert len(workers) >= in_flight["push_processes"], workers
        os.kill(first.pid, signal.SIGKILL)  # the notifier alone, as `kill -9 <pid>` does
        await first.wait()
        # No orphan keeps sending a slice the restart will replay: the kernel killed the workers.
        gone, alive = psutil.wait_procs(workers, timeout=10)
        assert not alive, alive
    finally:
        if first.returncode is None:
            os.killpg(first.pid, signal.SIGKILL)
            await first.wait()
    pushes, emails = counts()
    assert 0 < sum(pushes.values()) < expected or 0 < sum(emails.values()) < expected, "not killed mid-batch"
    sent_before_kill = sum(pushes.values()) + sum(emails.values())

    second = await asyncio.create_subprocess_exec(*quartier, env=env, stdout=asyncio.subprocess.DEVNULL,
                                                  stderr=asyncio.subprocess.DEVNULL, start_new_session=True)
    try:
        async with asyncio.timeout(150):
            while True:
                pushes, emails = counts()
                if len(pushes) == expected and len(emails) == expected:
                    break
                assert second.returncode is None, "the restarted notifier exited"
                await asyncio.sleep(0.5)
    finally:
        second_workers = psutil.Process(second.pid).children() if second.returncode is None else []
        os.killpg(second.pid, signal.SIGTERM)  # the whole group, as a service manager stops it
        await asyncio.wait_for(second.wait(), 60)
    # The notifier finished its window and stopped its workers itself (they ignore the SIGTERM).
    assert second.returncode == 0
    assert not psutil.wait_procs(second_workers, timeout=10)[1]
    pushes, emails = counts()
    duplicates = sum(n - 1 for n in pushes.values()) + sum(n - 1 for n in emails.values())
    assert set(pushes) == {f"k-{m}" for m in meters} and set(emails) == {f"h{m}@{domain}" for m in meters}
    # Hundreds were sent in the replayed window before the kill; at most the requests in flight
    # could be sent twice (none in almost every run).
    assert sent_before_kill > 6
    bound = in_flight["push_processes"] * in_flight["push_threads"] + in_flight["email_connections"]
    assert duplicates <= bound, (duplicates, pushes, emails)
    # Each phone has one notification for its alert, whatever was sent twice; and each mailbox one
    # Message-ID (a mail sent twice is the same message, which mail clients show once).
    assert all(len(identifiers) == 1 for identifiers in on_the_phone().values())
    in_the_mailbox: dict[str, set[str]] = {}
    for mail in read_mailbox(settings.smtp.maildir, recipient_domain=domain):
        in_the_mailbox.setdefault(mail["X-RcptTo"], set()).add(mail["Message-ID"])
    assert set(in_the_mailbox) == set(emails) and all(len(ids) == 1 for ids in in_the_mailbox.values())
    # The restart replayed the uncommitted window and skipped, by the journal, what had been sent.
    deduplicated = [d for d in await _deliveries(settings) if d.status == "deduplicated"]
    assert len(deduplicated) >= sent_before_kill - duplicates
    print(f"killed after {sent_before_kill} sends; {len(deduplicated)} skipped on replay; {duplicates} sent twice")


def test_a_process_per_channel_reads_every_alert_in_its_own_group(
    smtp: dict[str, Any], make_settings: Callable[..., Settings]
) -> None:
    from notifier.service import group_id

    settings = make_settings(smtp)
    email_only = Notifier.from_settings(settings, ("email",))
    try:
        assert email_only.channel_names == ("email",)
        assert group_id(settings, ("email",)) != group_id(settings, ("push",)) != group_id(settings)
        assert group_id(settings) == f"{settings.kafka.topic_prefix}quartier-notifier"
    finally:
        assert email_only.sent_log.journal is not None
        email_only.sent_log.journal.close()
    with pytest.raises(ValueError, match="channels must be among"):
        Notifier.from_settings(settings, ("pigeon",))
