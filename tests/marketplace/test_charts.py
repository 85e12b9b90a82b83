"""The market in InfluxDB: a ``market_slot`` point per zone and slot with what traded, at what price,
and what was delivered; the same points after a rebuild; an InfluxDB outage loses nothing."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from quartier.settings import Settings
from quartier.stack.influx import count_points, ensure_database, query, quote_string

from marketplace.charts import MEASUREMENT, POLICY
from marketplace.clock import ManualClock
from marketplace.rebuild import rebuild
from tests.marketplace.conftest import SLOT, T0, Market, RunningMarket, market_settings
from tests.marketplace.test_settlement_flow import GRACE_MS, SLOT_A, _energy, _meter, _publish


def _influx_settings(broker: dict[str, Any], influx: dict[str, Any], state_dir: Path, prefix: str | None = None,
                     url: str | None = None) -> Settings:
    database = f"m{uuid.uuid4().hex[:10]}"
    settings = market_settings(broker, state_dir, prefix, influx={**influx["influx"], "database": database})
    if url is None:
        ensure_database(settings)
        return settings
    return settings.model_copy(update={"influx": settings.influx.model_copy(update={"url": url})})


def _points(settings: Settings, zone: str) -> list[dict[str, Any]]:
    return query(settings, f'SELECT * FROM "{POLICY}"."{MEASUREMENT}" WHERE zone = {quote_string(zone)}')


def _wait_point(settings: Settings, zone: str, field: str, value: Any, timeout_s: float = 30) -> dict[str, Any]:
    """The zone's SLOT_A point once ``field`` holds ``value`` (points are written behind the answer)."""
    deadline = time.monotonic() + timeout_s
    while True:
        points = [p for p in _points(settings, zone) if p["time"] == SLOT_A]
        if points and points[0].get(field) == value:
            return points[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"{MEASUREMENT} of {zone} never had {field}={value!r}: {points}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def charted(broker: dict[str, Any], influx: dict[str, Any],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMarket]:
    settings = _influx_settings(broker, influx, tmp_path_factory.mktemp("charted"))
    running = RunningMarket(settings, ManualClock(T0), charts=True).start()
    try:
        yield running
    finally:
        running.stop()


def test_a_slots_volumes_prices_and_delivery_reach_influxdb_and_a_rebuild_writes_the_same_point(
    charted: RunningMarket, tmp_path: Path
) -> None:
    market = Market(charted)
    settings = charted.settings
    zone = market.new_zone("bilateral", gate_closure_s=300)
    producer, p = market.join(zone, "producer", capacity_w=8000)
    c1_name, c1 = market.join(zone, "consumer")
    c2_name, c2 = market.join(zone, "consumer")
    offers = []
    for energy, price in ((1000, 20), (500, 14)):
        listed = p.post("/v1/offers", json={"slot_start_ms": SLOT_A, "energy_wh_per_slot": energy,
                                            "price_cents_per_kwh": price})
        assert listed.status_code == 201, listed.text
        offers.append(listed.json()["items"][0]["offer_id"])
    assert c1.post("/v1/orders", json={"offer_id": offers[0], "energy_wh": 600}).status_code == 201
    assert c2.post("/v1/orders", json={"offer_id": offers[1], "energy_wh": 300}).status_code == 201

    # 600 Wh at 20 c/kWh and 300 Wh at 14: 900 Wh at (600*20 + 300*14) / 900 = 18 c/kWh.
    point = _wait_point(settings, zone, "traded_wh", 900)
    assert point["trade_count"] == 2 and point["offered_wh"] == 1500
    assert point["price_cents_per_kwh"] == 18.0
    assert point["amount_millicents"] == 600 * 20 + 300 * 14
    assert point["status"] == "open" and "delivered_wh" not in point  # not known yet

    # The producer delivers 450 Wh of the 900 it sold: 300 to c1 (at 20), 150 to c2 (at 14).
    market.clock.set(SLOT_A - 300_000)
    market.wait_for_slot(zone, SLOT_A, "closed")
    meters = {name: _meter(market, name) for name in (producer, c1_name, c2_name)}
    _publish(settings, [_energy(meters[producer], zone, 0, 450), _energy(meters[c1_name], zone, 700, 0),
                        _energy(meters[c2_name], zone, 400, 0)])
    market.clock.set(SLOT_A + SLOT + GRACE_MS)
    market.wait_for_slot(zone, SLOT_A, "allocated")
    point = _wait_point(settings, zone, "delivered_wh", 450)
    assert point["delivered_amount_millicents"] == 300 * 20 + 150 * 14
    assert point["status"] == "allocated" and point["traded_wh"] == 900

    # A rebuild (read models elsewhere, the same InfluxDB) rewrites the point: still one, unchanged.
    counts = asyncio.run(rebuild(settings.model_copy(update={"state_dir": tmp_path / "rebuilt"})))
    assert counts["market_slot_points"] == counts["slot"] >= 1
    assert count_points(settings, MEASUREMENT, f"zone = {quote_string(zone)}", retention_policy=POLICY) == 1
    assert _points(settings, zone) == [point]

    # The hourly chart query of docs/marketplace.md.
    [hour] = query(settings, f'SELECT sum("traded_wh") AS traded_wh, sum("amount_millicents") / sum("traded_wh") '
                             f'AS price_cents_per_kwh FROM "rollup"."market_slot" WHERE "zone" = {quote_string(zone)} '
                             f"AND time >= {SLOT_A}ms AND time < {SLOT_A + 4 * SLOT}ms GROUP BY time(1h)")
    assert (hour["traded_wh"], hour["price_cents_per_kwh"]) == (900, 18.0)


def test_points_influxdb_missed_are_written_when_the_market_starts_again(
    broker: dict[str, Any], influx: dict[str, Any], tmp_path: Path
) -> None:
    with socket.socket() as closed:  # a port nothing listens on: InfluxDB is down
        closed.bind(("127.0.0.1", 0))
        down_url = f"http://127.0.0.1:{closed.getsockname()[1]}"
    up = _influx_settings(broker, influx, tmp_path / "state")
    down = up.model_copy(update={"influx": up.influx.model_copy(update={"url": down_url})})
    clock = ManualClock(T0)

    first = RunningMarket(down, clock, charts=True).start()
    try:
        market = Market(first)
        zone = market.new_zone("bilateral", gate_closure_s=300)
        _, p = market.join(zone, "producer", capacity_w=8000)
        _, c = market.join(zone, "consumer")
        # The market answers as usual while InfluxDB is down.
        listed = p.post("/v1/offers", json={"slot_start_ms": SLOT_A, "energy_wh_per_slot": 800,
                                            "price_cents_per_kwh": 15})
        assert listed.status_code == 201, listed.text
        bought = c.post("/v1/orders", json={"offer_id": listed.json()["items"][0]["offer_id"], "energy_wh": 250})
        assert bought.status_code == 201, bought.text
    finally:
        first.stop()
    assert _points(up, zone) == []

    second = RunningMarket(up, clock, charts=True, close_interval_s=None).start()
    try:
        point = _wait_point(up, zone, "traded_wh", 250)
        assert (point["price_cents_per_kwh"], point["offered_wh"], point["trade_count"]) == (15.0, 800, 1)
    finally:
        second.stop()
