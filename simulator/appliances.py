"""What a home draws: its appliances, each shaped like the curve a real one leaves on a Linky.

Every home's load is the sum of its appliances, computed for the whole fleet at once (one numpy
array per parameter and per state). Three kinds of appliance:

- always there and cyclic, from fixed per-home periods and phases: standby, fridge, freezer;
- following a driver: electric heating against outdoor temperature (thermostat duty cycle), the
  water heater on the off-peak relay, everyday activity (lights, screens) by time of day;
- episodes that start at random with a time-of-day hazard and run their programme: cooking at meal
  times, washing machine, dishwasher, an EV charge, and the occasional pile-up of appliances
  (heater, oven, kettle, dryer at once) that takes a home near or past its cut-off power.
"""

from __future__ import annotations

import math

import numpy as np

from simulator.clock import Instant
from simulator.fleet import Fleet

# (start hour, end hour, chance a home cooks this meal) for breakfast, lunch, dinner.
MEALS = ((6.75, 8.5, 0.4), (11.75, 13.25, 0.5), (18.5, 20.5, 0.85))
_COOK_S = (600.0, 3000.0)

WASHER_PROGRAMME_S = 5400.0
_WASHER_WINDOW = (8.0, 21.0, 0.5)
DISHWASHER_PROGRAMME_S = 5400.0
_DISHWASHER_WINDOW = (19.5, 23.5, 0.6)
# Homes on off-peak tariffs plug the car in when off-peak starts; others when they get home.
_EV_WINDOW_BASE = (18.0, 21.5, 0.3)
_EV_WINDOW_OFFPEAK = (22.0, 23.5, 0.3)
_EV_CHARGE_S = (3600.0, 5 * 3600.0)
# Pile-ups: the few homes prone to them have about one a day, for 2-10 minutes.
_STACK_WINDOW = (7.0, 22.0, 1.0)
_STACK_S = (120.0, 600.0)
_STACK_SHARE = 0.04
#: Target load of a pile-up, as a share of the cut-off power.
_STACK_TARGET = (0.9, 1.2)

#: Everyday activity (lights, screens, small appliances) by local hour, in W for an average home.
_ACTIVITY_W = np.array(
    [40, 30, 30, 30, 30, 40, 90, 220, 200, 120, 110, 120, 160, 140, 110, 110, 130, 200, 330, 420, 440, 400, 300, 140],
    dtype=float,
)
_HEATING_GAINS_W = 250.0
_NIGHT_SETBACK_C = 2.0


