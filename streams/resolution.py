"""Consent to fine load curves: what is stored of each meter's readings, at the resolution its household chose.

The French regulator treats a fine load curve as needing consent, so a household chooses what is kept
(``quartier.events.ResolutionChosen`` on the compacted ``meter.resolution`` topic, folded here):

- ``1hz``: every reading, as a ``reading`` point in the raw policy (and, through the continuous query,
  the 10-minute rollup);
- ``30min`` / ``daily``: no 1 Hz point at all; one point per meter and 30-minute window (``reading_30m``)
  or UTC day (``reading_1d``) in the rollup policy, written when the meter's first reading of the next
  window arrives: mean and maximum apparent power drawn, mean injected, the last withdrawn and injected
  indexes of the window (energy over a range is a difference of two points, as with the rollup) and the
  number of readings it summarises.

A meter with no choice recorded gets ``privacy.default_resolution``. Alerts do not pass here: the
engine judges every reading of the live stream, which is not stored.

The open window of each meter lives in memory: after a restart it is rebuilt from the readings replayed
since the last commit, so a window that spans a restart is written again (same series and timestamp,
so the point is replaced) from the readings the new worker saw: its indexes are exact, its mean covers
those readings only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from quartier.events import MeterReading, Resolution, ResolutionChosen
from quartier.influx import ROLLUP_POLICY
from quartier.line_protocol import escape_tag
from streams.line_protocol import reading_line

#: The long-lived retention policy of the database layout.
COARSE_POLICY = ROLLUP_POLICY
COARSE_MEASUREMENT: dict[str, str] = {"30min": "reading_30m", "daily": "reading_1d"}
WINDOW_MS: dict[str, int] = {"30min": 30 * 60 * 1000, "daily": 24 * 3600 * 1000}


@dataclass
class _Window:
    resolution: str
    start_ms: int
    zone: str
    readings: int = 0
    drawn_va_sum: int = 0
    drawn_va_max: int = 0
    injected_va_sum: int = 0
    withdrawn_wh: int = 0
    injected_wh: int = 0

    def add(self, reading: MeterReading) -> None:
        self.readings += 1
        self.drawn_va_sum += reading.drawn_va
        self.drawn_va_max = max(self.drawn_va_max, reading.drawn_va)
        self.injected_va_sum += reading.injected_va
        self.withdrawn_wh = reading.withdrawn_wh
        self.injected_wh = reading.injected_wh

    def line(self, meter: str) -> str:
        n = self.readings
        return (
            f"{COARSE_MEASUREMENT[self.resolution]},meter={escape_tag(meter, 'meter')},zone={escape_tag(self.zone, 'zone')} "
            f"drawn_va={self.drawn_va_sum / n},drawn_va_max={self.drawn_va_max}i,injected_va={self.injected_va_sum / n},"
            f"withdrawn_wh={self.withdrawn_wh}i,injected_wh={self.injected_wh}i,readings={n}i {self.start_ms}"
        )


class ResolutionGate:
    """Folds the households' choices; turns readings into the points each meter's choice allows."""

    def __init__(
        self, default: Resolution = "1hz",
        detail_lines: Callable[[list[MeterReading]], list[str]] = lambda readings: [reading_line(r) for r in readings],
    ) -> None:
        self.default: Resolution = default
        # How 1 Hz readings become points (the worker's: only what changed, streams.line_protocol.ReadingLines).
        self.detail_lines = detail_lines
        self.chosen: dict[str, Resolution] = {}
        self._open: dict[str, _Window] = {}

    def choose(self, choice: ResolutionChosen) -> None:
        self.chosen[choice.meter] = choice.resolution
        window = self._open.get(choice.meter)
        if window is not None and window.resolution != choice.resolution:
            # The window in progress was collected under the old choice: it is not written.
            del self._open[choice.meter]

    def forget(self, meter: str) -> None:
        """A tombstone on ``meter.resolution``: the meter is back to the default."""
        self.chosen.pop(meter, None)
        self._open.pop(meter, None)

    def resolution_of(self, meter: str) -> Resolution:
        return self.chosen.get(meter, self.default)

    def lines(self, readings: list[MeterReading]) -> tuple[list[str], list[str]]:
        """(1 Hz lines for the raw policy, closed coarse windows' lines for the rollup policy)."""
        chosen, default = self.chosen, self.default
        if not chosen and default == "1hz":
            return self.detail_lines(readings), []
        detail: list[MeterReading] = []
        coarse: list[str] = []
        for reading in readings:
            resolution = chosen.get(reading.meter, default)
            if resolution == "1hz":
                detail.append(reading)
                continue
            span = WINDOW_MS[resolution]
            start = reading.time_ms - reading.time_ms % span
            window = self._open.get(reading.meter)
            if window is None or window.start_ms != start:
                if window is not None and start > window.start_ms:
                    coarse.append(window.line(reading.meter))
                elif window is not None:
                    continue  # a reading from a window already written (a replay): it is in there
                window = self._open[reading.meter] = _Window(resolution, start, reading.zone)
            window.add(reading)
        return self.detail_lines(detail), coarse
