"""The market service, wired from its parts: one function says what each part is given.

- command handling (:class:`marketplace.commanding.CommandHandler`): partition locks, append, fold,
  catch-up, the start-up fold of the whole log;
- the projection (:class:`marketplace.projection.Projection`): read models and chart points;
- the settlement process (:class:`marketplace.settling.SettlementProcess`): closing, allocation,
  escrow and settlement, run by the scheduler (:class:`marketplace.scheduler.MarketScheduler`);
- the meter feed (``meter.slots`` into the metered-energy table allocation reads), the API tokens;
- the accounts feed (:class:`marketplace.accountsfeed.AccountsFeed`): follows ``accounts.events`` and
  makes the households with a market role participants (and no longer), through the command handler.

:class:`MarketService` holds the parts and their life cycle, and nothing else; :func:`wire` builds
it. The state is one :class:`marketplace.state.MarketState`, shared: the command handler is its one
writer (every change is a fold of an event it appended or read back from the log).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import msgspec

from quartier.settings import Settings

from marketplace.accountsfeed import AccountsFeed
from marketplace.auth import TokenStore
from marketplace.charts import MarketCharts
from marketplace.clock import Clock, SystemClock
from marketplace.commanding import CommandHandler, Decide
from marketplace.log import MarketLog
from marketplace.meterfeed import MeterFeed
from marketplace.metering import MeterStore
from marketplace.onchain import ChainSettlement
from marketplace.projection import Projection
from marketplace.readmodel import ReadModel
from marketplace.scheduler import MarketJobs, MarketScheduler
from marketplace.settlement import SettlementTiming
from marketplace.settling import SettlementProcess
from marketplace.state import MarketState

__all__ = ["Decide", "MarketService", "wire"]


@dataclass
class MarketService:
    settings: Settings
    clock: Clock
    state: MarketState
    read_model: ReadModel
    tokens: TokenStore
    meters: MeterStore
    log: MarketLog
    commands: CommandHandler
    projection: Projection
    settlement_process: SettlementProcess
    meter_feed: MeterFeed
    scheduler: MarketScheduler | None
    accounts_feed: AccountsFeed | None = None

    # --- what the API and the command line use ------------------------------------------------------

    async def execute(self, zone: str | None, decide: Decide) -> list[msgspec.Struct]:
        return await self.commands.execute(zone, decide)

    @property
    def settlement(self) -> SettlementTiming:
        return self.settlement_process.settlement

    @property
    def chain(self) -> ChainSettlement | None:
        return self.settlement_process.chain

    @chain.setter
    def chain(self, chain: ChainSettlement | None) -> None:
        self.settlement_process.chain = chain

    @property
    def connect_chain(self) -> Callable[[], ChainSettlement] | None:
        return self.settlement_process.connect_chain

    @connect_chain.setter
    def connect_chain(self, connect: Callable[[], ChainSettlement] | None) -> None:
        self.settlement_process.connect_chain = connect

    async def close_due_slots(self) -> int:
        return await self.settlement_process.close_due_slots()

    async def allocate_due_slots(self) -> int:
        return await self.settlement_process.allocate_due_slots()

    async def settle_due_slots(self) -> int:
        return await self.settlement_process.settle_due_slots()

    # --- life cycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.log.start()
        await self.commands.load()
        await self.meter_feed.start()
        if self.accounts_feed is not None:
            # After the start-up fold: it reconciles against the whole market log.
            await self.accounts_feed.start()
        if self.scheduler is not None:
            self.scheduler.start()

    async def stop(self) -> None:
        if self.scheduler is not None:
            self.scheduler.stop()
        if self.accounts_feed is not None:
            await self.accounts_feed.stop()
        await self.commands.drain()
        await self.meter_feed.stop()
        await self.log.stop()
        self.projection.close()


def wire(
    settings: Settings,
    *,
    clock: Clock | None = None,
    close_interval_s: float | None = 5.0,
    settlement: SettlementTiming | None = None,
    chain: ChainSettlement | None = None,
    connect_chain: Callable[[], ChainSettlement] | None = None,
    charts: bool = True,
    follow_accounts: bool = True,
) -> MarketService:
    """The market from its parts. ``close_interval_s`` None: no scheduled jobs (tests run them);
    ``charts`` False: no InfluxDB points; ``chain``/``connect_chain``: where slots settle;
    ``follow_accounts`` False: participants only as the operator registers them (no accounts feed)."""
    clock = clock or SystemClock()
    read_model = ReadModel(settings.sqlite_url("market"))
    meters = MeterStore(read_model.engine)
    state = MarketState()
    market_log = MarketLog(settings)
    # Prices and volumes per zone and slot in InfluxDB (settings.influx), written with the read models.
    projection = Projection(state, read_model, MarketCharts(settings) if charts else None)
    handler = CommandHandler(settings, state, market_log, clock, projection)
    meter_feed = MeterFeed(settings, meters)
    process = SettlementProcess(state, handler, clock, meters,
                                settlement or SettlementTiming.from_settings(settings.market), chain, connect_chain,
                                feed_caught_up=meter_feed.caught_up)
    jobs = MarketJobs(process.close_due_slots, process.allocate_due_slots, process.settle_due_slots)
    return MarketService(
        settings=settings, clock=clock, state=state, read_model=read_model, tokens=TokenStore(read_model.engine),
        meters=meters, log=market_log, commands=handler, projection=projection, settlement_process=process,
        meter_feed=meter_feed,
        scheduler=MarketScheduler(jobs, close_interval_s) if close_interval_s else None,
        accounts_feed=AccountsFeed(settings, state, handler) if follow_accounts else None,
    )
