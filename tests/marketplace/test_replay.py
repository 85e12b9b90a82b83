"""The log is the market: read models caught up after a restart, rebuilt from the log by
``quartier market rebuild`` (twice, identically), and slots closed exactly once across restarts."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from quartier import events as ev
from quartier import kafka, topics
from quartier.settings import Settings

from marketplace.clock import ManualClock
from marketplace.readmodel import ReadModel
from tests.marketplace.conftest import HOUR, SLOT, T0, Market, RunningMarket, market_settings

SLOT_A = T0 + HOUR


def _dump(url: str) -> dict[str, list[tuple[Any, ...]]]:
    read_model = ReadModel(url)
    try:
        return read_model.dump()
    finally:
        read_model.close()


def _rebuild(settings: Settings, database_url: str) -> str:
    env = os.environ | {
        "QUARTIER_KAFKA__BOOTSTRAP": settings.kafka.bootstrap,
        "QUARTIER_KAFKA__FLAVOUR": settings.kafka.flavour,
        "QUARTIER_KAFKA__TOPIC_PREFIX": settings.kafka.topic_prefix,
        "QUARTIER_DATABASE_URL": database_url,
    }
    done = subprocess.run([sys.executable, "-m", "quartier.cli", "market", "rebuild", "--json", "--no-charts"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def _slot_closings(settings: Settings) -> Counter[tuple[str, int]]:
    records = asyncio.run(kafka.read_all(settings, settings.topic(topics.MARKET_EVENTS.name),
                                         ev.decoder(ev.MarketEvent).decode))
    return Counter((e.zone, e.slot_start_ms) for e in records if isinstance(e, ev.SlotClosed))


def _trade(market: Market) -> tuple[str, str]:
    """A bilateral zone and an auction zone with offers, purchases, bids, amendments and withdrawals."""
    bilateral = market.new_zone("bilateral", gate_closure_s=300)
    auction = market.new_zone("pay_as_clear", gate_closure_s=300)
    _, p = market.join(bilateral, "producer", capacity_w=8000)
    _, c = market.join(bilateral, "consumer")
    offers = p.post("/v1/offers", json={"slot_start_ms": SLOT_A, "slot_end_ms": SLOT_A + 3 * SLOT,
                                        "energy_wh_per_slot": 900, "price_cents_per_kwh": 14}).json()["items"]
    assert c.post("/v1/orders", json={"offer_id": offers[0]["offer_id"], "energy_wh": 400}).status_code == 201
    assert p.patch(f"/v1/offers/{offers[1]['offer_id']}", json={"price_cents_per_kwh": 11}).status_code == 200
    assert p.delete(f"/v1/offers/{offers[2]['offer_id']}").status_code == 200
    _, ap = market.join(auction, "producer", capacity_w=8000)
    _, ac = market.join(auction, "consumer")
    assert ap.post("/v1/offers", json={"slot_start_ms": SLOT_A, "energy_wh_per_slot": 700, "price_cents_per_kwh": 9}).status_code == 201
    assert ac.post("/v1/bids", json={"slot_start_ms": SLOT_A, "energy_wh": 300, "price_cents_per_kwh": 20}).status_code == 201
    return bilateral, auction


def test_read_models_catch_up_after_a_restart_and_rebuild_identically_from_the_log(
    broker: dict[str, Any], tmp_path: Path
) -> None:
    live_url = f"sqlite:///{tmp_path / 'live.db'}"
    settings = market_settings(broker, tmp_path / "state", database_url=live_url)
    clock = ManualClock(T0)

    first = RunningMarket(settings, clock).start()
    try:
        bilateral, auction = _trade(Market(first))
    finally:
        first.stop()
    # A copy of the read models as they were: they will miss everything that follows.
    shutil.copy(tmp_path / "live.db", tmp_path / "behind.db")

    # Restarted, the service folds the log again and carries on; the scheduler closes the slots at
    # their gate (the clock is past it while the service is down).
    clock.set(SLOT_A - 300_000)
    second = RunningMarket(settings, clock).start()
    try:
        market = Market(second)
        assert market.wait_for_slot(auction, SLOT_A, "closed")["traded_wh"] == 300
        assert market.wait_for_slot(bilateral, SLOT_A, "closed")["traded_wh"] == 400
        _, late = market.join(bilateral, "consumer")
        open_offer = market.operator.get("/v1/offers", params={"zone": bilateral, "status": "open"}).json()["items"]
        assert late.post("/v1/orders", json={"offer_id": open_offer[0]["offer_id"]}).status_code == 201
    finally:
        second.stop()
    live = _dump(live_url)
    assert len(live["market_trade"]) == 3 and len(live["market_order"]) == 3

    # The read models left behind catch up from the log when a service starts on them.
    behind_url = f"sqlite:///{tmp_path / 'behind.db'}"
    assert _dump(behind_url) != live
    third = RunningMarket(market_settings(broker, tmp_path / "state3", settings.kafka.topic_prefix, behind_url),
                          clock, close_interval_s=None).start()
    third.stop()
    assert _dump(behind_url) == live

    # `quartier market rebuild` replays the log into fresh read models: the same rows, twice.
    rebuilt_url = f"sqlite:///{tmp_path / 'rebuilt.db'}"
    counts = _rebuild(settings, rebuilt_url)
    assert '"trade": 3' in counts
    assert _dump(rebuilt_url) == live
    _rebuild(settings, rebuilt_url)
    assert _dump(rebuilt_url) == live
    # Rebuilding the live read models in place changes nothing either.
    _rebuild(settings, live_url)
    assert _dump(live_url) == live


def test_each_slot_is_closed_exactly_once_across_restarts(broker: dict[str, Any], tmp_path: Path) -> None:
    settings = market_settings(broker, tmp_path / "state", database_url=f"sqlite:///{tmp_path / 'm.db'}")
    clock = ManualClock(T0)
    first = RunningMarket(settings, clock).start()
    try:
        market = Market(first)
        zone = market.new_zone("pay_as_bid", gate_closure_s=60)
        _, p = market.join(zone, "producer", capacity_w=4000)
        _, c = market.join(zone, "consumer")
        for i in range(3):
            p.post("/v1/offers", json={"slot_start_ms": SLOT_A + i * SLOT, "energy_wh_per_slot": 500, "price_cents_per_kwh": 10})
            c.post("/v1/bids", json={"slot_start_ms": SLOT_A + i * SLOT, "energy_wh": 200, "price_cents_per_kwh": 12})
        clock.set(SLOT_A + SLOT - 60_000)  # the first two gates have passed
        market.wait_for_slot(zone, SLOT_A + SLOT, "closed")
    finally:
        first.stop()

    for _ in range(2):
        # Restarted twice with the same clock: the scheduler runs again, finds nothing new to close.
        again = RunningMarket(settings, clock).start()
        try:
            Market(again).wait_for_slot(zone, SLOT_A, "closed")
            assert again.service.state.due_slots(clock.now_ms()) == []
        finally:
            again.stop()
    clock.set(SLOT_A + 2 * SLOT - 60_000)
    last = RunningMarket(settings, clock).start()
    try:
        Market(last).wait_for_slot(zone, SLOT_A + 2 * SLOT, "closed")
    finally:
        last.stop()

    closings = _slot_closings(settings)
    assert closings == {(zone, SLOT_A): 1, (zone, SLOT_A + SLOT): 1, (zone, SLOT_A + 2 * SLOT): 1}


def test_on_postgresql_the_read_models_are_the_same_as_on_sqlite(
    broker: dict[str, Any], postgres: str, tmp_path: Path
) -> None:
    """``database_url`` set to PostgreSQL: the live market projects there (upserts in PostgreSQL's
    dialect), and the same log rebuilt into SQLite gives the same rows, and rebuilt into
    PostgreSQL again too."""
    settings = market_settings(broker, tmp_path / "state", database_url=postgres)
    _rebuild(settings, postgres)  # the session's database starts with this test's (empty) log
    running = RunningMarket(settings, ManualClock(T0)).start()
    try:
        market = Market(running)
        bilateral, auction = _trade(market)
        market.clock.set(SLOT_A - 300_000)
        assert market.wait_for_slot(auction, SLOT_A, "closed")["traded_wh"] == 300
        assert market.wait_for_slot(bilateral, SLOT_A, "closed")["traded_wh"] == 400
    finally:
        running.stop()
    live = _dump(postgres)
    assert (len(live["market_trade"]), len(live["market_order"]), len(live["market_offer"])) == (2, 2, 4)

    sqlite_url = f"sqlite:///{tmp_path / 'rebuilt.db'}"
    _rebuild(settings, sqlite_url)
    assert _dump(sqlite_url) == live
    _rebuild(settings, postgres)
    assert _dump(postgres) == live
