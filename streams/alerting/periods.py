"""Local day and month boundaries as epoch milliseconds, computed at boundaries, never per reading.

A reading only compares its time with the current period's end (an int); the calendar arithmetic,
with the household's time zone and its daylight-saving changes, runs once per period and meter and
is cached per time zone and local date, so a fleet crossing midnight computes each boundary once.
"""

from __future__ import annotations

import functools
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


class UnknownTimeZone(ValueError):
    pass


@functools.lru_cache(maxsize=64)
def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise UnknownTimeZone(f"unknown time zone {name!r}") from None


def local_date(t_ms: int, tz: str) -> date:
    return datetime.fromtimestamp(t_ms / 1000, zone(tz)).date()


@functools.lru_cache(maxsize=4096)
def _midnight_ms(day: date, tz: str) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=zone(tz)).timestamp() * 1000)


def day_bounds(t_ms: int, tz: str) -> tuple[int, int, date]:
    """Start and end (ms) of the local day containing ``t_ms``, and its date."""
    day = local_date(t_ms, tz)
    return _midnight_ms(day, tz), _midnight_ms(day + timedelta(days=1), tz), day


def month_bounds(t_ms: int, tz: str) -> tuple[int, int]:
    """Start and end (ms) of the local month containing ``t_ms``."""
    day = local_date(t_ms, tz)
    first = day.replace(day=1)
    following = date(first.year + (first.month == 12), first.month % 12 + 1, 1)
    return _midnight_ms(first, tz), _midnight_ms(following, tz)
