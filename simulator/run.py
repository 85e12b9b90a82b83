"""A simulated run into Kafka: step the fleet, encode, pace, produce, and account for every frame.

Messages follow the ingest contract (quartier.topics.METER_READINGS): one ``ReadingBatch`` per
shard and step (several when a shard's batch would pass the message size cap), key = the shard
number in ASCII; a malformed frame goes alone in its own message with its shard's key, so the
shard's good readings are never lost with it. Device telemetry goes to ``meter.telemetry``, one
``DeviceTelemetry`` per message keyed by meter id, once a minute per module.

The modules obey ``devices.commands`` (firmware updates from the console's campaigns): the run
follows that topic from its end as it was at start (commands sent to an earlier run are not
replayed) and hands each command to its module before the next step.

Record timestamps are the send time; the readings' own ``time_ms`` carry the meters' time, which
in backfill is in the past: consumers file readings by ``time_ms`` (InfluxDB's history policy for
old points), while Kafka's time-based retention keeps counting from when they were sent.
"""

from __future__ import annotations

import asyncio
import math
import signal
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Literal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from quartier import events, topics
from quartier.kafka import end_offsets, ensure_topics, producer_config
from quartier.settings import Settings
from simulator.config import FleetConfig
from simulator.encoding import MAX_MESSAGE_BYTES, BatchEncoder
from simulator.engine import Simulation
from simulator.fleet import build_fleet
from simulator.pacing import RateController

#: Steps whose messages may await acknowledgement at once before the generator waits for the oldest.
MAX_STEPS_IN_FLIGHT = 4
PROGRESS_EVERY_S = 5.0


@dataclass(frozen=True)
class RunPlan:
    #: Simulated seconds.
    duration_s: float
    #: Simulated seconds per wall-clock second; 0 for as fast as possible.
    speed: float = 1.0
    #: First reading's time (Unix s); ``None``: now in real time, else ``duration_s`` before now.
    start_t: float | None = None
    #: Kafka compression. zstd: measured here at 48,000 readings/s, it takes the broker's memory
    #: (Tansu keeps everything) from 14 MB/s to 2.4 MB/s for 5% of a core; snappy 3.7 MB/s for 2.6%.
    #: (aiokafka's lz4 and gzip run at their slowest levels: 10x zstd's CPU here, so not offered.)
    compression: Literal["none", "snappy", "zstd"] = "zstd"

    def __post_init__(self) -> None:
        if not self.duration_s > 0:
            raise ValueError(f"duration: must be more than 0 seconds, got {self.duration_s!r}")
        if self.speed < 0:
            raise ValueError(f"speed: must be 0 (as fast as possible) or more, got {self.speed!r}")

    @property
    def realtime(self) -> bool:
        return self.speed == 1.0 and self.start_t is None

    def start(self, now: float, interval_s: int) -> float:
        if self.start_t is not None:
            return self.start_t
        if self.realtime:
            # The next whole second but one: time to build the first frame before it is due.
            return float(math.ceil(now) + 1)
        return float(math.floor((now - self.duration_s) / interval_s) * interval_s)


@dataclass
class Summary:
    readings_produced: int = 0
    achieved_rate: float = 0.0
    max_lag_s: float = 0.0
    malformed: int = 0
    disconnect_episodes: int = 0
    target_rate: float = 0.0
    meters: int = 0
    zones: int = 0
    seed: int = 0
    steps: int = 0
    simulated_s: float = 0.0
    wall_s: float = 0.0
    start: str = ""
    end: str = ""
    messages: int = 0
    #: Reading messages' size before Kafka compression.
    bytes: int = 0
    telemetry: int = 0
    topic: str = ""
    interrupted: bool = False
    commands_received: int = 0
    updates_installed: int = 0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["achieved_rate"] = round(self.achieved_rate, 1)
        out["max_lag_s"] = round(self.max_lag_s, 3)
        out["wall_s"] = round(self.wall_s, 3)
        return out


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat().replace("+00:00", "Z")


