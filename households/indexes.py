"""A meter's energy indexes at chosen instants, read from InfluxDB: what every euro is computed from.

Energy is never integrated from power: it is a difference of the meter's own indexes (the total
``withdrawn_wh`` and the per-tariff ``withdrawn_wh_r1``..``rN``). Two readings of the indexes are
used, matching the alert engine exactly where the raw readings are kept:

- ``day_baselines``: the first reading at or after each local midnight, as the engine takes its
  day's baseline (and closes the day with the next day's first reading);
- ``bucket_boundaries``: the index at the start of each chart bucket: the bucket's first raw
  reading, or, from the 10-minute rollup, the last index of the 10 minutes before it.

Buckets are aligned on the home's local midnight (InfluxQL ``tz()``), so no bucket straddles two
days and each is priced with one day's tables.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

from cachetools import LRUCache, TTLCache

from households.home import Home
from quartier.settings import Settings
from quartier.influx import RAW_POLICY, ROLLUP_MEASUREMENT, ROLLUP_POLICY, influx_query, quote_ident, quote_string

READING_MEASUREMENT = "reading"


@dataclass(frozen=True)
class IndexSample:
    """The meter's indexes at ``time_ms`` (the reading's time, or the boundary it stands for)."""

    time_ms: int
    withdrawn_wh: int
    registers_wh: tuple[int, ...]  # () when the readings had no per-tariff registers to price with


def registers_of(row: dict[str, Any], home: Home, prefix: str = "r") -> tuple[int, ...]:
    """The engine's rule (``MeterMonitor._baseline_registers``): the first N registers, or the total
    index for a one-register tariff whose meter sent none, else nothing to price with."""
    n = home.registers
    values = [row.get(f"{prefix}{i}") for i in range(1, n + 1)]
    if all(v is not None for v in values):
        return tuple(int(v) for v in values)  # type: ignore[arg-type]
    if n == 1 and row.get("wh") is not None:
        return (int(row["wh"]),)
    return ()


def _select(selector: str, home: Home, registers: bool = True) -> str:
    """``first`` or ``last`` of the total index, with the per-tariff indexes *of that same point*.

    InfluxQL gives a selector's other fields from the point it selected, so InfluxDB runs one selector
    per bucket and reads the registers alongside, instead of one aggregate per field (measured: a day
    of 1 Hz Tempo readings in 90-second buckets, 49 ms against 114 ms for seven ``first()``; the same
    rows). The registers are then one reading's, as the engine takes its baseline from one reading."""
    fields = [f'{selector}("withdrawn_wh") AS "wh"']
    fields += [f'"withdrawn_wh_r{i}" AS "r{i}"' for i in range(1, _registers(home, registers) + 1)]
    return ", ".join(fields)


def _registers(home: Home, registers: bool) -> int:
    """How many per-tariff indexes to read: the home's (to price), or none (energy only)."""
    return home.registers if registers else 0


def _source(settings: Settings, policy: str, measurement: str) -> str:
    db = quote_ident(settings.influx.database)
    return f"{db}.{quote_ident(policy)}.{quote_ident(measurement)}"


def _rows(settings: Settings, statement: str) -> list[dict[str, Any]]:
    return [row for row in influx_query(settings.influx, statement) if row.get("wh") is not None]


def _sample(row: dict[str, Any], home: Home, time_ms: int | None = None, registers: bool = True) -> IndexSample:
    return IndexSample(int(row["time"]) if time_ms is None else time_ms, int(row["wh"]),
                       registers_of(row, home) if registers else ())


def day_baselines(settings: Settings, home: Home, first: date, end: date) -> dict[date, IndexSample]:
    """The first raw reading of each local day in [first, end), by day (days without readings absent)."""
    start_ms, end_ms = home.midnight_ms(first), home.midnight_ms(end)
    statement = (
        f"SELECT {_select('first', home)} FROM {_source(settings, RAW_POLICY, READING_MEASUREMENT)} "
        f"WHERE \"meter\" = {quote_string(home.meter)} AND time >= {start_ms}ms AND time < {end_ms}ms "
        f"GROUP BY time(1d) fill(none) tz({quote_string(home.time_zone)})"
    )
    return {home.local_date(int(row["time"])): _sample(row, home) for row in _rows(settings, statement)}


