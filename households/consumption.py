"""Consumption in kWh and euros: per local day (exactly the alert engine's figures) and per chart bucket.

**Days.** A day's energy is the first reading of the next day minus the day's first reading (the
engine's baseline and its closing reading); its euros are that difference register by register at
the day's prices, through ``quartier.tariffs.spent_eur``, the function the engine itself calls. The
current day runs to the latest reading, as the engine's running spending does. So the app's euros
for a day equal the engine's spending for that day to the cent (to the last bit, in fact).

**Charts.** ``streams.charts.plan_chart`` decides the bucket size and the policy (raw readings up to
90-second buckets, the 10-minute rollup from there); this module reads the indexes at each bucket's
start (``households.indexes``) and gives each bucket its energy and its euros at the prices of the
bucket's own local day, so a price change in the middle of a month splits the chart where it fell.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Literal

from households.home import Home, days
from households.indexes import BoundaryCache, IndexSample, bucket_boundaries, day_baselines, latest
from quartier import tariffs
from quartier.settings import Settings
from streams.charts import plan_chart

Unit = Literal["kwh", "eur"]
UNITS: tuple[str, ...] = ("kwh", "eur")
RECENT_MS = 600_000


@dataclass(frozen=True)
class DayFigure:
    day: date
    energy_wh: int
    eur: float | None  # None when the readings had no per-tariff registers to price with
    complete: bool  # closed by the next day's first reading (False: the current day, to its latest reading)


@dataclass(frozen=True)
class Bucket:
    start_ms: int
    energy_wh: int
    eur: float | None  # None in a kWh series too: only the euro series reads the per-tariff indexes


@dataclass(frozen=True)
class Series:
    range: str
    unit: Unit
    interval_s: int
    policy: str
    buckets: list[Bucket]

    def values(self) -> list[float | None]:
        if self.unit == "kwh":
            return [b.energy_wh / 1000 for b in self.buckets]
        return [b.eur for b in self.buckets]


def now_ms() -> int:
    return int(time.time() * 1000)


def price(
    home: Home, start: IndexSample, end: IndexSample, day: date, day_prices: dict[date, tuple[float, ...]] | None = None
) -> float | None:
    """EUR between two index samples of ``day``, register by register: the engine's code path
    (``day_prices``: the day's tables already looked up, by day)."""
    n = home.registers
    if len(start.registers_wh) < n or len(end.registers_wh) < n:
        return None
    if day_prices is None:
        return tariffs.spent_eur(end.registers_wh, start.registers_wh, home.day_prices(day))
    if day not in day_prices:
        day_prices[day] = home.day_prices(day)
    return tariffs.spent_eur(end.registers_wh, start.registers_wh, day_prices[day])


def daily(settings: Settings, home: Home, first: date, last: date, *, at_ms: int | None = None) -> list[DayFigure]:
    """Each local day from ``first`` to ``last`` (inclusive) that has readings, as the engine counts it."""
    at_ms = now_ms() if at_ms is None else at_ms
    # A week past the last day finds the reading that closes it even after a gap (as the engine does).
    baselines = day_baselines(settings, home, first, last + timedelta(days=8))
    ordered = sorted(baselines)
    figures: list[DayFigure] = []
    for i, day in enumerate(ordered):
        if day > last:
            break
        base = baselines[day]
        if base.time_ms > at_ms:
            break
        closing = baselines[ordered[i + 1]] if i + 1 < len(ordered) else None
        if closing is not None and closing.time_ms <= at_ms and closing.withdrawn_wh >= base.withdrawn_wh:
            end, complete = closing, True
        else:
            end = latest(settings, home, base.time_ms, at_ms + 1)
            complete = False
            if end is None:
                continue
        figures.append(DayFigure(day, end.withdrawn_wh - base.withdrawn_wh, price(home, base, end, day), complete))
    return figures


def series(
    settings: Settings, home: Home, range_: str, unit: str, *, at_ms: int | None = None,
    cache: BoundaryCache | None = None,
) -> Series:
    """Energy or euros per bucket over a named range (``24h``, ``7d``, ``30d``, ``12mo``) ending at ``at_ms``.

    A kWh series reads only the total index (its buckets' ``eur`` are None); a euro series reads every
    register the tariff has, and has the same buckets and energies. With ``cache``, the buckets sealed
    by an earlier request are not read again (same figures)."""
    if unit not in UNITS:
        raise ValueError(f"unit: {unit!r} is not one of {', '.join(UNITS)}")
    at_ms = now_ms() if at_ms is None else at_ms
    plan = plan_chart(settings, home.meter, range_, end_ms=at_ms, now_ms=at_ms)
    interval_ms = plan.interval_s * 1000
    # Euros need each register's index; energy only the total, which InfluxDB reads far faster.
    registers = unit == "eur"
    window = dict(policy=plan.policy, start_ms=plan.start_ms, end_ms=plan.end_ms + interval_ms, interval_s=plan.interval_s,
                  registers=registers)
    if cache is None:
        samples = bucket_boundaries(settings, home, **window)  # type: ignore[arg-type]
    else:
        samples = cache.boundaries(settings, home, at_ms=at_ms, **window)  # type: ignore[arg-type]
    samples = [s for s in samples if s.time_ms <= plan.end_ms]
    # The newest reading of a live meter is in its last minutes: look there before the whole range.
    newest = latest(settings, home, max(plan.start_ms, plan.end_ms - RECENT_MS), plan.end_ms + 1, registers=registers)
    if newest is None:
        newest = latest(settings, home, plan.start_ms, plan.end_ms + 1, registers=registers)
    if newest is not None and (not samples or newest.time_ms > samples[-1].time_ms):
        samples.append(newest)
    buckets: list[Bucket] = []
    prices: dict[date, tuple[float, ...]] = {}  # priced once per local day, not once per bucket
    for start, end in zip(samples, samples[1:]):
        if end.withdrawn_wh < start.withdrawn_wh:
            continue  # a replaced meter: its index restarted; no negative consumption
        # A bucket's own local day prices it (a bucket never straddles midnight: tz-aligned buckets).
        day = home.local_date(start.time_ms)
        buckets.append(Bucket(start.time_ms, end.withdrawn_wh - start.withdrawn_wh, price(home, start, end, day, prices)))
    return Series(str(range_), unit, plan.interval_s, plan.policy, buckets)  # type: ignore[arg-type]
