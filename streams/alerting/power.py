"""Power above / below the household's limits, from the apparent power drawn (SINSTS).

Linky's standard mode reports apparent power in VA, not active power; for a household's appliances
the two are close (power factor near 1), so the limits the app calls "W" are compared with VA.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from quartier.events import AlertEvent, MeterReading
from streams.alerting.lifecycle import Lifecycle

if TYPE_CHECKING:
    from streams.alerting.meter import MeterMonitor


class PowerAbove(Lifecycle):
    kind = "power_above"
    __slots__ = ()

    def on_reading(self, m: MeterMonitor, r: MeterReading, t: int) -> AlertEvent | None:
        rules = m.rules
        va = r.drawn_va
        if va <= rules.power_max_clear and self.pending_since is None and self.state.open is None:
            return None  # the common case, without the call
        return self.step(m, t, va > rules.power_max, va <= rules.power_max_clear, va, rules.power_max)


class PowerBelow(Lifecycle):
    kind = "power_below"
    __slots__ = ()

    def on_reading(self, m: MeterMonitor, r: MeterReading, t: int) -> AlertEvent | None:
        rules = m.rules
        va = r.drawn_va
        return self.step(m, t, va < rules.power_min, va >= rules.power_min_clear, va, rules.power_min)
