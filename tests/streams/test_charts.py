"""Chart queries over a year of one meter's history: about 1,000 points per range, from the right policy."""

from __future__ import annotations

import time
from typing import Any, Callable

import httpx
import pytest

from quartier.settings import Settings
from quartier.stack.influx import ensure_database, rollup_range
from streams.charts import meter_chart, plan_chart

METER = "000000000042"
DAY_S = 86_400
# Whole minutes, so that bucket boundaries fall on the data's own seconds.
NOW_MS = int(time.time()) // 60 * 60_000
RAW_START_MS = NOW_MS - DAY_S * 1000
PEAK_MS = NOW_MS - 3 * 3_600_000  # one spike three hours ago
LAST_INDEX = 5_000_000  # the withdrawn-energy index of the newest reading


def post(settings: Settings, lines: list[str], rp: str) -> None:
    for start in range(0, len(lines), 20_000):
        answer = httpx.post(
            f"{settings.influx.url}/write",
            params={"db": settings.influx.database, "rp": rp, "precision": "ms"},
            content="\n".join(lines[start : start + 20_000]),
            timeout=60,
        )
        assert answer.status_code == 204, answer.text


@pytest.fixture(scope="module")
def history(influx: dict[str, Any]) -> Settings:
    """A year of one meter: the last 24 h as 1 Hz readings in raw, rolled up by the rollup query (as the
    continuous query does, and it may run meanwhile: same data, same result); before that, 10-minute points
    written straight into the rollup (a point older than raw's 30 days would be refused there)."""
    settings = Settings(influx={**influx["influx"], "database": f"charts{NOW_MS}"})
    ensure_database(settings)
    raw = []
    for second in range(DAY_S):
        at = RAW_START_MS + second * 1000
        power = 9_000 if at == PEAK_MS else 1_000
        raw.append(f"reading,meter={METER},zone=z drawn_va={power}i,withdrawn_wh={LAST_INDEX - DAY_S + 1 + second}i {at}")
    post(settings, raw, "raw")
    first_window_ms = RAW_START_MS - RAW_START_MS % 600_000
    assert rollup_range(settings, first_window_ms, NOW_MS) in (144, 145)  # 24 h, plus a partial window
    older = []
    for window in range(365 * 144):
        at = first_window_ms - (window + 1) * 600_000
        older.append(
            f"reading_10m,meter={METER},zone=z drawn_va=1000.0,drawn_va_max={1_500 + window % 7}i,"
            f"withdrawn_wh={LAST_INDEX - DAY_S - window}i {at}"
        )
    post(settings, older, "rollup")
    return settings


@pytest.mark.parametrize(
    "range_, policy, interval_s, expected_points",
    [("24h", "raw", 90, 960), ("7d", "rollup", 600, 1_008), ("30d", "rollup", 3_600, 720), ("12mo", "rollup", 43_200, 730)],
)
def test_each_range_answers_about_a_thousand_points_from_the_right_policy(
    history: Settings, range_: str, policy: str, interval_s: int, expected_points: int
) -> None:
    chart = meter_chart(history, METER, range_, now_ms=NOW_MS)
    assert (chart.plan.policy, chart.plan.interval_s) == (policy, interval_s)
    # The range's start is rounded up to a bucket boundary; its end may cut the last bucket short.
    assert expected_points - 1 <= len(chart.points) <= expected_points + 1
    times = [p.time_ms for p in chart.points]
    assert times == sorted(times) and NOW_MS - times[0] <= (expected_points + 1) * interval_s * 1000


def test_the_day_chart_keeps_the_peak_that_a_mean_would_hide(history: Settings) -> None:
    chart = meter_chart(history, METER, "24h", now_ms=NOW_MS)
    bucket = next(p for p in chart.points if p.time_ms <= PEAK_MS < p.time_ms + 90_000)
    assert bucket.power_max_va == 9_000
    assert bucket.power_mean_va == pytest.approx(1_000 + 8_000 / 90)
    others = [p for p in chart.points if p is not bucket]
    assert {p.power_max_va for p in others} == {1_000}


def test_long_ranges_read_the_rollups_peaks_and_indexes(history: Settings) -> None:
    chart = meter_chart(history, METER, "12mo", now_ms=NOW_MS)
    assert all(p.power_max_va >= 1_000 for p in chart.points)
    # The spike of three hours ago survives the 10-minute rollup and the 12-hour buckets.
    assert max(p.power_max_va for p in chart.points) == 9_000
    assert {p.power_max_va for p in chart.points[:-3]} <= set(range(1_500, 1_507))
    # Each point carries the index at the end of its bucket: the newest reading's for the last one.
    assert chart.points[-1].withdrawn_wh == LAST_INDEX
    assert all(a.withdrawn_wh < b.withdrawn_wh for a, b in zip(chart.points, chart.points[1:]))  # type: ignore[operator]


def test_a_short_range_older_than_the_raw_policy_reads_the_rollup(history: Settings) -> None:
    end_ms = NOW_MS - 60 * DAY_S * 1000
    chart = meter_chart(history, METER, 3_600, end_ms=end_ms, now_ms=NOW_MS)
    assert (chart.plan.policy, chart.plan.interval_s) == ("rollup", 600)
    assert 5 <= len(chart.points) <= 6


def test_an_unknown_range_is_refused_naming_it(history: Settings) -> None:
    with pytest.raises(ValueError, match="^range: '2y' is not one of 24h, 7d, 30d, 12mo"):
        plan_chart(history, METER, "2y")