def latest(settings: Settings, home: Home, start_ms: int, end_ms: int, *, registers: bool = True) -> IndexSample | None:
    """The last raw reading in [start, end), with its own time (one point, so one query); without
    ``registers``, its total index only (``registers_wh`` empty)."""
    fields = ", ".join(
        [f'"withdrawn_wh" AS "wh"'] + [f'"withdrawn_wh_r{i}" AS "r{i}"' for i in range(1, _registers(home, registers) + 1)]
    )
    statement = (
        f"SELECT {fields} FROM {_source(settings, RAW_POLICY, READING_MEASUREMENT)} "
        f"WHERE \"meter\" = {quote_string(home.meter)} AND time >= {start_ms}ms AND time < {end_ms}ms "
        f"ORDER BY time DESC LIMIT 1"
    )
    rows = _rows(settings, statement)
    return _sample(rows[0], home, registers=registers) if rows else None


def bucket_boundaries(
    settings: Settings, home: Home, *, policy: str, start_ms: int, end_ms: int, interval_s: int, registers: bool = True
) -> list[IndexSample]:
    """The indexes at each bucket start in [start, end) (``time_ms`` = the bucket start), oldest first.

    Without ``registers``, the total index only (``registers_wh`` empty): an energy chart needs no
    per-tariff index, and InfluxDB then reads one field of each reading instead of up to seven (Tempo).
    The buckets are the same either way (a bucket is kept when it has a total index)."""
    tz = f"tz({quote_string(home.time_zone)})"
    meter = f"\"meter\" = {quote_string(home.meter)}"
    if policy == RAW_POLICY:
        statement = (
            f"SELECT {_select('first', home, registers)} FROM {_source(settings, RAW_POLICY, READING_MEASUREMENT)} "
            f"WHERE {meter} AND time >= {start_ms}ms AND time < {end_ms}ms GROUP BY time({interval_s}s) fill(none) {tz}"
        )
        return [_sample(row, home, registers=registers) for row in _rows(settings, statement)]
    # The rollup's last index of a bucket is the index at the next bucket's start.
    statement = (
        f"SELECT {_select('last', home, registers)} FROM {_source(settings, ROLLUP_POLICY, ROLLUP_MEASUREMENT)} "
        f"WHERE {meter} AND time >= {start_ms - interval_s * 1000}ms AND time < {end_ms - interval_s * 1000}ms "
        f"GROUP BY time({interval_s}s) fill(none) {tz}"
    )
    return [_sample(row, home, int(row["time"]) + interval_s * 1000, registers) for row in _rows(settings, statement)]


#: How long after a bucket's end its indexes may still change: a meter's buffered readings arriving
#: late, and the rollup's continuous query writing its 10 minutes after they end. Past that, a
#: bucket's first reading (raw) or last rolled-up index (rollup) is a fact of the database, unless a
#: reading older than that reaches the log (``BoundaryCache.reopen``).
SEALED_AFTER_MS = 3_600_000

#: How long a sealed run is trusted at most, whatever the live feed saw: the bound on a stale chart
#: when a late point reaches InfluxDB without passing the feed late (the worker's spool writing back
#: after an InfluxDB outage of more than an hour). A chart then reads its whole range once in 15 min.
RUN_TRUSTED_S = 900.0

#: How long a meter stays open after its last late reading: the time the worker may take to write
#: that reading into InfluxDB (seconds normally; minutes while it catches up a backlog).
REOPENED_FOR_S = 3_600.0


@dataclass
class _SealedRun:
    from_ms: int  # every bucket start in [from_ms, through_ms) is here (or had no reading)
    through_ms: int  # a bucket boundary of the grid
    samples: list[IndexSample]
    read_at_s: float  # when its oldest part was read from InfluxDB (the cache's clock)

    def before(self, time_ms: int, interval_ms: int) -> _SealedRun | None:
        """The part of the run that a reading at ``time_ms`` cannot change, or None.

        A bucket whose start is at most ``time_ms - interval`` ended before the reading (raw), and a
        rolled-up sample at most that far back stands for a bucket that ended before it too. The last
        such sample's bucket start is a boundary of the grid: the run ends there, and that bucket is
        read again."""
        unchanged = [s for s in self.samples if s.time_ms <= time_ms - interval_ms]
        if not unchanged or unchanged[-1].time_ms <= self.from_ms:
            return None
        through = unchanged[-1].time_ms
        return _SealedRun(self.from_ms, through, unchanged[:-1], self.read_at_s)


