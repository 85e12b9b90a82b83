"""What every "over the day / month" kind shares, whatever it measures (energy or spending).

*Above* kinds compare the period so far with the maximum, on every reading, and resolve when the
period ends (the total starts again from zero). *Below* kinds can only be judged once the period
is over (a day is always below its minimum at 8 in the morning): a whole period that closed below
the minimum raises, with the period's end as the episode start; the episode stays raised while
further periods close below, and resolves as soon as the current period reaches the minimum.
A period is *whole* when its baseline was taken at the rollover from the period before; a meter
first seen mid-period (or whose state was lost) has a partial period, which *below* never judges.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from quartier.events import AlertEvent, MeterReading
from streams.alerting.lifecycle import Lifecycle

if TYPE_CHECKING:
    from streams.alerting.meter import MeterMonitor
    from streams.alerting.rules import CompiledRules


class PeriodKind(Lifecycle):
    __slots__ = ()
    monthly: ClassVar[bool] = False

    def current(self, m: MeterMonitor) -> float:
        raise NotImplementedError

    def closed(self, m: MeterMonitor) -> float:
        raise NotImplementedError

    def limit(self, rules: CompiledRules) -> float:
        raise NotImplementedError

    def ended(self, m: MeterMonitor) -> bool:
        """Did the rollover that just happened end this kind's period?"""
        return m.month_ended if self.monthly else True

    def whole(self, m: MeterMonitor) -> bool:
        return m.closed_month_whole if self.monthly else m.closed_day_whole

    def end_ms(self, m: MeterMonitor) -> int:
        return m.closed_month_end_ms if self.monthly else m.closed_day_end_ms

    def partial_detail(self, m: MeterMonitor) -> dict[str, float]:
        period = m.durable.month if self.monthly else m.durable.day
        return {"partial": 0.0 if period is None or period.complete else 1.0}


class PeriodAbove(PeriodKind):
    __slots__ = ()

    def clear_limit(self, rules: CompiledRules) -> float:
        raise NotImplementedError

    def detail(self, owner: object, resolving: bool) -> dict[str, float]:
        return self.partial_detail(owner)  # type: ignore[arg-type]

    def on_reading(self, m: MeterMonitor, r: MeterReading, t: int) -> AlertEvent | None:
        value = self.current(m)
        rules = m.rules
        limit = self.limit(rules)
        return self.step(m, t, value > limit, value <= self.clear_limit(rules), value, limit)

    def on_period_end(self, m: MeterMonitor, t: int) -> AlertEvent | None:
        if self.state.open is None or not self.ended(m):
            return None
        return self.resolve(m, t, self.closed(m), {"period_ended": 1.0})


class PeriodBelow(PeriodKind):
    __slots__ = ()

    def on_reading(self, m: MeterMonitor, r: MeterReading, t: int) -> AlertEvent | None:
        if self.state.open is None:
            return None
        value = self.current(m)
        if value >= self.limit(m.rules):
            return self.clear(m, t, value)
        return None

    def on_period_end(self, m: MeterMonitor, t: int) -> AlertEvent | None:
        if not self.ended(m) or not self.whole(m):
            return None
        value = self.closed(m)
        limit = self.limit(m.rules)
        if value < limit:
            return self.raise_at(m, t, self.end_ms(m), value, limit)
        return None
