"""Email notifications over SMTP with aiosmtplib: a small pool of reused connections, one TLS context.

Measured here (DESIGN.md, bench/notifier.py): a new connection per mail is about 200/s with a shared
``ssl.SSLContext`` and 35/s building a context each time; so every connection of the pool is opened
once (STARTTLS and AUTH when configured) and reused, and a connection the server dropped is opened
again once before the mail counts as a (transient) failure. The pool's connections send in parallel,
which keeps the server busy while each connection waits for its replies (aiosmtplib does not
pipeline commands on one connection).

Building the MIME message is the other cost: ``EmailMessage`` took about 2.4 ms per mail and
compat32's ``MIMEMultipart`` about 0.8 ms (docs/notifier.md). So the message of each (kind, state,
language) is built and flattened **once** by compat32, with its parts in 8bit UTF-8 and slots for
what changes per mail (recipient, date, Message-ID, values), and each mail fills the slots: a few
microseconds. The server must offer 8BITMIME (every current server does; the mail is refused
with a clear reason otherwise). A grouped message is built whole.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import ssl
from collections.abc import Sequence
from email import charset as email_charset
from email.header import Header
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import compat32

import aiosmtplib

from quartier.settings import SmtpSettings
from notifier.notification import Notification, Outcome
from notifier.render import Renderer, Slotted, escaped, slot, slot_values
from notifier.sent_log import SentJournal

log = logging.getLogger(__name__)

#: Errors after which a new connection may succeed: the mail is tried once more on a fresh one.
_CONNECTION_ERRORS = (
    aiosmtplib.SMTPServerDisconnected,
    aiosmtplib.SMTPConnectError,
    aiosmtplib.SMTPConnectTimeoutError,
    aiosmtplib.SMTPReadTimeoutError,
    ConnectionError,
    OSError,
)
#: UTF-8 parts sent as they are (8bit), so the flattened message keeps its slots readable.
UTF8_8BIT = email_charset.Charset("utf-8")
UTF8_8BIT.body_encoding = None
_POLICY = compat32.clone(linesep="\r\n")
MESSAGE_ID_DOMAIN = "quartier.local"


class EmailChannel:
    name = "email"

    def __init__(
        self,
        smtp: SmtpSettings,
        renderer: Renderer,
        journal: SentJournal | None = None,
        connections: int = 16,
        timeout_s: float = 30.0,
    ) -> None:
        self.smtp = smtp
        self.renderer = renderer
        self.journal = journal
        self.timeout_s = timeout_s
        # One context for every connection: building one loads the trust store (the 35/s figure).
        self.tls_context = ssl.create_default_context(cafile=smtp.ca_file or None)
        self.sender_address = email.utils.parseaddr(smtp.sender)[1]
        if not self.sender_address:
            raise ValueError(f"settings.smtp.sender is not an address: {smtp.sender!r}")
        self._clients: list[aiosmtplib.SMTP | None] = [None] * connections
        self._skeletons: dict[tuple[str, str, str], Slotted] = {}

    async def send(self, notifications: Sequence[Notification]) -> list[Outcome]:
        outcomes: list[Outcome | None] = [None] * len(notifications)
        next_index = iter(range(len(notifications)))

        async def worker(slot_number: int) -> None:
            for i in next_index:
                outcomes[i] = await self._send_one(slot_number, notifications[i])

        await asyncio.gather(*(worker(k) for k in range(min(len(self._clients), len(notifications)))))
        return outcomes  # type: ignore[return-value]

    async def close(self) -> None:
        for k, client in enumerate(self._clients):
            if client is not None and client.is_connected:
                try:
                    await client.quit()
                except (aiosmtplib.SMTPException, OSError):
                    client.close()
            self._clients[k] = None

    async def _connection(self, slot_number: int) -> aiosmtplib.SMTP:
        client = self._clients[slot_number]
        if client is not None and client.is_connected:
            return client
        client = aiosmtplib.SMTP(
            hostname=self.smtp.host,
            port=self.smtp.port,
            start_tls=self.smtp.starttls,
            tls_context=self.tls_context,
            username=self.smtp.username or None,
            password=self.smtp.password or None,
            timeout=self.timeout_s,
        )
        await client.connect()
        if client.last_ehlo_response is None:  # no STARTTLS or AUTH: EHLO now, to see 8BITMIME
            await client.ehlo()
        self._clients[slot_number] = client
        return client

    async def _send_one(self, slot_number: int, notification: Notification) -> Outcome:
        message_id = message_id_of(notification)
        data = self.message_bytes(notification, message_id)
        for attempt in (1, 2):
            try:
                client = await self._connection(slot_number)
                if not client.supports_extension("8BITMIME"):
                    return Outcome(notification, "failed", reason="SMTP server does not offer 8BITMIME")
                await client.sendmail(self.sender_address, [notification.address], data, mail_options=["BODY=8BITMIME"])
            except aiosmtplib.SMTPRecipientsRefused as exc:
                refused = "; ".join(f"{e.code} {e.message}" for e in exc.recipients)
                transient = all(400 <= e.code < 500 for e in exc.recipients)
                return Outcome(notification, "failed", reason=f"recipient refused: {refused}", transient=transient)
            except aiosmtplib.SMTPResponseException as exc:
                if exc.code in (421,) and attempt == 1:  # the server closes the connection: reconnect
                    self._drop(slot_number)
                    continue
                return Outcome(
                    notification, "failed", reason=f"SMTP {exc.code}: {exc.message}", transient=400 <= exc.code < 500
                )
            except _CONNECTION_ERRORS as exc:
                self._drop(slot_number)
                if attempt == 2:
                    return Outcome(notification, "failed", reason=f"SMTP connection: {exc}", transient=True)
                log.info("SMTP connection lost (%s); reconnecting", exc)
                continue
            except aiosmtplib.SMTPException as exc:
                self._drop(slot_number)
                return Outcome(notification, "failed", reason=f"SMTP: {exc}", transient=True)
            if self.journal is not None:
                self.journal.note(notification.keys, message_id)
            return Outcome(notification, "sent", provider_id=message_id)
        raise AssertionError("unreachable")

    def _drop(self, slot_number: int) -> None:
        client = self._clients[slot_number]
        if client is not None:
            client.close()
        self._clients[slot_number] = None

    # --- the message -------------------------------------------------------------------------

    def message_bytes(self, notification: Notification, message_id: str) -> bytes:
        if notification.grouped:
            return self._grouped_message(notification, message_id)
        alert = notification.alert
        skeleton = self._skeleton(alert.kind, alert.state, notification.language)
        values = slot_values(alert, notification.language, notification.zone)
        html_values = escaped(values)
        filled = skeleton.fill(
            {
                **{f"text_{k}": v for k, v in values.items()},
                **{f"html_{k}": v for k, v in html_values.items()},
                "to": notification.address,
                "date": email.utils.formatdate(usegmt=True),
                "message_id": message_id,
                "header_alert_id": alert.id,
            }
        )
        return filled.encode("utf-8")

    def _skeleton(self, kind: str, state: str, language: str) -> Slotted:
        key = (kind, state, language)
        if (found := self._skeletons.get(key)) is not None:
            return found
        compiled = self.renderer.compiled(kind, state, language)  # type: ignore[arg-type]
        title = compiled.title.fill({})  # a single alert's title has no values
        message = self._multipart(
            title, language, kind, state,
            _prefixed(compiled.text, "text_"), _prefixed(compiled.html, "html_"),
            to=slot("to"), date=slot("date"), message_id=slot("message_id"), alert_id=slot("header_alert_id"),
        )
        skeleton = Slotted.parse(message.as_bytes(policy=_POLICY).decode("utf-8"))
        self._skeletons[key] = skeleton
        return skeleton

    def _grouped_message(self, notification: Notification, message_id: str) -> bytes:
        words = self.renderer.render_group(notification.alerts, notification.language, notification.zone)
        message = self._multipart(
            words.title, notification.language, "group", notification.alert.state, words.text, words.html,
            to=notification.address, date=email.utils.formatdate(usegmt=True), message_id=message_id,
            alert_id=",".join(a.id for a in notification.alerts[:20]),
        )
        return message.as_bytes(policy=_POLICY)

    def _multipart(
        self, title: str, language: str, kind: str, state: str, text: str, html: str,
        *, to: str, date: str, message_id: str, alert_id: str,
    ) -> MIMEMultipart:
        message = MIMEMultipart("alternative", boundary=f"=_quartier_{kind}_{state}_{language}")
        message["From"] = _address_header(self.smtp.sender)
        message["To"] = to
        message["Subject"] = Header(title, "utf-8") if not title.isascii() else title
        message["Date"] = date
        # Deterministic: a mail client can recognise a duplicate, and so can a test.
        message["Message-ID"] = message_id
        message["Content-Language"] = language
        message["X-Quartier-Alert-Id"] = alert_id
        message["X-Quartier-Alert-State"] = state
        message["X-Quartier-Alert-Kind"] = kind
        message.attach(MIMEText(text, "plain", UTF8_8BIT))
        message.attach(MIMEText(html, "html", UTF8_8BIT))
        return message


def message_id_of(notification: Notification) -> str:
    alert = notification.alert
    suffix = f".g{len(notification.alerts)}" if notification.grouped else ""
    return f"<{alert.id}.{alert.state}.{notification.recipient}{suffix}@{MESSAGE_ID_DOMAIN}>"


def _prefixed(text: Slotted, prefix: str) -> str:
    """The text with its slots renamed (text_value, html_value), so one skeleton holds both."""
    parts = list(text.parts)
    for i in range(1, len(parts), 2):
        parts[i] = slot(prefix + parts[i])
    return "".join(parts)


def _address_header(sender: str) -> str:
    name, address = email.utils.parseaddr(sender)
    return email.utils.formataddr((name, address), charset="utf-8")

