"""Passwords: argon2id through argon2-cffi, with the library's recommended parameters.

A hash made under older parameters still verifies; :func:`needs_rehash` says so, and the service
then appends a ``PasswordChanged(rehash=True)`` with a fresh hash (which revokes nothing).
Unknown accounts are answered after verifying against a dummy hash, so an unknown email and a
wrong password take the same time.
"""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_LENGTH = 10
MAX_LENGTH = 1024

_hasher = PasswordHasher()  # argon2id, RFC 9106 low-memory profile (argon2-cffi's default)
_DUMMY_HASH = _hasher.hash("not a password anybody has: it only makes failures take as long")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


# Accounts made on the server for a meter (``quartier notifier register``) sign in nowhere: their
# password is random and never told, so its hash needs no cost (48,000 of them in one file).
_unusable = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


def unusable_hash() -> str:
    import secrets

    return _unusable.hash(secrets.token_urlsafe(32))


def verify(password_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches; ``None`` (no such account) costs as much and says no."""
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


def weakness(password: str) -> str | None:
    """Why a new password is refused, or None."""
    if len(password) < MIN_LENGTH:
        return f"at least {MIN_LENGTH} characters"
    if len(password) > MAX_LENGTH:
        return f"at most {MAX_LENGTH} characters"
    if len(set(password)) < 4:
        return "more than three different characters"
    return None
