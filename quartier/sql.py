"""SQL the packages share: one upsert for the read models (accounts, the market) on SQLite and
PostgreSQL, one integer type wide enough for what every table stores, and the privacy database's
engine (the access log, in the core, and the privacy package).

On SQLite the privacy database has ``secure_delete`` on (a deleted row's bytes are overwritten, not
left in free pages), and each transaction begins ``IMMEDIATE``: the access log's appends from several
processes (the API's surfaces, the console, the privacy jobs) are serialised by the database's write
lock, so the chain never forks.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Engine, Integer, Table, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import SQLModel, create_engine

from quartier.settings import Settings

#: Every integer column: milliseconds since the epoch and log offsets pass 2**31 (PostgreSQL's
#: INTEGER is 32 bits; SQLite's is 64 whatever it is called, and only ``INTEGER PRIMARY KEY`` is the
#: rowid, hence the variant). Use as ``Field(sa_type=BigInt)``.
BigInt = BigInteger().with_variant(Integer(), "sqlite")


def upsert(connection: Any, table: Table, rows: list[dict[str, Any]]) -> None:
    """INSERT ... ON CONFLICT (primary key) DO UPDATE, on SQLite and PostgreSQL."""
    if not rows:
        return
    dialect = {"sqlite": sqlite, "postgresql": postgresql}.get(connection.dialect.name)
    if dialect is None:
        raise NotImplementedError(f"read models support SQLite and PostgreSQL, not {connection.dialect.name}")
    statement = dialect.insert(table)
    keys = [c.name for c in table.primary_key.columns]
    statement = statement.on_conflict_do_update(
        index_elements=keys, set_={c.name: statement.excluded[c.name] for c in table.columns if c.name not in keys},
    )
    connection.execute(statement, rows)


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
