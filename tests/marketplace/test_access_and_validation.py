"""Who may see and change what, and how bad requests are answered: always a 4xx JSON body naming
the field and the reason."""

from __future__ import annotations

import httpx

from tests.marketplace.conftest import HOUR, T0, Market

SLOT_A = T0 + 3 * HOUR


def test_a_participant_cannot_see_or_change_another_participants_orders_and_offers(market: Market) -> None:
    zone = market.new_zone("pay_as_bid")
    producer_name, producer = market.join(zone, "producer", capacity_w=4000)
    _, rival = market.join(zone, "producer", capacity_w=4000)
    mine_name, mine = market.join(zone, "consumer")
    _, neighbour = market.join(zone, "consumer")

    offer = producer.post("/v1/offers", json={"slot_start_ms": SLOT_A, "energy_wh_per_slot": 500,
                                              "price_cents_per_kwh": 10}).json()["items"][0]["offer_id"]
    order = mine.post("/v1/bids", json={"slot_start_ms": SLOT_A, "energy_wh": 300, "price_cents_per_kwh": 12}).json()["order_id"]

    # Another consumer: the order does not exist for it, and it cannot cancel it.
    assert neighbour.get(f"/v1/orders/{order}").status_code == 404
    assert neighbour.get("/v1/orders").json()["items"] == []
    cancel = neighbour.delete(f"/v1/orders/{order}")
    assert (cancel.status_code, cancel.json()["field"]) == (404, "order_id")
    # Another producer cannot amend or withdraw the offer, nor see it as its own.
    assert rival.patch(f"/v1/offers/{offer}", json={"price_cents_per_kwh": 1}).status_code == 404
    assert rival.delete(f"/v1/offers/{offer}").status_code == 404
    assert rival.get("/v1/offers").json()["items"] == []
    # A producer token cannot act as a consumer, and the reverse.
    assert producer.post("/v1/bids", json={"slot_start_ms": SLOT_A, "energy_wh": 10, "price_cents_per_kwh": 1}).status_code == 403
    assert mine.post("/v1/offers", json={"slot_start_ms": SLOT_A, "energy_wh_per_slot": 10, "price_cents_per_kwh": 1}).status_code == 403
    # Nothing changed.
    assert mine.get(f"/v1/orders/{order}").json()["status"] == "open"
    assert producer.get(f"/v1/offers/{offer}").json()["price_cents_per_kwh"] == 10
    # A participant sees its own balance only.
    assert mine.get("/v1/balance", params={"participant": producer_name}).status_code == 403
    assert mine.get("/v1/balance").json()["participant"] == mine_name


def test_only_the_operator_sees_the_whole_market(market: Market) -> None:
    zone, other_zone = market.new_zone(), market.new_zone()
    name, consumer = market.join(zone, "consumer")
    _, far_producer = market.join(other_zone, "producer", capacity_w=1000)
    far_offer = far_producer.post("/v1/offers", json={"slot_start_ms": SLOT_A, "energy_wh_per_slot": 100,
                                                      "price_cents_per_kwh": 5}).json()["items"][0]["offer_id"]

    for path in ("/v1/participants", f"/v1/participants/{name}/tokens"):
        answer = consumer.get(path) if path == "/v1/participants" else consumer.post(path, json={"role": "consumer"})
        assert answer.status_code == 403, path
        assert answer.json()["field"] == "Authorization"
    assert consumer.put(f"/v1/zones/{zone}", json={"mechanism": "pay_as_bid"}).status_code == 403
    assert consumer.get("/v1/slots", params={"zone": other_zone}).status_code == 403
    assert consumer.get(f"/v1/slots/{other_zone}/{SLOT_A}").status_code == 404
    assert consumer.get(f"/v1/offers/{far_offer}").status_code == 404
    assert consumer.get("/v1/participants/someone-else").status_code == 404
    assert consumer.get(f"/v1/participants/{name}").json()["zone"] == zone

    # The operator sees every zone, offer and participant.
    assert market.operator.get(f"/v1/offers/{far_offer}").json()["producer"] is not None
    assert market.operator.get(f"/v1/slots/{other_zone}/{SLOT_A}").status_code == 200
    everyone = market.operator.get("/v1/participants", params={"zone": zone, "limit": 1000}).json()["items"]
    assert [p["participant"] for p in everyone] == [name]


