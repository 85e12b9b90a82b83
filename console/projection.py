"""The fleet projection: every Wi-Fi module's state, folded from the topics as they arrive.

Inputs, and what each costs:

- ``meter.readings`` (48,000 readings a second for the reference fleet): only the cadence, the last
  power and the withdrawn index matter here, so batches are decoded with a *lean* msgspec struct
  (meter, zone, meter time, drawn and injected VA, withdrawn Wh) that skips the other fields while
  parsing, and folded into per-module numpy arrays a whole batch at a time (no per-reading Python
  beyond the meter-id lookup). A malformed message is counted and skipped: the stream worker owns
  rejecting it.
- ``meter.telemetry`` (one report a minute per module): RSSI, firmware, hardware version, uptime;
  a report whose implied boot time moved forward is a reboot.
- ``alerts.events``: the stream worker's ``disconnected`` episodes and the fleet's ``ingest_down``.

:meth:`FleetProjection.refresh` (every few seconds, never per page view) judges connectivity at
the fleet's time (the newest meter time seen), recomputes frame-gap percentiles from per-module
histograms, samples the connected count for the 10-day curve and prunes the 30-day history. Pages
and the REST layer read the arrays and lists this leaves.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import numpy as np

from quartier.events import AlertEvent, DeviceTelemetry

DAY_MS = 86_400_000
HISTORY_MS = 30 * DAY_MS
FLEET_CURVE_STEP_MS = 10 * 60_000
FLEET_CURVE_DAYS = 10
#: Upper edges of the frame-gap histogram buckets (ms); the last bucket takes everything above.
GAP_EDGES_MS = np.array(
    [250, 500, 750, 900, 1_100, 1_250, 1_500, 2_000, 2_500, 3_000, 4_000, 5_000, 7_500, 10_000, 15_000,
     20_000, 30_000, 45_000, 60_000, 90_000, 120_000, 180_000, 300_000, 600_000, 1_800_000, 3_600_000,
     86_400_000],
    dtype=np.int64,
)
_GAP_LOWER_MS = np.concatenate([[0], GAP_EDGES_MS[:-1]]).astype(float)
BUCKETS = len(GAP_EDGES_MS) + 1
#: A module is disconnected after this many of its own frame intervals without a reading, and at
#: least DEADMAN_MIN_MS, as the stream worker's deadman (docs/alerts.md). The interval is a moving
#: average of its gaps (weight CADENCE_WEIGHT) in which one gap counts for at most twice the
#: average, so a single long outage cannot drag it far.
DEADMAN_CADENCES = 10
DEADMAN_MIN_MS = 30_000
CADENCE_WEIGHT = 0.1
#: A boot time that moved forward by more than this between two reports is a reboot (clock noise
#: and uptime rounding move it by a second or two).
REBOOT_TOLERANCE_MS = 10_000
#: RSSI bands (dBm): at or above each lower bound.
RSSI_BANDS: tuple[tuple[str, int], ...] = (("excellent", -55), ("good", -67), ("fair", -75), ("poor", -121))
MASS_DISCONNECT_SHARE = 0.05


#: The per-module arrays (filled in by FleetProjection._grow): what a snapshot saves.
ARRAYS: list[str] = []
SNAPSHOT_VERSION = 2


def rssi_band(rssi_dbm: float) -> str:
    for name, low in RSSI_BANDS:
        if rssi_dbm >= low:
            return name
    return "poor"


class _LeanReading(msgspec.Struct, tag_field="type", tag="reading"):
    meter: str
    zone: str
    time_ms: int
    drawn_va: int = 0
    injected_va: int = 0
    withdrawn_wh: int = 0


class _LeanBatch(msgspec.Struct, tag_field="type", tag="batch"):
    readings: list[_LeanReading]


_lean = msgspec.json.Decoder(_LeanReading | _LeanBatch)


@dataclass
class FleetFigures:
    at_ms: int
    modules: int
    connected: int
    disconnected: int
    never_seen: int
    firmware: dict[str, int]
    hardware: dict[str, int]
    rssi_bands: dict[str, int]
    frame_gap_p50_ms: float | None
    frame_gap_p95_ms: float | None
    power_drawn_va: int
    power_injected_va: int
    yesterday_wh: int | None
    yesterday_modules: int
    ingest_down_since_ms: int | None
    open_alerts: list[dict[str, Any]]
    connected_curve: list[tuple[int, int, int]]

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


class FleetProjection:
    def __init__(self, time_zone: str = "Europe/Paris", gap_window_ms: int = 3_600_000, capacity: int = 1024) -> None:
        self.tz = ZoneInfo(time_zone)
        self.gap_window_ms = gap_window_ms
        self.rows: dict[str, int] = {}
        self.meters: list[str] = []
        self.zones: list[str] = []
        self._zone_index: dict[str, int] = {}
        self.firmware_names: list[str] = []
        self._firmware_index: dict[str, int] = {}
        self.hardware_names: list[str] = []
        self._hardware_index: dict[str, int] = {}
        self._capacity = 0
        self._grow(capacity)
        #: The newest meter time seen on meter.readings: the fleet's clock.
        self.watermark_ms = -1
        self.readings = 0
        self.malformed = 0
        self.telemetry_reports = 0
        #: Disconnected episodes per module row: [start_ms, end_ms or None, source].
        self.episodes: dict[int, list[list[Any]]] = {}
        self.reboot_times: dict[int, deque[int]] = {}
        self.energy_by_day: dict[int, int] = {}  # local day ordinal -> Wh withdrawn by the modules seen on both ends
        self.energy_modules_by_day: dict[int, int] = {}
        self.ingest_down_since_ms: int | None = None
        self.curve: deque[tuple[int, int, int]] = deque(maxlen=FLEET_CURVE_DAYS * DAY_MS // FLEET_CURVE_STEP_MS)
        self._offsets: dict[int, int] = {}
        self._batch_rows: dict[tuple[str, ...], tuple[np.ndarray, bool]] = {}

    # --- storage -------------------------------------------------------------------------------

    def _grow(self, capacity: int) -> None:
        old = self._capacity
        if capacity <= old:
            return

        def grown(name: str, dtype: Any, fill: Any, shape: tuple[int, ...] = ()) -> None:
            if name not in ARRAYS:
                ARRAYS.append(name)
            new = np.full((capacity, *shape), fill, dtype=dtype)
            if old:
                new[:old] = getattr(self, name)
            setattr(self, name, new)

        grown("last_ms", np.int64, -1)
        grown("first_ms", np.int64, -1)
        grown("connected", bool, False)
        grown("since_ms", np.int64, -1)
        grown("alert_open", bool, False)
        grown("zone", np.int32, -1)
        grown("drawn_va", np.int64, 0)
        grown("injected_va", np.int64, 0)
        grown("day", np.int64, -1)
        grown("day_first_wh", np.int64, -1)
        grown("last_wh", np.int64, -1)
        grown("hist_now", np.uint32, 0, (BUCKETS,))
        grown("hist_prev", np.uint32, 0, (BUCKETS,))
        grown("hist_total", np.uint32, 0, (BUCKETS,))
        grown("hist_window", np.int64, -1)
        grown("cadence_ms", float, 0.0)
        grown("gap_p50_ms", float, np.nan)
        grown("gap_p95_ms", float, np.nan)
        grown("rssi_dbm", float, np.nan)
        grown("rssi_short", float, np.nan)
        grown("rssi_long", float, np.nan)
        grown("firmware", np.int32, -1)
        grown("firmware_since_ms", np.int64, -1)
        grown("hardware", np.int32, -1)
        grown("uptime_s", np.int64, -1)
        grown("boot_ms", np.int64, -1)
        grown("reboots", np.uint32, 0)
        grown("telemetry_ms", np.int64, -1)
        self._capacity = capacity

    def _row(self, meter: str) -> int:
        row = self.rows.get(meter)
        if row is None:
            row = len(self.meters)
            if row >= self._capacity:
                self._grow(self._capacity * 2)
            self.rows[meter] = row
            self.meters.append(meter)
        return row

    @property
    def size(self) -> int:
        return len(self.meters)

    @staticmethod
    def _intern(value: str, names: list[str], index: dict[str, int]) -> int:
        i = index.get(value)
        if i is None:
            i = index[value] = len(names)
            names.append(value)
        return i

    def _local_day(self, t_ms: np.ndarray) -> np.ndarray:
        lo, hi = int(t_ms.min()), int(t_ms.max())
        off_lo, off_hi = self._offset_ms(lo), self._offset_ms(hi)
        if off_lo == off_hi:
            return (t_ms + off_lo) // DAY_MS
        return np.array([(int(t) + self._offset_ms(int(t))) // DAY_MS for t in t_ms.tolist()], dtype=np.int64)

    def _offset_ms(self, t_ms: int) -> int:
        hour = t_ms // 3_600_000
        off = self._offsets.get(hour)
        if off is None:
            delta = datetime.fromtimestamp(hour * 3600, timezone.utc).astimezone(self.tz).utcoffset()
            off = self._offsets[hour] = int(delta.total_seconds() * 1000) if delta else 0
        return off

    def local_day_of(self, t_ms: int) -> int:
        return (t_ms + self._offset_ms(t_ms)) // DAY_MS

    # --- inputs ----------------------------------------------------------------------------------

    def on_readings_message(self, value: bytes) -> int:
        """One ``meter.readings`` message (a batch or a single reading); returns the readings folded."""
        try:
            decoded = _lean.decode(value)
        except (msgspec.ValidationError, msgspec.DecodeError):
            self.malformed += 1
            return 0
        readings = decoded.readings if isinstance(decoded, _LeanBatch) else [decoded]
        if not readings:
            return 0
        # A shard's batches carry the same meters step after step: their rows are looked up once.
        key = tuple([r.meter for r in readings])
        cached = self._batch_rows.get(key)
        if cached is None:
            rows = np.array([self._row(m) for m in key], dtype=np.int64)
            cached = (rows, len(np.unique(rows)) == len(rows))
            if len(self._batch_rows) >= 8192:
                self._batch_rows.clear()
            self._batch_rows[key] = cached
        rows, unique = cached
        if not unique:
            # Several readings of one meter in one message (a backfill batch): fold them in order.
            for r, row in zip(readings, rows.tolist()):
                self._fold(np.array([row]), [r])
        else:
            self._fold(rows, readings)
        return len(readings)

    def _fold(self, rows: np.ndarray, readings: list[_LeanReading]) -> None:
        n = len(readings)
        t = np.array([r.time_ms for r in readings], dtype=np.int64)
        wh = np.array([r.withdrawn_wh for r in readings], dtype=np.int64)
        self.drawn_va[rows] = np.array([r.drawn_va for r in readings], dtype=np.int64)
        self.injected_va[rows] = np.array([r.injected_va for r in readings], dtype=np.int64)
        self.readings += n
        top = int(t.max())
        if top > self.watermark_ms:
            self.watermark_ms = top
        # Each module's histogram covers its own current and previous hour of meter time, so the
        # result does not depend on the order partitions are consumed in (a backfill, a restart).
        window = t // self.gap_window_ms
        moved = window != self.hist_window[rows]
        if moved.any():
            m_rows = rows[moved]
            follows = window[moved] == self.hist_window[m_rows] + 1
            self.hist_prev[m_rows] = np.where(follows[:, None], self.hist_now[m_rows], 0)
            self.hist_now[m_rows] = 0
            self.hist_window[m_rows] = window[moved]

        last = self.last_ms[rows]
        seen = last >= 0
        gaps = t[seen] - last[seen]
        if len(gaps):
            bucket = np.searchsorted(GAP_EDGES_MS, np.maximum(gaps, 0), side="left")
            seen_rows = rows[seen]
            self.hist_now[seen_rows, bucket] += 1
            self.hist_total[seen_rows, bucket] += 1
            cadence = self.cadence_ms[seen_rows]
            gaps_f = gaps.astype(float)
            self.cadence_ms[seen_rows] = np.where(
                cadence > 0, cadence + CADENCE_WEIGHT * (np.minimum(gaps_f, 2 * cadence) - cadence), gaps_f
            )
        new = rows[~seen]
        if len(new):
            self.first_ms[new] = t[~seen]
            for i in np.flatnonzero(~seen).tolist():
                self.zone[rows[i]] = self._intern(readings[i].zone, self.zones, self._zone_index)
        self.last_ms[rows] = np.maximum(last, t)

        # Back from an outage (or first seen): connected since this reading.
        back = ~self.connected[rows] | self.alert_open[rows]
        if back.any():
            for i in np.flatnonzero(back).tolist():
                self._set_connected(int(rows[i]), True, int(t[i]), "reading")

        # Daily energy: the first index of a local day closes the previous day of that module.
        day = self._local_day(t)
        current = self.day[rows]
        rolled = day != current
        if rolled.any():
            r_rows = rows[rolled]
            closing = (current[rolled] >= 0) & (day[rolled] == current[rolled] + 1)
            if closing.any():
                deltas = wh[rolled][closing] - self.day_first_wh[r_rows[closing]]
                for d, delta in zip(current[rolled][closing].tolist(), deltas.tolist()):
                    self.energy_by_day[d] = self.energy_by_day.get(d, 0) + int(delta)
                    self.energy_modules_by_day[d] = self.energy_modules_by_day.get(d, 0) + 1
            self.day[r_rows] = day[rolled]
            self.day_first_wh[r_rows] = wh[rolled]
        self.last_wh[rows] = wh

    def on_telemetry(self, report: DeviceTelemetry) -> None:
        row = self._row(report.meter)
        self.telemetry_reports += 1
        if report.time_ms < self.telemetry_ms[row]:
            return  # an older report than one already folded
        self.telemetry_ms[row] = report.time_ms
        rssi = float(report.rssi_dbm)
        self.rssi_dbm[row] = rssi
        if np.isnan(self.rssi_short[row]):
            self.rssi_short[row] = self.rssi_long[row] = rssi
        else:
            # Two moving averages, about 5 and 60 reports long: their difference is the trend.
            self.rssi_short[row] += 0.2 * (rssi - self.rssi_short[row])
            self.rssi_long[row] += (1 / 60) * (rssi - self.rssi_long[row])
        firmware = self._intern(report.firmware, self.firmware_names, self._firmware_index)
        if firmware != self.firmware[row]:
            self.firmware[row] = firmware
            self.firmware_since_ms[row] = report.time_ms
        if report.hardware:
            self.hardware[row] = self._intern(report.hardware, self.hardware_names, self._hardware_index)
        boot = report.time_ms - report.uptime_s * 1000
        if self.boot_ms[row] >= 0 and boot > self.boot_ms[row] + REBOOT_TOLERANCE_MS:
            self.reboots[row] += 1
            self.reboot_times.setdefault(row, deque()).append(boot)
        if self.boot_ms[row] < 0 or boot > self.boot_ms[row] + REBOOT_TOLERANCE_MS:
            self.boot_ms[row] = boot
        self.uptime_s[row] = report.uptime_s

    def on_alert(self, alert: AlertEvent) -> None:
        if alert.kind == "ingest_down":
            self.ingest_down_since_ms = alert.episode_start_ms if alert.state == "raised" else None
            return
        if alert.kind != "disconnected" or alert.meter is None:
            return
        row = self._row(alert.meter)
        if alert.state == "raised":
            # Raised at the last reading plus the deadman's limit; a reading after it wins.
            if alert.episode_start_ms > self.last_ms[row]:
                self.alert_open[row] = True
                if self.connected[row]:
                    self._set_connected(row, False, alert.episode_start_ms, "stream worker")
        else:
            self.alert_open[row] = False

    def _set_connected(self, row: int, connected: bool, at_ms: int, source: str) -> None:
        if connected:
            self.alert_open[row] = False
            episodes = self.episodes.get(row)
            if episodes and episodes[-1][1] is None:
                episodes[-1][1] = at_ms
        else:
            self.episodes.setdefault(row, []).append([at_ms, None, source])
        self.connected[row] = connected
        self.since_ms[row] = at_ms

    # --- snapshots -------------------------------------------------------------------------------

    def save(self, path: Any, positions: dict[str, int]) -> None:
        """Writes the whole projection and the topic positions it reflects (``"topic:partition"`` ->
        next offset) to ``path`` atomically (a temporary file renamed over it), so a restart resumes
        from exactly there: no reading folded twice, none skipped."""
        write_snapshot(path, self.snapshot(positions))

    def snapshot(self, positions: dict[str, int]) -> dict[str, Any]:
        """A copy of everything a snapshot holds, taken at once (the fold may go on while it is written)."""
        n = self.size
        meta = {
            "version": SNAPSHOT_VERSION, "positions": dict(positions), "meters": list(self.meters), "zones": list(self.zones),
            "firmware_names": list(self.firmware_names), "hardware_names": list(self.hardware_names),
            "watermark_ms": self.watermark_ms, "readings": self.readings, "malformed": self.malformed,
            "telemetry_reports": self.telemetry_reports,
            "episodes": {str(k): [list(e) for e in v] for k, v in self.episodes.items()},
            "reboot_times": {str(k): list(v) for k, v in self.reboot_times.items()},
            "energy_by_day": {str(k): v for k, v in self.energy_by_day.items()},
            "energy_modules_by_day": {str(k): v for k, v in self.energy_modules_by_day.items()},
            "ingest_down_since_ms": self.ingest_down_since_ms, "curve": list(self.curve),
        }
        return {"meta": msgspec.json.encode(meta), **{name: getattr(self, name)[:n].copy() for name in ARRAYS}}

    @classmethod
    def load(cls, path: Any, time_zone: str = "Europe/Paris") -> tuple["FleetProjection", dict[str, int]] | None:
        """The projection a snapshot holds and its positions, or None when there is none (or an older format)."""
        from pathlib import Path

        path = Path(path)
        if not path.exists():
            return None
        with np.load(path) as data:
            meta = msgspec.json.decode(data["meta"].tobytes())
            if meta.get("version") != SNAPSHOT_VERSION:
                return None
            n = len(meta["meters"])
            fleet = cls(time_zone=time_zone, capacity=max(1024, n))
            for name in ARRAYS:
                if name in data:
                    getattr(fleet, name)[:n] = data[name]
        fleet.meters = list(meta["meters"])
        fleet.rows = {m: i for i, m in enumerate(fleet.meters)}
        for attr, index in (("zones", "_zone_index"), ("firmware_names", "_firmware_index"), ("hardware_names", "_hardware_index")):
            setattr(fleet, attr, list(meta[attr]))
            setattr(fleet, index, {v: i for i, v in enumerate(meta[attr])})
        fleet.watermark_ms = meta["watermark_ms"]
        fleet.readings, fleet.malformed, fleet.telemetry_reports = meta["readings"], meta["malformed"], meta["telemetry_reports"]
        fleet.episodes = {int(k): v for k, v in meta["episodes"].items()}
        fleet.reboot_times = {int(k): deque(v) for k, v in meta["reboot_times"].items()}
        fleet.energy_by_day = {int(k): v for k, v in meta["energy_by_day"].items()}
        fleet.energy_modules_by_day = {int(k): v for k, v in meta["energy_modules_by_day"].items()}
        fleet.ingest_down_since_ms = meta["ingest_down_since_ms"]
        fleet.curve.extend(tuple(p) for p in meta["curve"])
        return fleet, dict(meta["positions"])

    # --- periodic work ---------------------------------------------------------------------------

    def refresh(self, now_ms: int | None = None) -> None:
        """Judges connectivity, recomputes frame-gap percentiles, samples the curve, prunes history."""
        n = self.size
        if not n:
            return
        now = self.watermark_ms if now_ms is None else now_ms
        self._percentiles()
        if now < 0:
            return
        if self.ingest_down_since_ms is None:
            limit = deadman_limit_ms(self.cadence_ms[:n])
            last = self.last_ms[:n]
            silent = self.connected[:n] & (last >= 0) & (now - last >= limit)
            for row in np.flatnonzero(silent).tolist():
                self._set_connected(row, False, int(last[row] + limit[row]), "deadman")
        step = now // FLEET_CURVE_STEP_MS * FLEET_CURVE_STEP_MS
        if not self.curve or self.curve[-1][0] < step:
            connected = int(self.connected[:n].sum())
            self.curve.append((step, connected, int((self.last_ms[:n] >= 0).sum()) - connected))
        horizon = now - HISTORY_MS
        for row, episodes in self.episodes.items():
            while episodes and episodes[0][1] is not None and episodes[0][1] < horizon:
                episodes.pop(0)
        for row, boots in self.reboot_times.items():
            while boots and boots[0] < horizon:
                boots.popleft()

    def _percentiles(self) -> None:
        n = self.size
        hist = self.hist_now[:n].astype(np.int64) + self.hist_prev[:n]
        self.gap_p50_ms[:n] = percentile(hist, 0.50)
        self.gap_p95_ms[:n] = percentile(hist, 0.95)

    # --- reading -----------------------------------------------------------------------------------

    def row_of(self, meter: str) -> int | None:
        return self.rows.get(meter)

    def firmware_of(self, meter: str) -> tuple[str | None, int]:
        row = self.rows.get(meter)
        if row is None or self.firmware[row] < 0:
            return None, -1
        return self.firmware_names[self.firmware[row]], int(self.telemetry_ms[row])

    def rssi_band_index(self) -> np.ndarray:
        """Per module: index into RSSI_BANDS (-1 when no report yet)."""
        rssi = self.rssi_dbm[: self.size]
        out = np.full(self.size, -1, dtype=np.int8)
        for i in range(len(RSSI_BANDS) - 1, -1, -1):
            out[rssi >= RSSI_BANDS[i][1]] = i
        return out

    def fleet(self) -> FleetFigures:
        n = self.size
        seen = self.last_ms[:n] >= 0
        connected = self.connected[:n]
        firmware = np.bincount(self.firmware[:n][self.firmware[:n] >= 0], minlength=len(self.firmware_names))
        hardware = np.bincount(self.hardware[:n][self.hardware[:n] >= 0], minlength=len(self.hardware_names))
        bands = self.rssi_band_index()
        pooled = (self.hist_now[:n].astype(np.int64) + self.hist_prev[:n]).sum(axis=0)[None, :]
        today = self.local_day_of(self.watermark_ms) if self.watermark_ms >= 0 else None
        yesterday = None if today is None else today - 1
        disconnected = int((seen & ~connected).sum())
        open_alerts: list[dict[str, Any]] = []
        if self.ingest_down_since_ms is not None:
            open_alerts.append({"kind": "ingest_down", "since_ms": self.ingest_down_since_ms})
        known = int(seen.sum())
        if known and disconnected / known >= MASS_DISCONNECT_SHARE:
            open_alerts.append({"kind": "mass_disconnect", "disconnected": disconnected, "share": round(disconnected / known, 4)})
        p = percentile(pooled, 0.5)[0], percentile(pooled, 0.95)[0]
        return FleetFigures(
            at_ms=self.watermark_ms,
            modules=n,
            connected=int(connected.sum()),
            disconnected=disconnected,
            never_seen=int((~seen).sum()),
            firmware={name: int(firmware[i]) for i, name in enumerate(self.firmware_names) if firmware[i]},
            hardware={name: int(hardware[i]) for i, name in enumerate(self.hardware_names) if hardware[i]},
            rssi_bands={name: int((bands == i).sum()) for i, (name, _) in enumerate(RSSI_BANDS)},
            frame_gap_p50_ms=None if np.isnan(p[0]) else round(float(p[0]), 1),
            frame_gap_p95_ms=None if np.isnan(p[1]) else round(float(p[1]), 1),
            power_drawn_va=int(self.drawn_va[:n][connected].sum()),
            power_injected_va=int(self.injected_va[:n][connected].sum()),
            yesterday_wh=None if yesterday is None else self.energy_by_day.get(yesterday),
            yesterday_modules=0 if yesterday is None else self.energy_modules_by_day.get(yesterday, 0),
            ingest_down_since_ms=self.ingest_down_since_ms,
            open_alerts=open_alerts,
            connected_curve=list(self.curve),
        )

    def module(self, meter: str) -> dict[str, Any] | None:
        row = self.rows.get(meter)
        if row is None:
            return None
        def num(a: np.ndarray, ndigits: int = 1) -> float | None:
            v = float(a[row])
            return None if np.isnan(v) else round(v, ndigits)
        rssi = num(self.rssi_dbm, 0)
        return {
            "meter": meter,
            "zone": self.zones[self.zone[row]] if self.zone[row] >= 0 else None,
            "connected": bool(self.connected[row]),
            "since_ms": int(self.since_ms[row]),
            "last_reading_ms": int(self.last_ms[row]),
            "first_seen_ms": int(self.first_ms[row]),
            "frame_gap_p50_ms": num(self.gap_p50_ms),
            "frame_gap_p95_ms": num(self.gap_p95_ms),
            "rssi_dbm": rssi,
            "rssi_band": None if rssi is None else rssi_band(rssi),
            "rssi_trend_db": None if np.isnan(self.rssi_short[row]) else round(float(self.rssi_short[row] - self.rssi_long[row]), 1),
            "firmware": self.firmware_names[self.firmware[row]] if self.firmware[row] >= 0 else None,
            "firmware_since_ms": int(self.firmware_since_ms[row]),
            "hardware": self.hardware_names[self.hardware[row]] if self.hardware[row] >= 0 else None,
            "uptime_s": int(self.uptime_s[row]),
            "reboots": int(self.reboots[row]),
            "reboot_times_ms": list(self.reboot_times.get(row, ())),
            "drawn_va": int(self.drawn_va[row]),
            "disconnections": [
                {"from_ms": e[0], "to_ms": e[1], "source": e[2]} for e in self.episodes.get(row, [])
            ],
        }


def write_snapshot(path: Any, payload: dict[str, Any]) -> None:
    """Writes a :meth:`FleetProjection.snapshot` to ``path`` through a temporary file renamed over it."""
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {k: v for k, v in payload.items() if k != "meta"}
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as out:
        np.savez(out, meta=np.frombuffer(payload["meta"], dtype=np.uint8), **arrays)
    tmp.replace(path)


def deadman_limit_ms(cadence_ms: np.ndarray) -> np.ndarray:
    """How long each module may stay silent before it counts as disconnected (ms)."""
    return np.maximum(DEADMAN_CADENCES * np.where(cadence_ms > 0, cadence_ms, 1000.0), DEADMAN_MIN_MS)


def percentile(hist: np.ndarray, q: float) -> np.ndarray:
    """Per row of a gap histogram: the q-quantile (ms), linear within its bucket; NaN for an empty row."""
    counts = hist.astype(np.int64)
    total = counts.sum(axis=1)
    cum = np.cumsum(counts, axis=1)
    target = q * total
    bucket = np.minimum((cum < target[:, None]).sum(axis=1), BUCKETS - 1)
    rows = np.arange(len(counts))
    below = np.where(bucket > 0, cum[rows, np.maximum(bucket - 1, 0)], 0)
    inside = counts[rows, bucket]
    lower = np.concatenate([_GAP_LOWER_MS, [float(GAP_EDGES_MS[-1])]])[bucket]
    upper = np.concatenate([GAP_EDGES_MS.astype(float), [float(GAP_EDGES_MS[-1]) * 2]])[bucket]
    share = np.where(inside > 0, (target - below) / np.maximum(inside, 1), 0.0)
    value = lower + np.clip(share, 0.0, 1.0) * (upper - lower)
    return np.where(total > 0, value, np.nan)
