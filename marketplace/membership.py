"""Who takes part in the market follows the accounts: a pure reconciliation, facts in, events out.

A household takes part in its zone's market when its accounts say so: a market role (producer,
consumer or both, granted by its owner or an operator) and a meter paired in a zone the market has
configured. The participant id is the household id. :func:`reconcile` compares what the accounts say
of one household (:class:`HouseholdFacts`) with what the market state holds of it in one zone, and
returns the market events of that zone that make the market agree (nothing when it does). Like
:mod:`marketplace.commands` it appends nothing and changes nothing: the market's accounts feed
(:mod:`marketplace.accountsfeed`) runs it through the command handler, under the zone's partition
lock, so it is checked against the state its events apply to. Run again on the same facts it returns
nothing: that is what makes the feed idempotent, and what lets it resume after a crash from the two
logs alone (``market.events`` folded at start, ``accounts.events`` folded again, every household
reconciled once).

What changes, and how:

- **joins** (``participant_registered``): roles, a meter paired in a configured zone, the meter not
  held by another participant of the market;
- **roles or capacity change** (``participant_changed``): the roles it keeps, the producer's new
  capacity; a role it lost takes its open offers (producer) or open bids (consumer) with it;
- **leaves** (``participant_left``, with the reason): every role revoked, the meter unpaired or
  paired to another meter, the household erased. Its open offers are withdrawn and its open bids
  cancelled first, in the same batch, in every slot whose gate is still ahead. What is already sold
  or bought stays (bilateral purchases are final, as for a producer withdrawing an offer), and a slot
  past its gate but not closed yet clears with what it holds: at the gate the household still took
  part. Every trade is allocated and settled as any other, on the meter it had when it placed the
  offer or order (``MarketState.trade_meters``); the producer pulls its payments as before.
- A household whose meter changed to another zone leaves the old zone and joins the new one: two
  steps (:func:`zones_to_reconcile`), each a batch on its own zone's partition, old zone first.

Participants whose id is not a household id (``hh_`` and 16 hex digits) are the operator's
(``POST /v1/participants``) and never touched here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import msgspec

from quartier import events as ev

from marketplace.state import MarketState, Participant

HOUSEHOLD_ID = re.compile(r"^hh_[0-9a-f]{16}$")


def is_household(participant: str) -> bool:
    """A participant id that is an accounts household id: membership follows the accounts."""
    return HOUSEHOLD_ID.match(participant) is not None


@dataclass(frozen=True, slots=True)
class HouseholdFacts:
    """What ``accounts.events`` say of one household, as far as the market is concerned."""

    household: str
    exists: bool  # False: unknown to the accounts, or erased
    meter: str | None = None
    zone: str | None = None
    roles: tuple[str, ...] = ()  # sorted
    capacity_w: int = 0  # the producer's installation peak output; 0 unless a producer

    def wants(self, zone: str) -> bool:
        """Whether the accounts say this household takes part in ``zone``'s market."""
        return self.exists and self.meter is not None and self.zone == zone and bool(self.roles)


def zones_to_reconcile(state: MarketState, facts: HouseholdFacts) -> list[str]:
    """The zones whose market may have to change for this household: the one it trades in now (first,
    so that a household moving zones leaves before it joins), and the one its accounts name."""
    current = state.participants.get(facts.household)
    zones = [current.zone] if current is not None and current.status == "active" else []
    if facts.zone is not None and facts.zone not in zones:
        zones.append(facts.zone)
    return zones


def reconcile(state: MarketState, facts: HouseholdFacts, zone: str, now_ms: int) -> list[msgspec.Struct]:
    """The events of ``zone`` that make the market agree with the household's accounts (all of one zone)."""
    participant = facts.household
    known = state.memberships.get(participant, {}).get(zone)
    active = known is not None and known.status == "active"
    if active and known is not None:
        if not facts.wants(zone) or facts.meter != known.meter:
            reason: ev.LeftReason = (
                "household_erased" if not facts.exists
                else "meter_unpaired" if facts.meter is None
                else "meter_changed" if facts.meter != known.meter or facts.zone != zone
                else "roles_revoked"
            )
            events: list[msgspec.Struct] = [*close_open(state, known, {"producer", "consumer"}, now_ms),
                                            ev.ParticipantLeft(participant=participant, zone=zone, reason=reason, at_ms=now_ms)]
            # Another meter in the same zone: it joins again on the new one, in the same batch.
            if facts.wants(zone) and _meter_free(state, facts):
                events.append(_registered(facts, zone, now_ms))
            return events
        roles, capacity = ",".join(facts.roles), facts.capacity_w
        if roles == known.roles and capacity == known.capacity_w:
            return []
        lost = set(known.roles.split(",")) - set(facts.roles)
        return [*close_open(state, known, lost, now_ms),
                ev.ParticipantChanged(participant=participant, zone=zone, roles=facts.roles,  # type: ignore[arg-type]
                                      capacity_w=capacity, at_ms=now_ms)]
    if facts.wants(zone) and zone in state.zones and _meter_free(state, facts):
        return [_registered(facts, zone, now_ms)]
    return []


def close_open(state: MarketState, participant: Participant, roles: set[str], now_ms: int) -> list[msgspec.Struct]:
    """What a participant losing ``roles`` takes off the market: the unsold part of its open offers
    (producer) and its open bids (consumer), in the zone's slots whose gate is still ahead."""
    zone, who = participant.zone, participant.participant
    events: list[msgspec.Struct] = []
    for start in sorted(state.open_slots.get(zone, ())):
        slot = state.slots[(zone, start)]
        if now_ms >= slot.gate_ms:
            continue  # trading has ended: the slot clears with what it holds
        if "producer" in roles:
            for offer_id in state.producer_slot_offers.get((who, start), ()):
                offer = state.offers[offer_id]
                if offer.zone == zone and offer.status == "open" and offer.remaining_wh > 0:
                    events.append(ev.OfferWithdrawn(offer_id=offer_id, zone=zone, at_ms=now_ms))
        if "consumer" in roles:
            for order_id in state.slot_orders.get((zone, start), ()):
                order = state.orders[order_id]
                if order.consumer == who and order.kind == "bid" and order.status == "open":
                    events.append(ev.OrderCancelled(order_id=order_id, zone=zone, at_ms=now_ms))
    return events


def _meter_free(state: MarketState, facts: HouseholdFacts) -> bool:
    # A meter another participant holds (one the operator registered by hand) stays with it.
    holder = state.meters.get(facts.meter or "")
    return holder is None or holder == facts.household


def _registered(facts: HouseholdFacts, zone: str, now_ms: int) -> ev.ParticipantRegistered:
    assert facts.meter is not None
    return ev.ParticipantRegistered(participant=facts.household, zone=zone, meter=facts.meter,
                                    roles=facts.roles, capacity_w=facts.capacity_w, at_ms=now_ms)  # type: ignore[arg-type]
