"""The market under test: the real API over HTTP (uvicorn on a free port, in its own thread and event
loop), the real broker, SQLite read models, and a clock the test moves by hand.

One server per test module; each test trades in zones of its own (``new_zone``), so tests never see
each other's slots. ``Market`` wraps the HTTP calls a test makes, as the user would make them.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from quartier.settings import Settings

from marketplace.api.app import create_app
from marketplace.clock import ManualClock
from marketplace.service import wire

# 2030-01-01T00:00:00Z: a fixed "now" for every test; slots are counted from here.
T0 = 1_893_456_000_000
SLOT = 900_000
HOUR = 3_600_000


def market_settings(broker: dict[str, Any], state_dir: Path, prefix: str | None = None,
                    database_url: str = "", influx: dict[str, Any] | None = None) -> Settings:
    return Settings(
        state_dir=state_dir,
        database_url=database_url,
        kafka={**broker["kafka"], "topic_prefix": prefix or f"m{uuid.uuid4().hex[:8]}."},
        influx=influx or {},
        # The tests' principals make hundreds of requests a minute; the API layer's own tests cover the limit.
        api={"requests_per_minute": 1_000_000, "anonymous_requests_per_minute": 1_000_000},
    )


class RunningMarket:
    """A market service and its API, served by uvicorn in a thread with its own event loop."""

    def __init__(self, settings: Settings, clock: ManualClock, close_interval_s: float | None = 0.1,
                 charts: bool = False) -> None:
        self.settings = settings
        self.clock = clock
        # Charts (InfluxDB) only where a test gives the market an InfluxDB of its own.
        self.service = wire(settings, clock=clock, close_interval_s=close_interval_s, charts=charts)
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        config = uvicorn.Config(create_app(self.service, manage=True), log_level="warning", lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="market-api", daemon=True)
        self._error: BaseException | None = None

    def _run(self) -> None:
        try:
            asyncio.run(self._server.serve(sockets=[self._sock]))
        except BaseException as exc:  # reported by start()
            self._error = exc

    def start(self) -> RunningMarket:
        self._thread.start()
        deadline = time.monotonic() + 60
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the market API did not start: {self._error!r}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)
        self._sock.close()
        if self._thread.is_alive():
            raise RuntimeError("the market API did not stop")

    def token(self, participant: str, role: str) -> str:
        return self.service.tokens.issue(participant, role, self.clock.now_ms())  # type: ignore[arg-type]


class Market:
    """HTTP calls as a participant makes them; ``as_(token)`` gives a client with that token."""

    def __init__(self, running: RunningMarket) -> None:
        self.running = running
        self.clock = running.clock
        self.operator_token = running.token("operator-1", "operator")
        self.operator = self.as_(self.operator_token)

    def as_(self, token: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.running.url, headers=headers, timeout=30)

    def new_zone(self, mechanism: str = "bilateral", gate_closure_s: int = 300, min_lot_wh: int = 1) -> str:
        zone = f"z-{uuid.uuid4().hex[:8]}"
        answer = self.operator.put(f"/v1/zones/{zone}", json={"mechanism": mechanism, "gate_closure_s": gate_closure_s,
                                                              "min_lot_wh": min_lot_wh})
        assert answer.status_code == 200, answer.text
        return zone

    def join(self, zone: str, role: str, capacity_w: int = 0, name: str | None = None) -> tuple[str, httpx.Client]:
        """Registers a participant through the API and returns its name and a client with its token."""
        name = name or f"{role[0]}-{uuid.uuid4().hex[:8]}"
        meter = f"{uuid.uuid4().int % 10**12:012d}"
        answer = self.operator.post("/v1/participants", json={
            "participant": name, "zone": zone, "meter": meter, "roles": [role], "capacity_w": capacity_w})
        assert answer.status_code == 201, answer.text
        issued = self.operator.post(f"/v1/participants/{name}/tokens", json={"role": role})
        assert issued.status_code == 201, issued.text
        return name, self.as_(issued.json()["token"])

    def wait_for_slot(self, zone: str, slot_start_ms: int, status: str = "closed", timeout_s: float = 30) -> dict[str, Any]:
        """Waits (bounded) for the scheduler to bring a slot to ``status``."""
        deadline = time.monotonic() + timeout_s
        while True:
            answer = self.operator.get(f"/v1/slots/{zone}/{slot_start_ms}")
            if answer.status_code == 200 and answer.json()["status"] == status:
                return answer.json()
            if time.monotonic() > deadline:
                raise AssertionError(f"slot {slot_start_ms} of {zone} did not become {status}: {answer.text}")
            time.sleep(0.05)


@pytest.fixture(scope="module")
def running_market(broker: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMarket]:
    settings = market_settings(broker, tmp_path_factory.mktemp("market"))
    running = RunningMarket(settings, ManualClock(T0)).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def market(running_market: RunningMarket) -> Iterator[Market]:
    running_market.clock.set(T0)
    yield Market(running_market)
