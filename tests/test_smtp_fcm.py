"""The local SMTP server and FCM-compatible endpoint, driven by the real client libraries."""

from __future__ import annotations

import json
import smtplib
import ssl
import time
import uuid
import warnings
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Callable

import aiosmtplib
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from firebase_admin import exceptions, messaging
from google.auth.transport.requests import Request as GoogleAuthRequest
from google.oauth2 import service_account

from notifier.firebase import firebase_app
from quartier.settings import Settings
from quartier.stack import Stack
from quartier.stack.component import pid_alive, tcp_open
from quartier.stack.fcm import FcmEndpoint, fetch_attempts, fetch_messages
from quartier.stack.smtp import SmtpServer, read_mailbox

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"


def _message(sender: str, to: str, subject: str) -> EmailMessage:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = sender, to, subject
    message.set_content(f"body of {subject}")
    return message


def _push(token: str, title: str = "title") -> messaging.Message:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return messaging.Message(token=token, notification=messaging.Notification(title=title, body="b"), data={"k": "v"})


def _access_token(settings: Settings) -> str:
    credentials = service_account.Credentials.from_service_account_file(settings.fcm.credentials_file, scopes=[FCM_SCOPE])
    credentials.refresh(GoogleAuthRequest())
    return credentials.token


# --- lifecycle ---------------------------------------------------------------------------------


def test_smtp_server_runs_healthy_and_stops_cleanly(tmp_path: Path) -> None:
    stack = Stack(tmp_path, [SmtpServer(starttls=False, auth=False)])
    overrides = stack.up()["smtp"]
    [status] = stack.status()
    assert status.healthy
    with smtplib.SMTP(overrides["host"], overrides["port"], timeout=5) as client:
        client.send_message(_message("a@example.test", "plain@example.test", "plain"))
    assert [m["Subject"] for m in read_mailbox(overrides["maildir"])] == ["plain"]

    assert stack.down() == ["smtp"]
    assert not pid_alive(status.pid)
    assert not tcp_open(status.port)
    # What it received stays readable after it stopped.
    assert len(read_mailbox(overrides["maildir"])) == 1


