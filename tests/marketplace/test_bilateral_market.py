"""A bilateral zone over the real API: listing, browsing, buying part and all, amending, withdrawing,
the capacity cap, gate closure and slot closing by the scheduler."""

from __future__ import annotations

from tests.marketplace.conftest import HOUR, SLOT, T0, Market

SLOT_A = T0 + HOUR  # gate closure 5 minutes before


def test_a_producer_lists_a_window_and_neighbours_buy_it_until_gate_closure(market: Market) -> None:
    zone = market.new_zone("bilateral", gate_closure_s=300, min_lot_wh=100)
    producer, p = market.join(zone, "producer", capacity_w=4000)  # at most 1000 Wh per slot
    c1_name, c1 = market.join(zone, "consumer")
    _, c2 = market.join(zone, "consumer")
    _, elsewhere = market.join(market.new_zone(), "consumer")

    # One call lists tomorrow afternoon's surplus: 4 slots of 800 Wh at 15 c/kWh.
    listed = p.post("/v1/offers", json={"zone": zone, "slot_start_ms": SLOT_A, "slot_end_ms": SLOT_A + 4 * SLOT,
                                        "energy_wh_per_slot": 800, "price_cents_per_kwh": 15})
    assert listed.status_code == 201, listed.text
    offers = listed.json()["items"]
    assert [o["slot_start_ms"] for o in offers] == [SLOT_A + i * SLOT for i in range(4)]
    assert all(o["remaining_wh"] == 800 and o["producer"] == producer and o["status"] == "open" for o in offers)
    a, b, c, _ = (o["offer_id"] for o in offers)

    # The installation cannot produce more than 1000 Wh in a slot: 800 are already offered.
    capped = p.post("/v1/offers", json={"slot_start_ms": SLOT_A, "energy_wh_per_slot": 300, "price_cents_per_kwh": 10})
    assert capped.status_code == 422
    assert capped.json()["field"] == "energy_wh_per_slot"
    assert "4000 W" in capped.json()["reason"] and "800 Wh are already offered" in capped.json()["reason"]

    # Consumers of the zone browse the open offers, without learning who the producer is.
    seen = c1.get("/v1/offers", params={"slot_start_ms": SLOT_A}).json()["items"]
    assert [(o["offer_id"], o["remaining_wh"], o["producer"]) for o in seen] == [(a, 800, None)]
    # A consumer of another zone does not see them at all.
    assert elsewhere.get("/v1/offers").json()["items"] == []
    assert elsewhere.get(f"/v1/offers/{a}").status_code == 404

    # Part of an offer, then too much, then a remainder below the minimum lot, then the rest.
    bought = c1.post("/v1/orders", json={"offer_id": a, "energy_wh": 300})
    assert bought.status_code == 201, bought.text
    assert bought.json()["status"] == "filled"
    assert (bought.json()["filled_wh"], bought.json()["price_cents_per_kwh"], bought.json()["kind"]) == (300, 15, "purchase")
    too_much = c2.post("/v1/orders", json={"offer_id": a, "energy_wh": 600})
    assert (too_much.status_code, too_much.json()["field"]) == (409, "energy_wh")
    assert "only 500 Wh" in too_much.json()["reason"]
    crumbs = c2.post("/v1/orders", json={"offer_id": a, "energy_wh": 450})
    assert crumbs.status_code == 409 and "would leave 50 Wh" in crumbs.json()["reason"]
    rest = c2.post("/v1/orders", json={"offer_id": a})
    assert rest.status_code == 201 and rest.json()["filled_wh"] == 500
    assert c1.get(f"/v1/offers/{a}").json()["remaining_wh"] == 0
    assert [o["offer_id"] for o in c1.get("/v1/offers", params={"slot_start_ms": SLOT_A}).json()["items"]] == []

    # Amending: energy and price change; not beyond the installation; not below what is sold.
    amended = p.patch(f"/v1/offers/{b}", json={"energy_wh": 1000, "price_cents_per_kwh": 12})
    assert amended.status_code == 200, amended.text
    assert (amended.json()["energy_wh"], amended.json()["price_cents_per_kwh"]) == (1000, 12)
    over = p.patch(f"/v1/offers/{b}", json={"energy_wh": 1100})
    assert (over.status_code, over.json()["field"]) == (422, "energy_wh")
    below_sold = p.patch(f"/v1/offers/{a}", json={"energy_wh": 500})
    assert (below_sold.status_code, below_sold.json()["field"]) == (409, "energy_wh")
    assert "800 Wh of the offer are already sold" in below_sold.json()["reason"]

    # Withdrawing: gone from the market.
    withdrawn = p.delete(f"/v1/offers/{c}")
    assert withdrawn.status_code == 200 and withdrawn.json()["status"] == "withdrawn"
    assert c1.post("/v1/orders", json={"offer_id": c}).status_code == 404

    # Gate closure of the first slot: nothing more on it, but the next slot still trades.
    market.clock.set(SLOT_A - 300_000)
    late = c1.post("/v1/orders", json={"offer_id": a, "energy_wh": 100})
    assert late.status_code == 409 and late.json()["field"] == "offer_id"
    assert "gate closure" in late.json()["reason"] or "trading has ended" in late.json()["reason"]
    late_listing = p.post("/v1/offers", json={"slot_start_ms": SLOT_A, "energy_wh_per_slot": 100, "price_cents_per_kwh": 1})
    assert (late_listing.status_code, late_listing.json()["field"]) == (409, "slot_start_ms")
    assert c1.post("/v1/orders", json={"offer_id": b, "energy_wh": 200}).status_code == 201

    # The scheduler closes the slot at its gate: offers close, trades stand.
    slot = market.wait_for_slot(zone, SLOT_A, "closed")
    assert (slot["mechanism"], slot["traded_wh"], slot["clearing_price_cents_per_kwh"]) == ("bilateral", 800, None)
    assert p.get(f"/v1/offers/{a}").json()["status"] == "closed"
    assert p.get(f"/v1/offers/{b}").json()["status"] == "open"

    sales = p.get("/v1/trades").json()["items"]
    assert sorted((t["slot_start_ms"], t["energy_wh"], t["amount_millicents"]) for t in sales) == [
        (SLOT_A, 300, 4500), (SLOT_A, 500, 7500), (SLOT_A + SLOT, 200, 2400)]
    assert {t["status"] for t in sales} == {"contracted"}
    purchases = c1.get("/v1/trades").json()["items"]
    assert [(t["consumer"], t["energy_wh"]) for t in purchases] == [(c1_name, 300), (c1_name, 200)]

    balance = c1.get("/v1/balance").json()
    assert balance["bought"]["contracted_wh"] == 500
    assert balance["bought"]["contracted_millicents"] == 300 * 15 + 200 * 12
    assert balance["bought"]["delivered_wh"] == 0 and balance["sold"]["contracted_wh"] == 0
    orders = c1.get("/v1/orders").json()["items"]
    assert [(o["slot_start_ms"], o["status"]) for o in orders] == [(SLOT_A, "filled"), (SLOT_A + SLOT, "filled")]


def test_a_zone_keeps_its_rules_for_slots_already_open(market: Market) -> None:
    zone = market.new_zone("bilateral", gate_closure_s=600)
    _, p = market.join(zone, "producer", capacity_w=2000)
    assert p.post("/v1/offers", json={"slot_start_ms": SLOT_A, "energy_wh_per_slot": 100, "price_cents_per_kwh": 9}).status_code == 201
    # The operator switches the zone to an auction: the open slot still trades bilaterally.
    assert market.operator.put(f"/v1/zones/{zone}", json={"mechanism": "pay_as_clear"}).status_code == 200
    slot = market.operator.get(f"/v1/slots/{zone}/{SLOT_A}").json()
    assert (slot["mechanism"], slot["gate_ms"]) == ("bilateral", SLOT_A - 600_000)
    listed = p.post("/v1/offers", json={"slot_start_ms": SLOT_A + SLOT, "energy_wh_per_slot": 100, "price_cents_per_kwh": 9})
    assert listed.status_code == 201
    assert market.operator.get(f"/v1/slots/{zone}/{SLOT_A + SLOT}").json()["mechanism"] == "pay_as_clear"
