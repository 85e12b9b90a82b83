"""Energy and spending over the local day and month: index differences, tariffs, period boundaries.

Spending is priced register by register with the prices in force that day; these tests fail if it is
priced at one flat rate, with the wrong day's prices, or from integrated power.
"""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from quartier import tariffs
from streams.alerting import AlertEngine
from tests.streams.alerting_support import Household, feed, fixed_clock, ms, rules, summary


def setup(start_ms: int, tariff: str = "base", **changes: object) -> tuple[AlertEngine, Household]:
    engine = AlertEngine(clock=fixed_clock)
    home = Household(start_ms=start_ms, tariff=tariff)
    engine.set_rules(rules(home.meter, tariff=tariff, for_s=0, **changes))
    return engine, home


# --- energy ------------------------------------------------------------------------------------


def test_daily_energy_above_raises_when_the_index_passes_the_limit_and_ends_with_the_day() -> None:
    engine, home = setup(ms(2025, 3, 10, 23, 58), energy_day_max_wh=5_000)
    events = feed(engine, home.readings(3_000, 24 * 3600 + 600, dt_s=60))
    # 3 kW from midnight: 5 kWh is passed at 01:40; the day's total ends the episode at midnight.
    assert summary(events) == [
        ("energy_day_above", "raised", ms(2025, 3, 11, 1, 41)),
        ("energy_day_above", "resolved", ms(2025, 3, 12, 0, 0)),
    ]
    raised, resolved = events
    assert raised.value == 5_050 and raised.threshold == 5_000
    assert raised.episode_start_ms == ms(2025, 3, 11, 1, 41)
    assert resolved.value == 72_000  # the whole day, from index differences
    assert resolved.detail["period_ended"] == 1.0
    assert raised.detail["partial"] == 0.0


def test_daily_energy_counts_what_the_index_says_even_across_a_gap_in_readings() -> None:
    engine, home = setup(ms(2025, 3, 10, 23, 58), energy_day_max_wh=5_000)
    feed(engine, home.readings(500, 180, dt_s=60))  # 23:59, then 00:00 and 00:01 today
    # Three hours without a reading at 2 kW: no power samples, but the index moved by 6 kWh.
    events = feed(engine, [home.reading(2_000, dt_s=3 * 3600)])
    assert [(e.kind, e.state) for e in events] == [("energy_day_above", "raised")]
    assert events[0].value == pytest.approx(500 / 60 + 6_000, abs=1)


def test_daily_energy_below_is_judged_when_the_day_is_over() -> None:
    engine, home = setup(ms(2025, 3, 10, 23, 58), energy_day_min_wh=10_000)
    # A whole day at 200 W: 4.8 kWh. Nothing is said during the day, however low it is at noon.
    assert feed(engine, home.readings(200, 24 * 3600 + 60, dt_s=60)) == []
    raised = feed(engine, home.readings(200, 60, dt_s=60))
    assert summary(raised) == [("energy_day_below", "raised", ms(2025, 3, 12, 0, 0))]
    assert raised[0].value == pytest.approx(4_800, abs=2)
    assert raised[0].episode_start_ms == ms(2025, 3, 12, 0, 0)  # the end of the low day
    # Another low day: the same episode continues, no second notification.
    assert feed(engine, home.readings(200, 24 * 3600, dt_s=60)) == []
    # Normal use again: resolved as soon as today reaches the minimum (10 kWh at 2 kW: 05:00).
    resolved = feed(engine, home.readings(2_000, 6 * 3600, dt_s=60))
    assert summary(resolved) == [("energy_day_below", "resolved", ms(2025, 3, 13, 5, 0))]
    assert resolved[0].id == raised[0].id


def test_a_day_the_meter_was_first_seen_in_is_never_judged_too_low() -> None:
    engine, home = setup(ms(2025, 3, 10, 18, 0), energy_day_min_wh=10_000)
    # Seen from 18:00 only: the evening's 1.2 kWh says nothing about the day.
    events = feed(engine, home.readings(200, 7 * 3600, dt_s=60))
    assert events == []


# --- spending ---------------------------------------------------------------------------------