def test_fcm_endpoint_runs_healthy_and_stops_cleanly_keeping_its_store(tmp_path: Path) -> None:
    stack = Stack(tmp_path, [FcmEndpoint()])
    settings = Settings(fcm={**stack.up()["fcm"], "project_id": "lifecycle"})
    [status] = stack.status()
    assert status.healthy
    token = _access_token(settings)
    sent = httpx.post(
        settings.fcm.endpoint.format("lifecycle"),
        json={"message": {"token": "device-1", "data": {"n": "1"}}},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert sent.status_code == 200, sent.text

    assert stack.down() == ["fcm"]
    assert not pid_alive(status.pid)
    assert not tcp_open(status.port)

    settings = Settings(fcm={**stack.up()["fcm"], "project_id": "lifecycle"})
    try:
        assert [m["message"]["data"] for m in fetch_messages(settings, "lifecycle")] == [{"n": "1"}]
    finally:
        stack.down()


# --- SMTP: STARTTLS and AUTH against the real server -----------------------------------------------


async def test_starttls_auth_email_is_delivered_and_readable_from_the_maildir(
    smtp: dict[str, Any], make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(smtp).smtp
    assert settings.starttls and settings.username and settings.password and settings.ca_file
    to = f"reader-{uuid.uuid4().hex[:8]}@example.test"
    await aiosmtplib.send(
        _message("alerts@quartier.test", to, "Bonjour"),
        hostname=settings.host,
        port=settings.port,
        start_tls=True,
        tls_context=ssl.create_default_context(cafile=settings.ca_file),
        username=settings.username,
        password=settings.password,
    )
    [received] = read_mailbox(settings.maildir, recipient=to)
    assert received["Subject"] == "Bonjour"
    assert received.get_content().strip() == "body of Bonjour"
    assert read_mailbox(settings.maildir, recipient_domain="nowhere.test") == []


async def test_smtp_refuses_mail_without_login_without_tls_or_with_a_wrong_password(
    smtp: dict[str, Any], make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(smtp).smtp
    to = f"refused-{uuid.uuid4().hex[:8]}@example.test"
    tls = ssl.create_default_context(cafile=settings.ca_file)
    common = {"hostname": settings.host, "port": settings.port}
    with pytest.raises(aiosmtplib.SMTPSenderRefused) as no_login:
        await aiosmtplib.send(_message("a@x.test", to, "s"), start_tls=True, tls_context=tls, **common)
    assert no_login.value.code == 530
    with pytest.raises(aiosmtplib.SMTPResponseException) as wrong_password:
        await aiosmtplib.send(
            _message("a@x.test", to, "s"), start_tls=True, tls_context=tls,
            username=settings.username, password="wrong", **common,
        )
    assert wrong_password.value.code == 535
    with pytest.raises(aiosmtplib.SMTPException, match="AUTH"):
        await aiosmtplib.send(
            _message("a@x.test", to, "s"), start_tls=False,
            username=settings.username, password=settings.password, **common,
        )
    assert read_mailbox(settings.maildir, recipient=to) == []


async def test_smtp_certificate_is_checked_not_skipped(smtp: dict[str, Any], make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(smtp).smtp
    with pytest.raises((ssl.SSLError, aiosmtplib.SMTPException), match="CERTIFICATE_VERIFY_FAILED"):
        await aiosmtplib.send(
            _message("a@x.test", "b@example.test", "s"), hostname=settings.host, port=settings.port,
            start_tls=True, tls_context=ssl.create_default_context(),  # the system store: does not know it
            username=settings.username, password=settings.password,
        )


# --- FCM: OAuth and the v1 API as firebase-admin and google-auth use them ------------------------------


def test_push_through_firebase_admin_reaches_the_store(fcm: dict[str, Any], make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(fcm)
    app = firebase_app(settings.fcm)
    name = messaging.send(_push("device-abc", title="Puissance élevée"), app=app)
    assert name.startswith(f"projects/{settings.fcm.project_id}/messages/")
    [stored] = fetch_messages(settings, settings.fcm.project_id)
    assert stored["name"] == name
    assert stored["message"]["token"] == "device-abc"
    assert stored["message"]["notification"] == {"title": "Puissance élevée", "body": "b"}
    assert stored["message"]["data"] == {"k": "v"}
    # validate_only (dry run) is answered but not delivered.
    messaging.send(_push("device-abc"), dry_run=True, app=app)
    assert len(fetch_messages(settings, settings.fcm.project_id)) == 1


def test_send_needs_a_token_the_endpoint_issued(fcm: dict[str, Any], make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(fcm)
    url = settings.fcm.endpoint.format(settings.fcm.project_id)
    for headers in ({}, {"Authorization": "Bearer ya29.made-up"}):
        answer = httpx.post(url, json={"message": {"token": "d"}}, headers=headers)
        assert answer.status_code == 401
        assert answer.json()["error"]["status"] == "UNAUTHENTICATED"
    assert fetch_messages(settings, settings.fcm.project_id) == []


def test_token_endpoint_only_trusts_the_generated_service_account(
    fcm: dict[str, Any], make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(fcm)
    account = json.loads(Path(settings.fcm.credentials_file).read_text())
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    claims = {"iss": account["client_email"], "aud": "https://oauth2.googleapis.com/token",
              "scope": FCM_SCOPE, "iat": now, "exp": now + 600}
    forged = jwt.encode(claims, stranger.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()), "RS256")
    answer = httpx.post(account["token_uri"], data={
        "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": forged})
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_grant"
    genuine = jwt.encode(claims, account["private_key"], "RS256")
    answer = httpx.post(account["token_uri"], data={
        "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": genuine})
    assert answer.status_code == 200
    assert answer.json()["expires_in"] == 3600 and answer.json()["token_type"] == "Bearer"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"message": {"token": "d", "colour": "red"}}, "message"),
        ({"message": {"token": "d", "data": {"n": 1}}}, "message.data.n"),
        ({"message": {"token": "d", "topic": "news"}}, "message"),
        ({"message": {"data": {"a": "b"}}}, "message"),
        ({"message": {"token": "d", "data": {"google.x": "1"}}}, "message.data.google.x"),
        ({"message": {"token": "d", "notification": {"title": 5}}}, "message.notification.title"),
    ],
)
def test_invalid_messages_are_refused_naming_the_field(
    fcm: dict[str, Any], make_settings: Callable[..., Settings], body: dict[str, Any], field: str
) -> None:
    settings = make_settings(fcm)
    answer = httpx.post(
        settings.fcm.endpoint.format(settings.fcm.project_id),
        json=body,
        headers={"Authorization": f"Bearer {_access_token(settings)}"},
    )
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT"
    violations = [v for d in error["details"] if "fieldViolations" in d for v in d["fieldViolations"]]
    assert violations[0]["field"] == field
    assert fetch_messages(settings, settings.fcm.project_id) == []


def test_fcm_errors_map_to_firebase_admin_exceptions(fcm: dict[str, Any], make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(fcm)
    app = firebase_app(settings.fcm)
    with pytest.raises(messaging.UnregisteredError):
        messaging.send(_push("unregistered-phone"), app=app)
    with pytest.raises(exceptions.InvalidArgumentError, match="not a valid FCM registration token"):
        messaging.send(_push("invalid-phone"), app=app)
    assert fetch_messages(settings, settings.fcm.project_id) == []


def test_503_then_success_as_firebase_admin_sees_it(fcm: dict[str, Any], make_settings: Callable[..., Settings]) -> None:
    """The notifier's app makes one request per send (its retry stage retries and counts); the
    endpoint answers the injected 503s, then accepts."""
    settings = make_settings(fcm)
    app = firebase_app(settings.fcm)
    for _ in range(2):
        with pytest.raises(exceptions.UnavailableError):
            messaging.send(_push("flaky503-2-phone"), app=app)
    name = messaging.send(_push("flaky503-2-phone"), app=app)
    attempts = fetch_attempts(settings, settings.fcm.project_id, "flaky503-2-phone")
    assert [a["status"] for a in attempts] == [503, 503, 200]
    assert [m["name"] for m in fetch_messages(settings, settings.fcm.project_id)] == [name]


def test_429_carries_retry_after_and_a_patient_retry_succeeds(
    fcm: dict[str, Any], make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(fcm)
    app = firebase_app(settings.fcm)
    with pytest.raises(messaging.QuotaExceededError) as quota:
        messaging.send(_push("quota429-1-phone"), app=app)
    assert quota.value.http_response is not None and quota.value.http_response.headers["Retry-After"] == "1"
    time.sleep(1.05)  # what the reply asked for; the endpoint checks it
    messaging.send(_push("quota429-1-phone"), app=app)
    attempts = fetch_attempts(settings, settings.fcm.project_id, "quota429-1-phone")
    assert [(a["status"], a["early"]) for a in attempts] == [(429, False), (200, False)]
    assert len(fetch_messages(settings, settings.fcm.project_id)) == 1


def test_the_endpoint_notices_a_retry_that_ignores_retry_after(
    fcm: dict[str, Any], make_settings: Callable[..., Settings]
) -> None:
    """The check above can fail: an impatient client is seen and refused."""
    settings = make_settings(fcm)
    url = settings.fcm.endpoint.format(settings.fcm.project_id)
    headers = {"Authorization": f"Bearer {_access_token(settings)}"}
    body = {"message": {"token": "quota429-1-impatient"}}
    first = httpx.post(url, json=body, headers=headers)
    assert first.status_code == 429 and first.headers["Retry-After"] == "1"
    assert first.json()["error"]["details"][0]["errorCode"] == "QUOTA_EXCEEDED"
    again = httpx.post(url, json=body, headers=headers)
    assert again.status_code == 429
    assert [a["early"] for a in fetch_attempts(settings, settings.fcm.project_id, "quota429-1-impatient")] == [False, True]
