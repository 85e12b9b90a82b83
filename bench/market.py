"""Market benchmark: API requests/s for listing and buying, clearing time per slot, and settlement
latency from slot end to confirmed on anvil.

A fleet from the simulator (default 48,000 homes in 100 zones; its rooftop-solar homes are the
producers, each a prosumer) joins the market; zones take turns at bilateral, pay-as-bid and
pay-as-clear. Zones and participants are appended to ``market.events`` up front, tokens issued in
bulk, then ``quartier market api`` runs as its own process (folding that log at start) and:

- **baseline**: ``GET /v1/health`` (HTTP, no token, no work) at the same concurrency;
- **listing**: every producer lists tomorrow's daylight (08:00-18:00 UTC, 40 slots) in one call;
- **buying**: consumers buy part of an offer of their zone (bilateral) or bid for a slot (auctions).

Then the API stops and the market service runs in this process with a clock set past every gate,
closing each slot (pay-as-bid and pay-as-clear clearing, append, fold, read models): the time per
slot, and the pure clearing decision alone.

**Settlement**, on a subset (a whole day of every zone would be tens of thousands of transactions,
and each slot waits the settlement grace period in real time): the events of the first
``--settle-zones`` zones (two of each mechanism by default) are copied to a market of their own,
the contracts are deployed on a fresh anvil by ``quartier chain deploy``, and a market service built
as ``quartier market api`` builds it (settlement on, default grace, its scheduled jobs every 5 s)
walks the first ``--settle-slots`` slots of the day with a clock running in real time: at each
slot's gate it closes the slot and escrows its trades on chain; at the slot's end (chain time moved
there too) the meter data of every producer and buyer of the slot arrives on ``meter.slots`` as the
stream worker sends it; the latency is from then to the slot's ``settlement_confirmed``, for each
slot with trades.

The client and the server share the machine's cores (and the broker): figures are for one box.

    python -m bench.market [--participants 48000] [--zones 100] [--buys 20000] [--concurrency 32]
                           [--settle-zones 6] [--settle-slots 6] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer
from web3 import Web3

from bench import lifetime
from contracts.amounts import opaque_id
from contracts.devchain import advance_to
from quartier import events as ev
from quartier import kafka, topics
from quartier.settings import Settings
from quartier.stack import Stack
from quartier.stack.broker import Broker
from quartier.stack.chain import Chain
from quartier.stack.influx import Influx
from simulator.config import FleetConfig
from simulator.fleet import build_fleet

from marketplace import commands, onchain
from marketplace.auth import TokenStore
from marketplace.clock import ManualClock
from marketplace.log import MarketLog, replay
from marketplace.readmodel import ReadModel
from marketplace.service import wire
from marketplace.state import SLOT_MS

DAY_MS = 24 * 3_600_000
MECHANISMS = ("bilateral", "pay_as_bid", "pay_as_clear")
DAYLIGHT = (8, 18)  # UTC hours of the listed window
GATE_S = 600  # the zones' gate closure: the market's default, before the chain's (300 s)


async def seed(settings: Settings, fleet: Any, now_ms: int) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """Appends every zone and participant to the log; returns zone mechanisms and participants."""
    log = MarketLog(settings)
    await log.start()
    zones = {zone.id: MECHANISMS[i % 3] for i, zone in enumerate(fleet.zones)}
    members: dict[str, list[dict[str, Any]]] = {z: [] for z in zones}
    for i, meter in enumerate(fleet.meter_ids):
        zone = fleet.zones[fleet.zone_index[i]].id
        producer = bool(fleet.producer[i])
        members[zone].append({
            "participant": f"h{meter}", "zone": zone, "meter": meter, "producer": producer,
            "capacity_w": int(fleet.pv_kwp[i] * 1000) if producer else 0,
        })
    try:
        for zone, mechanism in zones.items():
            batch: list[Any] = [ev.ZoneConfigured(zone=zone, mechanism=mechanism, gate_closure_s=GATE_S,  # type: ignore[arg-type]
                                                  min_lot_wh=10, at_ms=now_ms)]
            batch += [
                ev.ParticipantRegistered(participant=m["participant"], zone=zone, meter=m["meter"],
                                         roles=("consumer", "producer") if m["producer"] else ("consumer",),
                                         capacity_w=m["capacity_w"], at_ms=now_ms)
                for m in members[zone]
            ]
            for start in range(0, len(batch), 2000):
                await log.append(zone, batch[start:start + 2000])
    finally:
        await log.stop()
    return zones, [m for ms in members.values() for m in ms]


async def hammer(client: httpx.AsyncClient, calls: Sequence[Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]],
                 concurrency: int) -> tuple[float, Counter[int], list[httpx.Response]]:
    """Runs the calls with ``concurrency`` in flight; returns seconds, status counts (0: no answer,
    the connection failed), and the answers."""
    pending = iter(range(len(calls)))
    responses: list[httpx.Response | None] = [None] * len(calls)

    failures: Counter[int] = Counter()

    async def worker() -> None:
        for i in pending:
            try:
                responses[i] = await calls[i](client)
            except httpx.TransportError:
                failures[0] += 1  # counted as status 0: the connection failed, no answer

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    done = [r for r in responses if r is not None]
    return elapsed, Counter(r.status_code for r in done) + failures, done


def start_api(env: dict[str, str], port: int, log_path: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "quartier.cli", "market", "api", "--port", str(port), "--no-access-log",
         "--close-interval", "3600", "--keep-alive", "60"],
        env=env, stdout=log_path.open("wb"), stderr=subprocess.STDOUT,
    )


async def wait_healthy(url: str, server: subprocess.Popen[bytes], timeout_s: float = 600) -> float:
    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=5) as client:
        while True:
            try:
                if (await client.get(f"{url}/v1/health")).status_code == 200:
                    return time.perf_counter() - started
            except httpx.TransportError:
                pass
            if server.poll() is not None:
                raise RuntimeError("the market API exited; see its log")
            if time.perf_counter() - started > timeout_s:
                raise RuntimeError("the market API did not start")
            await asyncio.sleep(0.2)


class RunningClock:
    """Real time, from a point the benchmark jumps to (forward): the market's jobs wait as they would."""

    def __init__(self, now_ms: int) -> None:
        self._offset_ms = 0
        self.jump(now_ms)

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000 + self._offset_ms

    def jump(self, to_ms: int) -> None:
        self._offset_ms = to_ms - time.time_ns() // 1_000_000


