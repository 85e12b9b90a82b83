"""The home's power against its contract: fuse headroom now, and whether the subscribed power fits.

A Linky cuts the supply when the apparent power stays above the cut-off power (PCOUP) too long; the
subscribed power (PREF) is what the yearly charge is priced on. The advice compares the highest
10-minute peak of the last 12 months (the rollup keeps each window's maximum, ``drawn_va_max``, so
short peaks survive) with the powers the household's option is sold at:

- *too low*: the peak went over the subscribed power (the meter may have cut, or will);
- *too high*: a smaller power would still have carried every peak; the yearly euros at stake are
  the difference in yearly subscription charges (today's table);
- *right* otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from households.consumption import now_ms
from households.home import Home
from quartier import tariffs
from quartier.settings import Settings
from quartier.influx import RAW_POLICY, ROLLUP_MEASUREMENT, ROLLUP_POLICY, influx_query, quote_ident, quote_string

YEAR_MS = 365 * 86_400_000


@dataclass(frozen=True)
class PowerAdvice:
    subscribed_kva: int
    peak_va: int | None  # None: no readings in the last 12 months
    verdict: Literal["too_low", "too_high", "right", "unknown"]
    recommended_kva: int | None
    yearly_eur_at_stake: float  # subscription charge saved (too high) or added (too low) a year


def peak_va(settings: Settings, home: Home, *, at_ms: int) -> int | None:
    """The highest apparent power of the last 12 months (rollup peaks, and the raw last day)."""
    db = quote_ident(settings.influx.database)
    meter = f"\"meter\" = {quote_string(home.meter)}"
    peaks = []
    for policy, measurement, fieldname, since in (
        (ROLLUP_POLICY, ROLLUP_MEASUREMENT, "drawn_va_max", at_ms - YEAR_MS),
        (RAW_POLICY, "reading", "drawn_va", at_ms - 86_400_000),
    ):
        rows = influx_query(
            settings.influx,
            f"SELECT max({quote_ident(fieldname)}) AS peak FROM {db}.{quote_ident(policy)}.{quote_ident(measurement)} "
            f"WHERE {meter} AND time >= {since}ms AND time <= {at_ms}ms",
        )
        peaks += [int(r["peak"]) for r in rows if r.get("peak") is not None]
    return max(peaks, default=None)


def advise(home: Home, peak: int | None) -> PowerAdvice:
    option = tariffs.TariffOption(home.tariff)
    if peak is None:
        return PowerAdvice(home.subscribed_kva, None, "unknown", None, 0.0)
    sold = tariffs.SUBSCRIBED_KVA[option]
    fitting = next((kva for kva in sold if kva * 1000 >= peak), sold[-1])
    current = tariffs.subscription_eur_per_year(option, home.subscribed_kva)
    recommended = tariffs.subscription_eur_per_year(option, fitting)
    if fitting < home.subscribed_kva:
        verdict: Literal["too_low", "too_high", "right", "unknown"] = "too_high"
    elif peak > home.subscribed_kva * 1000:
        verdict = "too_low"
    else:
        verdict, fitting, recommended = "right", home.subscribed_kva, current
    return PowerAdvice(home.subscribed_kva, peak, verdict, fitting, round(abs(current - recommended), 2))


def subscribed_power_advice(settings: Settings, home: Home, *, at_ms: int | None = None) -> PowerAdvice:
    return advise(home, peak_va(settings, home, at_ms=now_ms() if at_ms is None else at_ms))
