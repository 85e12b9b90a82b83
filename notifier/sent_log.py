"""The persisted record of what was sent, keyed by (alert id, state, channel, recipient).

Two parts, so that the window between "the provider accepted it" and "we recorded it" is a few
microseconds, not a batch:

- the **journal**: an append-only file a channel writes one line to the moment a provider accepts
  a message (one ``write`` to a file opened with O_APPEND, so lines from the push threads and the
  push worker processes never interleave); it survives the process being killed (the kernel has the bytes), not a power cut;
- the **table** ``notifier_sent``: the record stage writes every sent key at the end of a batch,
  before the Kafka offsets are committed. At start, what the journal holds is merged into the
  table, then the journal is emptied.

A replayed or re-consumed alert transition finds its key here and is not sent again (the
Alertmanager notification-log idea). Recipients are hashes, never addresses.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import msgspec
from sqlalchemy import Engine, tuple_
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Field, Session, SQLModel, select

from quartier.sql import BigInt


class SentNotification(SQLModel, table=True):
    __tablename__ = "notifier_sent"

    alert_id: str = Field(primary_key=True)
    alert_state: str = Field(primary_key=True)
    channel: str = Field(primary_key=True)
    recipient: str = Field(primary_key=True)
    provider_id: str | None = None
    sent_ms: int = Field(default=0, sa_type=BigInt)


TABLES = (SentNotification,)

#: SQLite allows 32,766 bound parameters; four per key leaves room.
_CHUNK = 5000
#: The journal is emptied after a batch once it is larger than this.
_ROTATE_BYTES = 4 << 20


class SentKey(NamedTuple):
    alert_id: str
    alert_state: str
    channel: str
    recipient: str


class JournalInUse(RuntimeError):
    pass


class SentJournal:
    """Append-only lines ``[alert_id, state, channel, recipient, provider_id, sent_ms]``."""

    def __init__(self, path: Path, exclusive: bool = True) -> None:
        """``exclusive=False`` only for a worker process of the notifier that holds the lock (its
        push senders): they append their own lines, and never empty the journal."""
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        if not exclusive:
            self._encoder = msgspec.json.Encoder()
            self._rotate = threading.Lock()
            return
        try:
            # One notifier per journal: a second one would empty lines the first still needs.
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise JournalInUse(f"{path} is in use by another notifier (one per state directory)") from None
        self._encoder = msgspec.json.Encoder()
        self._rotate = threading.Lock()

    def note(self, keys: Iterable[SentKey], provider_id: str | None) -> None:
        """Called from any thread right after a provider accepted a message."""
        now = int(time.time() * 1000)
        data = b"".join(self._encoder.encode([*key, provider_id, now]) + b"\n" for key in keys)
        with self._rotate:
            os.write(self._fd, data)

    def read(self) -> list[tuple[SentKey, str | None, int]]:
        return self.read_path(self.path)

    @staticmethod
    def read_path(path: Path) -> list[tuple[SentKey, str | None, int]]:
        out = []
        for line in path.read_bytes().splitlines():
            try:
                alert_id, state, channel, recipient, provider_id, sent_ms = msgspec.json.decode(line)
            except (msgspec.DecodeError, ValueError):
                continue  # a line cut short by a crash: its send was never confirmed to anyone
            out.append((SentKey(alert_id, state, channel, recipient), provider_id, sent_ms))
        return out

    def empty_if_large(self, limit: int = _ROTATE_BYTES) -> None:
        """Empties the journal; only call when everything in it is in the table."""
        with self._rotate:
            if os.fstat(self._fd).st_size > limit:
                os.ftruncate(self._fd, 0)

    def close(self) -> None:
        os.close(self._fd)


class SentLog:
    def __init__(self, engine: Engine, journal: SentJournal | None = None) -> None:
        self.engine = engine
        self.journal = journal

    def recover(self) -> int:
        """Merges what the journal holds (sends a killed process had not recorded) into the
        table, then empties it. Returns how many lines were recovered."""
        if self.journal is None:
            return 0
        lines = self.journal.read()
        by_key = {key: provider_id for key, provider_id, _ in lines}
        self.record(by_key.items())
        self.journal.empty_if_large(0)
        return len(lines)

    def already_sent(self, keys: Iterable[SentKey]) -> set[SentKey]:
        wanted = list(set(keys))
        found: set[SentKey] = set()
        columns = tuple_(
            SentNotification.alert_id,  # type: ignore[arg-type]
            SentNotification.alert_state,  # type: ignore[arg-type]
            SentNotification.channel,  # type: ignore[arg-type]
            SentNotification.recipient,  # type: ignore[arg-type]
        )
        with Session(self.engine) as session:
            for start in range(0, len(wanted), _CHUNK):
                chunk = wanted[start : start + _CHUNK]
                rows = session.exec(select(*columns.clauses).where(columns.in_(chunk)))  # type: ignore[call-overload]
                found.update(SentKey(*row) for row in rows)
        return found

    def record(self, sent: Iterable[tuple[SentKey, str | None]]) -> None:
        """Notes successful sends (key, provider message id); recording one twice is harmless."""
        now = int(time.time() * 1000)
        rows = [{**key._asdict(), "provider_id": provider_id, "sent_ms": now} for key, provider_id in sent]
        if not rows:
            return
        table = SentNotification.__table__  # type: ignore[attr-defined]
        insert = postgresql_insert if self.engine.dialect.name == "postgresql" else sqlite_insert
        with Session(self.engine) as session:
            session.execute(insert(table).on_conflict_do_nothing(), rows)
            session.commit()
