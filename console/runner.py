"""The campaign runner: what each running campaign does next, given the time and the fleet.

``CampaignRunner.tick(state, now_ms)`` returns the events to append to ``devices.events`` and the
commands to send on ``devices.commands``; it changes nothing itself (the service appends the events,
then folds them into the state, then sends the commands). Per campaign, in order:

1. **observe**: a requested module whose telemetry shows the firmware it was asked for is updated;
   one silent past the attempt timeout failed, retried after ``retry_base_s x 2^(attempt-1)`` until
   it has no attempt left;
2. **guard**: once ``min_sample`` updated modules have run the new firmware for ``observe_s``,
   their health since their update (offline share now, pooled frame-gap p95, reboots per hour) is
   compared with a control group (modules of the group not in the campaign) over the same kind of
   period; worse by more than a margin pauses the campaign with the figures;
3. **advance**: a phase whose updated share reached its success share (and whose sample the guard
   has judged) starts the next one; after the last, the campaign completes when no module is
   waiting for an attempt;
4. **request**: inside the night-time window, at most ``rate_per_min`` requests in any minute,
   modules assigned and not asked yet, then retries that are due.

Phases are filled balanced across hardware versions and RSSI bands: the eligible modules are grouped
by (hardware, band) and each group gives its share (largest remainders), in an order fixed by a hash
of the campaign and meter ids, so a rebuilt runner would pick the same modules from the same fleet.
The modules chosen are written in ``ModulesAssigned``, so the log alone rebuilds the campaign.

Health baselines (each updated module's counters at its update, the control group's at the phase's
start) are the runner's memory, not the log's: after a restart they are taken again from that moment.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import numpy as np

from console import campaigns as cs
from console.listing import ModuleFilter, mask
from console.projection import FleetProjection, percentile
from quartier import events as ev

#: Meters per ModulesAssigned event: about 15 bytes each, so a message stays well under 100 kB.
ASSIGN_CHUNK = 4000


@dataclass
class Health:
    modules: int
    offline_share: float
    frame_gap_p95_ms: float
    reboots_per_hour: float


@dataclass
class _Baselines:
    #: meter row -> (gap histogram, reboots, at ms) when it reported the new firmware.
    updated: dict[int, tuple[np.ndarray, int, int]] = field(default_factory=dict)
    control_hist: np.ndarray | None = None
    control_reboots: np.ndarray | None = None
    control_ms: int = 0
    judged_phase: int = -1  # the last phase whose sample the guard judged healthy


def group_filter(group: ev.ModuleGroup) -> ModuleFilter:
    return ModuleFilter(
        firmware=tuple(group.firmware), hardware=tuple(group.hardware), zones=tuple(group.zones),
        rssi_bands=tuple(group.rssi_bands), meters=tuple(group.meters),
    )


def in_window(c: cs.Campaign, now_ms: int) -> bool:
    hour = datetime.fromtimestamp(now_ms / 1000, timezone.utc).astimezone(ZoneInfo(c.time_zone)).hour
    start, end = c.window_start_hour, c.window_end_hour
    return start <= hour < end if start <= end else (hour >= start or hour < end)


def backoff_ms(c: cs.Campaign, attempt: int) -> int:
    return int(c.retry_base_s * 1000 * 2 ** (attempt - 1))


class CampaignRunner:
    def __init__(self, fleet: FleetProjection) -> None:
        self.fleet = fleet
        self._baselines: dict[str, _Baselines] = {}

    def tick(self, state: cs.DeviceState, now_ms: int) -> tuple[list[ev.Record], list[ev.FirmwareUpdateCommand]]:
        out: list[ev.Record] = []
        commands: list[ev.FirmwareUpdateCommand] = []
        for c in state.campaigns.values():
            if c.status == cs.RUNNING:
                self._run(state, c, now_ms, out, commands)
            elif c.status == cs.ROLLED_BACK_CAMPAIGN:
                self._roll_back(c, now_ms, out, commands)
        return out, commands

    # --- a running campaign ------------------------------------------------------------------------

    def _run(self, state: cs.DeviceState, c: cs.Campaign, now_ms: int, out: list[ev.Record],
             commands: list[ev.FirmwareUpdateCommand]) -> None:
        base = self._baselines.setdefault(c.campaign, _Baselines())
        if c.phase < 0:
            out.extend(self._start_phase(state, c, 0, now_ms))
            return
        if base.control_hist is None:
            self._take_control_baseline(c, base, now_ms)
        self._observe(c, c.firmware, now_ms, out, rollback=False)
        # Outcomes folded only after the caller applies them: count this tick's new ones by hand.
        just_updated = {e.meter for e in out if isinstance(e, ev.ModuleUpdated) and e.campaign == c.campaign}
        overridden = (c.last_pause is not None and c.last_pause.by == "health_guard"
                      and c.last_pause.figures.get("phase") == float(c.phase))
        if overridden:
            # An operator resumed a campaign its guard had paused in this phase: the phase goes on.
            base.judged_phase = c.phase
        pause = None if overridden else self._guard(c, base, now_ms, just_updated)
        if pause is not None:
            out.append(pause)
            return
        phase = c.phases[c.phase]
        members = c.phase_modules(c.phase)
        updated = sum(1 for m in members if m.status == cs.UPDATED or m.meter in just_updated)
        needed = math.ceil(phase.success_share * len(members)) if members else 0
        if updated >= needed and base.judged_phase >= c.phase:
            if c.phase + 1 < len(c.phases):
                out.extend(self._start_phase(state, c, c.phase + 1, now_ms))
                return
            waiting = sum(1 for m in c.modules.values()
                          if m.status in (cs.ASSIGNED, cs.REQUESTED, cs.RETRY) and m.meter not in just_updated
                          and not any(isinstance(e, ev.UpdateFailed) and e.meter == m.meter and e.retry_at_ms is None for e in out))
            if waiting == 0:
                done = c.count(cs.UPDATED) + len(just_updated)
                out.append(ev.CampaignCompleted(campaign=c.campaign, updated=done, failed=len(c.modules) - done, at_ms=now_ms))
                return
        if in_window(c, now_ms):
            self._request(c, c.firmware, now_ms, out, commands, rollback=False)

    def _start_phase(self, state: cs.DeviceState, c: cs.Campaign, phase: int, now_ms: int) -> list[ev.Record]:
        fleet = self.fleet
        n = fleet.size
        eligible = mask(fleet, group_filter(c.group))
        firmware = state.firmware[c.firmware]
        if fleet.firmware_names:
            target_code = fleet._firmware_index.get(c.firmware, -2)
            eligible &= fleet.firmware[:n] != target_code
        hw_ok = [i for i, name in enumerate(fleet.hardware_names) if name in firmware.hardware]
        eligible &= np.isin(fleet.hardware[:n], hw_ok)
        assigned_rows = [fleet.rows[m] for m in c.modules if m in fleet.rows]
        eligible[assigned_rows] = False
        remaining = np.flatnonzero(eligible)
        total = len(c.modules) + len(remaining)
        plan = c.phases[phase]
        if phase == len(c.phases) - 1:
            want = len(remaining)
        else:
            want = min(len(remaining), max(math.ceil(plan.cumulative_share * total) - len(c.modules), plan.min_modules))
        chosen = self._balanced(c.campaign, remaining, want)
        meters = [fleet.meters[r] for r in chosen]
        previous = [fleet.firmware_names[fleet.firmware[r]] if fleet.firmware[r] >= 0 else "" for r in chosen]
        events: list[ev.Record] = [ev.PhaseStarted(campaign=c.campaign, phase=phase, modules=len(meters), at_ms=now_ms)]
        for i in range(0, len(meters), ASSIGN_CHUNK):
            events.append(ev.ModulesAssigned(
                campaign=c.campaign, phase=phase, meters=tuple(meters[i : i + ASSIGN_CHUNK]),
                previous_firmware=tuple(previous[i : i + ASSIGN_CHUNK]), at_ms=now_ms,
            ))
        base = self._baselines.setdefault(c.campaign, _Baselines())
        base.control_hist = None  # taken again at the next tick, over the new control group
        return events

    def _balanced(self, campaign: str, rows: np.ndarray, want: int) -> list[int]:
        """``want`` of ``rows``: each hardware version gets its share (largest remainders), then
        within it each RSSI band its share; members in an order fixed by hash(campaign, meter)."""
        if want <= 0 or not len(rows):
            return []
        fleet = self.fleet
        bands = fleet.rssi_band_index()[rows]
        strata: dict[int, dict[int, list[int]]] = {}
        for row, hw, band in zip(rows.tolist(), fleet.hardware[rows].tolist(), bands.tolist()):
            strata.setdefault(hw, {}).setdefault(band, []).append(row)
        chosen: list[int] = []
        by_hw = _largest_remainders({hw: sum(map(len, b.values())) for hw, b in strata.items()}, want)
        for hw, take_hw in sorted(by_hw.items()):
            by_band = _largest_remainders({band: len(m) for band, m in strata[hw].items()}, take_hw)
            for band, take in sorted(by_band.items()):
                members = sorted(strata[hw][band], key=lambda r: hashlib.blake2b(
                    f"{campaign}|{fleet.meters[r]}".encode(), digest_size=8).digest())
                chosen.extend(members[:take])
        return chosen

    def _observe(self, c: cs.Campaign, firmware_of: str, now_ms: int, out: list[ev.Record], rollback: bool) -> None:
        fleet = self.fleet
        waiting = (cs.ROLLBACK_REQUESTED,) if rollback else (cs.REQUESTED, cs.ASSIGNED, cs.RETRY)
        timeout_ms = int(c.attempt_timeout_s * 1000)
        for m in c.modules.values():
            if m.status not in waiting:
                continue
            want = m.previous_firmware if rollback else firmware_of
            reported, at = fleet.firmware_of(m.meter)
            if reported == want and (m.requested_ms is None or at >= m.requested_ms):
                out.append(ev.ModuleUpdated(campaign=c.campaign, meter=m.meter, firmware=want,
                                            attempt=max(1, m.attempts), reported_ms=at, at_ms=now_ms))
                if not rollback:
                    row = fleet.rows[m.meter]
                    base = self._baselines.setdefault(c.campaign, _Baselines())
                    base.updated[row] = (fleet.hist_total[row].copy(), int(fleet.reboots[row]), max(at, 0))
            elif m.status in (cs.REQUESTED, cs.ROLLBACK_REQUESTED) and m.requested_ms is not None and now_ms - m.requested_ms >= timeout_ms:
                retry = now_ms + backoff_ms(c, m.attempts) if m.attempts < c.max_attempts else None
                out.append(ev.UpdateFailed(
                    campaign=c.campaign, meter=m.meter, attempt=m.attempts, retry_at_ms=retry, at_ms=now_ms,
                    reason=f"no report of firmware {want} within {c.attempt_timeout_s:g} s",
                ))

    def _request(self, c: cs.Campaign, firmware: str, now_ms: int, out: list[ev.Record],
                 commands: list[ev.FirmwareUpdateCommand], rollback: bool) -> None:
        recent = sum(1 for m in c.modules.values() if m.requested_ms is not None and now_ms - m.requested_ms < 60_000)
        budget = c.rate_per_min - recent
        if budget <= 0:
            return
        settled = {e.meter for e in out if isinstance(e, (ev.ModuleUpdated, ev.UpdateFailed)) and e.campaign == c.campaign}
        first = (cs.ROLLBACK,) if rollback else (cs.ASSIGNED,)
        due = [m for m in c.modules.values() if m.status in first and m.meter not in settled]
        due += [m for m in c.modules.values() if not rollback and m.status == cs.RETRY and m.retry_at_ms is not None
                and m.retry_at_ms <= now_ms and m.meter not in settled]
        # Retries decided in this very tick are not due yet (their retry time is in the future).
        for m in due[:budget]:
            attempt = m.attempts + 1
            version = m.previous_firmware if rollback else firmware
            if not version:
                continue
            out.append(ev.UpdateRequested(campaign=c.campaign, meter=m.meter, firmware=version, attempt=attempt, at_ms=now_ms))
            commands.append(ev.FirmwareUpdateCommand(meter=m.meter, campaign=c.campaign, firmware=version, attempt=attempt, at_ms=now_ms))

    def _roll_back(self, c: cs.Campaign, now_ms: int, out: list[ev.Record], commands: list[ev.FirmwareUpdateCommand]) -> None:
        self._observe(c, c.firmware, now_ms, out, rollback=True)
        self._request(c, c.firmware, now_ms, out, commands, rollback=True)

    # --- the health guard ------------------------------------------------------------------------

    def _take_control_baseline(self, c: cs.Campaign, base: _Baselines, now_ms: int) -> None:
        base.control_hist = self.fleet.hist_total[: self.fleet.size].copy()
        base.control_reboots = self.fleet.reboots[: self.fleet.size].astype(np.int64)
        base.control_ms = now_ms

    def health_of(self, c: cs.Campaign, now_ms: int, just_updated: set[str] = frozenset()) -> tuple[Health, Health | None] | None:  # type: ignore[assignment]
        """(updated, control) health, or None while the sample is too small; control is None when
        every module of the group is updated or being updated (nothing left to compare with)."""
        fleet = self.fleet
        base = self._baselines.get(c.campaign)
        if base is None or base.control_hist is None:
            return None
        observe_ms = int(c.guard.observe_s * 1000)
        rows = [row for row, (_, _, at) in base.updated.items()
                if now_ms - at >= observe_ms
                and (c.modules.get(fleet.meters[row]) is not None
                     and (c.modules[fleet.meters[row]].status == cs.UPDATED or fleet.meters[row] in just_updated))]
        members = c.phase_modules(c.phase)
        sample = min(c.guard.min_sample, math.ceil(c.phases[c.phase].success_share * len(members)) if members else c.guard.min_sample)
        if len(rows) < max(1, sample) or now_ms - base.control_ms < observe_ms:
            return None
        hist = np.zeros_like(fleet.hist_total[0], dtype=np.int64)
        reboots = 0
        hours = 0.0
        for row in rows:
            h0, r0, at = base.updated[row]
            hist += fleet.hist_total[row].astype(np.int64) - h0
            reboots += int(fleet.reboots[row]) - r0
            hours += (now_ms - at) / 3_600_000
        rows_arr = np.array(rows)
        updated = Health(
            modules=len(rows),
            offline_share=float((~fleet.connected[rows_arr]).mean()),
            frame_gap_p95_ms=float(percentile(hist[None, :], 0.95)[0]),
            reboots_per_hour=reboots / hours if hours else 0.0,
        )
        n = len(base.control_hist)
        control_mask = mask(fleet, group_filter(c.group))[:n] & (fleet.last_ms[:n] >= 0)
        # Not yet updated: outside the campaign, or assigned and not asked yet (a module being
        # installed is offline and rebooting on purpose: it would flatter the updated ones).
        asked = [fleet.rows[m] for m, u in c.modules.items() if u.status != cs.ASSIGNED and m in fleet.rows and fleet.rows[m] < n]
        control_mask[asked] = False
        control_rows = np.flatnonzero(control_mask)
        if not len(control_rows):
            return updated, None
        chist = (fleet.hist_total[control_rows].astype(np.int64) - base.control_hist[control_rows]).sum(axis=0)
        creboots = int((fleet.reboots[control_rows].astype(np.int64) - base.control_reboots[control_rows]).sum())
        chours = len(control_rows) * (now_ms - base.control_ms) / 3_600_000
        control = Health(
            modules=len(control_rows),
            offline_share=float((~fleet.connected[control_rows]).mean()),
            frame_gap_p95_ms=float(percentile(chist[None, :], 0.95)[0]),
            reboots_per_hour=creboots / chours if chours else 0.0,
        )
        return updated, control

    def _guard(self, c: cs.Campaign, base: _Baselines, now_ms: int, just_updated: set[str]) -> ev.CampaignPaused | None:
        judged = self.health_of(c, now_ms, just_updated)
        if judged is None:
            return None
        updated, control = judged
        if control is None:
            base.judged_phase = c.phase  # the last modules of the group: no control group left
            return None
        g = c.guard
        reasons = []
        if updated.offline_share - control.offline_share > g.offline_share_margin:
            reasons.append(f"offline share {updated.offline_share:.1%} against {control.offline_share:.1%}")
        if not np.isnan(updated.frame_gap_p95_ms) and not np.isnan(control.frame_gap_p95_ms) \
                and updated.frame_gap_p95_ms > g.frame_gap_p95_ratio * control.frame_gap_p95_ms:
            reasons.append(f"frame gap p95 {updated.frame_gap_p95_ms:.0f} ms against {control.frame_gap_p95_ms:.0f} ms")
        if updated.reboots_per_hour - control.reboots_per_hour > g.reboots_per_hour_margin:
            reasons.append(f"{updated.reboots_per_hour:.2f} reboots/h against {control.reboots_per_hour:.2f}")
        if not reasons:
            base.judged_phase = c.phase
            return None
        figures = {
            "updated_modules": float(updated.modules),
            "control_modules": float(control.modules),
            "updated_offline_share": round(updated.offline_share, 4),
            "control_offline_share": round(control.offline_share, 4),
            "updated_frame_gap_p95_ms": round(updated.frame_gap_p95_ms, 1),
            "control_frame_gap_p95_ms": round(control.frame_gap_p95_ms, 1),
            "updated_reboots_per_hour": round(updated.reboots_per_hour, 3),
            "control_reboots_per_hour": round(control.reboots_per_hour, 3),
            "phase": float(c.phase),
        }
        return ev.CampaignPaused(
            campaign=c.campaign, by="health_guard", at_ms=now_ms, figures=figures,
            reason=f"updated modules worse than the control group in phase {c.phases[c.phase].name}: " + "; ".join(reasons),
        )


def _largest_remainders(sizes: dict[int, int], want: int) -> dict[int, int]:
    """Splits ``want`` over groups in proportion to their sizes (Hamilton's method), never more than a group has."""
    total = sum(sizes.values())
    if total == 0:
        return {k: 0 for k in sizes}
    want = min(want, total)
    quotas = {k: want * v / total for k, v in sizes.items()}
    take = {k: min(sizes[k], math.floor(q)) for k, q in quotas.items()}
    for k in sorted(quotas, key=lambda k: (-(quotas[k] - take[k]), k)):
        if sum(take.values()) >= want:
            break
        if take[k] < sizes[k]:
            take[k] += 1
    return take
