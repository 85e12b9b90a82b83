"""Auction zones over the real API: bids, cancellations, gate closure, and the clearing result against
a hand-computed one, for pay-as-clear and pay-as-bid."""

from __future__ import annotations

import httpx
import pytest

from tests.marketplace.conftest import HOUR, T0, Market

SLOT_A = T0 + 2 * HOUR


def _auction(market: Market, mechanism: str) -> tuple[str, dict[str, str], dict[str, str], dict[str, httpx.Client]]:
    """Three offers and three bids in one slot, plus a cancelled bid.

    By hand, in merit order: offers A1 100 Wh @10, A2 200 @12, A3 150 @15; bids B1 120 @16, B2 250 @13,
    B3 200 @11. A1-B1 100 Wh (B1 has 20 left); A2-B1 20 (A2 has 180 left); A2-B2 180 (A2 sold out,
    B2 has 70 left); A3 @15 against B2 @13 no longer crosses. Pay-as-clear: all at 12 (A2, the
    marginal offer); pay-as-bid: at 16, 16 and 13.
    """
    zone = market.new_zone(mechanism, gate_closure_s=120, min_lot_wh=10)
    offers, bids, clients = {}, {}, {}
    for name, energy, price in (("A1", 100, 10), ("A2", 200, 12), ("A3", 150, 15)):
        _, producer = market.join(zone, "producer", capacity_w=4000)
        answer = producer.post("/v1/offers", json={"slot_start_ms": SLOT_A, "energy_wh_per_slot": energy,
                                                   "price_cents_per_kwh": price})
        assert answer.status_code == 201, answer.text
        offers[name] = answer.json()["items"][0]["offer_id"]
        clients[name] = producer
    for name, energy, price in (("B1", 120, 16), ("B2", 250, 13), ("B3", 200, 11), ("B4", 500, 30)):
        _, consumer = market.join(zone, "consumer")
        answer = consumer.post("/v1/bids", json={"zone": zone, "slot_start_ms": SLOT_A, "energy_wh": energy,
                                                 "price_cents_per_kwh": price})
        assert answer.status_code == 201, answer.text
        assert (answer.json()["kind"], answer.json()["status"], answer.json()["offer_id"]) == ("bid", "open", None)
        bids[name] = answer.json()["order_id"]
        clients[name] = consumer
    # B4 would take everything at 30 c/kWh, but its consumer cancels it before the gate.
    cancelled = clients["B4"].delete(f"/v1/orders/{bids['B4']}")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    return zone, offers, bids, clients


@pytest.mark.parametrize(
    ("mechanism", "prices", "clearing_price"),
    [("pay_as_clear", (12, 12, 12), 12), ("pay_as_bid", (16, 16, 13), None)],
)
def test_auction_clears_at_gate_closure_as_computed_by_hand(
    market: Market, mechanism: str, prices: tuple[int, int, int], clearing_price: int | None
) -> None:
    zone, offers, bids, clients = _auction(market, mechanism)
    assert market.operator.get("/v1/trades", params={"zone": zone}).json()["items"] == []

    market.clock.set(SLOT_A - 120_000)
    slot = market.wait_for_slot(zone, SLOT_A, "closed")
    assert (slot["mechanism"], slot["clearing_price_cents_per_kwh"], slot["traded_wh"]) == (mechanism, clearing_price, 300)

    trades = market.operator.get("/v1/trades", params={"zone": zone}).json()["items"]
    got = sorted((t["offer_id"], t["order_id"], t["energy_wh"], t["price_cents_per_kwh"], t["amount_millicents"])
                 for t in trades)
    expected = sorted([
        (offers["A1"], bids["B1"], 100, prices[0], 100 * prices[0]),
        (offers["A2"], bids["B1"], 20, prices[1], 20 * prices[1]),
        (offers["A2"], bids["B2"], 180, prices[2], 180 * prices[2]),
    ])
    assert got == expected

    statuses = {name: clients[name].get(f"/v1/orders/{bids[name]}").json() for name in ("B1", "B2", "B3", "B4")}
    assert {n: (o["status"], o["filled_wh"]) for n, o in statuses.items()} == {
        "B1": ("filled", 120), "B2": ("partially_filled", 180), "B3": ("unfilled", 0), "B4": ("cancelled", 0)}
    sold = {name: clients[name].get(f"/v1/offers/{offers[name]}").json() for name in ("A1", "A2", "A3")}
    assert {n: (o["status"], o["sold_wh"]) for n, o in sold.items()} == {
        "A1": ("closed", 100), "A2": ("closed", 200), "A3": ("closed", 0)}
    # Each consumer sees its own purchases, and what it owes for them.
    assert clients["B2"].get("/v1/balance").json()["bought"]["contracted_millicents"] == 180 * prices[2]


def test_auction_rules_are_enforced_with_the_field_named(market: Market) -> None:
    zone = market.new_zone("pay_as_clear", gate_closure_s=120, min_lot_wh=50)
    _, producer = market.join(zone, "producer", capacity_w=2000)
    _, consumer = market.join(zone, "consumer")
    offer = producer.post("/v1/offers", json={"slot_start_ms": SLOT_A, "energy_wh_per_slot": 400,
                                              "price_cents_per_kwh": 10}).json()["items"][0]["offer_id"]

    bought = consumer.post("/v1/orders", json={"offer_id": offer})
    assert (bought.status_code, bought.json()["field"]) == (409, "offer_id")
    assert "place a bid" in bought.json()["reason"]
    small = consumer.post("/v1/bids", json={"slot_start_ms": SLOT_A, "energy_wh": 20, "price_cents_per_kwh": 10})
    assert (small.status_code, small.json()["field"]) == (422, "energy_wh")
    assert "minimum lot of 50 Wh" in small.json()["reason"]
    off_grid = consumer.post("/v1/bids", json={"slot_start_ms": SLOT_A + 60_000, "energy_wh": 100, "price_cents_per_kwh": 10})
    assert (off_grid.status_code, off_grid.json()["field"]) == (422, "slot_start_ms")

    bilateral_zone = market.new_zone("bilateral")
    _, bilateral_consumer = market.join(bilateral_zone, "consumer")
    wrong = bilateral_consumer.post("/v1/bids", json={"slot_start_ms": SLOT_A, "energy_wh": 100, "price_cents_per_kwh": 10})
    assert (wrong.status_code, wrong.json()["field"]) == (409, "slot_start_ms")

    market.clock.set(SLOT_A - 120_000)
    late = consumer.post("/v1/bids", json={"slot_start_ms": SLOT_A, "energy_wh": 100, "price_cents_per_kwh": 10})
    assert (late.status_code, late.json()["field"]) == (409, "slot_start_ms")
    assert "trading has ended" in late.json()["reason"]
