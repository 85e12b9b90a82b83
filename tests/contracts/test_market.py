"""The life of a trade on the market contract, on eth-tester in process and on anvil."""

from __future__ import annotations

import pytest

from contracts import events as ev
from contracts.amounts import SLOT_SECONDS, amount_cents, settlement_split
from contracts.errors import ContractRevert
from tests.contracts.conftest import World, reverts


def test_full_life_of_a_trade(world: World) -> None:
    m, producer, consumer = world.market, world.producer, world.consumers[0]
    offer_id = world.offer(energy_wh=4_000, price=23)
    order_id = world.ids("order", 1)[0]
    consumer_before, producer_before = m.balance_of(consumer.address), m.balance_of(producer.address)

    placed = m.place_order(consumer, order_id, offer_id, world.slot, 3_000)

    escrow = amount_cents(3_000, 23)  # 69 cents
    assert (placed.escrow_cents, placed.position, placed.consumer) == (escrow, 0, consumer.address)
    assert m.balance_of(consumer.address) == consumer_before - escrow
    assert m.offer(offer_id).remaining_wh == 1_000
    assert m.totals().escrowed_cents == escrow

    world.after_slot()
    settlement = m.settle_slot(world.oracle, world.zone, world.slot, {order_id: 3_000})

    assert settlement.complete and settlement.paid_cents == escrow and settlement.refunded_cents == 0
    assert m.order(order_id).settled
    assert m.credit_of(producer.address) == escrow and m.credit_of(consumer.address) == 0
    withdrawn = m.withdraw(producer)
    assert withdrawn.amount_cents == escrow
    assert m.balance_of(producer.address) == producer_before + escrow
    totals = m.totals()
    assert (totals.escrowed_cents, totals.credited_cents, totals.held_cents) == (0, 0, 0)
    assert totals.last_settled_slot_start == world.slot

    # The audit trail, read by block range from the deployment block: every step, in order.
    kinds = [type(e).__name__ for e in m.events_between()]
    assert kinds == [
        "ZoneRegistered", "OfferListed", "OrderPlaced", "SettlementBatch", "SlotSettled", "Withdrawn"
    ]  # fmt: skip
    batch = m.events_between(kinds=["SettlementBatch"])[0]
    assert isinstance(batch, ev.SettlementBatch) and batch.delivered_wh == [3_000]


def test_partial_delivery_pays_what_was_delivered_and_refunds_the_rest(world: World) -> None:
    m = world.market
    offer_id = world.offer(energy_wh=10_000, price=27)
    a, b = world.consumers[0], world.consumers[1]
    order_a, order_b = world.ids("order", 2)
    m.place_order(a, order_a, offer_id, world.slot, 2_500)
    m.place_order(b, order_b, offer_id, world.slot, 1_333, price_cents_per_kwh=31)  # a bid above the ask
    world.after_slot()

    settlement = m.settle_slot(world.oracle, world.zone, world.slot, {order_a: 1_234, order_b: 999})

    pay_a, refund_a = settlement_split(2_500, 1_234, 27)
    pay_b, refund_b = settlement_split(1_333, 999, 31)
    assert (pay_a, refund_a, pay_b, refund_b) == (33, 34, 30, 11)  # floor rounding, documented
    assert m.credit_of(world.producer.address) == pay_a + pay_b
    assert m.credit_of(a.address) == refund_a and m.credit_of(b.address) == refund_b
    assert (settlement.paid_cents, settlement.refunded_cents) == (pay_a + pay_b, refund_a + refund_b)
    before = m.balance_of(b.address)
    assert m.withdraw(b).amount_cents == refund_b
    assert m.balance_of(b.address) == before + refund_b


def test_no_delivery_refunds_everything(world: World) -> None:
    m = world.market
    offer_id = world.offer(price=40)
    order_id = world.ids("order", 1)[0]
    m.place_order(world.consumers[0], order_id, offer_id, world.slot, 5_000)
    world.after_slot()

    m.settle_slot(world.oracle, world.zone, world.slot, {order_id: 0})

    assert m.credit_of(world.producer.address) == 0
    assert m.credit_of(world.consumers[0].address) == amount_cents(5_000, 40)
    with reverts("NothingToWithdraw"):
        m.withdraw(world.producer)


def test_cancellation_before_gate_closure_refunds_and_after_is_refused(world: World) -> None:
    m, consumer = world.market, world.consumers[0]
    offer_id = world.offer(energy_wh=6_000, price=20)
    early, late = world.ids("order", 2)
    m.place_order(consumer, early, offer_id, world.slot, 2_000)
    m.place_order(consumer, late, offer_id, world.slot, 3_000)

    with reverts("NotOrderConsumer"):
        m.cancel_order(world.consumers[1], early)
    cancelled = m.cancel_order(consumer, early)
    assert cancelled.refund_cents == amount_cents(2_000, 20)
    assert m.offer(offer_id).remaining_wh == 3_000  # the energy is back on sale
    assert m.credit_of(consumer.address) == cancelled.refund_cents
    with reverts("OrderNotOpen"):
        m.cancel_order(consumer, early)

    world.after_gate()
    with reverts("GateClosed"):
        m.cancel_order(consumer, late)
    with reverts("GateClosed"):
        m.place_order(consumer, world.ids("order-after-gate", 1)[0], offer_id, world.slot, 100)

    # The cancelled order settles as nothing delivered; delivering to it is refused.
    world.after_slot()
    with pytest.raises(ContractRevert, match="DeliveryExceedsOrder") as caught:
        m.settle_slot(world.oracle, world.zone, world.slot, {early: 1, late: 3_000})
    assert caught.value.args_by_name["order_id"] == early
    m.settle_slot(world.oracle, world.zone, world.slot, {early: 0, late: 3_000})
    assert m.credit_of(world.producer.address) == amount_cents(3_000, 20)


