"""Energy over the local day, above or below the household's limits.

The day's energy is the withdrawn index (EAST) now minus its value at the day's baseline reading,
never integrated power: it is exact whatever readings are missing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from streams.alerting.period_kinds import PeriodAbove, PeriodBelow

if TYPE_CHECKING:
    from streams.alerting.meter import MeterMonitor
    from streams.alerting.rules import CompiledRules


class EnergyDayAbove(PeriodAbove):
    kind = "energy_day_above"
    __slots__ = ()

    def current(self, m: MeterMonitor) -> float:
        return m.day_wh

    def closed(self, m: MeterMonitor) -> float:
        return m.closed_day_wh

    def limit(self, rules: CompiledRules) -> float:
        return rules.energy_day_max  # type: ignore[return-value]

    def clear_limit(self, rules: CompiledRules) -> float:
        return rules.energy_day_max_clear


class EnergyDayBelow(PeriodBelow):
    kind = "energy_day_below"
    __slots__ = ()

    def current(self, m: MeterMonitor) -> float:
        return m.day_wh

    def closed(self, m: MeterMonitor) -> float:
        return m.closed_day_wh

    def limit(self, rules: CompiledRules) -> float:
        return rules.energy_day_min  # type: ignore[return-value]
