"""This home against similar homes of its zone, as coarse aggregates only.

**Similar**: same zone, same subscribed-power band (``BANDS``) and same heating type. **Shown only
when at least 10 homes compare** (this one included); otherwise the answer says why it shows nothing.

**Why the answers are coarse.** A mean of 10 homes tells anyone who knows 9 of the figures the
tenth exactly (10 x mean - the 9 known); a median, a minimum or any exact order statistic leaks it
too whenever the tenth home sits at that rank. So the group is never described by an exact figure:

- the group's typical day is the *band* its median falls in, on a grid where each band is twice the
  one below (``TYPICAL_BANDS_KWH``: 2-4, 4-8, 8-16 ... kWh a day);
- this home's position is said against that band only (below it, within it, above it), computed
  from its own figure, which it may see anyway;
- the count of homes is not shown, only that there are at least 10.

Moving one home's figure moves the median by at most half the move, and only while that home is one
of the two middle ones, so the band (a factor 2 wide) stays the same across a wide range of the
tenth's figure; the test with 10 homes and 9 known figures shows every value of the tenth between
two figures more than 1.5x apart gives identical answers, so no estimate can be within 20% of it.
What remains possible, and is said in docs/households.md: when the 9 known figures sit right at a
band's edge, learning which band the median is in tells on which side of that edge the tenth lies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import median
from typing import Literal

from households.home import Home
from quartier.settings import Settings
from quartier.influx import ROLLUP_MEASUREMENT, ROLLUP_POLICY, influx_query, quote_ident, quote_string

MIN_HOMES = 10
#: Subscribed-power bands (kVA, inclusive).
BANDS: dict[str, tuple[int, int]] = {"up_to_6_kva": (1, 6), "9_to_12_kva": (7, 12), "15_kva_and_more": (13, 36)}
#: Edges of the typical-day bands, kWh a day: each band twice the one below.
TYPICAL_BANDS_KWH: tuple[float, ...] = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, math.inf)
#: Days of history compared, and the least a home needs to count.
WINDOW_DAYS = 30
MIN_DAYS = 7


def band_of(kva: int) -> str:
    return next(name for name, (lo, hi) in BANDS.items() if lo <= kva <= hi)


def similar(home: Home, other: Home) -> bool:
    return (
        other.zone == home.zone and band_of(other.subscribed_kva) == band_of(home.subscribed_kva)
        and other.heating == home.heating
    )


@dataclass(frozen=True)
class Comparison:
    available: bool
    reason: str | None  # why nothing is shown
    band: str
    heating: str
    own_kwh_per_day: float | None
    typical_kwh_per_day: tuple[float, float] | None  # the band (low, high) of the group's median
    position: Literal["below", "within", "above"] | None


def typical_band(value: float) -> tuple[float, float]:
    for lo, hi in zip(TYPICAL_BANDS_KWH, TYPICAL_BANDS_KWH[1:]):
        if lo <= value < hi:
            return lo, hi
    return TYPICAL_BANDS_KWH[-2], TYPICAL_BANDS_KWH[-1]


def compare(home: Home, own_kwh: float | None, group_kwh: list[float]) -> Comparison:
    """The answer for ``home``, from its own figure and the figures of its similar homes (itself included)."""
    band, heating = band_of(home.subscribed_kva), home.heating
    if own_kwh is None:
        return Comparison(False, f"this home has fewer than {MIN_DAYS} days of readings to compare", band, heating,
                          None, None, None)
    if len(group_kwh) < MIN_HOMES:
        return Comparison(
            False,
            f"fewer than {MIN_HOMES} similar homes (same zone, subscribed-power band and heating) have "
            f"{MIN_DAYS} days of readings: a comparison could reveal a neighbour's consumption",
            band, heating, round(own_kwh, 1), None, None,
        )
    lo, hi = typical_band(median(group_kwh))
    position: Literal["below", "within", "above"] = "below" if own_kwh < lo else "above" if own_kwh >= hi else "within"
    return Comparison(True, None, band, heating, round(own_kwh, 1), (lo, hi), position)


def daily_kwh(settings: Settings, meters: list[str], *, at_ms: int) -> dict[str, float]:
    """Mean kWh a day of each meter over the last ``WINDOW_DAYS`` (from the rollup's indexes), for meters
    with at least ``MIN_DAYS`` of them."""
    if not meters:
        return {}
    db = quote_ident(settings.influx.database)
    pattern = "|".join(meters)  # meter ids are 12 digits (the contract): safe in a regex
    assert all(m.isdigit() for m in meters)
    rows = influx_query(
        settings.influx,
        f"SELECT first(\"withdrawn_wh\") AS first_wh, last(\"withdrawn_wh\") AS last_wh, "
        f"count(\"withdrawn_wh\") AS windows FROM {db}.{quote_ident(ROLLUP_POLICY)}.{quote_ident(ROLLUP_MEASUREMENT)} "
        f"WHERE \"meter\" =~ /^({pattern})$/ AND time >= {at_ms - WINDOW_DAYS * 86_400_000}ms AND time < {at_ms}ms "
        f"GROUP BY \"meter\"",
    )
    figures: dict[str, float] = {}
    for row in rows:
        days = (int(row["windows"]) - 1) / 144  # the indexes span one window fewer; 144 a day
        if days >= MIN_DAYS and row["last_wh"] >= row["first_wh"]:
            figures[row["meter"]] = (row["last_wh"] - row["first_wh"]) / 1000 / days
    return figures


def comparison(settings: Settings, home: Home, peers: list[Home], *, at_ms: int) -> Comparison:
    """``peers``: the homes of the zone (from the accounts read models); the similar ones are kept."""
    group = [p for p in peers if similar(home, p) and p.meter != home.meter] + [home]
    figures = daily_kwh(settings, [p.meter for p in group], at_ms=at_ms)
    return compare(home, figures.get(home.meter), list(figures.values()))
