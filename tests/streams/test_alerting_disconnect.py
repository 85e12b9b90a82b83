"""Meter disconnected (deadman per meter) and ingest down (one operator alert, no per-meter storm)."""

from __future__ import annotations

from quartier.events import AlertEvent, alert_id
from streams.alerting import AlertEngine, FleetPolicy
from tests.streams.alerting_support import Household, fixed_clock, ms, rules

START = ms(2025, 3, 10, 12)


class Fleet:
    """Meters reporting once a second (unless silenced), and the deadman timer ticking every ``tick_s``.

    Meter ``i`` reports on stream ``i % streams`` (a partition). The worker either keeps up (the
    wall clock is the readings' time and every stream is caught up) or lags ``lag_s`` behind: the wall
    clock is that far ahead, and a stream is caught up only if ``caught_up`` says so.
    """

    def __init__(self, count: int, *, tick_s: int = 1, policy: FleetPolicy | None = None, streams: int = 1) -> None:
        self.engine = AlertEngine(policy, clock=fixed_clock)
        self.homes = [Household(f"{i:012d}", start_ms=START) for i in range(count)]
        for home in self.homes:
            self.engine.set_rules(rules(home.meter, disconnect=True))
        self.streams = streams
        self.now = START
        self.tick_s = tick_s
        self.events: list[AlertEvent] = []

    def run(
        self, seconds: int, silent: set[int] = frozenset(), every: dict[int, int] | None = None,  # type: ignore[assignment]
        *, lag_s: int = 0, caught_up: set[int] = frozenset(),  # type: ignore[assignment]
    ) -> list[AlertEvent]:
        new: list[AlertEvent] = []
        every = every or {}
        for _ in range(seconds):
            self.now += 1_000
            for i, home in enumerate(self.homes):
                if i in silent or (self.now - START) // 1000 % every.get(i, 1):
                    continue
                home.t = self.now - 1_000
                new.extend(self.engine.on_reading(home.reading(500), stream=i % self.streams).events)
            if (self.now - START) // 1000 % self.tick_s == 0:
                if lag_s:
                    outcome = self.engine.check_silence(self.now + lag_s * 1000, caught_up.__contains__)
                else:
                    outcome = self.engine.check_silence(self.now)
                new.extend(outcome.events)
        self.events += new
        return new


def kinds(events: list[AlertEvent]) -> list[tuple[str, str | None, str]]:
    return [(e.kind, e.meter, e.state) for e in events]


def test_a_silent_meter_is_disconnected_after_its_deadman_and_resolved_when_back() -> None:
    fleet = Fleet(12)
    fleet.run(120)
    last_seen = fleet.homes[3].t
    assert fleet.run(29, silent={3}) == []
    raised = fleet.run(30, silent={3})
    assert kinds(raised) == [("disconnected", "000000000003", "raised")]
    assert raised[0].episode_start_ms == last_seen + 30_000
    assert raised[0].at_ms == last_seen + 30_000
    back = fleet.run(1)
    assert kinds(back) == [("disconnected", "000000000003", "resolved")]
    assert back[0].id == raised[0].id and back[0].value == 60.0


def test_the_deadman_follows_each_meter_own_cadence() -> None:
    fleet = Fleet(12)
    fleet.run(1_800, every={5: 60})  # meter 5 reports once a minute
    # Five minutes without meter 5 is five missed readings, not an outage; ten minutes is.
    assert fleet.run(300, silent={5}) == []
    events = fleet.run(300, silent={5})
    assert kinds(events) == [("disconnected", "000000000005", "raised")]


def test_the_episode_id_does_not_depend_on_when_the_timer_runs() -> None:
    ids = set()
    for tick_s in (1, 7):
        fleet = Fleet(12, tick_s=tick_s)
        fleet.run(60)
        ids |= {e.id for e in fleet.run(60, silent={2})}
    assert len(ids) == 1


def test_a_meter_never_seen_never_alerts() -> None:
    fleet = Fleet(12)
    fleet.engine.set_rules(rules("999999999999", disconnect=True))  # preferences, but no reading, ever
    fleet.run(3_600)
    assert fleet.events == []


def test_a_stopped_ingest_is_one_operator_alert_not_one_per_meter() -> None:
    fleet = Fleet(40)
    fleet.run(60)
    everyone = set(range(40))
    outage = fleet.run(1_800, silent=everyone)  # the broker or gateway stops for half an hour
    assert kinds(outage) == [("ingest_down", None, "raised")]
    assert outage[0].id == alert_id(None, "ingest_down", START + 60_000 + 15_000)
    # The meters come back one a second, over 39 seconds; meter 39 does not.
    returning: set[int] = set()
    for i in range(39):
        returning.add(i)
        fleet.run(1, silent=everyone - returning)
    fleet.run(60, silent={39})
    after = fleet.events[1:]
    assert kinds(after) == [("ingest_down", None, "resolved"), ("disconnected", "000000000039", "raised")]
    # Resolved once most meters report again; meter 39's silence counts from then, not from the outage.
    assert after[1].at_ms == after[0].at_ms + 30_000


