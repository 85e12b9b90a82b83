"""The local FCM-compatible endpoint: answers the FCM HTTP v1 API and Google's OAuth token exchange.

``firebase-admin`` talks to it unchanged once its send URL points here (``notifier.firebase`` does
that from ``settings.fcm.endpoint``) and it holds the service-account file this component
generates, whose ``token_uri`` names this endpoint. The server is ``quartier.stack.fcm_server``;
its module docstring lists the device-token prefixes that inject FCM's errors.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from quartier.fcm import endpoint_base  # noqa: F401  (re-exported for the stack's callers)
from quartier.settings import Settings
from quartier.stack.component import Component

SERVICE_ACCOUNT_FILE = "service-account.json"
SERVICE_ACCOUNT_PROJECT = "quartier-local"
CLIENT_EMAIL = f"quartier-notifier@{SERVICE_ACCOUNT_PROJECT}.iam.gserviceaccount.com"


class FcmEndpoint(Component):
    name = "fcm"
    default_port = 8099
    start_timeout_s = 20.0

    def __init__(self, retry_after_s: int = 1) -> None:
        #: The Retry-After the endpoint announces with its injected 429 answers.
        self.retry_after_s = retry_after_s

    def command(self, port: int, workdir: Path) -> list[str]:
        write_service_account(workdir, token_uri=f"{self.url(port)}/token")
        return [
            sys.executable, "-m", "quartier.stack.fcm_server",
            "--port", str(port), "--workdir", str(workdir), "--retry-after", str(self.retry_after_s),
        ]

    def healthy(self, port: int) -> bool:
        answer = httpx.get(f"{self.url(port)}/_health", timeout=2)
        return answer.status_code == 200 and answer.json().get("service") == "fcm"

    def settings(self, port: int, workdir: Path) -> dict[str, Any]:
        return {
            "fcm": {
                "endpoint": f"{self.url(port)}/v1/projects/{{0}}/messages:send",
                "credentials_file": str(workdir / SERVICE_ACCOUNT_FILE),
            }
        }

    def url(self, port: int) -> str:
        return f"http://127.0.0.1:{port}"


def write_service_account(workdir: Path, token_uri: str) -> Path:
    """A Google service-account key file with a real RSA key; the key is kept across restarts,
    ``token_uri`` is rewritten because the port may change."""
    path = workdir / SERVICE_ACCOUNT_FILE
    try:
        account = json.loads(path.read_text())
    except (OSError, ValueError):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        account = {
            "type": "service_account",
            "project_id": SERVICE_ACCOUNT_PROJECT,
            "private_key_id": key.public_key().public_numbers().n.to_bytes(256, "big")[:20].hex(),
            "private_key": pem,
            "client_email": CLIENT_EMAIL,
            "client_id": "100000000000000000001",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "universe_domain": "googleapis.com",
        }
    account["token_uri"] = token_uri
    path.write_text(json.dumps(account, indent=2))
    path.chmod(0o600)
    return path


def fetch_messages(settings: Settings, project_id: str) -> list[dict[str, Any]]:
    """Every message the local endpoint accepted for ``project_id``, oldest first.

    Each item: ``{"name": "projects/p/messages/id", "received_ms": ..., "message": {...}}`` where
    ``message`` is the FCM v1 message exactly as the client sent it.
    """
    answer = httpx.get(
        f"{endpoint_base(settings.fcm.endpoint)}/_store/messages", params={"project": project_id}, timeout=10
    )
    answer.raise_for_status()
    return answer.json()["messages"]


def count_messages(settings: Settings, project_id: str) -> int:
    """How many messages the local endpoint accepted for ``project_id`` (cheap enough to poll)."""
    answer = httpx.get(
        f"{endpoint_base(settings.fcm.endpoint)}/_store/count", params={"project": project_id}, timeout=10
    )
    answer.raise_for_status()
    return int(answer.json()["count"])


def fetch_attempts(settings: Settings, project_id: str, token: str) -> list[dict[str, Any]]:
    """Every send attempt the endpoint saw for one device token: status, and whether a retry
    came before the Retry-After it had announced (``early``)."""
    answer = httpx.get(
        f"{endpoint_base(settings.fcm.endpoint)}/_store/attempts",
        params={"project": project_id, "token": token},
        timeout=10,
    )
    answer.raise_for_status()
    return answer.json()["attempts"]
