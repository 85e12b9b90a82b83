"""The settlement process: slots closed at their gate, allocated from the meters, settled on chain.

Each step looks for what is due in the state and goes through command handling (so it is checked,
appended and projected like any command); each is idempotent, so a run that comes late, twice, or
after a restart changes nothing twice. The chain is reached through ``connect_chain`` on each run
until it answers (slots are allocated meanwhile).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

import msgspec

from quartier import events as ev

from marketplace import commands
from marketplace.clock import Clock
from marketplace.commanding import CommandHandler
from marketplace.metering import MeterStore
from marketplace.onchain import ChainSettlement, ChainUnavailable
from marketplace.settlement import SettlementTiming, allocate_slot, closed_slots, slot_meters
from marketplace.state import MarketState

log = logging.getLogger(__name__)


class SettlementProcess:
    def __init__(self, state: MarketState, handler: CommandHandler, clock: Clock, meters: MeterStore,
                 timing: SettlementTiming, chain: ChainSettlement | None = None,
                 connect_chain: Callable[[], ChainSettlement] | None = None,
                 feed_caught_up: Callable[[], Awaitable[bool]] | None = None) -> None:
        self.state = state
        self.commands = handler
        self.clock = clock
        self.meters = meters
        self.settlement = timing
        # Whether the meter feed has stored everything on meter.slots (MeterFeed.caught_up); None: always.
        self.feed_caught_up = feed_caught_up
        self.chain = chain  # None: slots are allocated but not taken to a chain...
        # ...unless this connects one (tried on each settlement run until it succeeds).
        self.connect_chain = connect_chain
        self._escrowed: set[tuple[str, int]] = set()
        self._chain_problem = ""  # the last reason the chain could not be reached, logged once
        self._failures: dict[tuple[str, int], str] = {}  # the last chain error per slot, logged once

    async def close_due_slots(self) -> int:
        """Closes (and clears) every open slot whose gate has passed; returns how many."""
        closed = 0
        for zone, start in self.state.due_slots(self.clock.now_ms()):
            def decide(state: MarketState, now_ms: int, zone: str = zone, start: int = start) -> Sequence[msgspec.Struct]:
                return commands.close_slot(state, zone, start, now_ms)

            if await self.commands.execute(zone, decide):
                closed += 1
        return closed

    async def allocate_due_slots(self) -> int:
        """Allocates every closed slot whose meter data is complete or whose deadline passed."""
        allocated = 0
        due = closed_slots(self.state, ended_by_ms=self.clock.now_ms() - self.settlement.grace_ms)
        current = not due or self.feed_caught_up is None or await self.feed_caught_up()
        for zone, start in due:
            meters = slot_meters(self.state, zone, start)
            metered = await asyncio.to_thread(self.meters.slot, start, meters)

            def decide(state: MarketState, now_ms: int, zone: str = zone, start: int = start,
                       metered: dict = metered) -> Sequence[msgspec.Struct]:  # type: ignore[type-arg]
                return allocate_slot(state, zone, start, metered, now_ms, self.settlement, feed_current=current)

            if await self.commands.execute(zone, decide):
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

            if await self.commands.execute(key[0], decide):
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
