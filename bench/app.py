"""The household app under fleet load: live viewers, the live consumer's CPU, consumption requests.

``python -m bench.app [--meters 48000] [--duration 150] [--viewers 1000,2000,4000] [--json]``

A private stack (the embedded broker and InfluxDB) in a temporary directory, then:

1. **Consumption requests**: one meter's history is backfilled (12 months of 10-minute rollup points
   with per-register indexes, the last day of 1 Hz raw readings, a Tempo contract so euros are priced
   over six registers), and each range (24h, 7d, 30d, 12mo) in kWh and in euros is asked for
   ``--requests`` times through ``households.consumption.series``; p99 per range and unit. The
   queries start once InfluxDB has written the backfill out of its write cache, where a fleet's
   history is (queried in the cache, each field read costs about 4 ms more).
   Baseline in the same run: the bare InfluxDB query of ``streams.charts`` for the same range.
2. ``quartier simulate --meters N`` in real time (1 Hz per meter) for ``--duration`` seconds, and,
   one after the other, child processes each running the app's live path (one ``LiveFeed`` into a
   ``LiveHub``) for a measuring window:
   - **the live consumer's CPU**: the child with no viewer; its process CPU time over the window
     divided by the window (cores). Baseline: the same consumer decoding every message with the full
     contract decoder (``quartier.events``), as a naive consumer would;
   - **viewers at p99 <= 1.5 s, over HTTP**: one API process (``quartier api serve``, every
     surface) and ``--households`` real accounts, each owning a household that paired one of the
     fleet's meters; a client process opens V ``GET /v1/me/live`` streams (spread over the
     households, each with its own access token) and, for every event, takes the delay from the
     reading's Kafka timestamp (``produced_ms``, set by the simulator's producer) to its arrival.
     Each client measures once all its streams have had a first event and ``SETTLE_S`` more (the
     backlog of opening them all drained: the steady state), and reports its own CPU over the window
     (so a saturated client shows). The figure is the largest V tried whose p99 stays within 1.5 s;
     the API process's CPU is measured over each step;
   - for comparison, the same viewer counts following the hub in the feed's own process (no HTTP).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench import lifetime
from quartier.stack.component import pick_port, wait_until

SEED = 7
LATENCY_TARGET_S = 1.5
#: After the last stream's first event, before measuring: the backlog of opening them all drains.
SETTLE_S = 4.0


# --- the child: one process's live path ---------------------------------------------------------------


async def child(viewers: int, window_s: float, warmup_s: float, full_decode: bool) -> dict[str, Any]:
    from households.live import LiveFeed, LiveHub, LiveReading, decode_live
    from quartier import events
    from quartier.settings import Settings

    decode = decode_live
    if full_decode:
        contract = events.decoder(events.IngestMessage)

        def decode(value: bytes) -> list[LiveReading]:  # type: ignore[misc]
            try:
                message = contract.decode(value)
            except events.ContractError:
                return []
            readings = message.readings if isinstance(message, events.ReadingBatch) else [message]  # type: ignore[union-attr]
            return [
                LiveReading(meter=r.meter, time_ms=r.time_ms, drawn_va=r.drawn_va, cutoff_kva=r.cutoff_kva,
                            tariff_register=r.tariff_register, injected_va=r.injected_va)
                for r in readings
            ]

    hub = LiveHub()
    feed = LiveFeed(Settings(), hub, decode=decode)
    await feed.start()
    waited = 0.0
    while hub.readings == 0 and waited < 180:  # the simulator builds its fleet before it sends
        await asyncio.sleep(0.5)
        waited += 0.5
    await asyncio.sleep(warmup_s)
    meters = list(hub._meters)  # noqa: SLF001 - the bench picks viewers among the meters seen
    random.Random(SEED).shuffle(meters)
    delays: list[float] = []
    measuring = False

    async def view(meter: str) -> None:
        async for _ in hub.follow(meter, last_seen_ms=(hub.latest(meter).time_ms if hub.latest(meter) else -1)):  # type: ignore[union-attr]
            if measuring:
                delays.append(time.time() - hub.produced_ms(meter) / 1000)

    tasks = [asyncio.create_task(view(meters[i % len(meters)])) for i in range(viewers)] if meters else []
    await asyncio.sleep(2)
    process = psutil.Process()
    before = process.cpu_times()
    readings_before = hub.readings
    start = time.monotonic()
    measuring = True
    await asyncio.sleep(window_s)
    measuring = False
    elapsed = time.monotonic() - start
    after = process.cpu_times()
    readings = hub.readings - readings_before
    for task in tasks:
        task.cancel()
    await feed.stop()
    delays.sort()
    return {
        "viewers": viewers,
        "cores": round((after.user + after.system - before.user - before.system) / elapsed, 3),
        "readings_per_s": round(readings / elapsed),
        "meters_seen": len(meters),
        "deliveries": len(delays),
        "p50_s": round(delays[len(delays) // 2], 3) if delays else None,
        "p99_s": round(delays[int(len(delays) * 0.99)], 3) if delays else None,
    }


# --- HTTP viewers (a client process) ------------------------------------------------------------------


async def http_viewers(base: str, tokens: list[str], viewers: int, window_s: float) -> dict[str, Any]:
    delays: list[float] = []
    events = 0
    measuring = False
    flowing: set[int] = set()  # the streams that have had their first event
    limits = httpx.Limits(max_connections=viewers + 10, max_keepalive_connections=viewers + 10)
    async with httpx.AsyncClient(base_url=base, timeout=httpx.Timeout(30, read=None), limits=limits) as client:

        async def view(i: int, token: str) -> None:
            nonlocal events
            async with client.stream("GET", "/v1/me/live", headers={"Authorization": f"Bearer {token}"}) as answer:
                if answer.status_code != 200:
                    raise RuntimeError(f"live answered {answer.status_code}: {await answer.aread()!r}")
                async for line in answer.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    flowing.add(i)
                    if measuring:
                        produced = json.loads(line[5:])["produced_ms"]
                        delays.append(time.time() - produced / 1000)
                        events += 1

        started = time.monotonic()
        tasks = [asyncio.create_task(view(i, tokens[i % len(tokens)])) for i in range(viewers)]
        # Measured once every stream has had an event and the backlog of opening them all (each a
        # request signed in and authorised) has drained: the steady state, not the opening storm.
        while len(flowing) < viewers and time.monotonic() - started < 120:
            failed = [t for t in tasks if t.done() and t.exception()]
            if failed:
                raise failed[0].exception()  # type: ignore[misc]
            await asyncio.sleep(0.2)
        opened_s = time.monotonic() - started
        await asyncio.sleep(SETTLE_S)
        process = psutil.Process()
        before, started = process.cpu_times(), time.monotonic()
        measuring = True
        await asyncio.sleep(window_s)
        measuring = False
        after, elapsed = process.cpu_times(), time.monotonic() - started
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    # The client's own CPU over the window: a client near a whole core is what limits the figure.
    cores = (after.user + after.system - before.user - before.system) / elapsed
    return {"viewers": viewers, "events": events, "cores": round(cores, 3), "flowing": len(flowing),
            "opened_s": round(opened_s, 1), "delays": [round(d, 4) for d in delays]}


async def make_households(settings: Any, homes: list[dict[str, Any]]) -> list[str]:
    """One confirmed account owning a household that paired each home's meter; their account ids."""
    from accounts.operations import AccountOperations
    from accounts.service import AccountsService
    from households.cli import confirmation_link
    from quartier import pairing
    from urllib.parse import parse_qs, urlparse

    service = AccountsService(settings, follow_interval_s=0)
    await service.start()
    ops = AccountOperations(settings, service)
    accounts = []
    try:
        for i, home in enumerate(homes):
            email = f"viewer{i}@bench.quartier.test"
            await ops.sign_up(email=email, name=f"Viewer {i}", password="a long enough password")
            link = confirmation_link(settings.smtp.maildir, email)
            assert link is not None, "no confirmation mail"
            await ops.confirm(parse_qs(urlparse(link.group(0)).query)["token"][0])
            account = service.state.account_by_email(email).account  # type: ignore[union-attr]
            await ops.create_household(account, f"Home {i}")
            await ops.pair(account, meter=home["meter"], zone=home["zone"], code=pairing.pairing_code(home["meter"], home["zone"]))
            accounts.append(account)
    finally:
        await service.stop()
    return accounts


