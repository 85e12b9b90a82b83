"""A long run of the whole local stack at the reference load: does every process's memory stay flat?

``python -m bench.soak [--meters 48000] [--hours 1] [--workers 2] [--sample-s 60] [--json]``

The local stack as ``quartier stack up`` runs it (the durable broker: s3rver, Tansu on its S3
engine and the log's retention; InfluxDB; the SMTP server and the FCM endpoint), ``--workers``
stream workers in one consumer group, the notifier (with phones and mailboxes for
``--contacts`` of the alerted households), and ``quartier simulate`` in real time for ``--hours``.
A share of the households has a low power limit (as in ``bench.pipeline``), so alerts flow too.

Measured:

- every process's resident memory, sampled each ``--sample-s`` (a minute by default), its peak (the
  kernel's VmHWM), and its growth over the last half of the run (``rss_growth_last_half``: the
  median of the last three samples against the median of the three around the middle; target < 5%);
- the lag when the simulator stops (readings produced minus consumed), alert latency p50/p99
  (``latency_p99_s``, reading to alert event, as ``bench.pipeline`` measures it), readings lost
  (``readings_lost``: produced minus rejected minus points in InfluxDB, target 0). The count is taken
  once the workers' consumer group has committed up to the end of ``meter.readings`` (asked of the
  broker: the consumed counters count replayed readings again, so their sum can reach the
  simulator's count with part of the log unread) and their writers hold no unacknowledged point;
  what was still unread or spooled when they stopped is reported (``messages_unconsumed_at_stop``,
  ``points_spooled_at_stop``). ``--audit`` then reads the whole log back and compares it with
  InfluxDB meter by meter (``audit``: the simulator's count, the log's valid and distinct readings,
  InfluxDB's points, the meters short and a few of their missing times);
- the broker's disk (the object store's directory) per hour, and the retention's deletions;
- each figure projected to 24 hours (memory: the end value plus the last half's growth rate
  continued; disk: the hourly growth until the readings' retention is reached, the records of truth's
  growth after).

Every server it started is stopped on SIGTERM, SIGINT or a failure; a failed run keeps its directory
(its logs), an interrupted one does not, ``--keep`` keeps it in any case.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench import lifetime
from bench.pipeline import PipelineRun, audit_readings, count_reading_points, group_lag, peak_rss_mb
from quartier.kafka import ensure_topics
from quartier.stack import Stack, durable_broker
from quartier.stack.component import wait_until
from quartier.stack.fcm import FcmEndpoint
from quartier.stack.influx import Influx, ensure_database
from quartier.stack.smtp import SmtpServer
from quartier.topics import METER_READINGS, RETAINED_MS
from streams.influx_spool import Spool


def dir_bytes(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


def spooled_points(settings: Any) -> int:
    """Points the stopped workers' InfluxDB writers left in their spools (written by the next writer)."""
    root = settings.state_dir / "influx-spool"
    return sum(Spool(directory).points for directory in root.glob("*") if directory.is_dir())


