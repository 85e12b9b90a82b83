"""Simulated time: one instant per step, with the calendar facts every home shares at that instant."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from quartier import tariffs
from simulator.fleet import TARIFFS


@dataclass(frozen=True)
class Instant:
    #: Unix time (s), UTC: the true time; meters report it through their own drifting clocks.
    t: float
    #: Hour of the day on the local wall clock, 0-24.
    local_hour: float
    #: Local calendar day, as a day number (changes at local midnight).
    local_day: int
    #: Day of the year (1-366), for the season.
    day_of_year: int
    offpeak: bool
    #: Seconds since the current off-peak window opened (0 outside one).
    offpeak_elapsed_s: float
    #: Active register (NTARF) for each option in ``fleet.TARIFFS`` order.
    registers: tuple[int, ...]


def instant_at(t: float) -> Instant:
    utc = datetime.fromtimestamp(t, timezone.utc)
    local = tariffs.local_time(utc)
    hour = local.hour + local.minute / 60 + (local.second + local.microsecond / 1e6) / 3600
    offpeak = tariffs.is_offpeak(utc)
    elapsed = 0.0
    if offpeak:
        start = tariffs.DEFAULT_OFFPEAK.start
        opened = local.replace(hour=start.hour, minute=start.minute, second=0, microsecond=0)
        if opened > local:
            opened -= timedelta(days=1)
        elapsed = (local - opened).total_seconds()
    return Instant(
        t=t,
        local_hour=hour,
        local_day=local.toordinal(),
        day_of_year=local.timetuple().tm_yday,
        offpeak=offpeak,
        offpeak_elapsed_s=elapsed,
        registers=tuple(tariffs.register_at(option, utc) for option in TARIFFS),
    )
