"""The local SMTP server: a real aiosmtpd server that keeps every email it receives in a Maildir.

By default it is set up like a real submission server: STARTTLS with a self-signed certificate
generated into its work directory (clients verify it through ``smtp.ca_file``, they never skip
verification) and AUTH with a generated password, both written into the settings clients read.
A developer reads what the demo sent with any Maildir reader, or with :func:`read_mailbox`.
"""

from __future__ import annotations

import datetime
import email
import email.policy
import ipaddress
import json
import mailbox
import re
import secrets
import smtplib
import sys
from email.message import EmailMessage
from email.utils import getaddresses
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from quartier.stack.component import Component

CERT_FILE = "tls-cert.pem"
KEY_FILE = "tls-key.pem"
CREDENTIALS_FILE = "credentials.json"
MAILDIR = "maildir"
USERNAME = "quartier"


class SmtpServer(Component):
    name = "smtp"
    default_port = 8025
    start_timeout_s = 20.0

    def __init__(self, starttls: bool = True, auth: bool = True) -> None:
        if auth and not starttls:
            # A password over a clear connection is what a real server refuses; so does this one.
            raise ValueError("SmtpServer(auth=True) needs starttls=True: AUTH is only offered over TLS")
        self.starttls = starttls
        self.auth = auth

    def command(self, port: int, workdir: Path) -> list[str]:
        argv = [sys.executable, "-m", "quartier.stack.smtp_server", "--port", str(port),
                "--maildir", str(workdir / MAILDIR)]
        if self.starttls:
            cert, key = ensure_certificate(workdir)
            argv += ["--tls-cert", str(cert), "--tls-key", str(key)]
        if self.auth:
            argv += ["--credentials", str(ensure_credentials(workdir))]
        return argv

    def healthy(self, port: int) -> bool:
        with smtplib.SMTP("127.0.0.1", port, timeout=2) as client:
            code, _ = client.ehlo()
            return code == 250

    def settings(self, port: int, workdir: Path) -> dict[str, Any]:
        values: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": port,
            "maildir": str(workdir / MAILDIR),
            "starttls": self.starttls,
            "ca_file": str(workdir / CERT_FILE) if self.starttls else "",
            "username": "",
            "password": "",
        }
        if self.auth:
            account = json.loads((workdir / CREDENTIALS_FILE).read_text())
            values.update(username=account["username"], password=account["password"])
        return {"smtp": values}

    def url(self, port: int) -> str:
        return f"smtp://127.0.0.1:{port}"


def ensure_certificate(workdir: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, generated once and kept across restarts."""
    cert_path, key_path = workdir / CERT_FILE, workdir / KEY_FILE
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Quartier local SMTP")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        # Self-signed and used as its own trust anchor by clients, so it is marked as a CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def ensure_credentials(workdir: Path) -> Path:
    """The one account the server accepts: a generated password, kept across restarts."""
    path = workdir / CREDENTIALS_FILE
    if not path.exists():
        path.write_text(json.dumps({"username": USERNAME, "password": secrets.token_urlsafe(18)}))
        path.chmod(0o600)
    return path


def read_mailbox(
    maildir: Path | str,
    recipient: str | None = None,
    recipient_domain: str | None = None,
) -> list[EmailMessage]:
    """Every message in the Maildir, oldest first; optionally only those addressed to
    ``recipient`` or to any address at ``recipient_domain`` (by envelope recipient)."""
    path = Path(maildir)
    if not path.is_dir():
        return []
    box = mailbox.Maildir(path, factory=None, create=False)
    messages: list[EmailMessage] = []
    for key in sorted(box.keys(), key=_delivery_order):
        with box.get_file(key) as raw:
            message = email.message_from_binary_file(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        if recipient is None and recipient_domain is None:
            messages.append(message)
            continue
        addresses = {addr.lower() for _, addr in getaddresses([message.get("X-RcptTo", "")])}
        if recipient is not None and recipient.lower() not in addresses:
            continue
        if recipient_domain is not None and not any(
            addr.endswith("@" + recipient_domain.lower()) for addr in addresses
        ):
            continue
        messages.append(message)
    return messages


def _delivery_order(key: str) -> tuple[int, int, str]:
    """Maildir keys are ``<seconds>.M<microseconds>P<pid>...``: sort them by delivery time."""
    match = re.match(r"(\d+)\.M(\d+)", key)
    return (int(match[1]), int(match[2]), key) if match else (0, 0, key)
