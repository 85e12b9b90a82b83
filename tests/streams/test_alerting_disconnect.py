"""Meter disconnected (deadman per meter) and ingest down (one operator alert, no per-meter storm)."""

from __future__ import annotations

from quartier.events import AlertEvent, alert_id
from streams.alerting import AlertEngine, FleetPolicy
from tests.streams.alerting_support import Household, fixed_clock, ms, rules

START = ms(2025, 3, 10, 12)


class Fleet:
    """Meters reporting once a second (unless silenced), and the deadman timer ticking every ``tick_s``."""

    def __init__(self, count: int, *, tick_s: int = 1, policy: FleetPolicy | None = None) -> None:
        self.engine = AlertEngine(policy, clock=fixed_clock)
        self.homes = [Household(f"{i:012d}", start_ms=START) for i in range(count)]
        for home in self.homes:
            self.engine.set_rules(rules(home.meter, disconnect=True))
        self.now = START
        self.tick_s = tick_s
        self.events: list[AlertEvent] = []

    def run(self, seconds: int, silent: set[int] = frozenset(), every: dict[int, int] | None = None) -> list[AlertEvent]:  # type: ignore[assignment]
        new: list[AlertEvent] = []
        every = every or {}
        for _ in range(seconds):
            self.now += 1_000
            for i, home in enumerate(self.homes):
                if i in silent or (self.now - START) // 1000 % every.get(i, 1):
                    continue
                home.t = self.now - 1_000
                new.extend(self.engine.on_reading(home.reading(500)).events)
            if (self.now - START) // 1000 % self.tick_s == 0:
                new.extend(self.engine.check_silence(self.now).events)
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