class Appliances:
    def __init__(self, fleet: Fleet, rng: np.random.Generator) -> None:
        n = fleet.size
        self._rng = rng
        kva_w = fleet.subscribed_kva.astype(float) * 1000.0

        self.standby_w = np.clip(rng.lognormal(math.log(110.0), 0.45, n), 30.0, 450.0)
        self.activity_scale = rng.uniform(0.4, 1.6, n)

        self.fridge_w = rng.uniform(70.0, 150.0, n)
        self.fridge_period_s = rng.uniform(2400.0, 4200.0, n)
        self.fridge_on_s = self.fridge_period_s * rng.uniform(0.3, 0.45, n)
        self.fridge_phase_s = rng.uniform(0.0, 4200.0, n)
        self.freezer_w = np.where(rng.random(n) < 0.5, rng.uniform(80.0, 160.0, n), 0.0)
        self.freezer_period_s = rng.uniform(3000.0, 5400.0, n)
        self.freezer_on_s = self.freezer_period_s * rng.uniform(0.3, 0.5, n)
        self.freezer_phase_s = rng.uniform(0.0, 5400.0, n)

        self.cook_w = np.minimum(rng.uniform(1200.0, 3500.0, n), 0.6 * kva_w)
        self.cook_phase_s = rng.uniform(0.0, 80.0, n)
        self.washer = rng.random(n) < 0.92
        self.dishwasher = rng.random(n) < 0.6

        self.heater_w = np.where(
            fleet.water_heater, np.minimum(rng.choice([1200.0, 1800.0, 2200.0, 3000.0], n), 0.5 * kva_w), 0.0
        )
        # The off-peak relays of a neighbourhood do not all close in the same second.
        self.heater_delay_s = rng.uniform(0.0, 1800.0, n)
        self.heater_need_s = np.zeros(n)

        self.ua_w_per_k = np.where(fleet.electric_heating, rng.uniform(90.0, 260.0, n), 0.0)
        self.heating_w = np.minimum(self.ua_w_per_k * 28.0, 0.85 * kva_w)
        self.setpoint_c = rng.uniform(18.5, 21.0, n)
        self.heating_period_s = rng.uniform(600.0, 1200.0, n)
        self.heating_phase_s = rng.uniform(0.0, 1200.0, n)

        self.ev_w = np.where(fleet.ev, np.where(fleet.subscribed_kva >= 12, 7400.0, 3700.0), 0.0)
        self.offpeak_tariff = fleet.tariff != 0
        self.stacker = rng.random(n) < _STACK_SHARE
        self.kva_w = kva_w

        self.cook_left_s = np.zeros(n)
        self.washer_left_s = np.zeros(n)
        self.dishwasher_left_s = np.zeros(n)
        self.ev_left_s = np.zeros(n)
        self.stack_left_s = np.zeros(n)
        self.stack_target_w = np.zeros(n)
        self._was_offpeak: bool | None = None

    def power_w(self, now: Instant, dt: float, outdoor_c: np.ndarray) -> np.ndarray:
        """Active power each home's appliances draw during the step ending at ``now`` (W)."""
        t = now.t
        self._start_episodes(now, dt)
        self._water_heater_night(now)

        load = self.standby_w * (1.0 + 0.04 * self._rng.standard_normal(len(self.standby_w)))
        load += _ACTIVITY_W[int(now.local_hour) % 24] * self.activity_scale
        load += self.fridge_w * (np.fmod(t + self.fridge_phase_s, self.fridge_period_s) < self.fridge_on_s)
        load += self.freezer_w * (np.fmod(t + self.freezer_phase_s, self.freezer_period_s) < self.freezer_on_s)

        cooking = self.cook_left_s > 0
        if cooking.any():
            # A hob or oven thermostat: full power 50 s out of 80, a third of it otherwise.
            full = np.fmod(t + self.cook_phase_s, 80.0) < 50.0
            load += np.where(cooking, self.cook_w * np.where(full, 1.0, 0.35), 0.0)
        load += _washer_w(WASHER_PROGRAMME_S - self.washer_left_s) * (self.washer_left_s > 0)
        load += _dishwasher_w(DISHWASHER_PROGRAMME_S - self.dishwasher_left_s) * (self.dishwasher_left_s > 0)
        load += self.ev_w * (self.ev_left_s > 0)

        if now.offpeak:
            heater_on = (self.heater_need_s > 0) & (now.offpeak_elapsed_s >= self.heater_delay_s)
            load += self.heater_w * heater_on
            self.heater_need_s -= dt * heater_on

        load += self._heating_w(now, outdoor_c)

        stacking = self.stack_left_s > 0
        if stacking.any():
            load = np.where(stacking, np.maximum(load, self.stack_target_w), load)

        for left in (self.cook_left_s, self.washer_left_s, self.dishwasher_left_s, self.ev_left_s, self.stack_left_s):
            np.subtract(left, dt, out=left)
        return load

    def interrupt(self, homes: np.ndarray) -> None:
        """The supply of ``homes`` (a mask) was cut: programmes and pile-ups stop."""
        for left in (self.cook_left_s, self.washer_left_s, self.dishwasher_left_s, self.ev_left_s, self.stack_left_s):
            left[homes] = 0.0

    # --- drivers -------------------------------------------------------------------------------

    def _heating_w(self, now: Instant, outdoor_c: np.ndarray) -> np.ndarray:
        night = now.local_hour >= 23.0 or now.local_hour < 6.0
        setpoint = self.setpoint_c - (_NIGHT_SETBACK_C if night else 0.0)
        demand = self.ua_w_per_k * (setpoint - outdoor_c) - _HEATING_GAINS_W
        duty = np.clip(demand / np.maximum(self.heating_w, 1.0), 0.0, 1.0)
        # Convector thermostats: on for the duty share of each home's own cycle.
        on = np.fmod(now.t + self.heating_phase_s, self.heating_period_s) < duty * self.heating_period_s
        return self.heating_w * on

    def _water_heater_night(self, now: Instant) -> None:
        """When off-peak opens, each tank needs 1-4 hours of heating (less after a thrifty day)."""
        if self._was_offpeak is None:
            # Started mid-window: what is left of tonight's heating.
            if now.offpeak:
                need = self._rng.uniform(3600.0, 4 * 3600.0, len(self.heater_need_s))
                self.heater_need_s = np.maximum(0.0, need - np.maximum(0.0, now.offpeak_elapsed_s - self.heater_delay_s))
        elif now.offpeak and not self._was_offpeak:
            self.heater_need_s = self._rng.uniform(3600.0, 4 * 3600.0, len(self.heater_need_s))
        if not now.offpeak:
            self.heater_need_s[:] = 0.0
        self._was_offpeak = now.offpeak

    def _start_episodes(self, now: Instant, dt: float) -> None:
        hour = now.local_hour
        u = self._rng.random(len(self.standby_w))
        low = 0.0

        def chance(window: tuple[float, float, float]) -> float:
            start, end, per_day = window
            return per_day / ((end - start) * 3600.0) * dt if start <= hour < end else 0.0

        def start(p: float | np.ndarray, eligible: np.ndarray, left: np.ndarray, durations: tuple[float, float]) -> None:
            nonlocal low
            if np.isscalar(p) and p == 0.0:
                return
            begin = (u >= low) & (u < low + p) & eligible & (left <= 0)
            low = low + p
            count = int(begin.sum())
            if count:
                left[begin] = self._rng.uniform(*durations, count)

        for window in MEALS:
            start(chance(window), np.ones_like(self.washer), self.cook_left_s, _COOK_S)
        start(chance(_WASHER_WINDOW), self.washer, self.washer_left_s, (WASHER_PROGRAMME_S, WASHER_PROGRAMME_S))
        start(
            chance(_DISHWASHER_WINDOW),
            self.dishwasher,
            self.dishwasher_left_s,
            (DISHWASHER_PROGRAMME_S, DISHWASHER_PROGRAMME_S),
        )
        ev_base, ev_offpeak = chance(_EV_WINDOW_BASE), chance(_EV_WINDOW_OFFPEAK)
        if ev_base or ev_offpeak:
            start(np.where(self.offpeak_tariff, ev_offpeak, ev_base), self.ev_w > 0, self.ev_left_s, _EV_CHARGE_S)
        p = chance(_STACK_WINDOW)
        if p:
            before = self.stack_left_s > 0
            start(p, self.stacker, self.stack_left_s, _STACK_S)
            began = (self.stack_left_s > 0) & ~before
            count = int(began.sum())
            if count:
                self.stack_target_w[began] = self.kva_w[began] * self._rng.uniform(*_STACK_TARGET, count)


def _washer_w(elapsed_s: np.ndarray) -> np.ndarray:
    """Heat the water (20 min, 2 kW), wash (motor), spin (last 5 min)."""
    return np.where(elapsed_s < 1200.0, 2000.0, np.where(elapsed_s < WASHER_PROGRAMME_S - 300.0, 220.0, 500.0))


def _dishwasher_w(elapsed_s: np.ndarray) -> np.ndarray:
    """Two heating phases (wash, then rinse) with the pump in between."""
    heating = (elapsed_s < 1200.0) | ((elapsed_s >= 3600.0) & (elapsed_s < 4800.0))
    return np.where(heating, 1800.0, 80.0)
