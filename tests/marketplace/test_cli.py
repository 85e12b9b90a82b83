"""``quartier market``: the API served by its command, and tokens issued from the command line."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.marketplace.conftest import market_settings
from tests.support import settings_env


def _quartier(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "quartier.cli", "market", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_api_command_serves_the_market_with_tokens_from_the_command_line(broker: dict[str, Any], tmp_path: Path) -> None:
    env = os.environ | settings_env(market_settings(broker, tmp_path / "state"))
    issued = _quartier(env, "token", "create", "--participant", "ops", "--role", "operator")
    assert issued.returncode == 0, issued.stderr
    operator_token = issued.stdout.strip()
    assert operator_token.startswith("qm_")
    refused = _quartier(env, "token", "create", "--participant", "nobody", "--role", "consumer")
    assert refused.returncode != 0 and "not registered as a consumer" in refused.stderr
    assert operator_token not in (tmp_path / "state" / "market.db").read_bytes().decode("latin-1")

    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "quartier.cli", "market", "api", "--port", str(port)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, "the API exited"
            assert time.monotonic() < deadline, "the API did not answer"
            time.sleep(0.1)
        operator = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {operator_token}"})
        assert operator.get("/v1/market/me").json() == {"participant": "ops", "role": "operator", "registered": None}
        assert operator.put("/v1/zones/cli-zone", json={"mechanism": "pay_as_bid"}).status_code == 200
        registered = operator.post("/v1/participants", json={"participant": "cli-consumer", "zone": "cli-zone",
                                                             "meter": "000000000042", "roles": ["consumer"]})
        assert registered.status_code == 201
    finally:
        server.terminate()
        server.wait(timeout=30)
    # The registration is in the read models: the command line now issues a consumer token.
    assert _quartier(env, "token", "create", "--participant", "cli-consumer", "--role", "consumer").returncode == 0
