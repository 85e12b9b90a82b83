"""Settlement over the real API and broker: meter data on ``meter.slots`` decides what each trade
delivered; short delivery is shared pro rata; late data waits for the deadline, which says so."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer

from quartier import events as ev
from quartier import kafka, topics
from quartier.settings import Settings

from tests.marketplace.conftest import HOUR, SLOT, T0, Market

SLOT_A = T0 + HOUR
GRACE_MS = 60_000  # the service's default settlement timing
DEADLINE_MS = 3_600_000


def _publish(settings: Settings, records: list[ev.SlotEnergy]) -> None:
    async def send() -> None:
        await kafka.ensure_topics(settings, [topics.METER_SLOTS])
        producer = AIOKafkaProducer(**kafka.producer_config(settings))
        await producer.start()
        try:
            for r in records:
                await producer.send_and_wait(settings.topic(topics.METER_SLOTS.name), ev.encode(r), key=r.meter.encode())
        finally:
            await producer.stop()

    asyncio.run(send())


def _wait_stored(market: Market, slot_start_ms: int, meters: list[str], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while len(market.running.service.meters.slot(slot_start_ms, meters)) < len(meters):
        if time.monotonic() > deadline:
            raise AssertionError(f"the market did not read meter.slots of {meters}")
        time.sleep(0.05)


def _meter(market: Market, participant: str) -> str:
    return str(market.operator.get(f"/v1/participants/{participant}").json()["meter"])


def _energy(meter: str, zone: str, imported: int, exported: int, completeness: float = 1.0) -> ev.SlotEnergy:
    return ev.SlotEnergy(meter=meter, zone=zone, slot_start_ms=SLOT_A, imported_wh=imported, exported_wh=exported,
                         completeness=completeness)


def _sold(market: Market) -> tuple[str, dict[str, Any], dict[str, httpx.Client]]:
    """A producer sells 600 Wh to c1 and 400 Wh to c2 at 20 c/kWh in SLOT_A, and the slot closes."""
    zone = market.new_zone("bilateral", gate_closure_s=300)
    producer, p = market.join(zone, "producer", capacity_w=8000)
    c1_name, c1 = market.join(zone, "consumer")
    c2_name, c2 = market.join(zone, "consumer")
    listed = p.post("/v1/offers", json={"zone": zone, "slot_start_ms": SLOT_A, "slot_end_ms": SLOT_A + SLOT,
                                        "energy_wh_per_slot": 1000, "price_cents_per_kwh": 20})
    assert listed.status_code == 201, listed.text
    offer = listed.json()["items"][0]["offer_id"]
    assert c1.post("/v1/orders", json={"offer_id": offer, "energy_wh": 600}).status_code == 201
    assert c2.post("/v1/orders", json={"offer_id": offer, "energy_wh": 400}).status_code == 201
    market.clock.set(SLOT_A - 300_000)
    market.wait_for_slot(zone, SLOT_A, "closed")
    meters = {name: _meter(market, name) for name in (producer, c1_name, c2_name)}
    return zone, {"producer": producer, "c1": c1_name, "c2": c2_name, "meters": meters}, {"c1": c1, "c2": c2}


def test_a_producer_short_of_what_it_sold_delivers_pro_rata_once_the_meters_reported(market: Market) -> None:
    zone, who, clients = _sold(market)
    meters = who["meters"]
    _publish(market.running.settings, [
        _energy(meters[who["producer"]], zone, 0, 400, completeness=0.4),  # still arriving
        _energy(meters[who["producer"]], zone, 0, 501),  # the whole slot: 501 Wh of the 1000 sold
        _energy(meters[who["c1"]], zone, 900, 0),
        _energy(meters[who["c2"]], zone, 450, 0),
        _energy(meters[who["producer"]], zone, 0, 380, completeness=0.3),  # re-emitted after a restart
    ])
    market.clock.set(SLOT_A + SLOT + GRACE_MS)
    slot = market.wait_for_slot(zone, SLOT_A, "allocated")
    assert slot["allocation_complete"] is True and slot["missing_meters"] == []

    # 600:400 of 501 Wh: 300.6 and 200.4, the left-over watt-hour to the larger fraction.
    [t1] = clients["c1"].get("/v1/trades").json()["items"]
    [t2] = clients["c2"].get("/v1/trades").json()["items"]
    assert (t1["delivered_wh"], t1["delivered_amount_millicents"], t1["status"]) == (301, 301 * 20, "allocated")
    assert (t2["delivered_wh"], t2["delivered_amount_millicents"], t2["status"]) == (200, 200 * 20, "allocated")


def test_late_meter_data_waits_for_the_deadline_then_settles_with_what_arrived(market: Market) -> None:
    zone, who, clients = _sold(market)
    meters = who["meters"]
    _publish(market.running.settings, [
        _energy(meters[who["producer"]], zone, 0, 1000),
        _energy(meters[who["c1"]], zone, 900, 0),
        # c2's meter never reports the slot.
    ])
    market.clock.set(SLOT_A + SLOT + GRACE_MS)
    # The market has read both records (bounded wait), yet the slot stays closed: data is missing.
    _wait_stored(market, SLOT_A, [meters[who["producer"]], meters[who["c1"]]])
    assert market.operator.get(f"/v1/slots/{zone}/{SLOT_A}").json()["status"] == "closed"
    market.clock.set(SLOT_A + SLOT + DEADLINE_MS)
    slot = market.wait_for_slot(zone, SLOT_A, "allocated")
    assert slot["allocation_complete"] is False
    assert slot["missing_meters"] == [meters[who["c2"]]]
    [t1] = clients["c1"].get("/v1/trades").json()["items"]
    [t2] = clients["c2"].get("/v1/trades").json()["items"]
    assert (t1["delivered_wh"], t2["delivered_wh"]) == (600, 0)


def test_a_market_back_after_the_deadline_allocates_with_the_records_waiting_on_the_topic(market: Market) -> None:
    """As after an outage longer than the deadline: the meters' records are on meter.slots, unread,
    when the clock is already past the deadline. "With what arrived" means what is on the topic."""
    zone, who, clients = _sold(market)
    meters = who["meters"]
    _publish(market.running.settings, [
        _energy(meters[who["producer"]], zone, 0, 1000),
        _energy(meters[who["c1"]], zone, 900, 0),
        _energy(meters[who["c2"]], zone, 450, 0),
    ])
    market.clock.set(SLOT_A + SLOT + DEADLINE_MS)  # no wait for the feed: the scheduler runs every 0.1 s
    slot = market.wait_for_slot(zone, SLOT_A, "allocated")
    assert slot["allocation_complete"] is True and slot["missing_meters"] == []
    [t1] = clients["c1"].get("/v1/trades").json()["items"]
    [t2] = clients["c2"].get("/v1/trades").json()["items"]
    assert (t1["delivered_wh"], t2["delivered_wh"]) == (600, 400)
