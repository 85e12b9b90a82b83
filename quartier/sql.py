"""SQL helpers the read models share (accounts, the market, the notifier): one upsert for SQLite and
PostgreSQL, and one integer type wide enough for what they store."""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Integer, Table
from sqlalchemy.dialects import postgresql, sqlite

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