# --- consumption requests -------------------------------------------------------------------------------


def backfill(settings: Any, meter: str, now_ms: int) -> int:
    """12 months of rollup points and one day of raw readings for one Tempo meter; returns points written."""
    from quartier import tariffs
    from quartier.influx import ROLLUP_MEASUREMENT, ROLLUP_POLICY

    def write(lines: list[str], policy: str) -> None:
        for i in range(0, len(lines), 5000):
            answer = httpx.post(
                f"{settings.influx.url}/write",
                params={"db": settings.influx.database, "rp": policy, "precision": "ms"},
                content="\n".join(lines[i : i + 5000]).encode(), timeout=60,
            )
            answer.raise_for_status()

    registers = [1_000_000] * 6
    rng = random.Random(SEED)
    rollup: list[str] = []
    raw: list[str] = []
    step_ms = 600_000
    start = now_ms - 366 * 86_400_000
    start -= start % step_ms
    t = start
    from datetime import datetime, timezone

    while t < now_ms - 86_400_000:
        va = rng.choice((400, 800, 1500, 3000))
        active = tariffs.register_at("tempo", datetime.fromtimestamp(t / 1000, timezone.utc))
        registers[active - 1] += va // 6
        fields = ",".join(f"withdrawn_wh_r{i + 1}={wh}i" for i, wh in enumerate(registers))
        rollup.append(
            f"{ROLLUP_MEASUREMENT},meter={meter},zone=bench drawn_va={va}.0,drawn_va_max={va + 500}i,"
            f"withdrawn_wh={sum(registers)}i,injected_wh=0i,{fields} {t}"
        )
        t += step_ms
    write(rollup, ROLLUP_POLICY)
    while t < now_ms:
        va = rng.choice((400, 800, 1500, 3000))
        active = tariffs.register_at("tempo", datetime.fromtimestamp(t / 1000, timezone.utc))
        registers[active - 1] += 1 if rng.random() < va / 3600 else 0
        fields = ",".join(f"withdrawn_wh_r{i + 1}={wh}i" for i, wh in enumerate(registers))
        raw.append(
            f"reading,meter={meter},zone=bench drawn_va={va}i,injected_va=0i,withdrawn_wh={sum(registers)}i,"
            f"injected_wh=0i,{fields},tariff_register={active}i,voltage_v=230i,current_a={va // 230}i {t}"
        )
        t += 1000
    write(raw, "raw")
    return len(rollup) + len(raw)