async def copy_zones(source: Settings, target: Settings, zones: set[str]) -> int:
    """Appends every event of ``zones`` from the source market's log to the target's; returns how many."""
    by_zone: dict[str, list[Any]] = defaultdict(list)
    async for entry in replay(source):
        zone = getattr(entry.event, "zone", None)
        if zone in zones:
            by_zone[zone].append(entry.event)
    log = MarketLog(target)
    await log.start()
    try:
        for zone, events in by_zone.items():
            for start in range(0, len(events), 2000):
                await log.append(zone, events[start:start + 2000])
    finally:
        await log.stop()
    return sum(len(events) for events in by_zone.values())


async def publish_meter_slots(settings: Settings, records: list[ev.SlotEnergy]) -> None:
    """Sends slot records on meter.slots as the stream worker does (keyed by meter)."""
    producer = AIOKafkaProducer(**kafka.producer_config(settings))
    await producer.start()
    try:
        topic = settings.topic(topics.METER_SLOTS.name)
        for r in records:
            await producer.send(topic, ev.encode(r), key=r.meter.encode())
        await producer.flush()
    finally:
        await producer.stop()


def measured_energy(state: Any, zone: str, slot_start_ms: int, rng: random.Random) -> list[ev.SlotEnergy]:
    """What the meters of a slot's producers and buyers measured: producers export 85-110 % of what
    they sold (some deliver short), buyers import 95-160 % of what they bought; complete slots."""
    sold: Counter[str] = Counter()
    bought: Counter[str] = Counter()
    for trade_id in state.slot_trades.get((zone, slot_start_ms), ()):
        trade = state.trades[trade_id]
        sold[state.participants[trade.producer].meter] += trade.energy_wh
        bought[state.participants[trade.consumer].meter] += trade.energy_wh
    return [
        ev.SlotEnergy(meter=meter, zone=zone, slot_start_ms=slot_start_ms,
                      imported_wh=round(bought[meter] * rng.uniform(0.95, 1.6)),
                      exported_wh=round(sold[meter] * rng.uniform(0.85, 1.1)), completeness=1.0)
        for meter in sorted(set(sold) | set(bought))
    ]


