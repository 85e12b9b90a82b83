"""Settlement in batches, resuming, reclaiming unsettled escrow, and re-entrancy."""

from __future__ import annotations

import pytest
from web3 import Web3

from contracts.amounts import SLOT_SECONDS, amount_cents
from contracts.artifacts import load
from contracts.devchain import advance_to
from contracts.market import Market
from contracts.transactions import Sender
from tests.contracts.conftest import GATE_CLOSURE_S, SETTLEMENT_TIMEOUT_S, World, reverts


def _orders(world: World, count: int, price: int = 30) -> tuple[list[bytes], list[int]]:
    """``count`` orders from alternating consumers on two producers' offers; their Wh."""
    offers = [world.offer(energy_wh=100_000, price=price, producer=p, tag=f"o{i}") for i, p in
              enumerate((world.producer, world.producer2))]  # fmt: skip
    order_ids = world.ids("order", count)
    energy = [500 + 37 * i for i in range(count)]
    for i, order_id in enumerate(order_ids):
        consumer = world.consumers[i % len(world.consumers)]
        world.market.place_order(consumer, order_id, offers[i % 2], world.slot, energy[i])
    return order_ids, energy


def test_settlement_splits_into_batches_in_placement_order(any_chain) -> None:  # type: ignore[no-untyped-def]
    from tests.contracts.conftest import make_world

    world = make_world(any_chain)
    order_ids, energy = _orders(world, 7)
    world.after_slot()
    delivered = {order_id: wh * (i % 3) // 2 for i, (order_id, wh) in enumerate(zip(order_ids, energy))}

    settlement = world.market.settle_slot(world.oracle, world.zone, world.slot, delivered, max_batch=3)

    assert [b.first_position for b in settlement.batches] == [0, 3, 6]
    assert [len(b.delivered_wh) for b in settlement.batches] == [3, 3, 1]
    assert sum((b.delivered_wh for b in settlement.batches), []) == [delivered[i] for i in order_ids]
    paid = sum(amount_cents(delivered[i], 30) for i in order_ids)
    escrow = sum(amount_cents(wh, 30) for wh in energy)
    assert (settlement.paid_cents, settlement.refunded_cents) == (paid, escrow - paid)
    producer_credits = world.market.credit_of(world.producer.address) + world.market.credit_of(world.producer2.address)
    assert producer_credits == paid
    assert world.market.slot_state(world.zone, world.slot).complete


def test_an_interrupted_settlement_resumes_where_it_stopped(tester_world: World) -> None:
    world = tester_world
    order_ids, energy = _orders(world, 5)
    world.after_slot()
    delivered = dict(zip(order_ids, energy))
    world.market.settle_batch(world.oracle, world.zone, world.slot, 0, energy[:2])
    with reverts("BatchOutOfOrder"):
        world.market.settle_batch(world.oracle, world.zone, world.slot, 0, energy[:2])
    with reverts("BatchExceedsSlot"):
        world.market.settle_batch(world.oracle, world.zone, world.slot, 2, energy[2:] + [1])

    rest = world.market.settle_slot(world.oracle, world.zone, world.slot, delivered)

    assert [(b.first_position, b.delivered_wh) for b in rest.batches] == [(2, energy[2:])]
    assert all(world.market.order(i).settled for i in order_ids)


def test_every_order_needs_a_delivery_and_only_orders_of_the_slot(tester_world: World) -> None:
    world = tester_world
    order_ids, energy = _orders(world, 3)
    world.after_slot()
    with pytest.raises(ValueError, match="no delivery for orders: 0x" + order_ids[1].hex()):
        world.market.settle_slot(world.oracle, world.zone, world.slot, {order_ids[0]: 1, order_ids[2]: 1})
    stranger = world.ids("stranger", 1)[0]
    with pytest.raises(ValueError, match="not in this slot: 0x" + stranger.hex()):
        world.market.settle_slot(world.oracle, world.zone, world.slot, {**dict.fromkeys(order_ids, 1), stranger: 1})
    with pytest.raises(ValueError, match=r"delivered_wh\[0x[0-9a-f]+\] must be an integer between 0"):
        world.market.settle_slot(world.oracle, world.zone, world.slot, {**dict.fromkeys(order_ids, 1), order_ids[0]: -5})
    with reverts("DeliveryExceedsOrder"):
        world.market.settle_slot(world.oracle, world.zone, world.slot, {**dict.fromkeys(order_ids, 0), order_ids[2]: energy[2] + 1})
    assert world.market.slot_state(world.zone, world.slot).settled == 0


def test_consumers_reclaim_escrow_the_oracle_left_unsettled(tester_world: World) -> None:
    world = tester_world
    m, consumer = world.market, world.consumers[0]
    order_ids, energy = _orders(world, 2)
    world.after_slot()
    with reverts("SettlementNotOverdue"):
        m.reclaim_unsettled(consumer, order_ids[0])

    advance_to(world.w3, world.slot + SLOT_SECONDS + SETTLEMENT_TIMEOUT_S)
    reclaimed = m.reclaim_unsettled(world.producer, order_ids[0])  # anyone may trigger it

    assert reclaimed.refund_cents == amount_cents(energy[0], 30)
    assert m.credit_of(consumer.address) == reclaimed.refund_cents
    with reverts("OrderNotOpen"):
        m.reclaim_unsettled(consumer, order_ids[0])
    # A late settlement must treat the reclaimed order as nothing delivered.
    m.settle_slot(world.oracle, world.zone, world.slot, {order_ids[0]: 0, order_ids[1]: energy[1]})
    assert m.totals().escrowed_cents == 0
    with reverts("OrderAlreadySettled"):
        m.reclaim_unsettled(consumer, order_ids[1])


def test_withdraw_cannot_be_reentered(tester_world: World) -> None:
    """A token that calls the recipient back lets it try withdraw again mid-payment; it must fail."""
    world = tester_world
    w3, admin = world.w3, world.admin
    token_artifact, attacker_artifact = load("CallbackToken"), load("ReentrantWithdrawer")
    receipt = admin.transact(w3.eth.contract(abi=token_artifact.abi, bytecode=token_artifact.bytecode).constructor())
    token = w3.eth.contract(address=receipt["contractAddress"], abi=token_artifact.abi)
    from contracts.deployment import deploy

    record = deploy(w3, admin, world.oracle.address, gate_closure_s=GATE_CLOSURE_S, token_address=token.address)
    market = Market(w3, record)
    receipt = admin.transact(
        w3.eth.contract(abi=attacker_artifact.abi, bytecode=attacker_artifact.bytecode).constructor(
            market.address, token.address
        )
    )
    attacker = w3.eth.contract(address=receipt["contractAddress"], abi=attacker_artifact.abi)
    admin.transact(token.functions.mint(attacker.address, 1_000))
    offer_id, order_id = world.ids("r-offer", 1)[0], world.ids("r-order", 1)[0]
    market.list_offer(world.producer, offer_id, world.zone, world.slot, world.slot + SLOT_SECONDS, 10_000, 50)
    admin.transact(attacker.functions.placeOrder(order_id, offer_id, world.slot, 4_000, 50))
    admin.transact(attacker.functions.cancelOrder(order_id))
    assert market.credit_of(attacker.address) == 200

    # Explicit gas: the token ignores a failed callback, so an estimate would starve the callback.
    admin.transact(attacker.functions.withdraw(), gas=1_000_000)

    assert attacker.functions.reentries().call() == 1
    error = bytes(attacker.functions.reentryError().call())
    assert error == Web3.keccak(text="ReentrancyGuardReentrantCall()")[:4]
    assert token.functions.balanceOf(attacker.address).call() == 1_000  # paid once, not twice
    assert market.credit_of(attacker.address) == 0
    assert market.totals().held_cents == 0


def test_a_sender_keeps_its_nonces_across_many_unawaited_transactions(world: World) -> None:
    admin = world.admin
    recipients = [c.address for c in world.consumers]
    hashes = [admin.send(world.market.token.functions.mint(recipients[i % len(recipients)], 1)) for i in range(12)]
    receipts = [admin.wait(h) for h in hashes]
    nonces = [world.w3.eth.get_transaction(h)["nonce"] for h in hashes]
    assert nonces == list(range(nonces[0], nonces[0] + 12))
    assert all(r["status"] == 1 for r in receipts)

    # Another client used the same account behind this sender's back: it recovers on the next send.
    other = Sender(world.w3, admin.account)
    other.transact(world.market.token.functions.mint(recipients[0], 1))
    receipt = admin.transact(world.market.token.functions.mint(recipients[0], 1))
    assert receipt["status"] == 1


def test_batches_shrink_to_fit_the_per_transaction_gas_cap(world: World) -> None:
    """With a small cap, settle_slot estimates, splits, and never sends a batch over the cap."""
    order_ids, energy = _orders(world, 12)
    world.after_slot()
    capped_oracle = Sender(world.w3, world.oracle.account, gas_cap=120_000)
    half = {order_id: wh // 2 for order_id, wh in zip(order_ids, energy)}  # refunds: heavier batches

    settlement = world.market.settle_slot(capped_oracle, world.zone, world.slot, half)

    assert settlement.complete and len(settlement.batches) > 1
    assert max(settlement.gas_used) <= 120_000
    assert [b.first_position for b in settlement.batches] == sorted({b.first_position for b in settlement.batches})
    assert settlement.deliveries == 12
