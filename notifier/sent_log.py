"""The persisted record of what was sent, keyed by (alert id, state, channel, recipient).

It is written right after each successful send and before the Kafka offset is committed, so a
replayed or re-consumed alert transition finds its key here and is not sent again (the Alertmanager
notification-log idea). Recipients are hashes, never addresses.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import NamedTuple

from sqlalchemy import Engine, tuple_
from sqlmodel import Field, Session, SQLModel, select


class SentNotification(SQLModel, table=True):
    __tablename__ = "notifier_sent"

    alert_id: str = Field(primary_key=True)
    alert_state: str = Field(primary_key=True)
    channel: str = Field(primary_key=True)
    recipient: str = Field(primary_key=True)
    provider_id: str | None = None
    sent_ms: int = 0


TABLES = (SentNotification,)

#: SQLite allows 32,766 bound parameters; four per key leaves room.
_CHUNK = 5000


class SentKey(NamedTuple):
    alert_id: str
    alert_state: str
    channel: str
    recipient: str


class SentLog:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

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
                rows = session.exec(select(SentNotification).where(columns.in_(chunk)))
                found.update(SentKey(r.alert_id, r.alert_state, r.channel, r.recipient) for r in rows)
        return found

    def record(self, sent: Iterable[tuple[SentKey, str | None]]) -> None:
        """Notes successful sends (key, provider message id); recording one twice is harmless."""
        now = int(time.time() * 1000)
        with Session(self.engine) as session:
            for key, provider_id in sent:
                session.merge(SentNotification(**key._asdict(), provider_id=provider_id, sent_ms=now))
            session.commit()