HP_2025 = tariffs.price_eur_per_kwh("peak_offpeak", 2, date(2025, 3, 10))
HC_2025 = tariffs.price_eur_per_kwh("peak_offpeak", 1, date(2025, 3, 10))


def test_spending_is_priced_per_register_across_the_offpeak_boundary() -> None:
    limit = 0.70
    engine, home = setup(ms(2025, 3, 10, 21, 0), "peak_offpeak", spending_day_max_eur=limit, spending_pace=False)
    events = feed(engine, home.readings(2_000, 2 * 3600, dt_s=10))
    assert [(e.kind, e.state) for e in events] == [("spending_day_above", "raised")]
    # 2 kW: one peak hour (21-22 h), then off-peak (from 22 h) until the limit is reached.
    expected_s = 3600 + (limit - 2 * HP_2025) / (2 * HC_2025) * 3600
    assert abs((events[0].at_ms - ms(2025, 3, 10, 21, 0)) / 1000 - expected_s) <= 30
    assert events[0].value == pytest.approx(limit, abs=0.01)


def test_spending_uses_the_prices_in_force_on_each_day() -> None:
    # 1 kW all day, on both sides of the 1 February 2025 price change (base: 0.2516 → 0.2016 €/kWh).
    before, after = (tariffs.price_eur_per_kwh("base", 1, date(2025, m, d)) for m, d in ((1, 31), (2, 1)))
    assert before > after
    engine, home = setup(ms(2025, 1, 30, 23, 58), spending_day_max_eur=5.5, spending_pace=False)
    events = feed(engine, home.readings(1_000, 2 * 24 * 3600 + 120, dt_s=60))
    # 31 January costs 24 × 0.2516 = 6.04 € (over 5.5), 1 February 24 × 0.2016 = 4.84 € (under).
    assert [(e.kind, e.state) for e in events] == [("spending_day_above", "raised"), ("spending_day_above", "resolved")]
    raised, resolved = events
    # Passed at 21:52 on 31 January (5.5 € / 0.2516 €/kWh = 21.86 kWh), over at midnight, not raised again.
    assert 0 <= raised.at_ms - (ms(2025, 1, 31) + 5.5 / before * 3_600_000) <= 60_000
    assert resolved.at_ms == ms(2025, 2, 1)
    assert resolved.value == pytest.approx(24 * before, abs=0.01)


def test_tempo_spending_follows_the_day_colour() -> None:
    january = [date(2025, 1, 1) + timedelta(days=i) for i in range(31)]
    red = next(d for d in january if tariffs.tempo_colour(d) == "red")
    blue = next(d for d in january if tariffs.tempo_colour(d) == "blue" and d.weekday() < 5)
    raised_on = {}
    for day in (red, blue):
        engine, home = setup(ms(day.year, day.month, day.day, 9, 59), "tempo", spending_day_max_eur=2.0,
                             spending_pace=False)
        # 10:00-12:00 at 2 kW: 4 kWh of peak energy, 2.63 € on a red day, 0.62 € on a blue day.
        events = feed(engine, home.readings(2_000, 2 * 3600 + 60, dt_s=60))
        raised_on[day] = [e.value for e in events if e.state == "raised"]
    assert raised_on[blue] == []
    assert len(raised_on[red]) == 1 and raised_on[red][0] == pytest.approx(2.0, abs=0.05)


def test_monthly_spending_carries_each_day_and_resolves_with_the_month() -> None:
    day_cost = 24 * tariffs.price_eur_per_kwh("base", 1, date(2025, 3, 1))
    engine, home = setup(ms(2025, 2, 28, 23, 50), spending_month_max_eur=20.0, spending_pace=False)
    events = feed(engine, home.readings(1_000, 36 * 24 * 3600, dt_s=300))
    # 4.84 € a day: 20 € is passed on the fifth day, and the new month starts again from zero.
    assert [(e.kind, e.state) for e in events] == [
        ("spending_month_above", "raised"), ("spending_month_above", "resolved"),
        ("spending_month_above", "raised"),
    ]
    first, closed, second = events
    assert ms(2025, 3, 5, 0, 0) < first.at_ms < ms(2025, 3, 6, 0, 0)
    assert closed.at_ms == ms(2025, 4, 1, 0, 0)
    # March has 31 days and, in Paris, a 23-hour day (30 March): 743 hours at 1 kW.
    assert closed.value == pytest.approx(743 * day_cost / 24, abs=0.05)
    assert closed.detail["period_ended"] == 1.0
    assert ms(2025, 4, 5, 0, 0) < second.at_ms < ms(2025, 4, 6, 0, 0)
    assert first.id != second.id


