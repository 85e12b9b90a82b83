"""The market API killed (kill -9) mid-work, twice: while consumers' orders arrive, and while slots
settle on chain. Counted from ``market.events`` and the chain afterwards.

The market runs as ``quartier market api``, its own process, on the real broker and anvil, after
``quartier chain deploy``; its clock is a file the test moves (``market.clock_file``), since a slot
lasts 15 minutes. What a user would check:

- every order the API acknowledged (201) is in the log once; an order whose answer the kill cut off
  is there at most once (a client cannot know its id: that is the in-flight window, one request per
  connection, docs/market.md);
- the restarted API serves each consumer exactly the orders the log holds;
- each slot is settled once (one ``settlement_confirmed`` per slot), and the producer's credit on
  chain is the sum of what it sold, no more (a slot settled twice would pay it twice).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from web3 import Web3

from contracts.amounts import SLOT_SECONDS, opaque_id
from contracts.devchain import advance_to, now
from contracts.market import Market as ChainMarket
from marketplace.clock import FileClock
from marketplace.custody import Custody
from quartier import events as ev
from quartier import topics
from quartier.kafka import read_all
from quartier.settings import Settings
from quartier.stack.component import pick_port, wait_until
from tests.marketplace.test_settlement_flow import _publish
from tests.support import settings_env

SLOTS = 6
CONSUMERS = 3
ORDERS_PER_CONSUMER_AND_SLOT = 4
ORDER_WH = 50  # at 20 c/kWh: 1 cent an order
PRICE_CENTS_PER_KWH = 20
GRACE_S = 60


class MarketProcess:
    """`quartier market api` as docker would run it: started, killed, started again on one port."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs = env, logs
        self.port = pick_port(0)
        self.url = f"http://127.0.0.1:{self.port}"
        self.runs = 0
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.runs += 1
        log = (self.logs / f"market-api-{self.runs}.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "quartier.cli", "market", "api", "--port", str(self.port), "--close-interval", "0.2",
             "--no-access-log"], env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 90
        while not self._healthy():
            assert self.process.poll() is None, f"the market API exited:\n{self.log()}"
            assert time.monotonic() < deadline, f"the market API did not start:\n{self.log()}"
            time.sleep(0.2)

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/v1/health", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def kill(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-4000:] for p in sorted(self.logs.glob("market-api-*.log")))

    def client(self, token: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def _cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "quartier.cli", *args], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _market_log(settings: Settings) -> list[Any]:
    return asyncio.run(read_all(settings, settings.topic(topics.MARKET_EVENTS.name), ev.decoder(ev.MarketEvent).decode))


def _join(operator: httpx.Client, market: MarketProcess, zone: str, role: str, capacity_w: int = 0) -> tuple[str, str, httpx.Client]:
    name, meter = f"{role[0]}-{uuid.uuid4().hex[:8]}", f"{uuid.uuid4().int % 10**12:012d}"
    answer = operator.post("/v1/participants", json={"participant": name, "zone": zone, "meter": meter,
                                                     "roles": [role], "capacity_w": capacity_w})
    assert answer.status_code == 201, answer.text
    issued = operator.post(f"/v1/participants/{name}/tokens", json={"role": role})
    assert issued.status_code == 201, issued.text
    return name, meter, market.client(issued.json()["token"])


