"""One meter's alerting: its rules, its durable state, and the volatile state rebuilt from readings.

The per-reading path is kept to attribute reads and integer comparisons: no allocation unless an
event is emitted, calendar arithmetic only at a day boundary, and spending recomputed only when the
withdrawn index moved (a household's index moves every few seconds, not every reading).
"""

from __future__ import annotations

from datetime import date
from typing import Callable, NamedTuple

from quartier import tariffs
from quartier.events import AlertEvent, AlertKind, MeterReading, alert_id
from streams.alerting.disconnect import Disconnected
from streams.alerting.energy import EnergyDayAbove, EnergyDayBelow
from streams.alerting.fuse import FuseLimit
from streams.alerting.lifecycle import Lifecycle
from streams.alerting.periods import day_bounds, month_bounds
from streams.alerting.power import PowerAbove, PowerBelow
from streams.alerting.rules import CompiledRules
from streams.alerting.spending import SpendingDayAbove, SpendingDayBelow, SpendingMonthAbove, SpendingMonthBelow
from streams.alerting.state import DayState, KindState, MeterDurable, MonthState

KINDS: dict[str, type[Lifecycle]] = {
    cls.kind: cls
    for cls in (
        PowerAbove, PowerBelow, FuseLimit, EnergyDayAbove, EnergyDayBelow, SpendingDayAbove, SpendingDayBelow,
        SpendingMonthAbove, SpendingMonthBelow, Disconnected,
    )
}


class Outcome(NamedTuple):
    """What one input did: events to publish, whether to write the meter's durable state, a problem."""

    events: list[AlertEvent] | tuple[()]
    changed: bool
    # Something about the input the engine could not use (named field and why); reported once per
    # meter and local day, the reading's other checks still ran.
    problem: str | None = None


NOTHING = Outcome((), False, None)


def enabled_kinds(rules: CompiledRules | None) -> list[str]:
    if rules is None:
        return []
    on = {
        "power_above": rules.power_max is not None,
        "power_below": rules.power_min is not None,
        "fuse_limit": rules.fuse_warning,
        "energy_day_above": rules.energy_day_max is not None,
        "energy_day_below": rules.energy_day_min is not None,
        "spending_day_above": rules.spending_day_max is not None,
        "spending_day_below": rules.spending_day_min is not None,
        "spending_month_above": rules.spending_month_max is not None,
        "spending_month_below": rules.spending_month_min is not None,
        "disconnected": rules.disconnect,
    }
    return [kind for kind in KINDS if on[kind]]


def day_prices(tariff: tariffs.TariffOption, registers: int, day: date) -> tuple[float, ...]:
    """EUR per Wh of each register on a local day (the household app prices with the same function)."""
    return tariffs.day_prices_eur_per_wh(tariff, registers, day)


