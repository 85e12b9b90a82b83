"""The live path: ONE consumer of ``meter.readings`` per API process, fanned out to each meter's viewers.

::

    meter.readings ──► LiveFeed (one aiokafka consumer, no group: every partition, from the end)
                          │  decodes only the fields a viewer sees (msgspec, unknown fields skipped)
                          ▼
                       LiveHub: meter → its latest reading + the viewers waiting for the next one
                          │  a new reading wakes that meter's viewers; no InfluxDB query per viewer
                          ▼
                       GET /v1/me/live (Server-Sent Events, id = the reading's meter time)

The event a viewer is sent is encoded once per reading and tariff (``LiveHub.encoded``): every viewer
of that home gets the same bytes.

A viewer always gets the *latest* reading, never a queue: one that falls behind skips to the newest,
so a slow phone costs nothing to the others. A viewer that reconnects with ``Last-Event-ID`` (the
meter time of the last reading it saw) gets the latest reading at once if it is newer.

The hub keeps the latest reading of every meter the stream carries (48,000 small structs are a few
MB), so a household that pairs a meter sees it within a second without a restart.

Decoding is the cost at fleet rate (48,000 readings/s): each message is decoded once, by msgspec,
into a struct holding only what the live figures need; the rest of each frame is skipped by the
parser without building Python objects. ``python -m bench.app`` measures the consumer's CPU.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Hashable
from dataclasses import dataclass
from typing import Any, TypeVar, Union

import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition

from households.indexes import SEALED_AFTER_MS
from quartier import tariffs, topics
from quartier.kafka import consumer_config, ensure_topics
from quartier.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")


class LiveReading(msgspec.Struct, tag_field="type", tag="reading", frozen=True):
    """The part of a ``quartier.events.MeterReading`` the live figures use (other fields skipped).

    The stream worker has already validated every frame against the full contract; this decoder
    only reads what it needs, so it accepts what the contract accepts.
    """

    meter: str
    time_ms: int
    drawn_va: int
    cutoff_kva: int
    tariff_register: int = 1
    injected_va: int = 0


class _LiveBatch(msgspec.Struct, tag_field="type", tag="batch"):
    readings: list[LiveReading]


_decoder = msgspec.json.Decoder(Union[LiveReading, _LiveBatch])


def decode_live(value: bytes) -> list[LiveReading]:
    """The readings of one ``meter.readings`` message; [] for a message the live path cannot read."""
    try:
        message = _decoder.decode(value)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return []  # the worker rejects and keeps it; the live path just shows the next good one
    if isinstance(message, _LiveBatch):
        return message.readings
    return [message]


@dataclass(frozen=True)
class LiveFigures:
    """One live event: what the household sees, computed from one reading."""

    meter_time_ms: int
    power_va: int
    injected_va: int
    eur_per_hour: float | None  # the power at the price of the register active now (VA ~ W here)
    fuse_headroom_pct: float  # how far below the cut-off power (PCOUP) the home draws, in %
    register: int
    register_name: str | None


def figures(reading: LiveReading, option: tariffs.TariffOption | str) -> LiveFigures:
    """The live figures of one reading for a home on ``option``."""
    option = tariffs.TariffOption(option)
    cutoff_va = reading.cutoff_kva * 1000
    try:
        price = tariffs.price_eur_per_kwh(option, reading.tariff_register, _instant(reading.time_ms))
        name: str | None = tariffs.register_name(option, reading.tariff_register)
    except ValueError:  # the meter's active register is not one its household's option has
        price, name = None, None
    # Apparent power stands for active power here: a Linky's SINSTS is what the fuse judges, and a
    # home's power factor is close to 1 for what costs money (heating, water, cooking).
    eur_per_hour = None if price is None else round(reading.drawn_va / 1000 * price, 4)
    headroom = round(100.0 * (cutoff_va - reading.drawn_va) / cutoff_va, 1)
    return LiveFigures(
        reading.time_ms, reading.drawn_va, reading.injected_va, eur_per_hour, headroom, reading.tariff_register, name
    )


def _instant(t_ms: int):  # type: ignore[no-untyped-def]
    from datetime import datetime, timezone

    return datetime.fromtimestamp(t_ms / 1000, timezone.utc)


#: A reading produced this long after its meter time may fall in a chart bucket already sealed
#: (``SEALED_AFTER_MS``, an hour), less a margin of 5 minutes for the time the worker takes to write it
#: and for the producer's clock against the meter's.
LATE_AFTER_MS = SEALED_AFTER_MS - 300_000


class _Meter:
    __slots__ = ("encoded", "latest", "produced_ms", "waiters")

    def __init__(self, latest: LiveReading | None, produced_ms: int = 0) -> None:
        self.latest = latest
        self.produced_ms = produced_ms  # when the latest reading's message was produced (its Kafka timestamp)
        self.waiters: list[asyncio.Future[None]] = []
        self.encoded: dict[Hashable, Any] | None = None  # the latest reading's encodings, by key (None: none yet)


class LiveHub:
    """The latest reading of each meter, and the viewers waiting for that meter's next one."""

    def __init__(self, on_late: Callable[[str, int], None] | None = None) -> None:
        self._meters: dict[str, _Meter] = {}
        self.readings = 0  # readings taken in (for the bench and metrics)
        # Told (meter, reading time) of each reading produced more than LATE_AFTER_MS after its time:
        # the charts' cache reopens that meter's sealed buckets (BoundaryCache.reopen).
        self._on_late = on_late

    def latest(self, meter: str) -> LiveReading | None:
        entry = self._meters.get(meter)
        return None if entry is None else entry.latest

    def produced_ms(self, meter: str) -> int:
        """The Kafka timestamp of the message that carried the meter's latest reading (for latency)."""
        entry = self._meters.get(meter)
        return 0 if entry is None else entry.produced_ms

    def viewers(self) -> int:
        return sum(len(m.waiters) for m in self._meters.values())

    def publish(self, readings: list[LiveReading], produced_ms: int = 0) -> None:
        """Take in readings (one message's); wakes the viewers of each meter that got a newer one."""
        meters = self._meters
        self.readings += len(readings)
        on_late = self._on_late
        late_before_ms = produced_ms - LATE_AFTER_MS if on_late is not None and produced_ms else -1
        for r in readings:
            if r.time_ms < late_before_ms:
                on_late(r.meter, r.time_ms)  # type: ignore[misc]
            entry = meters.get(r.meter)
            if entry is None:
                meters[r.meter] = _Meter(r, produced_ms)
                continue
            latest = entry.latest
            if latest is not None and r.time_ms <= latest.time_ms:
                continue  # a replayed or late frame: the viewer already has newer
            entry.latest = r
            entry.produced_ms = produced_ms
            entry.encoded = None
            if entry.waiters:
                waiters, entry.waiters = entry.waiters, []
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(None)

    def encoded(self, meter: str, reading: LiveReading, key: Hashable, encode: Callable[[LiveReading], T]) -> T:
        """``encode(reading)``, computed once per reading of ``meter`` and ``key`` however many viewers ask.

        Forty viewers of one home get the same bytes: the first one to wake encodes them (its figures at
        the household's tariff, the JSON, the event's framing), the others take them. ``key`` is what
        else the encoding depends on (the tariff). A reading that is no longer the latest is encoded
        anew each time (a viewer that fell behind; rare), so nothing stale is ever served.
        """
        entry = self._meters.get(meter)
        if entry is None or entry.latest is not reading:
            return encode(reading)
        done = entry.encoded
        if done is None:
            done = entry.encoded = {}
        elif key in done:
            return done[key]  # type: ignore[no-any-return]
        value = done[key] = encode(reading)
        return value

    async def follow(self, meter: str, last_seen_ms: int = -1) -> AsyncIterator[LiveReading]:
        """Each newer reading of ``meter``, starting with the latest if newer than ``last_seen_ms``.

        A viewer that is slow skips to the newest: it never gets a backlog.
        """
        loop = asyncio.get_running_loop()
        while True:
            entry = self._meters.get(meter)
            if entry is None:
                entry = self._meters[meter] = _Meter(None)
            latest = entry.latest
            if latest is not None and latest.time_ms > last_seen_ms:
                last_seen_ms = latest.time_ms
                yield latest
                continue
            waiter: asyncio.Future[None] = loop.create_future()
            entry.waiters.append(waiter)
            try:
                await waiter
            finally:
                if not waiter.done():
                    waiter.cancel()
                    if waiter in entry.waiters:
                        entry.waiters.remove(waiter)


