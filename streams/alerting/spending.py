"""Spending over the local day and month, above or below the household's limits.

Spending is priced per tariff register: each register's index difference since the day's baseline
(EASF01..EASFnn, so peak and off-peak, or each Tempo colour, are counted apart by the meter itself)
times that register's price in force that day (prices change at local midnight on their effective
dates, :mod:`quartier.tariffs`). The month's spending is its closed days' spending, carried in the
durable state at each day boundary, plus the current day's.

**On pace.** With ``spending_pace`` on, an *above* limit also raises when the period is on pace to
exceed it: the spending so far, extrapolated linearly over the rest of the period, is above the
limit. The projection is only trusted once a quarter of the period has passed (06:00 for a day,
about the 8th for a month). It is one episode either way: ``detail["on_pace"]`` is 1 when it was
raised on the projection before the limit itself was reached, ``detail["projected_eur"]`` the
projection. Such an episode resolves if the projection falls back below the clear threshold before
the limit is reached, else when the period ends.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from quartier.events import AlertEvent, MeterReading
from streams.alerting.period_kinds import PeriodAbove, PeriodBelow

if TYPE_CHECKING:
    from streams.alerting.meter import MeterMonitor
    from streams.alerting.rules import CompiledRules

#: Share of a period that must have passed before its spending is extrapolated.
PACE_MIN_SHARE = 0.25


class SpendingAbove(PeriodAbove):
    __slots__ = ("spent", "projected")

    def __init__(self, state: object) -> None:
        super().__init__(state)  # type: ignore[arg-type]
        self.spent = 0.0
        self.projected = 0.0

    def on_reading(self, m: MeterMonitor, r: MeterReading, t: int) -> AlertEvent | None:
        spent = self.current(m)
        projected = spent
        rules = m.rules
        if rules.spending_pace:
            period = m.durable.month if self.monthly else m.durable.day
            assert period is not None
            elapsed = t - period.base_ms
            if elapsed > 0 and elapsed >= PACE_MIN_SHARE * (period.end_ms - period.start_ms):
                projected = spent * (period.end_ms - period.base_ms) / elapsed
        self.spent = spent
        self.projected = projected
        limit = self.limit(rules)
        return self.step(m, t, projected > limit, projected <= self.clear_limit(rules), spent, limit)

    def detail(self, owner: object, resolving: bool) -> dict[str, float]:
        m: MeterMonitor = owner  # type: ignore[assignment]
        detail = self.partial_detail(m)
        if not resolving:
            detail["projected_eur"] = round(self.projected, 2)
            detail["on_pace"] = 1.0 if self.spent <= self.limit(m.rules) else 0.0
        return detail


class SpendingDayAbove(SpendingAbove):
    kind = "spending_day_above"
    __slots__ = ()

    def current(self, m: MeterMonitor) -> float:
        return m.day_eur

    def closed(self, m: MeterMonitor) -> float:
        return m.closed_day_eur

    def limit(self, rules: CompiledRules) -> float:
        return rules.spending_day_max  # type: ignore[return-value]

    def clear_limit(self, rules: CompiledRules) -> float:
        return rules.spending_day_max_clear


class SpendingMonthAbove(SpendingAbove):
    kind = "spending_month_above"
    monthly = True
    __slots__ = ()

    def current(self, m: MeterMonitor) -> float:
        return m.month_eur

    def closed(self, m: MeterMonitor) -> float:
        return m.closed_month_eur

    def limit(self, rules: CompiledRules) -> float:
        return rules.spending_month_max  # type: ignore[return-value]

    def clear_limit(self, rules: CompiledRules) -> float:
        return rules.spending_month_max_clear


class SpendingDayBelow(PeriodBelow):
    kind = "spending_day_below"
    __slots__ = ()

    def current(self, m: MeterMonitor) -> float:
        return m.day_eur

    def closed(self, m: MeterMonitor) -> float:
        return m.closed_day_eur

    def limit(self, rules: CompiledRules) -> float:
        return rules.spending_day_min  # type: ignore[return-value]


class SpendingMonthBelow(PeriodBelow):
    kind = "spending_month_below"
    monthly = True
    __slots__ = ()

    def current(self, m: MeterMonitor) -> float:
        return m.month_eur

    def closed(self, m: MeterMonitor) -> float:
        return m.closed_month_eur

    def limit(self, rules: CompiledRules) -> float:
        return rules.spending_month_min  # type: ignore[return-value]
