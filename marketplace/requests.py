"""What clients send: the request bodies and query strings of the API, as pydantic models.

The same models validate requests and generate the OpenAPI document, so the documentation and the
validation cannot drift. Bodies are strict (JSON types as declared, no coercion) and every model
forbids unknown fields. Optional fields are left out, never sent as null: the schema says so, and
an explicit null is rejected with the field's name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

import api.bounds

ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
MarketId = Annotated[str, Field(min_length=1, max_length=64, pattern=ID_PATTERN)]
ZoneId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
MeterId = Annotated[str, Field(pattern=r"^[0-9]{12}$", description="Linky meter address (ADSC), 12 digits")]
EpochMs = Annotated[int, Field(ge=0, le=10**14, description="Unix time in milliseconds, UTC")]
SlotStart = Annotated[
    int, Field(ge=0, le=10**14, multiple_of=900_000, description="start of a 15-minute slot, Unix ms, UTC")
]
EnergyWh = Annotated[int, Field(gt=0, le=1_000_000_000, description="watt-hours")]
Price = Annotated[int, Field(ge=0, le=100_000, description="euro cents per kWh")]
Mechanism = Literal["bilateral", "pay_as_bid", "pay_as_clear"]
MarketRole = Literal["producer", "consumer"]
Role = Literal["producer", "consumer", "operator"]


if TYPE_CHECKING:
    Opt = Optional
else:

    class Opt:
        """``Opt[T]``: a field that may be left out but is never null.

        At run time the annotation is ``T`` itself, with ``None`` as an unvalidated default, so the
        schema lists only ``T`` and an explicit null fails as "a valid integer" (or string) would.
        """

        def __class_getitem__(cls, annotation: Any) -> Any:
            return annotation


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# Query strings are text: numbers are parsed (lax), unknown parameters still rejected.
Query = api.bounds.Query


# --- operator -------------------------------------------------------------------------------


class ZoneConfig(Body):
    """How a zone trades. Applies to slots that have no offer or order yet."""

    mechanism: Mechanism
    # Default 600: the trades of a closed slot go on chain before the chain's own gate (300 s by default).
    gate_closure_s: int = Field(600, ge=0, le=86_400, description="trading on a slot stops this long before it")
    min_lot_wh: int = Field(1, ge=1, le=1_000_000, description="smallest quantity an offer, order or match may have")


class ParticipantRegistration(Body):
    participant: MarketId
    zone: ZoneId
    meter: MeterId
    roles: list[MarketRole] = Field(min_length=1, max_length=2, json_schema_extra={"uniqueItems": True})
    capacity_w: int = Field(
        0, ge=0, le=1_000_000, description="peak output of a producer's installation; caps its offers"
    )


class TokenRequest(Body):
    role: Role


# --- producers ------------------------------------------------------------------------------


class OfferListing(Body):
    """Offers the same energy and price in every 15-minute slot of a window, in one call."""

    zone: Opt[ZoneId] = Field(None, description="the producer's zone (checked if given)")
    slot_start_ms: SlotStart
    slot_end_ms: Opt[SlotStart] = Field(
        None, description="end of the window (exclusive); default: one slot; at most 96 slots"
    )
    energy_wh_per_slot: EnergyWh
    price_cents_per_kwh: Price


class OfferAmendment(Body):
    """New energy and/or price of an open offer (it then loses its time priority)."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1})

    energy_wh: Opt[EnergyWh] = None
    price_cents_per_kwh: Opt[Price] = None


# --- consumers ------------------------------------------------------------------------------


class Purchase(Body):
    """Buys all (``energy_wh`` left out) or part of one offer, at its price."""

    offer_id: MarketId
    energy_wh: Opt[EnergyWh] = None


class BidRequest(Body):
    """A bid for a zone's auction: up to ``energy_wh`` at no more than ``price_cents_per_kwh``."""

    zone: Opt[ZoneId] = Field(None, description="the consumer's zone (checked if given)")
    slot_start_ms: SlotStart
    energy_wh: EnergyWh
    price_cents_per_kwh: Price


# --- queries --------------------------------------------------------------------------------


class Page(Query):
    limit: int = Field(100, ge=1, le=1000)
    offset: int = Field(0, ge=0, le=1_000_000_000)


class OfferQuery(Page):
    zone: Opt[ZoneId] = None
    slot_start_ms: Opt[SlotStart] = None
    status: Opt[Literal["open", "withdrawn", "closed"]] = None


class OrderQuery(Page):
    zone: Opt[ZoneId] = None
    slot_start_ms: Opt[SlotStart] = None
    status: Opt[Literal["open", "filled", "partially_filled", "unfilled", "cancelled"]] = None


class TradeQuery(Page):
    zone: Opt[ZoneId] = None
    slot_start_ms: Opt[SlotStart] = None


class SlotQuery(Page):
    zone: Opt[ZoneId] = None
    status: Opt[Literal["open", "closed", "allocated", "submitted", "confirmed"]] = None


class ParticipantQuery(Page):
    zone: Opt[ZoneId] = None


class BalanceQuery(Query):
    participant: Opt[MarketId] = Field(None, description="operator only: whose balance")


NoQuery = api.bounds.NoQuery


# --- path parameters ------------------------------------------------------------------------


class OfferPath(Query):
    offer_id: MarketId


class OrderPath(Query):
    order_id: MarketId


class ParticipantPath(Query):
    participant: MarketId


class ZonePath(Query):
    zone: ZoneId


class SlotPath(Query):
    zone: ZoneId
    slot_start_ms: SlotStart
