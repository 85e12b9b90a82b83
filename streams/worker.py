"""The stream worker: readings in; rejected readings, alert events and InfluxDB points out.

One Faust agent consumes ``meter.readings``. Per message it decodes the reading or batch (readings
that fail the contract or physics, an energy index going down, go to ``meter.readings.rejected`` with
their reason and source offset; the worker never stops on input), hands the valid readings to
InfluxDB's batched writer and to the alert engine (:mod:`streams.alerting`), publishes the engine's alert transitions on ``alerts.events``, and writes a
meter's durable alert state to the ``alert_state`` table only when the engine says it changed.
Everything per reading stays cheap: one decode, one line of line protocol, attribute comparisons.
The alert path comes first: while more fetched messages wait, the agent judges them all before it
stores any (``judge``, then ``store``, in order), so a burst's last alert does not wait for the line
protocol of every reading ahead of it.

The deadman judges each meter's silence on the stream's own progress (:mod:`streams.alerting.engine`):
the newest meter time consumed on its partition, or the wall clock where the worker has reached the
end of the partition's log (its position against the highwater of the last fetch). It runs every
``deadman_interval_s`` of each partition's meter time as the readings are consumed, so a backlog is
judged as it would have been live, and on a wall-clock timer for when nothing comes at all.

The engine's durable state is a changelog-backed table keyed by meter, co-partitioned with
``meter.readings`` (a meter's readings always come on its shard's partition, and its state is written
to the same partition of the changelog), so a restarted worker gets back exactly the state of the
meters it is given. The rules come from ``alerts.rules`` (:mod:`streams.rules_feed`).

A message is acknowledged to Faust (so its offset may be committed) only once everything it produced
is durable: its points acknowledged by InfluxDB or in the writer's spool, its rejected readings, slots
and state records acknowledged by the broker, its alert events too. The agent does not wait for any of
it: :mod:`streams.acks` holds the messages in between, and sends a state record only after the alert
events it depends on are acknowledged (``SendsAfter``); docs/pipeline.md, "Delivery", says what a crash
replays.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections import deque
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass

from aiokafka import TopicPartition
from faust.types import TP, Message, StreamT
from mode import Service

from quartier import events, topics
from quartier.events import AlertEvent, AlertRules, MeterReading, RejectedReading, SlotEnergy
from quartier.kafka import latest_offsets
from quartier.settings import Settings
from streams.acks import DurableAcks, SendsAfter
from streams.alerting import AlertEngine, RuleError, decode_fleet, decode_meter, encode_state
from streams.alerting.engine import Outcome
from streams.app import QuartierApp, create_app
from streams.influx_writer import InfluxWriter
from streams.ingest import Rejection, decode_message
from streams.line_protocol import ReadingLines, alert_line, reading_line
from streams.metrics import (
    ALERT_EVENTS, CONSUMER_LAG, MESSAGES_UNACKED, READINGS_CONSUMED, READINGS_REJECTED, RULES_APPLIED, RULES_REJECTED,
    SLOTS_PUBLISHED,
)
from streams.physics import IndexGuard
from streams.resolution import COARSE_POLICY, ResolutionGate
from streams.rules_feed import RulesFeed
from streams.slots import SlotTracker

log = logging.getLogger(__name__)

#: The table key of the engine's operator-level state (not a meter id: those are 12 digits).
FLEET_KEY = b"~fleet"
DEFAULT_DEADMAN_INTERVAL_S = 5.0
#: The stall watchdog: how often it looks, and how long without progress it tolerates.
STALL_CHECK_S = 5.0
STALL_AFTER_S = 30.0
#: Judged readings waiting to be stored, past which the agent stores them before judging more, even
#: with fetched messages waiting: a bound on the memory they hold while the worker catches up (about
#: two seconds of a worker's share of the 48,000-meter fleet).
STORE_AFTER_READINGS = 50_000


@dataclass(slots=True)
class Judged:
    """A message whose readings the alert engine has judged and that is not stored yet."""

    message: Message
    readings: list[MeterReading]
    sends: list[asyncio.Future[object]]  # what judging it sent (rejections, alert events, states)


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class InfluxSink(Service):
    """Starts the InfluxDB writer with the app and stops it (flushing) after the consumer has stopped."""

    def __init__(self, writer: InfluxWriter) -> None:
        super().__init__()
        self.writer = writer

    async def on_start(self) -> None:
        await self.writer.start()

    async def on_stop(self) -> None:
        await self.writer.stop()


class StreamWorker:
    """The app, its agent, its table and the state shared between them."""

    def __init__(
        self, settings: Settings, app_id: str, *, deadman_interval_s: float = DEFAULT_DEADMAN_INTERVAL_S,
        freeze_gc: bool = True,
    ) -> None:
        self.settings = settings
        self.freeze_gc = freeze_gc
        self.app: QuartierApp = create_app(settings, app_id)
        app = self.app
        self.readings_topic_name = settings.topic(topics.METER_READINGS.name)
        self.readings_topic = app.topic(self.readings_topic_name, partitions=topics.METER_READINGS.partitions)
        self.rejected_topic = app.topic(
            settings.topic(topics.METER_READINGS_REJECTED.name), partitions=topics.METER_READINGS_REJECTED.partitions
        )
        self.alerts_topic = app.topic(
            settings.topic(topics.ALERTS_EVENTS.name), partitions=topics.ALERTS_EVENTS.partitions
        )
        self.slots_topic = app.topic(settings.topic(topics.METER_SLOTS.name), partitions=topics.METER_SLOTS.partitions)
        # In memory: after a restart the slot in progress is rebuilt from the replayed readings
        # (streams/slots.py); the market keeps the most complete record per (meter, slot).
        self.slots = SlotTracker()
        # Co-partitioned with meter.readings: written to the partition the meter's readings come on.
        self.state = app.Table(
            "alert_state", partitions=topics.METER_READINGS.partitions, key_type=bytes, value_type=bytes
        )
        influx = settings.influx
        self.writer = InfluxWriter(
            settings, batch_points=influx.batch_points, max_buffered_points=influx.max_buffered_points,
            on_durable=self.on_durable,
        )
        self.changed_lines = ReadingLines()
        self.reading_lines = (
            self.changed_lines.lines if settings.influx.reading_points == "changed"
            else lambda readings: [reading_line(r) for r in readings]
        )
        app.add_dependency(InfluxSink(self.writer))
        self.engine = AlertEngine()
        self.index_guard = IndexGuard()
        self.rules: dict[str, AlertRules] = {}  # the latest per meter, to set up an engine after a rebalance
        # Where each meter's state goes: the partition its readings come on (or its state came from).
        self.partition_of: dict[str, int] = {}
        self.assigned: set[int] = set()
        # Per assigned partition of meter.readings, the offset after the last message handled: with
        # the highwater, whether the worker has reached the end of that partition's log.
        self.next_offset: dict[int, int] = {}
        self.unsaved: set[str] = set()  # meters whose state changed before their partition was known
        self.feed = RulesFeed(
            settings,
            settings.topic(topics.ALERTS_RULES.name),
            on_rules=self.apply_rules,
            on_removed=self.remove_rules,
            on_rejected=self.reject_rules,
        )
        self._pending: set[asyncio.Task[None]] = set()
        # privacy: what is stored of each meter's readings, at its household's chosen resolution.
        self.resolutions = ResolutionGate(settings.privacy.default_resolution, self.reading_lines)
        self.coarse_writer = InfluxWriter(
            settings, policy=COARSE_POLICY, batch_points=1000, concurrency=1, on_durable=self.on_durable
        )
        # The alert history: spooled as it is written, so that a state saved as "raised" (right after
        # the event is published) never survives a crash that lost the event's point, which the
        # replay would not write again (the state says it is raised already).
        self.alert_writer = InfluxWriter(settings, batch_points=1000, concurrency=1, name="alerts")
        app.add_dependency(InfluxSink(self.alert_writer))
        # Handled messages wait here for their outputs to be durable before Faust may commit them.
        self.acks: DurableAcks[Message] = DurableAcks(
            (lambda: self.writer.durable_mark, lambda: self.coarse_writer.durable_mark),
            ack=self.ack, failed=self.send_failed,
        )
        # State records that wait for the alert events they depend on, sent in order (streams.acks).
        self.state_sends = SendsAfter(failed=self.send_failed)
        self._failing = False
        # The broker's acknowledgements of what the message being handled sent (None between messages).
        self._sends: list[asyncio.Future[object]] | None = None
        # Set while the agent is between two messages: a rebalance or a stop waits for it.
        self.between_messages = asyncio.Event()
        self.between_messages.set()
        # Judged messages not stored yet, in order (see consume), and the lock that keeps them in order.
        self.unstored: deque[Judged] = deque()
        self.unstored_readings = 0
        self.storing = asyncio.Lock()
        app.settle = self.settle
        app.add_dependency(InfluxSink(self.coarse_writer))
        self.resolution_feed = RulesFeed(
            settings,
            settings.topic(topics.METER_RESOLUTION.name),
            on_rules=self.resolutions.choose,
            on_removed=self.resolutions.forget,
            on_rejected=self.reject_resolution,
            decoder=events.Decoder(events.ResolutionChosen),
        )

        app.agent(self.readings_topic, name="readings")(self.consume)
        app.task(self.follow_rules)
        app.task(self.follow_resolutions)
        self.state.on_recover(self.rebuild_engine)
        # The deadman runs every interval of meter time (as readings are consumed) and of wall time.
        self.deadman_interval_ms = int(deadman_interval_s * 1000)
        self.next_deadman_ms: dict[int, int] = {}  # per partition, the meter time of its next run
        self.deadman_ran_ms = 0  # wall time of the last run
        if deadman_interval_s > 0:
            app.timer(deadman_interval_s)(self.on_deadman_timer)
        # The stall watchdog (see check_progress).
        self.handled = 0
        self.stalled_s = 0.0
        self._handled_at_check = 0
        if STALL_CHECK_S > 0:
            app.timer(STALL_CHECK_S)(self.check_progress)

    # --- the ingest path ---------------------------------------------------------------------------

    async def consume(self, stream: StreamT) -> None:
        ready = self.feed.ready
        resolutions_ready = self.resolution_feed.ready
        between_messages = self.between_messages
        fetched = stream.channel.queue  # the messages fetched and not yet handled
        # Wait inside the loop, not before it: Faust registers the agent's channel with its
        # conductor only once the stream is iterated. noack: each message is acknowledged by
        # self.acks once what it produced is durable, not when this loop moves on.
        async for event in stream.noack().events():
            if not ready.is_set():
                await ready.wait()  # judge no reading before the households' rules are known
            if not resolutions_ready.is_set():
                await resolutions_ready.wait()  # store no reading before the households' consent is known
            between_messages.clear()
            message = event.message
            sends = self._sends = []
            try:
                readings = await self.judge(message.value, message)
            finally:
                self._sends = None
                between_messages.set()
            self.next_offset[message.partition] = message.offset + 1
            self.handled += 1
            # Held until acknowledged, a message need not keep its payload: without this, the held
            # messages would double the memory of the writer's buffer while InfluxDB is away.
            event.value = message.value = None
            self.unstored.append(Judged(message, readings, sends))
            self.unstored_readings += len(readings)
            # Alerts first: while more fetched messages wait, their readings are judged before any of
            # these is stored (docs/pipeline.md, "2026-12-05, alerts first").
            if fetched.empty() or self.unstored_readings >= STORE_AFTER_READINGS:
                await self.store()
            partition = message.partition
            if readings and self.deadman_interval_ms and (
                self.engine.progress_ms[partition] >= self.next_deadman_ms.get(partition, -1)
            ):
                await self.check_silence()

    # --- acknowledgements --------------------------------------------------------------------------

    def on_durable(self) -> None:
        """A writer's durable mark moved: acknowledge the messages whose points are all durable now."""
        self.acks.release()
        MESSAGES_UNACKED.set(len(self.acks))

    def ack(self, message: Message) -> None:
        if message.generation_id != self.app.consumer_generation_id:
            return  # handled before a rebalance: Faust reads it again from the committed offset
        if message.ack(self.app.consumer):
            self.app.sensors.on_message_out(message.tp, message.offset, message)

    def send_failed(self, error: BaseException) -> None:
        # The message that sent it is never acknowledged, so its partition's commits stop there:
        # stop, and let the supervisor's restart replay from the committed offset.
        if self._failing:
            return  # one failure stops the worker; the others it caused say nothing new
        self._failing = True
        log.error("the broker did not take a record the worker sent (%s): stopping for a replay", error)
        self._spawn(self.app.crash(error if isinstance(error, Exception) else RuntimeError(str(error))))

    def _track(self, send: asyncio.Future[object]) -> None:
        """A record sent while handling a message: the message is acknowledged once the broker has it."""
        if self._sends is not None:
            self._sends.append(send)

    async def settle(self, stopping: bool) -> None:
        """Before a rebalance or a stop goes on (in place of Faust's wait for every message to be acked).

        The message being handled is finished first, every judged message is stored, and the state
        records queued behind their alert events are handed to the producer (for up to ``STATE_SENDS_TIMEOUT_S``), so none lands in the
        changelog after the partition's next owner has started from it. On a rebalance, the held
        messages are then dropped: Faust reads every partition again from its committed offset, and
        waiting for InfluxDB here would hold up the whole group. On a stop, the writers are stopped
        (flushed for up to their ``stop_timeout_s``, the rest spooled, so every point is durable), which
        acknowledges every held message before the consumer's last commit.
        """
        await self.between_messages.wait()
        await self.store()
        try:
            await asyncio.wait_for(self.state_sends.drained(), STATE_SENDS_TIMEOUT_S)
        except asyncio.TimeoutError:
            # Their messages stay unacknowledged, so uncommitted: the next owner handles them again.
            log.warning("%d state records not sent in %.0f s (the broker is slow or away): their readings "
                        "will be handled again", len(self.state_sends), STATE_SENDS_TIMEOUT_S)
        if stopping:
            await asyncio.gather(self.writer.stop(), self.coarse_writer.stop(), self.alert_writer.stop())
        else:
            self.acks.forget()
        MESSAGES_UNACKED.set(len(self.acks))

    async def judge(self, value: bytes | None, message: Message) -> list[MeterReading]:
        """The alert path of a message: decode, reject what is invalid, judge the valid readings;
        returns them, to be stored (``store``)."""
        decoded = decode_message(value)
        READINGS_CONSUMED.inc(decoded.consumed)
        rejections = decoded.rejections
        readings = decoded.readings
        if readings:
            readings, unphysical = self.index_guard.check(readings)
            if unphysical:
                rejections = rejections + [Rejection(events.encode(r), why, r.meter) for r, why in unphysical]
        if rejections:
            await self.reject(rejections, message.topic, message.partition, message.offset)
        if not readings:
            return readings
        partition = message.partition
        partition_of = self.partition_of
        for reading in readings:
            partition_of[reading.meter] = partition
        if self.unsaved:
            for meter in self.unsaved.intersection([r.meter for r in readings]):
                self.unsaved.discard(meter)
                await self.write_state(meter)
        results = self.engine.on_readings(readings, partition)
        if results:
            await self.handle(results)
        return readings

    async def store(self) -> None:
        """The storage path of every judged message, in the order they were judged: their readings'
        points to the writers, their slots; then each is held until all it produced is durable."""
        async with self.storing:
            unstored = self.unstored
            while unstored:
                judged = unstored[0]
                readings = judged.readings
                if readings:
                    self._sends = judged.sends
                    try:
                        detail, coarse = self.resolutions.lines(readings)
                        self.writer.write(detail)
                        if coarse:
                            self.coarse_writer.write(coarse)
                        on_reading = self.slots.on_reading
                        closed = [slot for reading in readings for slot in on_reading(reading)]
                        if closed:
                            await self.publish_slots(closed)
                    finally:
                        self._sends = None
                unstored.popleft()
                self.unstored_readings -= len(readings)
                self.acks.hold(judged.message, (self.writer.mark, self.coarse_writer.mark), judged.sends)
            MESSAGES_UNACKED.set(len(self.acks))

    async def publish_slots(self, slots: list[SlotEnergy]) -> None:
        for slot in slots:
            self._track(await self.slots_topic.send(key=slot.meter.encode(), value=events.encode(slot)))
        SLOTS_PUBLISHED.inc(len(slots))

    async def reject(self, rejections: Iterable[Rejection], topic: str, partition: int, offset: int) -> None:
        now = wall_ms()
        for rejection in rejections:
            record = RejectedReading(
                raw=rejection.raw, reason=rejection.reason, meter=rejection.meter, source_topic=topic,
                source_partition=partition, source_offset=offset, rejected_at_ms=now,
            )
            key = rejection.meter.encode() if rejection.meter else None
            self._track(await self.rejected_topic.send(key=key, value=events.encode(record)))
            READINGS_REJECTED.inc()
            # The rejected topic is the record (and the counter the alarm); the log only helps debugging.
            log.debug("rejected a reading from %s[%d]@%d: %s", topic, partition, offset, rejection.reason)

    async def handle(self, results: list[tuple[str, Outcome]]) -> None:
        """Publishes the events, then writes the states that changed, each sent once the events are durable."""
        published = [event for _, outcome in results for event in outcome.events]
        after = [await self.publish(published)] if published else []
        for meter, outcome in results:
            if outcome.problem:
                log.warning("meter %s: %s", meter, outcome.problem)
            if outcome.changed:
                await self.write_state(meter, after)

    async def publish(self, alerts: list[AlertEvent]) -> asyncio.Future[object]:
        """Hands the events to the producer and their history points to the spool; returns a future done
        once the broker acknowledged every event and the points are on disk (not awaited here: a state
        record waits for it instead, see ``SendsAfter``; so does the message being handled)."""
        acks = [
            await self.alerts_topic.send(key=a.meter.encode() if a.meter else None, value=events.encode(a))
            for a in alerts
        ]
        lines = []
        for alert in alerts:
            ALERT_EVENTS.labels(alert.kind, alert.state).inc()
            try:
                lines.append(alert_line(alert))
            except ValueError as error:  # a non-finite value: the event is published, the point is not
                log.error("alert %s not written to InfluxDB: %s", alert.id, error)
        # The point's fsync (in a thread) and the broker's acknowledgements, together.
        durable: asyncio.Future[object] = asyncio.gather(self.alert_writer.write_kept(lines), *acks)  # type: ignore[assignment]
        durable.add_done_callback(self._stop_if_failed)
        self._track(durable)
        return durable

    def _stop_if_failed(self, done: asyncio.Future[object]) -> None:
        if not done.cancelled() and (error := done.exception()) is not None:
            self.send_failed(error)

    # --- the durable state -------------------------------------------------------------------------

    async def write_state(self, meter: str, after: list[asyncio.Future[object]] | None = None) -> None:
        """Saves the meter's durable alert state; its record is sent once every future of ``after`` is done."""
        durable = self.engine.durable(meter)
        partition = self.partition_of.get(meter)
        if durable is None:
            return
        if partition is None:
            # Rules for a meter not read yet: its state is saved with its first reading. (Lost in
            # between, it comes back anyway: a restarted worker applies every rule again.)
            self.unsaved.add(meter)
            return
        await self._put(meter.encode(), encode_state(durable), partition, after)

    async def write_fleet(self, after: list[asyncio.Future[object]] | None = None) -> None:
        if self.assigned:
            await self._put(FLEET_KEY, encode_state(self.engine.fleet), min(self.assigned), after)

    async def _put(
        self, key: bytes, value: bytes, partition: int, after: list[asyncio.Future[object]] | None = None
    ) -> None:
        """Sets a table key and sends its changelog record, to the given partition.

        Not ``table[key] = value``: that takes the partition from the event being processed, and the
        deadman timer and the rules feed write outside of any event. And the record goes straight to
        the producer rather than through Faust's send buffer (``Table.send_changelog``), because the
        commit's flush of that buffer gives up after 0.1 s per message: a state write still in it could
        be lost in a crash after its source offset was committed. The producer itself is flushed
        before every commit.

        With ``after`` (the events the state records), or while an earlier record waits for its own, the
        record goes through ``state_sends``, after them and in order.
        """
        self.state.data[key] = value

        def send() -> Awaitable[asyncio.Future[object]]:
            return self.state.changelog_topic.send(key=key, value=value, partition=partition)  # type: ignore[return-value]

        if not after and not self.state_sends:
            self._track(await send())  # nothing to wait for and nothing queued ahead of it
        else:
            self._track(self.state_sends.send(after or [], send))

    async def rebuild_engine(self) -> None:
        """After each rebalance and recovery: an engine for exactly the meters of this worker's partitions."""
        assignment = self.app.consumer.assignment()
        self.assigned = {tp.partition for tp in assignment if tp.topic == self.readings_topic_name}
        # Faust's memory store notes the changelog partition each recovered key came from.
        recovered = getattr(self.state.data, "_key_partition", {})
        for key, partition in recovered.items():
            if key != FLEET_KEY:
                self.partition_of[key.decode()] = partition
        self.next_offset = {}  # Faust seeks the partitions to their committed offsets again
        # Another worker may have written these meters' points meanwhile: the next point of each is full.
        self.changed_lines.forget()
        engine = AlertEngine()
        now = wall_ms()
        restored = 0
        for key, value in list(self.state.data.items()):
            if key == FLEET_KEY:
                if recovered.get(key) in self.assigned:
                    engine.restore_fleet(decode_fleet(value))
                continue
            meter = key.decode()
            partition = self.partition_of.get(meter)
            if partition in self.assigned:
                engine.restore(meter, decode_meter(value), now, stream=partition)
                restored += 1
        self.engine = engine
        self.next_deadman_ms = {}
        for rules in list(self.rules.values()):
            self._set_rules(rules)
        log.info("alert engine rebuilt: partitions %s, %d meters restored", sorted(self.assigned), restored)
        if self.freeze_gc:
            freeze_long_lived()

    # --- rules -------------------------------------------------------------------------------------

    async def follow_rules(self) -> None:
        try:
            await self.feed.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # without rules the worker would judge nothing: stop, loudly
            log.exception("cannot read %s", self.feed.topic)
            await self.app.crash(exc)

    async def follow_resolutions(self) -> None:
        try:
            await self.resolution_feed.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # without the households' consent nothing may be stored: stop, loudly
            log.exception("cannot read %s", self.resolution_feed.topic)
            await self.app.crash(exc)

    def reject_resolution(self, reason: str, meter: str) -> None:
        log.error("resolution choice for meter %s not applied: %s", meter or "?", reason)

    def apply_rules(self, rules: AlertRules) -> None:
        self.rules[rules.meter] = rules
        if self._set_rules(rules):
            RULES_APPLIED.inc()

    def _set_rules(self, rules: AlertRules) -> bool:
        try:
            outcome = self.engine.set_rules(rules)
        except RuleError as error:
            self.reject_rules(str(error), rules.meter)
            return False
        self._after(rules.meter, outcome)
        return True

    def remove_rules(self, meter: str) -> None:
        self.rules.pop(meter, None)
        self._after(meter, self.engine.remove_rules(meter))

    def reject_rules(self, reason: str, meter: str) -> None:
        RULES_REJECTED.inc()
        log.error("alert rules for meter %s not applied: %s", meter or "?", reason)

    def _after(self, meter: str, outcome: Outcome) -> None:
        """An outcome produced outside the agent (rules, deadman): publish, then save, in a task."""
        if outcome.events or outcome.changed:
            self._spawn(self.handle([(meter, outcome)]))

    def _spawn(self, work) -> None:  # type: ignore[no-untyped-def]
        task = asyncio.ensure_future(work)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    # --- the stall watchdog ------------------------------------------------------------------------

    async def check_progress(self) -> None:
        """Exits the worker (for its supervisor to restart it) when records wait and none is handled.

        After the broker was killed and came back, the worker rejoined its group, recovered and said
        "Worker ready", then fetched nothing, about 1 run in 2 of the broker drill
        (tests/test_drills.py), while a restarted worker always resumes from its committed offsets.
        So a worker that has handled nothing for ``STALL_AFTER_S`` while the broker holds records
        past what it handled crashes with exit code 1, and the supervisor (docker's restart policy,
        the drill) starts it again. The broker's own end offsets are asked for, not the fetcher's
        highwater: a fetcher that stopped fetching reports no new highwater either.
        """
        app = self.app
        if app.rebalancing or not self.assigned or not app.tables.recovery.completed.is_set():
            self.stalled_s = 0.0
            self._handled_at_check = self.handled
            return
        if self.handled != self._handled_at_check:
            self.stalled_s = 0.0
            self._handled_at_check = self.handled
            return
        tps = [TopicPartition(self.readings_topic_name, p) for p in sorted(self.assigned)]
        try:
            ends = await latest_offsets(self.settings, tps)
        except Exception as exc:  # the broker is away: not the worker's stall
            log.info("stall watchdog: cannot read the end offsets (%s)", exc)
            self.stalled_s = 0.0
            return
        committed = getattr(app.consumer, "_committed_offset", {})
        waiting = {
            tp.partition: end - self.next_offset.get(tp.partition, committed.get(TP(tp.topic, tp.partition)) or 0)
            for tp, end in ends.items()
        }
        if not any(n > 0 for n in waiting.values()):
            self.stalled_s = 0.0
            return
        self.stalled_s += STALL_CHECK_S
        if self.stalled_s >= STALL_AFTER_S:
            log.error("no reading handled for %.0f s with messages waiting %s: exiting for a restart",
                      self.stalled_s, {p: n for p, n in waiting.items() if n > 0})
            await app.crash(RuntimeError("the stream worker stopped fetching"))

    # --- the deadman -------------------------------------------------------------------------------

    def lag(self, partition: int) -> int | None:
        """Messages of this meter.readings partition the broker has and the worker has not handled.

        None when unknown (not assigned, or no fetch answered yet).
        """
        if partition not in self.assigned:
            return None
        consumer = self.app.consumer
        tp = TP(self.readings_topic_name, partition)
        try:
            highwater = consumer.highwater(tp)  # from the last fetch response
        except AssertionError:
            # Revoked by a rebalance still under way (``assigned`` is rebuilt after it): unknown.
            # Raised from the deadman's timer, it crashed a worker of bench.soak.
            return None
        position = self.next_offset.get(partition)
        if position is None:
            # No message handled since the rebalance: reading starts at the committed offset, where
            # Faust sought the partition. (Faust keeps it in a private attribute; the consumer's
            # public position is the fetch position, past records fetched and not handled yet.)
            position = getattr(consumer, "_committed_offset", {}).get(tp)
        if highwater is None or position is None:
            return None
        return max(0, highwater - position)

    def caught_up(self, partition: int) -> bool:
        """The worker has handled every message of this meter.readings partition the broker has."""
        return self.lag(partition) == 0

    async def on_deadman_timer(self) -> None:
        # Readings flowing run the deadman on meter time; this is for when they stop.
        if wall_ms() - self.deadman_ran_ms >= self.deadman_interval_ms // 2:
            await self.check_silence()

    async def check_silence(self) -> None:
        await self.store()  # a slot closed for silence must have every judged reading in it first
        now = wall_ms()
        engine = self.engine
        self.deadman_ran_ms = now
        # Each partition's next run is an interval of its own meter time on: partitions are not read
        # in step (a worker catching up may read one partition's backlog, then the next one's).
        interval = self.deadman_interval_ms
        self.next_deadman_ms = {stream: at + interval for stream, at in engine.progress_ms.items()}
        lags = {partition: self.lag(partition) for partition in self.assigned}
        outcome = engine.check_silence(now, lambda partition: lags.get(partition) == 0)
        for partition, lag in lags.items():
            if lag is not None:
                CONSUMER_LAG.labels(str(partition)).set(lag)
        after = [await self.publish(outcome.events)] if outcome.events else []
        for meter in outcome.changed_meters:
            await self.write_state(meter, after)
        if outcome.fleet_changed:
            await self.write_fleet(after)
        # The same runs close the slots of meters that went quiet after their slot ended, on the
        # least advanced partition's time: a slot whose next reading is still queued stays open.
        times = engine.stream_times(now, self.caught_up)
        if times and (closed := self.slots.close_due(min(at for at, _ in times.values()))):
            await self.publish_slots(closed)