async def run(
    config: FleetConfig,
    plan: RunPlan,
    settings: Settings,
    progress: Callable[[str], None] | None = None,
) -> Summary:
    fleet = build_fleet(config)
    steps = max(1, math.ceil(plan.duration_s / config.interval_s))
    readings_topic = settings.topic(topics.METER_READINGS.name)
    telemetry_topic = settings.topic(topics.METER_TELEMETRY.name)
    await ensure_topics(settings, [topics.METER_READINGS, topics.METER_TELEMETRY, topics.DEVICES_COMMANDS])
    producer = AIOKafkaProducer(
        **{
            **producer_config(settings),
            # A partition's whole second in one batch (about 2.7 MB of JSON for the 48,000-meter fleet
            # on 8 partitions, 260 KB after zstd). aiokafka sends one request at a time to a broker and
            # takes one batch per partition into each, so with batches of two messages a second
            # travelled in three requests one after the other, and on the durable log each batch is an
            # object written, listed, read and deleted: 24 a second against 8 now (docs/operations.md,
            # "What the store is asked").
            "max_batch_size": 16 * MAX_MESSAGE_BYTES,
            "max_request_size": 16 * MAX_MESSAGE_BYTES,
            "compression_type": None if plan.compression == "none" else plan.compression,
        }
    )
    # Real time starts from the clock once the topics are there, so the first step is not late.
    start_t = plan.start(time.time(), config.interval_s)
    simulation = Simulation(fleet, start_t)
    encoder = BatchEncoder(fleet, MAX_MESSAGE_BYTES)
    summary = Summary(
        meters=fleet.size,
        zones=len(fleet.zones),
        seed=config.seed,
        steps=steps,
        target_rate=fleet.size / config.interval_s * plan.speed if plan.speed > 0 else 0.0,
        start=iso(start_t),
        topic=readings_topic,
    )
    pacer = RateController(config.interval_s, plan.speed, wall0=start_t if plan.realtime else None)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread (tests)
            pass
    shard_key = [b"%d" % s for s in range(config.shards)]
    in_flight: deque[asyncio.Future[Any]] = deque()
    next_progress = time.time() + PROGRESS_EVERY_S
    await producer.start()
    commands = await _follow_commands(settings)
    try:
        for step in range(steps):
            if stop.is_set():
                summary.interrupted = True
                break
            for batch in (await commands.getmany(timeout_ms=0)).values():
                for record in batch:
                    try:
                        command = _command.decode(record.value)
                    except events.ContractError:
                        continue  # not a command this simulator knows: the console's contract test covers it
                    simulation.modules.command_update(command.meter, command.firmware, simulation.t)  # type: ignore[attr-defined]
            frame = simulation.step()
            messages = encoder.encode(frame)
            due = await pacer.wait(step)
            sends = []
            for shard, body in messages:
                sends.append(await producer.send(readings_topic, body, key=shard_key[shard]))
                summary.bytes += len(body)
            for row, _kind, raw in frame.malformed:
                sends.append(await producer.send(readings_topic, raw, key=shard_key[fleet.shard[row]]))
                summary.bytes += len(raw)
            for report in frame.telemetry:
                sends.append(await producer.send(telemetry_topic, events.encode(report), key=report.meter.encode()))
            summary.messages += len(messages) + len(frame.malformed)
            summary.readings_produced += len(frame.sent)
            summary.malformed += len(frame.malformed)
            summary.telemetry += len(frame.telemetry)
            summary.simulated_s += config.interval_s
            frames = len(frame.sent) + len(frame.malformed)
            acked = asyncio.gather(*sends)
            acked.add_done_callback(_record_ack(pacer, step, due, frames))
            in_flight.append(acked)
            while in_flight and (len(in_flight) > MAX_STEPS_IN_FLIGHT or in_flight[0].done()):
                await in_flight.popleft()  # raises the broker's error, if any
            if progress is not None and time.time() >= next_progress:
                next_progress = time.time() + PROGRESS_EVERY_S
                progress(_progress_line(summary, pacer, steps, step, frame.t))
        while in_flight:
            await in_flight.popleft()
    finally:
        await producer.stop()
        await commands.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.remove_signal_handler(sig)
            except (NotImplementedError, RuntimeError):
                pass
    done_steps = round(summary.simulated_s / config.interval_s)
    summary.end = iso(start_t + summary.simulated_s)
    summary.disconnect_episodes = simulation.modules.episodes
    summary.commands_received = simulation.modules.commands_received
    summary.updates_installed = simulation.modules.updates_installed
    summary.achieved_rate = pacer.achieved_rate(done_steps)
    summary.max_lag_s = pacer.max_lag_s
    summary.wall_s = pacer.elapsed_s(done_steps)
    if progress is not None:
        progress(
            _progress_line(summary, pacer, steps, done_steps - 1, start_t + summary.simulated_s, summary.achieved_rate)
        )
    return summary


_command = events.decoder(events.FirmwareUpdateCommand)


async def _follow_commands(settings: Settings) -> AIOKafkaConsumer:
    """A consumer on devices.commands, positioned at its current end."""
    topic = settings.topic(topics.DEVICES_COMMANDS.name)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap, enable_auto_commit=False)
    await consumer.start()
    tps = [TopicPartition(topic, p) for p in range(topics.DEVICES_COMMANDS.partitions)]
    consumer.assign(tps)
    ends = await end_offsets(consumer, tps, settings.kafka.flavour)
    for tp, offset in ends.items():
        consumer.seek(tp, offset)
    return consumer


def _record_ack(pacer: RateController, step: int, due: float, frames: int) -> Callable[[asyncio.Future[Any]], None]:
    def done(acked: asyncio.Future[Any]) -> None:
        if not acked.cancelled() and acked.exception() is None:
            pacer.acked(step, due, frames)

    return done


def _progress_line(
    summary: Summary, pacer: RateController, steps: int, step: int, t: float, rate: float | None = None
) -> str:
    share = (step + 1) / steps
    if rate is None:
        elapsed = max(time.time() - (pacer.wall0 or time.time()), 1e-9)
        rate = pacer.frames_acked / elapsed
    return (
        f"simulate: {iso(t)}  {share:6.1%}  {summary.readings_produced:,} readings  "
        f"{rate:,.0f}/s  max lag {pacer.max_lag_s:.2f} s  malformed {summary.malformed:,}"
    )


def stderr_progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
