"""One simulated second (or interval) for the whole fleet at once: power, energy, devices, frames.

Each step computes every home's appliance load and solar production, nets them into drawn and
injected apparent power, advances the energy registers by that power over the interval, and asks
the Wi-Fi modules who is online. Energy indexes only ever grow, by exactly the energy of the power
the readings report (active power = apparent power x the home's power factor), so a consumer that
takes index differences finds the curve it saw.

Random draws come from separate streams per concern (weather, appliances, modules, malformed
frames, initial state), so turning malformed frames or outages off leaves the homes' loads as they
were with the same seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from quartier.events import DeviceTelemetry, MeterReading
from simulator.appliances import Appliances
from simulator.clock import instant_at
from simulator.devices import Modules
from simulator.fleet import TARIFFS, Fleet
from simulator.malformed import Malformation, malformed_frame
from simulator.weather import Weather

#: Registers a reading can carry (Tempo's six).
MAX_REGISTERS = 6
#: A Linky opens its breaking device when the home stays above its cut-off power this long (s).
TRIP_AFTER_S = 60.0
#: ...and the household takes this long to notice and switch it back on (s).
_RESET_S = (120.0, 900.0)
#: Line impedance between the transformer and a home (ohm): the voltage sags under load.
_LINE_OHM = 0.15


@dataclass
class Frame:
    """What the fleet sends at one instant. Per-meter arrays cover the whole fleet; ``sent`` says whose
    good reading goes out (online and not malformed), in fleet (shard) order."""

    step: int
    t: float
    sent: np.ndarray
    time_ms: np.ndarray
    seq: np.ndarray
    drawn_va: np.ndarray
    injected_va: np.ndarray
    withdrawn_wh: np.ndarray
    registers_wh: np.ndarray
    injected_wh: np.ndarray
    tariff_register: np.ndarray
    voltage_v: np.ndarray
    current_a: np.ndarray
    malformed: list[tuple[int, Malformation, bytes]] = field(default_factory=list)
    telemetry: list[DeviceTelemetry] = field(default_factory=list)


class Simulation:
    def __init__(self, fleet: Fleet, start_t: float) -> None:
        config = fleet.config
        self.fleet = fleet
        self.dt = float(config.interval_s)
        self.start_t = float(start_t)
        self.step_index = 0
        weather_seed, appliance_seed, module_seed, malformed_seed, state_seed = np.random.SeedSequence(
            [config.seed, 2]
        ).spawn(5)
        self.weather = Weather(fleet.zones, np.random.default_rng(weather_seed), config.cloud_cover)
        self.appliances = Appliances(fleet, np.random.default_rng(appliance_seed))
        self.modules = Modules(fleet.meter_ids, config, np.random.default_rng(module_seed), self.start_t)
        self._malformed_rng = np.random.default_rng(malformed_seed)
        self._malformed_fraction = config.malformed_fraction

        n = fleet.size
        rng = np.random.default_rng(state_seed)
        self._rng = rng
        self._rows = np.arange(n)
        self._zone = fleet.zone_index
        self._tariff = fleet.tariff.astype(np.int64)
        self._register_count = fleet.register_count
        self._cutoff_va = fleet.cutoff_kva.astype(float) * 1000.0
        self._pv_w_per_irradiance = fleet.pv_kwp * rng.uniform(0.65, 0.85, n)  # orientation, losses
        self._power_factor = rng.uniform(0.88, 0.98, n)
        self._nominal_v = np.array([z.nominal_voltage for z in fleet.zones])[self._zone]
        self._over_s = np.zeros(n)
        self._tripped_until = np.zeros(n)
        self.withdrawn_acc_wh, self.injected_acc_wh = _initial_indexes(fleet, rng)
        self.seq = rng.integers(0, 1_000_000, n).astype(np.int64)

    @property
    def t(self) -> float:
        """True time of the next step."""
        return self.start_t + self.step_index * self.dt

    def step(self) -> Frame:
        t, dt = self.t, self.dt
        now = instant_at(t)
        self.weather.step(now, dt)
        load_w = self.appliances.power_w(now, dt, self.weather.temperature_c[self._zone])
        pv_w = self._pv_w_per_irradiance * self.weather.irradiance_w_m2[self._zone]

        tripped = self._tripped_until > t
        if tripped.any():
            # Breaker open: nothing drawn, and the inverter stops without the grid.
            load_w[tripped] = 0.0
            pv_w[tripped] = 0.0
        net_w = load_w - pv_w
        drawn_w = np.maximum(net_w, 0.0)
        injected_w = np.maximum(-net_w, 0.0)
        drawn_va = np.rint(drawn_w / self._power_factor)
        injected_va = np.rint(injected_w / 0.99)
        self._trip(t, drawn_va)

        # Energy over the interval at the power the reading reports (active = apparent x pf).
        active_register = np.array(now.registers, dtype=np.int64)[self._tariff]
        self.withdrawn_acc_wh[self._rows, active_register - 1] += drawn_va * self._power_factor * (dt / 3600.0)
        self.injected_acc_wh += injected_va * 0.99 * (dt / 3600.0)
        registers_wh = np.floor(self.withdrawn_acc_wh).astype(np.int64)

        voltage = self._nominal_v + (injected_w - drawn_w) / 230.0 * _LINE_OHM
        voltage += 0.8 * self._rng.standard_normal(len(voltage))
        voltage_v = np.rint(np.clip(voltage, 207.0, 253.0)).astype(np.int64)
        current_a = np.rint(np.maximum(drawn_va, injected_va) / voltage_v).astype(np.int64)

        online = self.modules.step(t, dt)
        time_ms = self.modules.meter_time_ms(t)
        self.seq += 1
        sent = online
        malformed_rows = np.empty(0, dtype=np.int64)
        if self._malformed_fraction > 0:
            bad = online & (self._malformed_rng.random(len(online)) < self._malformed_fraction)
            malformed_rows = np.flatnonzero(bad)
            sent = online & ~bad

        frame = Frame(
            step=self.step_index,
            t=t,
            sent=np.flatnonzero(sent),
            time_ms=time_ms,
            seq=self.seq.copy(),
            drawn_va=drawn_va.astype(np.int64),
            injected_va=injected_va.astype(np.int64),
            withdrawn_wh=registers_wh.sum(axis=1),
            registers_wh=registers_wh,
            injected_wh=np.floor(self.injected_acc_wh).astype(np.int64),
            tariff_register=active_register,
            voltage_v=voltage_v,
            current_a=current_a,
        )
        for row in malformed_rows.tolist():
            kind, raw = malformed_frame(self.reading(frame, row), self._malformed_rng)
            frame.malformed.append((row, kind, raw))
        frame.telemetry = self.modules.telemetry(t, dt, online, time_ms)
        self.step_index += 1
        return frame

    def reading(self, frame: Frame, row: int) -> MeterReading:
        """One meter's reading in ``frame`` as the contract's record."""
        fleet = self.fleet
        return MeterReading(
            meter=fleet.meter_ids[row],
            zone=fleet.zones[fleet.zone_index[row]].id,
            time_ms=int(frame.time_ms[row]),
            seq=int(frame.seq[row]),
            drawn_va=int(frame.drawn_va[row]),
            injected_va=int(frame.injected_va[row]),
            withdrawn_wh=int(frame.withdrawn_wh[row]),
            withdrawn_wh_by_register=tuple(frame.registers_wh[row, : self._register_count[row]].tolist()),
            injected_wh=int(frame.injected_wh[row]),
            tariff_register=int(frame.tariff_register[row]),
            subscribed_kva=int(fleet.subscribed_kva[row]),
            cutoff_kva=int(fleet.cutoff_kva[row]),
            voltage_v=int(frame.voltage_v[row]),
            current_a=int(frame.current_a[row]),
        )

    def readings(self, frame: Frame) -> list[MeterReading]:
        """Every good reading of ``frame`` as records (the slow, obvious path: tests and the baseline)."""
        return [self.reading(frame, row) for row in frame.sent.tolist()]

    def _trip(self, t: float, drawn_va: np.ndarray) -> None:
        over = drawn_va > self._cutoff_va
        self._over_s = np.where(over, self._over_s + self.dt, 0.0)
        trip = self._over_s >= TRIP_AFTER_S
        count = int(trip.sum())
        if count:
            self._tripped_until[trip] = t + self._rng.uniform(*_RESET_S, count)
            self._over_s[trip] = 0.0
            self.appliances.interrupt(trip)


def _initial_indexes(fleet: Fleet, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Indexes of meters installed 0.5-9 years ago, split over their tariff's registers."""
    n = fleet.size
    annual_kwh = (1500.0 + 350.0 * fleet.subscribed_kva + 6000.0 * fleet.electric_heating) * rng.uniform(0.7, 1.3, n)
    years = rng.uniform(0.5, 9.0, n)
    total_wh = annual_kwh * 1000.0 * years
    split = np.zeros((len(TARIFFS), MAX_REGISTERS))
    split[0, :1] = [1.0]
    split[1, :2] = [0.42, 0.58]
    split[2, :6] = [0.33, 0.48, 0.05, 0.08, 0.02, 0.04]
    withdrawn = total_wh[:, None] * split[fleet.tariff.astype(np.int64)]
    withdrawn += rng.random((n, MAX_REGISTERS)) * (split[fleet.tariff.astype(np.int64)] > 0)
    injected = fleet.pv_kwp * 1100.0 * 0.5 * 1000.0 * years
    return withdrawn, injected
