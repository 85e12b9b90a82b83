"""The market's accounts feed: follows ``accounts.events`` and makes the market's participants agree.

Two tasks of the market service:

- the **fold** (``quartier.kafka.follow_topic``): every record of ``accounts.events`` from the start,
  then as they come, folded with the accounts' own fold (:class:`accounts.state.AccountsState`: one
  definition of what a pairing, a role or an erasure does), personal fields opened as every reader of
  that log does (:class:`accounts.sealed.Sealing`; the market uses none of them). Each record marks its
  household as to be reconciled;
- the **reconciler**: once the fold has reached the end the log had when it started (never on a state
  half-way through the log, which would register a household that a later record takes out again), it
  reconciles every household the accounts or the market know of; then, as records come, the households
  they touched; and every household again when the operator configures a new zone (a household may
  have been waiting for its zone). Each household is :func:`marketplace.membership.reconcile`\\ d through
  the command handler (:meth:`CommandHandler.execute`: the zone's partition lock, the check against
  the state, one record batch, the fold), so it is the market's normal command path.

No state of its own: after a crash or a restart, the market's state is folded again from
``market.events`` and the accounts' from ``accounts.events``, and every household reconciled once;
what the market already holds yields no event, so a fact is never appended twice. A household whose
reconciliation fails (the broker did not confirm) stays pending and is tried again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

from quartier import topics
from quartier.kafka import follow_topic
from quartier.settings import Settings

from accounts.sealed import Sealing
from accounts.state import AccountsState

from marketplace.commanding import CommandHandler
from marketplace.membership import HouseholdFacts, is_household, reconcile, zones_to_reconcile
from marketplace.state import MarketState

log = logging.getLogger(__name__)


def facts_of(accounts: AccountsState, household: str) -> HouseholdFacts:
    """What the accounts say of one household, for the market."""
    found = accounts.households.get(household)
    if found is None:
        return HouseholdFacts(household=household, exists=False)
    roles = tuple(sorted(found.market_role_set))
    capacity = (found.producer_capacity_w or 0) if "producer" in roles else 0
    return HouseholdFacts(household=household, exists=True, meter=found.meter, zone=found.zone, roles=roles,
                          capacity_w=capacity)


def known_households(accounts: AccountsState, market: MarketState) -> set[str]:
    """Every household either side knows as (possibly) a participant: one with a market role in the
    accounts, or one the market holds as an active participant."""
    wanted = {h for h, found in accounts.households.items() if found.market_roles}
    held = {p for p, found in market.participants.items() if found.status == "active" and is_household(p)}
    return wanted | held


class AccountsFeed:
    def __init__(self, settings: Settings, state: MarketState, handler: CommandHandler, *,
                 interval_s: float = 1.0, retry_s: float = 2.0) -> None:
        self.settings = settings
        self.state = state
        self.handler = handler
        self.interval_s = interval_s  # how often the configured zones are looked at, at most
        self.retry_s = retry_s
        self.accounts = AccountsState()
        #: Set once the fold reached the log's end when the feed (re)connected; cleared on a reconnection.
        self.ready = asyncio.Event()
        self._pending: set[str] = set()
        self._everyone = True  # the next round reconciles every known household
        self._wake = asyncio.Event()
        self._sealing: Sealing | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._idle = asyncio.Event()  # set after a round that left nothing pending

    # --- life cycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        self._sealing = Sealing.open_store(self.settings)
        self._tasks = [
            asyncio.create_task(self._fold(), name="market-accounts-fold"),
            asyncio.create_task(self._reconcile_forever(), name="market-accounts-reconciler"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def idle(self, timeout_s: float = 30.0) -> None:
        """Waits until the fold is through the log it has fetched and no household waits to be reconciled."""
        async with asyncio.timeout(timeout_s):
            while not (self.ready.is_set() and self._idle.is_set() and not self._pending and not self._everyone):
                await asyncio.sleep(0.05)

    # --- the fold ----------------------------------------------------------------------------------

    async def _fold(self) -> None:
        try:
            await follow_topic(self.settings, topics.ACCOUNTS_EVENTS, self._apply, self.ready, self._reset)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The market keeps trading with the participants it has; the next start folds again.
            log.exception("the market's accounts feed stopped following accounts.events")
            raise

    def _reset(self) -> None:
        # follow_topic folds again from the start after a reconnection: no round until it is through.
        self.ready.clear()
        self.accounts = AccountsState()
        self._everyone = True
        self._idle.clear()

    def _apply(self, event: object) -> None:
        assert self._sealing is not None
        opened = self._sealing.open(event)  # type: ignore[arg-type]
        self.accounts.apply(opened, self.accounts.position)
        household = getattr(opened, "household", None)
        if household is not None:
            self._pending.add(household)
            self._idle.clear()
            self._wake.set()

    # --- the reconciler ------------------------------------------------------------------------------

    async def _reconcile_forever(self) -> None:
        zones = frozenset(self.state.zones)
        while True:
            await self.ready.wait()
            # Cleared before the round: a record folded during it wakes the next one at once.
            self._wake.clear()
            self._idle.clear()
            if frozenset(self.state.zones) != zones:
                zones = frozenset(self.state.zones)
                self._everyone = True
            if self._everyone:
                self._everyone = False
                self._pending.clear()
                households: Iterable[str] = sorted(known_households(self.accounts, self.state))
            else:
                households, self._pending = sorted(self._pending), set()
            failed = await self.reconcile(households)
            if failed:
                self._pending |= failed
                await asyncio.sleep(self.retry_s)
                continue
            if self._pending or self._everyone:
                continue
            self._idle.set()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval_s):
                    await self._wake.wait()

    async def reconcile(self, households: Iterable[str]) -> set[str]:
        """Reconciles each household (leaves before joins, so a meter that changed hands is free when
        its new household joins); returns those that failed."""
        facts = [facts_of(self.accounts, h) for h in households]
        steps = [(f, zone) for f in facts for zone in zones_to_reconcile(self.state, f)]
        # Zones a household leaves (it is active there and the accounts name another) go first.
        steps.sort(key=lambda step: step[0].zone == step[1])
        failed: set[str] = set()
        for f, zone in steps:
            if f.household in failed:
                continue
            try:
                events = await self.handler.execute(zone, lambda s, now, f=f, zone=zone: reconcile(s, f, zone, now))
            except Exception:
                log.exception("reconciling household %s in zone %s failed; it is tried again", f.household, zone)
                failed.add(f.household)
                continue
            if events:
                log.info("household %s in zone %s: %s", f.household, zone, ", ".join(type(e).__name__ for e in events))
        return failed
