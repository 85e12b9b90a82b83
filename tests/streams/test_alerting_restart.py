"""A worker killed and restarted: no episode lost or duplicated, the same ids.

The test plays the Faust agent's part with plain dicts: the "table" holds each meter's durable state
as the agent writes it (only when an outcome says it changed), encoded as it would be in the
changelog; a restarted worker restores it, gets its rules again from the compacted topic, and
consumes from the last committed offset, which can be before or after the transitions it made.
"""

from __future__ import annotations

from collections import Counter

import pytest

from quartier.events import AlertEvent, AlertRules, MeterReading
from streams.alerting import AlertEngine, decode_meter, encode_state
from tests.streams.alerting_support import Household, fixed_clock, ms, rules

START = ms(2025, 3, 10, 12)


class Worker:
    """An agent around one engine: publishes events, writes the table on changes only."""

    def __init__(self, table: dict[str, bytes], all_rules: list[AlertRules], restart_ms: int | None = None) -> None:
        self.engine = AlertEngine(clock=fixed_clock)
        self.table = table
        if restart_ms is not None:
            for meter, raw in table.items():
                self.engine.restore(meter, decode_meter(raw), restart_ms)
        self.published: list[AlertEvent] = []
        for r in all_rules:
            self._apply(r.meter, self.engine.set_rules(r))

    def _apply(self, meter: str, outcome) -> None:  # type: ignore[no-untyped-def]
        self.published.extend(outcome.events)  # publish first, then write the table
        if outcome.changed:
            self.table[meter] = encode_state(self.engine.durable(meter))  # type: ignore[arg-type]

    def consume(self, readings: list[MeterReading]) -> None:
        for reading in readings:
            self._apply(reading.meter, self.engine.on_reading(reading))

    def tick(self, now_ms: int) -> None:
        outcome = self.engine.check_silence(now_ms)
        self.published.extend(outcome.events)
        for meter in outcome.changed_meters:
            self.table[meter] = encode_state(self.engine.durable(meter))  # type: ignore[arg-type]


def transitions(events: list[AlertEvent]) -> list[tuple[str, str, str, int]]:
    return [(e.id, e.kind, e.state, e.at_ms) for e in events]


def run_with_crash(readings: list[MeterReading], all_rules: list[AlertRules], crash: int, resume: int):  # type: ignore[no-untyped-def]
    """Consume readings[:crash], die, restart and consume again from readings[resume:]."""
    table: dict[str, bytes] = {}
    first = Worker(table, all_rules)
    first.consume(readings[:crash])
    second = Worker(dict(table), all_rules, restart_ms=readings[crash - 1].time_ms + 5_000)
    second.consume(readings[resume:])
    return first.published + second.published


def uninterrupted(readings: list[MeterReading], all_rules: list[AlertRules]) -> list[AlertEvent]:
    worker = Worker({}, all_rules)
    worker.consume(readings)
    return worker.published


@pytest.fixture
def power_story() -> tuple[list[MeterReading], list[AlertRules]]:
    home = Household(start_ms=START)
    readings = (
        home.readings(1_000, 30) + home.readings(7_000, 60) + home.readings(1_000, 30)
        + home.readings(7_000, 40) + home.readings(1_000, 30)
    )
    return readings, [rules(home.meter, power_max_w=6_000, for_s=10, repeat_s=0)]


@pytest.mark.parametrize(
    "crash, resume",
    [
        (35, 25),  # pending when killed; the committed offset is before the condition began
        (45, 25),  # raised just before the kill; the replay covers the whole pending time again
        (45, 42),  # raised; the replay starts after the raise
        (100, 95),  # resolved; the replay starts after the resolution
        (100, 35),  # resolved; the replay starts inside the episode, before the raise
        (140, 10),  # second episode open; the replay goes back before the first one
    ],
)
def test_a_restarted_worker_neither_loses_nor_duplicates_an_episode(power_story, crash, resume) -> None:  # type: ignore[no-untyped-def]
    readings, all_rules = power_story
    expected = transitions(uninterrupted(readings, all_rules))
    assert [state for _, _, state, _ in expected] == ["raised", "resolved", "raised", "resolved"]
    published = transitions(run_with_crash(readings, all_rules, crash, resume))
    assert published == expected
    assert max(Counter((i, state) for i, _, state, _ in published).values()) == 1


def test_a_replay_starting_after_the_condition_began_raises_once_later_under_a_new_id(power_story) -> None:  # type: ignore[no-untyped-def]
    # Killed while pending, and the last commit is already inside the condition: the start of the
    # condition is not in the log the worker re-reads, so the episode starts at the first replayed
    # reading. Nothing was raised before the kill, so this is still one episode, raised once.
    readings, all_rules = power_story
    published = run_with_crash(readings, all_rules, crash=36, resume=33)
    raised = [e for e in published if e.state == "raised"]
    assert len(raised) == 2
    assert raised[0].episode_start_ms == readings[33].time_ms
    resolved = [e for e in published if e.state == "resolved"]
    assert [e.id for e in resolved] == [e.id for e in raised]


def test_the_day_baseline_survives_a_restart() -> None:
    home = Household(start_ms=ms(2025, 3, 10, 23, 50))
    # Crosses midnight at 1 kW, then 3 kW until the day's 2 kWh limit is passed.
    readings = home.readings(1_000, 1_200) + home.readings(3_000, 3_000)
    all_rules = [rules(home.meter, energy_day_max_wh=2_000, for_s=0)]
    expected = transitions(uninterrupted(readings, all_rules))
    assert [state for _, _, state, _ in expected] == ["raised"]
    for crash, resume in ((1_500, 1_400), (1_500, 700), (1_500, 500), (3_000, 2_990)):
        assert transitions(run_with_crash(readings, all_rules, crash, resume)) == expected


def test_an_open_disconnect_survives_a_restart_and_resolves_when_the_meter_returns() -> None:
    homes = [Household(f"0000000000{i:02d}", start_ms=START) for i in range(12)]
    all_rules = [rules(h.meter, disconnect=True) for h in homes]
    table: dict[str, bytes] = {}
    first = Worker(table, all_rules)
    for _ in range(60):
        first.consume([h.reading(500) for h in homes])
    for _ in range(60):  # meter 0 goes quiet; the others keep reporting
        first.consume([h.reading(500) for h in homes[1:]])
        first.tick(homes[1].t)
    raised = [e for e in first.published if e.state == "raised"]
    assert [(e.kind, e.meter) for e in raised] == [("disconnected", homes[0].meter)]

    second = Worker(dict(table), all_rules, restart_ms=homes[1].t)
    # The replay from the last commit includes meter 0's last readings, from before its silence.
    second.consume([h.frame(500) for h in homes[:1]])
    second.consume([h.reading(500) for h in homes[1:]])
    assert second.published == []
    homes[0].t = homes[1].t  # its clock ran on while it was silent
    back = homes[0].reading(500)
    second.consume([back])
    assert transitions(second.published) == [(raised[0].id, "disconnected", "resolved", back.time_ms)]
