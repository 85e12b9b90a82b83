"""The fleet's alert engine: routes readings and rule changes to meters, and runs the deadman.

Pure and single-threaded: no Kafka, no Faust, no clock of its own except ``clock`` (wall time, only
read to stamp ``produced_ms`` on the events it emits). The caller provides time to
:meth:`AlertEngine.check_silence`, which runs every few seconds.

**Silence is judged on the stream's own progress, not on the wall clock.** Readings come on ordered
streams (the worker's partitions); the engine keeps, per stream, the newest meter time consumed on it.
A meter is silent against that: a worker catching up on a backlog has not yet reached the readings
still queued, so it judges nothing by them, while a meter that stopped as the others on its stream go
on is seen. Where the caller says a stream is caught up (nothing newer in the log), its progress is
the wall time: there the silence is real.
"""

from __future__ import annotations

import time
from typing import Callable, Iterable, NamedTuple

from quartier.events import AlertEvent, AlertRules, MeterReading
from streams.alerting.disconnect import IngestDown, Operator
from streams.alerting.meter import NOTHING, MeterMonitor, Outcome
from streams.alerting.policy import FleetPolicy
from streams.alerting.rules import compile_rules
from streams.alerting.state import FleetDurable, MeterDurable


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class SilenceOutcome(NamedTuple):
    events: list[AlertEvent]
    changed_meters: list[str]  # meters whose durable state to write
    fleet_changed: bool  # the operator-level state changed: write it


