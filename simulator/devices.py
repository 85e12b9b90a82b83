"""The Wi-Fi modules on the meters: firmware, signal, clocks that drift, and outages.

A module drops off now and then and comes back: mostly short Wi-Fi losses (seconds to two
minutes), some reboots (its uptime starts again), and a few long losses (ten minutes to three
hours, a router switched off). While it is away the meter keeps counting (its frame sequence number
and indexes go on), so the first reading after an outage shows the gap. Outages start at random at
the configured rate per meter and day.
"""

from __future__ import annotations

import math

import numpy as np

from quartier.events import DeviceTelemetry
from simulator.config import FleetConfig

FIRMWARE = ("3.2.1", "3.1.4", "2.9.7")
_FIRMWARE_SHARE = (0.55, 0.35, 0.10)
#: A module reports its health once a minute, or every 15 readings when they are further apart
#: (coarse backfill), so that telemetry stays a small fraction of the traffic.
TELEMETRY_PERIOD_S = 60
TELEMETRY_MIN_READINGS = 15

# Outage kinds: share of outages, and the range of their duration (s), drawn log-uniformly.
_WIFI_LOSS = (0.60, 5.0, 120.0)
_REBOOT = (0.25, 20.0, 90.0)
_LONG_LOSS = (0.15, 600.0, 3 * 3600.0)


class Modules:
    def __init__(self, meter_ids: list[str], config: FleetConfig, rng: np.random.Generator, start_t: float) -> None:
        n = len(meter_ids)
        self._rng = rng
        self._meter_ids = meter_ids
        self._start_t = start_t
        self.firmware = rng.choice(len(FIRMWARE), size=n, p=_FIRMWARE_SHARE)
        self.base_rssi_dbm = np.clip(rng.normal(-63.0, 9.0, n), -92.0, -35.0)
        # Meter clocks are set by the grid operator to within a second and drift by tens of ppm.
        self.clock_offset_ms = rng.normal(0.0, 400.0, n)
        self.drift_ppm = rng.normal(0.0, 15.0, n)
        self.boot_t = start_t - rng.uniform(3600.0, 60 * 86400.0, n)
        interval = config.interval_s
        self._telemetry_every = max(math.ceil(TELEMETRY_PERIOD_S / interval), TELEMETRY_MIN_READINGS)
        self._interval = interval
        self.telemetry_phase = rng.integers(0, self._telemetry_every, n)
        #: When each module is back online (Unix s); in the past when it is online.
        self.back_at = np.full(n, -math.inf)
        self._rate_per_s = config.disconnects_per_meter_day / 86400.0 if config.disconnects else 0.0
        #: Outages started so far.
        self.episodes = 0

    def step(self, t: float, dt: float) -> np.ndarray:
        """Starts this step's outages; returns which modules are online (send a frame) at ``t``."""
        if self._rate_per_s > 0:
            # Only a module that was already online at the previous step drops off: one that just
            # came back sends at least one frame first, so every outage shows as its own gap.
            settled = self.back_at <= t - dt
            begin = settled & (self._rng.random(len(settled)) < self._rate_per_s * dt)
            count = int(begin.sum())
            if count:
                self.episodes += count
                kind = self._rng.choice(3, size=count, p=(_WIFI_LOSS[0], _REBOOT[0], _LONG_LOSS[0]))
                low = np.choose(kind, (_WIFI_LOSS[1], _REBOOT[1], _LONG_LOSS[1]))
                high = np.choose(kind, (_WIFI_LOSS[2], _REBOOT[2], _LONG_LOSS[2]))
                duration = np.exp(self._rng.uniform(np.log(low), np.log(high)))
                rows = np.flatnonzero(begin)
                self.back_at[rows] = t + duration
                rebooted = rows[kind == 1]
                self.boot_t[rebooted] = t + duration[kind == 1]
        return self.back_at <= t

    def meter_time_ms(self, t: float) -> np.ndarray:
        """Each meter's own clock at true time ``t`` (epoch ms): offset plus drift since the start."""
        drift_ms = self.drift_ppm * 1e-6 * (t - self._start_t) * 1000.0
        return np.rint(t * 1000.0 + self.clock_offset_ms + drift_ms).astype(np.int64)

    def telemetry(self, t: float, dt: float, online: np.ndarray, time_ms: np.ndarray) -> list[DeviceTelemetry]:
        """Health reports of the online modules whose turn comes round in this step."""
        step = round(t / self._interval)
        due = online & ((step + self.telemetry_phase) % self._telemetry_every == 0)
        rows = np.flatnonzero(due)
        if not len(rows):
            return []
        rssi = np.clip(np.rint(self.base_rssi_dbm[rows] + self._rng.normal(0.0, 2.5, len(rows))), -120, 0)
        uptime = np.maximum(0, t - self.boot_t[rows]).astype(np.int64)
        return [
            DeviceTelemetry(
                meter=self._meter_ids[i],
                time_ms=int(ms),
                rssi_dbm=int(r),
                firmware=FIRMWARE[f],
                uptime_s=int(up),
            )
            for i, ms, r, f, up in zip(
                rows.tolist(), time_ms[rows].tolist(), rssi.tolist(), self.firmware[rows].tolist(), uptime.tolist()
            )
        ]
