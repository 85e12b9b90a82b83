"""Scripted meters for the household app's tests: a reading every 10 minutes at set powers.

Powers are multiples of 6 W, so each 10-minute step adds a whole number of Wh (600 W -> 100 Wh),
and the day figures the tests expect can be worked out by hand. The meter itself counts each step
in the register its tariff makes active at the step's start (off-peak 22:00-06:00 local time,
Tempo days 06:00-06:00), as a Linky does.
"""

from __future__ import annotations

from datetime import datetime
from typing import Callable
from zoneinfo import ZoneInfo

from quartier import tariffs
from quartier.events import MeterReading

PARIS = ZoneInfo("Europe/Paris")
STEP_MS = 600_000


def local_ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> int:
    return int(datetime(year, month, day, hour, minute, tzinfo=PARIS).timestamp() * 1000)


def scripted(
    meter: str,
    option: str,
    start_ms: int,
    end_ms: int,
    power_w: Callable[[datetime], int],
    *,
    zone: str = "rennes-01",
    kva: int | None = None,
) -> list[MeterReading]:
    """Readings from ``start_ms`` to ``end_ms`` inclusive, every 10 minutes; ``power_w(local time)``
    is the power drawn during the 10 minutes that follow."""
    kva = kva or 6
    n = tariffs.REGISTER_COUNT[tariffs.TariffOption(option)]
    registers = [1_000_000] * n  # indexes of a meter that has been counting for years
    out: list[MeterReading] = []
    t = start_ms
    seq = 0
    while t <= end_ms:
        instant = datetime.fromtimestamp(t / 1000, PARIS)
        active = tariffs.register_at(option, instant)
        power = power_w(instant)
        out.append(
            MeterReading(
                meter=meter, zone=zone, time_ms=t, seq=seq, drawn_va=power, withdrawn_wh=sum(registers),
                withdrawn_wh_by_register=tuple(registers), tariff_register=active, subscribed_kva=kva,
                cutoff_kva=kva,
            )
        )
        assert power % 6 == 0, "powers are multiples of 6 W so that 10-minute steps are whole Wh"
        registers[active - 1] += power // 6
        t += STEP_MS
        seq += 1
    return out
