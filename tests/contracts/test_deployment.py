"""Deployment records, the anvil stack component, the CLI, and the committed artifacts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from web3 import Web3

from contracts.artifacts import ARTIFACTS_DIR, load
from contracts.deployment import DeploymentError, ensure_deployed, load_deployment, read_record, record_path
from contracts.devchain import ADMIN, ORACLE, dev_account, in_process_chain
from contracts.transactions import Sender
from quartier.stack import Stack
from quartier.stack.chain import CHAIN_ID, Chain, repo_root
from quartier.stack.component import pid_alive, tcp_open


def test_deployment_is_recorded_and_reused(tmp_path: Path) -> None:
    w3 = in_process_chain()
    admin, oracle = Sender(w3, dev_account(ADMIN)), dev_account(ORACLE).address

    first, created = ensure_deployed(w3, admin, oracle, tmp_path)
    again, created_again = ensure_deployed(w3, admin, oracle, tmp_path)

    assert created and not created_again and again == first
    assert read_record(tmp_path, w3.eth.chain_id) == first
    assert load_deployment(w3, tmp_path).market == first.market
    # Other parameters make a new deployment, and the record follows it.
    changed, created_changed = ensure_deployed(w3, admin, oracle, tmp_path, gate_closure_s=60)
    assert created_changed and changed.market != first.market and changed.gate_closure_s == 60
    assert read_record(tmp_path, w3.eth.chain_id) == changed

    # A reset chain (same chain id, nothing deployed) is noticed, not trusted.
    fresh = in_process_chain()
    with pytest.raises(DeploymentError, match="no longer holds the market"):
        load_deployment(fresh, tmp_path)
    redeployed, created_fresh = ensure_deployed(fresh, Sender(fresh, dev_account(ADMIN)), oracle, tmp_path, gate_closure_s=60)
    assert created_fresh and len(fresh.eth.get_code(redeployed.market)) > 0


def test_no_record_says_how_to_deploy(tmp_path: Path) -> None:
    with pytest.raises(DeploymentError, match="run: quartier chain deploy"):
        load_deployment(in_process_chain(), tmp_path)


def test_chain_component_is_healthy_stops_cleanly_and_keeps_its_state(tmp_path: Path) -> None:
    stack = Stack(tmp_path, [Chain()])
    overrides = stack.up()
    try:
        assert overrides == {"chain": {"rpc_url": overrides["chain"]["rpc_url"], "chain_id": CHAIN_ID}}
        [status] = stack.status()
        assert status.healthy and status.running
        w3 = Web3(Web3.HTTPProvider(overrides["chain"]["rpc_url"]))
        assert w3.eth.chain_id == CHAIN_ID
        assert w3.eth.get_balance(dev_account(0).address) > 0  # the deterministic dev accounts
        record, _ = ensure_deployed(w3, Sender(w3, dev_account(ADMIN)), dev_account(ORACLE).address, tmp_path)
        port, pid = status.port, status.pid
    finally:
        assert stack.down() == ["chain"]
    assert not pid_alive(pid) and not tcp_open(port)
    assert (tmp_path / "chain" / "anvil-state.json").stat().st_size > 0

    overrides = stack.up()
    try:
        w3 = Web3(Web3.HTTPProvider(overrides["chain"]["rpc_url"]))
        assert load_deployment(w3, tmp_path) == record  # code still there, same hash
        again, created = ensure_deployed(w3, Sender(w3, dev_account(ADMIN)), dev_account(ORACLE).address, tmp_path)
        assert not created and again == record
    finally:
        stack.down()


def test_chain_component_names_what_is_missing(tmp_path: Path) -> None:
    assert Chain(root=tmp_path).missing() == "chain: anvil not found — run ./dev setup (npm ci)"
    assert Chain().missing() is None


def test_cli_deploys_once_and_reports_status(chain: dict[str, Any], tmp_path: Path) -> None:
    env = {
        **os.environ,
        "QUARTIER_STATE_DIR": str(tmp_path),
        "QUARTIER_CHAIN__RPC_URL": chain["chain"]["rpc_url"],
    }

    def quartier(*args: str) -> dict[str, Any]:
        done = subprocess.run(
            [sys.executable, "-m", "quartier.cli", "chain", *args, "--json"],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.splitlines()[-1])

    first = quartier("deploy")
    second = quartier("deploy")
    status = quartier("status")

    assert first["created"] and not second["created"] and second["market"] == first["market"]
    assert len(first["minted_cents"]) == 8 and set(first["minted_cents"].values()) == {1_000_000}
    assert Path(first["record"]) == record_path(tmp_path, CHAIN_ID)
    assert status["market"] == first["market"] and status["token"] == first["token"]
    assert status["token_supply_cents"] >= 8_000_000
    assert status["escrow_held_cents"] == 0 and status["last_settled_slot"] is None


def test_cli_status_without_a_deployment_explains(chain: dict[str, Any], tmp_path: Path) -> None:
    env = {**os.environ, "QUARTIER_STATE_DIR": str(tmp_path), "QUARTIER_CHAIN__RPC_URL": chain["chain"]["rpc_url"]}
    done = subprocess.run(
        [sys.executable, "-m", "quartier.cli", "chain", "status"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1 and "run: quartier chain deploy" in done.stderr


def test_committed_artifacts_match_a_fresh_compilation() -> None:
    node = shutil.which("node")
    assert node, "node is required to check the artifacts (./dev setup installs it)"
    done = subprocess.run(
        [node, str(repo_root() / "contracts" / "compile.mjs"), "--check"], capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr + done.stdout
    market = json.loads((ARTIFACTS_DIR / "QuartierMarket.json").read_text())
    assert market["settings"]["evmVersion"] == "cancun"
    assert market["compiler"]["version"].startswith("0.8.37+")
    assert load("QuartierMarket").bytecode.startswith("0x60")
