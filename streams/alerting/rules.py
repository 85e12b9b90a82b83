"""A household's AlertRules, checked across fields and turned into what the per-reading path reads.

msgspec already validated each field while decoding; what only the engine can judge (a minimum above
its maximum, an unknown time zone) raises :class:`RuleError` naming the fields.
"""

from __future__ import annotations

from dataclasses import dataclass

from quartier.events import AlertRules
from quartier.tariffs import REGISTER_COUNT, TariffOption
from streams.alerting.periods import UnknownTimeZone, zone


class RuleError(ValueError):
    """AlertRules that cannot be applied; the message names the offending fields."""


@dataclass(frozen=True, slots=True)
class CompiledRules:
    record: AlertRules
    # Thresholds as the per-reading path compares them; None means the kind is off.
    power_max: float | None
    power_max_clear: float
    power_min: float | None
    power_min_clear: float
    energy_day_max: float | None
    energy_day_max_clear: float
    energy_day_min: float | None
    spending_day_max: float | None
    spending_day_max_clear: float
    spending_day_min: float | None
    spending_month_max: float | None
    spending_month_max_clear: float
    spending_month_min: float | None
    disconnect: bool
    fuse_warning: bool
    spending_pace: bool
    hysteresis: float
    for_ms: int
    repeat_ms: int
    flap_max: int
    flap_window_ms: int
    flap_hold_ms: int
    tz: str
    tariff: TariffOption
    registers: int  # registers the tariff prices (EASF01..EASFnn)

    @property
    def needs_day(self) -> bool:
        return any(
            x is not None
            for x in (
                self.energy_day_max, self.energy_day_min, self.spending_day_max, self.spending_day_min,
                self.spending_month_max, self.spending_month_min,
            )
        )

    @property
    def needs_spending(self) -> bool:
        return any(
            x is not None
            for x in (self.spending_day_max, self.spending_day_min, self.spending_month_max, self.spending_month_min)
        )


def _check_pair(rules: AlertRules, low: str, high: str) -> None:
    lo, hi = getattr(rules, low), getattr(rules, high)
    if lo is not None and hi is not None and lo >= hi:
        raise RuleError(f"{low} ({lo}) must be below {high} ({hi}) for meter {rules.meter}")


def compile_rules(rules: AlertRules) -> CompiledRules:
    for low, high in (
        ("power_min_w", "power_max_w"),
        ("energy_day_min_wh", "energy_day_max_wh"),
        ("spending_day_min_eur", "spending_day_max_eur"),
        ("spending_month_min_eur", "spending_month_max_eur"),
    ):
        _check_pair(rules, low, high)
    try:
        zone(rules.time_zone)
    except UnknownTimeZone as exc:
        raise RuleError(f"time_zone: {exc} for meter {rules.meter}") from None
    h = rules.hysteresis
    tariff = TariffOption(rules.tariff)

    def below(x: float | None) -> float:
        return x * (1 - h) if x is not None else 0.0

    def above(x: float | None) -> float:
        return x * (1 + h) if x is not None else 0.0

    return CompiledRules(
        record=rules,
        power_max=rules.power_max_w,
        power_max_clear=below(rules.power_max_w),
        power_min=rules.power_min_w,
        power_min_clear=above(rules.power_min_w),
        energy_day_max=rules.energy_day_max_wh,
        energy_day_max_clear=below(rules.energy_day_max_wh),
        energy_day_min=rules.energy_day_min_wh,
        spending_day_max=rules.spending_day_max_eur,
        spending_day_max_clear=below(rules.spending_day_max_eur),
        spending_day_min=rules.spending_day_min_eur,
        spending_month_max=rules.spending_month_max_eur,
        spending_month_max_clear=below(rules.spending_month_max_eur),
        spending_month_min=rules.spending_month_min_eur,
        disconnect=rules.disconnect,
        fuse_warning=rules.fuse_warning,
        spending_pace=rules.spending_pace,
        hysteresis=h,
        for_ms=round(rules.for_s * 1000),
        repeat_ms=round(rules.repeat_s * 1000),
        flap_max=rules.flap_max_episodes,
        flap_window_ms=round(rules.flap_window_s * 1000),
        flap_hold_ms=round(rules.flap_hold_s * 1000),
        tz=rules.time_zone,
        tariff=tariff,
        registers=REGISTER_COUNT[tariff],
    )
