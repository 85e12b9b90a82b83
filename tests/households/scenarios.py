"""Scripted homes told to the real broker, stream worker and InfluxDB once for the household tests.

Each meter's figures were worked out by hand (in the tests' comments, from the regulated prices in
``quartier.tariffs``); the worker is told every reading as a backlog. With a daily spending minimum
far above any day, the engine raises ``spending_day_below`` when each whole day closes, with that
day's spending as its value: the app's euros for the day must be that figure to the cent.
Readings are in January and February 2025, so the run's InfluxDB keeps raw readings for ten years.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from households.home import Home
from quartier import events, tariffs, topics
from quartier.events import AlertEvent
from quartier.kafka import ensure_topics
from quartier.settings import Settings
from quartier.stack.component import pick_port
from quartier.stack.influx import count_points, rollup_range
from tests.households.meters import local_ms, scripted
from tests.streams import alert_stories
from tests.streams.worker_support import WorkerProcess, alerts_of, quiet_rules, scrape, send
from tests.support import isolated_settings

RAW_RETENTION = "3650d"


def constant(watts: int):  # type: ignore[no-untyped-def]
    return lambda local: watts


def offpeak_heavy(local):  # type: ignore[no-untyped-def]
    # A water heater on the off-peak night (3,000 W), a small base load by day (600 W).
    return 3000 if tariffs.is_offpeak(local) else 600


@dataclass(frozen=True)
class Scripted:
    home: Home
    first_ms: int
    last_ms: int
    power: Any
    rules: dict[str, Any] | None = None  # the alert rules beyond the daily spending minimum


def evening_peak(local):  # type: ignore[no-untyped-def]
    # 600 W, and 4,200 W from 18:00 to 18:30 on 14 January (an oven and a heater at once).
    return 4200 if (local.day, local.hour, local.minute // 30) == (14, 18, 0) else 600


def day_before_to_day_after(d: date) -> tuple[int, int]:
    """From 22:00 the evening before (a partial day) to 00:10 the morning after (which closes ``d``)."""
    before = date.fromordinal(d.toordinal() - 1)
    after = date.fromordinal(d.toordinal() + 1)
    return local_ms(before.year, before.month, before.day, 22), local_ms(after.year, after.month, after.day, 0, 10)


def _home(meter: str, option: str, **extra: Any) -> Home:
    return Home(household=f"hh_{meter}0000", meter=meter, zone="rennes-01", tariff=tariffs.TariffOption(option), **extra)


METERS: dict[str, Scripted] = {
    "base_day": Scripted(_home("100000000001", "base"), *day_before_to_day_after(date(2025, 1, 14)), constant(1200)),
    "peak_offpeak_day": Scripted(
        _home("100000000002", "peak_offpeak"), *day_before_to_day_after(date(2025, 1, 14)), offpeak_heavy
    ),
    "tempo_red_day": Scripted(_home("100000000003", "tempo"), *day_before_to_day_after(date(2025, 1, 20)), constant(1200)),
    "before_price_change": Scripted(
        _home("100000000004", "base"), *day_before_to_day_after(date(2025, 1, 31)), constant(1200)
    ),
    "after_price_change": Scripted(
        _home("100000000005", "base"), *day_before_to_day_after(date(2025, 2, 1)), constant(1200)
    ),
    "billing_from_15th": Scripted(
        _home("100000000006", "base", billing_day=15),
        local_ms(2025, 1, 14, 22), local_ms(2025, 2, 10, 12), constant(1200),
    ),
    # 9 kVA subscribed for a home whose peak is 4,200 W: 6 kVA would do. A power limit of 3,000 W.
    "evening_peak": Scripted(
        _home("100000000007", "base", subscribed_kva=9), local_ms(2025, 1, 13, 22), local_ms(2025, 1, 15),
        evening_peak, {"power_max_w": 3000, "for_s": 0},
    ),
    # The days the clocks change in Paris: 30 March 2025 has 23 hours (02:00 becomes 03:00), 26 October
    # 2025 has 25 (03:00 becomes 02:00 again).
    "spring_forward_day": Scripted(_home("100000000008", "base"), *day_before_to_day_after(date(2025, 3, 30)), constant(1200)),
    "fall_back_day": Scripted(
        _home("100000000009", "peak_offpeak"), *day_before_to_day_after(date(2025, 10, 26)), offpeak_heavy
    ),
}
# Ten similar homes of one zone (6 kVA, electric heating) for eight days, each at its own constant power:
# 240 W is 5.76 kWh a day, ... 720 W 17.28 kWh a day; the tenth (the one whose figure is secret) 330 W.
NEIGHBOUR_POWERS_W = (240, 300, 360, 420, 480, 540, 600, 660, 720)
SECRET_POWER_W = 330
for i, watts in enumerate((*NEIGHBOUR_POWERS_W, SECRET_POWER_W)):
    home = Home(household=f"hh_{0x300 + i:016x}", meter=f"30000000000{i}", zone="vannes-02", subscribed_kva=6, heating="electric")
    METERS[f"neighbour_{i}"] = Scripted(home, local_ms(2025, 1, 1), local_ms(2025, 1, 9), (lambda w: lambda local: w)(watts))
NEIGHBOURS = [METERS[f"neighbour_{i}"].home for i in range(10)]
ENGINE_CHECKED = ("base_day", "peak_offpeak_day", "tempo_red_day", "before_price_change", "after_price_change",
                  "spring_forward_day", "fall_back_day")


class Told:
    def __init__(self, settings: Settings, worker: WorkerProcess) -> None:
        self.settings = settings
        self.worker = worker

    async def engine_day_spending(self, name: str) -> AlertEvent:
        meter = METERS[name].home.meter

        async def raised() -> AlertEvent | None:
            found = [a for a in await alerts_of(self.settings, meter) if a.kind == "spending_day_below"]
            return found[0] if found else None

        return await self.worker.until(raised, 120, f"the engine's day spending of {name}")


async def tell(broker: dict[str, Any], influx: dict[str, Any], smtp: dict[str, Any], tmp: Path) -> AsyncIterator[Told]:
    """Runs the worker over every scripted meter; yields once every reading is in InfluxDB."""
    settings = isolated_settings(tmp / "state", broker, influx, smtp, influx={"raw_retention": RAW_RETENTION})
    await ensure_topics(settings)
    rules = [
        quiet_rules(
            s.home.meter, spending_day_min_eur=1000.0, tariff=s.home.tariff.value, spending_pace=False,
            **(s.rules or {}),
        )
        for s in METERS.values()
    ]
    await send(settings, topics.ALERTS_RULES.name, [(r.meter.encode(), events.encode(r)) for r in rules])
    every = [
        r
        for s in METERS.values()
        for r in scripted(
            s.home.meter, s.home.tariff.value, s.first_ms, s.last_ms, s.power, zone=s.home.zone, kva=s.home.subscribed_kva
        )
    ]
    port = pick_port(0)
    argv = ["-m", "quartier.cli", "streams", "worker", "--app-id", settings.topic("worker"), "--metrics-port", str(port)]
    previous = os.environ.get("QUARTIER_INFLUX__RAW_RETENTION")
    os.environ["QUARTIER_INFLUX__RAW_RETENTION"] = RAW_RETENTION  # the worker keeps January 2025 too
    try:
        with WorkerProcess(argv, settings, tmp / "worker.log") as worker:

            async def rules_applied() -> bool:
                return scrape(port).get("quartier_alert_rules_applied_total", 0) >= len(rules)

            await worker.until(rules_applied, 90, "the rules applied")
            await send(settings, topics.METER_READINGS.name, alert_stories.messages(every, settings.kafka.reading_shards))

            async def stored() -> bool:
                return count_points(settings, "reading") >= len(every)

            await worker.until(stored, 120, "every reading in InfluxDB")
            # The continuous query only rolls up recent windows; these readings are from 2025.
            rollup_range(settings, local_ms(2025, 1, 1), local_ms(2025, 3, 1))
            for dst_day in ("spring_forward_day", "fall_back_day"):
                rollup_range(settings, METERS[dst_day].first_ms, METERS[dst_day].last_ms)
            yield Told(settings, worker)
    finally:
        if previous is None:
            os.environ.pop("QUARTIER_INFLUX__RAW_RETENTION", None)
        else:
            os.environ["QUARTIER_INFLUX__RAW_RETENTION"] = previous


