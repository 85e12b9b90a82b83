"""Crypto-shredding: personal fields sealed under a per-household data key that erasure destroys.

(A key's *owner* is a household id, or an account id for an account's own fields, its email and
name, written before it belongs to a household; erasing a household destroys its key and its
members' keys.)

Kafka topics are append-only and replayed to rebuild every projection, so a personal field (an email,
a name, a device token, free text) cannot be deleted from the log. It is written sealed instead:
AES-256-GCM (``cryptography``) under its household's data key, with the topic, the household and the
field name as associated data, so a sealed value copied into another field, topic or household does
not open. Erasing the household deletes its key, and every sealed value of it, in every copy of the
log, backups included, is noise from then on.

The pieces, each small:

- :class:`quartier.events.SealedField`: the record a sealed value travels as, inside any event;
- :class:`KeyStore`: the data keys, in one SQLite file with ``secure_delete`` on and the WAL truncated
  after each erasure, so a forgotten key is in none of its files; keys are wrapped (AES-GCM again)
  under a key-encryption key kept apart, so the database file alone opens nothing; every process's
  in-memory cache is dropped whenever another connection committed (``PRAGMA data_version``), so no
  process keeps using a key another one erased;
- :class:`Sealer`: ``seal`` and ``open`` for producers and projections;
- :class:`quartier.events.DataKeyErased` on ``privacy.erasures``: the record of an erasure (the household
  id and a time, nothing personal), replayed after any restore (:func:`replay_erasures`) so a key
  restored from a backup is forgotten again before anything reads with it, and an erased household
  never gets a new key.

The associated data uses the topic's declared name (``quartier.topics``), without the deployment's
prefix, so a record decrypts the same in every deployment that carries it.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from quartier.events import SealedField
from quartier.settings import Settings

__all__ = ["SealedField", "Sealer", "KeyStore", "KeyErased", "SealError"]

ALGORITHM = "A256GCM"
_NONCE_BYTES = 12
_KEY_BYTES = 32
_AAD_PREFIX = b"quartier-sealed-field/v1"
_KEK_AAD_PREFIX = b"quartier-data-key/v1"


class SealError(ValueError):
    """A sealed value that does not open: wrong field, topic or owner, or tampered bytes."""


class KeyErased(LookupError):
    """The owner's data key was erased: its sealed values can never be opened again."""

    def __init__(self, owner: str) -> None:
        super().__init__(f"the data key of owner {owner!r} was erased")
        self.owner = owner


def associated_data(topic: str, owner: str, field: str) -> bytes:
    """What a sealed value is bound to: its topic's declared name, its owner and its field name."""
    for name, value in (("topic", topic), ("owner", owner), ("field", field)):
        if not value or "\x00" in value:
            raise ValueError(f"{name}: must be a non-empty string without NUL, got {value!r}")
    return b"\x00".join((_AAD_PREFIX, topic.encode(), owner.encode(), field.encode()))


# --- the key store ------------------------------------------------------------------------------


def key_encryption_key(settings: Settings) -> bytes:
    """The key that wraps every data key at rest: ``privacy.key_encryption_key`` (64 hex digits), or a
    random one generated once in ``<state_dir>/privacy/kek`` (mode 0600) for local runs."""
    configured = settings.privacy.key_encryption_key
    if configured:
        try:
            kek = bytes.fromhex(configured)
        except ValueError:
            raise ValueError("privacy.key_encryption_key: must be 64 hex digits") from None
        if len(kek) != _KEY_BYTES:
            raise ValueError(f"privacy.key_encryption_key: must be 64 hex digits, got {len(configured)}")
        return kek
    path = settings.state_dir / "privacy" / "kek"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return bytes.fromhex(path.read_text().strip())
    with os.fdopen(descriptor, "w") as file:
        file.write(AESGCM.generate_key(bit_length=256).hex())
    return bytes.fromhex(path.read_text().strip())


