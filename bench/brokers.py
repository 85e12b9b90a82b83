"""The embedded broker's storage options on the reference load: which one carries a day on one box.

``python -m bench.brokers [--meters 48000] [--seconds 30] [--backfill-s 20] [--options memory,s3rver,moto] [--json]``

For each option, a private stack (the broker and its store) in a temporary directory, then:

- **real time**: ``quartier simulate`` at 1 Hz per meter for ``--seconds`` (the reference load):
  the rate the simulator achieved, its worst lag behind the clock, the CPU the broker and its store
  used (cores), their resident memory after it, and the store's disk growth, projected to an hour;
- **backfill**: ``quartier simulate --speed 0`` for ``--backfill-s`` simulated seconds (as fast as the
  producer goes): the produce ceiling, readings/s and MB/s;
- **consume**: a plain aiokafka consumer reads the whole of ``meter.readings`` from the start:
  readings/s and messages/s;
- **restart**: kill -9 of the broker with everything above in its log, started again on the same
  store: seconds until it answers and every partition's high watermark is back, and how many
  messages survived;
- **group stability** (``--groups-s``, also alone with ``--groups-only``): two idle consumers in one
  group (session 6 s, heartbeats every 2 s) for that long: how many assignments each got. 1 each
  means the group formed once and stayed; more means the broker rebalanced it again and again.

The options: ``memory`` (Tansu's memory engine, the tests' broker), ``s3rver`` (Tansu's S3 engine over
npm's s3rver, what the local stack runs) and ``moto`` (Tansu's S3 engine over PyPI's ``moto[server]``,
``pip install 'moto[server]'``: a measuring tool here, not a dependency). The baseline the ratios
are given against is the memory engine, measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench import lifetime
from quartier import topics
from quartier.kafka import end_offsets, ensure_topics
from quartier.settings import KafkaSettings, Settings
from quartier.stack import Stack
from quartier.stack.broker import Broker
from quartier.stack.component import Component, pid_alive, wait_until
from quartier.stack.s3 import BUCKET, S3Store


class MotoStore(S3Store):
    """PyPI's moto[server] as the S3 store (objects in its memory; measured here, not shipped)."""

    name = "moto"

    def missing(self) -> str | None:
        return None if shutil.which("moto_server") else "moto: pip install 'moto[server]'"

    def command(self, port: int, workdir: Path) -> list[str]:
        return [str(shutil.which("moto_server")), "-H", "127.0.0.1", "-p", str(port)]

    def healthy(self, port: int) -> bool:
        return httpx.get(f"http://127.0.0.1:{port}/moto-api/", timeout=2).status_code == 200

    def prepare(self, port: int, workdir: Path) -> None:
        httpx.put(f"http://127.0.0.1:{port}/{BUCKET}", timeout=5).raise_for_status()


def components(option: str) -> list[Component]:
    if option == "memory":
        return [Broker()]
    store = S3Store() if option == "s3rver" else MotoStore()
    return [store, Broker(store=store)]


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


