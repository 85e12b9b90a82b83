"""The secret that signs access tokens (HS256) and derives sessions' CSRF tokens.

``settings.accounts.token_secret`` when set (production: every API process shares it). Otherwise a
random 256-bit secret made once per state directory and kept in ``<state_dir>/accounts-token.key``
(mode 0600), so a restarted local server keeps its signed-in users.
"""

from __future__ import annotations

import os
import secrets

from quartier.settings import Settings

KEY_FILE = "accounts-token.key"


def token_secret(settings: Settings) -> bytes:
    if settings.accounts.token_secret:
        return settings.accounts.token_secret.encode()
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    path = settings.state_dir / KEY_FILE
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    secret = secrets.token_bytes(32)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(secret.hex())
    return secret
