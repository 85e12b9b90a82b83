"""What the app knows about one home: its meter and its contract.

The fields come from the accounts read models (``accounts.readmodel``) when the app serves a person;
the domain functions take a ``Home`` so they can be tested and benchmarked without an account.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from quartier import tariffs

Heating = Literal["electric", "other", "unknown"]


@dataclass(frozen=True)
class Home:
    household: str
    meter: str
    zone: str
    tariff: tariffs.TariffOption = tariffs.TariffOption.BASE
    subscribed_kva: int = 6
    # The day of the month a billing period starts (1-28, so every month has it).
    billing_day: int = 1
    time_zone: str = "Europe/Paris"
    heating: Heating = "electric"

    def __post_init__(self) -> None:
        if not 1 <= self.billing_day <= 28:
            raise ValueError(f"billing_day: must be 1..28 (every month has it), got {self.billing_day}")
        if self.subscribed_kva not in tariffs.SUBSCRIBED_KVA[tariffs.TariffOption(self.tariff)]:
            tariffs.subscription_eur_per_year(self.tariff, self.subscribed_kva)  # raises naming the field

    @property
    def registers(self) -> int:
        return tariffs.REGISTER_COUNT[tariffs.TariffOption(self.tariff)]

    @property
    def zoneinfo(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)

    def local_date(self, t_ms: int) -> date:
        return datetime.fromtimestamp(t_ms / 1000, self.zoneinfo).date()

    def midnight_ms(self, day: date) -> int:
        return int(datetime(day.year, day.month, day.day, tzinfo=self.zoneinfo).timestamp() * 1000)

    def day_prices(self, day: date) -> tuple[float, ...]:
        """EUR per Wh of each register on ``day``: the alert engine's own function."""
        return tariffs.day_prices_eur_per_wh(self.tariff, self.registers, day)


def days(first: date, last: date) -> list[date]:
    """Every date from ``first`` to ``last`` inclusive."""
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]
