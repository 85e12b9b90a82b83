"""Which offset of ``accounts.events`` each serving process has applied, for a writer to wait on.

Every :class:`~accounts.service.AccountsService` that follows the log (an API process) keeps a row in
``accounts_follower`` of the accounts database: its id, the next offset its in-memory state reflects,
and when it last said so (every follow interval, even with nothing new). It registers before it folds
the log at start (at offset 0, so a process still starting counts as behind) and removes its row
when it stops.

:func:`wait_applied` is what a writer calls when its append must be in effect everywhere before it
says so (the erasure saga, before ``erasure_completed``: no process may still authenticate the erased
accounts). It returns once every live follower has applied the offset. A follower not heard from
for ``STALE_MS`` is taken for a process that died without removing its row (``kill -9``) and not
waited for: it no longer serves.

Not a projection of the log (``ReadModel.rebuild`` leaves the table alone); no personal data.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import time

from sqlalchemy import Engine, delete, select
from sqlmodel import Field, SQLModel

from quartier.sql import BigInt, upsert

#: A follower silent for this long (ten default follow intervals) is a process that died.
STALE_MS = 10_000


class FollowerRow(SQLModel, table=True):
    __tablename__ = "accounts_follower"
    follower: str = Field(primary_key=True)  # host:pid:random, nothing personal
    next_offset: int = Field(sa_type=BigInt)
    seen_ms: int = Field(sa_type=BigInt)


TABLES = [FollowerRow.__table__]  # type: ignore[attr-defined]


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def new_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def report(engine: Engine, follower: str, next_offset: int, now_ms: int) -> None:
    with engine.begin() as connection:
        upsert(connection, FollowerRow.__table__, [  # type: ignore[attr-defined]
            {"follower": follower, "next_offset": next_offset, "seen_ms": now_ms}])


def forget(engine: Engine, follower: str) -> None:
    with engine.begin() as connection:
        connection.execute(delete(FollowerRow).where(FollowerRow.follower == follower))  # type: ignore[arg-type]


def behind(engine: Engine, next_offset: int, now_ms: int) -> dict[str, int]:
    """The live followers that have not applied every offset before ``next_offset``: id -> their next offset."""
    with engine.connect() as connection:
        rows = connection.execute(select(FollowerRow.follower, FollowerRow.next_offset).where(  # type: ignore[call-overload]
            FollowerRow.next_offset < next_offset, FollowerRow.seen_ms >= now_ms - STALE_MS))
        return {follower: offset for follower, offset in rows}


async def wait_applied(engine: Engine, next_offset: int, *, timeout_s: float = 30.0, poll_s: float = 0.05,
                       clock=wall_ms) -> None:  # type: ignore[no-untyped-def]
    """Returns once every live follower's state reflects the log up to ``next_offset`` (exclusive);
    raises ``TimeoutError`` naming those still behind after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    await asyncio.to_thread(SQLModel.metadata.create_all, engine, tables=TABLES)
    while waiting := await asyncio.to_thread(behind, engine, next_offset, clock()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"accounts followers still before offset {next_offset}: {waiting}")
        await asyncio.sleep(poll_s)
