"""A slot's trades on the chain (eth-tester, the real contract): escrow at gate closure, settlement
of the allocated (pro-rata) deliveries, payment and refunds; run again after an interruption, it
neither places nor pays anything twice."""

from __future__ import annotations

from quartier import events as ev

from contracts.amounts import SLOT_SECONDS, opaque_id
from contracts.devchain import advance_to
from marketplace.onchain import ChainSettlement
from marketplace.settlement import MeteredSlot, SettlementTiming, allocate_slot
from marketplace.state import MarketState
from tests.contracts.conftest import Chain, World, make_world, tester_chain  # noqa: F401 (fixture)


def _traded(world: World) -> tuple[MarketState, int]:
    slot_ms = world.slot * 1000
    at = slot_ms - 86_400_000
    state = MarketState()
    for e in [
        ev.ZoneConfigured(zone="z", mechanism="bilateral", gate_closure_s=300, min_lot_wh=1, at_ms=at),
        ev.ParticipantRegistered(participant="p", zone="z", meter="M-P", roles=("producer",), capacity_w=8000, at_ms=at),
        ev.ParticipantRegistered(participant="c1", zone="z", meter="M-C1", roles=("consumer",), capacity_w=0, at_ms=at),
        ev.ParticipantRegistered(participant="c2", zone="z", meter="M-C2", roles=("consumer",), capacity_w=0, at_ms=at),
        ev.OfferListed(offer_id=f"o-{world.slot}", producer="p", zone="z", slot_start_ms=slot_ms, energy_wh=1000,
                       price_cents_per_kwh=20, at_ms=at),
        ev.OrderPlaced(order_id=f"b1-{world.slot}", consumer="c1", zone="z", offer_id=f"o-{world.slot}",
                       slot_start_ms=slot_ms, energy_wh=600, price_cents_per_kwh=20, at_ms=at),
        ev.OrderPlaced(order_id=f"b2-{world.slot}", consumer="c2", zone="z", offer_id=f"o-{world.slot}",
                       slot_start_ms=slot_ms, energy_wh=400, price_cents_per_kwh=20, at_ms=at),
        ev.SlotClosed(zone="z", slot_start_ms=slot_ms, mechanism="bilateral", clearing_price_cents_per_kwh=None,
                      at_ms=slot_ms - 300_000),
    ]:
        state.apply(e)
    return state, slot_ms


def test_a_short_delivery_is_paid_pro_rata_on_chain_and_settled_once(tester_chain: Chain) -> None:  # noqa: F811
    world = make_world(tester_chain)
    state, slot_ms = _traded(world)
    p, c1, c2 = world.producer, world.consumers[0], world.consumers[1]
    chain = ChainSettlement(world.market, world.oracle, {"p": p, "c1": c1, "c2": c2})

    assert chain.escrow(state, "z", slot_ms) == 2
    assert chain.escrow(state, "z", slot_ms) == 0  # run again (a restart): nothing placed twice
    assert world.market.slot_state(opaque_id("z"), world.slot).orders == 2

    advance_to(world.w3, world.slot + SLOT_SECONDS)
    metered = {"M-P": MeteredSlot("M-P", slot_ms, 0, 501, 1.0), "M-C1": MeteredSlot("M-C1", slot_ms, 900, 0, 1.0),
               "M-C2": MeteredSlot("M-C2", slot_ms, 450, 0, 1.0)}
    [allocated] = allocate_slot(state, "z", slot_ms, metered, slot_ms + 900_000 + 60_000, SettlementTiming())
    state.apply(allocated)

    confirmed = chain.settle(state, "z", slot_ms)
    assert confirmed.tx_hash and confirmed.block > 0
    # 301 Wh and 200 Wh at 20 c/kWh: 6 and 4 cents paid (floor); escrows of 12 and 8 refunded the rest.
    assert world.market.credit_of(p.address) == 10
    assert (world.market.credit_of(c1.address), world.market.credit_of(c2.address)) == (6, 4)

    # The settlement job restarted after the chain settled but before the log said so: the chain
    # reports it settled, the same confirmation comes back, and nobody is paid twice.
    again = ChainSettlement(world.market, world.oracle, {"p": p, "c1": c1, "c2": c2}).settle(state, "z", slot_ms)
    assert again == confirmed
    assert world.market.credit_of(p.address) == 10
