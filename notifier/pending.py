"""Notifications waiting for a later time: held through quiet hours, or waiting to be tried again.

One row per (alert id, state, channel, recipient), so a replayed alert finds its key here as it
would in the sent log. Rows of one grouped message share a ``group_id`` and go out together again.
The service releases due rows into the send stages; the record stage deletes a row in the same
step that records its outcome.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from zoneinfo import ZoneInfo

import msgspec
from sqlalchemy import Engine, delete, tuple_
from sqlmodel import Field, Session, SQLModel, select

from quartier.events import AlertEvent
from quartier.sql import BigInt
from notifier.notification import Notification
from notifier.sent_log import SentKey

HOLD_QUIET_HOURS = "quiet_hours"
HOLD_RETRY = "retry"


class PendingNotification(SQLModel, table=True):
    __tablename__ = "notifier_pending"

    alert_id: str = Field(primary_key=True)
    alert_state: str = Field(primary_key=True)
    channel: str = Field(primary_key=True)
    recipient: str = Field(primary_key=True)
    group_id: str | None = None
    user_id: str = ""
    address: str = ""
    language: str = "fr"
    time_zone: str = "Europe/Paris"
    alert: bytes = b""  # the AlertEvent as JSON
    attempts: int = 0
    due_ms: int = Field(default=0, index=True, sa_type=BigInt)
    hold: str = HOLD_RETRY
    reason: str | None = None


TABLES = (PendingNotification,)

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(AlertEvent)
_COLUMNS = tuple_(
    PendingNotification.alert_id,  # type: ignore[arg-type]
    PendingNotification.alert_state,  # type: ignore[arg-type]
    PendingNotification.channel,  # type: ignore[arg-type]
    PendingNotification.recipient,  # type: ignore[arg-type]
)
_CHUNK = 5000


class PendingStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def hold(self, notifications: Sequence[tuple[Notification, int, str, str | None]]) -> None:
        """Keeps (notification, due ms, hold, reason) until due; replaces rows with the same keys."""
        with Session(self.engine) as session:
            for notification, due_ms, hold, reason in notifications:
                group_id = uuid.uuid4().hex if notification.grouped else None
                for alert, key in zip(notification.alerts, notification.keys):
                    session.merge(
                        PendingNotification(
                            **key._asdict(), group_id=group_id, user_id=notification.user,
                            address=notification.address, language=notification.language,
                            time_zone=notification.zone.key, alert=_encoder.encode(alert),
                            attempts=notification.attempts, due_ms=due_ms, hold=hold, reason=reason,
                        )
                    )
            session.commit()

    def pending(self, keys: Iterable[SentKey]) -> dict[SentKey, PendingNotification]:
        wanted = list(set(keys))
        found: dict[SentKey, PendingNotification] = {}
        with Session(self.engine) as session:
            for start in range(0, len(wanted), _CHUNK):
                for row in session.exec(select(PendingNotification).where(_COLUMNS.in_(wanted[start : start + _CHUNK]))):
                    found[SentKey(row.alert_id, row.alert_state, row.channel, row.recipient)] = row
        return found

    def forget(self, keys: Iterable[SentKey]) -> None:
        wanted = list(set(keys))
        if not wanted:
            return
        with Session(self.engine) as session:
            for start in range(0, len(wanted), _CHUNK):
                session.exec(delete(PendingNotification).where(_COLUMNS.in_(wanted[start : start + _CHUNK])))  # type: ignore[call-overload]
            session.commit()

    def due(self, now_ms: int, channels: Iterable[str] = ("push", "email"), limit: int = 2000) -> list[Notification]:
        """Notifications on ``channels`` whose time has come, grouped messages rebuilt whole."""
        with Session(self.engine) as session:
            rows = list(
                session.exec(
                    select(PendingNotification)
                    .where(PendingNotification.due_ms <= now_ms, PendingNotification.channel.in_(list(channels)))  # type: ignore[attr-defined]
                    .order_by(PendingNotification.due_ms)  # type: ignore[arg-type]
                    .limit(limit)
                )
            )
        groups: dict[str, list[PendingNotification]] = {}
        singles: list[PendingNotification] = []
        for row in rows:
            (groups.setdefault(row.group_id, []) if row.group_id else singles).append(row)
        out = [_notification([row]) for row in singles]
        out += [_notification(members) for members in groups.values()]
        return out

    def count(self) -> int:
        with Session(self.engine) as session:
            return len(list(session.exec(select(PendingNotification.alert_id))))


def _notification(rows: list[PendingNotification]) -> Notification:
    first = rows[0]
    return Notification(
        alerts=tuple(_decoder.decode(row.alert) for row in rows),
        channel=first.channel,  # type: ignore[arg-type]
        address=first.address,
        language="en" if first.language == "en" else "fr",
        user=first.user_id,
        zone=ZoneInfo(first.time_zone),
        attempts=first.attempts,
        held=True,
        recipient=first.recipient,
    )