def median_of(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


class Soak(PipelineRun):
    def __init__(self, root: Path, args: argparse.Namespace) -> None:
        super().__init__(root, args)
        # On a shared 2-core machine under load, 6 s sessions expired between heartbeats and the
        # group rebalanced without end (UnknownMemberIdError, 66k readings in the first minute):
        # the soak's processes get a longer session (the first join then waits half of it).
        self.env["QUARTIER_KAFKA__SESSION_TIMEOUT_S"] = str(args.session_timeout_s)
        self.stack = Stack(root / "stack", [*durable_broker(), Influx(), SmtpServer(), FcmEndpoint()])
        self.children: list[subprocess.Popen[Any]] = []
        #: Per process, (seconds since the simulator started, RSS in MB), each sample.
        self.rss: dict[str, list[tuple[float, float]]] = {}
        self.hwm: dict[str, float] = {}
        self.disk: list[tuple[float, int]] = []
        self.sim_start = 0.0

    def spawn(self, name: str, *args: str, stdout: Any = None) -> subprocess.Popen[Any]:
        log = (self.root / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "quartier.cli", *args], env={**os.environ, **self.env},
            stdout=stdout or log, stderr=log, text=stdout is not None, start_new_session=True,
        )
        self.children.append(proc)
        self.processes[name] = proc.pid
        return proc

    def register_contacts(self, meters: list[str]) -> None:
        every = max(1, round(1 / self.args.alerted_share))
        chosen = meters[::every][: self.args.contacts]
        path = self.root / "contacts.csv"
        with path.open("w", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(["meter", "token", "email", "language"])
            for meter in chosen:
                writer.writerow([meter, f"soak-device-{meter}", f"home-{meter}@soak.example", "en"])
        done = subprocess.run([sys.executable, "-m", "quartier.cli", "notifier", "register", "--from-file", str(path)],
                              env={**os.environ, **self.env}, capture_output=True, text=True, timeout=120)
        if done.returncode:
            raise RuntimeError(f"notifier register failed: {done.stderr[-2000:]}")

    def store_dir(self) -> Path:
        return self.root / "stack" / "s3"

    def sample_memory(self) -> None:
        now = time.monotonic() - self.sim_start
        for name, pid in self.processes.items():
            try:
                rss = psutil.Process(pid).memory_info().rss / 2**20
            except psutil.Error:
                continue
            self.rss.setdefault(name, []).append((now, rss))
            self.hwm[name] = max(self.hwm.get(name, 0.0), peak_rss_mb(pid))
        self.disk.append((now, dir_bytes(self.store_dir())))

    def watch(self, stop: threading.Event) -> None:
        while not stop.wait(self.args.sample_s):
            self.sample_memory()

    def run(self) -> dict[str, Any]:
        args = self.args
        self.stack.up()
        settings = self.settings()
        asyncio.run(ensure_topics(settings))
        ensure_database(settings)
        meters, clock_offsets = self.fleet(settings)
        households = asyncio.run(self.produce_rules(settings, meters))
        self.register_contacts(meters)
        self.processes.update(self.stack_pids())
        duration_s = args.hours * 3600
        self.say(f"soak {self.run_id}: {args.meters:,} meters for {duration_s:.0f} s, {args.workers} worker(s), "
                 f"{households:,} alerted households; logs in {self.root}")
        for i in range(args.workers):
            worker = self.start_worker(i)
            self.children.append(worker.process)
        self.spawn("notifier", "notifier", "run")
        rules_in = lambda: self.totals().get("quartier_alert_rules_applied_total", 0) >= households  # noqa: E731
        if not wait_until(lambda: all(w.process.poll() is None for w in self.workers) and rules_in(), 180, 0.5):
            raise RuntimeError(f"the worker(s) did not start or apply the rules; see {self.root}/worker-*.log")

        simulator = self.spawn(
            "simulator", "simulate", "--meters", str(args.meters), "--duration", str(duration_s), "--seed", "7",
            "--malformed-fraction", str(args.malformed_fraction), "--json", "--no-progress", stdout=subprocess.PIPE,
        )
        self.sim_start = time.monotonic()
        self.sample()
        self.sample_memory()
        stop = threading.Event()
        watcher = threading.Thread(target=self.watch, args=(stop,), daemon=True)
        watcher.start()
        try:
            while simulator.poll() is None:
                time.sleep(10)
                s = self.sample()
                s.producing = simulator.poll() is None
                if any(w.process.poll() is not None for w in self.workers):
                    raise RuntimeError(f"a worker exited during the run; see {self.root}/worker-*.log")
                elapsed = s.t - self.sim_start
                if len(self.samples) % 6 == 0:
                    self.say(f"  {elapsed:6.0f} s  consumed {s.consumed:>13,.0f}  written {s.written:>13,.0f}  "
                             f"broker disk {self.disk[-1][1] / 2**30:6.2f} GB")
        finally:
            stop.set()
            watcher.join()
        out, _ = simulator.communicate()
        at_stop = self.sample()
        self.sample_memory()
        if simulator.returncode:
            raise RuntimeError(f"the simulator failed (exit {simulator.returncode}); see {self.root}/simulator.log")
        produced = json.loads(out.strip().splitlines()[-1])
        readings = int(produced["readings_produced"]) + int(produced["malformed"])
        lag_end = readings - at_stop.consumed
        # Drained when the group's committed offsets reach the log's end (the consumed counters count
        # replays too), then when the writers hold no point InfluxDB has not acknowledged.
        group = f"bench-{self.run_id}"
        wait_until(lambda: self.sample().consumed >= readings and asyncio.run(group_lag(settings, group)) == 0,
                   args.drain_timeout, 2.0)
        drained = self.samples[-1]
        wait_until(lambda: self.totals().get("quartier_influx_buffered_points", 0) == 0, 120, 1.0)
        self.stop_workers()
        unconsumed = asyncio.run(group_lag(settings, group))
        spooled = spooled_points(settings)
        points = count_reading_points(settings)
        latency = self.alert_latency(settings, clock_offsets)
        retention = self.retention_totals()
        result = self.summary(produced, readings, lag_end, drained, points, latency, retention, households)
        result["points_spooled_at_stop"] = spooled
        result["messages_unconsumed_at_stop"] = unconsumed
        result["workers_killed_at_stop"] = self.workers_killed_at_stop
        if args.audit:
            result["audit"] = audit_readings(settings, drained.rejected, int(produced["readings_produced"]))
        return result

    def retention_totals(self) -> dict[str, Any]:
        record = json.loads(self.stack.record_path.read_text())
        try:
            return httpx.get(record["components"]["retention"]["url"], timeout=5).json()
        except (httpx.HTTPError, KeyError, ValueError):
            return {}

    def summary(self, produced: dict[str, Any], readings: int, lag_end: float, drained: Any, points: int | None,
                latency: dict[str, Any], retention: dict[str, Any], households: int) -> dict[str, Any]:
        hours = self.args.hours
        processes = {}
        for name, series in self.rss.items():
            values = [rss for _, rss in series]
            half = len(values) // 2
            middle = median_of(values[max(0, half - 1) : half + 2])
            last = median_of(values[-3:])
            growth = (last - middle) / middle if middle else float("nan")
            span_h = (series[-1][0] - series[max(0, half)][0]) / 3600 if len(series) > 1 else 0.0
            per_hour = (last - middle) / span_h if span_h > 0 else 0.0
            processes[name] = {
                "rss_mb_end": round(values[-1], 1),
                "rss_mb_peak_sampled": round(max(values), 1),
                "rss_mb_peak_hwm": round(self.hwm.get(name, 0.0), 1),
                "rss_growth_last_half": round(growth, 4),
                "rss_mb_per_hour_last_half": round(per_hour, 1),
                "rss_mb_24h_projected": round(values[-1] + max(0.0, per_hour) * max(0.0, 24 - hours), 1),
            }
        (t0, d0), (t1, d1) = self.disk[0], self.disk[-1]
        disk_per_hour = (d1 - d0) / ((t1 - t0) / 3600) if t1 > t0 else float("nan")
        retention_h = RETAINED_MS[METER_READINGS.name] / 3_600_000
        lost = readings - int(drained.rejected) - points if points is not None else None
        return {
            "meters": self.args.meters,
            "hours": hours,
            "workers": self.args.workers,
            "alerted_households": households,
            "readings_produced": int(produced["readings_produced"]),
            "malformed_sent": int(produced["malformed"]),
            "simulator_achieved_rate": produced["achieved_rate"],
            "lag_end": int(lag_end),
            "lag_after_drain": int(readings - drained.consumed),
            "rejected": int(drained.rejected),
            "points_written": points,
            "readings_lost": lost,
            **latency,
            "processes": processes,
            "rss_growth_last_half": {name: p["rss_growth_last_half"] for name, p in processes.items()},
            "rss_growth_last_half_max": max(p["rss_growth_last_half"] for p in processes.values()),
            "broker_disk_gb_end": round(d1 / 2**30, 3),
            "broker_disk_gb_per_hour": round(disk_per_hour / 2**30, 3),
            # The readings' batches are dropped once older than the retention: the disk stops growing there.
            "broker_disk_gb_24h_projected": round(d0 / 2**30 + disk_per_hour / 2**30 * min(24.0, retention_h), 2),
            "readings_retention_h": retention_h,
            "retention": retention,
            "cpus": os.cpu_count(),
            "load_average_1m_end": round(os.getloadavg()[0], 2),
        }

    def shutdown(self) -> None:
        for proc in self.children:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for proc in self.children:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        self.stack.down()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--meters", type=int, default=48_000)
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sample-s", type=float, default=60.0, help="seconds between memory samples")
    parser.add_argument("--alerted-share", type=float, default=0.10)
    parser.add_argument("--contacts", type=int, default=500, help="alerted households with a phone and a mailbox")
    parser.add_argument("--malformed-fraction", type=float, default=0.001)
    parser.add_argument("--drain-timeout", type=float, default=300.0)
    # The workers as bench.pipeline starts them (PipelineRun reads these).
    parser.add_argument("--reading-points", choices=("changed", "full"), default="changed",
                        help="what the workers' reading points carry (settings.influx.reading_points)")
    parser.add_argument("--gc-freeze", action=argparse.BooleanOptionalAction, default=True,
                        help="the workers freeze the objects of their start-up out of the collector's reach")
    parser.add_argument("--session-timeout-s", type=float, default=20.0, help="the consumers' Kafka session timeout")
    parser.add_argument("--audit", action="store_true",
                        help="after the run, compare the broker's log with InfluxDB's points, meter by meter")
    parser.add_argument("--keep", action="store_true", help="keep the run's directory")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    soak = Soak(root, args)
    failed = False
    try:
        result = soak.run()
    except Exception:  # not an interruption (bench.lifetime.Interrupted): the logs say what failed
        failed = True
        raise
    finally:
        soak.shutdown()
        if failed:
            print(f"the run failed: its directory {root} is kept for its logs", file=sys.stderr)
        elif not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print_summary(result)
    if args.json:
        print(json.dumps(result))


def print_summary(r: dict[str, Any]) -> None:
    say = lambda text: print(text, file=sys.stderr)  # noqa: E731
    say(f"soak: {r['meters']:,} meters, {r['hours']} h, {r['workers']} workers: {r['readings_produced']:,} readings, "
        f"lag at the end {r['lag_end']:,}, lost {r['readings_lost']}, latency p50 {r['latency_p50_s']} s p99 {r['latency_p99_s']} s")
    for name, p in r["processes"].items():
        say(f"  {name:>12}: rss end {p['rss_mb_end']:8.1f} MB, peak {p['rss_mb_peak_hwm']:8.1f} MB, "
            f"growth last half {100 * p['rss_growth_last_half']:6.2f}%, 24 h ≈ {p['rss_mb_24h_projected']:8.1f} MB")
    say(f"  broker disk {r['broker_disk_gb_per_hour']} GB/h, 24 h ≈ {r['broker_disk_gb_24h_projected']} GB "
        f"(readings kept {r['readings_retention_h']} h); load {r['load_average_1m_end']}")


if __name__ == "__main__":
    lifetime.run(main)
