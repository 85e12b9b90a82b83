"""Reads from the read models (never from the live state): lists with filters, and balances."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy import Engine, case, func
from sqlalchemy import select as core_select
from sqlmodel import Session, SQLModel, select

from marketplace.readmodel import TradeRow

M = TypeVar("M", bound=SQLModel)


def find(engine: Engine, model: type[M], where: Sequence[Any], order_by: Sequence[Any],
         limit: int = 100, offset: int = 0) -> list[Any]:
    """Rows of ``model``'s table (attribute access as on the model; the views read them as they read
    model instances). Core rows, not ORM instances: a listing page is read-only, and building an
    ORM instance per row cost most of a listing's time (bench.api)."""
    statement = core_select(model.__table__)  # type: ignore[attr-defined]
    for clause in where:
        statement = statement.where(clause)
    statement = statement.order_by(*order_by).offset(offset).limit(limit)
    with engine.connect() as connection:
        return list(connection.execute(statement).all())


def get(engine: Engine, model: type[M], key: Any) -> M | None:
    with Session(engine) as session:
        return session.get(model, key)


def balance(engine: Engine, participant: str) -> dict[str, dict[str, int]]:
    """Contracted, delivered and settled energy and money, as buyer and as seller."""
    delivered_wh = func.coalesce(func.sum(TradeRow.delivered_wh), 0)
    delivered_amount = func.coalesce(func.sum(TradeRow.delivered_amount_millicents), 0)
    settled = func.coalesce(func.sum(
        case((TradeRow.status == "confirmed", TradeRow.delivered_amount_millicents), else_=0)
    ), 0)
    columns = (
        func.coalesce(func.sum(TradeRow.energy_wh), 0),
        func.coalesce(func.sum(TradeRow.amount_millicents), 0),
        delivered_wh,
        delivered_amount,
        settled,
    )
    names = ("contracted_wh", "contracted_millicents", "delivered_wh", "delivered_millicents", "settled_millicents")
    sides = {}
    with Session(engine) as session:
        for side, column in (("bought", TradeRow.consumer), ("sold", TradeRow.producer)):
            values = session.exec(select(*columns).where(column == participant)).one()  # type: ignore[call-overload]
            sides[side] = {name: int(value) for name, value in zip(names, values)}
    return sides