def test_only_the_oracle_settles(world: World) -> None:
    m = world.market
    offer_id = world.offer()
    order_id = world.ids("order", 1)[0]
    m.place_order(world.consumers[0], order_id, offer_id, world.slot, 1_000)
    world.after_slot()

    for intruder in (world.producer, world.consumers[0], world.admin):
        with reverts("AccessControlUnauthorizedAccount"):
            m.settle_slot(intruder, world.zone, world.slot, {order_id: 1_000})
    assert m.slot_state(world.zone, world.slot).settled == 0
    m.settle_slot(world.oracle, world.zone, world.slot, {order_id: 1_000})


def test_a_slot_cannot_be_settled_twice(world: World) -> None:
    m = world.market
    offer_id = world.offer()
    order_id = world.ids("order", 1)[0]
    m.place_order(world.consumers[0], order_id, offer_id, world.slot, 1_000)
    with reverts("SlotNotEnded"):
        m.settle_batch(world.oracle, world.zone, world.slot, 0, [1_000])
    world.after_slot()
    m.settle_batch(world.oracle, world.zone, world.slot, 0, [1_000])

    with reverts("SlotAlreadySettled"):
        m.settle_batch(world.oracle, world.zone, world.slot, 0, [1_000])
    with reverts("SlotAlreadySettled"):
        m.settle_batch(world.oracle, world.zone, world.slot, 1, [])
    again = m.settle_slot(world.oracle, world.zone, world.slot, {order_id: 1_000})
    assert again.already_settled and again.batches == []
    assert m.credit_of(world.producer.address) == amount_cents(1_000, 25)


def test_withdrawal_cannot_be_repeated(world: World) -> None:
    m = world.market
    offer_id = world.offer()
    order_id = world.ids("order", 1)[0]
    m.place_order(world.consumers[0], order_id, offer_id, world.slot, 4_000)
    world.after_slot()
    m.settle_slot(world.oracle, world.zone, world.slot, {order_id: 4_000})

    before = m.balance_of(world.producer.address)
    assert m.withdraw(world.producer).amount_cents == 100
    with reverts("NothingToWithdraw"):
        m.withdraw(world.producer)
    assert m.balance_of(world.producer.address) == before + 100


def test_paused_market_rejects_trades_but_lets_money_out(world: World) -> None:
    m, consumer = world.market, world.consumers[0]
    offer_id = world.offer(energy_wh=5_000)
    kept, cancelled = world.ids("order", 2)
    m.place_order(consumer, kept, offer_id, world.slot, 1_000)
    m.place_order(consumer, cancelled, offer_id, world.slot, 1_000)

    with reverts("AccessControlUnauthorizedAccount"):
        m.pause(consumer)
    m.pause(world.admin)
    assert m.totals().paused
    with reverts("EnforcedPause"):
        world.offer(tag="paused")
    with reverts("EnforcedPause"):
        m.place_order(consumer, world.ids("order-paused", 1)[0], offer_id, world.slot, 100)
    # Exits stay open: cancelling and withdrawing one's own money.
    m.cancel_order(consumer, cancelled)
    assert m.withdraw(consumer).amount_cents == 25
    world.after_slot()
    with reverts("EnforcedPause"):
        m.settle_slot(world.oracle, world.zone, world.slot, {kept: 1_000, cancelled: 0})

    m.unpause(world.admin)
    assert m.settle_slot(world.oracle, world.zone, world.slot, {kept: 1_000, cancelled: 0}).complete


def test_orders_are_checked_against_the_offer(world: World) -> None:
    m, consumer = world.market, world.consumers[0]
    offer_id = world.offer(energy_wh=1_000, price=25)
    order_id = world.ids("order", 1)[0]
    with reverts("InsufficientOffer"):
        m.place_order(consumer, order_id, offer_id, world.slot, 1_001)
    with reverts("PriceBelowOffer"):
        m.place_order(consumer, order_id, offer_id, world.slot, 500, price_cents_per_kwh=24)
    with reverts("SlotOutsideWindow"):
        m.place_order(consumer, order_id, offer_id, world.slot + SLOT_SECONDS, 500)
    with reverts("SlotNotAligned"):
        m.place_order(consumer, order_id, offer_id, world.slot + 60, 500)
    with reverts("UnknownOffer"):
        m.place_order(consumer, order_id, world.ids("nope", 1)[0], world.slot, 500)
    with reverts("ZeroEnergy"):
        m.place_order(consumer, order_id, offer_id, world.slot, 0)
    with reverts("OfferExists"):
        world.offer()
    with reverts("InvalidWindow"):
        m.list_offer(world.producer, world.ids("w", 1)[0], world.zone, world.slot, world.slot, 100, 1)
    with reverts("NotOfferProducer"):
        m.withdraw_offer(world.producer2, offer_id)

    m.place_order(consumer, order_id, offer_id, world.slot, 600)
    with reverts("OrderExists"):
        m.place_order(consumer, order_id, offer_id, world.slot, 100)
    assert m.withdraw_offer(world.producer, offer_id).unsold_wh == 400
    with reverts("OfferNotActive"):
        m.place_order(consumer, world.ids("order2", 1)[0], offer_id, world.slot, 100)
    with pytest.raises(ValueError, match="order_id must be 32 bytes"):
        m.place_order(consumer, b"short", offer_id, world.slot, 100)
