"""Where the app finds a household's home (meter, zone, contract) and its zone's other homes.

In the served app the homes come from the accounts read models (``accounts.readmodel``: the
household's paired meter, zone, tariff, subscribed power, billing day); ``StaticDirectory`` holds a
fixed set of homes for the benchmark and for tests of the domain alone.
"""

from __future__ import annotations

from typing import Protocol

from households.home import Home


class HomeDirectory(Protocol):
    def home(self, household: str) -> Home | None:
        """The household's home, or None when it has no paired meter."""

    def zone_homes(self, zone: str) -> list[Home]:
        """Every home of the zone (the comparison keeps the similar ones)."""


class StaticDirectory:
    def __init__(self, homes: list[Home]) -> None:
        self._homes = {h.household: h for h in homes}

    def home(self, household: str) -> Home | None:
        return self._homes.get(household)

    def zone_homes(self, zone: str) -> list[Home]:
        return [h for h in self._homes.values() if h.zone == zone]
