"""Pairing codes: what a meter's Wi-Fi module shows, so that pairing proves possession of the meter.

A code is HMAC-SHA256 of the meter's address *and its zone* under the fleet secret
(``settings.accounts.pairing_secret``), cut to 40 bits and written as eight base32 characters in two
groups (``K7QD-M2XA``). The module is provisioned with its zone (the ingest gateway already stamps
each reading with it), shows address, zone and code, and the household types the three in: the
code proves the zone as well as the meter, so the household's zone comes with the pairing and no
lookup table is needed. Anyone holding the fleet secret (the operator, the simulator for its own
fleets) can print the codes; nobody else can forge one.

40 bits against an online guesser throttled per account: a billion-to-one per guess.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

#: The public dev secret: simulated fleets and tests only (settings name a real one in production).
DEV_SECRET = "quartier-dev-pairing-secret"

_CODE_BYTES = 5  # 40 bits -> 8 base32 characters, no padding
_LOOKALIKES = str.maketrans("018", "OIB")


def _secret(secret: str) -> bytes:
    return (secret or DEV_SECRET).encode()


def pairing_code(meter: str, zone: str, secret: str = "") -> str:
    """The code the module of ``meter`` in ``zone`` shows, e.g. ``K7QD-M2XA``."""
    digest = hmac.new(_secret(secret), f"{meter}|{zone}".encode(), hashlib.sha256).digest()
    text = base64.b32encode(digest[:_CODE_BYTES]).decode()
    return f"{text[:4]}-{text[4:]}"


def normalise(code: str) -> str:
    """What a person typed, as the canonical form: upper case, spaces and dashes ignored, and the
    digits base32 lacks read as the letters they look like (0 O, 1 I, 8 B)."""
    compact = "".join(ch for ch in code.upper() if ch not in " -").translate(_LOOKALIKES)
    return f"{compact[:4]}-{compact[4:]}" if len(compact) == 8 else compact


def check(meter: str, zone: str, code: str, secret: str = "") -> bool:
    """Whether ``code`` (as typed) is the one the module of ``meter`` in ``zone`` shows."""
    return hmac.compare_digest(normalise(code), pairing_code(meter, zone, secret))
