"""The push and email channels against the local FCM endpoint and the real SMTP server."""

from __future__ import annotations

import uuid
from typing import Any, Callable

from notifier.channels.email import EmailChannel
from notifier.channels.fcm import FcmChannel
from notifier.firebase import firebase_app
from notifier.notification import Notification
from notifier.render import Renderer
from quartier.events import AlertEvent, alert_id
from quartier.settings import Settings
from quartier.stack.fcm import fetch_attempts, fetch_messages
from quartier.stack.smtp import read_mailbox

METER = "012345678901"


def _alert(state: str = "raised", kind: str = "power_above") -> AlertEvent:
    start = 1_790_000_000_000
    return AlertEvent(
        id=alert_id(METER, kind, start), meter=METER, kind=kind, state=state,  # type: ignore[arg-type]
        value=2_345.0, threshold=1_500.0, at_ms=start, episode_start_ms=start,
    )


async def test_push_outcomes_follow_what_fcm_answered(fcm: dict[str, Any], make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(fcm)
    channel = FcmChannel(firebase_app(settings.fcm), Renderer())
    tokens = ["phone-ok", "unregistered-old-phone", "invalid-garbage", "flaky503-1-phone"]
    outcomes = await channel.send([Notification(_alert(), "push", t, "fr") for t in tokens])
    by_token = {o.notification.address: o for o in outcomes}
    assert [o.notification.address for o in outcomes] == tokens
    assert by_token["phone-ok"].status == "sent" and by_token["phone-ok"].provider_id
    assert by_token["flaky503-1-phone"].status == "sent"
    assert by_token["unregistered-old-phone"].status == "failed" and by_token["unregistered-old-phone"].address_gone
    assert by_token["invalid-garbage"].status == "failed" and not by_token["invalid-garbage"].address_gone
    assert "INVALID_ARGUMENT" in (by_token["invalid-garbage"].reason or "")

    stored = {m["message"]["token"]: m for m in fetch_messages(settings, settings.fcm.project_id)}
    assert set(stored) == {"phone-ok", "flaky503-1-phone"}
    pushed = stored["phone-ok"]["message"]
    assert pushed["notification"]["title"] == "Puissance au-dessus de votre limite"
    assert "2\u202f345 W" in pushed["notification"]["body"]
    assert pushed["data"]["alert_id"] == _alert().id and pushed["data"]["state"] == "raised"
    assert pushed["android"]["collapse_key"] == _alert().id


async def test_quota_exceeded_beyond_the_sdk_retries_waits_for_retry_after(
    fcm: dict[str, Any], make_settings: Callable[..., Settings]
) -> None:
    """firebase-admin's own retries (4) are used up by six 429s; the channel waits and tries again."""
    settings = make_settings(fcm)
    channel = FcmChannel(firebase_app(settings.fcm), Renderer())
    [outcome] = await channel.send([Notification(_alert(), "push", "quota429-6-phone", "en")])
    assert outcome.status == "sent" and outcome.attempts == 2
    attempts = fetch_attempts(settings, settings.fcm.project_id, "quota429-6-phone")
    assert [a["status"] for a in attempts] == [429] * 6 + [200]
    assert not any(a["early"] for a in attempts), attempts


async def test_quota_exceeded_for_too_long_is_a_failure_with_its_reason(
    fcm: dict[str, Any], make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(fcm)
    channel = FcmChannel(firebase_app(settings.fcm), Renderer(), quota_retries=0)
    [outcome] = await channel.send([Notification(_alert(), "push", "quota429-9-phone", "en")])
    assert outcome.status == "failed" and "QuotaExceededError" in (outcome.reason or "")
    assert fetch_messages(settings, settings.fcm.project_id) == []


async def test_email_is_multipart_in_the_household_language_over_one_connection(
    smtp: dict[str, Any], make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(smtp)
    domain = f"{uuid.uuid4().hex[:8]}.example.test"
    channel = EmailChannel(settings.smtp, Renderer())
    try:
        outcomes = await channel.send([
            Notification(_alert("raised"), "email", f"fr@{domain}", "fr"),
            Notification(_alert("raised"), "email", f"en@{domain}", "en"),
            Notification(_alert("resolved"), "email", f"en@{domain}", "en"),
        ])
        connection = channel._client
        more = await channel.send([Notification(_alert("resolved"), "email", f"fr@{domain}", "fr")])
        assert channel._client is connection  # reused, not reopened per mail
    finally:
        await channel.close()
    assert [o.status for o in outcomes + more] == ["sent"] * 4

    french = read_mailbox(settings.smtp.maildir, recipient=f"fr@{domain}")
    english = read_mailbox(settings.smtp.maildir, recipient=f"en@{domain}")
    assert [m["Subject"] for m in french] == [
        "Puissance au-dessus de votre limite", "Puissance au-dessus de votre limite : situation rétablie"]
    assert [m["Subject"] for m in english] == ["Power above your limit", "Power above your limit: back to normal"]
    message = english[0]
    assert message.get_content_type() == "multipart/alternative"
    assert message["X-Quartier-Alert-Id"] == _alert().id and message["Content-Language"] == "en"
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert "2,345 W measured" in text and "against a threshold of 1,500 W" in text
    assert "<h1" in html and "2,345 W measured" in html
    assert outcomes[1].provider_id == message["Message-ID"].strip()


async def test_email_refused_by_the_server_is_a_failure_with_its_reason(
    smtp: dict[str, Any], make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(smtp)
    wrong = settings.smtp.model_copy(update={"password": "not-the-password"})
    channel = EmailChannel(wrong, Renderer())
    try:
        [outcome] = await channel.send([Notification(_alert(), "email", "x@example.test", "fr")])
    finally:
        await channel.close()
    assert outcome.status == "failed" and "535" in (outcome.reason or "")