class Probe:
    def __init__(self, root: Path, option: str, args: argparse.Namespace) -> None:
        self.root = root / option
        self.option = option
        self.args = args
        self.stack = Stack(self.root / "stack", components(option))

    def pids(self) -> dict[str, int]:
        record = json.loads(self.stack.record_path.read_text())
        return {name: entry["pid"] for name, entry in record["components"].items()}

    def cpu_s(self) -> dict[str, float]:
        out = {}
        for name, pid in self.pids().items():
            times = psutil.Process(pid).cpu_times()
            out[name] = times.user + times.system
        return out

    def rss_mb(self) -> dict[str, float]:
        return {name: round(psutil.Process(pid).memory_info().rss / 2**20, 1) for name, pid in self.pids().items()}

    def simulate(self, *extra: str) -> dict[str, Any]:
        env = {**os.environ, "QUARTIER_STATE_DIR": str(self.root / "stack")}
        done = subprocess.run(
            [sys.executable, "-m", "quartier.cli", "simulate", "--meters", str(self.args.meters), "--json", "--no-progress",
             "--seed", "7", "--malformed-fraction", "0", *extra],
            env=env, capture_output=True, text=True, timeout=600,
        )
        if done.returncode:
            raise RuntimeError(f"simulate failed on {self.option}: {done.stderr[-2000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    def store_dir(self) -> Path:
        return self.root / "stack" / "s3"

    def run(self) -> dict[str, Any]:
        overrides = self.stack.up()
        settings = Settings(kafka=KafkaSettings(**overrides["kafka"]))
        asyncio.run(ensure_topics(settings))
        out: dict[str, Any] = {"option": self.option, "rss_mb_idle": self.rss_mb()}

        disk0 = dir_bytes(self.store_dir()) if self.option == "s3rver" else 0
        cpu0, t0 = self.cpu_s(), time.monotonic()
        real = self.simulate("--duration", str(self.args.seconds))
        wall = time.monotonic() - t0
        cpu1 = self.cpu_s()
        out["realtime"] = {
            "readings_per_s": real["achieved_rate"],
            "simulator_max_lag_s": real["max_lag_s"],
            "cores": {name: round((cpu1[name] - cpu0[name]) / wall, 3) for name in cpu1},
            "rss_mb_after": self.rss_mb(),
        }
        if self.option == "s3rver":
            grown = dir_bytes(self.store_dir()) - disk0
            out["realtime"]["disk_mb"] = round(grown / 2**20, 1)
            out["realtime"]["disk_gb_per_hour"] = round(grown / self.args.seconds * 3600 / 2**30, 2)

        t0 = time.monotonic()
        back = self.simulate("--duration", str(self.args.backfill_s), "--speed", "0")
        wall = time.monotonic() - t0
        out["backfill"] = {
            "readings_per_s": round(back["readings_produced"] / back["wall_s"]),
            "mb_per_s": round(back["bytes"] / back["wall_s"] / 2**20, 1),
            "wall_s": round(wall, 1),
        }
        out["rss_mb_after_backfill"] = self.rss_mb()
        out["consume"] = asyncio.run(consume_all(settings))
        out["restart"] = self.restart(settings, out["consume"]["messages"])
        out["group_assignments"] = asyncio.run(group_assignments(self.settings_now(), self.args.groups_s))
        return out

    def settings_now(self) -> Settings:
        return Settings(kafka=KafkaSettings(**self.stack.settings_overrides()["kafka"]))

    def run_groups(self) -> dict[str, Any]:
        self.stack.up()
        asyncio.run(ensure_topics(self.settings_now()))
        return {"option": self.option, "group_assignments": asyncio.run(group_assignments(self.settings_now(), self.args.groups_s))}

    def restart(self, settings: Settings, messages: int) -> dict[str, Any]:
        broker_pid = self.pids()["broker"]
        os.killpg(broker_pid, signal.SIGKILL)
        wait_until(lambda: not pid_alive(broker_pid), 10)
        t0 = time.monotonic()
        overrides = self.stack.up()
        settings = Settings(kafka=KafkaSettings(**overrides["kafka"]))
        ready_s = time.monotonic() - t0
        asyncio.run(ensure_topics(settings))
        survived = asyncio.run(message_count(settings))
        return {"ready_s": round(time.monotonic() - t0, 2), "healthy_s": round(ready_s, 2),
                "messages_before": messages, "messages_after": survived}

    def stop(self) -> None:
        self.stack.down()


async def group_assignments(settings: Settings, seconds: float, members: int = 2) -> list[int]:
    """Each member's count of partition assignments while ``members`` idle consumers share a group."""
    from aiokafka.abc import ConsumerRebalanceListener

    class Counting(ConsumerRebalanceListener):
        def __init__(self) -> None:
            self.assignments = 0

        async def on_partitions_revoked(self, revoked: Any) -> None:
            pass

        async def on_partitions_assigned(self, assigned: Any) -> None:
            self.assignments += 1

    stop = asyncio.Event()

    async def member(listener: Counting) -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap, group_id="bench-group-stability",
                                    session_timeout_ms=6000, heartbeat_interval_ms=2000, enable_auto_commit=False)
        consumer.subscribe([topics.METER_READINGS.name], listener=listener)
        await consumer.start()
        try:
            while not stop.is_set():
                await consumer.getmany(timeout_ms=500)
        finally:
            await consumer.stop()

    listeners = [Counting() for _ in range(members)]
    tasks = [asyncio.create_task(member(listener)) for listener in listeners]
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.gather(*tasks)
    return [listener.assignments for listener in listeners]


async def message_count(settings: Settings) -> int:
    topic = topics.METER_READINGS.name
    tps = [TopicPartition(topic, p) for p in range(topics.METER_READINGS.partitions)]
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        ends = await end_offsets(consumer, tps, "tansu")
        begins = await consumer.beginning_offsets(tps)
        return sum(ends[tp] - begins[tp] for tp in tps)
    finally:
        await consumer.stop()


