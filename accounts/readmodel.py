"""The accounts' read models (SQL tables, SQLModel) and the queries other surfaces use.

The tables are the entities of :mod:`accounts.state` (defined there, once) plus the log position
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
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Field, Session, SQLModel

from accounts.state import (
    ENTITY_TYPES,
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
    next_offset: int


PROJECTION_TABLES: list[Table] = [m.__table__ for m in (*ENTITY_TYPES.values(), PositionRow)]  # type: ignore[attr-defined]
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

    def _upsert(self, connection: Any, table: Table, rows: list[dict[str, Any]]) -> None:
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
                table = ENTITY_TYPES[kind].__table__  # type: ignore[attr-defined]
                [key] = table.primary_key.columns
                connection.execute(table.delete().where(key.in_(keys)))
            for kind, rows in upserts.items():
                self._upsert(connection, ENTITY_TYPES[kind].__table__, rows)  # type: ignore[attr-defined]
            self._upsert(connection, PositionRow.__table__, [{"topic": _TOPIC, "next_offset": state.position}])  # type: ignore[attr-defined]

    def rebuild(self, state: AccountsState) -> None:
        """Replaces every read model with the entities of ``state`` (a fold of the whole log)."""
        SQLModel.metadata.drop_all(self.engine, tables=PROJECTION_TABLES)
        SQLModel.metadata.create_all(self.engine, tables=PROJECTION_TABLES)
        with self.engine.begin() as connection:
            for kind, table in state.tables().items():
                rows = [row(entity) for entity in table.values()]
                if rows:
                    connection.execute(ENTITY_TYPES[kind].__table__.insert(), rows)  # type: ignore[attr-defined]
            connection.execute(PositionRow.__table__.insert(), [{"topic": _TOPIC, "next_offset": state.position}])  # type: ignore[attr-defined]

    def dump(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every projection row, sorted: two read models are the same when their dumps are equal."""
        with self.engine.connect() as connection:
            return {table.name: sorted(tuple(r) for r in connection.execute(select(table))) for table in PROJECTION_TABLES}


# --- queries -----------------------------------------------------------------------------------------


def _session(rm: ReadModel) -> Session:
    return Session(rm.engine, expire_on_commit=False)


def account(rm: ReadModel, account_id: str) -> Account | None:
    with _session(rm) as session:
        return session.get(Account, account_id)


def account_by_email(rm: ReadModel, email: str) -> Account | None:
    with _session(rm) as session:
        return session.exec(select(Account).where(Account.email == email.strip().lower())).scalars().first()  # type: ignore[call-overload]


def household(rm: ReadModel, household_id: str) -> Household | None:
    with _session(rm) as session:
        return session.get(Household, household_id)


def household_of_meter(rm: ReadModel, meter: str) -> Household | None:
    with _session(rm) as session:
        return session.exec(select(Household).where(Household.meter == meter)).scalars().first()  # type: ignore[call-overload]


def members(rm: ReadModel, household_id: str) -> list[Account]:
    with _session(rm) as session:
        return list(session.exec(select(Account).where(Account.household == household_id).order_by(Account.account)).scalars())  # type: ignore[call-overload]


def paired_meters(rm: ReadModel) -> dict[str, tuple[str, str]]:
    with rm.engine.connect() as connection:
        rows = connection.execute(select(Household.meter, Household.household, Household.zone).where(Household.meter != None))  # type: ignore[call-overload]  # noqa: E711
        return {meter: (hh, zone) for meter, hh, zone in rows}


def devices(rm: ReadModel, household_id: str) -> list[Device]:
    with _session(rm) as session:
        return list(session.exec(select(Device).where(Device.household == household_id).order_by(Device.device)).scalars())  # type: ignore[call-overload]


def preferences(rm: ReadModel, household_id: str) -> list[Preferences]:
    with _session(rm) as session:
        return list(session.exec(select(Preferences).where(Preferences.household == household_id).order_by(Preferences.account)).scalars())  # type: ignore[call-overload]


def market_participants(rm: ReadModel) -> list[Household]:
    with _session(rm) as session:
        return list(session.exec(select(Household).where(Household.market_roles != "").order_by(Household.household)).scalars())  # type: ignore[call-overload]
