"""The whole ingest pipeline on one machine: simulator → broker → stream worker(s) → InfluxDB and alerts.

``python -m bench.pipeline [--meters 48000] [--duration 300] [--workers 1] [--profile-s 0] [--json]``

Everything runs for real, each part as its own process, as ``quartier demo`` runs them: a private
stack (the embedded broker and InfluxDB) in a temporary state directory, ``quartier streams worker``
(one or more, one consumer group), then ``quartier simulate`` in real time (1 Hz per meter) for
``--duration`` seconds. A share of the households (``--alerted-share``) has a power limit low
enough to raise alerts, so the alert path carries load too.

Measured, each figure from the component that did the work:

- **sustained readings/s**: the worker's ``quartier_readings_consumed_total``, sampled every few
  seconds, over the run after a warm-up (the first fifth, at most 30 s);
- **lag**: readings produced (the simulator's summary) minus readings consumed, when the simulator
  stops, and again after a drain; during the run, ``meters × seconds since the simulator started −
  consumed`` approximates it (its growth is what says whether the worker keeps up);
- **reading-to-alert latency**: for every alert event a reading caused (not the deadman's),
  ``produced_ms`` (the worker's wall clock) minus the reading's time. A Linky meter's clock is off
  by up to a second (the simulator draws offsets with σ = 400 ms), so the reading's true time is its
  meter time minus that meter's offset, which the bench knows because the fleet is deterministic.
  Both figures are reported; the headline is the true one;
- **points written / rejected**: InfluxDB's ``count(*)`` of ``reading``, and the worker's
  ``quartier_readings_rejected_total`` (malformed frames, ``--malformed-fraction``);
- **worker peak memory**: the kernel's high-water mark of each worker's resident set (VmHWM), with
  psutil samples as a cross-check;
- **raw ceiling**, in the same run after the workers stopped: a plain aiokafka consumer in a new group
  drains the same ``meter.readings`` topic from the beginning and decodes every message with the
  contract's msgspec decoder, nothing else. The ratio is sustained / raw ceiling.

**Catching up** (``--backlog-minutes M``): instead of the real-time run, the simulator first backfills
M minutes of the fleet's readings as fast as the broker takes them (``quartier simulate --speed 0``),
and only then do the workers start, as after an outage. Measured:

- ``catch_up_readings_per_s``: the workers' consumption over the middle of the drain (from 5 % to
  95 % of the backlog consumed, interpolated between 2-s samples: group join and tail left out), with
  ``catch_up_s``, the wall time from the workers' start to the last reading consumed;
- ``naive_faust_per_s``, in the same run, once the workers have stopped: the naive Faust design
  (``bench/naive_faust.py``: one agent handling each reading on its own, a changelog-backed table
  updated per reading), as many processes as ``--workers``, in a group of its own, over the same
  topic from the beginning, for ``--naive-s`` seconds after its first reading;
  ``ratio_to_naive_faust`` = catch-up / naive;
- InfluxDB's points written during the drain and the writer's spool at its end: InfluxDB need not
  keep up with a catch-up (the writer spools to disk and writes back later, nothing is lost).

InfluxDB runs at the local stack's lower CPU priority (``nice`` 10: the alert path first);
``--influx-nice 0`` runs it at the workers' priority, to measure that lever.

``--profile-s N`` samples the (first) worker with py-spy for N seconds in the middle of the run and
prints where its time goes (``pip install py-spy``; it is a measuring tool, not a dependency).
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
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from bench import lifetime
from quartier import events, topics
from quartier.kafka import end_offsets, ensure_topics, producer_config, read_all
from quartier.settings import Settings
from quartier.stack import Stack, durable_broker
from quartier.stack.broker import Broker
from quartier.stack.component import pick_port, wait_until
from quartier.stack.influx import Influx, InfluxError, ensure_database, influx_query

SEED = 7
LOW_POWER_LIMIT_W = 1_500
ALERT_FOR_S = 5.0
SAMPLE_EVERY_S = 5.0
BACKLOG_SAMPLE_EVERY_S = 2.0
#: How long a stopped worker gets to exit before it is killed (see PipelineRun.stop_workers).
STOP_GRACE_S = 120.0
#: Alert kinds a reading causes; the deadman's (disconnected, ingest_down) come from a timer.
READING_KINDS = {"power_above", "power_below", "fuse_limit", "energy_day_above", "energy_day_below",
                 "spending_day_above", "spending_day_below", "spending_month_above", "spending_month_below"}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def scrape(port: int) -> dict[str, float]:
    """One worker's Prometheus samples, summed over labels (``{sample name: value}``); empty if down."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return {}
    totals: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] += sample.value
    return dict(totals)


