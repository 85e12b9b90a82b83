"""The bill of the current billing period so far, and where it is heading by the period's end.

A period starts on the household's billing day (1-28) and ends the day before it comes again. Its
energy is priced day by day (``households.consumption.daily``, the engine's figures), its
subscription charge is prorated per day at the yearly charge in force that day
(``quartier.tariffs.subscription_eur_for_day``); a started day counts as a day of contract.

The projection says how it was made (``method``): the energy euros go on at the mean daily euros of
the last whole days (up to 7, so a fresh period uses the previous one's last week); the subscription
of the remaining days is added at the charge known today.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from households.consumption import DayFigure, daily, now_ms
from households.home import Home, days
from quartier import tariffs
from quartier.settings import Settings

PROJECTION_DAYS = 7


@dataclass(frozen=True)
class Bill:
    period_start: date
    period_end: date  # the last day of the period (inclusive)
    days_elapsed: int  # days of the period started so far, today included
    days_in_period: int
    energy_wh: int
    energy_eur: float
    subscription_eur: float
    total_eur: float
    projected_energy_eur: float
    projected_subscription_eur: float
    projected_total_eur: float
    method: str
    days: list[DayFigure]


def add_month(day: date, billing_day: int) -> date:
    year, month = (day.year + 1, 1) if day.month == 12 else (day.year, day.month + 1)
    return date(year, month, billing_day)


def period_of(today: date, billing_day: int) -> tuple[date, date]:
    """(first day, last day) of the billing period containing ``today``."""
    if today.day >= billing_day:
        start = today.replace(day=billing_day)
    else:
        previous = today.replace(day=1) - timedelta(days=1)
        start = previous.replace(day=billing_day)
    return start, add_month(start, billing_day) - timedelta(days=1)


def current_bill(settings: Settings, home: Home, *, at_ms: int | None = None) -> Bill:
    at_ms = now_ms() if at_ms is None else at_ms
    today = home.local_date(at_ms)
    start, end = period_of(today, home.billing_day)
    history_start = min(start, today - timedelta(days=PROJECTION_DAYS))
    figures = daily(settings, home, history_start, today, at_ms=at_ms)
    in_period = [f for f in figures if f.day >= start]
    energy_wh = sum(f.energy_wh for f in in_period)
    energy_eur = sum(f.eur or 0.0 for f in in_period)
    elapsed = days(start, today)
    remaining = days(today + timedelta(days=1), end)
    subscription = sum(tariffs.subscription_eur_for_day(home.tariff, home.subscribed_kva, d) for d in elapsed)
    future_subscription = sum(
        tariffs.subscription_eur_for_day(home.tariff, home.subscribed_kva, d) for d in remaining
    )
    whole = [f for f in figures if f.complete and f.eur is not None][-PROJECTION_DAYS:]
    if whole:
        rate = sum(f.eur for f in whole) / len(whole)  # type: ignore[misc]
        basis = f"the mean of the last {len(whole)} whole day(s)' energy euros ({rate:.2f} EUR/day)"
    else:
        rate = energy_eur
        basis = "today's energy euros so far (no whole day yet)"
    # Today's remainder: the part of the day not yet lived at the daily rate.
    day_start = home.midnight_ms(today)
    day_length = home.midnight_ms(today + timedelta(days=1)) - day_start
    today_left = max(0.0, 1 - (at_ms - day_start) / day_length)
    projected_energy = energy_eur + rate * (len(remaining) + today_left)
    method = (
        f"energy: euros so far plus {basis} for the {len(remaining)} remaining day(s) and the rest of today; "
        f"subscription: {len(elapsed) + len(remaining)} days prorated at the yearly charge in force on each "
        f"(the latest known charge for days to come)"
    )
    return Bill(
        period_start=start, period_end=end, days_elapsed=len(elapsed), days_in_period=len(elapsed) + len(remaining),
        energy_wh=energy_wh, energy_eur=energy_eur, subscription_eur=subscription,
        total_eur=energy_eur + subscription, projected_energy_eur=projected_energy,
        projected_subscription_eur=subscription + future_subscription,
        projected_total_eur=projected_energy + subscription + future_subscription, method=method, days=in_period,
    )
