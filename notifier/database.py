"""The notifier's database: SQLite under the state directory by default, PostgreSQL by URL."""

from __future__ import annotations

from sqlalchemy import Engine, event
from sqlmodel import SQLModel, create_engine

from notifier import contacts, pending, sent_log
from quartier.settings import Settings


def notifier_engine(settings: Settings) -> Engine:
    """The engine for ``settings`` with the notifier's tables created (idempotent)."""
    url = settings.sqlite_url("notifier")
    engine = create_engine(url)
    if url.startswith("sqlite"):
        # WAL lets the CLI register contacts while a running notifier reads and writes.
        event.listen(engine, "connect", _sqlite_pragmas)
    SQLModel.metadata.create_all(engine, tables=[t.__table__ for t in (*contacts.TABLES, *sent_log.TABLES, *pending.TABLES)])
    return engine


def _sqlite_pragmas(connection: object, _record: object) -> None:
    cursor = connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    # WAL with synchronous=NORMAL survives a killed process (not a power cut) and commits without
    # an fsync each time; the notifier commits once per batch.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