def peak_rss_mb(pid: int) -> float:
    """The kernel's resident-set high-water mark of a process (VmHWM), in MB; 0 if unknown."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


@dataclass
class Sample:
    t: float  # monotonic
    consumed: float
    rejected: float
    written: float
    alert_events: float
    producing: bool = False  # the simulator was still running after this sample was taken
    cpu_s: dict[str, float] = field(default_factory=dict)  # CPU seconds used so far, per process


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    metrics_port: int
    rss_peak_mb: float = 0.0
    hwm_mb: float = 0.0
    log: Path = field(default_factory=Path)


class PipelineRun:
    def __init__(self, root: Path, args: argparse.Namespace) -> None:
        self.root = root
        self.args = args
        run = uuid.uuid4().hex[:8]
        self.run_id = run
        self.env = {
            "QUARTIER_STATE_DIR": str(root / "stack"),
            "QUARTIER_KAFKA__TOPIC_PREFIX": f"bench{run}.",
            "QUARTIER_INFLUX__DATABASE": f"bench_{run}",
            "QUARTIER_INFLUX__READING_POINTS": args.reading_points,
        }
        self.workers: list[Worker] = []
        self.workers_killed_at_stop = 0
        self.samples: list[Sample] = []
        #: The processes whose CPU time is followed, by name (the stack's servers, workers, simulator).
        self.processes: dict[str, int] = {}
        self._stop_sampling = threading.Event()

    # --- set-up ------------------------------------------------------------------------------

    def settings(self) -> Settings:
        # The bench's own process takes the run's environment, so that Settings() here sees exactly
        # what the subprocesses see (the stack's ports from stack.json, the run's prefix and database).
        os.environ.update(self.env)
        return Settings()

    def say(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def fleet(self, settings: Settings) -> tuple[list[str], dict[str, float]]:
        """The fleet's meter ids and each meter's clock offset (ms), rebuilt from the seed as the simulator does."""
        from simulator.config import FleetConfig
        from simulator.engine import Simulation
        from simulator.fleet import build_fleet

        config = FleetConfig(meters=self.args.meters, seed=SEED, shards=settings.kafka.reading_shards)
        fleet = build_fleet(config)
        offsets = Simulation(fleet, start_t=time.time()).modules.clock_offset_ms
        return list(fleet.meter_ids), {m: float(o) for m, o in zip(fleet.meter_ids, offsets)}

    async def produce_rules(self, settings: Settings, meters: list[str]) -> int:
        every = max(1, round(1 / self.args.alerted_share)) if self.args.alerted_share > 0 else 0
        chosen = meters[::every] if every else []
        now_ms = int(time.time() * 1000)
        producer = AIOKafkaProducer(**producer_config(settings))
        await producer.start()
        try:
            topic = settings.topic(topics.ALERTS_RULES.name)
            for meter in chosen:
                rules = events.AlertRules(meter=meter, power_max_w=LOW_POWER_LIMIT_W, for_s=ALERT_FOR_S, updated_ms=now_ms)
                await producer.send(topic, events.encode(rules), key=meter.encode())
            await producer.flush()
        finally:
            await producer.stop()
        return len(chosen)

    def start_worker(self, index: int) -> Worker:
        port = pick_port(0)
        log = self.root / f"worker-{index}.log"
        process = subprocess.Popen(
            [sys.executable, "-m", "quartier.cli", "streams", "worker", "--app-id", f"bench-{self.run_id}",
             "--metrics-port", str(port), "--loglevel", "warning",
             "--gc-freeze" if self.args.gc_freeze else "--no-gc-freeze"],
            env={**os.environ, **self.env}, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        worker = Worker(process, port, log=log)
        self.processes[f"worker-{index}"] = process.pid
        self.workers.append(worker)
        return worker

    def stop_workers(self) -> None:
        """SIGTERM, then SIGKILL for a worker still running after ``STOP_GRACE_S``.

        The grace must outlast the worker's own stop: Faust's shutdown, then the InfluxDB writer's
        flush for up to its ``stop_timeout_s`` (30 s) before it spools the rest. At 30 s, as before, a
        worker flushing to a busy InfluxDB was killed with points in memory, neither written nor
        spooled, and they were counted as lost (``workers_killed_at_stop`` says when it still happens).
        """
        for worker in self.workers:
            worker.hwm_mb = max(worker.hwm_mb, peak_rss_mb(worker.process.pid))
            if worker.process.poll() is None:
                os.killpg(worker.process.pid, signal.SIGTERM)
        for worker in self.workers:
            try:
                worker.process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.workers_killed_at_stop += 1
                os.killpg(worker.process.pid, signal.SIGKILL)
                worker.process.wait()

    # --- measuring -----------------------------------------------------------------------------

    def totals(self) -> dict[str, float]:
        out: Counter[str] = Counter()
        for worker in self.workers:
            out.update(scrape(worker.metrics_port))
        return dict(out)

    def sample(self) -> Sample:
        m = self.totals()
        s = Sample(
            time.monotonic(), m.get("quartier_readings_consumed_total", 0.0), m.get("quartier_readings_rejected_total", 0.0),
            m.get("quartier_influx_points_written_total", 0.0), m.get("quartier_alert_events_total", 0.0),
            cpu_s=self.cpu_seconds(),
        )
        self.samples.append(s)
        return s

    def cpu_seconds(self) -> dict[str, float]:
        out = {}
        for name, pid in self.processes.items():
            try:
                times = psutil.Process(pid).cpu_times()
            except psutil.Error:
                continue
            out[name] = times.user + times.system
        return out

    def watch_memory(self) -> None:
        """Samples each worker's RSS every second (psutil) until told to stop."""
        while not self._stop_sampling.wait(1.0):
            for worker in self.workers:
                try:
                    rss = psutil.Process(worker.process.pid).memory_info().rss / 2**20
                except psutil.Error:
                    continue
                worker.rss_peak_mb = max(worker.rss_peak_mb, rss)
                worker.hwm_mb = max(worker.hwm_mb, peak_rss_mb(worker.process.pid))

    def profile(self, seconds: float) -> subprocess.Popen[bytes] | None:
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if not Path(spy).exists():
            self.say("py-spy not found: pip install py-spy to profile")
            return None
        return subprocess.Popen(
            [spy, "record", "--pid", str(self.workers[0].process.pid), "--duration", str(int(seconds)),
             "--rate", "50", "--format", "raw", "--nonblocking", "--output", str(self.root / "profile.txt")],
            stdout=subprocess.DEVNULL, stderr=(self.root / "py-spy.log").open("wb"),
        )

    # --- the run -------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        args = self.args
        settings = self.settings()
        asyncio.run(ensure_topics(settings))
        ensure_database(settings)
        meters, clock_offsets = self.fleet(settings)
        households = asyncio.run(self.produce_rules(settings, meters))
        self.say(f"pipeline {self.run_id}: {args.meters:,} meters for {args.duration:.0f} s, {args.workers} worker(s), "
                 f"{households:,} households with a {LOW_POWER_LIMIT_W} W limit; logs in {self.root}")
        for i in range(args.workers):
            self.start_worker(i)
        rules_in = lambda: self.totals().get("quartier_alert_rules_applied_total", 0) >= households  # noqa: E731
        if not wait_until(lambda: all(w.process.poll() is None for w in self.workers) and rules_in(), 120, 0.5):
            raise RuntimeError(f"the worker(s) did not start or apply the rules; see {self.root}/worker-*.log")
        memory = threading.Thread(target=self.watch_memory, daemon=True)
        memory.start()

        simulator = subprocess.Popen(
            [sys.executable, "-m", "quartier.cli", "simulate", "--meters", str(args.meters), "--duration", str(args.duration),
             "--seed", str(SEED), "--malformed-fraction", str(args.malformed_fraction), "--json", "--no-progress"],
            env={**os.environ, **self.env}, stdout=subprocess.PIPE, stderr=(self.root / "simulator.log").open("wb"), text=True,
        )
        sim_start = time.monotonic()
        self.processes["simulator"] = simulator.pid
        self.processes.update(self.stack_pids())
        self.sample()
        profiler = None
        profile_at = sim_start + max(0.0, (args.duration - args.profile_s) / 2)
        while simulator.poll() is None:
            time.sleep(SAMPLE_EVERY_S)
            s = self.sample()
            s.producing = simulator.poll() is None
            elapsed = s.t - sim_start
            if args.profile_s and profiler is None and s.t >= profile_at:
                profiler = self.profile(args.profile_s)
            if any(w.process.poll() is not None for w in self.workers):
                simulator.send_signal(signal.SIGTERM)
                raise RuntimeError(f"a worker exited during the run; see {self.root}/worker-*.log")
            first = next((x.t for x in self.samples if x.consumed > 0), s.t)
            approx_lag = min(s.t - first + SAMPLE_EVERY_S, args.duration) * args.meters - s.consumed
            rate = (s.consumed - self.samples[-2].consumed) / (s.t - self.samples[-2].t)
            self.say(f"  {elapsed:6.0f} s  consumed {s.consumed:>12,.0f}  {rate:>9,.0f}/s  lag≈{approx_lag:>11,.0f}  "
                     f"written {s.written:>12,.0f}  alerts {s.alert_events:>7,.0f}")
        out, _ = simulator.communicate()
        at_stop = self.sample()
        if simulator.returncode:
            raise RuntimeError(f"the simulator failed (exit {simulator.returncode}); see {self.root}/simulator.log")
        produced = json.loads(out.strip().splitlines()[-1])
        # The worker counts a malformed frame as one reading consumed (and rejected); the simulator
        # counts it apart from the readings it produced.
        readings = int(produced["readings_produced"]) + int(produced["malformed"])
        lag_end = readings - at_stop.consumed

        drain_began = time.monotonic()
        wait_until(lambda: self.sample().consumed >= readings, args.drain_timeout, 1.0)
        drained = self.samples[-1]
        drain_s = drained.t - drain_began if drained.consumed >= readings else float("nan")
        if profiler is not None:
            profiler.wait(timeout=args.profile_s + 60)
        # Let the InfluxDB writer flush what it holds before counting (it flushes on stop too).
        wait_until(lambda: self.sample().written + self.samples[-1].rejected >= drained.consumed, 30, 1.0)
        self._stop_sampling.set()
        memory.join()
        gc_figures = self.gc_figures(self.totals())
        self.stop_workers()

        points = count_reading_points(settings)
        latency = self.alert_latency(settings, clock_offsets)
        ceiling = asyncio.run(raw_ceiling(settings))

        # The window: from the first consumed reading plus a warm-up to the last sample taken while
        # the simulator still produced (the simulator's own start-up and the tail are left out).
        warm = min(30.0, args.duration / 5)
        began = next((s.t for s in self.samples if s.consumed > 0), sim_start)
        window = [s for s in self.samples if s.producing and s.t >= began + warm]
        if len(window) >= 2:
            sustained = (window[-1].consumed - window[0].consumed) / (window[-1].t - window[0].t)
        else:
            sustained = float("nan")
        steps = [(b.consumed - a.consumed) / (b.t - a.t) for a, b in zip(window, window[1:])]
        half = window[len(window) // 2:]
        lag_growth = float("nan")
        if len(half) >= 2:
            # Growth of the approximate lag over the second half of the run, readings per second:
            # about 0 when the worker keeps up, the shortfall when it does not.
            produced_rate = args.meters
            lag_growth = produced_rate - (half[-1].consumed - half[0].consumed) / (half[-1].t - half[0].t)
        result: dict[str, Any] = {
            "meters": args.meters,
            "duration_s": args.duration,
            "workers": args.workers,
            "reading_points": args.reading_points,
            "influx_nice": args.influx_nice,
            "durable_log": args.durable_log,
            "gc_freeze": args.gc_freeze,
            "alerted_households": households,
            "readings_produced": int(produced["readings_produced"]),
            "malformed_sent": int(produced["malformed"]),
            "simulator_achieved_rate": produced["achieved_rate"],
            "simulator_max_lag_s": produced["max_lag_s"],
            "sustained_readings_per_s": round(sustained),
            "min_interval_readings_per_s": round(min(steps)) if steps else None,
            "lag_end": int(lag_end),
            "lag_growth_per_s_second_half": round(lag_growth),
            "lag_after_drain": int(readings - drained.consumed),
            "drain_s": round(drain_s, 1),
            **latency,
            "points_written": points,
            # Readings the worker accepted that InfluxDB did not have when the workers stopped (the
            # writer spools them to disk at stop, for the next worker on the same state directory).
            "points_unwritten_at_stop": int(readings - drained.rejected - points) if points is not None else None,
            "rejected": int(drained.rejected),
            **gc_figures,
            "worker_peak_rss_mb": round(max(max(w.hwm_mb, w.rss_peak_mb) for w in self.workers), 1),
            "worker_peak_rss_mb_sampled": round(max(w.rss_peak_mb for w in self.workers), 1),
            "cores_used": self.cpu_use(window),
            "influx_write_rate_per_s": round((window[-1].written - window[0].written) / (window[-1].t - window[0].t))
            if len(window) >= 2 else None,
            **cpu_costs(self.cpu_use(window), sustained,
                        (window[-1].written - window[0].written) / (window[-1].t - window[0].t) if len(window) >= 2 else 0),
            **ceiling,
            "ratio_to_raw_ceiling": round(sustained / ceiling["raw_ceiling_per_s"], 3),
            "target_readings_per_s": args.meters,
            "ratio_to_target": round(sustained / args.meters, 3),
            "cpus": os.cpu_count(),
            "load_average_1m_end": round(os.getloadavg()[0], 2),
        }
        if args.profile_s:
            result["profile"] = summarise_profile(self.root / "profile.txt")
        return result

    def run_backlog(self) -> dict[str, Any]:
        """The catch-up run: a preloaded backlog, then the workers, then the naive Faust agent."""
        args = self.args
        settings = self.settings()
        asyncio.run(ensure_topics(settings))
        ensure_database(settings)
        meters, _ = self.fleet(settings)
        households = asyncio.run(self.produce_rules(settings, meters))
        self.say(f"pipeline {self.run_id}: backfilling {args.backlog_minutes:g} minutes of {args.meters:,} meters; "
                 f"logs in {self.root}")
        preload_began = time.monotonic()
        simulator = subprocess.run(
            [sys.executable, "-m", "quartier.cli", "simulate", "--meters", str(args.meters),
             "--duration", f"{args.backlog_minutes * 60:g}", "--speed", "0", "--seed", str(SEED),
             "--malformed-fraction", str(args.malformed_fraction), "--json", "--no-progress"],
            env={**os.environ, **self.env}, stdout=subprocess.PIPE, stderr=(self.root / "simulator.log").open("wb"),
            text=True,
        )
        if simulator.returncode:
            raise RuntimeError(f"the simulator failed (exit {simulator.returncode}); see {self.root}/simulator.log")
        preload_s = time.monotonic() - preload_began
        produced = json.loads(simulator.stdout.strip().splitlines()[-1])
        readings = int(produced["readings_produced"]) + int(produced["malformed"])
        self.say(f"  backlog: {readings:,} readings in {preload_s:.0f} s; starting {args.workers} worker(s)")
        self.processes.update(self.stack_pids())

        began = time.monotonic()
        for i in range(args.workers):
            self.start_worker(i)
        memory = threading.Thread(target=self.watch_memory, daemon=True)
        memory.start()
        profiler = None
        while True:
            time.sleep(BACKLOG_SAMPLE_EVERY_S)
            s = self.sample()
            if any(w.process.poll() is not None for w in self.workers):
                raise RuntimeError(f"a worker exited during the drain; see {self.root}/worker-*.log")
            if args.profile_s and profiler is None and s.consumed >= readings * 0.3:
                profiler = self.profile(args.profile_s)
            rate = (s.consumed - self.samples[-2].consumed) / (s.t - self.samples[-2].t) if len(self.samples) > 1 else 0
            self.say(f"  {s.t - began:6.0f} s  consumed {s.consumed:>12,.0f} of {readings:,}  {rate:>9,.0f}/s  "
                     f"written {s.written:>12,.0f}")
            if s.consumed >= readings:
                break
            progressed = [x for x in self.samples if x.t >= s.t - args.drain_timeout]
            if s.t - began > args.drain_timeout and progressed[0].consumed == s.consumed:
                raise RuntimeError(f"the drain stalled for {args.drain_timeout:g} s; {readings - s.consumed:,.0f} readings left")
        drained = self.samples[-1]
        if profiler is not None:
            profiler.wait(timeout=args.profile_s + 60)
        self._stop_sampling.set()
        memory.join()
        written_in_drain = drained.written
        window = [x for x in self.samples if x.t >= began]
        cores = self.cpu_use(window)
        gc_figures = self.gc_figures(self.totals())
        self.stop_workers()
        naive = self.naive_faust(settings)

        def crossing(share: float) -> float:
            """When consumption passed ``share`` of the backlog, interpolated between samples."""
            target = readings * share
            for a, b in zip(self.samples, self.samples[1:]):
                if a.consumed <= target <= b.consumed and b.consumed > a.consumed:
                    return a.t + (b.t - a.t) * (target - a.consumed) / (b.consumed - a.consumed)
            return float("nan")

        t05, t95 = crossing(0.05), crossing(0.95)
        catch_up = readings * 0.90 / (t95 - t05)
        result: dict[str, Any] = {
            "meters": args.meters,
            "backlog_minutes": args.backlog_minutes,
            "workers": args.workers,
            "reading_points": args.reading_points,
            "influx_nice": args.influx_nice,
            "durable_log": args.durable_log,
            "gc_freeze": args.gc_freeze,
            "alerted_households": households,
            "backlog_readings": readings,
            "preload_s": round(preload_s, 1),
            "preload_readings_per_s": round(readings / preload_s),
            "catch_up_readings_per_s": round(catch_up),
            "catch_up_s": round(drained.t - began, 1),
            "target_catch_up_readings_per_s": round(1.5 * args.meters),
            "ratio_to_target": round(catch_up / (1.5 * args.meters), 3),
            **naive,
            "ratio_to_naive_faust": round(catch_up / naive["naive_faust_per_s"], 2) if naive["naive_faust_per_s"] else None,
            "points_written_in_drain": int(written_in_drain),
            "influx_write_rate_in_drain_per_s": round(written_in_drain / (drained.t - began)),
            "rejected": int(drained.rejected),
            **gc_figures,
            "worker_peak_rss_mb": round(max(max(w.hwm_mb, w.rss_peak_mb) for w in self.workers), 1),
            "cores_used": cores,
            **cpu_costs(cores, readings / (drained.t - began), written_in_drain / (drained.t - began)),
            "cpus": os.cpu_count(),
            "load_average_1m_end": round(os.getloadavg()[0], 2),
        }
        if result["worker_cpu_us_per_reading"] and naive["naive_faust_cpu_us_per_reading"]:
            # CPU per reading, the comparison a shared machine does not skew (the two phases may
            # have had different shares of the cores).
            result["cpu_ratio_to_naive_faust"] = round(
                naive["naive_faust_cpu_us_per_reading"] / result["worker_cpu_us_per_reading"], 2)
        if args.profile_s:
            result["profile"] = summarise_profile(self.root / "profile.txt")
        return result

    def naive_faust(self, settings: Settings) -> dict[str, Any]:
        """The naive Faust agent over the same topic (bench/naive_faust.py): readings/s after its first one."""
        group = f"naive-{self.run_id}"
        processes = []
        counts = [self.root / f"naive-{i}.count" for i in range(self.args.workers)]
        for i, count in enumerate(counts):
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "bench.naive_faust", "--app-id", group, "--count-file", str(count)],
                env={**os.environ, **self.env}, stdout=(self.root / f"naive-{i}.log").open("wb"),
                stderr=subprocess.STDOUT, start_new_session=True,
            ))

        def handled() -> int:
            total = 0
            for count in counts:
                try:
                    total += int(count.read_text().split()[0])
                except (OSError, ValueError, IndexError):
                    pass
            return total

        try:
            if not wait_until(lambda: handled() > 0, 120, 0.2):
                raise RuntimeError(f"the naive Faust agent handled nothing in 120 s; see {self.root}/naive-*.log")
            # Its own group join and first fetches are left out, as the workers' are.
            time.sleep(min(10.0, self.args.naive_s / 4))
            first, t0, cpu0 = handled(), time.monotonic(), cpu_seconds(processes)
            time.sleep(self.args.naive_s)
            last, t1, cpu1 = handled(), time.monotonic(), cpu_seconds(processes)
        finally:
            for process in processes:
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGTERM)
            for process in processes:
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
        return {"naive_faust_per_s": round((last - first) / (t1 - t0)), "naive_faust_processes": len(processes),
                "naive_faust_readings": last,
                "naive_faust_cpu_us_per_reading": round((cpu1 - cpu0) / (last - first) * 1e6, 2) if last > first else None}

    def gc_figures(self, totals: dict[str, float]) -> dict[str, Any]:
        """The workers' garbage-collection pauses (summed over workers; the longest of any)."""
        longest = 0.0
        for worker in self.workers:
            try:
                text = httpx.get(f"http://127.0.0.1:{worker.metrics_port}/metrics", timeout=2).text
            except httpx.HTTPError:
                continue
            for family in text_string_to_metric_families(text):
                if family.name == "quartier_gc_pause_max_seconds":
                    longest = max([longest, *(sample.value for sample in family.samples)])
        return {"gc_pause_s_total": round(totals.get("quartier_gc_pause_seconds_total", 0.0), 3),
                "gc_pause_max_s": round(longest, 3)}

    def stack_pids(self) -> dict[str, int]:
        record = json.loads((self.root / "stack" / "stack.json").read_text())
        return {name: entry["pid"] for name, entry in record["components"].items()}

    def cpu_use(self, window: list[Sample]) -> dict[str, float]:
        """Cores each process used over the window (CPU seconds per wall second): where the time goes."""
        if len(window) < 2:
            return {}
        first, last = window[0], window[-1]
        wall = last.t - first.t
        return {name: round((last.cpu_s[name] - first.cpu_s.get(name, 0.0)) / wall, 3)
                for name in last.cpu_s if name in first.cpu_s}

    def alert_latency(self, settings: Settings, clock_offsets: dict[str, float]) -> dict[str, Any]:
        decoder = events.Decoder(events.AlertEvent)
        alerts: list[events.AlertEvent] = asyncio.run(
            read_all(settings, settings.topic(topics.ALERTS_EVENTS.name), decoder.decode)  # type: ignore[arg-type]
        )
        caused = [a for a in alerts if a.kind in READING_KINDS and a.meter is not None]
        meter_clock = [(a.produced_ms - a.at_ms) / 1000 for a in caused]
        true_time = [(a.produced_ms - (a.at_ms - clock_offsets.get(a.meter or "", 0.0))) / 1000 for a in caused]
        return {
            "alert_events": len(alerts),
            "alert_events_by_kind": dict(Counter(f"{a.kind}/{a.state}" for a in alerts)),
            "latency_samples": len(caused),
            "latency_p50_s": round(percentile(true_time, 0.50), 3),
            "latency_p99_s": round(percentile(true_time, 0.99), 3),
            "latency_max_s": round(max(true_time, default=float("nan")), 3),
            "latency_meter_clock_p50_s": round(percentile(meter_clock, 0.50), 3),
            "latency_meter_clock_p99_s": round(percentile(meter_clock, 0.99), 3),
        }


