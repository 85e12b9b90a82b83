"""The read models: SQL tables (SQLModel) that mirror the market state's entities, for queries.

They are a projection of ``market.events`` and nothing else: each row is a snapshot of one entity of
:class:`marketplace.state.MarketState`, written after its events were appended (in the same
transaction as the log position it reflects), and ``rebuild`` drops them and writes them again from
a fresh fold of the whole log. Rows are whole snapshots, so writing one twice changes nothing.

SQLite by default (``Settings.sqlite_url("market")``), PostgreSQL by ``QUARTIER_DATABASE_URL``.
Each table derives from its entity in :mod:`marketplace.state` (:func:`table_of`): the entity is
defined once. The API tokens live in the same database but are not a projection (they never go on the log):
``rebuild`` leaves them alone.
"""

from __future__ import annotations

import types
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import fields
from typing import Any, get_type_hints

from sqlalchemy import Engine, Table, create_engine, delete, event, select
from sqlmodel import Field, SQLModel

from quartier.sql import BigInt, upsert

from marketplace.state import (EntityKind, EntityRef, MarketState, Offer, Order, Participant, Slot, Trade, Zone,
                               row)


def table_of(entity: type, name: str, *, key: tuple[str, ...], indexes: tuple[str, ...] = ()) -> Any:
    """The SQLModel table of a state entity: a column per field of the entity, of its type (nullable
    where the entity allows None), in its order; the key and indexes are the read model's choice."""
    hints = get_type_hints(entity)
    namespace: dict[str, Any] = {"__tablename__": name, "__module__": __name__, "__annotations__": {}}
    for column in fields(entity):
        hint = namespace["__annotations__"][column.name] = hints[column.name]
        wide = {"sa_type": BigInt} if hint in (int, int | None) else {}
        if column.name in key or column.name in indexes or wide:
            namespace[column.name] = Field(primary_key=column.name in key, index=column.name in indexes, **wide)
    return types.new_class(f"{entity.__name__}Row", (SQLModel,), {"table": True}, lambda ns: ns.update(namespace))


ZoneRow = table_of(Zone, "market_zone", key=("zone",))
ParticipantRow = table_of(Participant, "market_participant", key=("participant",), indexes=("zone", "meter"))
SlotRow = table_of(Slot, "market_slot", key=("zone", "slot_start_ms"), indexes=("slot_start_ms", "status"))
OfferRow = table_of(Offer, "market_offer", key=("offer_id",), indexes=("producer", "zone", "slot_start_ms"))
OrderRow = table_of(Order, "market_order", key=("order_id",), indexes=("consumer", "zone", "slot_start_ms"))
TradeRow = table_of(Trade, "market_trade", key=("trade_id",),
                    indexes=("zone", "slot_start_ms", "producer", "consumer"))


class PositionRow(SQLModel, table=True):
    """The next offset of each market.events partition that the read models reflect."""

    __tablename__ = "market_position"
    partition: int = Field(primary_key=True)
    next_offset: int = Field(sa_type=BigInt)


class ApiTokenRow(SQLModel, table=True):
    """A bearer token's hash (never the token), scoped to one participant and role."""

    __tablename__ = "market_api_token"
    token_hash: str = Field(primary_key=True)
    participant: str = Field(index=True)
    role: str
    created_ms: int = Field(sa_type=BigInt)


MODELS: dict[EntityKind, type[SQLModel]] = {
    "zone": ZoneRow,
    "participant": ParticipantRow,
    "slot": SlotRow,
    "offer": OfferRow,
    "order": OrderRow,
    "trade": TradeRow,
}
PROJECTION_TABLES: list[Table] = [m.__table__ for m in (*MODELS.values(), PositionRow)]  # type: ignore[attr-defined]


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        # Reads run in worker threads while the writer runs in its own: connections move between threads.
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(connection: Any, _record: Any) -> None:
            cursor = connection.cursor()
            # WAL lets queries read while the projector writes; NORMAL is durable across crashes of
            # the process (the log, not this file, is the record of truth anyway).
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


class ReadModel:
    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        SQLModel.metadata.create_all(self.engine, tables=[*PROJECTION_TABLES, ApiTokenRow.__table__])  # type: ignore[attr-defined]

    def close(self) -> None:
        self.engine.dispose()

    def positions(self) -> dict[int, int]:
        with self.engine.connect() as connection:
            return {p: o for p, o in connection.execute(select(PositionRow.partition, PositionRow.next_offset))}  # type: ignore[call-overload]

    def write(self, rows: Mapping[EntityKind, list[dict[str, Any]]], positions: Mapping[int, int]) -> None:
        """Upserts entity snapshots and the log positions they reflect, in one transaction."""
        with self.engine.begin() as connection:
            for kind, kind_rows in rows.items():
                upsert(connection, MODELS[kind].__table__, kind_rows)  # type: ignore[attr-defined]
            upsert(
                connection, PositionRow.__table__,  # type: ignore[attr-defined]
                [{"partition": p, "next_offset": o} for p, o in sorted(positions.items())],
            )

    def rebuild(self, state: MarketState, chunk: int = 5000) -> None:
        """Replaces every read model with the entities of ``state`` (a fold of the whole log)."""
        SQLModel.metadata.drop_all(self.engine, tables=PROJECTION_TABLES)
        SQLModel.metadata.create_all(self.engine, tables=PROJECTION_TABLES)
        with self.engine.begin() as connection:
            batch: dict[EntityKind, list[dict[str, Any]]] = defaultdict(list)
            for ref in state.all_entities():
                batch[ref[0]].append(row(ref[0], state.entity(ref)))
                if len(batch[ref[0]]) >= chunk:
                    connection.execute(MODELS[ref[0]].__table__.insert(), batch.pop(ref[0]))  # type: ignore[attr-defined]
            for kind, rows in batch.items():
                connection.execute(MODELS[kind].__table__.insert(), rows)  # type: ignore[attr-defined]
            positions = [{"partition": p, "next_offset": o} for p, o in sorted(state.positions.items())]
            if positions:
                connection.execute(PositionRow.__table__.insert(), positions)  # type: ignore[attr-defined]

    def dump(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every projection row, sorted: two read models are the same when their dumps are equal."""
        with self.engine.connect() as connection:
            return {
                table.name: sorted(tuple(r) for r in connection.execute(select(table)))
                for table in PROJECTION_TABLES
            }

    def delete_tokens(self, participant: str) -> int:
        with self.engine.begin() as connection:
            return connection.execute(delete(ApiTokenRow).where(ApiTokenRow.participant == participant)).rowcount  # type: ignore[arg-type]


def snapshot(state: MarketState, touched: Iterable[EntityRef]) -> dict[EntityKind, list[dict[str, Any]]]:
    """Rows of the touched entities, as they are now (each entity once)."""
    rows: dict[EntityKind, list[dict[str, Any]]] = defaultdict(list)
    for ref in dict.fromkeys(touched):
        rows[ref[0]].append(row(ref[0], state.entity(ref)))
    return rows