class BoundaryCache:
    """Bucket-start indexes that can no longer change, per household, meter and bucket grid.

    A chart asked again reads from InfluxDB only the buckets after the sealed run (the last hour or
    so) instead of the whole range: the 24-hour chart's 86,400 raw readings become a few thousand.
    Only indexes are kept, never euros: each request prices them again with the day's tables, so a
    dated price change applies and the euros stay the engine's. The household is in the key, so a
    meter paired anew (or a household erased and created again) starts from the database.

    A reading that reaches the log more than an hour after its time (a module's buffer sent after a
    long loss, a history simulated into a charted meter) reopens its meter from that time
    (``reopen``, called by the live feed); and no run is trusted longer than ``RUN_TRUSTED_S``, which
    bounds what no feed sees (the worker's spool writing back after a long InfluxDB outage).
    """

    def __init__(self, grids: int = 1_024, clock: Callable[[], float] = time.monotonic) -> None:
        # about 250 kB a grid of 1,000 buckets
        self._runs: LRUCache[tuple[object, ...], _SealedRun] = LRUCache(maxsize=grids)
        # meter -> the oldest late reading's time; an entry lives REOPENED_FOR_S after the last one.
        self._reopened: TTLCache[str, int] = TTLCache(maxsize=1_000_000, ttl=REOPENED_FOR_S, timer=clock)
        self._clock = clock

    def reopen(self, meter: str, time_ms: int) -> None:
        """A reading of ``meter`` at ``time_ms`` reached the log late: nothing at or after it stays sealed."""
        held = self._reopened.get(meter)
        self._reopened[meter] = time_ms if held is None else min(held, time_ms)

    def boundaries(
        self, settings: Settings, home: Home, *, policy: str, start_ms: int, end_ms: int, interval_s: int, at_ms: int,
        registers: bool = True,
    ) -> list[IndexSample]:
        """``bucket_boundaries`` for the same arguments, the sealed part from the cache."""
        # What was read is in the key: an energy chart's samples have no per-tariff index to price with.
        key = (home.household, home.meter, _registers(home, registers), home.time_zone, policy, interval_s)
        interval_ms = interval_s * 1000
        now_s = self._clock()
        run = self._runs.get(key)
        if run is not None and now_s - run.read_at_s > RUN_TRUSTED_S:
            run = None
        reopened_ms = self._reopened.get(home.meter)
        if run is not None and reopened_ms is not None and run.through_ms > reopened_ms - interval_ms:
            run = run.before(reopened_ms, interval_ms)
        if run is not None and run.from_ms <= start_ms < run.through_ms <= end_ms:
            # The first bucket a query from start_ms gives starts after start_ms - interval (the rollup's
            # first group may begin before the window: its last index is still the one at its end).
            kept = [s for s in run.samples if s.time_ms > start_ms - interval_ms]
            query_from, read_at_s = run.through_ms, run.read_at_s  # a boundary of the grid: the tail's first bucket is whole
        else:
            kept, query_from, read_at_s = [], start_ms, now_s
        fresh = bucket_boundaries(
            settings, home, policy=policy, start_ms=query_from, end_ms=end_ms, interval_s=interval_s, registers=registers
        )
        # A bucket is complete when its data window was inside the query; sealed when it ended long enough
        # ago, and before any late reading of the meter still being written.
        data_end = end_ms if policy == RAW_POLICY else end_ms - interval_ms
        limit = min(data_end, at_ms - SEALED_AFTER_MS)
        if reopened_ms is not None:
            limit = min(limit, reopened_ms)
        edges = [s.time_ms + interval_ms if policy == RAW_POLICY else s.time_ms for s in fresh]
        sealed_to = max((e for e in edges if e <= limit), default=None)
        if sealed_to is not None and sealed_to > query_from:
            sealed = [s for s in fresh if s.time_ms < sealed_to]
            self._runs[key] = _SealedRun(start_ms, sealed_to, kept + sealed, read_at_s)
        elif kept:
            self._runs[key] = _SealedRun(start_ms, query_from, kept, read_at_s)
        else:
            self._runs.pop(key, None)
        return kept + fresh