def cpu_seconds(processes: list[subprocess.Popen[bytes]]) -> float:
    """User and system CPU seconds the processes (and their children) have used so far."""
    total = 0.0
    for process in processes:
        try:
            for p in [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]:
                times = p.cpu_times()
                total += times.user + times.system
        except psutil.Error:
            continue
    return total


def cpu_costs(cores: dict[str, float], readings_per_s: float, points_per_s: float) -> dict[str, Any]:
    """CPU time per reading of the workers, and of influxd per point it acknowledged: figures that
    compare runs on a shared machine better than rates do (a rate falls with the cores others take)."""
    workers = sum(c for name, c in cores.items() if name.startswith("worker-"))
    return {
        "worker_cpu_us_per_reading": round(workers / readings_per_s * 1e6, 2) if readings_per_s else None,
        "influx_cpu_us_per_point": round(cores.get("influx", 0.0) / points_per_s * 1e6, 2) if points_per_s else None,
    }


def count_reading_points(settings: Settings) -> int | None:
    """Points of ``reading`` in InfluxDB, or None if it cannot answer (reported, not fatal to the run).

    Counts one field every reading point has: ``count(*)`` over millions of points on 48,000 series
    took InfluxDB 1.6.7 more than 30 s here while it was still compacting.
    """
    try:
        rows = influx_query(settings.influx, 'SELECT count("drawn_va") FROM "raw"."reading"', timeout_s=600)
    except InfluxError as exc:
        print(f"counting InfluxDB's points failed: {exc}", file=sys.stderr)
        return None
    return max((int(v) for row in rows for k, v in row.items() if k.startswith("count") and v), default=0)


