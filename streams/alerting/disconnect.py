"""Meter disconnected (a deadman per meter) and ingest down (one operator alert for a fleet outage).

**Deadman.** Each meter's reading interval is learned from its own readings (a moving average that a
single long gap cannot drag far). A meter is disconnected once it has been silent for
``max(10 × its interval, 30 s, for_s)``; the episode starts at the last reading plus that limit, so
a replay computes the same start and id. Its next reading resolves it. A meter never seen has no
interval and no last reading, so it never alerts.

**Inhibition.** When the whole ingest stops (no reading from any meter for ``ingest_silence_s``, 15 s,
shorter than any meter's deadman) or when at least half of the known meters are silent at once,
the engine raises one ``ingest_down`` alert with no meter and suppresses every per-meter disconnect.
When readings come back it resolves, and the silence of every meter is counted again from that
moment, so a fleet recovering over a few seconds produces no per-meter storm either. Inhibition
needs a fleet to compare with: with fewer than ``inhibit_min_meters`` known meters there is none.
Judged per engine, i.e. per worker and its partitions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from quartier.events import AlertEvent, AlertKind, alert_id
from streams.alerting.lifecycle import Lifecycle
from streams.alerting.state import KindState

if TYPE_CHECKING:
    from streams.alerting.meter import MeterMonitor


class Disconnected(Lifecycle):
    kind = "disconnected"
    __slots__ = ("last_seen_ms", "limit_ms", "cadence_ms")

    def __init__(self, state: KindState) -> None:
        super().__init__(state)
        self.last_seen_ms = -1
        self.limit_ms = 0
        self.cadence_ms = 0.0

    def on_silence(self, m: MeterMonitor, now: int, since: int, limit_ms: int) -> AlertEvent | None:
        """The meter has been silent since ``since`` for at least ``limit_ms``."""
        self.last_seen_ms = since
        self.limit_ms = limit_ms
        self.cadence_ms = m.cadence_ms
        return self.raise_at(m, now, since + limit_ms, (now - since) / 1000, limit_ms / 1000)

    def on_back(self, m: MeterMonitor, t: int, previous_ms: int) -> AlertEvent | None:
        """A reading arrived while the episode is open."""
        return self.clear(m, t, (t - previous_ms) / 1000 if previous_ms >= 0 else 0.0)

    def detail(self, owner: object, resolving: bool) -> dict[str, float]:
        if resolving:
            return {}
        return {"last_seen_ms": float(self.last_seen_ms), "cadence_s": round(self.cadence_ms / 1000, 3)}


@dataclass(frozen=True, slots=True)
class OperatorRules:
    """Lifecycle settings for operator-level alerts: raised at once, flapping held for 5 minutes."""

    for_ms: int = 0
    repeat_ms: int = 0
    flap_max: int = 3
    flap_window_ms: int = 3_600_000
    flap_hold_ms: int = 300_000


class Operator:
    """The owner of fleet-level episodes (no meter, no zone)."""

    def __init__(self, clock: Callable[[], int]) -> None:
        self.rules = OperatorRules()
        self.changed = False
        self.clock = clock

    def event(
        self, kind: AlertKind, state: str, start_ms: int, value: float, threshold: float, at_ms: int,
        detail: dict[str, float],
    ) -> AlertEvent:
        return AlertEvent(
            id=alert_id(None, kind, start_ms), meter=None, zone=None, kind=kind, state=state,  # type: ignore[arg-type]
            value=float(value), threshold=float(threshold), at_ms=at_ms, episode_start_ms=start_ms,
            produced_ms=self.clock(), detail=detail,
        )


class IngestDown(Lifecycle):
    kind = "ingest_down"
    __slots__ = ("silent", "known")

    def __init__(self, state: KindState) -> None:
        super().__init__(state)
        self.silent = 0
        self.known = 0

    def detail(self, owner: object, resolving: bool) -> dict[str, float]:
        return {"silent_meters": float(self.silent), "known_meters": float(self.known)}
