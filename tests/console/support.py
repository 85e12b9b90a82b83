"""A simulated fleet and the console service in one event loop, on the real broker, for roll-out tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from console.service import ConsoleService, build
from quartier.settings import Settings
from simulator.config import FleetConfig
from simulator.run import RunPlan, Summary, run

T = TypeVar("T")
PARIS = ZoneInfo("Europe/Paris")


def tonight_at(hour: int) -> float:
    """Unix time of ``hour``:00 Paris time today: inside a night-time roll-out window."""
    day = datetime.now(PARIS).replace(hour=hour, minute=0, second=0, microsecond=0)
    return (day - timedelta(days=1)).timestamp()


@dataclass
class Running:
    console: ConsoleService
    simulator: asyncio.Task[Summary]

    async def until(self, check: Callable[[], T | None], timeout_s: float, what: str) -> T:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            result = check()
            if result:
                return result
            if self.simulator.done():
                self.simulator.result()  # raises the simulator's error, if any
                raise AssertionError(f"the simulator stopped before {what}")
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
            await asyncio.sleep(0.25)


@contextlib.asynccontextmanager
async def fleet_and_console(settings: Settings, config: FleetConfig, plan: RunPlan) -> AsyncIterator[Running]:
    console = build(settings)
    await console.start()
    stop = asyncio.Event()
    console_task = asyncio.create_task(console.run(stop))
    simulator = asyncio.create_task(run(config, plan, settings))
    try:
        yield Running(console, simulator)
    finally:
        simulator.cancel()
        stop.set()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await simulator
        await console_task
        await console.stop()


async def wait(check: Callable[[], Awaitable[Any]], timeout_s: float, what: str) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not (result := await check()):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.25)
    return result
