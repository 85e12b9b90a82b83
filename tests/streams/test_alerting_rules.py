"""Preferences changed at run time: from the next reading, without a restart."""

from __future__ import annotations

import pytest

from streams.alerting import AlertEngine, RuleError
from tests.streams.alerting_support import Household, feed, fixed_clock, ms, rules, summary

START = ms(2025, 3, 10, 12)


def setup(**changes: object) -> tuple[AlertEngine, Household]:
    engine = AlertEngine(clock=fixed_clock)
    home = Household(start_ms=START)
    engine.set_rules(rules(home.meter, **changes))
    return engine, home


def test_a_lowered_limit_applies_from_the_next_reading() -> None:
    engine, home = setup(power_max_w=6_000, for_s=10)
    assert feed(engine, home.readings(5_000, 60)) == []
    engine.set_rules(rules(home.meter, power_max_w=4_000, for_s=10, updated_ms=home.t))
    after = home.readings(5_000, 30)
    events = feed(engine, after)
    assert summary(events) == [("power_above", "raised", after[10].time_ms)]
    assert events[0].threshold == 4_000 and events[0].episode_start_ms == after[0].time_ms


def test_a_raised_limit_resolves_an_episode_the_next_reading_no_longer_justifies() -> None:
    engine, home = setup(power_max_w=6_000, for_s=0)
    assert [e.state for e in feed(engine, home.readings(7_000, 5))] == ["raised"]
    engine.set_rules(rules(home.meter, power_max_w=8_000, for_s=0, updated_ms=home.t))
    events = feed(engine, home.readings(7_000, 1))
    assert [e.state for e in events] == ["resolved"]


def test_switching_a_kind_off_resolves_its_open_episode_at_once() -> None:
    engine, home = setup(power_max_w=6_000, for_s=0)
    raised = feed(engine, home.readings(7_000, 5))
    outcome = engine.set_rules(rules(home.meter, power_max_w=None, updated_ms=home.t + 500))
    assert [(e.id, e.state, e.at_ms, e.detail["rule_removed"]) for e in outcome.events] == [
        (raised[0].id, "resolved", home.t + 500, 1.0)
    ]
    assert outcome.changed  # the agent writes the meter's state
    assert feed(engine, home.readings(7_000, 60)) == []


def test_deleting_the_preferences_resolves_every_open_episode() -> None:
    engine, home = setup(power_max_w=6_000, energy_day_max_wh=100, for_s=0)
    raised = feed(engine, home.readings(7_000, 60))
    assert sorted(e.kind for e in raised) == ["energy_day_above", "power_above"]
    outcome = engine.remove_rules(home.meter, at_ms=home.t)
    assert sorted((e.kind, e.state) for e in outcome.events) == [
        ("energy_day_above", "resolved"), ("power_above", "resolved")
    ]
    assert feed(engine, home.readings(7_000, 60)) == []


def test_the_same_preferences_delivered_again_change_nothing() -> None:
    engine, home = setup(power_max_w=6_000, for_s=10)
    over = home.readings(7_000, 5)
    feed(engine, over)
    outcome = engine.set_rules(rules(home.meter, power_max_w=6_000, for_s=10))
    assert outcome.events == () and not outcome.changed
    events = feed(engine, home.readings(7_000, 10))
    assert [e.episode_start_ms for e in events] == [over[0].time_ms]  # still pending from the first over


def test_readings_before_any_preferences_alert_nothing_and_preferences_apply_once_they_come() -> None:
    engine = AlertEngine(clock=fixed_clock)
    home = Household(start_ms=START)
    assert feed(engine, home.readings(9_000, 60)) == []
    engine.set_rules(rules(home.meter, power_max_w=6_000, for_s=5))
    after = home.readings(9_000, 10)
    assert summary(feed(engine, after)) == [("power_above", "raised", after[5].time_ms)]


def test_days_follow_the_household_time_zone() -> None:
    engine, home = setup(energy_day_max_wh=1_000, for_s=0, time_zone="America/New_York")
    events = feed(engine, home.readings(1_000, 20 * 3600, dt_s=60))
    # Midnight in New York is 05:00 in Paris that week (New York is on summer time since 9 March).
    resolved = [e for e in events if e.state == "resolved"]
    assert [e.at_ms for e in resolved] == [ms(2025, 3, 11, 5, 0)]


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(power_min_w=5_000, power_max_w=3_000), "power_min_w"),
        (dict(energy_day_min_wh=9_000, energy_day_max_wh=9_000), "energy_day_min_wh"),
        (dict(spending_month_min_eur=50.0, spending_month_max_eur=20.0), "spending_month_min_eur"),
        (dict(time_zone="Europe/Atlantis"), "time_zone"),
    ],
)
def test_preferences_that_cannot_apply_are_refused_naming_the_field(changes: dict, message: str) -> None:
    engine = AlertEngine(clock=fixed_clock)
    with pytest.raises(RuleError, match=message):
        engine.set_rules(rules(**changes))
    assert engine.rules("012345678901") is None
