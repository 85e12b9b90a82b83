"""The console service: follows the topics into the projection, runs the campaigns, takes commands.

One process (``quartier console run``, or the console surface's lifespan) owns ``devices.events``:
at start it folds the whole log into the campaign state, then every event it appends is folded as
soon as the broker acknowledged it, so the state never runs ahead of the log. Events are appended
before the commands they imply are sent: a crash in between leaves a request the module never got,
which times out and is retried, never a command the log does not know.

Wiring (:func:`build`): the projection (console.projection), the fold (console.campaigns), the
runner (console.runner), one consumer over meter.readings, meter.telemetry and alerts.events, one
producer; the clock is passed in.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from console import campaigns as cs
from console.projection import FleetProjection, write_snapshot
from console.runner import CampaignRunner
from quartier import events, topics
from quartier.kafka import ensure_topics, producer_config, read_records
from quartier.settings import Settings

log = logging.getLogger(__name__)

_telemetry = events.decoder(events.DeviceTelemetry)
_alert = events.decoder(events.AlertEvent)
_device_event = events.decoder(events.DeviceEvent)
FOLLOWED = (topics.METER_READINGS, topics.METER_TELEMETRY, topics.ALERTS_EVENTS)


class ConsoleService:
    def __init__(self, settings: Settings, fleet: FleetProjection, state: cs.DeviceState, runner: CampaignRunner,
                 wall_ms: Callable[[], int]) -> None:
        self.settings = settings
        self.fleet = fleet
        self.state = state
        self.runner = runner
        self.wall_ms = wall_ms
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._names = {settings.topic(t.name): t.name for t in FOLLOWED}
        self._lock = asyncio.Lock()
        self.ready = asyncio.Event()
        self.ticks = 0
        #: "topic:partition" -> next offset to fold: what a snapshot records.
        self.positions: dict[str, int] = {}

    def now_ms(self) -> int:
        """The runner's clock: wall time, or the fleet's newest meter time (settings.console.clock)."""
        if self.settings.console.clock == "fleet":
            return max(self.fleet.watermark_ms, 0)
        return self.wall_ms()

    # --- the log ---------------------------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        await ensure_topics(s, [*FOLLOWED, topics.DEVICES_EVENTS, topics.DEVICES_COMMANDS])
        for record in await read_records(s, s.topic(topics.DEVICES_EVENTS.name)):
            self.state.apply(_device_event.decode(record.value), record.partition, record.offset)
        self._producer = AIOKafkaProducer(**producer_config(s))
        await self._producer.start()
        consumer = AIOKafkaConsumer(bootstrap_servers=s.kafka.bootstrap, enable_auto_commit=False,
                                    max_partition_fetch_bytes=4 << 20)
        await consumer.start()
        cluster = await consumer._client.fetch_all_metadata()
        tps = [TopicPartition(name, p) for name in self._names for p in sorted(cluster.partitions_for_topic(name) or ())]
        consumer.assign(tps)
        if self.positions:
            # Resuming from a snapshot: each partition from the offset after the last one it folded.
            for tp in tps:
                offset = self.positions.get(f"{tp.topic}:{tp.partition}")
                if offset is None:
                    await consumer.seek_to_beginning(tp)
                else:
                    consumer.seek(tp, offset)
        elif s.console.readings_from == "latest":
            await consumer.seek_to_end(*tps)
        else:
            await consumer.seek_to_beginning(*tps)
        self._consumer = consumer

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()

    async def append(self, new: list[events.Record]) -> None:
        """Appends events to devices.events (keyed by campaign, firmware entries by version) and folds them."""
        assert self._producer is not None
        topic = self.settings.topic(topics.DEVICES_EVENTS.name)
        sent = []
        for e in new:
            key = getattr(e, "campaign", None) or getattr(e, "version", "firmware")
            sent.append(await self._producer.send(topic, events.encode(e), key=key.encode()))
        for e, future in zip(new, sent):
            meta = await future
            self.state.apply(e, meta.partition, meta.offset)

    async def send_commands(self, commands: list[events.FirmwareUpdateCommand]) -> None:
        assert self._producer is not None
        topic = self.settings.topic(topics.DEVICES_COMMANDS.name)
        sent = [await self._producer.send(topic, events.encode(c), key=c.meter.encode()) for c in commands]
        for future in sent:
            await future

    async def command(self, build: Callable[[cs.DeviceState, int], list[events.Record]]) -> list[events.Record]:
        """Runs an operator command against the state (under the runner's lock) and appends its events."""
        async with self._lock:
            new = build(self.state, self.now_ms())
            await self.append(new)
            return new

    # --- the loop ----------------------------------------------------------------------------------

    def snapshot_path(self) -> Path:
        return self.settings.state_dir / "console" / f"{self.settings.topic('projection')}.npz"

    def save_snapshot(self) -> None:
        """The projection and the positions it reflects, written atomically (console.projection)."""
        self.fleet.save(self.snapshot_path(), dict(self.positions))

    def fold(self, batch: dict[TopicPartition, list[Any]]) -> int:
        folded = 0
        for tp, records in batch.items():
            if records:
                self.positions[f"{tp.topic}:{tp.partition}"] = records[-1].offset + 1
            name = self._names[tp.topic]
            if name == topics.METER_READINGS.name:
                for r in records:
                    folded += self.fleet.on_readings_message(r.value)
            elif name == topics.METER_TELEMETRY.name:
                for r in records:
                    try:
                        self.fleet.on_telemetry(_telemetry.decode(r.value))  # type: ignore[arg-type]
                    except events.ContractError:
                        self.fleet.malformed += 1
            else:
                for r in records:
                    try:
                        self.fleet.on_alert(_alert.decode(r.value))  # type: ignore[arg-type]
                    except events.ContractError:
                        self.fleet.malformed += 1
        return folded

    async def tick(self) -> None:
        async with self._lock:
            new, commands = self.runner.tick(self.state, self.now_ms())
            if new:
                await self.append(new)
            if commands:
                await self.send_commands(commands)
            self.ticks += 1

    async def run(self, stop: asyncio.Event) -> None:
        assert self._consumer is not None
        c = self.settings.console
        next_refresh = next_tick = time.monotonic()
        next_snapshot = time.monotonic() + c.snapshot_s
        try:
            await self._loop(stop, next_refresh, next_tick, next_snapshot)
        finally:
            self.save_snapshot()

    async def _loop(self, stop: asyncio.Event, next_refresh: float, next_tick: float, next_snapshot: float) -> None:
        assert self._consumer is not None
        c = self.settings.console
        while not stop.is_set():
            batch = await self._consumer.getmany(timeout_ms=100, max_records=20_000)
            self.fold(batch)
            now = time.monotonic()
            if now >= next_refresh:
                next_refresh = now + c.refresh_s
                self.fleet.refresh(self.now_ms() if c.clock == "wall" else None)
                self.ready.set()
            if now >= next_snapshot:
                next_snapshot = now + c.snapshot_s
                # Copied in the loop (consistent with the positions), written in a thread.
                payload = self.fleet.snapshot(self.positions)
                await asyncio.to_thread(write_snapshot, self.snapshot_path(), payload)
            if now >= next_tick:
                next_tick = now + c.tick_s
                try:
                    await self.tick()
                except Exception:  # a broker hiccup must not stop the projection; the next tick retries
                    log.exception("campaign tick failed")


def build(settings: Settings, wall_ms: Callable[[], int] | None = None) -> ConsoleService:
    """The service, from the last snapshot of the projection when there is one."""
    path = settings.state_dir / "console" / f"{settings.topic('projection')}.npz"
    loaded = FleetProjection.load(path, time_zone=settings.console.time_zone)
    fleet, positions = loaded if loaded is not None else (FleetProjection(time_zone=settings.console.time_zone), {})
    service = ConsoleService(settings, fleet, cs.DeviceState(), CampaignRunner(fleet),
                             wall_ms or (lambda: int(time.time() * 1000)))
    service.positions = positions
    return service
