"""Property: for random trades, cancellations and deliveries, no cent appears or disappears.

Escrowed + paid + refunded always equals what consumers deposited, per consumer and in total, and
the market's token balance always equals what it still escrows plus what it owes. The chain's
figures are compared with ``contracts.amounts``, the rounding the Python side uses.
"""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.amounts import SLOT_SECONDS, amount_cents, settlement_split
from contracts.devchain import advance_to, now
from tests.contracts.conftest import Chain, World, make_world

trade = st.fixed_dictionaries(
    {
        "consumer": st.integers(0, 5),
        "producer": st.integers(0, 1),
        "energy_wh": st.integers(1, 20_000),
        "bid_above_ask": st.integers(0, 15),
        "delivered_share": st.floats(0, 1),
        "cancel": st.booleans(),
    }
)
_example = itertools.count()


@pytest.fixture(scope="module")
def market_world(tester_chain: Chain) -> World:
    return make_world(tester_chain)


@settings(max_examples=20, deadline=None)
@given(
    trades=st.lists(trade, min_size=1, max_size=8),
    asks=st.tuples(st.integers(0, 60), st.integers(0, 60)),
    max_batch=st.integers(1, 8),
)
def test_escrowed_paid_and_refunded_add_up_to_what_consumers_deposited(
    market_world: World, trades: list[dict], asks: tuple[int, int], max_batch: int
) -> None:
    world, m = market_world, market_world.market
    n = next(_example)
    # A zone and a slot of its own for every example, on the one market.
    zone = world.ids(f"zone-{n}", 1)[0]
    slot = (now(world.w3) // SLOT_SECONDS + 2) * SLOT_SECONDS
    producers = [world.producer, world.producer2]
    people = [p.address for p in producers] + [c.address for c in world.consumers]
    credit_before = {a: m.credit_of(a) for a in people}
    escrowed_before = m.totals().escrowed_cents

    offers = []
    for k, producer in enumerate(producers):
        offer_id = world.ids(f"offer-{n}-{k}", 1)[0]
        m.list_offer(producer, offer_id, zone, slot, slot + SLOT_SECONDS, 200_000, asks[k])
        offers.append(offer_id)
    deposited: Counter[str] = Counter()
    order_ids = world.ids(f"order-{n}", len(trades))
    for order_id, t in zip(order_ids, trades):
        consumer = world.consumers[t["consumer"]]
        price = asks[t["producer"]] + t["bid_above_ask"]
        placed = m.place_order(consumer, order_id, offers[t["producer"]], slot, t["energy_wh"], price)
        assert placed.escrow_cents == amount_cents(t["energy_wh"], price)
        deposited[consumer.address] += placed.escrow_cents
    cancelled = 0
    for order_id, t in zip(order_ids, trades):
        if t["cancel"]:
            cancelled += m.cancel_order(world.consumers[t["consumer"]], order_id).refund_cents
    # Before settlement: deposited = escrowed + refunded by cancellation.
    assert m.totals().escrowed_cents - escrowed_before == sum(deposited.values()) - cancelled
    _check_conservation(world)

    advance_to(world.w3, slot + SLOT_SECONDS)
    delivered = {
        order_id: 0 if t["cancel"] else int(t["energy_wh"] * t["delivered_share"])
        for order_id, t in zip(order_ids, trades)
    }
    settlement = m.settle_slot(world.oracle, zone, slot, delivered, max_batch=max_batch)

    # The model: what every account is owed, computed off chain with the documented rounding.
    expected: Counter[str] = Counter()
    for order_id, t in zip(order_ids, trades):
        consumer = world.consumers[t["consumer"]].address
        price = asks[t["producer"]] + t["bid_above_ask"]
        if t["cancel"]:
            expected[consumer] += amount_cents(t["energy_wh"], price)
            continue
        pay, refund = settlement_split(t["energy_wh"], delivered[order_id], price)
        expected[producers[t["producer"]].address] += pay
        expected[consumer] += refund
    gained = {a: m.credit_of(a) - credit_before[a] for a in people}
    assert gained == {a: expected[a] for a in people}

    # Per consumer: deposited = still escrowed (nothing, once settled) + paid + refunded.
    paid_by_consumer: Counter[str] = Counter()
    for order_id, t in zip(order_ids, trades):
        if not t["cancel"]:
            price = asks[t["producer"]] + t["bid_above_ask"]
            paid_by_consumer[world.consumers[t["consumer"]].address] += amount_cents(delivered[order_id], price)
    for consumer, amount in deposited.items():
        assert amount == paid_by_consumer[consumer] + gained[consumer]
    assert settlement.paid_cents == sum(paid_by_consumer.values())
    assert m.totals().escrowed_cents == escrowed_before
    assert m.slot_state(zone, slot).complete
    assert len(settlement.batches) == -(-len(trades) // max_batch)
    _check_conservation(world)
    # The chain's audit trail carries every delivery, in placement order.
    assert sum((b.delivered_wh for b in settlement.batches), []) == [delivered[o] for o in order_ids]


def _check_conservation(world: World) -> None:
    totals = world.market.totals()
    assert totals.held_cents == totals.escrowed_cents + totals.credited_cents