async def drain_readings(settings: Settings, group: str, on_message: Callable[[Any], None]) -> tuple[int, float]:
    """Drains ``meter.readings`` from the start to its end with a plain aiokafka consumer (group
    ``group``), decoding with msgspec; ``on_message`` gets each decoded message, or None for one that
    breaks the contract. Returns the messages read and the seconds the drain took (set-up excluded)."""
    topic = settings.topic(topics.METER_READINGS.name)
    decoder = events.Decoder(events.IngestMessage)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap, group_id=group,
        enable_auto_commit=False, auto_offset_reset="earliest", max_partition_fetch_bytes=8 * 2**20,
        fetch_max_bytes=64 * 2**20,
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(topics.METER_READINGS.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await end_offsets(consumer, tps, settings.kafka.flavour)
        messages = 0
        began = time.perf_counter()
        while pending := [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for tp, records in (await consumer.getmany(*pending, timeout_ms=500, max_records=10_000)).items():
                for record in records:
                    if record.offset >= ends[tp]:
                        continue
                    messages += 1
                    try:
                        decoded = decoder.decode(record.value)
                    except events.ContractError:
                        decoded = None
                    on_message(decoded)
        return messages, time.perf_counter() - began
    finally:
        await consumer.stop()


async def raw_ceiling(settings: Settings) -> dict[str, Any]:
    """A plain aiokafka consumer (its own group) drains meter.readings from the start, decoding with msgspec."""
    readings = 0

    def count(decoded: Any) -> None:
        nonlocal readings
        # A malformed frame counts once, as the worker counts it.
        readings += len(decoded.readings) if isinstance(decoded, events.ReadingBatch) else 1

    messages, elapsed = await drain_readings(settings, f"raw-ceiling-{uuid.uuid4().hex[:6]}", count)
    return {"raw_ceiling_per_s": round(readings / elapsed), "raw_readings": readings, "raw_messages": messages,
            "raw_s": round(elapsed, 2)}


async def group_lag(settings: Settings, group: str) -> int:
    """Messages of ``meter.readings`` past the group's committed offsets, asked of the broker.

    The drain test: the workers' consumed counters count a reading again each time a rebalance or a
    failed commit has it replayed (at least once), so their sum reaches the simulator's count while
    part of the log is still unread; the committed offsets do not.
    """
    topic = settings.topic(topics.METER_READINGS.name)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(topics.METER_READINGS.partitions)]
        ends = await end_offsets(consumer, tps, settings.kafka.flavour)
        committed = {tp: (await consumer.committed(tp)) or 0 for tp in tps}
        return sum(max(0, ends[tp] - committed[tp]) for tp in tps)
    finally:
        await consumer.stop()


async def broker_readings(settings: Settings) -> dict[str, Any]:
    """What ``meter.readings`` holds, drained from the start by a plain consumer: per meter, the
    meter times of its valid readings (duplicates kept), and the messages that are not valid."""
    times: dict[str, list[int]] = {}
    invalid = 0

    def note(decoded: Any) -> None:
        nonlocal invalid
        if decoded is None:
            invalid += 1
            return
        for r in decoded.readings if isinstance(decoded, events.ReadingBatch) else [decoded]:
            times.setdefault(r.meter, []).append(r.time_ms)

    await drain_readings(settings, f"audit-{uuid.uuid4().hex[:6]}", note)
    return {"times": times, "invalid": invalid}


def audit_readings(settings: Settings, rejected: float, produced: int, show: int = 5) -> dict[str, Any]:
    """Where readings went missing: the simulator's count, the broker's log, InfluxDB's points, per meter.

    ``broker_valid``: contract-valid readings in the log (what the simulator's acknowledged sends
    became); ``broker_distinct``: distinct (meter, meter time) among them, the most InfluxDB can hold
    (a second point of a series at the same millisecond replaces the first); ``influx_points``: the
    points, counted per meter; the meters whose count differs from the log's distinct times, with a few
    of their missing times.
    """
    held = asyncio.run(broker_readings(settings))
    times: dict[str, list[int]] = held["times"]
    valid = sum(len(t) for t in times.values())
    distinct = {meter: set(t) for meter, t in times.items()}
    n_distinct = sum(len(t) for t in distinct.values())
    rows = influx_query(settings.influx, 'SELECT count("drawn_va") FROM "raw"."reading" GROUP BY "meter"',
                        timeout_s=600)
    per_meter = {row["meter"]: int(next(v for k, v in row.items() if k.startswith("count"))) for row in rows}
    short = {m: len(t) - per_meter.get(m, 0) for m, t in distinct.items() if len(t) != per_meter.get(m, 0)}
    extra_meters = sorted(set(per_meter) - set(distinct))
    examples = {}
    for meter in sorted(short, key=lambda m: -abs(short[m]))[:show]:
        points = influx_query(settings.influx, f"SELECT drawn_va FROM \"raw\".\"reading\" WHERE meter = '{meter}'",
                              timeout_s=120)
        have = {int(p["time"]) for p in points}
        examples[meter] = {"missing_ms": sorted(distinct[meter] - have)[:10], "unexpected_ms": sorted(have - distinct[meter])[:10]}
    return {
        "simulator_sent": produced,
        "broker_valid": valid,
        "broker_invalid": held["invalid"],
        "broker_distinct": n_distinct,
        "broker_duplicates": valid - n_distinct,
        "influx_points": sum(per_meter.values()),
        "rejected_by_workers": int(rejected),
        "meters_short": len(short),
        "points_short": sum(short.values()),
        # Malformed frames the contract accepts (an index gone backwards) are rejected by the
        # workers' index guard: in the log, rightly not in InfluxDB. What is short beyond them is lost.
        "rejected_past_contract": int(rejected) - held["invalid"],
        "points_short_unexplained": sum(short.values()) - (int(rejected) - held["invalid"]),
        "meters_unexpected": extra_meters[:show],
        "examples": examples,
    }


#: Frames every stack goes through (entry point, click, the event loop): not worth listing.
SCAFFOLDING = ("(core.py)", "(<frozen runpy>)", "(base_events.py)", "(cli.py)", "(threading.py)", "Handle._run (events.py)",
               "run_worker (app.py)", "Worker.execute_from_commandline (worker.py)")


def summarise_profile(path: Path, top: int = 20) -> dict[str, Any]:
    """Self and inclusive shares of py-spy's collapsed stacks (``frame;frame;... count`` lines)."""
    if not path.exists():
        return {"error": f"no profile at {path}"}
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = [f.split(" (")[0] + " (" + f.split(" (")[-1].split(":")[0].rsplit("/", 1)[-1] + ")" for f in stack.split(";")]
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            if not frame.endswith(SCAFFOLDING):
                inclusive[frame] += n
    share = lambda c: {k: round(v / total, 3) for k, v in c.most_common(top)}  # noqa: E731
    return {"samples": total, "self": share(own), "inclusive": share(inclusive), "file": str(path)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--meters", type=int, default=48_000)
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of real-time simulation")
    parser.add_argument("--workers", type=int, default=1, help="stream worker processes (one consumer group)")
    parser.add_argument("--alerted-share", type=float, default=0.10, help=f"households with a {LOW_POWER_LIMIT_W} W limit")
    parser.add_argument("--malformed-fraction", type=float, default=0.001)
    parser.add_argument("--drain-timeout", type=float, default=120.0, help="seconds to wait for the lag to drain")
    parser.add_argument("--profile-s", type=float, default=0.0, help="py-spy the first worker for this long mid-run")
    parser.add_argument("--backlog-minutes", type=float, default=0.0,
                        help="catch-up run: backfill this many minutes of readings first, then start the workers")
    parser.add_argument("--naive-s", type=float, default=40.0,
                        help="catch-up run: seconds the naive Faust agent is measured over")
    parser.add_argument("--reading-points", choices=("changed", "full"), default="full",
                        help="what the workers' reading points carry (settings.influx.reading_points)")
    parser.add_argument("--gc-freeze", action=argparse.BooleanOptionalAction, default=True,
                        help="the workers' --gc-freeze (or --no-gc-freeze)")
    parser.add_argument("--durable-log", action="store_true",
                        help="the broker on its durable log (S3 store and retention), as the local stack runs it; "
                             "default: the memory engine")
    parser.add_argument("--influx-nice", type=int, default=Influx().nice,
                        help="influxd's nice value (the local stack's default; 0 runs it at the workers' priority)")
    parser.add_argument("--keep", action="store_true", help="keep the run's directory (logs, raw profile, data)")
    parser.add_argument("--json", action="store_true", help="also print one JSON object on the last line")
    args = parser.parse_args()
    for name in ("meters", "workers"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.duration <= 0:
        parser.error("--duration must be positive")
    if args.backlog_minutes < 0 or args.naive_s <= 0:
        parser.error("--backlog-minutes must be 0 or more and --naive-s positive")
    if not 0 <= args.alerted_share <= 1:
        parser.error("--alerted-share must be between 0 and 1")

    root = Path(tempfile.mkdtemp(prefix="quartier-bench-pipeline-"))
    stack = Stack(root / "stack", [*(durable_broker() if args.durable_log else [Broker()]), Influx(nice=args.influx_nice)])
    bench = PipelineRun(root, args)
    try:
        stack.up()
        result = bench.run_backlog() if args.backlog_minutes else bench.run()
    finally:
        bench._stop_sampling.set()
        bench.stop_workers()
        stack.down()
        # The run's directory holds InfluxDB's data and the writer's spool (gigabytes at the reference
        # size): kept only when asked for; the profile's summary is in the output either way.
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    (print_backlog_summary if args.backlog_minutes else print_summary)(result)
    if args.json:
        print(json.dumps(result))


def print_backlog_summary(r: dict[str, Any]) -> None:
    print(f"{r['meters']:,} meters, a backlog of {r['backlog_minutes']:g} minutes ({r['backlog_readings']:,} readings, "
          f"preloaded in {r['preload_s']} s), {r['workers']} worker(s)")
    print(f"catch-up:        {r['catch_up_readings_per_s']:>12,} readings/s  (target {r['target_catch_up_readings_per_s']:,}, "
          f"ratio {r['ratio_to_target']}; drained in {r['catch_up_s']} s)")
    print(f"naive Faust:     {r['naive_faust_per_s']:>12,} readings/s  ({r['naive_faust_processes']} process(es), "
          f"a table update per reading; ratio {r['ratio_to_naive_faust']}); CPU per reading "
          f"{r['naive_faust_cpu_us_per_reading']} µs against the workers' {r['worker_cpu_us_per_reading']} µs "
          f"(ratio {r.get('cpu_ratio_to_naive_faust')})")
    print(f"InfluxDB:        {r['points_written_in_drain']:>12,} points written during the drain "
          f"({r['influx_write_rate_in_drain_per_s']:,}/s); {r['rejected']:,} readings rejected")
    print(f"worker memory:   {r['worker_peak_rss_mb']:>12,} MB peak RSS")
    print("cores used:      " + ", ".join(f"{name} {cores:.2f}" for name, cores in r["cores_used"].items()))
    print(f"CPU per item:    workers {r['worker_cpu_us_per_reading']} µs per reading, influxd {r['influx_cpu_us_per_point']} µs per point")
    print(f"load average:    {r['load_average_1m_end']} (1 min, at the end) on {r['cpus']} cores")
    if "profile" in r and "self" in r["profile"]:
        print(f"worker profile ({r['profile']['samples']:,} samples), self time:")
        for frame, share in list(r["profile"]["self"].items())[:15]:
            print(f"  {share:6.1%}  {frame}")


def print_summary(r: dict[str, Any]) -> None:
    print(f"{r['meters']:,} meters for {r['duration_s']:.0f} s, {r['workers']} worker(s), "
          f"{r['readings_produced']:,} readings produced ({r['simulator_achieved_rate']:,.0f}/s)")
    print(f"sustained:       {r['sustained_readings_per_s']:>12,} readings/s  (target {r['target_readings_per_s']:,}, "
          f"ratio {r['ratio_to_target']}; slowest interval {r['min_interval_readings_per_s']:,}/s)")
    print(f"raw ceiling:     {r['raw_ceiling_per_s']:>12,} readings/s  (aiokafka + msgspec, same topic; "
          f"ratio {r['ratio_to_raw_ceiling']})")
    print(f"lag at the end:  {r['lag_end']:>12,} readings  (growth {r['lag_growth_per_s_second_half']:,}/s over "
          f"the second half; {r['lag_after_drain']:,} after a {r['drain_s']} s drain)")
    print(f"alert latency:   p50 {r['latency_p50_s']} s, p99 {r['latency_p99_s']} s, max {r['latency_max_s']} s "
          f"over {r['latency_samples']:,} events (meter clocks: p50 {r['latency_meter_clock_p50_s']}, "
          f"p99 {r['latency_meter_clock_p99_s']})")
    print(f"InfluxDB:        {r['points_written'] or 0:>12,} points written, {r['rejected']:,} readings rejected, "
          f"{r['points_unwritten_at_stop'] or 0:,} not yet written when the worker stopped")
    print(f"worker memory:   {r['worker_peak_rss_mb']:>12,} MB peak RSS; garbage collection {r['gc_pause_s_total']} s "
          f"in all, longest pause {r['gc_pause_max_s']} s")
    print(f"InfluxDB rate:   {r['influx_write_rate_per_s']:>12,} points/s acknowledged during the run")
    print("cores used:      " + ", ".join(f"{name} {cores:.2f}" for name, cores in r["cores_used"].items()))
    print(f"CPU per item:    workers {r['worker_cpu_us_per_reading']} µs per reading, influxd {r['influx_cpu_us_per_point']} µs per point")
    print(f"load average:    {r['load_average_1m_end']} (1 min, at the end) on {r['cpus']} cores")
    if "profile" in r and "self" in r["profile"]:
        print(f"worker profile ({r['profile']['samples']:,} samples), self time:")
        for frame, share in list(r["profile"]["self"].items())[:12]:
            print(f"  {share:6.1%}  {frame}")
        print("inclusive:")
        for frame, share in list(r["profile"]["inclusive"].items())[:15]:
            print(f"  {share:6.1%}  {frame}")


if __name__ == "__main__":
    lifetime.run(main)
