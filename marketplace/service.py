"""The market service: the one writer of ``market.events``, and the state and read models it keeps.

Write path (how a command sees its own prior events): the service owns the market state, folded
from the whole log at start. A command takes its zone's partition lock, is checked against that
state, is appended to the zone's partition as one record batch, and only once the broker has it is
folded into the state and written to the read models (with the log position it reflects) before the
answer goes out. So the next command, and the client's next read, see it: read-your-writes without
waiting on a consumer. One process writes a deployment's market.events; a second writer is
detected (the offsets it took are not where the state expects) and its events folded in first; so
is an append the broker did not confirm (timeout): the next command of that partition first folds
whatever the log holds, so a retried command is checked against the truth.

Restart: the state is folded again from the log; the read models are behind by whatever events came
after their stored position, and only the entities those events touched are rewritten.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import msgspec

from quartier import events as ev
from quartier.settings import Settings

from marketplace import commands
from marketplace.auth import TokenStore
from marketplace.charts import MarketCharts
from marketplace.clock import Clock, SystemClock
from marketplace.log import MarketLog, replay
from marketplace.meterfeed import MeterFeed
from marketplace.metering import MeterStore
from marketplace.onchain import ChainSettlement, ChainUnavailable
from marketplace.readmodel import ReadModel, snapshot
from marketplace.scheduler import MarketJobs, MarketScheduler
from marketplace.settlement import SettlementTiming, allocate_slot, closed_slots, slot_meters
from marketplace.state import EntityRef, MarketState

log = logging.getLogger(__name__)

Decide = Callable[[MarketState, int], Sequence[msgspec.Struct]]


class MarketService:
    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        close_interval_s: float | None = 5.0,
        settlement: SettlementTiming | None = None,
        chain: ChainSettlement | None = None,
        connect_chain: Callable[[], ChainSettlement] | None = None,
        charts: bool = True,
    ) -> None:
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self.close_interval_s = close_interval_s
        self.database_url = settings.sqlite_url("market")
        self.read_model = ReadModel(self.database_url)
        self.tokens = TokenStore(self.read_model.engine)
        self.log = MarketLog(settings)
        self.settlement = settlement or SettlementTiming.from_settings(settings.market)
        self.meters = MeterStore(self.read_model.engine)
        self.chain = chain  # None: slots are allocated but not taken to a chain...
        # ...unless this connects one (tried on each settlement run until it succeeds).
        self.connect_chain = connect_chain
        self._escrowed: set[tuple[str, int]] = set()
        self._chain_problem = ""  # the last reason the chain could not be reached, logged once
        self._failures: dict[tuple[str, int], str] = {}  # the last chain error per slot, logged once
        self._meter_feed = MeterFeed(settings, self.meters)
        # Prices and volumes per zone and slot in InfluxDB (settings.influx), written with the read models.
        self.charts = MarketCharts(settings) if charts else None
        self.state = MarketState()
        self._locks: dict[int, asyncio.Lock] = defaultdict(asyncio.Lock)
        # One thread writes the read models, in the order commands complete.
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="market-projector")
        self._chart_writer = ThreadPoolExecutor(1, thread_name_prefix="market-charts")
        self._stale = False
        self._uncertain: set[int] = set()  # partitions with an append whose outcome is unknown
        self._scheduler: MarketScheduler | None = None

    # --- life cycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.log.start()
        await self._load()
        await self._meter_feed.start()
        if self.close_interval_s:
            jobs = MarketJobs(self.close_due_slots, self.allocate_due_slots, self.settle_due_slots)
            self._scheduler = MarketScheduler(jobs, self.close_interval_s)
            self._scheduler.start()

    async def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.stop()
            self._scheduler = None
        # Let commands in flight finish appending and projecting.
        for lock in list(self._locks.values()):
            async with lock:
                pass
        await self._meter_feed.stop()
        await self.log.stop()
        self._writer.shutdown(wait=True)
        self._chart_writer.shutdown(wait=True)
        self.read_model.close()

    async def _load(self) -> None:
        stored = await asyncio.to_thread(self.read_model.positions)
        touched: dict[EntityRef, None] = {}
        async for entry in replay(self.settings):
            refs = self.state.apply(entry.event, entry.partition, entry.offset)
            if entry.offset >= stored.get(entry.partition, 0):
                touched.update(dict.fromkeys(refs))
        if self.charts is not None:
            # Every slot again: cheap (a point per slot), and covers points an earlier process
            # could not write before it stopped.
            self.charts.everything(self.state)
        ahead = {p: o for p, o in stored.items() if o > self.state.positions.get(p, 0)}
        if ahead:
            # The read models reflect events this log does not have (another topic, a reset broker).
            log.warning("read models are ahead of market.events at %s: rebuilding them", ahead)
            await asyncio.to_thread(self.read_model.rebuild, self.state)
            await self._project([])
        elif touched or self.charts is not None:
            await self._project(list(touched))
        log.info("market state loaded at %s; %d entities projected", dict(self.state.positions), len(touched))

    # --- commands --------------------------------------------------------------------------------

    async def execute(self, zone: str | None, decide: Decide) -> list[msgspec.Struct]:
        """Checks a command against the state, appends its events, folds and projects them.

        ``zone`` chooses the partition lock; ``None`` when the command names nothing that exists,
        in which case ``decide`` must reject it.
        """
        if zone is None:
            decided = decide(self.state, self.clock.now_ms())
            if decided:
                raise RuntimeError("a command without a zone produced events")
            return []
        partition = self.log.partition_for(zone)
        async with self._locks[partition]:
            if partition in self._uncertain:
                # An earlier append was not confirmed: it may be on the log. Fold what the log holds
                # before checking anything against the state.
                await self._catch_up(partition)
                self._uncertain.discard(partition)
            events = list(decide(self.state, self.clock.now_ms()))
            if not events:
                return []
            for event in events:
                if getattr(event, "zone", None) != zone:
                    raise RuntimeError(f"a command for zone {zone!r} produced {event!r}")
            try:
                appended = await self.log.append(zone, events)
            except BaseException:
                self._uncertain.add(partition)
                raise
            expected = self.state.positions.get(appended.partition, 0)
            if appended.first_offset != expected:
                log.error(
                    "market.events partition %d: offsets %d..%d were not written by this service "
                    "(another writer, or an append it could not confirm); folding them in",
                    partition, expected, appended.first_offset - 1,
                )
                await self._catch_up(partition, until=appended.first_offset)
            touched: list[EntityRef] = []
            for i, event in enumerate(events):
                touched += self.state.apply(event, appended.partition, appended.first_offset + i)
            await self._project(touched)
        return events

    async def _catch_up(self, partition: int, until: int | None = None) -> None:
        """Folds the events of one partition the state has not seen, up to ``until`` (or the end)."""
        start = self.state.positions.get(partition, 0)
        # Other partitions start past their end, so only this one is read.
        positions = {p: (start if p == partition else 1 << 62) for p in self.log.partitions}
        touched: list[EntityRef] = []
        async for entry in replay(self.settings, positions):
            if entry.partition == partition and (until is None or entry.offset < until):
                touched += self.state.apply(entry.event, entry.partition, entry.offset)
        if touched:
            await self._project(touched)

    async def _project(self, touched: list[EntityRef]) -> None:
        # Rows are snapshotted here, in the event loop, so the writer thread never reads live state.
        refs = list(self.state.all_entities()) if self._stale else touched
        rows = snapshot(self.state, refs)
        positions = dict(self.state.positions)
        points = self.charts.lines(self.state, touched) if self.charts is not None else []
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._writer, self.read_model.write, rows, positions)
        except Exception:
            # The events are on the log and in the state: the command happened. The read models are
            # behind; the next write rewrites every entity, and a restart catches up from the log.
            log.exception("writing the read models failed; they will be rewritten on the next command")
            self._stale = True
        else:
            self._stale = False
        if points and self.charts is not None:
            # Not awaited: a command does not wait on InfluxDB. One thread keeps the writes in fold
            # order; it never raises (an outage keeps the slots pending for a later fold).
            self._chart_writer.submit(self.charts.write, points)

    async def close_due_slots(self) -> int:
        """Closes (and clears) every open slot whose gate has passed; returns how many."""
        closed = 0
        for zone, start in self.state.due_slots(self.clock.now_ms()):
            def decide(state: MarketState, now_ms: int, zone: str = zone, start: int = start) -> Sequence[msgspec.Struct]:
                return commands.close_slot(state, zone, start, now_ms)

            if await self.execute(zone, decide):
                closed += 1
        return closed

    async def allocate_due_slots(self) -> int:
        """Allocates every closed slot whose meter data is complete or whose deadline passed."""
        allocated = 0
        for zone, start in closed_slots(self.state, ended_by_ms=self.clock.now_ms() - self.settlement.grace_ms):
            meters = slot_meters(self.state, zone, start)
            metered = await asyncio.to_thread(self.meters.slot, start, meters)

            def decide(state: MarketState, now_ms: int, zone: str = zone, start: int = start,
                       metered: dict = metered) -> Sequence[msgspec.Struct]:  # type: ignore[type-arg]
                return allocate_slot(state, zone, start, metered, now_ms, self.settlement)

            if await self.execute(zone, decide):
                allocated += 1
        return allocated

    async def settle_due_slots(self) -> int:
        """Takes closed slots' trades to the chain (escrow) and settles allocated slots there,
        appending ``settlement_submitted`` and ``settlement_confirmed``; returns slots confirmed.

        Exactly once: the log says which slots are settled (confirmed ones are skipped), the chain
        says what landed (escrow skips what is there, ``settle_slot`` resumes at the contract's
        cursor or reports the slot settled, with the confirmation found on chain). A slot whose
        chain call fails is logged and tried again on the next run. The chain calls run in a thread
        and read trades of a closed slot, which no later command changes.
        """
        chain = self.chain or await self._connect()
        if chain is None:
            return 0
        confirmed = 0
        for key in sorted(self.state.unsettled, key=lambda k: (k[1], k[0])):
            slot = self.state.slots[key]
            if slot.status == "closed" and key in self._escrowed:
                continue  # on chain already; waits for its allocation
            try:
                if key not in self._escrowed:
                    await asyncio.to_thread(chain.escrow, self.state, *key)
                    self._escrowed.add(key)
                if slot.status == "closed":
                    continue
                confirmation = await asyncio.to_thread(chain.settle, self.state, *key)
            except Exception as exc:
                # Logged in full once per slot and reason; a slot failing the same way each run
                # (a zone whose gate is later than the chain's) would otherwise flood the log.
                reason = f"{type(exc).__name__}: {exc}"
                if self._failures.get(key) != reason:
                    self._failures[key] = reason
                    log.exception("settling slot %d of zone %r on chain failed; trying again on each run",
                                  key[1], key[0])
                continue
            self._failures.pop(key, None)

            def decide(state: MarketState, now_ms: int, key: tuple[str, int] = key) -> Sequence[msgspec.Struct]:
                current = state.slots.get(key)
                if current is None or current.status not in ("allocated", "submitted"):
                    return []
                zone, start = key
                return [
                    ev.SettlementSubmitted(zone=zone, slot_start_ms=start, tx_hash=confirmation.tx_hash, at_ms=now_ms),
                    ev.SettlementConfirmed(zone=zone, slot_start_ms=start, tx_hash=confirmation.tx_hash,
                                           block=confirmation.block, at_ms=now_ms),
                ]

            if await self.execute(key[0], decide):
                confirmed += 1
            self._escrowed.discard(key)
        return confirmed

    async def _connect(self) -> ChainSettlement | None:
        """The chain settlement from ``connect_chain``, once it can be reached; None until then."""
        if self.connect_chain is None:
            return None
        try:
            self.chain = await asyncio.to_thread(self.connect_chain)
        except ChainUnavailable as exc:
            if str(exc) != self._chain_problem:
                self._chain_problem = str(exc)
                log.warning("not settling on chain yet (slots are allocated meanwhile): %s", exc)
            return None
        record = self.chain.market.record
        log.info("settling on chain %d, market %s, oracle %s", record.chain_id, record.market, record.oracle)
        late = sorted(z.zone for z in self.state.zones.values() if z.gate_closure_s <= record.gate_closure_s)
        if late:
            log.warning("%d zone(s) (%s) close trading at most %d s before a slot, not before the chain's gate: "
                        "trades made there after the chain's gate cannot be escrowed on chain", len(late),
                        ", ".join(late[:5]) + (", ..." if len(late) > 5 else ""), record.gate_closure_s)
        return self.chain