def wait_history_in_tsm(settings: Any, timeout_s: float = 180.0) -> float:
    """Waits until InfluxDB has written every shard of the bench's database out of its cache to TSM;
    returns the seconds waited.

    A backfill writes a day of one meter in seconds, and InfluxDB keeps it in its write cache until the
    shard goes cold (``cache-snapshot-write-cold-duration``, quartier.stack.influx). A query reads each
    field's whole cache entry, whatever its time range, so a day of one series in the cache costs every
    chart about 4 ms a field. A fleet's history never sits there: at the fleet's rate the 256 MB cache
    is written out every few tens of seconds, so each meter's cache entry holds seconds of points.
    """
    from quartier.influx import influx_query

    def written_out() -> bool:
        shards = [row for row in influx_query(settings.influx, "SHOW STATS FOR 'tsm1_cache'", database=False)
                  if row.get("database") == settings.influx.database]
        return bool(shards) and all(shard["memBytes"] == 0 for shard in shards)

    started = time.monotonic()
    if not wait_until(written_out, timeout_s, interval_s=1.0):
        raise RuntimeError(f"InfluxDB kept the backfilled history in its cache for {timeout_s:.0f} s")
    return round(time.monotonic() - started, 1)


def _p99_ms(times: list[float]) -> float:
    times = sorted(times)
    return round(times[int(len(times) * 0.99)] * 1000, 1)