def test_the_market_api_killed_mid_work_loses_and_duplicates_nothing(
        broker: dict[str, Any], chain: dict[str, Any], tmp_path: Path) -> None:
    clock_file = tmp_path / "market-now"
    settings = Settings(state_dir=tmp_path / "state", chain=chain["chain"],
                        kafka={**broker["kafka"], "topic_prefix": f"k{uuid.uuid4().hex[:8]}."},
                        market={"clock_file": clock_file, "settlement_grace_s": GRACE_S})
    env = os.environ | settings_env(settings) | {
        "QUARTIER_MARKET__CLOCK_FILE": str(clock_file),
        "QUARTIER_MARKET__SETTLEMENT_GRACE_S": str(GRACE_S),
        # Three consumers place a hundred orders in seconds; the API layer's own tests cover the limit.
        "QUARTIER_API__REQUESTS_PER_MINUTE": "1000000",
    }
    w3 = Web3(Web3.HTTPProvider(settings.chain.rpc_url))
    clock = FileClock(clock_file)
    clock.set(now(w3) * 1000)
    json.loads(_cli(env, "chain", "deploy", "--json"))
    operator_token = _cli(env, "market", "token", "create", "--participant", "operator-1", "--role", "operator")

    market = MarketProcess(env, tmp_path)
    market.start()
    try:
        operator = market.client(operator_token)
        zone = f"z-{uuid.uuid4().hex[:8]}"
        assert operator.put(f"/v1/zones/{zone}", json={"mechanism": "bilateral"}).status_code == 200
        producer, producer_meter, p = _join(operator, market, zone, "producer", capacity_w=8000)
        consumers = [_join(operator, market, zone, "consumer") for _ in range(CONSUMERS)]
        first_ms = (now(w3) // SLOT_SECONDS + 2) * SLOT_SECONDS * 1000
        slots = [first_ms + i * SLOT_SECONDS * 1000 for i in range(SLOTS)]
        listed = p.post("/v1/offers", json={"slot_start_ms": slots[0], "slot_end_ms": slots[-1] + SLOT_SECONDS * 1000,
                                            "energy_wh_per_slot": 1000, "price_cents_per_kwh": PRICE_CENTS_PER_KWH})
        assert listed.status_code == 201, listed.text
        offers = [o["offer_id"] for o in sorted(listed.json()["items"], key=lambda o: o["slot_start_ms"])]
        assert len(offers) == SLOTS

        # --- kill -9 while orders arrive ---------------------------------------------------------
        acknowledged: list[str] = []
        cut_off = Counter[str]()  # per consumer: requests whose answer the kill took away

        def place(name: str, client: httpx.Client) -> None:
            for _ in range(ORDERS_PER_CONSUMER_AND_SLOT):
                for offer in offers:
                    try:
                        answer = client.post("/v1/orders", json={"offer_id": offer, "energy_wh": ORDER_WH})
                    except httpx.TransportError:
                        cut_off[name] += 1
                        return
                    assert answer.status_code == 201, answer.text
                    acknowledged.append(answer.json()["order_id"])

        placing = [threading.Thread(target=place, args=(name, client)) for name, _, client in consumers]
        for thread in placing:
            thread.start()
        total = CONSUMERS * ORDERS_PER_CONSUMER_AND_SLOT * SLOTS
        assert wait_until(lambda: len(acknowledged) >= total // 3, 60), "orders were not acknowledged"
        market.kill()
        for thread in placing:
            thread.join(timeout=60)
        killed_after = len(acknowledged)
        assert killed_after < total, "every order was placed before the kill: the drill killed nothing mid-work"

        market.start()
        placed = [e for e in _market_log(settings) if isinstance(e, ev.OrderPlaced)]
        in_log = Counter(e.order_id for e in placed)
        assert max(in_log.values()) == 1  # no order twice
        assert set(acknowledged) <= set(in_log)  # every acknowledged order kept
        # What is there beyond the acknowledged ones is at most the one request per consumer in flight.
        assert len(in_log) - len(acknowledged) <= sum(cut_off.values()) <= CONSUMERS
        for name, _, client in consumers:
            served = {o["order_id"] for o in client.get("/v1/orders", params={"limit": 500}).json()["items"]}
            assert served == {e.order_id for e in placed if e.consumer == name}, name

        # --- kill -9 while slots settle ------------------------------------------------------------
        # Every gate passes: each slot closes and its orders are escrowed on chain.
        clock.set(slots[-1] - 600_000)
        on_chain = ChainMarket.from_state(w3, settings.state_dir)
        orders_per_slot = Counter(e.slot_start_ms for e in placed)

        def escrowed() -> bool:
            return all(on_chain.slot_state(opaque_id(zone), s // 1000).orders == orders_per_slot[s] for s in slots)

        assert wait_until(escrowed, 120), f"the orders did not reach the chain:\n{market.log()}"
        # The meters: the producer delivered 1,000 Wh in each slot, each consumer took 500 Wh.
        _publish(settings, [
            ev.SlotEnergy(meter=meter, zone=zone, slot_start_ms=s, completeness=1.0,
                          imported_wh=0 if meter == producer_meter else 500,
                          exported_wh=1000 if meter == producer_meter else 0)
            for s in slots for meter in [producer_meter] + [m for _, m, _ in consumers]
        ])
        advance_to(w3, slots[-1] // 1000 + SLOT_SECONDS)
        clock.set(slots[-1] + SLOT_SECONDS * 1000 + GRACE_S * 1000)

        def confirmed() -> list[int]:
            views = [operator.get(f"/v1/slots/{zone}/{s}").json() for s in slots]
            return [v["slot_start_ms"] for v in views if v["status"] == "confirmed"]

        assert wait_until(lambda: len(confirmed()) >= 1, 120, interval_s=0.02), f"no slot settled:\n{market.log()}"
        market.kill()
        confirmed_at_kill = len(confirmed_in_log := [e for e in _market_log(settings) if isinstance(e, ev.SettlementConfirmed)])
        assert confirmed_at_kill < SLOTS, "every slot settled before the kill: the drill killed nothing mid-work"

        market.start()
        operator = market.client(operator_token)
        assert wait_until(lambda: len(confirmed()) == SLOTS, 180), f"not every slot settled:\n{market.log()}"
    finally:
        market.stop()

    log = _market_log(settings)
    settled = Counter(e.slot_start_ms for e in log if isinstance(e, ev.SettlementConfirmed) and e.zone == zone)
    assert settled == Counter({s: 1 for s in slots}), (confirmed_at_kill, confirmed_in_log)
    # 1 cent per order, every order delivered in full: the producer's credit is the orders' count,
    # and every consumer's escrow was spent (nothing comes back).
    custody = Custody(w3, settings.market.custody_secret)
    assert on_chain.credit_of(custody[producer].address) == len(in_log)
    assert [on_chain.credit_of(custody[name].address) for name, _, _ in consumers] == [0] * CONSUMERS