async def consume_all(settings: Settings) -> dict[str, Any]:
    from quartier import events

    decoder = events.Decoder(events.IngestMessage)  # type: ignore[arg-type]
    topic = topics.METER_READINGS.name
    tps = [TopicPartition(topic, p) for p in range(topics.METER_READINGS.partitions)]
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap, enable_auto_commit=False,
                                max_partition_fetch_bytes=8 * 2**20, fetch_max_bytes=64 * 2**20)
    await consumer.start()
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await end_offsets(consumer, tps, "tansu")
        total = sum(ends.values())
        messages = readings = 0
        t0 = time.monotonic()
        while messages < total and time.monotonic() - t0 < 300:
            batch = await consumer.getmany(timeout_ms=1000)
            for records in batch.values():
                for record in records:
                    decoded = decoder.decode(record.value)
                    readings += len(decoded.readings) if hasattr(decoded, "readings") else 1
                messages += len(records)
        wall = time.monotonic() - t0
        return {"messages": messages, "readings": readings, "readings_per_s": round(readings / wall),
                "messages_per_s": round(messages / wall), "wall_s": round(wall, 2)}
    finally:
        await consumer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--meters", type=int, default=48_000)
    parser.add_argument("--seconds", type=float, default=30.0, help="real-time simulation per option")
    parser.add_argument("--backfill-s", type=float, default=20.0, help="simulated seconds produced as fast as possible")
    parser.add_argument("--options", default="memory,s3rver,moto")
    parser.add_argument("--groups-s", type=float, default=90.0, help="seconds of the group stability probe")
    parser.add_argument("--groups-only", action="store_true", help="run only the group stability probe, all options at once")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-brokers-"))
    results = []
    probes: list[Probe] = []
    if args.groups_only:
        import concurrent.futures

        group_probes = [Probe(root, option, args) for option in args.options.split(",")]
        group_probes = [p for p in group_probes if not p.stack.missing()]
        try:
            # At once, so every option meets the same machine load.
            with concurrent.futures.ThreadPoolExecutor(len(group_probes)) as pool:
                found = list(pool.map(Probe.run_groups, group_probes))
        finally:
            for probe in group_probes:
                probe.stop()
            shutil.rmtree(root, ignore_errors=True)
        for r in found:
            say(f"{r['option']:>7}: assignments per member over {args.groups_s:.0f} s: {r['group_assignments']}")
        if args.json:
            print(json.dumps({"groups_s": args.groups_s, "options": found, "load_average_1m_end": round(os.getloadavg()[0], 2)}))
        return
    try:
        for option in args.options.split(","):
            probe = Probe(root, option, args)
            probes.append(probe)
            if problem := probe.stack.missing():
                say(f"{option}: skipped ({'; '.join(problem)})")
                continue
            say(f"{option}: probing")
            try:
                results.append(probe.run())
            finally:
                probe.stop()
            say(json.dumps(results[-1]))
    finally:
        for probe in probes:
            probe.stop()
        shutil.rmtree(root, ignore_errors=True)
    base = next((r for r in results if r["option"] == "memory"), None)
    for r in results:
        if base:
            r["ratio_backfill_to_memory"] = round(r["backfill"]["readings_per_s"] / base["backfill"]["readings_per_s"], 3)
            r["ratio_consume_to_memory"] = round(r["consume"]["readings_per_s"] / base["consume"]["readings_per_s"], 3)
    summary = {"meters": args.meters, "seconds": args.seconds, "options": results,
               "load_average_1m_end": round(os.getloadavg()[0], 2), "cpus": os.cpu_count()}
    for r in results:
        rt = r["realtime"]
        say(f"{r['option']:>7}: real time {rt['readings_per_s']:,.0f}/s (lag ≤ {rt['simulator_max_lag_s']} s), cores {rt['cores']}, "
            f"rss {rt['rss_mb_after']} MB, disk {rt.get('disk_gb_per_hour', '-')} GB/h; backfill {r['backfill']['readings_per_s']:,}/s; "
            f"consume {r['consume']['readings_per_s']:,}/s; restart {r['restart']['ready_s']} s, "
            f"{r['restart']['messages_after']:,} of {r['restart']['messages_before']:,} messages kept; "
            f"group assignments {r['group_assignments']}")
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    lifetime.run(main)