def test_requests_without_a_valid_token_are_refused(market: Market) -> None:
    anonymous = market.as_(None)
    answer = anonymous.get("/v1/orders")
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"].startswith("Bearer")
    assert answer.json()["field"] == "Authorization"
    assert market.as_("qm_not-a-real-token").get("/v1/market/me").status_code == 401
    assert market.as_("something-else").get("/v1/market/me").status_code == 401
    # Public: health and the API's documents.
    assert anonymous.get("/v1/health").json()["status"] == "ok"
    assert anonymous.get("/v1/openapi.json").json()["openapi"].startswith("3.1")
    assert "List energy for sale" in anonymous.get("/v1/docs").text


def _problem(answer: httpx.Response) -> tuple[int, str | None, str | None]:
    body = answer.json()
    assert body["reason"], body
    return answer.status_code, body["location"], body["field"]


def test_bad_requests_get_a_4xx_naming_the_field_and_the_reason(market: Market) -> None:
    zone = market.new_zone()
    _, producer = market.join(zone, "producer", capacity_w=1000)
    listing = {"slot_start_ms": SLOT_A, "energy_wh_per_slot": 100, "price_cents_per_kwh": 10}

    unknown = producer.post("/v1/offers", json=listing | {"colour": "green"})
    assert _problem(unknown) == (422, "body", "colour")
    assert "unknown field" in unknown.json()["reason"]
    assert _problem(producer.post("/v1/offers", json=listing | {"energy_wh_per_slot": "100"})) == (422, "body", "energy_wh_per_slot")
    assert _problem(producer.post("/v1/offers", json=listing | {"energy_wh_per_slot": -5})) == (422, "body", "energy_wh_per_slot")
    assert _problem(producer.post("/v1/offers", json=listing | {"slot_end_ms": None})) == (422, "body", "slot_end_ms")
    missing = producer.post("/v1/offers", json={"slot_start_ms": SLOT_A})
    assert {e["field"] for e in missing.json()["errors"]} == {"energy_wh_per_slot", "price_cents_per_kwh"}
    assert _problem(producer.post("/v1/offers", content=b"{not json", headers={"content-type": "application/json"})) == (400, "body", "body")
    assert _problem(producer.post("/v1/offers", content=b"[1, 2]", headers={"content-type": "application/json"})) == (422, "body", "body")
    assert _problem(producer.post("/v1/offers", content=b"x=1", headers={"content-type": "text/plain"})) == (415, "header", "Content-Type")
    assert _problem(producer.patch("/v1/offers/of-1", json={})) == (422, "body", "energy_wh")
    assert _problem(producer.get("/v1/offers", params={"limit": 0})) == (422, "query", "limit")
    assert _problem(producer.get("/v1/offers", params={"sort": "price"})) == (422, "query", "sort")
    assert _problem(producer.get("/v1/offers/has spaces")) == (422, "path", "offer_id")
    registration = {"participant": "x", "zone": zone, "meter": "12345", "roles": ["consumer"]}
    assert _problem(market.operator.post("/v1/participants", json=registration)) == (422, "body", "meter")
    bad_role = market.operator.post("/v1/participants", json=registration | {"meter": "123456789012", "roles": ["miner"]})
    assert _problem(bad_role) == (422, "body", "roles[0]")
    no_zone = market.operator.post("/v1/participants", json=registration | {"meter": "123456789012", "zone": "nowhere"})
    assert _problem(no_zone) == (409, "body", "zone")
    no_capacity = market.operator.post("/v1/participants", json=registration | {"meter": "123456789012", "roles": ["producer"]})
    assert _problem(no_capacity) == (422, "body", "capacity_w")
    unknown_route = market.operator.get("/v1/nothing-here")
    assert unknown_route.status_code == 404 and unknown_route.json()["error"] == "not_found"
    assert market.operator.post("/v1/health").status_code == 405
