"""The local SMTP server process: aiosmtpd storing every received message in a Maildir.

``python -m quartier.stack.smtp_server --port P --maildir DIR [--tls-cert C --tls-key K]
[--credentials FILE]`` runs until SIGTERM. With a certificate it offers STARTTLS and refuses mail
before it; with a credentials file (JSON ``{"username", "password"}``) it requires AUTH PLAIN or
LOGIN, over TLS only, as a real submission server does.
"""

from __future__ import annotations

import argparse
import hmac
import json
import logging
import signal
import ssl
import threading
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import AuthResult, LoginPassword

#: The name the server gives in its greeting; fixed so the server never waits on a DNS lookup.
SERVER_HOSTNAME = "smtp.quartier.local"

log = logging.getLogger("quartier.smtp")


class PasswordAuthenticator:
    """Accepts exactly one user name and password (compared in constant time)."""

    def __init__(self, username: str, password: str) -> None:
        self._username = username.encode()
        self._password = password.encode()

    def __call__(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        ok = hmac.compare_digest(auth_data.login, self._username) and hmac.compare_digest(
            auth_data.password, self._password
        )
        return AuthResult(success=ok, handled=False)


def build_controller(
    port: int, maildir: Path, tls_cert: Path | None, tls_key: Path | None, credentials: Path | None
) -> Controller:
    # mailbox.Maildir creates cur/, new/ and tmp/ only when it creates the directory itself.
    maildir.parent.mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = {}
    if tls_cert and tls_key:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(tls_cert, tls_key)
        options.update(tls_context=context, require_starttls=True)
    if credentials:
        account = json.loads(credentials.read_text())
        options.update(
            authenticator=PasswordAuthenticator(account["username"], account["password"]),
            auth_required=True,
            # Without TLS the password would cross the wire in clear text; aiosmtpd then refuses AUTH.
            auth_require_tls=bool(tls_cert),
        )
    return Controller(
        Mailbox(maildir),
        hostname="127.0.0.1",
        port=port,
        server_hostname=SERVER_HOSTNAME,
        **options,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--maildir", type=Path, required=True)
    parser.add_argument("--tls-cert", type=Path)
    parser.add_argument("--tls-key", type=Path)
    parser.add_argument("--credentials", type=Path)
    args = parser.parse_args(argv)
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    controller = build_controller(args.port, args.maildir, args.tls_cert, args.tls_key, args.credentials)
    controller.start()
    log.info(
        "listening on 127.0.0.1:%d, maildir %s, starttls %s, auth %s",
        args.port, args.maildir, bool(args.tls_cert), bool(args.credentials),
    )
    stopping.wait()
    controller.stop()
    log.info("stopped")


if __name__ == "__main__":
    main()
