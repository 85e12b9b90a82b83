"""The export's readings CSV over a policy of 7-day shard groups (a raw policy longer than six months,
as the year's bench makes): a query per shard group, every point once, in order."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx

from privacy.export import query_windows, windows_between, write_readings_csv
from quartier.influx import count_points, ensure_database, influx_query
from quartier.settings import Settings

METER, ZONE = "031800000091", "zone-export"
HOUR_MS, DAY_MS, WEEK_MS = 3_600_000, 86_400_000, 7 * 86_400_000


def test_a_year_policy_is_read_a_shard_group_per_query_and_every_point_is_in_the_csv_once(
    influx: dict[str, Any], make_settings: Callable[..., Settings], tmp_path: Path,
) -> None:
    settings = make_settings(influx, influx={"raw_retention": "400d"})
    ensure_database(settings)
    now_ms = int(time.time() * 1000)
    start = now_ms - now_ms % 60_000 - 20 * DAY_MS
    # A point a minute over 20 days: three or four 7-day shard groups.
    lines = [f"reading,meter={METER},zone={ZONE} drawn_va={i % 4000}i,withdrawn_wh={50_000 + i}i {start + i * 60_000}"
             for i in range(20 * 1440)]
    answer = httpx.post(f"{settings.influx.url}/write", params={"db": settings.influx.database, "rp": "raw",
                        "precision": "ms"}, content="\n".join(lines), timeout=60)
    assert answer.status_code == 204, answer.text
    groups = sorted({(row["start_time"], row["end_time"]) for row in influx_query(settings.influx, "SHOW SHARDS", database=False)
                     if row["database"] == settings.influx.database and row["retention_policy"] == "raw"})
    assert len(groups) in (3, 4)
    monday = [int(datetime.fromisoformat(a.replace("Z", "+00:00")).timestamp() * 1000) for a, _ in groups]
    assert {datetime.fromtimestamp(m / 1000, timezone.utc).strftime("%a %H:%M") for m in monday} == {"Mon 00:00"}

    end = start + 20 * DAY_MS
    windows = query_windows(settings, "raw", start, end)
    # One window per shard group the range touches, cut where each group begins, none longer than a
    # week: a group beginning less than a day after the range's start is not joined to the range's
    # first day, since that window would be longer than a week.
    inner = [m for m in monday if start < m < end]
    assert [a for a, _ in windows] == [start, *inner] and windows[-1][1] == end
    assert all(b - a <= WEEK_MS for a, b in windows) and all(b == c for (_, b), (c, _) in zip(windows, windows[1:]))

    rows = write_readings_csv(settings, METER, tmp_path / "readings.csv", resolution="1hz", start_ms=start, end_ms=end)
    csv = (tmp_path / "readings.csv").read_text().splitlines()
    assert rows == len(csv) - 1 == count_points(settings, "reading", f"meter = '{METER}' AND time >= {start}ms AND time < {end}ms") == 28_800
    assert csv[:2] == ["time_ms,drawn_va,injected_va,withdrawn_wh,injected_wh", f"{start},0,,50000,"]
    assert csv[-1] == f"{start + 28_799 * 60_000},{28_799 % 4000},,{50_000 + 28_799},"
    times = [int(line.split(",", 1)[0]) for line in csv[1:]]
    assert times == [start + i * 60_000 for i in range(28_800)]  # in order, each once


def test_hourly_shards_are_read_a_day_per_query() -> None:
    start = 5 * DAY_MS + 30 * 60_000  # half past midnight
    cuts = list(range(5 * DAY_MS, 8 * DAY_MS, HOUR_MS))
    assert windows_between(cuts, start, start + 2 * DAY_MS + 5 * HOUR_MS) == [
        (start, 6 * DAY_MS + HOUR_MS), (6 * DAY_MS + HOUR_MS, 7 * DAY_MS + HOUR_MS),
        (7 * DAY_MS + HOUR_MS, start + 2 * DAY_MS + 5 * HOUR_MS),
    ]


def test_a_weekly_shard_beginning_hours_after_the_start_is_its_own_window_unless_the_range_is_short() -> None:
    start, monday = 10 * DAY_MS, 10 * DAY_MS + 13 * HOUR_MS
    cuts = [monday - WEEK_MS, monday, monday + WEEK_MS, monday + 2 * WEEK_MS]
    # Joined, [start, monday + WEEK) would be cut at start + WEEK, splitting the second group.
    assert windows_between(cuts, start, start + 20 * DAY_MS) == [
        (start, monday), (monday, monday + WEEK_MS), (monday + WEEK_MS, monday + 2 * WEEK_MS),
        (monday + 2 * WEEK_MS, start + 20 * DAY_MS),
    ]
    # Three days: one query, the group's start joined to the range's first hours.
    assert windows_between(cuts, start, start + 3 * DAY_MS) == [(start, start + 3 * DAY_MS)]


def test_a_shard_longer_than_a_week_is_read_a_week_per_query() -> None:
    start = 3 * DAY_MS
    assert windows_between([0, 30 * DAY_MS], start, start + 16 * DAY_MS) == [
        (start, start + WEEK_MS), (start + WEEK_MS, start + 2 * WEEK_MS), (start + 2 * WEEK_MS, start + 16 * DAY_MS),
    ]
