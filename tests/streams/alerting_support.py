"""A household's meter for the alert tests: readings second by second, indexes advanced by the load.

Each reading's indexes grow by the power drawn times the interval (Wh kept as floats, reported as
the meter does, whole Wh), and the active register follows the tariff calendar of quartier.tariffs,
so spending tests exercise the same register mapping the simulator uses.
"""

from __future__ import annotations

from datetime import datetime, timezone

from quartier import tariffs
from quartier.events import AlertEvent, AlertRules, MeterReading
from streams.alerting import AlertEngine

PARIS = tariffs.LOCAL_TIME


def ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> int:
    """Epoch ms of a Paris wall-clock time."""
    return int(datetime(year, month, day, hour, minute, second, tzinfo=PARIS).timestamp() * 1000)


class Household:
    def __init__(
        self, meter: str = "012345678901", *, start_ms: int, zone: str = "rennes-01", tariff: str = "base",
        cutoff_kva: int = 6, withdrawn_wh: float = 1_000_000.0, injected_wh: float = 0.0,
        registers: int | None = None,
    ) -> None:
        self.meter = meter
        self.zone = zone
        self.t = start_ms
        self.tariff = tariff
        self.cutoff_kva = cutoff_kva
        count = tariffs.REGISTER_COUNT[tariffs.TariffOption(tariff)] if registers is None else registers
        self.registers = [0.0] * count
        if count:
            self.registers[0] = withdrawn_wh
        self.withdrawn = withdrawn_wh
        self.injected = injected_wh
        self.seq = 0

    def register_now(self) -> int:
        return tariffs.register_at(self.tariff, datetime.fromtimestamp(self.t / 1000, timezone.utc))

    def reading(self, drawn_va: int, *, dt_s: float = 1.0, injected_va: int = 0) -> MeterReading:
        """Advance by ``dt_s`` at ``drawn_va`` and return the frame the meter sends then."""
        self.t += round(dt_s * 1000)
        wh = drawn_va * dt_s / 3600
        self.withdrawn += wh
        if self.registers:
            self.registers[self.register_now() - 1] += wh
        self.injected += injected_va * dt_s / 3600
        self.seq += 1
        return self.frame(drawn_va, injected_va)

    def frame(self, drawn_va: int, injected_va: int = 0) -> MeterReading:
        return MeterReading(
            meter=self.meter, zone=self.zone, time_ms=self.t, seq=self.seq, drawn_va=drawn_va,
            injected_va=injected_va, withdrawn_wh=int(self.withdrawn),
            withdrawn_wh_by_register=tuple(int(x) for x in self.registers), injected_wh=int(self.injected),
            tariff_register=self.register_now() if self.registers else 1, subscribed_kva=self.cutoff_kva,
            cutoff_kva=self.cutoff_kva,
        )

    def readings(self, drawn_va: int, seconds: int, *, dt_s: float = 1.0) -> list[MeterReading]:
        return [self.reading(drawn_va, dt_s=dt_s) for _ in range(int(seconds / dt_s))]


def feed(engine: AlertEngine, readings: list[MeterReading]) -> list[AlertEvent]:
    events: list[AlertEvent] = []
    for reading in readings:
        events.extend(engine.on_reading(reading).events)
    return events


def rules(meter: str = "012345678901", **changes: object) -> AlertRules:
    values: dict[str, object] = dict(meter=meter, disconnect=False, fuse_warning=False, for_s=10.0, repeat_s=0.0)
    values.update(changes)
    return AlertRules(**values)  # type: ignore[arg-type]


def summary(events: list[AlertEvent]) -> list[tuple[str, str, int]]:
    """What the household is told: (kind, raised/resolved, meter time), in order."""
    return [(e.kind, e.state, e.at_ms) for e in events]


def fixed_clock() -> int:
    return 0