class AlertEngine:
    def __init__(self, policy: FleetPolicy | None = None, clock: Callable[[], int] = wall_clock_ms) -> None:
        self.policy = policy or FleetPolicy()
        self.clock = clock
        self._meters: dict[str, MeterMonitor] = {}
        self._operator = Operator(clock)
        self.fleet = FleetDurable()
        self._ingest = IngestDown(self.fleet.ingest_down)
        self.watermark_ms = -1  # the latest meter time seen from any meter
        # Per stream (partition) of a known meter, the latest meter time consumed on it (-1: none yet).
        self.progress_ms: dict[int, int] = {}
        self.silence_floor_ms = -1  # silence before this (an ingest outage) counts for no meter
        self._inhibiting = False

    # --- inputs ----------------------------------------------------------------------------

    def on_reading(self, reading: MeterReading, stream: int = 0) -> Outcome:
        """One reading, consumed on ``stream`` (the partition: an ordered log of readings)."""
        t = reading.time_ms
        if t > self.watermark_ms:
            self.watermark_ms = t
        if t > self.progress_ms.get(stream, -1):
            self.progress_ms[stream] = t
        monitor = self._meters.get(reading.meter)
        if monitor is None:
            monitor = self._meters[reading.meter] = MeterMonitor(reading.meter, MeterDurable(), self.clock)
        monitor.stream = stream
        outcome = monitor.on_reading(reading)
        return NOTHING if outcome is None else outcome

    def on_readings(self, readings: Iterable[MeterReading], stream: int = 0) -> list[tuple[str, Outcome]]:
        """A batch consumed on ``stream``: the meters whose readings produced events, a write or a problem."""
        results = []
        meters = self._meters
        progress = self.progress_ms.get(stream, -1)
        for reading in readings:
            # on_reading, inlined: this loop is the ingest's hot path.
            t = reading.time_ms
            if t > progress:
                progress = t
            monitor = meters.get(reading.meter)
            if monitor is None:
                monitor = meters[reading.meter] = MeterMonitor(reading.meter, MeterDurable(), self.clock)
            monitor.stream = stream
            outcome = monitor.on_reading(reading)
            if outcome is not None:
                results.append((reading.meter, outcome))
        if progress >= 0:
            self.progress_ms[stream] = progress
            if progress > self.watermark_ms:
                self.watermark_ms = progress
        return results

    def set_rules(self, rules: AlertRules, at_ms: int | None = None) -> Outcome:
        """A household's new preferences (raises RuleError, naming the field, if they cannot apply).

        They apply from the meter's next reading; a kind switched off resolves its open episode at
        ``at_ms`` (default: the rules' ``updated_ms``, else the meter's last reading).
        """
        compiled = compile_rules(rules)
        monitor = self._monitor(rules.meter)
        if monitor.rules is not None and monitor.rules.record == rules:
            return NOTHING  # the compacted topic delivers the same record again after a restart
        monitor.changed = False
        events = monitor.apply_rules(compiled, self._at(monitor, at_ms, rules.updated_ms))
        return Outcome(events, monitor.changed) if events or monitor.changed else NOTHING

    def remove_rules(self, meter: str, at_ms: int | None = None) -> Outcome:
        """The household deleted its preferences (a tombstone): every open episode resolves."""
        monitor = self._meters.get(meter)
        if monitor is None or monitor.rules is None:
            return NOTHING
        monitor.changed = False
        events = monitor.apply_rules(None, self._at(monitor, at_ms, 0))
        return Outcome(events, monitor.changed) if events or monitor.changed else NOTHING

    def _at(self, monitor: MeterMonitor, at_ms: int | None, updated_ms: int) -> int:
        if at_ms is not None:
            return at_ms
        return updated_ms or max(monitor.last_seen_ms, 0)

    def _monitor(self, meter: str) -> MeterMonitor:
        monitor = self._meters.get(meter)
        if monitor is None:
            monitor = self._meters[meter] = MeterMonitor(meter, MeterDurable(), self.clock)
        return monitor

    # --- durable state ---------------------------------------------------------------------

    def durable(self, meter: str) -> MeterDurable | None:
        monitor = self._meters.get(meter)
        return None if monitor is None else monitor.durable

    def rules(self, meter: str) -> AlertRules | None:
        monitor = self._meters.get(meter)
        return None if monitor is None or monitor.rules is None else monitor.rules.record

    def restore(self, meter: str, durable: MeterDurable, at_ms: int, stream: int = 0) -> None:
        """Load a meter's durable state from the table after a restart.

        Its volatile state comes back with its next readings (on ``stream``); until then the deadman
        counts its silence from ``at_ms`` (it was seen before the restart, so it is not a meter never
        seen).
        """
        monitor = self._monitor(meter)
        monitor.stream = stream
        monitor.restore(durable, at_ms)
        self.progress_ms.setdefault(stream, -1)  # a stream to judge, though nothing consumed on it yet

    def restore_fleet(self, fleet: FleetDurable) -> None:
        self.fleet = fleet
        self._ingest = IngestDown(fleet.ingest_down)

    @property
    def meters(self) -> int:
        return len(self._meters)

    @property
    def stale_readings(self) -> int:
        return sum(m.stale_readings for m in self._meters.values())

    # --- the deadman -----------------------------------------------------------------------

    def check_silence(self, now_ms: int, caught_up: Callable[[int], bool] | None = None) -> SilenceOutcome:
        """Judge every known meter's silence against its stream's progress.

        A stream's progress is the latest meter time consumed on it; where ``caught_up(stream)`` says
        the consumer has reached the end of that stream's log, it is ``now_ms`` (wall time) at least,
        since nothing newer exists. Without ``caught_up`` every stream counts as caught up (the
        engine is fed live). The ingest is judged stopped (no reading from any meter for
        ``ingest_silence_s``) only when every stream is caught up: records still queued are not a
        stopped ingest.
        """
        policy = self.policy
        default_cadence_ms = policy.default_cadence_s * 1000
        floor = self.silence_floor_ms
        streams = self.stream_times(now_ms, caught_up)
        everywhere = all(live for _, live in streams.values())
        known = 0
        silent: list[tuple[MeterMonitor, int, int, int]] = []
        for monitor in self._meters.values():
            since = monitor.last_seen_ms
            if since < 0:
                since = monitor.restored_ms
                if since < 0:
                    continue  # never seen: never disconnected
            known += 1
            at = streams[monitor.stream][0]
            if since < floor:
                since = floor
            rules = monitor.rules
            cadence = monitor.cadence_ms or default_cadence_ms
            limit = max(policy.deadman_cadences * cadence, policy.deadman_min_s * 1000, rules.for_ms if rules else 0)
            if at - since >= limit:
                silent.append((monitor, at, since, int(limit)))

        operator = self._operator
        operator.changed = False
        events: list[AlertEvent] = []
        ingest = self._ingest
        stalled = (
            everywhere and self.watermark_ms >= 0 and now_ms - self.watermark_ms >= policy.ingest_silence_s * 1000
        )
        down = known >= policy.inhibit_min_meters and (stalled or len(silent) >= policy.ingest_silent_share * known)
        ingest.silent, ingest.known = len(silent), known
        reached = max((at for at, _ in streams.values()), default=now_ms)  # the furthest the fleet's time got
        if down:
            self._inhibiting = True
            if stalled:
                start = self.watermark_ms + int(policy.ingest_silence_s * 1000)
                value, threshold = (now_ms - self.watermark_ms) / 1000, policy.ingest_silence_s
            else:
                start, value, threshold = reached, len(silent) / known, policy.ingest_silent_share
            event = ingest.raise_at(operator, reached, start, value, threshold)
            if event is not None:
                events.append(event)
            return SilenceOutcome(events, [], operator.changed)

        if self._inhibiting:
            # The ingest is back: silence during the outage counts against no meter.
            self._inhibiting = False
            self.silence_floor_ms = floor = reached
        if ingest.state.open is not None:
            event = ingest.clear(operator, reached, len(silent) / known if known else 0.0)
            if event is not None:
                events.append(event)
        changed: list[str] = []
        for monitor, at, since, limit in silent:
            if since < floor:
                continue
            disconnected = monitor.disconnected
            if disconnected is None:
                continue
            monitor.changed = False
            event = disconnected.on_silence(monitor, at, since, limit)
            if event is not None:
                events.append(event)
            if monitor.changed:
                changed.append(monitor.meter)
        return SilenceOutcome(events, changed, operator.changed)

    def stream_times(
        self, now_ms: int, caught_up: Callable[[int], bool] | None
    ) -> dict[int, tuple[int, bool]]:
        """Per stream of a known meter: (the time its meters are judged at, whether it is caught up).

        A caught-up stream is judged at ``now_ms``; one still behind at the newest meter time consumed
        on it, but never beyond ``now_ms``: one meter with its clock far ahead must not make its
        neighbours look silent.
        """
        streams: dict[int, tuple[int, bool]] = {}
        for stream, at in self.progress_ms.items():
            live = caught_up is None or caught_up(stream)
            streams[stream] = (now_ms if live or at > now_ms else at, live)
        return streams
