"""What the API answers: response models, read from state entities or read-model rows alike.

Each entity's view derives from its definition in :mod:`marketplace.state` (:func:`view_of`): the
fields, their types and descriptions; a view says only what it leaves out or shows differently.

Amounts are exact integers in millicents (thousandths of a euro cent: Wh x cents/kWh); energies in
Wh; times in Unix milliseconds UTC.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, computed_field, field_validator

import api.errors
import api.views

from marketplace.state import SLOT_MS, Offer, Order, Participant, Slot, Trade, Zone


class View(BaseModel):
    model_config = ConfigDict(from_attributes=True)


def _split(value: Any) -> Any:
    return [v for v in value.split(",") if v] if isinstance(value, str) else value


# The error shape is the API layer's (it was the market's first): re-exported for the market's modules.
FieldError = api.errors.FieldError
ErrorView = api.errors.ErrorView


class HealthView(BaseModel):
    status: str
    positions: dict[str, int] = Field(description="next offset of each market.events partition the state reflects")


def view_of(entity: type, **how: Any) -> Any:
    """:func:`api.views.view_of`, on the market's :class:`View` (read from entities or rows alike)."""
    return api.views.view_of(entity, base=View, **how)


class ZoneView(view_of(Zone)):  # type: ignore[misc]
    pass


class ZoneList(BaseModel):
    items: list[ZoneView]


class ParticipantView(view_of(Participant, types={"roles": list[str]}, docs={"roles": "consumer and/or producer"})):  # type: ignore[misc]
    _roles = field_validator("roles", mode="before")(_split)


class ParticipantList(BaseModel):
    items: list[ParticipantView]


class MeView(BaseModel):
    participant: str
    role: str
    registered: ParticipantView | None = Field(description="the market registration (null for an operator)")


class TokenView(BaseModel):
    participant: str
    role: str
    token: str = Field(description="shown once: only its hash is stored")


class OfferView(view_of(Offer, exclude=("seq",), types={"producer": str | None},  # type: ignore[misc]
                        docs={"producer": "the producer; null when shown to other participants"})):
    @computed_field  # type: ignore[prop-decorator]
    @property
    def slot_end_ms(self) -> int:
        return self.slot_start_ms + SLOT_MS

    @computed_field  # type: ignore[prop-decorator]
    @property
    def remaining_wh(self) -> int:
        return self.energy_wh - self.sold_wh if self.status == "open" else 0


class OfferList(BaseModel):
    items: list[OfferView]


class OrderView(view_of(Order, exclude=("seq",))):  # type: ignore[misc]
    pass


class OrderList(BaseModel):
    items: list[OrderView]


class TradeView(view_of(Trade, exclude=("updated_ms",))):  # type: ignore[misc]
    pass


class TradeList(BaseModel):
    items: list[TradeView]


class SlotView(view_of(Slot, exclude=("updated_ms",), types={"missing_meters": list[str]})):  # type: ignore[misc]
    _missing = field_validator("missing_meters", mode="before")(_split)


class SlotList(BaseModel):
    items: list[SlotView]


class SideBalance(BaseModel):
    contracted_wh: int
    contracted_millicents: int
    delivered_wh: int = Field(description="allocated from the meters so far")
    delivered_millicents: int
    settled_millicents: int = Field(description="confirmed on chain")


class BalanceView(BaseModel):
    participant: str
    bought: SideBalance
    sold: SideBalance
    net_millicents: int = Field(description="delivered sold minus delivered bought: positive means owed to the participant")
