"""Fuse-limit warning: tell the household before the meter cuts the supply for overload.

A Linky meter does not cut the moment the apparent power passes the cut-off power (PCOUP): it filters
the load, so a kettle's inrush never trips it and a sustained overload does, sooner the larger it is.
We model its documented low-pass filter, per one-second step::

    y = B · x² + (1 − B) · y_previous,   x = SINSTS / PCOUP,   B = 0.008

and assume it cuts when the filtered load ``y`` reaches 1, i.e. when the quadratic mean of the recent
load reaches PCOUP. This is our assumption, not Enedis's published trip point (reported near 1.3);
it errs towards warning early, which is the point of a warning. With a steady load ``x > 1`` from a
filter at ``y``, the cut comes after ``ln((x² − 1) / (x² − y)) / ln(1 − B)`` seconds: about 3 minutes
at 110 % of PCOUP from a quiet house, 28 s at 200 %.

The warning is raised when the load has been over PCOUP for ``for_s`` or sooner, as soon as waiting
``for_s`` would leave less than that before the cut; it carries ``detail["seconds_to_cut"]``. It
clears when the load is back at or below PCOUP less the hysteresis; the resolved event says whether
the filter reached the trip level meanwhile (``detail["likely_cut"]``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from quartier.events import AlertEvent, MeterReading
from streams.alerting.lifecycle import Lifecycle
from streams.alerting.state import KindState

if TYPE_CHECKING:
    from streams.alerting.meter import MeterMonitor

FILTER_B = 0.008
_KEEP_1S = 1.0 - FILTER_B
_LOG_KEEP = math.log(_KEEP_1S)
#: A meter first seen while overloaded is assumed close to the trip level already (warn, don't guess).
FIRST_SEEN_LOAD_CAP = 0.9


def seconds_to_cut(ratio: float, load: float) -> float:
    """Seconds until the filtered load reaches the trip level if ``ratio`` (SINSTS/PCOUP) persists."""
    square = ratio * ratio
    if load >= 1.0:
        return 0.0
    if square <= 1.0:
        return math.inf
    return math.log((square - 1.0) / (square - load)) / _LOG_KEEP


class FuseLimit(Lifecycle):
    kind = "fuse_limit"
    __slots__ = ("load", "last_t", "to_cut_s", "over_since", "tripped", "cutoff_va")

    def __init__(self, state: KindState) -> None:
        super().__init__(state)
        self.load = -1.0  # the filter's state y; volatile, rebuilt from the readings
        self.last_t = -1
        self.to_cut_s = math.inf
        self.over_since = -1
        self.tripped = False
        self.cutoff_va = 0

    def on_reading(self, m: MeterMonitor, r: MeterReading, t: int) -> AlertEvent | None:
        cutoff_va = r.cutoff_kva * 1000
        ratio = r.drawn_va / cutoff_va
        square = ratio * ratio
        load = self.load
        if load < 0:
            load = square if square < FIRST_SEEN_LOAD_CAP else FIRST_SEEN_LOAD_CAP
        elif t - self.last_t == 1000:
            load = square + (load - square) * _KEEP_1S
        else:
            load = square + (load - square) * math.exp(_LOG_KEEP * (t - self.last_t) / 1000)
        self.load = load
        self.last_t = t
        rules = m.rules
        if ratio > 1.0:
            self.cutoff_va = cutoff_va
            if self.over_since < 0:
                self.over_since = t
            if load >= 1.0:
                self.tripped = True
            self.to_cut_s = to_cut = seconds_to_cut(ratio, load)
            return self.step(m, t, True, False, r.drawn_va, cutoff_va, urgent=to_cut * 1000 <= rules.for_ms)
        self.over_since = -1
        off = ratio <= 1.0 - rules.hysteresis
        if off and self.pending_since is None and self.state.open is None:
            self.tripped = False
            return None  # the common case, without the call
        event = self.step(m, t, False, off, r.drawn_va, cutoff_va)
        if off and self.state.open is None:
            self.tripped = False
        return event

    def detail(self, owner: object, resolving: bool) -> dict[str, float]:
        if resolving:
            tripped, self.tripped = self.tripped, False
            return {"likely_cut": 1.0 if tripped else 0.0}
        over_s = (self.last_t - self.over_since) / 1000 if self.over_since >= 0 else 0.0
        return {
            "seconds_to_cut": round(self.to_cut_s, 1),
            "seconds_over": over_s,
            "cutoff_va": float(self.cutoff_va),
            "filtered_load": round(self.load, 4),
        }
