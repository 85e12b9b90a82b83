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

# Approximately the regulated residential prices of early 2025 (EUR per kWh, taxes included). They
# are for simulation, demos and spending estimates, not billing; a household's contract may differ.
PRICES_EUR_PER_KWH: dict[tuple[TariffOption, int], float] = {
    (TariffOption.BASE, 1): 0.2016,
    (TariffOption.PEAK_OFFPEAK, 1): 0.1635,
    (TariffOption.PEAK_OFFPEAK, 2): 0.2146,
    (TariffOption.TEMPO, 1): 0.1288,
    (TariffOption.TEMPO, 2): 0.1552,
    (TariffOption.TEMPO, 3): 0.1447,
    (TariffOption.TEMPO, 4): 0.1792,
    (TariffOption.TEMPO, 5): 0.1518,
    (TariffOption.TEMPO, 6): 0.6586,
}

# Prices change on set dates (the regulated offer moves each 1 February, sometimes 1 August). Each
# entry is the table in force from that local date on, oldest first; the one above is the latest. The
# February 2024 table is approximately that year's regulated prices. Before the first date, the first
# table applies (estimates of older history, not an error).
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
    (date(2025, 2, 1), PRICES_EUR_PER_KWH),
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
