"""Homes from the accounts read models (``accounts.readmodel``), the served app's ``HomeDirectory``.

The household's meter, zone and contract are the accounts' (``household(rm, id)``); they are read
through its query functions, never copied, the heating type included (``household_tariff_set``).
What accounts does not hold yet is said here: the time zone (mainland France's, as the alert rules
default to).
"""

from __future__ import annotations

from accounts import readmodel
from households.home import Home
from quartier import tariffs
from quartier.settings import Settings


def _home(row: readmodel.Household) -> Home | None:  # type: ignore[name-defined]
    if not row.meter or not row.zone:
        return None
    option = tariffs.TariffOption(row.tariff or "base")
    sold = tariffs.SUBSCRIBED_KVA[option]
    kva = row.subscribed_kva if row.subscribed_kva in sold else sold[1] if len(sold) > 1 else sold[0]
    return Home(household=row.household, meter=row.meter, zone=row.zone, tariff=option, subscribed_kva=kva,
                billing_day=min(max(row.billing_day or 1, 1), 28),
                heating=row.heating if row.heating in ("electric", "other") else "unknown")  # type: ignore[arg-type]


class AccountsDirectory:
    def __init__(self, settings: Settings) -> None:
        self.rm = readmodel.ReadModel(settings.sqlite_url("accounts"))

    def home(self, household: str) -> Home | None:
        row = readmodel.household(self.rm, household)
        return None if row is None else _home(row)

    def zone_homes(self, zone: str) -> list[Home]:
        homes = []
        for meter, (household, meter_zone) in readmodel.paired_meters(self.rm).items():
            if meter_zone == zone:
                home = self.home(household)
                if home is not None:
                    homes.append(home)
        return homes
