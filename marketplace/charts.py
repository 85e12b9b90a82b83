"""The market in InfluxDB, for charts: one ``market_slot`` point per zone and slot.

A projection of the market state like the read models: a point is a whole snapshot of one slot,
keyed by (zone tag, slot start as the point's time), so writing it again replaces it (InfluxDB keeps
one point per measurement, tag set and time; a field written later overwrites the earlier value).
That makes every write idempotent and a rebuild a plain rewrite of every slot.

Points go to the long retention policy (``rollup``), beside the 10-minute reading rollup: a day of a
100-zone market is 9,600 points, and prices are charted over years, not the raw readings' 30 days.

An InfluxDB that does not answer never fails a market command: the slots it missed are kept, the
failure is logged once, and they are written again (from the state as it is then) on a later fold,
at most every ``retry_s``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

import httpx

from quartier.line_protocol import escape_tag, float_field, string_field
from quartier.settings import Settings
from quartier.influx import ROLLUP_POLICY, auth, http_client

from marketplace.state import EntityRef, MarketState

log = logging.getLogger(__name__)

MEASUREMENT = "market_slot"
POLICY = ROLLUP_POLICY
BATCH_LINES = 5000

SlotKey = tuple[str, int]


def slot_keys(state: MarketState, refs: Iterable[EntityRef]) -> set[SlotKey]:
    """The slots whose point changes with these entities (an offer, order or trade is in one slot)."""
    keys: set[SlotKey] = set()
    for kind, key in refs:
        if kind == "slot":
            keys.add(key)
        elif kind in ("offer", "order", "trade"):
            entity: Any = state.entity((kind, key))
            keys.add((entity.zone, entity.slot_start_ms))
    return keys


def slot_fields(state: MarketState, key: SlotKey) -> dict[str, int | float | str]:
    """What a slot's point holds: volumes, trade count, prices, and delivery and amount once allocated."""
    slot = state.slots[key]
    trades = [state.trades[t] for t in state.slot_trades.get(key, ())]
    offers = [state.offers[o] for o in state.slot_offers.get(key, ())]
    fields: dict[str, int | float | str] = {
        "status": slot.status,
        "traded_wh": slot.traded_wh,
        "trade_count": len(trades),
        # A withdrawn offer still counts for what it sold before it was withdrawn.
        "offered_wh": sum(o.sold_wh if o.status == "withdrawn" else o.energy_wh for o in offers),
        "bid_wh": sum(state.orders[o].energy_wh for o in state.slot_orders.get(key, ())
                      if state.orders[o].kind == "bid" and state.orders[o].status != "cancelled"),
        "amount_millicents": sum(t.amount_millicents for t in trades),
    }
    if slot.traded_wh:
        # Volume-weighted over the slot's trades: the uniform price in a pay-as-clear slot.
        fields["price_cents_per_kwh"] = sum(t.amount_millicents for t in trades) / slot.traded_wh
    if slot.clearing_price_cents_per_kwh is not None:
        fields["clearing_price_cents_per_kwh"] = slot.clearing_price_cents_per_kwh
    if slot.status in ("allocated", "submitted", "confirmed"):
        fields["delivered_wh"] = sum(t.delivered_wh or 0 for t in trades)
        fields["delivered_amount_millicents"] = sum(t.delivered_amount_millicents or 0 for t in trades)
    if slot.block is not None:
        fields["block"] = slot.block
    return fields


def slot_line(state: MarketState, key: SlotKey) -> str:
    """One slot as a line of line protocol (time in epoch ms)."""
    zone, start = key
    parts = []
    for name, value in slot_fields(state, key).items():
        if isinstance(value, str):
            parts.append(f"{name}={string_field(value)}")
        elif isinstance(value, float):
            parts.append(f"{name}={float_field(value, name)}")
        else:
            parts.append(f"{name}={value}i")
    return f"{MEASUREMENT},zone={escape_tag(zone, 'zone')} {','.join(parts)} {start}"


def write_lines(settings: Settings, lines: list[str], timeout_s: float = 10.0) -> None:
    """POSTs lines to ``/write`` in batches; raises httpx.HTTPError (or HTTPStatusError) if InfluxDB refuses."""
    headers, params = auth(settings.influx)
    params = {**params, "db": settings.influx.database, "rp": POLICY, "precision": "ms"}
    # The process's one connection pool (quartier.influx): a client per write rebuilt its TLS context
    # each time, the market server's largest CPU cost while commands were folded (py-spy, bench.api).
    client = http_client()
    for i in range(0, len(lines), BATCH_LINES):
        body = "\n".join(lines[i:i + BATCH_LINES]).encode()
        client.post(f"{settings.influx.url}/write", params=params, headers=headers, content=body,
                    timeout=timeout_s).raise_for_status()


def write_all(settings: Settings, state: MarketState) -> int:
    """Writes every slot of the state (a rebuild); returns how many points."""
    lines = [slot_line(state, key) for key in sorted(state.slots)]
    write_lines(settings, lines)
    return len(lines)


class MarketCharts:
    """Keeps ``market_slot`` up to date from the market service's folds, surviving InfluxDB outages."""

    def __init__(self, settings: Settings, retry_s: float = 30.0) -> None:
        self.settings = settings
        self.retry_s = retry_s
        self.pending: set[SlotKey] = set()
        # Marked in the event loop, cleared by the writer thread.
        self._lock = threading.Lock()
        self._down_since: float | None = None  # monotonic time of the last failure, while failing

    def lines(self, state: MarketState, touched: Iterable[EntityRef]) -> list[tuple[SlotKey, str]]:
        """Marks the slots these entities are in and returns the lines to write now (none while
        InfluxDB is in its retry pause). Called in the event loop: reads live state."""
        keys = slot_keys(state, touched)
        with self._lock:
            self.pending |= keys
            if self._down_since is not None and time.monotonic() - self._down_since < self.retry_s:
                return []
            pending = sorted(self.pending)
        lines = []
        for key in pending:
            try:
                lines.append((key, slot_line(state, key)))
            except ValueError:
                # A zone name line protocol cannot carry: the command happened; this slot is not charted.
                log.exception("slot %d of zone %r cannot be written to InfluxDB", key[1], key[0])
                with self._lock:
                    self.pending.discard(key)
        return lines

    def everything(self, state: MarketState) -> None:
        """Marks every slot (start-up: what an earlier process did not write is written now)."""
        with self._lock:
            self.pending |= set(state.slots)

    def write(self, lines: list[tuple[SlotKey, str]]) -> None:
        """Writes the lines ``lines`` made; on success their slots are no longer pending. Never raises.
        Runs in the service's writer thread, after the read models, in the order of the folds."""
        if not lines:
            return
        try:
            write_lines(self.settings, [line for _, line in lines])
        except (httpx.HTTPError, OSError) as exc:
            if self._down_since is None:
                log.warning("InfluxDB at %s did not take the market's points (%s); kept, retrying every %.0f s",
                            self.settings.influx.url, exc, self.retry_s)
            self._down_since = time.monotonic()
            return
        if self._down_since is not None:
            log.info("InfluxDB takes the market's points again")
        self._down_since = None
        # A slot touched again since is pending again only if a later fold marks it: that fold's
        # own lines (queued after these) carry its newer state.
        with self._lock:
            self.pending -= {key for key, _ in lines}

