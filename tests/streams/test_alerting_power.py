"""Power alerts: the for-duration, hysteresis, episode ids, the repeat interval and flapping hold.

These are the semantics every threshold kind shares (streams/alerting/lifecycle.py); power is the
simplest kind to drive, one reading a second.
"""

from __future__ import annotations

from quartier.events import alert_id
from streams.alerting import AlertEngine
from tests.streams.alerting_support import Household, feed, fixed_clock, ms, rules, summary

START = ms(2025, 3, 10, 12)


def engine_with(**changes: object) -> tuple[AlertEngine, Household]:
    engine = AlertEngine(clock=fixed_clock)
    household = Household(start_ms=START)
    engine.set_rules(rules(household.meter, **changes))
    return engine, household


def test_a_condition_shorter_than_for_s_raises_nothing() -> None:
    engine, home = engine_with(power_max_w=6_000, for_s=10)
    # 10 readings over the limit span 9 seconds: the kettle is off again before for_s.
    events = feed(engine, home.readings(1_000, 5) + home.readings(7_000, 10) + home.readings(1_000, 30))
    assert events == []


def test_a_condition_holding_for_s_raises_once_with_its_start_as_episode() -> None:
    engine, home = engine_with(power_max_w=6_000, for_s=10)
    feed(engine, home.readings(1_000, 5))
    over = home.readings(7_000, 60)
    events = feed(engine, over)
    assert summary(events) == [("power_above", "raised", over[10].time_ms)]
    raised = events[0]
    assert raised.episode_start_ms == over[0].time_ms
    assert raised.id == alert_id(home.meter, "power_above", over[0].time_ms)
    assert (raised.value, raised.threshold, raised.zone) == (7_000, 6_000, "rennes-01")


def test_a_value_hovering_at_the_threshold_is_one_episode_not_a_storm() -> None:
    engine, home = engine_with(power_max_w=6_000, for_s=10, hysteresis=0.05)
    hovering = [home.reading(5_950 if i % 2 else 6_050) for i in range(600)]  # ten minutes around 6 kW
    events = feed(engine, hovering)
    # Above 6,000 for the first time at hovering[0]; never back to 5,700 (the clear threshold) since.
    assert summary(events) == [("power_above", "raised", hovering[10].time_ms)]
    below = home.readings(5_600, 5)
    resolved = feed(engine, below)
    assert summary(resolved) == [("power_above", "resolved", below[0].time_ms)]
    assert resolved[0].id == events[0].id
    assert resolved[0].detail["duration_s"] == (below[0].time_ms - hovering[0].time_ms) / 1000


def test_between_the_clear_threshold_and_the_limit_a_raised_alert_stays_raised() -> None:
    engine, home = engine_with(power_max_w=6_000, for_s=0, hysteresis=0.1)
    events = feed(engine, home.readings(6_500, 3) + home.readings(5_500, 120))  # 5,500 > 5,400
    assert [e.state for e in events] == ["raised"]
    events = feed(engine, home.readings(5_400, 1))
    assert [e.state for e in events] == ["resolved"]


def test_power_below_raises_and_clears_at_its_own_threshold() -> None:
    engine, home = engine_with(power_min_w=200, for_s=30, hysteresis=0.05)
    low = home.readings(150, 40)
    events = feed(engine, low)
    assert summary(events) == [("power_below", "raised", low[30].time_ms)]
    # 205 W is above the minimum but below the clear threshold (210 W): still raised.
    assert feed(engine, home.readings(205, 20)) == []
    back = home.readings(250, 1)
    assert summary(feed(engine, back)) == [("power_below", "resolved", back[0].time_ms)]


def test_the_repeat_interval_holds_back_a_new_episode_of_the_same_kind() -> None:
    engine, home = engine_with(power_max_w=6_000, for_s=5, repeat_s=600)
    first = feed(engine, home.readings(7_000, 20) + home.readings(1_000, 1))
    assert [e.state for e in first] == ["raised", "resolved"]
    resolved_at = first[1].at_ms
    # Back two minutes later for a minute: within the repeat interval, the household hears nothing.
    assert feed(engine, home.readings(1_000, 120) + home.readings(7_000, 60) + home.readings(1_000, 60)) == []
    # Back again before the interval ends and still on when it ends: raised then, starting when it began.
    feed(engine, home.readings(1_000, (resolved_at + 500_000 - home.t) // 1000 - 1))
    again = home.readings(7_000, 200)
    events = feed(engine, again)
    assert summary(events) == [("power_above", "raised", resolved_at + 600_000)]
    assert events[0].episode_start_ms == again[0].time_ms
    assert events[0].id == alert_id(home.meter, "power_above", again[0].time_ms)


def test_a_flapping_condition_is_held_raised_instead_of_flooding() -> None:
    engine, home = engine_with(
        power_max_w=6_000, for_s=5, repeat_s=0, flap_max_episodes=3, flap_window_s=3_600, flap_hold_s=600
    )
    cycles = []
    for _ in range(10):  # a heater cycling: 20 s over, 40 s under, for ten minutes
        cycles += home.readings(7_000, 20) + home.readings(1_000, 40)
    events = feed(engine, cycles)
    # Two whole episodes, then the third is held raised: no more raised or resolved while it flaps.
    assert [e.state for e in events] == ["raised", "resolved", "raised", "resolved", "raised"]
    assert len({e.id for e in events}) == 3
    # Quiet for less than the hold time: still held.
    assert feed(engine, home.readings(1_000, 500)) == []
    # Quiet for the hold time: one resolution, saying it flapped and how often it came back.
    tail = home.readings(1_000, 100)
    resolved = feed(engine, tail)
    assert [e.state for e in resolved] == ["resolved"]
    assert resolved[0].id == events[-1].id
    assert resolved[0].detail["flapping"] == 1.0
    assert resolved[0].detail["recurrences"] == 7.0  # cycles 4 to 10 came back while held
    assert resolved[0].at_ms == cycles[-40].time_ms + 600_000


def test_episodes_outside_the_flapping_window_do_not_count() -> None:
    engine, home = engine_with(power_max_w=6_000, for_s=5, repeat_s=0, flap_max_episodes=2, flap_window_s=300)
    readings = []
    for _ in range(4):  # one episode every ten minutes: never two in five minutes
        readings += home.readings(7_000, 20) + home.readings(1_000, 580)
    events = feed(engine, readings)
    assert [e.state for e in events] == ["raised", "resolved"] * 4
    assert all("flapping" not in e.detail for e in events)


def test_durable_state_is_written_on_transitions_only() -> None:
    engine, home = engine_with(power_max_w=6_000, for_s=10)
    outcomes = [engine.on_reading(r) for r in home.readings(1_000, 100) + home.readings(7_000, 100)
                + home.readings(1_000, 100)]
    written = [i for i, o in enumerate(outcomes) if o.changed]
    assert written == [110, 200]  # the raise and the resolution, nothing else in 300 readings
