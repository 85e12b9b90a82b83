"""The whole path over the real API, broker and anvil: offer → purchase → gate closure (escrow on
chain) → meter data on ``meter.slots`` → pro-rata allocation → settlement on chain → the producer
withdraws its pay and the consumers their refunds; and a settlement job interrupted after the chain
settled, but before the log said so, settles the slot once when the market restarts."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from contracts.amounts import SLOT_SECONDS, opaque_id
from contracts.devchain import advance_to, now
from contracts.transactions import Sender
from marketplace.clock import ManualClock
from marketplace.onchain import ChainSettlement
from tests.contracts.conftest import Chain, World, anvil_chain, make_world  # noqa: F401 (fixture)
from tests.marketplace.conftest import Market, RunningMarket, market_settings
from tests.marketplace.test_settlement_flow import _publish

GRACE_MS = 60_000


def _start(settings: Any, clock: ManualClock, chain: ChainSettlement | None) -> RunningMarket:
    running = RunningMarket(settings, clock)
    running.service.chain = chain
    return running.start()


@pytest.fixture
def world(anvil_chain: Chain) -> World:  # noqa: F811
    return make_world(anvil_chain)


def _trade(market: Market, world: World, tag: str) -> tuple[str, int, dict[str, Sender], dict[str, str]]:
    """p sells 600 Wh to c1 and 400 Wh to c2 at 20 c/kWh in the world's slot; returns zone, slot,
    custody and meters."""
    slot_ms = world.slot * 1000
    market.clock.set(now(world.w3) * 1000)
    # The zone closes before the contract's gate (300 s): escrow must land before the chain refuses it.
    zone = market.new_zone("bilateral", gate_closure_s=600)
    names = {role: f"{role}-{tag}" for role in ("p", "c1", "c2")}
    _, p = market.join(zone, "producer", capacity_w=8000, name=names["p"])
    _, c1 = market.join(zone, "consumer", name=names["c1"])
    _, c2 = market.join(zone, "consumer", name=names["c2"])
    offer = p.post("/v1/offers", json={"zone": zone, "slot_start_ms": slot_ms, "slot_end_ms": slot_ms + SLOT_SECONDS * 1000,
                                       "energy_wh_per_slot": 1000, "price_cents_per_kwh": 20}).json()["items"][0]["offer_id"]
    assert c1.post("/v1/orders", json={"offer_id": offer, "energy_wh": 600}).status_code == 201
    assert c2.post("/v1/orders", json={"offer_id": offer, "energy_wh": 400}).status_code == 201
    custody = {names["p"]: world.producer, names["c1"]: world.consumers[0], names["c2"]: world.consumers[1]}
    meters = {role: market.operator.get(f"/v1/participants/{name}").json()["meter"] for role, name in names.items()}
    return zone, slot_ms, custody, meters


def _wait_escrowed(world: World, zone: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while world.market.slot_state(opaque_id(zone), world.slot).orders < 2:
        if time.monotonic() > deadline:
            raise AssertionError(f"the trades of {zone} did not reach the chain")
        time.sleep(0.1)


def _deliver(market: Market, world: World, zone: str, slot_ms: int, meters: dict[str, str]) -> None:
    from quartier import events as ev
    _publish(market.running.settings, [
        ev.SlotEnergy(meter=meters["p"], zone=zone, slot_start_ms=slot_ms, imported_wh=0, exported_wh=501, completeness=1.0),
        ev.SlotEnergy(meter=meters["c1"], zone=zone, slot_start_ms=slot_ms, imported_wh=900, exported_wh=0, completeness=1.0),
        ev.SlotEnergy(meter=meters["c2"], zone=zone, slot_start_ms=slot_ms, imported_wh=450, exported_wh=0, completeness=1.0),
    ])
    advance_to(world.w3, world.slot + SLOT_SECONDS)


def _paid_once(world: World) -> None:
    # 301 and 200 Wh at 20 c/kWh: 6 + 4 cents to the producer; escrows of 12 and 8 cents, refunds 6 and 4.
    m, p, c1, c2 = world.market, world.producer, world.consumers[0], world.consumers[1]
    assert (m.credit_of(p.address), m.credit_of(c1.address), m.credit_of(c2.address)) == (10, 6, 4)
    before = m.balance_of(p.address)
    m.withdraw(p)
    assert m.balance_of(p.address) == before + 10 and m.credit_of(p.address) == 0


@pytest.fixture
def settings(broker: dict[str, Any], tmp_path: Path) -> Any:
    return market_settings(broker, tmp_path)


def test_from_offer_to_payment_on_chain(world: World, settings: Any) -> None:
    clock = ManualClock(now(world.w3) * 1000)
    running = _start(settings, clock, None)
    try:
        market = Market(running)
        zone, slot_ms, custody, meters = _trade(market, world, "a")
        running.service.chain = ChainSettlement(world.market, world.oracle, custody)
        clock.set(slot_ms - 600_000)
        market.wait_for_slot(zone, slot_ms, "closed")
        _wait_escrowed(world, zone)
        _deliver(market, world, zone, slot_ms, meters)
        clock.set(slot_ms + SLOT_SECONDS * 1000 + GRACE_MS)
        slot = market.wait_for_slot(zone, slot_ms, "confirmed", timeout_s=60)
        assert slot["tx_hash"] and slot["block"] > 0 and slot["allocation_complete"] is True
        trades = market.operator.get("/v1/trades", params={"zone": zone}).json()["items"]
        assert sorted((t["delivered_wh"], t["status"], t["tx_hash"]) for t in trades) == [
            (200, "confirmed", slot["tx_hash"]), (301, "confirmed", slot["tx_hash"])]
    finally:
        running.stop()
    _paid_once(world)


def test_a_settlement_interrupted_after_the_chain_settled_is_confirmed_once_after_a_restart(
        world: World, settings: Any) -> None:
    clock = ManualClock(now(world.w3) * 1000)
    running = _start(settings, clock, None)
    try:
        market = Market(running)
        zone, slot_ms, custody, meters = _trade(market, world, "b")
        chain = ChainSettlement(world.market, world.oracle, custody)
        running.service.chain = chain
        clock.set(slot_ms - 600_000)
        market.wait_for_slot(zone, slot_ms, "closed")
        _wait_escrowed(world, zone)
        _deliver(market, world, zone, slot_ms, meters)
        running.service.chain = None  # the settlement job dies here...
        clock.set(slot_ms + SLOT_SECONDS * 1000 + GRACE_MS)
        market.wait_for_slot(zone, slot_ms, "allocated")
        # ...after its transaction landed on chain, before the log heard of it.
        landed = chain.settle(running.service.state, zone, slot_ms)
    finally:
        running.stop()

    restarted = _start(settings, clock, ChainSettlement(world.market, world.oracle, custody))
    try:
        slot = Market(restarted).wait_for_slot(zone, slot_ms, "confirmed", timeout_s=60)
        assert (slot["tx_hash"], slot["block"]) == (landed.tx_hash, landed.block)
    finally:
        restarted.stop()
    _paid_once(world)