async def settle(source: Settings, chain_settings: dict[str, Any], tmp: Path, zones: list[str], window: tuple[int, int],
                 slot_count: int, close_interval_s: float, say: Callable[[str], None]) -> dict[str, Any]:
    """The settlement walk described at the top; returns its figures."""
    settings = Settings(state_dir=tmp / "settle-state", database_url=f"sqlite:///{tmp / 'settle.db'}",
                        kafka={**source.kafka.model_dump(), "topic_prefix": "bench-settle."}, chain=chain_settings,
                        influx=source.influx)
    copied = await copy_zones(source, settings, set(zones))
    env = os.environ | {"QUARTIER_STATE_DIR": str(settings.state_dir), "QUARTIER_CHAIN__RPC_URL": settings.chain.rpc_url,
                        "QUARTIER_CHAIN__CHAIN_ID": str(settings.chain.chain_id)}
    deployed = subprocess.run([sys.executable, "-m", "quartier.cli", "chain", "deploy", "--json"], env=env,
                              capture_output=True, text=True, timeout=600)
    if deployed.returncode != 0:
        raise RuntimeError(f"quartier chain deploy failed: {deployed.stderr}")
    say(f"settlement: {copied:,} events of {len(zones)} zones copied; contracts deployed at "
        f"{json.loads(deployed.stdout)['market']}")

    w3 = Web3(Web3.HTTPProvider(settings.chain.rpc_url))
    chain = onchain.connect(settings)  # the bench's own view of the chain, to see escrow land
    slot_times = list(range(window[0], window[1], SLOT_MS))[:slot_count]
    clock = RunningClock(slot_times[0] - GATE_S * 1000)  # the first slot's gate: it closes
    service = wire(settings, clock=clock, close_interval_s=close_interval_s,
                            connect_chain=lambda: onchain.connect(settings))  # as `quartier market api` does
    rng = random.Random(11)
    latencies: dict[tuple[str, int], float] = {}
    escrow_s: list[float] = []
    await service.start()

    def traded(slot_start_ms: int) -> list[str]:
        return [z for z in zones if service.state.slot_trades.get((z, slot_start_ms))]

    async def escrowed(slot_starts: list[int], closing: int, timeout_s: float = 3600) -> tuple[float, int]:
        """Waits until the slot ``closing`` has closed and every trade of the closed slots among
        ``slot_starts`` is an order on chain; returns the seconds waited and the orders counted."""
        started = time.perf_counter()
        while True:
            missing = orders = 0
            for start in slot_starts:
                for zone in traded(start):
                    if service.state.slots[(zone, start)].status == "open":
                        missing += start == closing
                        continue
                    on_chain = await asyncio.to_thread(chain.market.slot_state, opaque_id(zone), start // 1000)
                    trades = len(service.state.slot_trades[(zone, start)])
                    missing += trades - on_chain.orders
                    orders += trades
            if not missing:
                return time.perf_counter() - started, orders
            if time.perf_counter() - started > timeout_s:
                raise RuntimeError(f"{missing} trades not escrowed after {timeout_s} s")
            await asyncio.sleep(0.2)

    try:
        # The first run escrows every auction trade of the day (cleared above at once) and the first
        # slot's: all before the chain's clock moves into the day.
        first_escrow_s, first_orders = await escrowed(list(range(window[0], window[1], SLOT_MS)), slot_times[0])
        say(f"settlement: first escrow ({first_orders:,} orders: the day's auction trades and slot 1's) "
            f"in {first_escrow_s:.1f} s")
        for start in slot_times:
            end = start + SLOT_MS
            if end < window[1]:
                # The next slot's gate comes before this slot's end: it closes and goes on chain now
                # (also after the last slot walked, or the chain's clock would pass its gate).
                clock.jump(end - GATE_S * 1000)
                escrow_s.append((await escrowed([end], end))[0])
            advance_to(w3, end // 1000)
            clock.jump(end)
            slot_end = time.perf_counter()
            await publish_meter_slots(settings, [r for z in zones for r in measured_energy(service.state, z, start, rng)])
            pending = set(traded(start))
            while pending:
                for zone in list(pending):
                    if service.state.slots[(zone, start)].status == "confirmed":
                        latencies[(zone, start)] = time.perf_counter() - slot_end
                        pending.discard(zone)
                if time.perf_counter() - slot_end > 3600 + 600:
                    raise RuntimeError(f"slot {start}: zones {sorted(pending)} not confirmed")
                await asyncio.sleep(0.05)
            done = [v for (z, t), v in latencies.items() if t == start]
            say(f"settlement: slot {slot_times.index(start) + 1}/{len(slot_times)}: {len(done)} zones with trades confirmed, "
                f"{max(done, default=0):.1f} s after the slot's end")
        trades = sum(len(service.state.slot_trades.get(key, ())) for key in latencies)
    finally:
        await service.stop()
    values = sorted(latencies.values())
    grace_s = service.settlement.grace_ms / 1000
    return {
        "settlement_latency_s": round(statistics.median(values), 2) if values else None,
        "settlement_latency_min_s": round(values[0], 2) if values else None,
        "settlement_latency_max_s": round(values[-1], 2) if values else None,
        "settlement_grace_s": grace_s,
        "settlement_job_interval_s": close_interval_s,
        "settlement_after_grace_p50_s": round(statistics.median(values) - grace_s, 2) if values else None,
        "settlement_slots": len(values),
        "settlement_trades": trades,
        "settlement_zones": len(zones),
        "settlement_slot_times": len(slot_times),
        "escrow_first_s": round(first_escrow_s, 1),
        "escrow_first_orders": first_orders,
        "escrow_per_slot_max_s": round(max(escrow_s, default=0.0), 2),
        "settlement_note": (f"subset: {len(zones)} zones x the first {len(slot_times)} slots of the day "
                            f"({len(values)} slots with trades), grace {grace_s:g} s waited in real time"),
    }


async def run(participants: int, zone_count: int, buys: int, concurrency: int, tmp: Path, progress: bool,
              settle_zones: int = 6, settle_slots: int = 6, close_interval_s: float = 5.0) -> dict[str, Any]:
    def say(message: str) -> None:
        if progress:
            print(f"  {message}", file=sys.stderr, flush=True)

    # InfluxDB too: the market writes its price and volume points (marketplace/charts.py) as it runs.
    stack = Stack(tmp / "stack", [Broker(), Chain(), Influx()])
    overrides = stack.up()
    try:
        settings = Settings(state_dir=tmp / "state", database_url=f"sqlite:///{tmp / 'market.db'}",
                            kafka={**overrides["kafka"], "topic_prefix": "bench."}, influx=overrides["influx"])
        now_ms = time.time_ns() // 1_000_000
        day = now_ms - now_ms % DAY_MS + DAY_MS  # tomorrow, 00:00 UTC
        window = (day + DAYLIGHT[0] * 3_600_000, day + DAYLIGHT[1] * 3_600_000)
        rng = random.Random(7)

        fleet = build_fleet(FleetConfig(meters=participants, zones=zone_count, seed=0))
        seeded = time.perf_counter()
        zones, members = await seed(settings, fleet, now_ms)
        seed_s = time.perf_counter() - seeded
        producers = [m for m in members if m["producer"]]
        say(f"seeded {len(zones)} zones and {len(members)} participants ({len(producers)} producers) in {seed_s:.1f} s")
        read_model = ReadModel(settings.database_url)
        tokens = TokenStore(read_model.engine).issue_many(
            [(m["participant"], "producer" if m["producer"] else "consumer") for m in members], now_ms)
        for member, token in zip(members, tokens):
            member["auth"] = {"Authorization": f"Bearer {token}"}
        consumer_tokens = TokenStore(read_model.engine).issue_many([(m["participant"], "consumer") for m in producers], now_ms)
        for member, token in zip(producers, consumer_tokens):
            member["consumer_auth"] = {"Authorization": f"Bearer {token}"}
        read_model.close()

        env = os.environ | {
            "QUARTIER_KAFKA__BOOTSTRAP": settings.kafka.bootstrap, "QUARTIER_KAFKA__FLAVOUR": settings.kafka.flavour,
            "QUARTIER_KAFKA__TOPIC_PREFIX": settings.kafka.topic_prefix, "QUARTIER_STATE_DIR": str(settings.state_dir),
            "QUARTIER_DATABASE_URL": settings.database_url, "QUARTIER_INFLUX__URL": settings.influx.url,
            # One client address and a few principals send everything: the per-minute limits are not under test.
            "QUARTIER_API__REQUESTS_PER_MINUTE": "100000000", "QUARTIER_API__ANONYMOUS_REQUESTS_PER_MINUTE": "100000000",
        }
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        server = start_api(env, port, tmp / "api.log")
        try:
            startup_s = await wait_healthy(url, server)
            say(f"API up in {startup_s:.1f} s (folded the seeded log)")
            limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

            def client() -> httpx.AsyncClient:
                # A fresh pool per phase: between phases this process works for seconds, longer than
                # the server keeps an idle connection (uvicorn: 5 s), and a reused closed one fails.
                return httpx.AsyncClient(base_url=url, timeout=120, limits=limits)

            health_calls = [lambda c: c.get("/v1/health")] * max(2000, len(producers) // 2)
            async with client() as c:
                health_s, health_status, _ = await hammer(c, health_calls, concurrency)
            say(f"baseline: {len(health_calls) / health_s:,.0f} GET /v1/health per s")

            def listing(m: dict[str, Any]) -> Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]:
                body = {"slot_start_ms": window[0], "slot_end_ms": window[1],
                        "energy_wh_per_slot": max(10, m["capacity_w"] // 8),  # half the installation's peak
                        "price_cents_per_kwh": rng.randint(8, 20)}
                return lambda c: c.post("/v1/offers", json=body, headers=m["auth"])

            async with client() as c:
                list_s, list_status, listed = await hammer(c, [listing(m) for m in producers], concurrency)
            offers_by_zone: dict[str, list[str]] = {}
            for answer in listed:
                if answer.status_code == 201:
                    for offer in answer.json()["items"]:
                        offers_by_zone.setdefault(offer["zone"], []).append(offer["offer_id"])
            offers = sum(len(v) for v in offers_by_zone.values())
            say(f"listing: {len(producers) / list_s:,.0f} calls/s ({offers:,} offers), statuses {dict(list_status)}")

            def buying(m: dict[str, Any]) -> Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]:
                auth = m.get("consumer_auth", m["auth"])
                if zones[m["zone"]] == "bilateral":
                    candidates = offers_by_zone.get(m["zone"], [])
                    body = {"offer_id": rng.choice(candidates) if candidates else "none",
                            "energy_wh": rng.choice((50, 100, 200))}
                    return lambda c: c.post("/v1/orders", json=body, headers=auth)
                slot = rng.randrange(window[0], window[1], SLOT_MS)
                bid = {"slot_start_ms": slot, "energy_wh": rng.choice((100, 200, 400)),
                       "price_cents_per_kwh": rng.randint(5, 25)}
                return lambda c: c.post("/v1/bids", json=bid, headers=auth)

            buyers = [rng.choice(members) for _ in range(buys)]
            buy_calls = [buying(m) for m in buyers]
            async with client() as c:
                buy_s, buy_status, _ = await hammer(c, buy_calls, concurrency)
            say(f"buying: {buys / buy_s:,.0f} requests/s, statuses {dict(buy_status)}")
        finally:
            server.terminate()
            server.wait(timeout=120)
            # Kept for a look after a failed run (the temporary directory goes away).
            (Path(tempfile.gettempdir()) / "bench-market-api.log").write_bytes((tmp / "api.log").read_bytes())

        # Gate closure of every slot of the day, in this process, with the clock past every gate.
        clock = ManualClock(window[1])
        service = wire(settings, clock=clock, close_interval_s=None)
        await service.start()
        try:
            due = service.state.due_slots(clock.now_ms())
            auction_slots = [(z, s) for z, s in due if service.state.slots[(z, s)].mechanism != "bilateral"]
            pure_started = time.perf_counter()
            for zone, start in auction_slots:
                commands.close_slot(service.state, zone, start, clock.now_ms())
            pure_s = time.perf_counter() - pure_started
            per_slot: list[float] = []
            for zone, start in auction_slots:
                started = time.perf_counter()
                await service.execute(zone, lambda s, now, z=zone, t=start: commands.close_slot(s, z, t, now))
                per_slot.append(time.perf_counter() - started)
            trades = len(service.state.trades)
            traded_wh = sum(t.energy_wh for t in service.state.trades.values())
        finally:
            await service.stop()
        say(f"cleared {len(per_slot)} auction slots: {sum(per_slot) / max(1, len(per_slot)) * 1000:.1f} ms per slot")

        settlement = await settle(settings, overrides["chain"], tmp, list(zones)[:settle_zones], window, settle_slots,
                                  close_interval_s, say)
    finally:
        stack.down()

    listing_rps = len(producers) / list_s
    buying_rps = buys / buy_s
    baseline_rps = len(health_calls) / health_s
    api_rps = (len(producers) + buys) / (list_s + buy_s)
    return {
        "participants": len(members),
        "producers": len(producers),
        "zones": len(zones),
        "concurrency": concurrency,
        "seed_s": round(seed_s, 2),
        "api_startup_s": round(startup_s, 2),
        "baseline_health_requests_per_s": round(baseline_rps),
        "listing_requests_per_s": round(listing_rps),
        "listing_offers_per_s": round(offers / list_s),
        "listing_statuses": dict(list_status),
        "buying_requests_per_s": round(buying_rps),
        "buying_statuses": dict(buy_status),
        "api_requests_per_s": round(api_rps),
        "api_ratio_to_baseline": round(api_rps / baseline_rps, 3),
        "offers": offers,
        "auction_slots": len(per_slot),
        "clearing_s_per_slot": round(sum(per_slot) / max(1, len(per_slot)), 5),
        "clearing_max_s": round(max(per_slot, default=0.0), 5),
        "clearing_decision_s_per_slot": round(pure_s / max(1, len(auction_slots)), 5),
        "trades": trades,
        "traded_wh": traded_wh,
        **settlement,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--participants", type=int, default=48_000)
    parser.add_argument("--zones", type=int, default=100)
    parser.add_argument("--buys", type=int, default=20_000, help="purchase and bid requests")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    parser.add_argument("--settle-zones", type=int, default=6, help="zones whose slots are settled on chain")
    parser.add_argument("--settle-slots", type=int, default=6, help="slots of the day settled, from 08:00")
    parser.add_argument("--json", action="store_true", help="also print one JSON object on the last line")
    args = parser.parse_args()
    # The first escrow run outlasts the job's interval; APScheduler would warn of each run it skips.
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="bench-market-") as tmp:
        result = asyncio.run(run(args.participants, args.zones, args.buys, args.concurrency, Path(tmp), progress=True,
                                 settle_zones=args.settle_zones, settle_slots=args.settle_slots))
    print(
        f"market: {result['participants']:,} participants ({result['producers']:,} producers) in {result['zones']} zones, "
        f"{result['concurrency']} requests in flight\n"
        f"  baseline GET /v1/health:    {result['baseline_health_requests_per_s']:>7,} requests/s\n"
        f"  listing (40-slot window):   {result['listing_requests_per_s']:>7,} requests/s "
        f"({result['listing_offers_per_s']:,} offers/s)\n"
        f"  buying (purchases, bids):   {result['buying_requests_per_s']:>7,} requests/s\n"
        f"  listing and buying:         {result['api_requests_per_s']:>7,} requests/s "
        f"({result['api_ratio_to_baseline']}x baseline)\n"
        f"  clearing, per auction slot: {result['clearing_s_per_slot'] * 1000:.2f} ms "
        f"(decision alone {result['clearing_decision_s_per_slot'] * 1000:.2f} ms; {result['auction_slots']} slots, "
        f"{result['trades']:,} trades)\n"
        f"  settlement, slot end to confirmed on anvil: p50 {result['settlement_latency_s']} s, "
        f"min {result['settlement_latency_min_s']} s, max {result['settlement_latency_max_s']} s "
        f"(grace {result['settlement_grace_s']:g} s, jobs every {result['settlement_job_interval_s']:g} s; "
        f"{result['settlement_trades']:,} trades)\n"
        f"    {result['settlement_note']}\n"
        f"  escrow on chain: first run {result['escrow_first_s']} s ({result['escrow_first_orders']:,} orders), "
        f"then at most {result['escrow_per_slot_max_s']} s per slot"
    )
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    lifetime.run(main)
