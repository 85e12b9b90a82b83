"""The privacy package's database: SQLite under the state directory by default, PostgreSQL by URL.

On SQLite, ``secure_delete`` is on (a deleted row's bytes are overwritten, not left in free pages), and
each transaction begins ``IMMEDIATE``: the access log's appends from several processes are serialised
by the database's write lock, so the chain never forks.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, event
from sqlmodel import SQLModel, create_engine

from quartier.settings import Settings


def privacy_engine(settings: Settings, tables: list[Any]) -> Engine:
    """The engine of ``settings``' privacy database, with ``tables`` (SQLModel classes) created."""
    url = settings.sqlite_url("privacy")
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(connection: Any, _record: Any) -> None:
            connection.isolation_level = None  # SQLAlchemy's BEGIN below, not pysqlite's deferred one
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA secure_delete=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin(connection: Any) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        engine = create_engine(url, pool_pre_ping=True)
    SQLModel.metadata.create_all(engine, tables=[t.__table__ for t in tables])
    return engine
