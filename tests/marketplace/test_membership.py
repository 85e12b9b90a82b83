"""Membership follows the accounts, as a pure reconciliation: what the accounts say of a household and
the market state in, the market events of one zone out; the fold of those events; a move between zones
folded in either partition order ends the same; trades settle on the meter they were made with."""

from __future__ import annotations

import itertools

import pytest

from quartier import events as ev

from marketplace import commands, requests
from marketplace.commands import Principal, Rejected
from marketplace.membership import HouseholdFacts, reconcile, zones_to_reconcile
from marketplace.settlement import MeteredSlot, SettlementTiming, allocate_slot, slot_meters
from marketplace.state import MarketState, row

T0 = 1_893_456_000_000
SLOT = 900_000
A = "hh_000000000000000a"
B = "hh_000000000000000b"
LATER = T0 + 8 * SLOT  # a slot well before its gate at T0
NOW = T0


def market(*zones: str) -> MarketState:
    state = MarketState()
    for zone in zones:
        state.apply(ev.ZoneConfigured(zone=zone, mechanism="bilateral", gate_closure_s=300, min_lot_wh=1, at_ms=T0 - 1))
    return state


def run(state: MarketState, facts: HouseholdFacts, now: int = NOW) -> list[object]:
    """Reconciles one household as the feed does (each zone in turn), folding what comes out."""
    made: list[object] = []
    for zone in zones_to_reconcile(state, facts):
        for event in reconcile(state, facts, zone, now):
            state.apply(event)
            made.append(event)
    return made


def producer(meter: str = "000000000001", zone: str = "z", capacity_w: int = 4000, roles: tuple[str, ...] = ("producer",),
             household: str = A) -> HouseholdFacts:
    return HouseholdFacts(household=household, exists=True, meter=meter, zone=zone, roles=roles,
                          capacity_w=capacity_w if "producer" in roles else 0)


def test_a_household_with_a_role_and_a_meter_in_a_configured_zone_joins_once() -> None:
    state = market("z")
    assert run(state, producer()) == [ev.ParticipantRegistered(participant=A, zone="z", meter="000000000001",
                                                              roles=("producer",), capacity_w=4000, at_ms=NOW)]
    assert run(state, producer()) == []  # the same facts again: nothing
    assert row("participant", state.participants[A]) == {
        "participant": A, "zone": "z", "meter": "000000000001", "roles": "producer", "capacity_w": 4000,
        "registered_ms": NOW, "status": "active", "updated_ms": NOW}


def test_a_zone_the_market_has_not_configured_and_a_household_without_meter_or_role_do_not_join() -> None:
    state = market("z")
    assert run(state, producer(zone="elsewhere")) == []
    assert run(state, HouseholdFacts(household=A, exists=True, meter=None, zone=None, roles=("consumer",))) == []
    assert run(state, HouseholdFacts(household=A, exists=True, meter="000000000001", zone="z", roles=())) == []
    assert state.participants == {}


def test_roles_and_capacity_change_in_place_and_a_lost_role_takes_its_open_offers_and_bids() -> None:
    state = market("z")
    run(state, producer(roles=("consumer", "producer")))
    me = Principal(A, "producer")
    for event in commands.list_offers(state, me, requests.OfferListing(
            slot_start_ms=LATER, slot_end_ms=LATER + 2 * SLOT, energy_wh_per_slot=500, price_cents_per_kwh=12), NOW):
        state.apply(event)
    offers = [o.offer_id for o in sorted(state.offers.values(), key=lambda o: o.slot_start_ms)]
    # Capacity restated: the offers stay (they were within the installation when listed).
    assert run(state, producer(roles=("consumer", "producer"), capacity_w=2000)) == [
        ev.ParticipantChanged(participant=A, zone="z", roles=("consumer", "producer"), capacity_w=2000, at_ms=NOW)]
    # The producer role revoked: the unsold offers leave with it, the consumer role stays.
    made = run(state, producer(roles=("consumer",)))
    assert made == [*(ev.OfferWithdrawn(offer_id=o, zone="z", at_ms=NOW) for o in offers),
                    ev.ParticipantChanged(participant=A, zone="z", roles=("consumer",), capacity_w=0, at_ms=NOW)]
    assert [state.offers[o].status for o in offers] == ["withdrawn", "withdrawn"]
    with pytest.raises(Rejected) as refused:
        commands.list_offers(state, me, requests.OfferListing(slot_start_ms=LATER, energy_wh_per_slot=1,
                                                              price_cents_per_kwh=1), NOW)
    assert (refused.value.status, refused.value.reason) == (403, f"participant {A!r} is not registered as a producer")


