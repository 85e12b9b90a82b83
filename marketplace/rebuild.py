"""Rebuilding the read models from the log: fold every event of market.events again, write it all.

Offline: stop the market service first (it is the log's only writer and keeps the read models up
to date itself). Folding the same log twice gives the same rows, which is what makes this safe.
"""

from __future__ import annotations

import logging
from collections import Counter

import httpx

from quartier.settings import Settings

from marketplace import charts
from marketplace.log import replay
from marketplace.readmodel import ReadModel
from marketplace.state import MarketState


async def fold(settings: Settings) -> MarketState:
    """The market state after every event of the log."""
    state = MarketState()
    async for entry in replay(settings):
        state.apply(entry.event, entry.partition, entry.offset)
    return state


log = logging.getLogger(__name__)


async def rebuild(settings: Settings, write_charts: bool = True) -> dict[str, int]:
    """Drops and rewrites the read models, and rewrites every slot's ``market_slot`` point in
    InfluxDB (same key, so the same points: nothing doubles); returns how many entities of each
    kind they now hold, and ``market_slot_points`` written (absent if InfluxDB did not take them)."""
    state = await fold(settings)
    read_model = ReadModel(settings.sqlite_url("market"))
    try:
        read_model.rebuild(state)
    finally:
        read_model.close()
    counts = Counter(kind for kind, _ in state.all_entities())
    counts["events"] = sum(state.positions.values())
    if write_charts:
        try:
            counts["market_slot_points"] = charts.write_all(settings, state)
        except httpx.HTTPError as exc:
            # The read models are rebuilt; the points are written again by the service at start-up.
            log.warning("InfluxDB at %s did not take the market_slot points: %s", settings.influx.url, exc)
    return dict(counts)
