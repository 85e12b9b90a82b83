"""Settlement as a user gets it: `quartier chain deploy`, then `quartier market api` with the default
settings finds that deployment and settles slots on chain with the oracle account and custodial
accounts of its own (funded on the dev chain), on the real broker and anvil.

The slot is walked through by the market built the way the command builds it, with a clock the test
moves (a slot lasts 15 minutes); the command itself is checked to wait for a deployment and then to
connect to it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from web3 import Web3

from contracts.amounts import SLOT_SECONDS, opaque_id
from contracts.devchain import advance_to, now
from contracts.market import Market as ChainMarket
from marketplace import onchain
from marketplace.clock import ManualClock
from marketplace.custody import Custody
from quartier import events as ev
from quartier.settings import Settings
from tests.marketplace.conftest import Market, RunningMarket
from tests.marketplace.test_cli import _free_port
from tests.marketplace.test_settlement_flow import _publish
from tests.support import settings_env

GRACE_MS = 60_000


def _api_says(env: dict[str, str], log_path: Path, expected: str, timeout_s: float = 90) -> str:
    """Runs `quartier market api` until its log contains ``expected``; returns that line."""
    with log_path.open("wb") as out:
        server = subprocess.Popen([sys.executable, "-m", "quartier.cli", "market", "api", "--port", str(_free_port()),
                                   "--close-interval", "0.5"], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            for line in log_path.read_text().splitlines():
                if expected in line:
                    return line
            assert server.poll() is None, f"the API exited:\n{log_path.read_text()}"
            assert time.monotonic() < deadline, f"the API never said {expected!r}:\n{log_path.read_text()}"
            time.sleep(0.2)
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_after_quartier_chain_deploy_the_market_settles_slots_on_chain(
        broker: dict[str, Any], chain: dict[str, Any], tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state", kafka={**broker["kafka"], "topic_prefix": f"d{uuid.uuid4().hex[:8]}."},
                        chain=chain["chain"])
    env = os.environ | settings_env(settings)

    # Before any deployment the command serves the market and says what settlement waits for.
    waiting = _api_says(env, tmp_path / "api-1.log", "not settling on chain yet")
    assert "quartier chain deploy" in waiting

    deployed = subprocess.run([sys.executable, "-m", "quartier.cli", "chain", "deploy", "--json"], env=env,
                              capture_output=True, text=True, timeout=300)
    assert deployed.returncode == 0, deployed.stderr
    record = json.loads(deployed.stdout)
    assert f"market {record['market']}" in _api_says(env, tmp_path / "api-2.log", "settling on chain")

    w3 = Web3(Web3.HTTPProvider(settings.chain.rpc_url))
    clock = ManualClock(now(w3) * 1000)
    running = RunningMarket(settings, clock)
    running.service.connect_chain = lambda: onchain.connect(settings)  # as `quartier market api` does
    running.start()
    try:
        market = Market(running)
        zone = f"z-{uuid.uuid4().hex[:8]}"
        # The zone's default gate (600 s) closes before the chain's (300 s): escrow has time to land.
        assert market.operator.put(f"/v1/zones/{zone}", json={"mechanism": "bilateral"}).status_code == 200
        producer, p = market.join(zone, "producer", capacity_w=8000)
        c1_name, c1 = market.join(zone, "consumer")
        c2_name, c2 = market.join(zone, "consumer")
        slot_ms = (now(w3) // SLOT_SECONDS + 2) * SLOT_SECONDS * 1000
        offer = p.post("/v1/offers", json={"slot_start_ms": slot_ms, "energy_wh_per_slot": 1000,
                                           "price_cents_per_kwh": 20}).json()["items"][0]["offer_id"]
        assert c1.post("/v1/orders", json={"offer_id": offer, "energy_wh": 600}).status_code == 201
        assert c2.post("/v1/orders", json={"offer_id": offer, "energy_wh": 400}).status_code == 201

        clock.set(slot_ms - 600_000)
        market.wait_for_slot(zone, slot_ms, "closed")
        on_chain = ChainMarket.from_state(w3, settings.state_dir)
        deadline = time.monotonic() + 60
        while on_chain.slot_state(opaque_id(zone), slot_ms // 1000).orders < 2:
            assert time.monotonic() < deadline, "the trades did not reach the chain"
            time.sleep(0.1)

        meters = {name: market.operator.get(f"/v1/participants/{name}").json()["meter"]
                  for name in (producer, c1_name, c2_name)}
        _publish(settings, [
            ev.SlotEnergy(meter=meters[producer], zone=zone, slot_start_ms=slot_ms, imported_wh=0, exported_wh=501,
                          completeness=1.0),
            ev.SlotEnergy(meter=meters[c1_name], zone=zone, slot_start_ms=slot_ms, imported_wh=900, exported_wh=0,
                          completeness=1.0),
            ev.SlotEnergy(meter=meters[c2_name], zone=zone, slot_start_ms=slot_ms, imported_wh=450, exported_wh=0,
                          completeness=1.0),
        ])
        advance_to(w3, slot_ms // 1000 + SLOT_SECONDS)
        clock.set(slot_ms + SLOT_SECONDS * 1000 + GRACE_MS)
        slot = market.wait_for_slot(zone, slot_ms, "confirmed", timeout_s=60)
        assert slot["tx_hash"] and slot["block"] > 0 and slot["allocation_complete"] is True
    finally:
        running.stop()

    # 301 and 200 Wh delivered at 20 c/kWh: 10 cents to the producer's custodial account; the
    # consumers' escrows (12 and 8 cents) come back in part (6 and 4).
    custody = Custody(w3, settings.market.custody_secret)
    credits = [on_chain.credit_of(custody[name].address) for name in (producer, c1_name, c2_name)]
    assert credits == [10, 6, 4]
