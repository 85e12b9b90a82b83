"""The log misbehaving: a broker gone (commands fail with a 503 that says so, reads go on), and
events appended by someone else (folded in before the next command)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from quartier import events as ev
from quartier.stack import Stack
from quartier.stack.broker import Broker

from marketplace.clock import ManualClock
from marketplace.log import MarketLog
from tests.marketplace.conftest import HOUR, T0, Market, RunningMarket, market_settings


def test_commands_fail_with_503_and_reads_go_on_while_the_broker_is_down(tmp_path: Path) -> None:
    # A broker of its own: this test stops it.
    stack = Stack(tmp_path / "stack", [Broker()])
    broker = stack.up()
    running = None
    try:
        running = RunningMarket(market_settings(broker, tmp_path / "state"), ManualClock(T0), close_interval_s=None).start()
        market = Market(running)
        zone = market.new_zone()
        _, producer = market.join(zone, "producer", capacity_w=2000)
        listing = {"slot_start_ms": T0 + HOUR, "energy_wh_per_slot": 100, "price_cents_per_kwh": 10}
        assert producer.post("/v1/offers", json=listing).status_code == 201

        stack.down()
        refused = producer.post("/v1/offers", json=listing | {"slot_start_ms": T0 + 2 * HOUR})
        assert refused.status_code == 503
        assert refused.json()["error"] == "unavailable" and "Kafka" in refused.json()["reason"]
        assert refused.headers["retry-after"] == "5"
        # The read models still answer, with everything the log confirmed.
        offers = producer.get("/v1/offers").json()["items"]
        assert [o["slot_start_ms"] for o in offers] == [T0 + HOUR]
    finally:
        if running is not None:
            running.stop()
        stack.down()


def test_events_another_writer_appended_are_folded_in_before_the_next_command(running_market: RunningMarket) -> None:
    market = Market(running_market)
    zone = market.new_zone("bilateral")

    async def append_behind_the_services_back() -> None:
        log = MarketLog(running_market.settings)
        await log.start()
        try:
            await log.append(zone, [ev.ZoneConfigured(zone=zone, mechanism="pay_as_clear", gate_closure_s=60,
                                                      min_lot_wh=5, at_ms=T0)])
        finally:
            await log.stop()

    asyncio.run(append_behind_the_services_back())
    # The service has not seen it yet...
    assert market.operator.get(f"/v1/zones/{zone}").json()["mechanism"] == "bilateral"
    # ...until its next command on that zone's partition, which folds it in first.
    _, consumer = market.join(zone, "consumer")
    assert market.operator.get(f"/v1/zones/{zone}").json()["mechanism"] == "pay_as_clear"
    bid = consumer.post("/v1/bids", json={"slot_start_ms": T0 + HOUR, "energy_wh": 5, "price_cents_per_kwh": 1})
    assert bid.status_code == 201, bid.text
