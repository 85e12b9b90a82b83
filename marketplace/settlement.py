"""When a closed slot is allocated, and with what: the meters of its parties decide.

Pure: the state, the metered energy of the slot and the time in, an ``Allocated`` event (or nothing
yet) out. A slot waits ``grace_ms`` after its end for meter data. Once every meter of its producers
and buyers has reported the whole slot (completeness 1.0) it is allocated with ``complete=True``;
otherwise it waits until ``deadline_ms`` after its end and is then allocated with what arrived,
``complete=False`` and the meters without complete data listed (a meter that sent nothing counts as
having delivered, or taken, nothing). A slot that is not ``closed`` is never allocated again: the
``allocated`` event on the log is what makes settlement happen once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from quartier import events as ev
from quartier.settings import MarketSettings

from marketplace.allocation import TradeLine, allocate
from marketplace.state import MarketState

SLOT_MS = 900_000


@dataclass(frozen=True, slots=True)
class MeteredSlot:
    """One meter's energy in one slot, the most complete record received."""

    meter: str
    slot_start_ms: int
    imported_wh: int
    exported_wh: int
    completeness: float


@dataclass(frozen=True, slots=True)
class SettlementTiming:
    grace_ms: int = 60_000  # after the slot's end, before meter data is looked at
    deadline_ms: int = 3_600_000  # after the slot's end: allocate with what arrived

    @classmethod
    def from_settings(cls, market: MarketSettings) -> SettlementTiming:
        return cls(market.settlement_grace_s * 1000, market.settlement_deadline_s * 1000)

    def __post_init__(self) -> None:
        if self.grace_ms < 0:
            raise ValueError(f"grace_ms must not be negative, got {self.grace_ms}")
        if self.deadline_ms < self.grace_ms:
            raise ValueError(f"deadline_ms ({self.deadline_ms}) must not be before grace_ms ({self.grace_ms})")


def _parties(state: MarketState, zone: str, slot_start_ms: int) -> dict[str, str]:
    """participant -> the meter its trades of the slot settle on: the one it had when it placed the
    offer or order (``MarketState.trade_meters``), so leaving the market or moving since changes nothing."""
    parties: dict[str, str] = {}
    for trade_id in state.slot_trades.get((zone, slot_start_ms), ()):
        trade = state.trades[trade_id]
        producer_meter, consumer_meter = state.trade_meters(trade)
        for participant, meter in ((trade.producer, producer_meter), (trade.consumer, consumer_meter)):
            if meter is None:
                raise KeyError(f"trade {trade_id!r}: participant {participant!r} has no meter on the log")
            parties.setdefault(participant, meter)
    return parties


def slot_meters(state: MarketState, zone: str, slot_start_ms: int) -> list[str]:
    """The meters of every producer and buyer of a slot's trades, sorted."""
    return sorted(set(_parties(state, zone, slot_start_ms).values()))


def allocate_slot(
    state: MarketState,
    zone: str,
    slot_start_ms: int,
    metered: Mapping[str, MeteredSlot],
    now_ms: int,
    timing: SettlementTiming,
    *,
    feed_current: bool = True,
) -> list[ev.Allocated]:
    """The slot's allocation if it is due, else nothing. ``metered`` is keyed by meter id.

    ``feed_current`` False: meter records may still be waiting on ``meter.slots``, unread, so a slot
    missing data is not allocated even past its deadline (it would be allocated without them)."""
    slot = state.slots.get((zone, slot_start_ms))
    if slot is None or slot.status != "closed":
        return []
    slot_end_ms = slot_start_ms + SLOT_MS
    if now_ms < slot_end_ms + timing.grace_ms:
        return []
    parties = _parties(state, zone, slot_start_ms)
    meters = sorted(set(parties.values()))
    missing = tuple(m for m in meters if m not in metered or metered[m].completeness < 1.0)
    if missing and (now_ms < slot_end_ms + timing.deadline_ms or not feed_current):
        return []
    lines = [
        TradeLine(t.trade_id, t.producer, t.consumer, t.energy_wh, t.price_cents_per_kwh)
        for t in (state.trades[i] for i in state.slot_trades.get((zone, slot_start_ms), ()))
    ]
    exported = {p: metered[m].exported_wh for p, m in parties.items() if m in metered}
    imported = {p: metered[m].imported_wh for p, m in parties.items() if m in metered}
    deliveries = [
        ev.TradeDelivery(trade_id=d.trade_id, delivered_wh=d.delivered_wh, amount_millicents=d.amount_millicents)
        for d in allocate(lines, exported, imported)
    ]
    return [ev.Allocated(zone=zone, slot_start_ms=slot_start_ms, deliveries=deliveries, complete=not missing,
                         missing_meters=missing, at_ms=now_ms)]


def closed_slots(state: MarketState, ended_by_ms: int | None = None) -> list[tuple[str, int]]:
    """Slots closed and not yet allocated (those that ended by ``ended_by_ms``, if given), oldest first."""
    return sorted(
        (key for key in state.unsettled
         if state.slots[key].status == "closed" and (ended_by_ms is None or key[1] + SLOT_MS <= ended_by_ms)),
        key=lambda k: (k[1], k[0]),
    )
