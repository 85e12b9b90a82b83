"""Chart queries for one meter: about 1,000 representative points for any range, from the right policy.

A range is cut into buckets of a "nice" duration (90 s, 10 min, 1 h, 12 h, ...): the shortest one that
gives at most ``target_points`` buckets (1% tolerance, so 7 days at 10 minutes, 1,008 buckets, is allowed).
Buckets of 10 minutes or more read the rollup (``rollup.reading_10m``, one point per meter and 10 minutes);
shorter ones read the raw 1 Hz readings (``raw.reading``), unless the range starts before the raw policy's
retention, in which case the rollup is read at 10 minutes or coarser. Each point carries the mean and the
peak apparent power of its bucket (a mean alone hides the spikes a household wants to see) and the
withdrawn-energy index at its end (energy between two points is the difference).

Ranges named in the app: ``24h`` (raw, 90 s), ``7d`` (rollup, 10 min), ``30d`` (rollup, 1 h), ``12mo``
(rollup, 12 h).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from quartier.settings import Settings
from quartier.influx import (
    RAW_POLICY,
    ROLLUP_INTERVAL_S,
    ROLLUP_MEASUREMENT,
    ROLLUP_POLICY,
    duration_s,
    query,
    quote_ident,
    quote_string,
)
from streams.line_protocol import READING_MEASUREMENT

RANGES_S: dict[str, int] = {"24h": 86_400, "7d": 7 * 86_400, "30d": 30 * 86_400, "12mo": 365 * 86_400}

#: Bucket durations a person reads easily; from 10 minutes on, each is a multiple of the rollup's.
NICE_INTERVALS_S = (
    1, 2, 5, 10, 15, 30, 60, 90, 120, 300, 600, 1_200, 1_800, 3_600, 7_200, 10_800, 21_600, 43_200,
    86_400, 172_800, 604_800, 2_592_000,
)
TARGET_POINTS = 1_000


@dataclass(frozen=True)
class ChartPlan:
    meter: str
    start_ms: int
    end_ms: int
    interval_s: int
    policy: str
    measurement: str

    def influxql(self, database: str) -> str:
        peak = "drawn_va" if self.policy == RAW_POLICY else "drawn_va_max"
        source = f"{quote_ident(database)}.{quote_ident(self.policy)}.{quote_ident(self.measurement)}"
        return (
            f'SELECT mean("drawn_va") AS "power_mean_va", max({quote_ident(peak)}) AS "power_max_va", '
            f'last("withdrawn_wh") AS "withdrawn_wh" FROM {source} '
            f"WHERE \"meter\" = {quote_string(self.meter)} AND time >= {self.start_ms}ms AND time < {self.end_ms}ms "
            f"GROUP BY time({self.interval_s}s) fill(none)"
        )


@dataclass(frozen=True)
class ChartPoint:
    time_ms: int  # the bucket's start
    power_mean_va: float
    power_max_va: float
    withdrawn_wh: int | None


@dataclass(frozen=True)
class Chart:
    plan: ChartPlan
    points: list[ChartPoint]


def range_seconds(range_: str | int) -> int:
    """Seconds in a named range (``24h``, ``7d``, ``30d``, ``12mo``) or a number of seconds."""
    if isinstance(range_, int):
        if range_ <= 0:
            raise ValueError(f"range: must be a positive number of seconds, got {range_}")
        return range_
    try:
        return RANGES_S[range_]
    except KeyError:
        raise ValueError(f"range: {range_!r} is not one of {', '.join(RANGES_S)}") from None


def plan_chart(
    settings: Settings,
    meter: str,
    range_: str | int,
    *,
    end_ms: int | None = None,
    now_ms: int | None = None,
    target_points: int = TARGET_POINTS,
) -> ChartPlan:
    """Which policy and bucket size answer a chart of ``range_`` ending at ``end_ms`` (default: now)."""
    span_s = range_seconds(range_)
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    end_ms = end_ms if end_ms is not None else now_ms
    start_ms = end_ms - span_s * 1000
    interval_s = next(
        (i for i in NICE_INTERVALS_S if span_s / i <= target_points * 1.01), NICE_INTERVALS_S[-1]
    )
    raw_retention_s = duration_s(settings.influx.raw_retention, "influx.raw_retention")
    beyond_raw = start_ms < now_ms - raw_retention_s * 1000
    if interval_s >= ROLLUP_INTERVAL_S or beyond_raw:
        interval_s = max(interval_s, ROLLUP_INTERVAL_S)
        policy, measurement = ROLLUP_POLICY, ROLLUP_MEASUREMENT
    else:
        policy, measurement = RAW_POLICY, READING_MEASUREMENT
    # Start on a bucket boundary so that no partial bucket is added at the front.
    interval_ms = interval_s * 1000
    start_ms = math.ceil(start_ms / interval_ms) * interval_ms
    return ChartPlan(meter, start_ms, end_ms, interval_s, policy, measurement)


def meter_chart(
    settings: Settings, meter: str, range_: str | int, *, end_ms: int | None = None, now_ms: int | None = None
) -> Chart:
    """One meter's power (mean and peak per bucket) and withdrawn index over ``range_``."""
    plan = plan_chart(settings, meter, range_, end_ms=end_ms, now_ms=now_ms)
    rows = query(settings, plan.influxql(settings.influx.database))
    points = [
        ChartPoint(
            time_ms=int(row["time"]),
            power_mean_va=float(row["power_mean_va"]),
            power_max_va=float(row["power_max_va"]),
            withdrawn_wh=None if row.get("withdrawn_wh") is None else int(row["withdrawn_wh"]),
        )
        for row in rows
        if row.get("power_mean_va") is not None
    ]
    return Chart(plan, points)
