"""Stream workers as real subprocesses in tests (settings, log, end), and the records tests feed them."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from quartier import events, topics
from quartier.events import AlertEvent, AlertRules, MeterReading, ReadingBatch, shard_of
from quartier.kafka import producer_config, read_all
from quartier.settings import Settings
from tests.support import settings_env

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


class WorkerProcess:
    """A worker subprocess in its own session, logging to a file; killed at exit whatever happens."""

    def __init__(self, argv: list[str], settings: Settings, log_path: Path, extra_env: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, *argv],
                env={**os.environ, **settings_env(settings), **(extra_env or {})},
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def terminate(self, timeout_s: float = 60.0) -> int:
        """SIGTERM, as an operator or a supervisor stops it; returns the exit code.

        A worker still running after ``timeout_s`` fails the test with its log, after SIGUSR1 has
        made it (mode's worker) write every task's stack there: what its stop was waiting for.
        """
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGUSR1)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            raise AssertionError(f"the worker did not stop within {timeout_s:.0f} s of SIGTERM:\n{self.log(600)}") from None

    def kill(self) -> None:
        """SIGKILL: the process dies at once, whatever it was doing."""
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def __enter__(self) -> WorkerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()

    async def until(self, check: Callable[[], Awaitable[T | None]], timeout_s: float, what: str) -> T:
        """Polls ``check`` until it returns something truthy; fails with the worker's log otherwise."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            result = await check()
            if result:
                return result
            if not self.alive():
                raise AssertionError(f"the worker exited ({self.proc.returncode}) before {what}:\n{self.log()}")
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out after {timeout_s}s waiting for {what}:\n{self.log()}")
            await asyncio.sleep(0.5)


def scrape(port: int) -> dict[str, float]:
    """The worker's Prometheus samples by name (labels joined into the name), or {} if not serving yet."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return {}
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    return samples


# --- records ----------------------------------------------------------------------------------


def readings(meter: str, start_ms: int, powers: list[int], seq0: int = 0) -> list[MeterReading]:
    """One reading a second from ``start_ms``; the index grows with the power drawn.

    The index starts at 10 Wh per second of ``start_ms`` (more than any power here adds), so a later
    call for the same meter never goes below an earlier one: the worker rejects an index going down.
    """
    out, wh = [], start_ms / 100
    for i, va in enumerate(powers):
        wh += va / 3600
        out.append(
            MeterReading(
                meter=meter, zone="rennes-01", time_ms=start_ms + i * 1000, seq=seq0 + i, drawn_va=va,
                withdrawn_wh=int(wh), subscribed_kva=9, cutoff_kva=9,
            )
        )
    return out


async def send(settings: Settings, topic: str, messages: list[tuple[bytes | None, bytes]]) -> None:
    producer = AIOKafkaProducer(**producer_config(settings))
    await producer.start()
    try:
        for key, value in messages:
            await producer.send(settings.topic(topic), value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


def batches(settings: Settings, rs: list[MeterReading], size: int = 10) -> list[tuple[bytes, bytes]]:
    shard = shard_of(rs[0].meter, settings.kafka.reading_shards)
    return [
        (str(shard).encode(), events.encode(ReadingBatch(shard=shard, readings=rs[i : i + size])))
        for i in range(0, len(rs), size)
    ]


def quiet_rules(meter: str, **limits: Any) -> AlertRules:
    """Rules with only the given limits on (no disconnect, no fuse warning, no repeat interval)."""
    values: dict[str, Any] = {"disconnect": False, "fuse_warning": False, "repeat_s": 0, **limits}
    return AlertRules(meter=meter, **values)


async def alerts_of(settings: Settings, meter: str) -> list[AlertEvent]:
    all_alerts = await read_all(
        settings, settings.topic(topics.ALERTS_EVENTS.name), events.decoder(AlertEvent).decode  # type: ignore[arg-type]
    )
    return [a for a in all_alerts if a.meter == meter]