def test_leaving_withdraws_before_the_gate_keeps_what_was_sold_and_leaves_slots_past_their_gate_alone() -> None:
    state = market("z")
    run(state, producer(roles=("producer",)))
    run(state, HouseholdFacts(household=B, exists=True, meter="000000000002", zone="z", roles=("consumer",)))
    soon = T0 + SLOT  # its gate (300 s before) passes at T0 + 600 s
    for start in (soon, LATER):
        [listed] = commands.list_offers(state, Principal(A, "producer"), requests.OfferListing(
            slot_start_ms=start, energy_wh_per_slot=800, price_cents_per_kwh=15), NOW)
        state.apply(listed)
    sold, kept = (next(o for o in state.offers.values() if o.slot_start_ms == s).offer_id for s in (soon, LATER))
    [bought] = commands.purchase(state, Principal(B, "consumer"), requests.Purchase(offer_id=kept, energy_wh=300), NOW)
    state.apply(bought)
    # Revoked after the first slot's gate: that slot clears with what it holds; the later one's unsold part goes.
    after_gate = T0 + 700_000
    made = run(state, producer(roles=()), after_gate)
    assert made == [ev.OfferWithdrawn(offer_id=kept, zone="z", at_ms=after_gate),
                    ev.ParticipantLeft(participant=A, zone="z", reason="roles_revoked", at_ms=after_gate)]
    assert (state.offers[sold].status, state.offers[kept].status, state.offers[kept].sold_wh) == ("open", "withdrawn", 300)
    assert row("participant", state.participants[A]) == {
        "participant": A, "zone": "z", "meter": "", "roles": "", "capacity_w": 4000, "registered_ms": NOW,
        "status": "left", "updated_ms": after_gate}
    # The purchase settles on A's meter, though A left: the meters the trade was made with.
    state.apply(ev.SlotClosed(zone="z", slot_start_ms=LATER, mechanism="bilateral", clearing_price_cents_per_kwh=None,
                              at_ms=LATER - 300_000))
    assert slot_meters(state, "z", LATER) == ["000000000001", "000000000002"]
    metered = {m: MeteredSlot(m, LATER, imported, exported, 1.0)
               for m, imported, exported in (("000000000001", 0, 300), ("000000000002", 300, 0))}
    [allocated] = allocate_slot(state, "z", LATER, metered, LATER + SLOT + 60_000, SettlementTiming())
    assert [(d.delivered_wh, d.amount_millicents) for d in allocated.deliveries] == [(300, 4500)]


@pytest.mark.parametrize(("facts", "reason"), [
    (HouseholdFacts(household=A, exists=False), "household_erased"),
    (HouseholdFacts(household=A, exists=True, meter=None, zone=None, roles=("consumer",)), "meter_unpaired"),
    (HouseholdFacts(household=A, exists=True, meter="000000000001", zone="z", roles=()), "roles_revoked"),
])
def test_a_participant_leaves_saying_why_and_its_open_bids_are_cancelled(facts: HouseholdFacts, reason: str) -> None:
    state = MarketState()
    state.apply(ev.ZoneConfigured(zone="z", mechanism="pay_as_bid", gate_closure_s=300, min_lot_wh=1, at_ms=T0 - 1))
    run(state, HouseholdFacts(household=A, exists=True, meter="000000000001", zone="z", roles=("consumer",)))
    [bid] = commands.place_bid(state, Principal(A, "consumer"), requests.BidRequest(
        slot_start_ms=LATER, energy_wh=100, price_cents_per_kwh=20), NOW)
    state.apply(bid)
    assert run(state, facts) == [ev.OrderCancelled(order_id=bid.order_id, zone="z", at_ms=NOW),
                                 ev.ParticipantLeft(participant=A, zone="z", reason=reason, at_ms=NOW)]  # type: ignore[arg-type]
    assert state.meters == {}
    # Back with a role and its meter: it joins again.
    assert [type(e).__name__ for e in run(state, producer(roles=("consumer",)))] == ["ParticipantRegistered"]


def test_a_new_meter_in_the_same_zone_leaves_and_joins_in_one_batch_and_a_meter_held_by_another_is_left_alone() -> None:
    state = market("z")
    run(state, producer())
    [batch] = [reconcile(state, producer(meter="000000000009"), "z", NOW)]
    assert [type(e).__name__ for e in batch] == ["ParticipantLeft", "ParticipantRegistered"]
    assert batch[0].reason == "meter_changed"  # type: ignore[attr-defined]
    # The operator registered a participant on a meter by hand: a household pairing it does not take it.
    state.apply(ev.ParticipantRegistered(participant="ops-site", zone="z", meter="000000000042", roles=("consumer",),
                                         capacity_w=0, at_ms=NOW))
    assert run(state, producer(household=B, meter="000000000042", roles=("consumer",))) == []


def test_the_operator_cannot_register_a_household_by_hand() -> None:
    state = market("z")
    body = requests.ParticipantRegistration(participant=A, zone="z", meter="000000000001", roles=["consumer"])
    with pytest.raises(Rejected) as refused:
        commands.register_participant(state, Principal("ops", "operator"), body, NOW)
    assert (refused.value.status, refused.value.field) == (409, "participant")


def test_a_move_between_zones_folds_to_the_same_state_in_any_order_of_the_two_partitions() -> None:
    live = market("x", "y")
    zone_events: dict[str, list[object]] = {"x": [], "y": []}
    for facts, now in ((producer(zone="x", meter="000000000001"), NOW),
                       (producer(zone="y", meter="000000000002"), NOW + 1_000)):
        for zone in zones_to_reconcile(live, facts):
            for event in reconcile(live, facts, zone, now):
                live.apply(event)
                zone_events[zone].append(event)
    assert [type(e).__name__ for e in zone_events["x"]] == ["ParticipantRegistered", "ParticipantLeft"]
    assert [type(e).__name__ for e in zone_events["y"]] == ["ParticipantRegistered"]
    expected = (row("participant", live.participants[A]), dict(live.meters))
    assert expected == ({"participant": A, "zone": "y", "meter": "000000000002", "roles": "producer", "capacity_w": 4000,
                         "registered_ms": NOW + 1_000, "status": "active", "updated_ms": NOW + 1_000},
                        {"000000000002": A})
    x, y = zone_events["x"], zone_events["y"]
    # Every interleaving of the two partitions (each in its own order), as a replay may fold them.
    for picks in set(itertools.permutations(["x"] * len(x) + ["y"] * len(y))):
        replayed = market("x", "y")
        queues = {"x": list(x), "y": list(y)}
        for zone in picks:
            replayed.apply(queues[zone].pop(0))
        assert (row("participant", replayed.participants[A]), dict(replayed.meters)) == expected, picks
