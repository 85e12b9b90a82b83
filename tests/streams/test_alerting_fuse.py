"""The fuse-limit warning: told before the meter would cut, with how long is left."""

from __future__ import annotations

import pytest

from streams.alerting import AlertEngine
from streams.alerting.fuse import FILTER_B, seconds_to_cut
from tests.streams.alerting_support import Household, feed, fixed_clock, ms, rules


def setup(**changes: object) -> tuple[AlertEngine, Household]:
    engine = AlertEngine(clock=fixed_clock)
    home = Household(start_ms=ms(2025, 1, 15, 18), cutoff_kva=6)
    engine.set_rules(rules(home.meter, **{"fuse_warning": True, **changes}))
    return engine, home


def simulated_cut(ratio: float, load: float) -> int:
    """Seconds until the meter's filter reaches the trip level, stepping it as the meter does."""
    for second in range(1, 100_000):
        load = FILTER_B * ratio * ratio + (1 - FILTER_B) * load
        if load >= 1:
            return second
    raise AssertionError("never cuts")


@pytest.mark.parametrize("ratio, load", [(1.1, 0.25), (1.2, 0.11), (2.0, 0.25), (1.5, 0.95)])
def test_the_time_to_cut_matches_the_meter_filter_stepped_second_by_second(ratio: float, load: float) -> None:
    assert seconds_to_cut(ratio, load) == pytest.approx(simulated_cut(ratio, load), abs=1)


def test_a_sustained_overload_warns_after_for_s_with_the_time_left_before_the_cut() -> None:
    engine, home = setup(for_s=10)
    assert feed(engine, home.readings(2_000, 600)) == []  # a quiet evening at a third of the cut-off
    overload = home.readings(7_200, 200)  # 120 % of 6 kVA from then on
    events = feed(engine, overload)
    warnings = [e for e in events if e.kind == "fuse_limit"]
    assert [(e.state, e.at_ms) for e in warnings] == [("raised", overload[10].time_ms)]
    warning = warnings[0]
    cut_after = simulated_cut(1.2, (2_000 / 6_000) ** 2)  # about 138 s after the overload began
    assert warning.detail["seconds_to_cut"] == pytest.approx(cut_after - 10, abs=2)
    assert warning.detail["seconds_over"] == 10
    assert (warning.value, warning.threshold) == (7_200, 6_000)
    # The meter cuts (nothing drawn any more): resolved, saying the cut most likely happened.
    after = feed(engine, home.readings(0, 5))
    assert [(e.state, e.detail["likely_cut"]) for e in after] == [("resolved", 1.0)]


def test_an_overload_that_would_cut_sooner_than_for_s_warns_at_once() -> None:
    engine, home = setup(for_s=10)
    feed(engine, home.readings(5_400, 900))  # 90 % of the cut-off for a quarter of an hour
    overload = home.readings(12_000, 3)
    events = feed(engine, overload)
    assert [(e.kind, e.state, e.at_ms) for e in events] == [("fuse_limit", "raised", overload[0].time_ms)]
    assert 0 < events[0].detail["seconds_to_cut"] < 10


def test_an_overload_stopped_in_time_resolves_without_a_cut() -> None:
    engine, home = setup(for_s=10)
    feed(engine, home.readings(2_000, 600))
    events = feed(engine, home.readings(7_200, 60) + home.readings(3_000, 5))
    assert [(e.state, e.detail.get("likely_cut")) for e in events] == [("raised", None), ("resolved", 0.0)]


def test_an_inrush_spike_does_not_warn() -> None:
    engine, home = setup(for_s=10)
    events = feed(engine, home.readings(1_000, 60) + home.readings(9_000, 3) + home.readings(1_000, 60))
    assert events == []


def test_the_fuse_warning_can_be_switched_off() -> None:
    engine, home = setup(for_s=10, fuse_warning=False)
    assert feed(engine, home.readings(2_000, 60) + home.readings(7_200, 300)) == []
