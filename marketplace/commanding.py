"""Command handling: the one writer of ``market.events``, with the state it checks commands against.

Write path (how a command sees its own prior events): the state is folded from the whole log at
start. A command takes its zone's partition lock, is checked against that state, is appended to the
zone's partition as one record batch, and only once the broker has it is folded into the state and
projected (read models, with the log position they reflect) before the answer goes out. So the next
command, and the client's next read, see it: read-your-writes without waiting on a consumer. One
process writes a deployment's market.events; a second writer is detected (the offsets it took are
not where the state expects) and its events folded in first; so is an append the broker did not
confirm (timeout): the next command of that partition first folds whatever the log holds, so a
retried command is checked against the truth.

Restart: the state is folded again from the log; the read models are behind by whatever events came
after their stored position, and only the entities those events touched are rewritten.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence

import msgspec

from quartier.settings import Settings

from marketplace.clock import Clock
from marketplace.log import MarketLog, replay
from marketplace.projection import Projection
from marketplace.state import EntityRef, MarketState

log = logging.getLogger(__name__)

Decide = Callable[[MarketState, int], Sequence[msgspec.Struct]]


class CommandHandler:
    def __init__(self, settings: Settings, state: MarketState, market_log: MarketLog, clock: Clock,
                 projection: Projection) -> None:
        self.settings = settings
        self.state = state
        self.log = market_log
        self.clock = clock
        self.projection = projection
        self._locks: dict[int, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._uncertain: set[int] = set()  # partitions with an append whose outcome is unknown

    async def load(self) -> None:
        """Folds the whole log into the state; the projection catches up on what it missed."""
        stored = await asyncio.to_thread(self.projection.read_model.positions)
        touched: dict[EntityRef, None] = {}
        async for entry in replay(self.settings):
            refs = self.state.apply(entry.event, entry.partition, entry.offset)
            if entry.offset >= stored.get(entry.partition, 0):
                touched.update(dict.fromkeys(refs))
        await self.projection.catch_up_from(stored, list(touched))
        log.info("market state loaded at %s; %d entities projected", dict(self.state.positions), len(touched))

    async def drain(self) -> None:
        """Waits for the commands in flight to finish appending and projecting."""
        for lock in list(self._locks.values()):
            async with lock:
                pass

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
            await self.projection.project(touched)
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
            await self.projection.project(touched)
