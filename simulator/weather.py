"""Each zone's weather: outdoor temperature and cloud cover, and the sunlight that reaches its roofs.

Neighbours share their zone's weather, so their solar production rises and falls together. Cloud
cover wanders around a daily mean (an Ornstein-Uhlenbeck process, half an hour correlation), and
the temperature follows the season and the time of day plus a slow anomaly of a few days.
"""

from __future__ import annotations

import math

import numpy as np

from simulator.clock import Instant
from simulator.fleet import Zone

_CLOUD_TIMESCALE_S = 1800.0
_CLOUD_SPREAD = 0.25
_ANOMALY_TIMESCALE_S = 3 * 86400.0
_ANOMALY_SPREAD_C = 3.0
_SOLAR_CONSTANT_W_M2 = 1353.0


class Weather:
    def __init__(self, zones: list[Zone], rng: np.random.Generator, cloud_cover: float | None) -> None:
        self._rng = rng
        self._fixed_cloud = cloud_cover
        self._lat = np.radians([z.latitude for z in zones])
        self._lon_deg = np.array([z.longitude for z in zones])
        # Colder to the north: about 0.6 degC per degree of latitude from the middle of France.
        self._temp_offset = -0.6 * (np.array([z.latitude for z in zones]) - 46.5)
        count = len(zones)
        self._anomaly = rng.normal(0.0, _ANOMALY_SPREAD_C, count)
        self._day = -1
        self._cloud_mean = np.zeros(count)
        self._cloud = np.zeros(count)
        self.temperature_c = np.zeros(count)
        self.cloud_cover = np.zeros(count)
        #: Global horizontal irradiance on a zone's roofs (W/m2).
        self.irradiance_w_m2 = np.zeros(count)

    def step(self, now: Instant, dt: float) -> None:
        count = len(self._lat)
        if now.local_day != self._day:
            first = self._day < 0
            self._day = now.local_day
            # Each day each zone gets its own sky: clear, mixed or overcast, as often as each other.
            self._cloud_mean = self._rng.beta(0.7, 0.7, count)
            if first:
                self._cloud = self._cloud_mean.copy()
        decay = dt / _CLOUD_TIMESCALE_S
        self._cloud += (self._cloud_mean - self._cloud) * decay + _CLOUD_SPREAD * math.sqrt(
            2 * decay
        ) * self._rng.standard_normal(count)
        np.clip(self._cloud, 0.0, 1.0, out=self._cloud)
        if self._fixed_cloud is not None:
            self.cloud_cover[:] = self._fixed_cloud
        else:
            self.cloud_cover[:] = self._cloud

        decay = dt / _ANOMALY_TIMESCALE_S
        self._anomaly += -self._anomaly * decay + _ANOMALY_SPREAD_C * math.sqrt(2 * decay) * self._rng.standard_normal(
            count
        )

        solar_hour, sin_elevation = self._sun(now)
        seasonal = 11.5 - 8.0 * math.cos(2 * math.pi * (now.day_of_year - 15) / 365.0)
        diurnal = 4.5 * np.cos(2 * np.pi * (solar_hour - 15.0) / 24.0)
        self.temperature_c[:] = seasonal + diurnal + self._temp_offset + self._anomaly

        # Clear sky (Meinel's air-mass model), then Kasten-Czeplak's cloud attenuation.
        up = sin_elevation > 0.01
        air_mass = 1.0 / np.where(up, sin_elevation, 1.0)
        clear = np.where(up, _SOLAR_CONSTANT_W_M2 * np.power(0.7, np.power(air_mass, 0.678)) * sin_elevation, 0.0)
        self.irradiance_w_m2[:] = clear * (1.0 - 0.75 * np.power(self.cloud_cover, 3.4))

    def _sun(self, now: Instant) -> tuple[np.ndarray, np.ndarray]:
        """Local solar time (h) and the sine of the sun's elevation, per zone."""
        doy = now.day_of_year
        declination = math.radians(23.44) * math.sin(2 * math.pi * (284 + doy) / 365.0)
        b = 2 * math.pi * (doy - 81) / 364.0
        equation_of_time_h = (9.87 * math.sin(2 * b) - 7.53 * math.cos(b) - 1.5 * math.sin(b)) / 60.0
        utc_hour = (now.t % 86400.0) / 3600.0
        solar_hour = (utc_hour + self._lon_deg / 15.0 + equation_of_time_h) % 24.0
        hour_angle = np.radians(15.0 * (solar_hour - 12.0))
        sin_elevation = np.sin(self._lat) * math.sin(declination) + np.cos(self._lat) * math.cos(
            declination
        ) * np.cos(hour_angle)
        return solar_hour, sin_elevation
