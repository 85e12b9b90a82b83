"""Rebuilding the read models from the log: fold every event of market.events again, write it all.

Offline: stop the market service first (it is the log's only writer and keeps the read models up
to date itself). Folding the same log twice gives the same rows, which is what makes this safe.
"""

from __future__ import annotations

from collections import Counter

from quartier.settings import Settings

from marketplace.log import replay
from marketplace.readmodel import ReadModel
from marketplace.state import MarketState


async def fold(settings: Settings) -> MarketState:
    """The market state after every event of the log."""
    state = MarketState()
    async for entry in replay(settings):
        state.apply(entry.event, entry.partition, entry.offset)
    return state


async def rebuild(settings: Settings) -> dict[str, int]:
    """Drops and rewrites the read models; returns how many entities of each kind they now hold."""
    state = await fold(settings)
    read_model = ReadModel(settings.sqlite_url("market"))
    try:
        read_model.rebuild(state)
    finally:
        read_model.close()
    counts = Counter(kind for kind, _ in state.all_entities())
    counts["events"] = sum(state.positions.values())
    return dict(counts)
