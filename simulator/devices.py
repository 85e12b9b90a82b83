"""The Wi-Fi modules on the meters: firmware, signal, clocks that drift, and outages.

A module drops off now and then and comes back: mostly short Wi-Fi losses (seconds to two
minutes), some reboots (its uptime starts again), and a few long losses (ten minutes to three
hours, a router switched off). While it is away the meter keeps counting (its frame sequence number
and indexes go on), so the first reading after an outage shows the gap. Outages start at random at
the configured rate per meter and day.

Modules obey firmware update commands (``devices.commands``): a module asked for a firmware it does
not run downloads it (a drawn time, while online; a configured share of downloads fail silently),
reboots into it and reports the new version on ``meter.telemetry`` as soon as it is back, then once
a minute as before. A firmware declared faulty in the config makes its modules reboot every few
minutes or lose frames. Update behaviour draws from its own random stream, so a run without
commands gives the same bytes as before.
"""

from __future__ import annotations

import math
import zlib

import numpy as np

from quartier.events import DeviceTelemetry
from simulator.config import FleetConfig

FIRMWARE = ("3.2.1", "3.1.4", "2.9.7")
#: Hardware versions of the modules: fixed by the meter id (crc32), so no random draw moves.
HARDWARE = ("4", "5")
_HARDWARE_4_SHARE_PERCENT = 40
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
        self.firmware_names: list[str] = list(FIRMWARE)
        self.hardware = np.array(
            [0 if zlib.crc32(m.encode()) % 100 < _HARDWARE_4_SHARE_PERCENT else 1 for m in meter_ids], dtype=np.int8
        )
        self._rows = {m: i for i, m in enumerate(meter_ids)}
        self._update_rng = np.random.default_rng(np.random.SeedSequence([config.seed, 7]))
        self._config = config
        #: Firmware being installed (index into firmware_names; -1 none) and when the download ends.
        self.pending = np.full(n, -1, dtype=np.int32)
        self.install_at = np.full(n, math.inf)
        #: Report telemetry at the next step the module is online (after an update, or when asked).
        self.report_now = np.zeros(n, dtype=bool)
        self.updates_installed = 0
        self.commands_received = 0
        #: Faulty firmware: per firmware index, (reboot every s or None, frame loss share).
        self._faults: dict[int, tuple[float | None, float]] = {}
        for fault in config.firmware_faults:
            self._faults[self._firmware_code(fault.version)] = (fault.reboot_every_s, fault.frame_loss_share)
        self._next_fault_reboot = np.full(n, math.inf)

    def _firmware_code(self, version: str) -> int:
        if version not in self.firmware_names:
            self.firmware_names.append(version)
        return self.firmware_names.index(version)

    def command_update(self, meter: str, firmware: str, t: float) -> bool:
        """A devices.commands update for ``meter``: start downloading ``firmware`` (False: not ours)."""
        row = self._rows.get(meter)
        if row is None:
            return False
        self.commands_received += 1
        code = self._firmware_code(firmware)
        if code == self.firmware[row]:
            self.report_now[row] = True  # already running it: say so
            return True
        if self._update_rng.random() < self._config.update_failure_share:
            return True  # the download fails; the module keeps its firmware and says nothing
        self.pending[row] = code
        self.install_at[row] = t + self._update_rng.uniform(*self._config.update_download_s)
        return True

    def _install(self, t: float, online: np.ndarray) -> None:
        """Modules whose download finished (and that are online) reboot into the new firmware."""
        due = np.flatnonzero((self.install_at <= t) & online)
        if not len(due):
            return
        reboot = self._update_rng.uniform(*self._config.update_reboot_s, len(due))
        self.back_at[due] = t + reboot
        self.boot_t[due] = t + reboot
        self.firmware[due] = self.pending[due]
        self.pending[due] = -1
        self.install_at[due] = math.inf
        self.report_now[due] = True
        self.updates_installed += len(due)
        self._schedule_fault_reboots(due, t + reboot)

    def _schedule_fault_reboots(self, rows: np.ndarray, boot_t: np.ndarray | float) -> None:
        boot = np.broadcast_to(np.asarray(boot_t, dtype=float), rows.shape)
        self._next_fault_reboot[rows] = math.inf
        for code, (every, _) in self._faults.items():
            if every is None:
                continue
            hit = self.firmware[rows] == code
            if hit.any():
                jitter = self._update_rng.uniform(0.8, 1.2, int(hit.sum()))
                self._next_fault_reboot[rows[hit]] = boot[hit] + every * jitter

    def _faulty(self, t: float, online: np.ndarray) -> np.ndarray:
        """Faulty firmware at work: reboots when due; returns the online modules whose frame goes out."""
        if not self._faults:
            return online
        due = np.flatnonzero((self._next_fault_reboot <= t) & online)
        if len(due):
            reboot = self._update_rng.uniform(20.0, 40.0, len(due))
            self.back_at[due] = t + reboot
            self.boot_t[due] = t + reboot
            self.report_now[due] = True
            self._schedule_fault_reboots(due, t + reboot)
            online = online.copy()
            online[due] = False
        sending = online
        for code, (_, loss) in self._faults.items():
            if loss > 0:
                lost = online & (self.firmware == code) & (self._update_rng.random(len(online)) < loss)
                if lost.any():
                    sending = sending & ~lost
        return sending

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
        online = self.back_at <= t
        if self.commands_received:
            self._install(t, online)
            online = self.back_at <= t
        return self._faulty(t, online)

    def meter_time_ms(self, t: float) -> np.ndarray:
        """Each meter's own clock at true time ``t`` (epoch ms): offset plus drift since the start."""
        drift_ms = self.drift_ppm * 1e-6 * (t - self._start_t) * 1000.0
        return np.rint(t * 1000.0 + self.clock_offset_ms + drift_ms).astype(np.int64)

    def telemetry(self, t: float, dt: float, online: np.ndarray, time_ms: np.ndarray) -> list[DeviceTelemetry]:
        """Health reports of the online modules whose turn comes round in this step."""
        step = round(t / self._interval)
        due = online & ((step + self.telemetry_phase) % self._telemetry_every == 0)
        if self.commands_received or self._faults:
            # A module back from an update or a reboot reports at once (uptime starts again).
            back = online & self.report_now
            due = due | back
            self.report_now[back] = False
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
                firmware=self.firmware_names[f],
                uptime_s=int(up),
                hardware=HARDWARE[h],
            )
            for i, ms, r, f, up, h in zip(
                rows.tolist(), time_ms[rows].tolist(), rssi.tolist(), self.firmware[rows].tolist(), uptime.tolist(),
                self.hardware[rows].tolist(),
            )
        ]