def consumption_p99(settings: Any, requests: int) -> dict[str, Any]:
    """Each range and unit, cold (no cache: a household's first chart in this process) and warm (the
    API process's ``BoundaryCache``, filled by one earlier request: only the last hour's buckets read).

    The history is first let out of InfluxDB's write cache into TSM, where a fleet's history is
    (``wait_history_in_tsm``)."""
    from households.consumption import series
    from households.home import Home
    from households.indexes import BoundaryCache
    from quartier import tariffs
    from quartier.influx import query
    from streams.charts import plan_chart

    meter = "990000000001"
    now_ms = int(time.time() * 1000)
    points = backfill(settings, meter, now_ms)
    waited_s = wait_history_in_tsm(settings)
    home = Home(household="bench", meter=meter, zone="bench", tariff=tariffs.TariffOption.TEMPO, subscribed_kva=9)
    out: dict[str, Any] = {"backfilled_points": points, "history_in_tsm_after_s": waited_s, "ranges": {}}
    for range_ in ("24h", "7d", "30d", "12mo"):
        for unit in ("kwh", "eur"):
            cold, warm, baseline = [], [], []
            for _ in range(requests):
                t0 = time.perf_counter()
                chart = series(settings, home, range_, unit)
                cold.append(time.perf_counter() - t0)
            cache = BoundaryCache()
            primed = series(settings, home, range_, unit, cache=cache)
            for _ in range(requests):
                t0 = time.perf_counter()
                again = series(settings, home, range_, unit, cache=cache)
                warm.append(time.perf_counter() - t0)
            at = int(time.time() * 1000)
            if series(settings, home, range_, unit, at_ms=at, cache=cache) != series(settings, home, range_, unit, at_ms=at):
                raise AssertionError(f"{range_} {unit}: the cached chart differs from the one read whole")
            for _ in range(requests):
                plan = plan_chart(settings, meter, range_)
                t0 = time.perf_counter()
                query(settings, plan.influxql(settings.influx.database))
                baseline.append(time.perf_counter() - t0)
            out["ranges"][f"{range_}_{unit}"] = {
                "points": len(chart.buckets), "warm_points": len(again.buckets), "primed_points": len(primed.buckets),
                "cold_p50_ms": round(sorted(cold)[len(cold) // 2] * 1000, 1), "cold_p99_ms": _p99_ms(cold),
                "warm_p50_ms": round(sorted(warm)[len(warm) // 2] * 1000, 1), "warm_p99_ms": _p99_ms(warm),
                "baseline_chart_query_p99_ms": _p99_ms(baseline),
            }
            print(f"  {range_} {unit}: {out['ranges'][f'{range_}_{unit}']}", file=sys.stderr, flush=True)
    out["cold_p99_ms"] = max(r["cold_p99_ms"] for r in out["ranges"].values())
    out["warm_p99_ms"] = max(r["warm_p99_ms"] for r in out["ranges"].values())
    out["baseline_p99_ms"] = max(r["baseline_chart_query_p99_ms"] for r in out["ranges"].values())
    return out


# --- the run --------------------------------------------------------------------------------------------


def run_child(env: dict[str, str], viewers: int, window_s: float, full_decode: bool = False) -> dict[str, Any]:
    argv = [sys.executable, "-m", "bench.app", "--child", "--viewers", str(viewers), "--window", str(window_s)]
    if full_decode:
        argv.append("--full-decode")
    done = subprocess.run(argv, env={**os.environ, **env}, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"live child failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--meters", type=int, default=48_000)
    parser.add_argument("--duration", type=float, default=150.0, help="seconds of real-time simulation")
    parser.add_argument("--viewers", default="1000,2000,4000", help="viewer counts to try, comma-separated")
    parser.add_argument("--window", type=float, default=12.0, help="seconds each child measures")
    parser.add_argument("--requests", type=int, default=100, help="requests per consumption range and unit")
    parser.add_argument("--json", action="store_true", help="also print one JSON object on the last line")
    parser.add_argument("--households", type=int, default=100, help="real accounts whose viewers the API serves")
    parser.add_argument("--in-process", action="store_true", help="also measure viewers on the hub in-process")
    parser.add_argument("--clients", type=int, default=4, help="viewer client processes (at most one per 100 viewers)")
    parser.add_argument("--surfaces", default="accounts,households",
                        help="surfaces the API process serves (comma-separated; empty: every one found)")
    parser.add_argument("--consumption-only", action="store_true", help="measure the consumption requests only")
    parser.add_argument("--loop", default=None, choices=("asyncio", "uvloop"),
                        help="the API process's event loop (uvicorn's --loop; default: uvicorn's choice)")
    parser.add_argument("--logs", default=None, help="copy the API process's and the simulator's logs into this folder")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--viewer-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--full-decode", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(child(int(args.viewers), args.window, 3.0, args.full_decode))))
        return
    if args.viewer_child:
        spec = json.loads(Path(args.viewer_child).read_text())
        print(json.dumps(asyncio.run(http_viewers(spec["base"], spec["tokens"], int(args.viewers), args.window))))
        return

    from quartier.settings import Settings
    from quartier.stack import Stack
    from quartier.stack.broker import Broker
    from quartier.influx import ensure_database
    from quartier.stack.influx import Influx
    from quartier.stack.smtp import SmtpServer

    root = Path(tempfile.mkdtemp(prefix="quartier-bench-app-"))
    run = uuid.uuid4().hex[:8]
    env = {
        "QUARTIER_STATE_DIR": str(root / "stack"),
        "QUARTIER_KAFKA__TOPIC_PREFIX": f"benchapp{run}.",
        "QUARTIER_INFLUX__DATABASE": f"benchapp_{run}",
    }
    stack = Stack(root / "stack", [Broker(), Influx(), SmtpServer()])
    result: dict[str, Any] = {"meters": args.meters, "cpus": os.cpu_count()}
    try:
        stack.up()
        os.environ.update(env)
        settings = Settings()
        ensure_database(settings)
        from quartier.kafka import ensure_topics

        asyncio.run(ensure_topics(settings))
        print("consumption requests over a backfilled year ...", file=sys.stderr, flush=True)
        consumption = consumption_p99(settings, args.requests)
        result["consumption"] = consumption
        result["consumption_p99_ms"] = consumption["warm_p99_ms"]
        result["consumption_cold_p99_ms"] = consumption["cold_p99_ms"]
        result["load_average_1m_after_consumption"] = round(os.getloadavg()[0], 2)
        print(f"consumption p99: warm {consumption['warm_p99_ms']} ms, cold {consumption['cold_p99_ms']} ms "
              f"(bare chart query p99 {consumption['baseline_p99_ms']} ms)")
        if args.consumption_only:
            if args.json:
                print(json.dumps(result))
            return

        described = subprocess.run(
            [sys.executable, "-m", "quartier.cli", "simulate", "--describe", "--meters", str(args.meters), "--seed",
             str(SEED), "--json"], env={**os.environ, **env}, capture_output=True, text=True, check=True)
        fleet = json.loads(described.stdout.strip().splitlines()[-1])
        print(f"{args.households} households signing up and pairing ...", file=sys.stderr, flush=True)
        accounts = asyncio.run(make_households(settings, fleet[: args.households]))
        api_port = pick_port(0)
        api = subprocess.Popen(
            [sys.executable, "-m", "quartier.cli", "api", "serve", "--port", str(api_port), "--no-access-log",
             *(f"--surface={name}" for name in args.surfaces.split(",") if name),
             *(["--loop", args.loop] if args.loop else [])],
            env={**os.environ, **env, "QUARTIER_API__REQUESTS_PER_MINUTE": "100000"},
            stdout=(root / "api.log").open("wb"), stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{api_port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/v1/openapi.json", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or api.poll() is not None:
                raise RuntimeError(f"the API process did not start; see {root / 'api.log'}")
            time.sleep(0.5)
        from accounts.keys import token_secret
        from accounts.readmodel import ReadModel
        from accounts.sessions import CredentialStore

        read_model = ReadModel(settings.sqlite_url("accounts"))
        store = CredentialStore(settings, read_model.engine, token_secret(settings))
        tokens = [store.issue_tokens(a).access_token for a in accounts]
        read_model.close()
        spec_path = root / "viewers.json"
        spec_path.write_text(json.dumps({"base": base, "tokens": tokens}))
        print(f"simulating {args.meters:,} meters for {args.duration:.0f} s ...", file=sys.stderr, flush=True)
        simulator = subprocess.Popen(
            # Runs until every step is measured (stopped below); --duration only bounds it.
            [sys.executable, "-m", "quartier.cli", "simulate", "--meters", str(args.meters), "--duration",
             str(max(args.duration, 3600)), "--seed", str(SEED), "--malformed-fraction", "0", "--json", "--no-progress"],
            env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=(root / "simulator.log").open("wb"), text=True,
        )
        try:
            feed_only = run_child(env, 0, args.window)
            print(f"  live consumer alone: {feed_only}", file=sys.stderr, flush=True)
            full = run_child(env, 0, args.window, full_decode=True)
            print(f"  full-contract decoding: {full}", file=sys.stderr, flush=True)
            steps = []
            api_process = psutil.Process(api.pid)
            for viewers in (int(v) for v in args.viewers.split(",")):
                if simulator.poll() is not None:
                    break
                before, t0 = api_process.cpu_times(), time.monotonic()
                # Several client processes, so that parsing the streams is not what limits the figure.
                clients = max(1, min(args.clients, viewers // 100))
                share = [viewers // clients + (1 if i < viewers % clients else 0) for i in range(clients)]
                procs = [subprocess.Popen(
                    [sys.executable, "-m", "bench.app", "--viewer-child", str(spec_path), "--viewers", str(n),
                     "--window", str(args.window)], env={**os.environ, **env}, stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE, text=True) for n in share]
                outputs = [proc.communicate(timeout=600) for proc in procs]
                for proc, (_, err) in zip(procs, outputs):
                    if proc.returncode != 0:
                        raise RuntimeError(f"viewer client failed:\n{err[-3000:]}")
                after, elapsed = api_process.cpu_times(), time.monotonic() - t0
                parts = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
                delays = sorted(d for part in parts for d in part["delays"])
                events = sum(part["events"] for part in parts)
                step = {
                    "viewers": viewers, "client_processes": clients, "events": events,
                    "events_per_s": round(events / args.window),
                    "p50_s": round(delays[len(delays) // 2], 3) if delays else None,
                    "p99_s": round(delays[int(len(delays) * 0.99)], 3) if delays else None,
                }
                step["api_process_cores"] = round((after.user + after.system - before.user - before.system) / elapsed, 3)
                step["client_cores"] = [part["cores"] for part in parts]
                step["streams_flowing"] = sum(part["flowing"] for part in parts)
                step["opened_s"] = max(part["opened_s"] for part in parts)
                step["load_average_1m"] = round(os.getloadavg()[0], 2)
                print(f"  {viewers:,} HTTP viewers: {step}", file=sys.stderr, flush=True)
                steps.append(step)
            in_process = []
            for viewers in (int(v) for v in args.viewers.split(",")) if args.in_process else ():
                if simulator.poll() is not None:
                    break
                step = run_child(env, viewers, args.window)
                print(f"  {viewers:,} in-process viewers: {step}", file=sys.stderr, flush=True)
                in_process.append(step)
            result["load_average_1m_end"] = round(os.getloadavg()[0], 2)
        finally:
            simulator.terminate()
            simulator.wait(timeout=60)
            api.terminate()
            api.wait(timeout=60)
        result["live_consumer"] = feed_only
        result["live_consumer_full_decode"] = full
        result["live_consumer_cores"] = feed_only["cores"]
        # Per reading: the two runs do not see the same rate (the full decoder may fall behind).
        per_reading = lambda r: r["cores"] / r["readings_per_s"] if r["readings_per_s"] else None  # noqa: E731
        mine, naive = per_reading(feed_only), per_reading(full)
        result["live_consumer_us_per_reading"] = round(mine * 1e6, 2) if mine else None
        result["full_decode_us_per_reading"] = round(naive * 1e6, 2) if naive else None
        result["ratio_to_full_decode"] = round(mine / naive, 3) if mine and naive else None
        result["viewer_steps_http"] = steps
        result["viewer_steps_in_process"] = in_process
        passing = [s["viewers"] for s in steps if s["p99_s"] is not None and s["p99_s"] <= LATENCY_TARGET_S]
        result["live_viewers_at_p99_1_5s"] = max(passing, default=0)
        result["households"] = args.households
    finally:
        stack.down()
        if args.logs:
            logs = Path(args.logs)
            logs.mkdir(parents=True, exist_ok=True)
            for name in ("api.log", "simulator.log"):
                if (root / name).exists():
                    shutil.copy(root / name, logs / name)
        shutil.rmtree(root, ignore_errors=True)
    print(f"live consumer: {result['live_consumer_cores']} cores at {feed_only['readings_per_s']:,} readings/s, "
          f"{result['live_consumer_us_per_reading']} us a reading (full contract decoding: "
          f"{result['full_decode_us_per_reading']} us; ratio {result['ratio_to_full_decode']})")
    print(f"live viewers within p99 {LATENCY_TARGET_S} s: {result['live_viewers_at_p99_1_5s']:,}")
    print(f"load average: {result.get('load_average_1m_end')} (1 min, at the end) on {result['cpus']} cores")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    lifetime.run(main)
