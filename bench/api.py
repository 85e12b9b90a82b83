"""API layer benchmark: authenticated GET requests/s against the bare health route, in one run.

``quartier api serve`` runs as its own process (the composed app: every layer a request meets,
authentication, rate limit, metrics, validation, serialization), with the market surface on a
broker and SMTP server of its own, serving the accounts and market surfaces. A household (a confirmed
account that paired a meter, ``quartier households demo-household``) signs in for an access token; a
zone, a producer with offers and a consumer with orders are set up over HTTP. Then, for ``--seconds``
each at ``--concurrency``, three routes are hammered in turn, in ``--rounds`` interleaved rounds:

- ``health``: ``GET /v1/health``, no credential, no read (the baseline);
- ``auth_route``: ``GET /v1/me/alerts`` with the household member's access token (a JWT checked
  against revocation): the household's own alert rules;
- ``offer_listing``: ``GET /v1/offers`` with the market consumer's token: the zone's open offers.

Each authenticated figure is given as a ratio to the health figure of the same run (target >= 0.7).
The client runs on the same cores as the server: figures are for one box, compare ratios.

    python -m bench.api [--seconds 10] [--concurrency 16] [--rounds 5] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench import lifetime
from quartier.stack import Stack
from quartier.stack.broker import Broker
from quartier.stack.smtp import SmtpServer

SLOT_MS = 900_000


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _wait_healthy(url: str, server: subprocess.Popen[bytes], timeout_s: float = 120) -> None:
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=5) as client:
        while True:
            try:
                if (await client.get(f"{url}/v1/health")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() - started > timeout_s:
                raise RuntimeError("quartier api serve did not start; see its log")
            await asyncio.sleep(0.2)


async def _rate(url: str, path: str, headers: dict[str, str], seconds: float, concurrency: int) -> float:
    """Requests/s answered 200 by ``concurrency`` clients, each on one kept-alive connection."""
    done = 0
    deadline = time.perf_counter() + seconds

    async def client_loop() -> None:
        nonlocal done
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:
            while time.perf_counter() < deadline:
                answer = await client.get(path)
                if answer.status_code != 200:
                    raise RuntimeError(f"GET {path}: {answer.status_code} {answer.text[:200]}")
                done += 1

    started = time.perf_counter()
    await asyncio.gather(*(client_loop() for _ in range(concurrency)))
    return done / (time.perf_counter() - started)


def _token(env: dict[str, str], participant: str, role: str) -> str:
    issued = subprocess.run([sys.executable, "-m", "quartier.cli", "market", "token", "create", "--participant",
                             participant, "--role", role], env=env, capture_output=True, text=True, check=True)
    return issued.stdout.strip()


async def _set_up(url: str, operator: str) -> str:
    """A zone with a producer's offers and a consumer's orders; returns the consumer's token."""
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {operator}"}, timeout=30) as ops:
        assert (await ops.put("/v1/zones/bench", json={"mechanism": "bilateral"})).status_code == 200
        for meter, (name, roles, capacity) in enumerate((("bench-producer", ["producer"], 100_000),
                                                         ("bench-consumer", ["consumer"], 0)), start=1):
            answer = await ops.post("/v1/participants", json={"participant": name, "zone": "bench", "roles": roles,
                                                              "meter": f"{meter:012d}", "capacity_w": capacity})
            assert answer.status_code == 201, answer.text
        tokens = {}
        for name, role in (("bench-producer", "producer"), ("bench-consumer", "consumer")):
            answer = await ops.post(f"/v1/participants/{name}/tokens", json={"role": role})
            tokens[role] = answer.json()["token"]
    start = (int(time.time() * 1000) // SLOT_MS + 8) * SLOT_MS
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        listed = await client.post("/v1/offers", headers={"Authorization": f"Bearer {tokens['producer']}"},
                                   json={"slot_start_ms": start, "slot_end_ms": start + 20 * SLOT_MS,
                                         "energy_wh_per_slot": 1000, "price_cents_per_kwh": 12})
        assert listed.status_code == 201, listed.text
        for offer in listed.json()["items"][:10]:
            bought = await client.post("/v1/orders", headers={"Authorization": f"Bearer {tokens['consumer']}"},
                                       json={"offer_id": offer["offer_id"], "energy_wh": 100})
            assert bought.status_code == 201, bought.text
    return tokens["consumer"]


def _household(env: dict[str, str]) -> dict[str, str]:
    """A confirmed account owning a household that paired a meter (its email and password)."""
    made = subprocess.run([sys.executable, "-m", "quartier.cli", "households", "demo-household", "--meter", "100000000001",
                           "--zone", "bench", "--json"], env=env, capture_output=True, text=True, check=True)
    return json.loads(made.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


async def _access_token(url: str, household: dict[str, str]) -> str:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        answer = await client.post("/v1/tokens", json={"email": household["email"], "password": household["password"]})
        answer.raise_for_status()
        return answer.json()["access_token"]  # type: ignore[no-any-return]


async def run(seconds: float, concurrency: int, rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp_name:
        tmp = Path(tmp_name)
        stack = Stack(tmp / "stack", [Broker(), SmtpServer()])
        overrides = stack.up()
        try:
            kafka_settings = overrides["kafka"]
            env = os.environ | {
                "QUARTIER_STATE_DIR": str(tmp / "state"), "QUARTIER_KAFKA__BOOTSTRAP": kafka_settings["bootstrap"],
                "QUARTIER_KAFKA__FLAVOUR": kafka_settings.get("flavour", "tansu"),
                "QUARTIER_KAFKA__TOPIC_PREFIX": "bench-api.", "QUARTIER_MARKET__SETTLE_ON_CHAIN": "false",
                # One client address and one principal send everything: the per-minute limits are not under test.
                "QUARTIER_API__REQUESTS_PER_MINUTE": "100000000",
                "QUARTIER_API__ANONYMOUS_REQUESTS_PER_MINUTE": "100000000",
                **{f"QUARTIER_SMTP__{key.upper()}": str(value) for key, value in overrides["smtp"].items()},
            }
            household = _household(env)
            operator = _token(env, "bench-ops", "operator")
            port = _free_port()
            url = f"http://127.0.0.1:{port}"
            server = subprocess.Popen([sys.executable, "-m", "quartier.cli", "api", "serve", "--port", str(port),
                                       "--surface", "market", "--surface", "accounts", "--no-access-log"], env=env,
                                      stdout=(tmp / "api.log").open("wb"), stderr=subprocess.STDOUT)
            try:
                await _wait_healthy(url, server)
                consumer = {"Authorization": f"Bearer {await _set_up(url, operator)}"}
                member = {"Authorization": f"Bearer {await _access_token(url, household)}"}
                await _rate(url, "/v1/health", {}, min(2.0, seconds), concurrency)  # warm-up
                # Interleaved rounds, so a change in the machine's load falls on every route alike.
                routes = {"health": ("/v1/health", {}), "auth_route": ("/v1/me/alerts", member),
                          "offer_listing": ("/v1/offers", consumer)}
                rates: dict[str, list[float]] = {name: [] for name in routes}
                for _ in range(rounds):
                    for name, (path, headers) in routes.items():
                        rates[name].append(await _rate(url, path, headers, seconds / rounds, concurrency))
                health, auth_route, offers = (sum(rates[n]) / rounds for n in routes)
            finally:
                server.terminate()
                server.wait(timeout=30)
        finally:
            stack.down()
    return {
        "health_per_s": round(health, 1),
        "auth_route_per_s": round(auth_route, 1),
        "ratio": round(auth_route / health, 3),
        "offer_listing_per_s": round(offers, 1),
        "offer_listing_ratio": round(offers / health, 3),
        "seconds": seconds,
        "rounds": rounds,
        "concurrency": concurrency,
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds the seconds are split into")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(run(args.seconds, args.concurrency, args.rounds))
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")


if __name__ == "__main__":
    lifetime.run(main)
