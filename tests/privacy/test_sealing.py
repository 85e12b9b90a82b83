"""Crypto-shredding primitives: sealed fields bound to their place, and a key store that truly forgets."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import msgspec
import pytest

from quartier import events, topics
from quartier.kafka import ensure_topics
from quartier.sealing import KeyErased, KeyStore, SealedField, SealError, Sealer, publish_erasure, replay_erasures
from tests.support import isolated_settings

KEK = bytes(range(32))
TOPIC = "accounts.events"


def store(tmp_path: Path) -> KeyStore:
    return KeyStore(tmp_path / "keys.db", KEK)


def files_of(store_path: Path) -> list[Path]:
    """The database file and every file SQLite keeps beside it (-wal, -shm, -journal)."""
    return sorted(p for p in store_path.parent.iterdir() if p.name.startswith(store_path.name))


def found_in_files(paths: list[Path], secret: bytes) -> list[str]:
    forms = [secret, secret.hex().encode(), base64.b64encode(secret), base64.urlsafe_b64encode(secret)]
    return [p.name for p in paths for form in forms if form in p.read_bytes()]


def raw_key_of(path: Path, owner: str) -> bytes:
    """The wrapped key as the file stores it."""
    import sqlite3

    db = sqlite3.connect(path)
    try:
        (wrapped,) = db.execute("SELECT wrapped_key FROM data_keys WHERE owner = ?", (owner,)).fetchone()
    finally:
        db.close()
    return bytes(wrapped)


def test_a_sealed_field_opens_only_in_its_own_field_topic_and_household(tmp_path: Path) -> None:
    sealer = Sealer(store(tmp_path))
    sealed = sealer.seal("luna.a@orange.com", owner="hh_0000000000000001", topic=TOPIC, field="email")
    assert b"luna" not in sealed.ciphertext
    assert sealer.open(sealed, topic=TOPIC, field="email") == "luna.a@orange.com"
    with pytest.raises(SealError, match="name: does not open"):
        sealer.open(sealed, topic=TOPIC, field="name")
    with pytest.raises(SealError, match="email: does not open"):
        sealer.open(sealed, topic="market.events", field="email")
    # The same ciphertext claimed by another household (which has a key of its own) does not open.
    sealer.seal("x", owner="hh_0000000000000002", topic=TOPIC, field="email")
    moved = msgspec.structs.replace(sealed, owner="hh_0000000000000002")
    with pytest.raises(SealError, match="under 'hh_0000000000000002'"):
        sealer.open(moved, topic=TOPIC, field="email")
    flipped = msgspec.structs.replace(sealed, ciphertext=bytes([sealed.ciphertext[0] ^ 1]) + sealed.ciphertext[1:])
    with pytest.raises(SealError):
        sealer.open(flipped, topic=TOPIC, field="email")


def test_a_sealed_field_travels_as_json_inside_a_record(tmp_path: Path) -> None:
    sealer = Sealer(store(tmp_path))
    sealed = sealer.seal("Luna Adalyn", owner="hh_0000000000000001", topic=TOPIC, field="name")
    decoded = msgspec.json.decode(msgspec.json.encode(sealed), type=SealedField)
    assert decoded == sealed
    assert set(json.loads(msgspec.json.encode(sealed))) == {"alg", "owner", "nonce", "ciphertext"}
    assert sealer.open(decoded, topic=TOPIC, field="name") == "Luna Adalyn"


def test_after_erasure_the_key_is_in_none_of_the_store_files_nor_in_any_cache(tmp_path: Path) -> None:
    keys = store(tmp_path)
    other_process = store(tmp_path)  # a second connection to the same file, as another process holds one
    sealer = Sealer(keys)
    sealed = sealer.seal("dede@hotmail.fr", owner="hh_00000000000000aa", topic=TOPIC, field="email")
    Sealer(other_process).seal("kept@example.org", owner="hh_00000000000000bb", topic=TOPIC, field="email")
    key = keys.key_for("hh_00000000000000aa")
    wrapped = raw_key_of(keys.path, "hh_00000000000000aa")
    assert Sealer(other_process).open(sealed, topic=TOPIC, field="email") == "dede@hotmail.fr"
    assert other_process.cached("hh_00000000000000aa")
    assert found_in_files(files_of(keys.path), wrapped)  # the search finds the key while it exists

    assert keys.forget(["hh_00000000000000aa"], erased_ms=1_700_000_000_000) == ["hh_00000000000000aa"]

    assert not keys.cached("hh_00000000000000aa")
    with pytest.raises(KeyErased):
        Sealer(other_process).open(sealed, topic=TOPIC, field="email")  # its cache was dropped too
    assert not other_process.cached("hh_00000000000000aa")
    assert Sealer(other_process).open_or_none(sealed, topic=TOPIC, field="email") is None
    paths = files_of(keys.path)
    assert {p.name for p in paths} >= {"keys.db", "keys.db-wal"}
    assert found_in_files(paths, wrapped) == []
    assert found_in_files(paths, key) == []
    # The other household kept its key; the erased one never gets a new one.
    assert keys.owners() == ["hh_00000000000000bb"]
    with pytest.raises(KeyErased):
        sealer.seal("new@example.org", owner="hh_00000000000000aa", topic=TOPIC, field="email")


async def test_a_restored_key_store_forgets_again_when_the_erasures_are_replayed(
    tmp_path: Path, broker: dict[str, object]
) -> None:
    import shutil

    settings = isolated_settings(tmp_path / "state", broker)
    await ensure_topics(settings, [topics.PRIVACY_ERASURES])
    keys = store(tmp_path / "live")
    sealed = Sealer(keys).seal("0701020304", owner="hh_0123456789abcdef", topic=TOPIC, field="phone")
    keys.close()
    backup = tmp_path / "backup"
    shutil.copytree(tmp_path / "live", backup)  # a backup taken before the erasure

    live = store(tmp_path / "live")
    live.forget(["hh_0123456789abcdef"], erased_ms=1_700_000_000_000)
    await publish_erasure(settings, "hh_0123456789abcdef", 1_700_000_000_000)
    live.close()

    restored = KeyStore(backup / "keys.db", KEK)
    assert Sealer(restored).open(sealed, topic=TOPIC, field="phone") == "0701020304"  # the backup has it
    assert await replay_erasures(settings, restored) == ["hh_0123456789abcdef"]
    with pytest.raises(KeyErased):
        Sealer(restored).open(sealed, topic=TOPIC, field="phone")
    assert restored.is_erased("hh_0123456789abcdef")
    assert await replay_erasures(settings, restored) == []  # idempotent
    record = events.DataKeyErased(owner="hh_0123456789abcdef", erased_ms=1_700_000_000_000)
    assert set(msgspec.structs.asdict(record)) == {"v", "owner", "erased_ms"}  # nothing personal
