"""What the API answers: response models, read from state entities or read-model rows alike.

Amounts are exact integers in millicents (thousandths of a euro cent: Wh x cents/kWh); energies in
Wh; times in Unix milliseconds UTC.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, computed_field, field_validator

import api.errors

from marketplace.state import SLOT_MS


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


class ZoneView(View):
    zone: str
    mechanism: str
    gate_closure_s: int
    min_lot_wh: int
    configured_ms: int


class ZoneList(BaseModel):
    items: list[ZoneView]


class ParticipantView(View):
    participant: str
    zone: str
    meter: str
    roles: list[str]
    capacity_w: int
    registered_ms: int

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


class OfferView(View):
    offer_id: str
    producer: str | None = Field(description="the producer; null when shown to other participants")
    zone: str
    slot_start_ms: int
    energy_wh: int
    sold_wh: int
    price_cents_per_kwh: int
    status: str = Field(description="open, withdrawn or closed")
    listed_ms: int
    updated_ms: int

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


class OrderView(View):
    order_id: str
    consumer: str
    zone: str
    kind: str = Field(description="purchase (of one offer, filled at once) or bid (auction)")
    offer_id: str | None
    slot_start_ms: int
    energy_wh: int
    filled_wh: int
    price_cents_per_kwh: int = Field(description="the offer's price for a purchase, the limit for a bid")
    status: str = Field(description="open, filled, partially_filled, unfilled or cancelled")
    placed_ms: int
    updated_ms: int


class OrderList(BaseModel):
    items: list[OrderView]


class TradeView(View):
    trade_id: str
    zone: str
    slot_start_ms: int
    offer_id: str
    order_id: str
    producer: str
    consumer: str
    energy_wh: int
    price_cents_per_kwh: int
    amount_millicents: int = Field(description="contracted: energy_wh x price")
    delivered_wh: int | None = Field(description="decided by the meters after the slot; null until then")
    delivered_amount_millicents: int | None
    status: str = Field(description="contracted, allocated, submitted or confirmed (paid on chain)")
    tx_hash: str | None
    block: int | None
    traded_ms: int


class TradeList(BaseModel):
    items: list[TradeView]


class SlotView(View):
    zone: str
    slot_start_ms: int
    mechanism: str
    gate_ms: int
    min_lot_wh: int
    status: str = Field(description="open, closed, allocated, submitted or confirmed")
    clearing_price_cents_per_kwh: int | None
    traded_wh: int
    closed_ms: int | None
    allocation_complete: bool | None
    missing_meters: list[str]
    tx_hash: str | None
    block: int | None

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