def test_spending_on_pace_to_exceed_the_month_warns_early_once() -> None:
    engine, home = setup(ms(2025, 2, 28, 23, 50), spending_month_max_eur=100.0)
    events = feed(engine, home.readings(1_000, 12 * 24 * 3600, dt_s=300))
    # 4.84 € a day is 150 € over March: on pace from the moment a quarter of the month has passed.
    assert [(e.kind, e.state) for e in events] == [("spending_month_above", "raised")]
    warning = events[0]
    quarter = ms(2025, 3, 1) + (ms(2025, 4, 1) - ms(2025, 3, 1)) // 4
    assert quarter <= warning.at_ms < quarter + 600_000
    assert warning.detail["on_pace"] == 1.0
    assert warning.value < 100.0
    assert warning.detail["projected_eur"] == pytest.approx(743 * 0.2016, rel=0.02)


def test_a_pace_warning_clears_when_the_pace_falls_back() -> None:
    engine, home = setup(ms(2025, 3, 9, 23, 58), spending_day_max_eur=3.0, hysteresis=0.1)
    # 1 kW through the night projects 4.84 € at 06:00; then nothing until evening: the pace falls.
    events = feed(engine, home.readings(1_000, 6 * 3600 + 120, dt_s=60) + home.readings(0, 8 * 3600, dt_s=60))
    assert [(e.kind, e.state) for e in events] == [("spending_day_above", "raised"), ("spending_day_above", "resolved")]
    raised, resolved = events
    assert raised.detail["on_pace"] == 1.0 and raised.at_ms == ms(2025, 3, 10, 6, 0)
    # Cleared when the projection dropped to 2.70 € (3 € less 10 %): 6 kWh over ~10.75 h of 24.
    assert ms(2025, 3, 10, 10, 30) < resolved.at_ms < ms(2025, 3, 10, 11, 0)


def test_spending_below_the_monthly_minimum_is_judged_when_the_month_closes() -> None:
    engine, home = setup(ms(2025, 2, 28, 23, 40), spending_month_min_eur=200.0)
    events = feed(engine, home.readings(1_000, 31 * 24 * 3600 + 600, dt_s=600))
    assert summary(events) == [("spending_month_below", "raised", ms(2025, 4, 1, 0, 0))]
    assert events[0].episode_start_ms == ms(2025, 4, 1, 0, 0)


def test_readings_without_the_registers_the_tariff_needs_are_reported_once_a_day() -> None:
    engine = AlertEngine(clock=fixed_clock)
    home = Household(start_ms=ms(2025, 3, 10, 12), tariff="tempo", registers=0)
    engine.set_rules(rules(home.meter, tariff="tempo", spending_day_max_eur=0.01, spending_pace=False, for_s=0))
    outcomes = [engine.on_reading(r) for r in home.readings(3_000, 24 * 3600, dt_s=60)]
    problems = [o.problem for o in outcomes if o.problem]
    assert len(problems) == 2  # this day and the next
    assert "withdrawn_wh_by_register" in problems[0] and "6 registers" in problems[0]
    assert all(not o.events for o in outcomes)  # never priced from a guess


def test_base_tariff_spending_works_from_the_total_index_alone() -> None:
    engine = AlertEngine(clock=fixed_clock)
    home = Household(start_ms=ms(2025, 3, 10, 12), registers=0)
    engine.set_rules(rules(home.meter, spending_day_max_eur=0.5, spending_pace=False, for_s=0))
    outcomes = [engine.on_reading(r) for r in home.readings(3_000, 3600, dt_s=60)]
    assert not any(o.problem for o in outcomes)
    assert [(e.kind, e.state) for o in outcomes for e in o.events] == [("spending_day_above", "raised")]
