"""A worker that starts behind (a restart, a slow spell) catches up without false disconnects.

The fleet's readings of the last half hour wait in ``meter.readings`` before the worker starts, and
the meters keep reporting live while it reads them. Judged on the wall clock, every meter would look
silent for up to half an hour; judged on the stream's own progress, only the meter that really went
quiet is disconnected, at the same meter time as a worker that had kept up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from quartier import events, topics
from quartier.events import AlertRules, MeterReading, alert_id
from quartier.kafka import ensure_topics, read_all
from quartier.settings import Settings
from quartier.stack.component import pick_port
from tests.streams import alert_stories
from tests.streams.alert_stories import same_shard
from tests.streams.worker_support import WorkerProcess, readings, scrape, send

BACKLOG_S = 1_800


def fleet(shards: int) -> tuple[list[str], str]:
    """Twelve meters (enough for the ingest-down judgement), the last one quiet.

    The quiet one stops reporting five minutes before the end of the backlog; it shares its shard
    with the first, which goes on: the stream's progress shows its silence during the catch-up.
    """
    meters = [f"4000000000{i:02d}" for i in range(11)]
    return [*meters, same_shard(meters[0], shards)], same_shard(meters[0], shards)


async def test_catching_up_on_a_backlog_raises_no_false_disconnect(
    broker: dict[str, Any], influx: dict[str, Any], make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(broker, influx)
    shards = settings.kafka.reading_shards
    FLEET, QUIET = fleet(shards)  # noqa: N806
    await ensure_topics(settings)
    rules = [AlertRules(meter=m, disconnect=True, fuse_warning=False) for m in FLEET]
    await send(settings, topics.ALERTS_RULES.name, [(r.meter.encode(), events.encode(r)) for r in rules])

    now = int(time.time()) * 1000
    start = now - BACKLOG_S * 1000
    backlog = [r for m in FLEET for r in readings(m, start, [400] * BACKLOG_S)]
    backlog = [r for r in backlog if r.meter != QUIET or r.time_ms < now - 300_000]
    quiet_last_seen = max(r.time_ms for r in backlog if r.meter == QUIET)
    await send(settings, topics.METER_READINGS.name, alert_stories.messages(backlog, shards, size=10))

    sent = len(backlog)
    stop = asyncio.Event()

    async def live() -> None:
        """The meters go on reporting once a second (all but the quiet one), from now on."""
        nonlocal sent
        t = now
        while not stop.is_set():
            t += 1_000
            fresh: list[MeterReading] = [readings(m, t, [400], seq0=t // 1000)[0] for m in FLEET if m != QUIET]
            await send(settings, topics.METER_READINGS.name, alert_stories.messages(fresh, shards))
            sent += len(fresh)
            await asyncio.sleep(max(0.0, (t - time.time() * 1000) / 1000))

    port = pick_port(0)
    argv = ["-m", "quartier.cli", "streams", "worker", "--app-id", settings.topic("worker"), "--metrics-port",
            str(port), "--deadman-interval", "1"]
    feed = asyncio.create_task(live())
    try:
        with WorkerProcess(argv, settings, tmp_path / "worker.log") as worker:
            # Caught up: every backlog reading and a few seconds of live ones consumed.
            target = len(backlog) + 5 * (len(FLEET) - 1)

            async def caught_up() -> bool:
                return scrape(port).get("quartier_readings_consumed_total", 0) >= target

            await worker.until(caught_up, 180, "the backlog consumed")

            async def quiet_alerted() -> bool:
                return scrape(port).get("quartier_alert_events_total{kind=disconnected,state=raised}", 0) >= 1

            await worker.until(quiet_alerted, 60, "the quiet meter disconnected")

            async def no_lag() -> bool:
                samples = scrape(port)
                lags = [v for k, v in samples.items() if k.startswith("quartier_consumer_lag_messages{")]
                return bool(lags) and sum(lags) <= len(FLEET)

            # The lag metric says it too (for the partitions read from): at most the last second's
            # live messages are waiting.
            await worker.until(no_lag, 60, "the consumer lag exported and back to the live flow")
            stop.set()
            await feed
            assert worker.terminate() == 0
    finally:
        stop.set()
        await feed

    alerts = await read_all(
        settings, settings.topic(topics.ALERTS_EVENTS.name), events.decoder(events.AlertEvent).decode  # type: ignore[arg-type]
    )
    episode = alert_id(QUIET, "disconnected", quiet_last_seen + 30_000)
    assert [(a.meter, a.kind, a.state, a.id) for a in alerts] == [(QUIET, "disconnected", "raised", episode)]
    # Judged during the catch-up, at the meter time the worker had reached: not later, by the clock.
    assert alerts[0].at_ms < now
