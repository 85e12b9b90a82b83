"""Every alert kind through the real worker, broker and InfluxDB: one run, one meter per story.

Each story (tests/streams/alert_stories.py) is a meter's readings in meter time; the worker is told
them all at once, as a backlog, and must tell each household exactly what the engine's semantics say:
one ``raised`` and one ``resolved`` event per episode on ``alerts.events``, with the same
deterministic id, and the same transitions in InfluxDB's alert history.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from quartier import events, topics
from quartier.events import AlertEvent, alert_id
from quartier.kafka import ensure_topics
from quartier.settings import Settings
from quartier.stack.component import pick_port
from quartier.stack.influx import query
from tests.streams import alert_stories
from tests.streams.alert_stories import Story
from tests.support import isolated_settings
from tests.streams.worker_support import WorkerProcess, alerts_of, scrape, send


class Told:
    def __init__(self, settings: Settings, worker: WorkerProcess, stories: dict[str, Story]) -> None:
        self.settings = settings
        self.worker = worker
        self.stories = stories

    async def alerts(self, story: str, count: int) -> list[AlertEvent]:
        """The story's meter's alert events, once there are ``count`` of them."""
        meter = self.stories[story].meter

        async def enough() -> list[AlertEvent] | None:
            found = await alerts_of(self.settings, meter)
            return found if len(found) >= count else None

        found = await self.worker.until(enough, 120, f"{count} alert events for the {story} story")
        assert len(found) == count, found
        return found

    async def history(self, story: str, count: int) -> list[tuple[str, str, int]]:
        """(id, state, meter time) of the story's points in InfluxDB's ``alert`` measurement."""
        meter = self.stories[story].meter

        async def enough() -> list[tuple[str, str, int]] | None:
            rows = query(self.settings, f"SELECT id, state, kind FROM alert WHERE meter = '{meter}'")
            return [(r["id"], r["state"], r["time"]) for r in rows] if len(rows) >= count else None

        return await self.worker.until(enough, 120, f"{count} alert points for the {story} story")


@pytest.fixture(scope="module")
async def told(
    broker: dict[str, Any], influx: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Told]:
    tmp: Path = tmp_path_factory.mktemp("alert-stories")
    settings = isolated_settings(tmp / "state", broker, influx)
    await ensure_topics(settings)
    shards = settings.kafka.reading_shards
    stories = alert_stories.stories(int(time.time() * 1000), shards)
    rules = [s.rules for s in stories.values() if s.rules is not None]
    await send(settings, topics.ALERTS_RULES.name, [(r.meter.encode(), events.encode(r)) for r in rules])
    port = pick_port(0)
    argv = ["-m", "quartier.cli", "streams", "worker", "--app-id", settings.topic("worker"), "--metrics-port", str(port),
            "--deadman-interval", "1"]
    with WorkerProcess(argv, settings, tmp / "worker.log") as worker:

        async def rules_applied() -> bool:
            return scrape(port).get("quartier_alert_rules_applied_total", 0) >= len(rules)

        await worker.until(rules_applied, 90, "the rules applied")
        every = [r for s in stories.values() for r in s.readings]
        await send(settings, topics.METER_READINGS.name, alert_stories.messages(every, shards))

        async def consumed() -> bool:
            return scrape(port).get("quartier_readings_consumed_total", 0) >= len(every)

        await worker.until(consumed, 120, "every reading consumed")
        yield Told(settings, worker, stories)


def transitions(alerts: list[AlertEvent]) -> list[tuple[str, str, int]]:
    return [(a.kind, a.state, a.at_ms) for a in alerts]


async def test_power_below_holds_for_its_duration_and_clears_at_its_own_threshold(told: Told) -> None:
    marks = told.stories["power_below"].marks
    raised, resolved = await told.alerts("power_below", 2)
    assert transitions([raised, resolved]) == [
        ("power_below", "raised", marks["raised"]),  # below since marks["below"], for 10 s
        ("power_below", "resolved", marks["back"]),
    ]
    assert raised.id == resolved.id == alert_id(raised.meter, "power_below", marks["below"])
    assert (raised.value, raised.threshold) == (50, 200)


async def test_daily_energy_above_is_raised_on_the_index_and_ends_with_the_local_day(told: Told) -> None:
    marks = told.stories["energy_day_above"].marks
    raised, resolved = await told.alerts("energy_day_above", 2)
    assert transitions([raised, resolved]) == [
        ("energy_day_above", "raised", marks["over"] + 10_000),
        ("energy_day_above", "resolved", marks["midnight"]),
    ]
    assert raised.id == resolved.id == alert_id(raised.meter, "energy_day_above", marks["over"])
    assert raised.detail["partial"] == 1.0  # first seen ten minutes before midnight: a lower bound
    assert resolved.value == marks["day_wh"] and resolved.detail["period_ended"] == 1.0


async def test_spending_is_priced_register_by_register_at_the_day_prices(told: Told) -> None:
    marks = told.stories["spending_day_above"].marks
    raised, resolved = await told.alerts("spending_day_above", 2)
    assert (raised.kind, raised.state, resolved.state) == ("spending_day_above", "raised", "resolved")
    # Passed at 22:30 (one peak kWh, one off-peak kWh), not 7 minutes sooner or 9 later (one rate).
    assert abs(raised.at_ms - marks["crossing"]) <= 30_000
    assert raised.value == pytest.approx(raised.threshold, abs=0.005)
    assert raised.detail["on_pace"] == 0.0
    assert resolved.at_ms == marks["midnight"] and resolved.id == raised.id
    assert resolved.value == pytest.approx(marks["day_eur_cents"] / 100, abs=0.01)


async def test_the_fuse_warning_comes_before_the_cut_and_says_how_long_is_left(told: Told) -> None:
    marks = told.stories["fuse_limit"].marks
    raised, resolved = await told.alerts("fuse_limit", 2)
    assert raised.episode_start_ms == marks["over"]
    # for_s is 30 s, but the meter would cut about 35 s into a 200 % overload: waiting 30 s would
    # leave too little, so the warning comes as soon as less than 30 s are left.
    assert raised.at_ms - marks["over"] < 10_000
    assert 25 <= raised.detail["seconds_to_cut"] < 30
    assert (raised.value, raised.threshold) == (18_000, 9_000)
    assert (resolved.state, resolved.at_ms, resolved.id) == ("resolved", marks["back"], raised.id)
    assert resolved.detail["likely_cut"] == 0.0  # the overload ended before the filter tripped


async def test_a_flapping_power_alert_is_held_and_resolves_once_clear_for_the_hold(told: Told) -> None:
    marks = told.stories["flapping"].marks
    alerts = await told.alerts("flapping", 4)
    assert [(a.state, a.episode_start_ms) for a in alerts] == [
        ("raised", marks["first"]), ("resolved", marks["first"]),
        ("raised", marks["second"]), ("resolved", marks["second"]),
    ]
    assert alerts[1].at_ms == marks["first_back"]
    # The second episode was held: its condition came back once (no new raise), and it resolved
    # 60 s after it last cleared.
    held = alerts[3]
    assert held.at_ms == marks["held_until"] == marks["clear_again"] + 60_000
    assert held.detail["flapping"] == 1.0 and held.detail["recurrences"] == 1.0


async def test_a_condition_back_within_the_repeat_interval_waits_for_it(told: Told) -> None:
    marks = told.stories["repeat"].marks
    alerts = await told.alerts("repeat", 4)
    first = alert_id(alerts[0].meter, "power_above", marks["first"])
    second = alert_id(alerts[0].meter, "power_above", marks["again"])
    assert [(a.id, a.state, a.at_ms) for a in alerts] == [
        (first, "raised", marks["first"] + 2_000),
        (first, "resolved", marks["first_back"]),
        # The 10 s burst 20 s after the resolution said nothing; the next one was raised when the
        # 120 s interval had passed, as the episode that began when it did.
        (second, "raised", marks["interval_over"]),
        (second, "resolved", marks["second_back"]),
    ]


async def test_a_meter_silent_while_its_partition_goes_on_is_disconnected_then_resolved(told: Told) -> None:
    marks = told.stories["disconnected"].marks
    raised, resolved = await told.alerts("disconnected", 2)
    start = marks["last_seen"] + 30_000  # its deadman: 30 s at one reading a second
    assert raised.id == resolved.id == alert_id(raised.meter, "disconnected", start)
    assert (raised.state, raised.episode_start_ms, raised.threshold) == ("raised", start, 30.0)
    assert raised.detail["last_seen_ms"] == marks["last_seen"]
    assert (resolved.state, resolved.at_ms, resolved.value) == ("resolved", marks["back"], 61.0)
    # Its neighbour reported throughout, and was read as a backlog: nothing for it.
    assert await alerts_of(told.settings, told.stories["neighbour"].meter) == []


async def test_every_transition_reaches_the_alert_history_in_influxdb(told: Told) -> None:
    for story in ("power_below", "energy_day_above", "spending_day_above", "fuse_limit", "flapping", "repeat",
                  "disconnected"):
        alerts = await alerts_of(told.settings, told.stories[story].meter)
        history = await told.history(story, len(alerts))
        assert sorted(history) == sorted((a.id, a.state, a.at_ms) for a in alerts), story