def test_most_meters_silent_at_once_is_an_outage_even_if_some_still_report() -> None:
    fleet = Fleet(20)
    fleet.run(60)
    events = fleet.run(300, silent=set(range(12)))  # a gateway serving 12 of the 20 meters stops
    assert kinds(events) == [("ingest_down", None, "raised")]
    assert events[0].detail == {"silent_meters": 12.0, "known_meters": 20.0}


def test_a_few_silent_meters_are_each_disconnected() -> None:
    fleet = Fleet(20)
    fleet.run(60)
    events = fleet.run(60, silent={1, 2, 3})
    assert sorted(kinds(events)) == [("disconnected", f"00000000000{i}", "raised") for i in (1, 2, 3)]


def test_with_too_few_meters_to_compare_each_silence_is_its_own() -> None:
    fleet = Fleet(3)
    fleet.run(60)
    events = fleet.run(60, silent={0, 1, 2})
    assert sorted(kinds(events)) == [("disconnected", f"00000000000{i}", "raised") for i in range(3)]


def test_a_household_that_turned_the_disconnect_alert_off_is_not_told() -> None:
    fleet = Fleet(12)
    fleet.engine.set_rules(rules(fleet.homes[4].meter, disconnect=False))
    fleet.run(60)
    assert fleet.run(600, silent={4}) == []


# --- silence judged on the stream's own progress, not on the wall clock -----------------------


def test_catching_up_on_a_backlog_raises_no_disconnect() -> None:
    """A worker restarted an hour behind reads the fleet's readings long after they were sent."""
    fleet = Fleet(40, streams=4)
    assert fleet.run(1_800, lag_s=3_600) == []  # half an hour of backlog, judged every second
    # Caught up on every stream: the wall clock is the readings' time again.
    assert fleet.run(300) == []


def test_a_meter_silent_in_the_backlog_is_disconnected_as_if_live() -> None:
    """The others on its stream go on: the same episode, same id and time, as a worker keeping up."""
    live, late = Fleet(12, streams=2), Fleet(12, streams=2)
    live.run(120)
    late.run(120, lag_s=3_600)
    raised_live = live.run(60, silent={4})
    raised_late = late.run(60, silent={4}, lag_s=3_600)
    assert kinds(raised_late) == [("disconnected", "000000000004", "raised")]
    assert [(e.id, e.at_ms, e.value) for e in raised_late] == [(e.id, e.at_ms, e.value) for e in raised_live]
    back = late.run(1, lag_s=3_600)
    assert kinds(back) == [("disconnected", "000000000004", "resolved")]


def test_a_meter_alone_on_its_stream_is_judged_once_the_stream_is_caught_up() -> None:
    fleet = Fleet(12, streams=12)  # one meter per stream: no neighbour to tell its silence
    fleet.run(120)
    last_seen = fleet.homes[7].t
    # Meter 7's stream holds nothing newer, but the worker has not read that far: not judged yet.
    assert fleet.run(120, silent={7}, lag_s=600) == []
    # Caught up on its stream (the others still behind): its silence is real.
    events = fleet.run(1, silent={7}, lag_s=600, caught_up={7})
    assert kinds(events) == [("disconnected", "000000000007", "raised")]
    assert events[0].episode_start_ms == last_seen + 30_000  # the id does not depend on when it is judged


def test_a_stopped_ingest_is_judged_only_once_the_worker_is_caught_up() -> None:
    fleet = Fleet(40, streams=4)
    fleet.run(60, lag_s=600)
    everyone = set(range(40))
    # Nothing more is sent, but the worker has not reached the end of the log: it cannot tell yet.
    assert fleet.run(120, silent=everyone, lag_s=600) == []
    outage = fleet.run(1, silent=everyone, lag_s=600, caught_up={0, 1, 2, 3})
    assert kinds(outage) == [("ingest_down", None, "raised")]
    assert outage[0].episode_start_ms == START + 60_000 + 15_000  # from the newest reading, not the check


def test_a_meter_clock_far_ahead_does_not_make_its_neighbours_silent() -> None:
    fleet = Fleet(12, streams=2)
    fleet.run(120, lag_s=600)
    ahead = Household("999999999999", start_ms=START + 86_400_000)  # a day ahead, on stream 0
    fleet.engine.on_reading(ahead.reading(500), stream=0)
    # Stream 0 is judged at the wall clock at most (20 s ahead of its readings), not a day ahead.
    assert fleet.run(60, lag_s=20) == []