class LiveFeed:
    """The one consumer of ``meter.readings`` of this process, feeding a ``LiveHub``.

    No consumer group: the API process reads every partition itself (each API process has its own
    hub), from the end, since only what arrives from now on is live. Offsets are never committed.
    """

    def __init__(
        self, settings: Settings, hub: LiveHub, *, decode: Callable[[bytes], list[LiveReading]] = decode_live,
    ) -> None:
        self.settings = settings
        self.hub = hub
        self.decode = decode
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self.ready = asyncio.Event()

    async def start(self) -> None:
        # Created with its declared partitions first (the embedded broker would make it with 4, for good).
        await ensure_topics(self.settings, [topics.METER_READINGS])
        config = consumer_config(self.settings)
        config.pop("session_timeout_ms", None)
        config.pop("heartbeat_interval_ms", None)
        consumer = AIOKafkaConsumer(
            **config,
            group_id=None,
            # Bigger fetches, fewer round trips: the feed only wants throughput.
            fetch_max_bytes=16 * 1024 * 1024,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        try:
            await consumer.start()
        except BaseException:
            await consumer.stop()  # a half-started client keeps its connections otherwise
            raise
        # Created with its declared partitions before it is read: the embedded broker would otherwise
        # make it with 4 on the first metadata request, and the console and worker refuse it then.
        await ensure_topics(self.settings, [topics.METER_READINGS])
        topic = self.settings.topic(topics.METER_READINGS.name)
        partitions = [TopicPartition(topic, p) for p in range(topics.METER_READINGS.partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_end(*partitions)
        self._consumer = consumer
        self._task = asyncio.create_task(self._run(consumer), name="households-live-feed")

    async def _run(self, consumer: AIOKafkaConsumer) -> None:
        publish = self.hub.publish
        decode = self.decode
        self.ready.set()
        while True:
            # No yield between the messages of one fetch, on purpose: a feed catching up (after a pause,
            # or starved of CPU) then takes in the whole fetch before its viewers run, so each viewer is
            # sent the newest reading once, not every reading of the backlog (measured: yielding after
            # each message made a catch-up second send 3x the events of a steady one).
            batches = await consumer.getmany(timeout_ms=200, max_records=2000)
            for records in batches.values():
                for record in records:
                    if record.value is not None:
                        publish(decode(record.value), record.timestamp)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            except Exception:  # noqa: BLE001 - the feed's own failure is logged, the stop goes on
                log.exception("the live feed had failed")
        if self._consumer is not None:
            await self._consumer.stop()
