"""The accounts' read models (SQL tables, SQLModel) and the queries other surfaces use.

The tables are derived from the entities of :mod:`accounts.state` (defined there, once) plus the log position
they reflect; they are a projection of ``accounts.events`` and nothing else. The service writes the
touched entities after each command, in one transaction with the position; ``quartier accounts
rebuild`` drops them and writes them again from a fresh fold of the whole log (a test compares).
SQLite under the state directory by default (``Settings.sqlite_url("accounts")``), PostgreSQL by
``QUARTIER_DATABASE_URL``. Sessions and refresh tokens (:mod:`accounts.sessions`) live in the same
database but are not a projection (never on the log): ``rebuild`` leaves them alone.

Queries for other packages (households, console, privacy, market): each takes a
:class:`ReadModel` (``ReadModel(settings.sqlite_url("accounts"))``, open one per process) and
returns detached rows, never live objects:

- ``account(rm, account_id)`` -> :class:`Account` | None: email, name, confirmation, household,
  household role, global roles.
- ``household(rm, household_id)`` -> :class:`Household` | None: the paired ``meter`` and its ``zone``,
  ``market_roles``, the contract (``tariff``, ``subscribed_kva``, ``billing_day``) and ``heating``
  (``electric`` or ``other``), as the owner set them (``PUT /v1/me/household/tariff``).
- ``household_of_meter(rm, meter)`` -> :class:`Household` | None: whose meter it is.
- ``members(rm, household_id)`` -> list of :class:`Account` (owner and members).
- ``paired_meters(rm)`` -> ``{meter: (household, zone)}``: every paired meter (the live fan-out).
- ``devices(rm, household_id)`` -> list of :class:`Device`; ``preferences(rm, household_id)`` ->
  list of :class:`Preferences` (one per member who set some).
- ``market_participants(rm)`` -> list of :class:`Household` with a market role (participant id =
  household id).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Engine, Table, create_engine, event, select
from sqlmodel import Field, SQLModel

from quartier.sql import BigInt, upsert

from accounts.state import (
    TABLES,
    Account,
    AccountsState,
    Device,
    EntityKind,
    EntityRef,
    Household,
    Preferences,
    row,
)


class PositionRow(SQLModel, table=True):
    """The next offset of accounts.events that the read models reflect."""

    __tablename__ = "accounts_position"
    topic: str = Field(primary_key=True)
    next_offset: int = Field(sa_type=BigInt)


PROJECTION_TABLES: list[Table] = [*TABLES.values(), PositionRow.__table__]  # type: ignore[attr-defined]
_TOPIC = "accounts.events"


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(connection: Any, _record: Any) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


class ReadModel:
    def __init__(self, url: str, extra_tables: Iterable[Table] = ()) -> None:
        self.engine = make_engine(url)
        SQLModel.metadata.create_all(self.engine, tables=[*PROJECTION_TABLES, *extra_tables])

    def close(self) -> None:
        self.engine.dispose()

    def position(self) -> int:
        with self.engine.connect() as connection:
            found = connection.execute(select(PositionRow.next_offset).where(PositionRow.topic == _TOPIC)).scalar()  # type: ignore[arg-type]
            return int(found or 0)

    def write(self, state: AccountsState, touched: Iterable[EntityRef]) -> None:
        """Writes the touched entities as they are now (deleting those gone) and the position, in one transaction."""
        upserts: dict[EntityKind, list[dict[str, Any]]] = defaultdict(list)
        deletes: dict[EntityKind, list[str]] = defaultdict(list)
        for ref in dict.fromkeys(touched):
            entity = state.entity(ref)
            if entity is None:
                deletes[ref[0]].append(ref[1])
            else:
                upserts[ref[0]].append(row(entity))
        with self.engine.begin() as connection:
            for kind, keys in deletes.items():
                table = TABLES[kind]
                [key] = table.primary_key.columns
                connection.execute(table.delete().where(key.in_(keys)))
            for kind, rows in upserts.items():
                upsert(connection, TABLES[kind], rows)
            upsert(connection, PositionRow.__table__, [{"topic": _TOPIC, "next_offset": state.position}])  # type: ignore[attr-defined]

    def rebuild(self, state: AccountsState) -> None:
        """Replaces every read model with the entities of ``state`` (a fold of the whole log)."""
        SQLModel.metadata.drop_all(self.engine, tables=PROJECTION_TABLES)
        SQLModel.metadata.create_all(self.engine, tables=PROJECTION_TABLES)
        with self.engine.begin() as connection:
            for kind, table in state.tables().items():
                rows = [row(entity) for entity in table.values()]
                if rows:
                    connection.execute(TABLES[kind].insert(), rows)
            connection.execute(PositionRow.__table__.insert(), [{"topic": _TOPIC, "next_offset": state.position}])  # type: ignore[attr-defined]

    def dump(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every projection row, sorted: two read models are the same when their dumps are equal."""
        with self.engine.connect() as connection:
            return {table.name: sorted(tuple(r) for r in connection.execute(select(table))) for table in PROJECTION_TABLES}


# --- queries -----------------------------------------------------------------------------------------


def _select(rm: ReadModel, cls: type, *where: Any, order: str | None = None) -> list[Any]:
    table = TABLES[next(k for k, t in TABLES.items() if t.name == cls.TABLE)]  # type: ignore[attr-defined]
    statement = select(table).where(*where)
    if order is not None:
        statement = statement.order_by(table.c[order])
    with rm.engine.connect() as connection:
        return [cls(**found._mapping) for found in connection.execute(statement)]


def _one(found: list[Any]) -> Any:
    return found[0] if found else None


def account(rm: ReadModel, account_id: str) -> Account | None:
    return _one(_select(rm, Account, TABLES["account"].c.account == account_id))


def account_by_email(rm: ReadModel, email: str) -> Account | None:
    return _one(_select(rm, Account, TABLES["account"].c.email == email.strip().lower()))


def household(rm: ReadModel, household_id: str) -> Household | None:
    return _one(_select(rm, Household, TABLES["household"].c.household == household_id))


def household_of_meter(rm: ReadModel, meter: str) -> Household | None:
    return _one(_select(rm, Household, TABLES["household"].c.meter == meter))


def members(rm: ReadModel, household_id: str) -> list[Account]:
    return _select(rm, Account, TABLES["account"].c.household == household_id, order="account")


def paired_meters(rm: ReadModel) -> dict[str, tuple[str, str]]:
    h = TABLES["household"].c
    with rm.engine.connect() as connection:
        rows = connection.execute(select(h.meter, h.household, h.zone).where(h.meter.is_not(None)))
        return {meter: (hh, zone) for meter, hh, zone in rows}


def devices(rm: ReadModel, household_id: str) -> list[Device]:
    return _select(rm, Device, TABLES["device"].c.household == household_id, order="device")


def preferences(rm: ReadModel, household_id: str) -> list[Preferences]:
    return _select(rm, Preferences, TABLES["preferences"].c.household == household_id, order="account")


def market_participants(rm: ReadModel) -> list[Household]:
    return _select(rm, Household, TABLES["household"].c.market_roles != "", order="household")