#: How long a rebalance or a stop waits for the state records still queued behind their alert events.
STATE_SENDS_TIMEOUT_S = 10.0

#: Net new container objects between two young collections (CPython's default is 700). The ingest
#: path allocates a few objects per reading and frees them at once; at 700 it collected about 30
#: times a second for nothing (docs/pipeline.md).
GC_YOUNG_THRESHOLD = 50_000


def freeze_long_lived() -> None:
    """Takes what lives as long as the assignment (the engine's state, the table, Faust's and the
    clients' objects) out of the collector's sight, and collects the young generation less often.

    Without it, a full collection walks every one of them, pausing the event loop and every reading
    queued behind it (docs/pipeline.md). Unfrozen first, so what the previous assignment left in
    cycles is collected now; objects made later are collected as usual.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def build_worker(settings: Settings, app_id: str, **options: float | bool) -> StreamWorker:
    return StreamWorker(settings, app_id, **options)


def prepare_influx(settings: Settings) -> None:
    """Creates the InfluxDB database and its policies (v1 API) if InfluxDB answers; the writer retries otherwise."""
    if settings.influx.api != "v1":
        return
    from quartier.influx import InfluxError, ensure_database

    try:
        ensure_database(settings)
    except InfluxError as error:
        log.error("InfluxDB database %s not prepared (%s); points wait in the writer's buffer",
                  settings.influx.database, error)
