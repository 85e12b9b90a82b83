"""The command layer: a request is checked against the current state and becomes events.

Each function takes the state, who asks, what they ask and the time, and returns the events to
append (all of one zone), or raises :class:`Rejected` naming the field and the reason. Nothing here
appends or changes the state: :mod:`marketplace.commanding` appends the events and folds them in, one
command at a time per partition, so the state a command was checked against is the state its events
apply to.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Literal

from quartier import events as ev
from quartier.rejected import Rejected, conflict, forbidden, invalid, not_found  # noqa: F401  (commands raise them)

from marketplace import clearing, requests
from marketplace.clearing import Ask, Bid, PurchaseRejected
from marketplace.membership import is_household
from marketplace.state import SLOT_MS, MarketState, Offer, Order, Participant, Slot

#: How far ahead a slot may be traded.
HORIZON_MS = 7 * 24 * 3600 * 1000
#: Most slots one listing may cover (a day).
MAX_WINDOW_SLOTS = 96

Role = Literal["producer", "consumer", "operator"]


@dataclass(frozen=True, slots=True)
class Principal:
    participant: str
    role: Role

    @property
    def is_operator(self) -> bool:
        return self.role == "operator"


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(8)}"


def slot_of(ms: int) -> int:
    return ms - ms % SLOT_MS


# --- shared checks ----------------------------------------------------------------------------


def member(state: MarketState, principal: Principal, role: Role) -> Participant:
    """The registered participant behind a producer's or consumer's token."""
    if principal.role != role:
        raise forbidden(f"this needs a {role} token, not a {principal.role} token")
    participant = state.participants.get(principal.participant)
    if participant is None or not participant.has_role(role):
        raise forbidden(f"participant {principal.participant!r} is not registered as a {role}")
    return participant


def _zone_matches(participant: Participant, zone: str | None) -> None:
    if zone is not None and zone != participant.zone:
        raise invalid("zone", f"participant {participant.participant!r} trades in zone {participant.zone!r}, not {zone!r}")


def tradable_slot(state: MarketState, zone: str, slot_start_ms: int, now_ms: int, field: str) -> Slot | None:
    """Checks a slot can still be traded; returns it if it already exists."""
    if slot_start_ms % SLOT_MS:
        raise invalid(field, f"{slot_start_ms} is not the start of a 15-minute slot (a multiple of {SLOT_MS})")
    if slot_start_ms > now_ms + HORIZON_MS:
        raise invalid(field, f"slot {slot_start_ms} is more than {HORIZON_MS // 3_600_000} hours ahead")
    slot = state.slots.get((zone, slot_start_ms))
    if slot is not None:
        gate_ms = slot.gate_ms
        if slot.status != "open":
            raise conflict(field, f"slot {slot_start_ms} of zone {zone!r} is {slot.status}: trading has ended")
    else:
        gate_ms = slot_start_ms - state.zones[zone].gate_closure_s * 1000
    if now_ms >= gate_ms:
        raise conflict(field, f"gate closure for slot {slot_start_ms} of zone {zone!r} was at {gate_ms}: trading has ended")
    return slot


def _rules(state: MarketState, zone: str, slot: Slot | None) -> tuple[str, int]:
    """Mechanism and minimum lot of a slot (its own once open, else the zone's)."""
    if slot is not None:
        return slot.mechanism, slot.min_lot_wh
    config = state.zones[zone]
    return config.mechanism, config.min_lot_wh


def _capacity_wh(participant: Participant) -> int:
    # What the installation's peak power produces in one 15-minute slot.
    return participant.capacity_w * SLOT_MS // 3_600_000


def _own_offer(state: MarketState, principal: Principal, offer_id: str) -> Offer:
    producer = member(state, principal, "producer")
    offer = state.offers.get(offer_id)
    if offer is None or offer.producer != producer.participant:
        raise not_found("offer_id", f"no offer {offer_id!r} of yours")
    return offer


def _own_order(state: MarketState, principal: Principal, order_id: str) -> Order:
    consumer = member(state, principal, "consumer")
    order = state.orders.get(order_id)
    if order is None or order.consumer != consumer.participant:
        raise not_found("order_id", f"no order {order_id!r} of yours")
    return order


# --- operator -----------------------------------------------------------------------------------


def configure_zone(state: MarketState, principal: Principal, zone: str, body: requests.ZoneConfig,
                   now_ms: int) -> list[ev.ZoneConfigured]:
    if not principal.is_operator:
        raise forbidden("only the operator configures zones")
    return [ev.ZoneConfigured(zone=zone, mechanism=body.mechanism, gate_closure_s=body.gate_closure_s,
                              min_lot_wh=body.min_lot_wh, at_ms=now_ms)]


def register_participant(state: MarketState, principal: Principal, body: requests.ParticipantRegistration,
                         now_ms: int) -> list[ev.ParticipantRegistered]:
    if not principal.is_operator:
        raise forbidden("only the operator registers participants")
    if body.zone not in state.zones:
        raise conflict("zone", f"zone {body.zone!r} is not configured: PUT /v1/zones/{body.zone} first")
    if is_household(body.participant):
        raise conflict("participant", f"{body.participant!r} is a household: it takes part through its account's market "
                                      "roles (PUT /v1/me/household/market-roles), not by registration")
    if body.participant in state.participants:
        raise conflict("participant", f"participant {body.participant!r} is already registered")
    if body.meter in state.meters:
        raise conflict("meter", f"meter {body.meter} already belongs to participant {state.meters[body.meter]!r}")
    if len(set(body.roles)) != len(body.roles):
        raise invalid("roles", "each role may be given once")
    if "producer" in body.roles and body.capacity_w <= 0:
        raise invalid("capacity_w", "a producer needs the peak output of its installation (W), above 0")
    return [ev.ParticipantRegistered(participant=body.participant, zone=body.zone, meter=body.meter,
                                     roles=tuple(sorted(body.roles)), capacity_w=body.capacity_w, at_ms=now_ms)]


# --- producers ----------------------------------------------------------------------------------


def list_offers(state: MarketState, principal: Principal, body: requests.OfferListing,
                now_ms: int) -> list[ev.OfferListed]:
    producer = member(state, principal, "producer")
    _zone_matches(producer, body.zone)
    zone = producer.zone
    end = body.slot_end_ms if body.slot_end_ms is not None else body.slot_start_ms + SLOT_MS
    if end <= body.slot_start_ms:
        raise invalid("slot_end_ms", f"the window must end after it starts ({body.slot_start_ms})")
    if (end - body.slot_start_ms) // SLOT_MS > MAX_WINDOW_SLOTS:
        raise invalid("slot_end_ms", f"a listing covers at most {MAX_WINDOW_SLOTS} slots")
    capacity = _capacity_wh(producer)
    listed = []
    for start in range(body.slot_start_ms, end, SLOT_MS):
        slot = tradable_slot(state, zone, start, now_ms, "slot_start_ms")
        _, min_lot = _rules(state, zone, slot)
        if body.energy_wh_per_slot < min_lot:
            raise invalid("energy_wh_per_slot", f"below the zone's minimum lot of {min_lot} Wh")
        committed = state.committed_wh(producer.participant, start)
        if committed + body.energy_wh_per_slot > capacity:
            raise invalid(
                "energy_wh_per_slot",
                f"an installation of {producer.capacity_w} W produces at most {capacity} Wh in a slot; "
                f"{committed} Wh are already offered for slot {start}",
            )
        listed.append(ev.OfferListed(offer_id=new_id("of"), producer=producer.participant, zone=zone,
                                     slot_start_ms=start, energy_wh=body.energy_wh_per_slot,
                                     price_cents_per_kwh=body.price_cents_per_kwh, at_ms=now_ms))
    return listed


def amend_offer(state: MarketState, principal: Principal, offer_id: str, body: requests.OfferAmendment,
                now_ms: int) -> list[ev.OfferAmended]:
    if body.energy_wh is None and body.price_cents_per_kwh is None:
        raise invalid("energy_wh", "give energy_wh, price_cents_per_kwh or both")
    offer = _own_offer(state, principal, offer_id)
    if offer.status != "open":
        raise conflict("offer_id", f"offer {offer_id!r} is {offer.status}")
    slot = tradable_slot(state, offer.zone, offer.slot_start_ms, now_ms, "offer_id")
    assert slot is not None
    energy = offer.energy_wh if body.energy_wh is None else body.energy_wh
    if energy < offer.sold_wh:
        raise conflict("energy_wh", f"{offer.sold_wh} Wh of the offer are already sold")
    left = energy - offer.sold_wh
    if 0 < left < slot.min_lot_wh:
        raise invalid("energy_wh", f"would leave {left} Wh for sale, below the zone's minimum lot of {slot.min_lot_wh} Wh")
    producer = state.participants[offer.producer]
    committed = state.committed_wh(offer.producer, offer.slot_start_ms, excluding=offer_id)
    if committed + energy > _capacity_wh(producer):
        raise invalid(
            "energy_wh",
            f"an installation of {producer.capacity_w} W produces at most {_capacity_wh(producer)} Wh in a slot; "
            f"{committed} Wh are offered in other offers for slot {offer.slot_start_ms}",
        )
    price = offer.price_cents_per_kwh if body.price_cents_per_kwh is None else body.price_cents_per_kwh
    return [ev.OfferAmended(offer_id=offer_id, zone=offer.zone, energy_wh=energy, price_cents_per_kwh=price, at_ms=now_ms)]


def withdraw_offer(state: MarketState, principal: Principal, offer_id: str, now_ms: int) -> list[ev.OfferWithdrawn]:
    offer = _own_offer(state, principal, offer_id)
    if offer.status != "open":
        raise conflict("offer_id", f"offer {offer_id!r} is {offer.status}")
    tradable_slot(state, offer.zone, offer.slot_start_ms, now_ms, "offer_id")
    return [ev.OfferWithdrawn(offer_id=offer_id, zone=offer.zone, at_ms=now_ms)]


# --- consumers ----------------------------------------------------------------------------------


def purchase(state: MarketState, principal: Principal, body: requests.Purchase, now_ms: int) -> list[ev.OrderPlaced]:
    consumer = member(state, principal, "consumer")
    offer = state.offers.get(body.offer_id)
    # An offer of another zone does not exist for this consumer: same answer as an unknown one.
    if offer is None or offer.zone != consumer.zone or offer.status == "withdrawn":
        raise not_found("offer_id", f"no offer {body.offer_id!r} in zone {consumer.zone!r}")
    if offer.producer == consumer.participant:
        raise conflict("offer_id", "a participant cannot buy its own offer")
    slot = tradable_slot(state, offer.zone, offer.slot_start_ms, now_ms, "offer_id")
    assert slot is not None
    if slot.mechanism != "bilateral":
        raise conflict("offer_id", f"zone {offer.zone!r} clears by {slot.mechanism}: place a bid (POST /v1/bids)")
    try:
        quantity = clearing.purchase_quantity(offer.remaining_wh, body.energy_wh, min_lot_wh=slot.min_lot_wh)
    except PurchaseRejected as exc:
        raise conflict("energy_wh", str(exc)) from None
    return [ev.OrderPlaced(order_id=new_id("or"), consumer=consumer.participant, zone=offer.zone,
                           offer_id=offer.offer_id, slot_start_ms=offer.slot_start_ms, energy_wh=quantity,
                           price_cents_per_kwh=offer.price_cents_per_kwh, at_ms=now_ms)]


def place_bid(state: MarketState, principal: Principal, body: requests.BidRequest, now_ms: int) -> list[ev.OrderPlaced]:
    consumer = member(state, principal, "consumer")
    _zone_matches(consumer, body.zone)
    zone = consumer.zone
    slot = tradable_slot(state, zone, body.slot_start_ms, now_ms, "slot_start_ms")
    mechanism, min_lot = _rules(state, zone, slot)
    if mechanism == "bilateral":
        raise conflict("slot_start_ms", f"zone {zone!r} trades bilaterally: buy an offer (POST /v1/orders)")
    if body.energy_wh < min_lot:
        raise invalid("energy_wh", f"below the zone's minimum lot of {min_lot} Wh")
    return [ev.OrderPlaced(order_id=new_id("or"), consumer=consumer.participant, zone=zone, offer_id=None,
                           slot_start_ms=body.slot_start_ms, energy_wh=body.energy_wh,
                           price_cents_per_kwh=body.price_cents_per_kwh, at_ms=now_ms)]


def cancel_order(state: MarketState, principal: Principal, order_id: str, now_ms: int) -> list[ev.OrderCancelled]:
    order = _own_order(state, principal, order_id)
    if order.kind != "bid":
        raise conflict("order_id", "a purchase is final; only an open bid can be cancelled")
    if order.status != "open":
        raise conflict("order_id", f"bid {order_id!r} is {order.status}")
    tradable_slot(state, order.zone, order.slot_start_ms, now_ms, "order_id")
    return [ev.OrderCancelled(order_id=order_id, zone=order.zone, at_ms=now_ms)]


# --- the market itself ----------------------------------------------------------------------------


def close_slot(state: MarketState, zone: str, slot_start_ms: int, now_ms: int) -> list[ev.SlotClosed]:
    """Gate closure: clears an auction slot, or just closes a bilateral one. Nothing if not due."""
    slot = state.slots.get((zone, slot_start_ms))
    if slot is None or slot.status != "open" or now_ms < slot.gate_ms:
        return []
    if slot.mechanism == "bilateral":
        return [ev.SlotClosed(zone=zone, slot_start_ms=slot_start_ms, mechanism="bilateral",
                              clearing_price_cents_per_kwh=None, trades=[], at_ms=now_ms)]
    key = (zone, slot_start_ms)
    asks = [
        Ask(o.offer_id, o.remaining_wh, o.price_cents_per_kwh, o.seq)
        for o in (state.offers[i] for i in state.slot_offers.get(key, ()))
        if o.remaining_wh > 0
    ]
    bids = [
        Bid(o.order_id, o.energy_wh - o.filled_wh, o.price_cents_per_kwh, o.seq)
        for o in (state.orders[i] for i in state.slot_orders.get(key, ()))
        if o.status == "open"
    ]
    result = clearing.clear_auction(slot.mechanism, asks, bids, min_lot_wh=slot.min_lot_wh)  # type: ignore[arg-type]
    trades = [
        ev.Trade(trade_id=f"{m.order_id}.{m.offer_id}", offer_id=m.offer_id, order_id=m.order_id,
                 energy_wh=m.energy_wh, price_cents_per_kwh=m.price_cents_per_kwh)
        for m in result.matches
    ]
    return [ev.SlotClosed(zone=zone, slot_start_ms=slot_start_ms, mechanism=slot.mechanism,  # type: ignore[arg-type]
                          clearing_price_cents_per_kwh=result.clearing_price_cents_per_kwh, trades=trades,
                          at_ms=now_ms)]
