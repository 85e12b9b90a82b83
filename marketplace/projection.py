"""The market's projection: the read models and the chart points, written from the state after each fold.

Rows are snapshotted in the event loop (so the writer thread never reads live state) and written by
one thread, in the order folds complete, with the log position they reflect. A failed write leaves
the read models behind, never the command undone: the next write rewrites every entity. Chart points
go to InfluxDB on a thread of their own, never awaited by a command.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from marketplace.charts import MarketCharts
from marketplace.readmodel import ReadModel, snapshot
from marketplace.state import EntityRef, MarketState

log = logging.getLogger(__name__)


class Projection:
    def __init__(self, state: MarketState, read_model: ReadModel, charts: MarketCharts | None) -> None:
        self.state = state
        self.read_model = read_model
        self.charts = charts
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="market-projector")
        self._chart_writer = ThreadPoolExecutor(1, thread_name_prefix="market-charts")
        self._stale = False

    async def project(self, touched: list[EntityRef]) -> None:
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

    async def catch_up_from(self, stored: dict[int, int], touched: list[EntityRef]) -> None:
        """After the start-up fold: the entities the read models miss (or all, when they are ahead of
        the log), and every slot's chart point."""
        if self.charts is not None:
            # Every slot again: cheap (a point per slot), and covers points an earlier process
            # could not write before it stopped.
            self.charts.everything(self.state)
        ahead = {p: o for p, o in stored.items() if o > self.state.positions.get(p, 0)}
        if ahead:
            # The read models reflect events this log does not have (another topic, a reset broker).
            log.warning("read models are ahead of market.events at %s: rebuilding them", ahead)
            await asyncio.to_thread(self.read_model.rebuild, self.state)
            await self.project([])
        elif touched or self.charts is not None:
            await self.project(touched)

    def close(self) -> None:
        self._writer.shutdown(wait=True)
        self._chart_writer.shutdown(wait=True)
        self.read_model.close()