class MeterMonitor:
    __slots__ = (
        "meter", "zone", "rules", "durable", "changed", "clock", "stream", "last_seen_ms", "restored_ms", "cadence_ms",
        "stale_readings", "instant_checks", "period_checks", "disconnected", "day_end_ms",
        "day_base_ms", "spend", "priced_wh", "day_wh", "day_eur", "month_eur", "closed_day_wh", "closed_day_eur",
        "closed_day_whole", "closed_day_end_ms", "month_ended", "closed_month_eur", "closed_month_whole",
        "closed_month_end_ms", "problem", "problem_day_end_ms",
    )

    def __init__(self, meter: str, durable: MeterDurable, clock: Callable[[], int]) -> None:
        self.meter = meter
        self.zone: str | None = None
        self.rules: CompiledRules | None = None
        self.durable = durable
        self.changed = False
        self.clock = clock
        self.stream = 0  # the ordered stream (partition) its readings come on: its deadman's clock
        self.last_seen_ms = -1
        self.restored_ms = -1  # when a durable state was restored for a meter not yet seen again
        self.cadence_ms = float(durable.cadence_ms)
        self.stale_readings = 0
        self.instant_checks: tuple[PowerAbove | PowerBelow | FuseLimit, ...] = ()
        self.period_checks: tuple = ()
        self.disconnected: Disconnected | None = None
        self.spend = False
        self.day_wh = 0
        self.day_eur = 0.0
        self.month_eur = 0.0
        self.closed_day_wh = 0
        self.closed_day_eur = 0.0
        self.closed_day_whole = False
        self.closed_day_end_ms = 0
        self.month_ended = False
        self.closed_month_eur = 0.0
        self.closed_month_whole = False
        self.closed_month_end_ms = 0
        self.problem: str | None = None
        self.problem_day_end_ms = -1
        self._sync_period()

    # --- events -----------------------------------------------------------------------------

    def event(
        self, kind: AlertKind, state: str, start_ms: int, value: float, threshold: float, at_ms: int,
        detail: dict[str, float],
    ) -> AlertEvent:
        return AlertEvent(
            id=alert_id(self.meter, kind, start_ms), meter=self.meter, zone=self.zone, kind=kind,
            state=state, value=float(value), threshold=float(threshold), at_ms=at_ms,  # type: ignore[arg-type]
            episode_start_ms=start_ms, produced_ms=self.clock(), detail=detail,
        )

    # --- rules and state --------------------------------------------------------------------

    def apply_rules(self, rules: CompiledRules | None, at_ms: int) -> list[AlertEvent]:
        """New preferences: they apply from the next reading; a kind switched off resolves now."""
        old = self.rules
        self.rules = rules
        events: list[AlertEvent] = []
        enabled = enabled_kinds(rules)
        durable = self.durable
        for kind, state in durable.kinds.items():
            if state.open is not None and kind not in enabled:
                lifecycle = self._lifecycle(kind)
                event = lifecycle.resolve(self, at_ms, state.open.value, {"rule_removed": 1.0})
                if event is not None:
                    events.append(event)
        if old is not None and rules is not None and (old.tz != rules.tz or old.tariff != rules.tariff):
            # Day and month are measured again from the next reading: a partial period.
            durable.day = None
            durable.month = None
            self.changed = True
        self._bind(enabled)
        return events

    def restore(self, durable: MeterDurable, at_ms: int) -> None:
        self.durable = durable
        self.cadence_ms = float(durable.cadence_ms)
        if self.last_seen_ms < 0:
            self.restored_ms = at_ms
        self._bind(enabled_kinds(self.rules), keep=False)

    def _lifecycle(self, kind: str) -> Lifecycle:
        state = self.durable.kinds.get(kind)
        if state is None:
            state = self.durable.kinds[kind] = KindState()
        return KINDS[kind](state)

    def _bind(self, enabled: list[str], keep: bool = True) -> None:
        """(Re)build the checks for the enabled kinds; existing ones keep their volatile state."""
        current: dict[str, Lifecycle] = {c.kind: c for c in (*self.instant_checks, *self.period_checks)}
        if self.disconnected is not None:
            current["disconnected"] = self.disconnected
        checks: dict[str, Lifecycle] = {}
        for kind in enabled:
            check = current.get(kind) if keep else None
            if check is None or check.state is not self.durable.kinds.get(kind):
                check = self._lifecycle(kind)
            check.pending_since = None  # a condition pending under the old thresholds starts again
            checks[kind] = check
        self.instant_checks = tuple(c for c in checks.values() if isinstance(c, (PowerAbove, PowerBelow, FuseLimit)))
        self.period_checks = tuple(c for c in checks.values() if hasattr(c, "on_period_end"))
        self.disconnected = checks.get("disconnected")  # type: ignore[assignment]
        rules = self.rules
        self.spend = rules is not None and rules.needs_spending
        self.changed = self.changed or any(k not in current for k in checks)
        self._sync_period()

    def _sync_period(self) -> None:
        day = self.durable.day
        self.day_end_ms = day.end_ms if day is not None else -1
        self.day_base_ms = day.base_ms if day is not None else -1
        self.priced_wh = -1

    # --- the per-reading path ---------------------------------------------------------------

    def on_reading(self, r: MeterReading) -> Outcome | None:
        t = r.time_ms
        last = self.last_seen_ms
        if t <= last:
            self.stale_readings += 1  # a duplicate or out-of-order frame: already accounted for
            return None
        self.zone = r.zone
        if last >= 0:
            # Learn the meter's own cadence; a long gap moves the average by a bounded step only.
            gap = t - last
            cadence = self.cadence_ms
            if cadence <= 0:
                self.cadence_ms = gap
            else:
                cap = 4 * cadence
                self.cadence_ms = cadence + ((gap if gap < cap else cap) - cadence) * 0.125
        self.last_seen_ms = t
        if self.rules is None:
            return None
        self.changed = False
        events: list[AlertEvent] | None = None
        disconnected = self.disconnected
        if disconnected is not None and disconnected.state.open is not None:
            event = disconnected.on_back(self, t, last)
            if event is not None:
                events = [event]
        for check in self.instant_checks:
            event = check.on_reading(self, r, t)
            if event is not None:
                if events is None:
                    events = [event]
                else:
                    events.append(event)
        if self.period_checks:
            if t >= self.day_end_ms:
                events = self._roll(r, t, events)
            if t >= self.day_base_ms:  # replayed readings older than the baseline are already counted
                moved = r.withdrawn_wh != self.priced_wh
                if moved:
                    self._measure(r)
                for check in self.period_checks:
                    # Exact shortcut: with the index unchanged, a period total cannot move, and the
                    # projection of spending only falls with time, so an idle check cannot turn on.
                    if moved or check.pending_since is not None or check.state.open is not None:
                        event = check.on_reading(self, r, t)
                        if event is not None:
                            if events is None:
                                events = [event]
                            else:
                                events.append(event)
        problem = self.problem
        if problem is not None:
            self.problem = None
        if events is None and not self.changed and problem is None:
            return None
        return Outcome(events or (), self.changed, problem)

    def _measure(self, r: MeterReading) -> None:
        day = self.durable.day
        assert day is not None
        self.priced_wh = r.withdrawn_wh
        self.day_wh = r.withdrawn_wh - day.base_wh
        if self.spend:
            spent = self._spent(r, day)
            if spent is None:
                return
            self.day_eur = spent
            month = self.durable.month
            self.month_eur = spent + (month.carried_eur if month is not None else 0.0)

    def _spent(self, r: MeterReading, day: DayState) -> float | None:
        """EUR spent since the day's baseline, register by register at the day's prices."""
        prices = day.prices
        base = day.base_registers
        registers = r.withdrawn_wh_by_register
        n = len(prices)
        if len(base) < n:
            return None  # the baseline itself had no registers: reported when it was taken
        if len(registers) < n:
            if n == 1:  # base tariff: the total index is the one register
                return tariffs.spent_eur((r.withdrawn_wh,), base, prices)
            self._report(
                f"withdrawn_wh_by_register: the {self.rules.tariff.value} tariff prices {n} registers, "  # type: ignore[union-attr]
                f"the reading has {len(registers)}; spending not evaluated for meter {self.meter}",
                day.end_ms,
            )
            return None
        return tariffs.spent_eur(registers, base, prices)

    def _report(self, problem: str, day_end_ms: int) -> None:
        if self.problem_day_end_ms != day_end_ms:
            self.problem_day_end_ms = day_end_ms
            self.problem = problem

    def _baseline_registers(self, r: MeterReading, n: int) -> tuple[int, ...]:
        registers = r.withdrawn_wh_by_register
        if len(registers) >= n:
            return tuple(registers[:n])
        if n == 1:
            return (r.withdrawn_wh,)
        return ()

    def _roll(self, r: MeterReading, t: int, events: list[AlertEvent] | None) -> list[AlertEvent] | None:
        """The first reading of a new local day (or the first reading at all): close and rebase."""
        rules = self.rules
        assert rules is not None
        durable = self.durable
        old_day = durable.day
        old_month = durable.month
        start, end, local_day = day_bounds(t, rules.tz)
        n = rules.registers
        registers = self._baseline_registers(r, n)
        prices = day_prices(rules.tariff, n, local_day)
        closing = old_day is not None and old_day.end_ms <= t and r.withdrawn_wh >= old_day.base_wh
        self.month_ended = False
        if closing:
            assert old_day is not None
            self.closed_day_wh = r.withdrawn_wh - old_day.base_wh
            self.closed_day_eur = (self._spent(r, old_day) or 0.0) if self.spend else 0.0
            # Whole: measured from its own start to the next day's first reading, without a gap day.
            self.closed_day_whole = old_day.complete and old_day.end_ms == start
            self.closed_day_end_ms = old_day.end_ms
            if old_month is not None:
                old_month.carried_eur += self.closed_day_eur
                if t >= old_month.end_ms:
                    month_start, month_end = month_bounds(t, rules.tz)
                    self.month_ended = True
                    self.closed_month_eur = old_month.carried_eur
                    self.closed_month_whole = old_month.complete and old_month.end_ms == month_start
                    self.closed_month_end_ms = old_month.end_ms
                    durable.month = MonthState(
                        start_ms=month_start, end_ms=month_end, base_ms=t, complete=old_month.end_ms == month_start
                    )
        if durable.month is None or not closing and t >= durable.month.end_ms:
            month_start, month_end = month_bounds(t, rules.tz)
            durable.month = MonthState(start_ms=month_start, end_ms=month_end, base_ms=t, complete=False)
        if self.spend and not registers:
            self._report(
                f"withdrawn_wh_by_register: the {rules.tariff.value} tariff prices {n} registers, the reading "
                f"has {len(r.withdrawn_wh_by_register)}; spending not evaluated today for meter {self.meter}",
                end,
            )
        durable.day = DayState(
            start_ms=start, end_ms=end, base_ms=t, base_wh=r.withdrawn_wh, base_registers=registers,
            prices=prices, complete=closing and old_day.end_ms == start,  # type: ignore[union-attr]
        )
        durable.cadence_ms = round(self.cadence_ms, 1)
        self.changed = True
        self._sync_period()
        self.day_wh = 0
        self.day_eur = 0.0
        self.month_eur = durable.month.carried_eur
        if closing:
            for check in self.period_checks:
                event = check.on_period_end(self, t)
                if event is not None:
                    if events is None:
                        events = [event]
                    else:
                        events.append(event)
        return events
