"""The push and email channels against the local FCM endpoint and the real SMTP server."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any, Callable

from notifier.channels.email import EmailChannel
from notifier.channels.fcm import FcmChannel
from notifier.channels.fcm_processes import FcmProcesses
from notifier.firebase import firebase_app
from notifier.notification import Notification
from notifier.render import Renderer
from notifier.sent_log import SentJournal
from quartier.events import AlertEvent, alert_id
from quartier.settings import Settings
from quartier.stack.fcm import fetch_attempts, fetch_messages
from quartier.stack.smtp import read_mailbox

METER = "012345678901"


def _alert(state: str = "raised", kind: str = "power_above", **detail: float) -> AlertEvent:
    start = 1_790_000_000_000
    return AlertEvent(
        id=alert_id(METER, kind, start), meter=METER, kind=kind, state=state,  # type: ignore[arg-type]
        value=2_345.0, threshold=1_500.0, at_ms=start, episode_start_ms=start, detail=detail,
    )


def _push(token: str, alert: AlertEvent | None = None, language: str = "fr") -> Notification:
    return Notification((alert or _alert(),), "push", token, language)  # type: ignore[arg-type]


async def test_push_outcomes_follow_what_fcm_answered_one_request_per_attempt(
    fcm: dict[str, Any], make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(fcm)
    journal = SentJournal(tmp_path / "journal")
    channel = FcmChannel(firebase_app(settings.fcm), Renderer(), journal, threads=4)
    tokens = ["phone-ok", "tablet-ok", "unregistered-old-phone", "invalid-garbage", "flaky503-1-phone", "quota429-1-phone"]
    try:
        outcomes = await channel.send([_push(t) for t in tokens])
    finally:
        await channel.close()
    by_token = {o.notification.address: o for o in outcomes}
    assert [o.notification.address for o in outcomes] == tokens
    for ok in ("phone-ok", "tablet-ok"):
        assert by_token[ok].status == "sent" and by_token[ok].provider_id and by_token[ok].attempts == 1
    gone = by_token["unregistered-old-phone"]
    assert gone.status == "failed" and gone.address_gone and not gone.transient
    invalid = by_token["invalid-garbage"]
    assert invalid.status == "failed" and not invalid.address_gone and not invalid.transient
    assert "INVALID_ARGUMENT" in (invalid.reason or "")
    # firebase-admin's own retries are off: a 503 or a 429 is one request, returned as transient.
    unavailable, quota = by_token["flaky503-1-phone"], by_token["quota429-1-phone"]
    assert unavailable.transient and "UnavailableError" in (unavailable.reason or "")
    assert quota.transient and quota.retry_after_s == 1.0 and "QuotaExceededError" in (quota.reason or "")
    project = settings.fcm.project_id
    assert [a["status"] for a in fetch_attempts(settings, project, "flaky503-1-phone")] == [503]
    assert [a["status"] for a in fetch_attempts(settings, project, "quota429-1-phone")] == [429]

    stored = {m["message"]["token"]: m for m in fetch_messages(settings, project)}
    assert set(stored) == {"phone-ok", "tablet-ok"}
    # Each acceptance went to the journal as it happened, with FCM's message id.
    assert sorted((key.recipient, provider) for key, provider, _ in journal.read()) == sorted(
        (by_token[t].notification.recipient, stored[t]["name"]) for t in ("phone-ok", "tablet-ok"))
    pushed = stored["phone-ok"]["message"]
    assert pushed["notification"]["title"] == "Puissance au-dessus de votre limite"
    assert "2\u202f345 W" in pushed["notification"]["body"]
    assert pushed["data"]["alert_id"] == _alert().id and pushed["data"]["state"] == "raised"
    assert pushed["android"]["collapse_key"] == "power_above" and pushed["android"]["priority"] == "normal"
    assert pushed["android"]["notification"]["tag"] == _alert().id
    assert pushed["apns"]["headers"]["apns-collapse-id"] == _alert().id
    assert pushed["apns"]["headers"]["apns-priority"] == "5"


async def test_a_push_sent_again_replaces_the_first_on_the_phone(
    fcm: dict[str, Any], make_settings: Callable[..., Settings]
) -> None:
    """FCM has no idempotency key: a push accepted just before a kill, before its journal line, is
    sent again after the restart (docs/notifier.md). The second copy must carry the same Android
    tag and APNs collapse id, so the phone replaces the first instead of showing it twice; the
    resolution replaces its raise; another episode never replaces this one."""
    settings = make_settings(fcm)
    channel = FcmChannel(firebase_app(settings.fcm), Renderer(), threads=1)
    other_episode = AlertEvent(
        id=alert_id(METER, "power_above", 1_790_000_900_000), meter=METER, kind="power_above", state="raised",
        value=2_000.0, threshold=1_500.0, at_ms=1_790_000_900_000, episode_start_ms=1_790_000_900_000,
    )
    try:
        await channel.send([_push("phone", _alert("raised"))])
        await channel.send([_push("phone", _alert("raised"))])  # the replay after a kill
        await channel.send([_push("phone", _alert("resolved")), _push("phone", other_episode)])
    finally:
        await channel.close()
    first, again, resolved, other = [m["message"] for m in fetch_messages(settings, settings.fcm.project_id)]

    def on_the_phone(message: dict[str, Any]) -> tuple[str, str]:
        return message["android"]["notification"]["tag"], message["apns"]["headers"]["apns-collapse-id"]

    assert first == again
    assert on_the_phone(again) == on_the_phone(first) == (_alert().id, _alert().id)
    assert on_the_phone(resolved) == on_the_phone(first) and resolved["data"]["state"] == "resolved"
    assert on_the_phone(other) == (other_episode.id, other_episode.id) != on_the_phone(first)


async def test_push_worker_processes_send_in_order_and_journal_each_acceptance(
    fcm: dict[str, Any], make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(fcm)
    journal = SentJournal(tmp_path / "journal")  # the notifier's, locked; the workers append to it
    channel = FcmProcesses(settings.fcm, journal.path, processes=2, threads=2)
    tokens = [f"phone-{i}" for i in range(9)] + ["unregistered-old", "flaky503-1-tablet"]
    try:
        outcomes = await channel.send([_push(t) for t in tokens])
    finally:
        await channel.close()
        journal.close()
    assert [o.notification.address for o in outcomes] == tokens
    assert [o.status for o in outcomes] == ["sent"] * 9 + ["failed", "failed"]
    assert outcomes[9].address_gone and outcomes[10].transient
    stored = {m["message"]["token"]: m["name"] for m in fetch_messages(settings, settings.fcm.project_id)}
    assert set(stored) == set(tokens[:9])
    assert sorted((key.recipient, provider) for key, provider, _ in journal.read()) == sorted(
        (o.notification.recipient, stored[o.notification.address]) for o in outcomes[:9])


async def test_a_push_worker_process_that_dies_is_replaced_and_nothing_is_lost(
    fcm: dict[str, Any], make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    import os
    import signal

    import psutil

    settings = make_settings(fcm)
    journal = SentJournal(tmp_path / "journal")
    channel = FcmProcesses(settings.fcm, journal.path, processes=2, threads=2)
    try:
        first = await channel.send([_push(f"before-{i}") for i in range(4)])
        worker = next(p for p in psutil.Process().children() if "multiprocessing.spawn" in " ".join(p.cmdline()))
        os.kill(worker.pid, signal.SIGKILL)  # as the kernel's out-of-memory killer would
        worker.wait(5)
        await asyncio.sleep(0.5)  # the pool notices the death
        during = await channel.send([_push(f"during-{i}") for i in range(4)])
        after = await channel.send([_push(f"after-{i}") for i in range(4)])
    finally:
        await channel.close()
        journal.close()
    assert [o.status for o in first + after] == ["sent"] * 8
    # What the dying pool could not send is a transient failure, for the retry stage; nothing is
    # reported sent that FCM did not accept.
    stored = {m["message"]["token"] for m in fetch_messages(settings, settings.fcm.project_id)}
    for outcome in during:
        assert (outcome.status == "sent") == (outcome.notification.address in stored)
        assert outcome.status == "sent" or outcome.transient


async def test_urgent_push_is_high_priority_short_lived_and_says_what_to_do(
    fcm: dict[str, Any], make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(fcm)
    channel = FcmChannel(firebase_app(settings.fcm), Renderer(), threads=1)
    fuse = _alert(kind="fuse_limit", seconds_to_cut=90)
    try:
        [outcome] = await channel.send([_push("phone", fuse, "en")])
    finally:
        await channel.close()
    assert outcome.status == "sent"
    [stored] = fetch_messages(settings, settings.fcm.project_id)
    message = stored["message"]
    assert message["android"]["priority"] == "high" and message["android"]["ttl"] == "600s"
    assert message["apns"]["headers"]["apns-priority"] == "10"
    assert message["apns"]["payload"]["aps"]["sound"] == "default"
    assert "cuts the power in about 90 s" in message["notification"]["body"]


async def test_a_grouped_push_lists_its_alerts(fcm: dict[str, Any], make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(fcm)
    channel = FcmChannel(firebase_app(settings.fcm), Renderer(), threads=1)
    storm = tuple(
        AlertEvent(id=f"a{i:02d}", meter=f"3000000000{i:02d}", kind="disconnected", state="raised", value=60, threshold=30,
                   at_ms=1_790_000_000_000, episode_start_ms=1_790_000_000_000) for i in range(12)
    )
    try:
        [outcome] = await channel.send([Notification(storm, "push", "manager-phone", "en")])
    finally:
        await channel.close()
    assert outcome.status == "sent"
    [stored] = fetch_messages(settings, settings.fcm.project_id)
    assert stored["message"]["notification"]["title"] == "12 alerts on your meters"
    assert stored["message"]["data"] == {"kind": "group", "count": "12", "alert_ids": ",".join(a.id for a in storm)}


async def test_email_is_multipart_in_the_household_language_over_reused_connections(
    smtp: dict[str, Any], make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(smtp)
    domain = f"{uuid.uuid4().hex[:8]}.example.test"
    journal = SentJournal(tmp_path / "journal")
    channel = EmailChannel(settings.smtp, Renderer(), journal, connections=2)
    try:
        outcomes = await channel.send([
            Notification((_alert("raised"),), "email", f"fr@{domain}", "fr"),
            Notification((_alert("raised"),), "email", f"en@{domain}", "en"),
            Notification((_alert("resolved"),), "email", f"en@{domain}", "en"),
        ])
        connections = list(channel._clients)
        more = await channel.send([Notification((_alert("resolved"),), "email", f"fr@{domain}", "fr")])
        assert channel._clients[0] is connections[0]  # reused, not reopened per mail
        # The server drops a connection (a restart, an idle timeout): the channel reconnects.
        channel._clients[0].transport.close()  # type: ignore[union-attr]
        again = await channel.send([Notification((_alert("raised", "fuse_limit", seconds_to_cut=50),), "email", f"en@{domain}", "en")])
        assert channel._clients[0] is not connections[0]
    finally:
        await channel.close()
    assert [o.status for o in outcomes + more + again] == ["sent"] * 5
    assert len(journal.read()) == 5

    french = read_mailbox(settings.smtp.maildir, recipient=f"fr@{domain}")
    english = read_mailbox(settings.smtp.maildir, recipient=f"en@{domain}")
    assert [m["Subject"] for m in french] == [
        "Puissance au-dessus de votre limite", "Puissance au-dessus de votre limite : situation rétablie"]
    assert sorted(m["Subject"] for m in english) == [
        "Power above your limit", "Power above your limit: back to normal", "Power close to your cut-off limit"]
    message = next(m for m in english if m["Subject"] == "Power above your limit")
    assert message.get_content_type() == "multipart/alternative"
    assert message["X-Quartier-Alert-Id"] == _alert().id and message["Content-Language"] == "en"
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert "2,345 W measured" in text and "against a threshold of 1,500 W" in text
    assert "Switch off a large appliance" in text
    assert "<h1" in html and "2,345 W measured" in html
    assert outcomes[1].provider_id == message["Message-ID"].strip()


async def test_email_refused_by_the_server_is_a_permanent_failure_with_its_reason(
    smtp: dict[str, Any], make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(smtp)
    wrong = settings.smtp.model_copy(update={"password": "not-the-password"})
    channel = EmailChannel(wrong, Renderer())
    try:
        [outcome] = await channel.send([Notification((_alert(),), "email", "x@example.test", "fr")])
    finally:
        await channel.close()
    assert outcome.status == "failed" and "535" in (outcome.reason or "") and not outcome.transient


async def test_email_with_the_server_down_is_a_transient_failure(make_settings: Callable[..., Settings]) -> None:
    from quartier.stack.component import pick_port

    settings = make_settings(smtp={"host": "127.0.0.1", "port": pick_port(0), "starttls": False})
    channel = EmailChannel(settings.smtp, Renderer(), timeout_s=5)
    try:
        [outcome] = await channel.send([Notification((_alert(),), "email", "x@example.test", "fr")])
    finally:
        await channel.close()
    assert outcome.status == "failed" and outcome.transient and "SMTP connection" in (outcome.reason or "")