class KeyStore:
    """Per-owner (household or account) AES-256 data keys in one SQLite file, that can truly forget one.

    ``secure_delete`` makes SQLite overwrite a deleted row's bytes with zeros in the database file,
    and the checkpoint after each erasure truncates the write-ahead log, which held the page as it
    was. The in-memory cache (``cache_size`` keys) is checked against ``PRAGMA data_version`` on each
    use, which changes whenever another connection (another process) committed: then it is dropped.
    """

    def __init__(self, path: Path, kek: bytes, *, cache_size: int = 4096) -> None:
        if len(kek) != _KEY_BYTES:
            raise ValueError("kek: must be 32 bytes")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._wrap = AESGCM(kek)
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA secure_delete=ON")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS data_keys ("
            " owner TEXT PRIMARY KEY, wrapped_key BLOB NOT NULL, nonce BLOB NOT NULL, created_ms INTEGER NOT NULL)"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS erased_owners (owner TEXT PRIMARY KEY, erased_ms INTEGER NOT NULL)"
        )
        self._data_version = self._version()

    @classmethod
    def open(cls, settings: Settings) -> KeyStore:
        """The deployment's key store: ``privacy.key_store`` or ``<state_dir>/privacy/keys.db``."""
        path = Path(settings.privacy.key_store) if settings.privacy.key_store else settings.state_dir / "privacy" / "keys.db"
        return cls(path, key_encryption_key(settings))

    def close(self) -> None:
        with self._lock:
            self._cache.clear()
            self._db.close()

    def _version(self) -> int:
        return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    def _fresh_cache(self) -> None:
        version = self._version()
        if version != self._data_version:
            self._cache.clear()
            self._data_version = version

    def cached(self, owner: str) -> bool:
        """Whether this process holds the owner's key in memory (tests, diagnostics)."""
        with self._lock:
            return owner in self._cache

    def key_for(self, owner: str, *, create: bool = True) -> bytes:
        """The owner's data key; created on first use unless ``create`` is False.

        Raises KeyErased for an erased owner (or, with ``create=False``, one that never had a key).
        """
        with self._lock:
            self._fresh_cache()
            key = self._cache.get(owner)
            if key is not None:
                self._cache.move_to_end(owner)
                return key
            key = self._load(owner)
            if key is None:
                if not create or self._is_erased(owner):
                    raise KeyErased(owner)
                key = self._create(owner)
            self._cache[owner] = key
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
            return key

    def _load(self, owner: str) -> bytes | None:
        row = self._db.execute(
            "SELECT wrapped_key, nonce FROM data_keys WHERE owner = ?", (owner,)
        ).fetchone()
        if row is None:
            return None
        wrapped, nonce = row
        return self._wrap.decrypt(nonce, wrapped, _KEK_AAD_PREFIX + owner.encode())

    def _is_erased(self, owner: str) -> bool:
        return self._db.execute("SELECT 1 FROM erased_owners WHERE owner = ?", (owner,)).fetchone() is not None

    def _create(self, owner: str) -> bytes:
        key = AESGCM.generate_key(bit_length=256)
        nonce = os.urandom(_NONCE_BYTES)
        wrapped = self._wrap.encrypt(nonce, key, _KEK_AAD_PREFIX + owner.encode())
        # Two processes may create at once: the first insert wins and both use its key.
        self._db.execute(
            "INSERT OR IGNORE INTO data_keys (owner, wrapped_key, nonce, created_ms) VALUES (?, ?, ?, ?)",
            (owner, wrapped, nonce, time.time_ns() // 1_000_000),
        )
        self._data_version = self._version()
        stored = self._load(owner)
        assert stored is not None
        return stored

    def is_erased(self, owner: str) -> bool:
        with self._lock:
            return self._is_erased(owner)

    def forget(self, owners: Iterable[str], erased_ms: int) -> list[str]:
        """Erases the data keys of these owners for good; returns those that had a key.

        Idempotent. Remembers each owner as erased (its id, nothing else), so it never gets a key
        again, then truncates the write-ahead log so no file keeps the deleted rows.
        """
        owners = list(dict.fromkeys(owners))
        with self._lock:
            had = [h for h in owners if self._db.execute(
                "SELECT 1 FROM data_keys WHERE owner = ?", (h,)).fetchone() is not None]
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("DELETE FROM data_keys WHERE owner = ?", [(h,) for h in owners])
                self._db.executemany(
                    "INSERT OR IGNORE INTO erased_owners (owner, erased_ms) VALUES (?, ?)",
                    [(h, erased_ms) for h in owners],
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            for owner in owners:
                self._cache.pop(owner, None)
            self._checkpoint()
            self._data_version = self._version()
            return had

    def _checkpoint(self) -> None:
        # TRUNCATE copies the WAL into the database (secure_delete zeroes the freed cells there) and
        # truncates the WAL file to nothing. A reader in another process can hold it back: retry.
        for _ in range(50):
            busy, _, _ = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if not busy:
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.path}: the write-ahead log could not be truncated (a reader holds it)")

    def apply_erasures(self, erasures: Iterable[tuple[str, int]]) -> list[str]:
        """Applies replayed erasure records (owner, erased at); returns owners whose key came back."""
        erasures = list(erasures)
        with self._lock:
            present = [h for h, _ in erasures if self._db.execute(
                "SELECT 1 FROM data_keys WHERE owner = ?", (h,)).fetchone() is not None]
            missing_tombstone = [(h, at) for h, at in erasures if not self._is_erased(h)]
        for owner, at in dict.fromkeys([*[(h, a) for h, a in erasures if h in present], *missing_tombstone]):
            self.forget([owner], at)
        return present

    def owners(self) -> list[str]:
        """Households holding a data key now."""
        with self._lock:
            return [row[0] for row in self._db.execute("SELECT owner FROM data_keys ORDER BY owner")]


# --- sealing ------------------------------------------------------------------------------------


class Sealer:
    """Seals and opens personal fields with the key store's owner keys."""

    def __init__(self, keys: KeyStore) -> None:
        self.keys = keys

    def seal(self, value: str, *, owner: str, topic: str, field: str) -> SealedField:
        """``value`` encrypted under ``owner``'s key (a household, or an account), bound to its topic and field."""
        aad = associated_data(topic, owner, field)
        key = self.keys.key_for(owner)
        nonce = os.urandom(_NONCE_BYTES)
        return SealedField(owner=owner, nonce=nonce, ciphertext=AESGCM(key).encrypt(nonce, value.encode(), aad))

    def open(self, sealed: SealedField, *, topic: str, field: str) -> str:
        """The value in clear; KeyErased once the owner was erased, SealError when it does not open."""
        if sealed.alg != ALGORITHM:
            raise SealError(f"{field}: unknown algorithm {sealed.alg!r}")
        aad = associated_data(topic, sealed.owner, field)
        key = self.keys.key_for(sealed.owner, create=False)
        try:
            return AESGCM(key).decrypt(sealed.nonce, sealed.ciphertext, aad).decode()
        except InvalidTag:
            raise SealError(
                f"{field}: does not open under {sealed.owner!r} in topic {topic!r} "
                "(another field, topic or owner, or altered bytes)"
            ) from None

    def open_or_none(self, sealed: SealedField | None, *, topic: str, field: str) -> str | None:
        """As ``open``, but None for an erased owner: what a projection replaying the log shows."""
        if sealed is None:
            return None
        try:
            return self.open(sealed, topic=topic, field=field)
        except KeyErased:
            return None


# --- erasure records ----------------------------------------------------------------------------


async def publish_erasure(settings: Settings, owner: str, erased_ms: int) -> None:
    """Appends the erasure record to ``privacy.erasures`` (acknowledged by the broker before returning)."""
    from aiokafka import AIOKafkaProducer

    from quartier import events, topics
    from quartier.kafka import producer_config

    producer = AIOKafkaProducer(**producer_config(settings))
    await producer.start()
    try:
        record = events.DataKeyErased(owner=owner, erased_ms=erased_ms)
        await producer.send_and_wait(
            settings.topic(topics.PRIVACY_ERASURES.name), events.encode(record), key=owner.encode()
        )
    finally:
        await producer.stop()


async def replay_erasures(settings: Settings, keys: KeyStore) -> list[str]:
    """Reads every erasure record of ``privacy.erasures`` and forgets those keys again (after a restore).

    Returns the owners whose key had come back (restored from a backup): forgotten again.
    """
    from quartier import events, topics
    from quartier.kafka import read_all

    decoder = msgspec.json.Decoder(events.PrivacyEvent)
    records = await read_all(settings, settings.topic(topics.PRIVACY_ERASURES.name), decoder.decode)
    erasures = [(r.owner, r.erased_ms) for r in records if isinstance(r, events.DataKeyErased)]
    return keys.apply_erasures(erasures)
