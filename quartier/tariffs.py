"""French residential tariff options: which meter register is active when, and what a kWh costs.

These are shared facts: the simulator advances a meter's per-tariff registers with them, and the
stream engine prices consumption with them. Standard library only, so the core stays dependency-free.

A Linky meter counts withdrawn energy in up to ten registers (EASF01..EASF10) and says which one is
active (NTARF). The registers used by each option follow the supplier's usual mapping:

- ``base``: one register (1), all day;
- ``peak_offpeak`` (heures pleines / heures creuses): 1 = off-peak (HC), 2 = peak (HP);
- ``tempo``: six registers, 1/2 = blue HC/HP, 3/4 = white HC/HP, 5/6 = red HC/HP.

Off-peak hours are 22:00-06:00 local time (the most common Enedis schedule). A Tempo day runs from
06:00 to 06:00 the next morning, so its off-peak night belongs to the day that began at 06:00.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

#: Tariff periods follow the clock on the wall in mainland France.
LOCAL_TIME = ZoneInfo("Europe/Paris")


class TariffOption(StrEnum):
    BASE = "base"
    PEAK_OFFPEAK = "peak_offpeak"
    TEMPO = "tempo"


class TempoColour(StrEnum):
    BLUE = "blue"
    WHITE = "white"
    RED = "red"


#: Registers each option uses (EASF01..EASFnn).
REGISTER_COUNT: dict[TariffOption, int] = {
    TariffOption.BASE: 1,
    TariffOption.PEAK_OFFPEAK: 2,
    TariffOption.TEMPO: 6,
}


@dataclass(frozen=True)
class OffPeakHours:
    """A daily off-peak window in local time; it may wrap past midnight (22:00-06:00)."""

    start: time = time(22, 0)
    end: time = time(6, 0)

    def contains(self, local: time) -> bool:
        if self.start <= self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end


DEFAULT_OFFPEAK = OffPeakHours()

#: Tempo: a day starts at 06:00 local time.
TEMPO_DAY_START = time(6, 0)
#: Days of each colour in a Tempo year (1 September to 31 August), as the regulated offer fixes them.
TEMPO_RED_DAYS = 22
TEMPO_WHITE_DAYS = 43

# The regulated residential kWh prices (EDF "Tarif Bleu", EUR per kWh, taxes included), in force from
# 1 August 2025. For simulation, demos and spending estimates, not billing; a household's contract may
# differ. Checked (2026-12-02) against the grids republished by moneyvox.fr (1 August 2025), kelwatt.fr
# (1 February 2025: base, peak, off-peak) and malikko.fr (the February 2024 Tempo grid); the February
# 2025 Tempo prices below were not found in a source and are kept as first transcribed.
PRICES_EUR_PER_KWH: dict[tuple[TariffOption, int], float] = {
    (TariffOption.BASE, 1): 0.1952,
    (TariffOption.PEAK_OFFPEAK, 1): 0.1635,
    (TariffOption.PEAK_OFFPEAK, 2): 0.2081,
    (TariffOption.TEMPO, 1): 0.1232,
    (TariffOption.TEMPO, 2): 0.1494,
    (TariffOption.TEMPO, 3): 0.1391,
    (TariffOption.TEMPO, 4): 0.1730,
    (TariffOption.TEMPO, 5): 0.1460,
    (TariffOption.TEMPO, 6): 0.6468,
}

# Prices change on set dates (the regulated offer moves each 1 February, sometimes 1 August). Each
# entry is the table in force from that local date on, oldest first; the last is the one above.
# Before the first date, the first table applies (estimates of older history, not an error).
PRICE_CHANGES: tuple[tuple[date, dict[tuple[TariffOption, int], float]], ...] = (
    (
        date(2024, 2, 1),
        {
            (TariffOption.BASE, 1): 0.2516,
            (TariffOption.PEAK_OFFPEAK, 1): 0.2068,
            (TariffOption.PEAK_OFFPEAK, 2): 0.2700,
            (TariffOption.TEMPO, 1): 0.1296,
            (TariffOption.TEMPO, 2): 0.1609,
            (TariffOption.TEMPO, 3): 0.1486,
            (TariffOption.TEMPO, 4): 0.1894,
            (TariffOption.TEMPO, 5): 0.1568,
            (TariffOption.TEMPO, 6): 0.7562,
        },
    ),
    (
        date(2025, 2, 1),
        {
            (TariffOption.BASE, 1): 0.2016,
            (TariffOption.PEAK_OFFPEAK, 1): 0.1696,
            (TariffOption.PEAK_OFFPEAK, 2): 0.2146,
            (TariffOption.TEMPO, 1): 0.1288,
            (TariffOption.TEMPO, 2): 0.1552,
            (TariffOption.TEMPO, 3): 0.1447,
            (TariffOption.TEMPO, 4): 0.1792,
            (TariffOption.TEMPO, 5): 0.1518,
            (TariffOption.TEMPO, 6): 0.6586,
        },
    ),
    (date(2025, 8, 1), PRICES_EUR_PER_KWH),
)

_REGISTER_NAMES: dict[tuple[TariffOption, int], str] = {
    (TariffOption.BASE, 1): "base",
    (TariffOption.PEAK_OFFPEAK, 1): "off-peak",
    (TariffOption.PEAK_OFFPEAK, 2): "peak",
    (TariffOption.TEMPO, 1): "blue off-peak",
    (TariffOption.TEMPO, 2): "blue peak",
    (TariffOption.TEMPO, 3): "white off-peak",
    (TariffOption.TEMPO, 4): "white peak",
    (TariffOption.TEMPO, 5): "red off-peak",
    (TariffOption.TEMPO, 6): "red peak",
}


def local_time(instant: datetime) -> datetime:
    """``instant`` (timezone-aware) on the wall clock the tariff periods follow."""
    if instant.tzinfo is None:
        raise ValueError("instant must be timezone-aware (UTC), got a naive datetime")
    return instant.astimezone(LOCAL_TIME)


def is_offpeak(instant: datetime, hours: OffPeakHours = DEFAULT_OFFPEAK) -> bool:
    return hours.contains(local_time(instant).time())


def tempo_day(instant: datetime) -> date:
    """The Tempo day ``instant`` belongs to (the day that began at the last 06:00 local time)."""
    local = local_time(instant)
    day = local.date()
    return day - timedelta(days=1) if local.time() < TEMPO_DAY_START else day


def tempo_colour(day: date) -> TempoColour:
    """The colour of a Tempo day, from a fixed calendar (the same for every caller)."""
    return _tempo_calendar(_tempo_year(day)).get(day, TempoColour.BLUE)


def register_at(option: TariffOption | str, instant: datetime, hours: OffPeakHours = DEFAULT_OFFPEAK) -> int:
    """The active register (NTARF, 1-based) of a meter on ``option`` at ``instant``."""
    option = TariffOption(option)
    if option is TariffOption.BASE:
        return 1
    offpeak = is_offpeak(instant, hours)
    if option is TariffOption.PEAK_OFFPEAK:
        return 1 if offpeak else 2
    colour = tempo_colour(tempo_day(instant))
    first = {TempoColour.BLUE: 1, TempoColour.WHITE: 3, TempoColour.RED: 5}[colour]
    return first if offpeak else first + 1


def prices_on(day: date) -> dict[tuple[TariffOption, int], float]:
    """The price table in force on a local calendar day (prices change at local midnight)."""
    table = PRICE_CHANGES[0][1]
    for effective, prices in PRICE_CHANGES:
        if effective <= day:
            table = prices
    return table


def price_eur_per_kwh(option: TariffOption | str, register: int, at: datetime | date | None = None) -> float:
    """The price of a kWh counted in ``register`` at ``at`` (an aware instant or a local date).

    ``at=None`` gives the latest prices.
    """
    option = TariffOption(option)
    if at is None:
        table = PRICE_CHANGES[-1][1]
    else:
        table = prices_on(local_time(at).date() if isinstance(at, datetime) else at)
    try:
        return table[(option, register)]
    except KeyError:
        raise ValueError(
            f"tariff option {option.value!r} has registers 1..{REGISTER_COUNT[option]}, got register {register}"
        ) from None


# --- pricing a day: the one code path the alert engine and the household app share -------------


@functools.lru_cache(maxsize=4096)
def day_prices_eur_per_wh(option: TariffOption | str, registers: int, day: date) -> tuple[float, ...]:
    """EUR per Wh of registers 1..``registers`` on a local day (the tables above are per kWh)."""
    option = TariffOption(option)
    return tuple(price_eur_per_kwh(option, r, day) / 1000 for r in range(1, registers + 1))


def spent_eur(registers_wh: tuple[int, ...], base_wh: tuple[int, ...], prices_eur_per_wh: tuple[float, ...]) -> float:
    """EUR between two readings of one local day: each register's index difference at its price.

    The alert engine's day spending and the household app's euros both come from here, summed in
    register order, so the two agree to the last bit, not only to the cent.
    """
    spent = 0.0
    for i in range(len(prices_eur_per_wh)):
        spent += (registers_wh[i] - base_wh[i]) * prices_eur_per_wh[i]
    return spent


# --- the subscription charge (abonnement) ----------------------------------------------------

#: Subscribed powers (kVA) the regulated offer sells for each option. Peak/off-peak starts at 6 kVA,
#: Tempo at 6 kVA and has no 24 kVA.
SUBSCRIBED_KVA: dict[TariffOption, tuple[int, ...]] = {
    TariffOption.BASE: (3, 6, 9, 12, 15, 18, 24, 30, 36),
    TariffOption.PEAK_OFFPEAK: (6, 9, 12, 15, 18, 24, 30, 36),
    TariffOption.TEMPO: (6, 9, 12, 15, 18, 30, 36),
}


def _yearly(monthly: dict[int, float]) -> dict[int, float]:
    return {kva: round(eur * 12, 2) for kva, eur in monthly.items()}


# The yearly subscription charge (EUR, taxes included) per option and subscribed power, in force from
# each local date on, oldest first: the monthly charges of the EDF "Tarif Bleu" grids times twelve.
# Before the first date the first table applies, as for the kWh prices. Known to be approximate: the
# 2025 grid's 6 kVA base charge (15.47 a month) is the one in force from 1 August 2025 (when VAT on
# the subscription went from 5.5 % to 20 %; commentaider.fr), while from 1 February to 31 July 2025 it
# was 13.72 (kelwatt.fr); the other cells of the February and August 2025 grids were not found in a
# source to check them against. Check them against the CRE deliberations before billing for real.
SUBSCRIPTION_CHANGES: tuple[tuple[date, dict[TariffOption, dict[int, float]]], ...] = (
    (
        date(2024, 2, 1),
        {
            TariffOption.BASE: _yearly(
                {3: 9.47, 6: 12.44, 9: 15.63, 12: 18.89, 15: 21.92, 18: 24.96, 24: 31.48, 30: 37.39, 36: 44.04}
            ),
            TariffOption.PEAK_OFFPEAK: _yearly(
                {6: 12.85, 9: 16.55, 12: 19.97, 15: 23.24, 18: 26.48, 24: 33.28, 30: 39.46, 36: 44.77}
            ),
            TariffOption.TEMPO: _yearly({6: 12.80, 9: 16.00, 12: 19.29, 15: 22.30, 18: 25.29, 30: 38.13, 36: 44.28}),
        },
    ),
    (
        date(2025, 2, 1),
        {
            TariffOption.BASE: _yearly(
                {3: 11.73, 6: 15.47, 9: 19.39, 12: 23.32, 15: 27.06, 18: 30.76, 24: 38.79, 30: 46.44, 36: 54.29}
            ),
            TariffOption.PEAK_OFFPEAK: _yearly(
                {6: 15.74, 9: 19.81, 12: 23.76, 15: 27.49, 18: 31.34, 24: 39.47, 30: 47.02, 36: 54.61}
            ),
            TariffOption.TEMPO: _yearly({6: 15.50, 9: 19.49, 12: 23.38, 15: 27.01, 18: 30.79, 30: 46.31, 36: 54.43}),
        },
    ),
)


def subscription_eur_per_year(option: TariffOption | str, kva: int, day: date | None = None) -> float:
    """The yearly subscription charge of ``option`` at ``kva`` in force on local ``day`` (None: latest)."""
    option = TariffOption(option)
    table = SUBSCRIPTION_CHANGES[-1][1] if day is None else SUBSCRIPTION_CHANGES[0][1]
    if day is not None:
        for effective, tables in SUBSCRIPTION_CHANGES:
            if effective <= day:
                table = tables
    try:
        return table[option][kva]
    except KeyError:
        raise ValueError(
            f"subscribed_kva: the {option.value} option is sold at "
            f"{', '.join(str(k) for k in SUBSCRIBED_KVA[option])} kVA, got {kva}"
        ) from None


def subscription_eur_for_day(option: TariffOption | str, kva: int, day: date) -> float:
    """One local day of subscription: the yearly charge in force that day over the days of its year.

    A supplier bills twelve equal months; a period that starts on any day is prorated by day, each
    day at the charge in force on it, so a price change inside a period splits it exactly.
    """
    days_in_year = 366 if (day.year % 4 == 0 and (day.year % 100 != 0 or day.year % 400 == 0)) else 365
    return subscription_eur_per_year(option, kva, day) / days_in_year


def register_name(option: TariffOption | str, register: int) -> str:
    option = TariffOption(option)
    try:
        return _REGISTER_NAMES[(option, register)]
    except KeyError:
        raise ValueError(
            f"tariff option {option.value!r} has registers 1..{REGISTER_COUNT[option]}, got register {register}"
        ) from None


# --- the Tempo calendar ------------------------------------------------------------------------


def _tempo_year(day: date) -> int:
    """A Tempo year starts on 1 September; it is named by the year it starts in."""
    return day.year if day.month >= 9 else day.year - 1


@functools.lru_cache(maxsize=16)
def _tempo_calendar(year: int) -> dict[date, TempoColour]:
    """Red and white days of the Tempo year starting 1 September ``year``.

    The grid operator announces colours a day ahead from the weather; offline we need a fixed,
    plausible calendar instead: red days only on weekdays from November to March, white days on
    any day but Sunday, both drawn mostly from the coldest months. Seeded by the year alone (string
    seeds are stable across Python versions), so every process agrees on every day's colour.
    """
    rng = random.Random(f"quartier-tempo-{year}")
    first = date(year, 9, 1)
    days = [first + timedelta(days=i) for i in range((date(year + 1, 9, 1) - first).days)]

    def cold(day: date) -> float:
        # Weight by how deep in winter the day is: 1 in mid-January, low in autumn and spring.
        return {11: 0.4, 12: 0.9, 1: 1.0, 2: 0.8, 3: 0.35, 10: 0.15, 4: 0.15, 5: 0.05}.get(day.month, 0.0)

    def pick(candidates: list[date], count: int) -> list[date]:
        # Weighted sampling without replacement (Efraimidis-Spirakis): the top keys u**(1/w).
        keyed = sorted(candidates, key=lambda d: rng.random() ** (1.0 / cold(d)), reverse=True)
        return keyed[:count]

    red_candidates = [d for d in days if d.weekday() < 5 and d.month in (11, 12, 1, 2, 3)]
    red = set(pick(red_candidates, TEMPO_RED_DAYS))
    white_candidates = [d for d in days if d.weekday() != 6 and d not in red and cold(d) > 0]
    white = set(pick(white_candidates, TEMPO_WHITE_DAYS))
    return {**{d: TempoColour.WHITE for d in white}, **{d: TempoColour.RED for d in red}}
