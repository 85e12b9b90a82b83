"""Firmware roll-outs: a fold of ``devices.events``, and the commands that append to it.

``DeviceState.apply`` is the one place that says what an event does (one handler table). It reads
no clock and draws no random number, so folding the same log always gives the same campaigns:
``rebuild`` is that fold. Commands (:func:`release_firmware`, :func:`create_campaign`,
:func:`pause`, :func:`resume`, :func:`abort`, :func:`roll_back`) validate against the state and
only *return* events; the caller appends them to the log and applies them. The runner's decisions
(console/runner.py) are commands too, taking the time and the fleet's health as arguments.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from quartier import events as ev

#: Module statuses inside a campaign.
ASSIGNED = "assigned"  # in a started phase, not asked yet
REQUESTED = "requested"  # asked; waiting for the module to report the firmware
RETRY = "retry"  # an attempt timed out; asked again at retry_at_ms
UPDATED = "updated"  # reported the campaign's firmware
FAILED = "failed"  # out of attempts
ROLLBACK = "rollback"  # updated, then the campaign rolled back: to be asked for its old firmware
ROLLBACK_REQUESTED = "rollback_requested"
ROLLED_BACK = "rolled_back"

#: Campaign statuses.
RUNNING = "running"
PAUSED = "paused"
ABORTED = "aborted"
ROLLED_BACK_CAMPAIGN = "rolled_back"
COMPLETED = "completed"
FINAL = frozenset({ABORTED, ROLLED_BACK_CAMPAIGN, COMPLETED})


class CommandError(ValueError):
    """A command the state refuses; names the field and the reason (a 4xx for the REST layer)."""

    def __init__(self, field: str, reason: str, status: int = 422) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
        self.status = status


class ProjectionError(RuntimeError):
    """An event that does not fit the state the log built so far."""


@dataclass(slots=True)
class Firmware:
    version: str
    notes: str
    hardware: tuple[str, ...]
    released_ms: int


@dataclass(slots=True)
class ModuleUpdate:
    meter: str
    phase: int
    previous_firmware: str
    status: str = ASSIGNED
    attempts: int = 0
    requested_ms: int | None = None
    retry_at_ms: int | None = None
    updated_ms: int | None = None  # time of the telemetry report that showed the new firmware
    reason: str = ""


@dataclass(slots=True)
class Campaign:
    campaign: str
    firmware: str
    group: ev.ModuleGroup
    phases: tuple[ev.PhasePlan, ...]
    guard: ev.HealthGuard
    rate_per_min: int
    window_start_hour: int
    window_end_hour: int
    time_zone: str
    attempt_timeout_s: float
    max_attempts: int
    retry_base_s: float
    operator: str
    created_ms: int
    status: str = RUNNING
    phase: int = -1  # index of the current phase; -1 before the first starts
    phase_started_ms: int | None = None
    phase_expected: int = 0  # modules the current phase's PhaseStarted announced
    modules: dict[str, ModuleUpdate] = field(default_factory=dict)
    phase_members: list[list[str]] = field(default_factory=list)
    last_pause: ev.CampaignPaused | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    updated_ms: int = 0

    def count(self, status: str, phase: int | None = None) -> int:
        return sum(1 for m in self.modules.values() if m.status == status and (phase is None or m.phase == phase))

    def phase_modules(self, phase: int) -> list[ModuleUpdate]:
        return [self.modules[m] for m in self.phase_members[phase]] if 0 <= phase < len(self.phase_members) else []

    def summary(self) -> dict[str, Any]:
        statuses: dict[str, int] = {}
        for m in self.modules.values():
            statuses[m.status] = statuses.get(m.status, 0) + 1
        return {
            "campaign": self.campaign,
            "firmware": self.firmware,
            "status": self.status,
            "phase": self.phases[self.phase].name if self.phase >= 0 else None,
            "phase_index": self.phase,
            "phases": [p.name for p in self.phases],
            "modules": len(self.modules),
            "by_status": statuses,
            "paused": None if self.last_pause is None or self.status != PAUSED else {
                "by": self.last_pause.by, "reason": self.last_pause.reason, "figures": dict(self.last_pause.figures),
            },
            "created_ms": self.created_ms,
            "updated_ms": self.updated_ms,
        }


@dataclass(frozen=True)
class OperatorCommand:
    """An operator's command as its event recorded it: the console's "recent operator actions".

    Commands are not reads of anyone's personal data, so they are not in the access log: their events
    on ``devices.events`` are the record (who, when, what, why), and rebuilding the fold gives them back."""

    at_ms: int
    operator: str  # the account id ("" in records written before events carried it)
    action: str  # "firmware_release", "campaign_create", "campaign_pause", "campaign_resume", ...
    target: str  # the firmware version or the campaign id
    reason: str = ""


#: How many operator commands the fold keeps for the console's view (the log keeps them all).
RECENT_COMMANDS = 500


class DeviceState:
    def __init__(self) -> None:
        self.firmware: dict[str, Firmware] = {}
        self.campaigns: dict[str, Campaign] = {}
        #: The newest operator commands, oldest first.
        self.commands: deque[OperatorCommand] = deque(maxlen=RECENT_COMMANDS)
        #: Next offset to apply, per partition of devices.events.
        self.positions: dict[int, int] = {}
        self._where = ""

    def apply(self, event: ev.Record, partition: int | None = None, offset: int | None = None) -> None:
        self._where = f" (devices.events partition {partition} offset {offset})" if partition is not None else ""
        handler = _HANDLERS.get(type(event))
        if handler is None:
            raise ProjectionError(f"no handler for {type(event).__name__}{self._where}")
        handler(self, event)
        if partition is not None and offset is not None:
            self.positions[partition] = offset + 1

    def campaign(self, campaign_id: str) -> Campaign:
        found = self.campaigns.get(campaign_id)
        if found is None:
            raise ProjectionError(f"unknown campaign {campaign_id!r}{self._where}")
        return found

    def module(self, campaign_id: str, meter: str) -> ModuleUpdate:
        found = self.campaign(campaign_id).modules.get(meter)
        if found is None:
            raise ProjectionError(f"meter {meter} is not in campaign {campaign_id!r}{self._where}")
        return found

    def active_campaign_of(self, meter: str) -> str | None:
        for c in self.campaigns.values():
            if c.status not in FINAL and meter in c.modules:
                return c.campaign
        return None

    # --- handlers ------------------------------------------------------------------------------

    def _firmware_released(self, e: ev.FirmwareReleased) -> None:
        if e.version in self.firmware:
            raise ProjectionError(f"firmware {e.version} released twice{self._where}")
        self.firmware[e.version] = Firmware(e.version, e.notes, tuple(e.hardware), e.at_ms)
        self.commands.append(OperatorCommand(e.at_ms, e.operator, "firmware_release", e.version))

    def _created(self, e: ev.CampaignCreated) -> None:
        if e.campaign in self.campaigns:
            raise ProjectionError(f"campaign {e.campaign!r} created twice{self._where}")
        self.campaigns[e.campaign] = Campaign(
            campaign=e.campaign, firmware=e.firmware, group=e.group, phases=tuple(e.phases), guard=e.guard,
            rate_per_min=e.rate_per_min, window_start_hour=e.window_start_hour, window_end_hour=e.window_end_hour,
            time_zone=e.time_zone, attempt_timeout_s=e.attempt_timeout_s, max_attempts=e.max_attempts,
            retry_base_s=e.retry_base_s, operator=e.operator, created_ms=e.at_ms, updated_ms=e.at_ms,
        )
        self._log(self.campaigns[e.campaign], e, f"created by {e.operator or 'operator'}")
        self.commands.append(OperatorCommand(e.at_ms, e.operator, "campaign_create", e.campaign))

    def _phase_started(self, e: ev.PhaseStarted) -> None:
        c = self.campaign(e.campaign)
        if e.phase != c.phase + 1 or e.phase >= len(c.phases):
            raise ProjectionError(f"phase {e.phase} of {e.campaign!r} after phase {c.phase}{self._where}")
        c.phase = e.phase
        c.phase_started_ms = e.at_ms
        c.phase_expected = e.modules
        c.phase_members.append([])
        c.updated_ms = e.at_ms
        self._log(c, e, f"phase {c.phases[e.phase].name} started with {e.modules} modules")

    def _assigned(self, e: ev.ModulesAssigned) -> None:
        c = self.campaign(e.campaign)
        if e.phase != c.phase or len(e.previous_firmware) != len(e.meters):
            raise ProjectionError(f"modules assigned to phase {e.phase} of {e.campaign!r}{self._where}")
        for meter, previous in zip(e.meters, e.previous_firmware):
            if meter in c.modules:
                raise ProjectionError(f"meter {meter} assigned twice to {e.campaign!r}{self._where}")
            c.modules[meter] = ModuleUpdate(meter=meter, phase=e.phase, previous_firmware=previous)
            c.phase_members[e.phase].append(meter)
        c.updated_ms = e.at_ms

    def _requested(self, e: ev.UpdateRequested) -> None:
        m = self.module(e.campaign, e.meter)
        m.status = ROLLBACK_REQUESTED if m.status in (ROLLBACK, ROLLBACK_REQUESTED) else REQUESTED
        m.attempts = e.attempt
        m.requested_ms = e.at_ms
        m.retry_at_ms = None
        self.campaigns[e.campaign].updated_ms = e.at_ms

    def _updated(self, e: ev.ModuleUpdated) -> None:
        c = self.campaign(e.campaign)
        m = self.module(e.campaign, e.meter)
        if m.status == ROLLBACK_REQUESTED and e.firmware == m.previous_firmware:
            m.status = ROLLED_BACK
        else:
            m.status = UPDATED
        m.updated_ms = e.reported_ms
        m.retry_at_ms = None
        c.updated_ms = e.at_ms

    def _failed(self, e: ev.UpdateFailed) -> None:
        m = self.module(e.campaign, e.meter)
        m.reason = e.reason
        if m.status in (ROLLBACK, ROLLBACK_REQUESTED):
            m.status = ROLLBACK if e.retry_at_ms is not None else FAILED
        else:
            m.status = RETRY if e.retry_at_ms is not None else FAILED
        m.retry_at_ms = e.retry_at_ms
        self.campaigns[e.campaign].updated_ms = e.at_ms

    def _paused(self, e: ev.CampaignPaused) -> None:
        c = self.campaign(e.campaign)
        c.status = PAUSED
        c.last_pause = e
        c.updated_ms = e.at_ms
        self._log(c, e, f"paused by {e.by}: {e.reason}", figures=dict(e.figures))
        if e.by == "operator":
            self.commands.append(OperatorCommand(e.at_ms, e.operator, "campaign_pause", e.campaign, e.reason))

    def _resumed(self, e: ev.CampaignResumed) -> None:
        c = self.campaign(e.campaign)
        c.status = RUNNING
        c.updated_ms = e.at_ms
        self._log(c, e, f"resumed by {e.operator or 'operator'}")
        self.commands.append(OperatorCommand(e.at_ms, e.operator, "campaign_resume", e.campaign))

    def _aborted(self, e: ev.CampaignAborted) -> None:
        c = self.campaign(e.campaign)
        c.status = ABORTED
        c.updated_ms = e.at_ms
        self._log(c, e, f"aborted by {e.operator or 'operator'}: {e.reason}")
        self.commands.append(OperatorCommand(e.at_ms, e.operator, "campaign_abort", e.campaign, e.reason))

    def _rolled_back(self, e: ev.CampaignRolledBack) -> None:
        c = self.campaign(e.campaign)
        c.status = ROLLED_BACK_CAMPAIGN
        for m in c.modules.values():
            if m.status == UPDATED:
                m.status = ROLLBACK
                m.attempts = 0
        c.updated_ms = e.at_ms
        self._log(c, e, f"rolled back by {e.operator or 'operator'}: {e.reason}")
        self.commands.append(OperatorCommand(e.at_ms, e.operator, "campaign_rollback", e.campaign, e.reason))

    def _completed(self, e: ev.CampaignCompleted) -> None:
        c = self.campaign(e.campaign)
        c.status = COMPLETED
        c.updated_ms = e.at_ms
        self._log(c, e, f"completed: {e.updated} updated, {e.failed} failed")

    @staticmethod
    def _log(c: Campaign, e: ev.Record, text: str, **extra: Any) -> None:
        c.history.append({"at_ms": e.at_ms, "event": type(e).__name__, "text": text, **extra})


_HANDLERS: dict[type, Callable[[DeviceState, Any], None]] = {
    ev.FirmwareReleased: DeviceState._firmware_released,
    ev.CampaignCreated: DeviceState._created,
    ev.PhaseStarted: DeviceState._phase_started,
    ev.ModulesAssigned: DeviceState._assigned,
    ev.UpdateRequested: DeviceState._requested,
    ev.ModuleUpdated: DeviceState._updated,
    ev.UpdateFailed: DeviceState._failed,
    ev.CampaignPaused: DeviceState._paused,
    ev.CampaignResumed: DeviceState._resumed,
    ev.CampaignAborted: DeviceState._aborted,
    ev.CampaignRolledBack: DeviceState._rolled_back,
    ev.CampaignCompleted: DeviceState._completed,
}


def rebuild(log: Iterable[ev.Record]) -> DeviceState:
    """The state the log gives: what a restarted console folds from ``devices.events``."""
    state = DeviceState()
    for event in log:
        state.apply(event)
    return state


# --- operator commands ------------------------------------------------------------------------


def release_firmware(
    state: DeviceState, version: str, hardware: tuple[str, ...], notes: str, now_ms: int, operator: str = ""
) -> list[ev.Record]:
    if version in state.firmware:
        raise CommandError("version", f"firmware {version} is already in the catalogue", 409)
    if not hardware:
        raise CommandError("hardware", "name at least one hardware version the firmware runs on")
    return [ev.FirmwareReleased(version=version, notes=notes, hardware=tuple(hardware), operator=operator, at_ms=now_ms)]


DEFAULT_PHASES = (
    ev.PhasePlan(name="canary", cumulative_share=0.01, min_modules=10),
    ev.PhasePlan(name="10%", cumulative_share=0.10),
    ev.PhasePlan(name="50%", cumulative_share=0.50),
    ev.PhasePlan(name="100%", cumulative_share=1.0),
)


def create_campaign(
    state: DeviceState,
    *,
    campaign: str,
    firmware: str,
    group: ev.ModuleGroup,
    now_ms: int,
    phases: tuple[ev.PhasePlan, ...] = DEFAULT_PHASES,
    guard: ev.HealthGuard = ev.HealthGuard(),
    **options: Any,
) -> list[ev.Record]:
    if campaign in state.campaigns:
        raise CommandError("campaign", f"a campaign named {campaign!r} exists", 409)
    if firmware not in state.firmware:
        raise CommandError("firmware", f"firmware {firmware} is not in the catalogue")
    shares = [p.cumulative_share for p in phases]
    if any(b <= a for a, b in zip(shares, shares[1:])) or shares[-1] != 1.0:
        raise CommandError("phases", "cumulative shares must grow and end at 1.0")
    if group.hardware and not set(group.hardware) <= set(state.firmware[firmware].hardware):
        raise CommandError("group.hardware", f"firmware {firmware} does not run on {sorted(set(group.hardware) - set(state.firmware[firmware].hardware))}")
    return [ev.CampaignCreated(
        campaign=campaign, firmware=firmware, group=group, phases=phases, guard=guard, at_ms=now_ms,
        rate_per_min=options.pop("rate_per_min", 600),
        window_start_hour=options.pop("window_start_hour", 1),
        window_end_hour=options.pop("window_end_hour", 5),
        **options,
    )]


def _live(state: DeviceState, campaign_id: str) -> Campaign:
    c = state.campaigns.get(campaign_id)
    if c is None:
        raise CommandError("campaign", f"no campaign {campaign_id!r}", 404)
    if c.status in FINAL:
        raise CommandError("campaign", f"campaign {campaign_id!r} is {c.status}", 409)
    return c


def pause(state: DeviceState, campaign_id: str, reason: str, operator: str, now_ms: int) -> list[ev.Record]:
    c = _live(state, campaign_id)
    if c.status == PAUSED:
        raise CommandError("campaign", f"campaign {campaign_id!r} is already paused", 409)
    return [ev.CampaignPaused(campaign=campaign_id, by="operator", reason=reason, operator=operator, at_ms=now_ms)]


def resume(state: DeviceState, campaign_id: str, operator: str, now_ms: int) -> list[ev.Record]:
    c = _live(state, campaign_id)
    if c.status != PAUSED:
        raise CommandError("campaign", f"campaign {campaign_id!r} is not paused", 409)
    return [ev.CampaignResumed(campaign=campaign_id, operator=operator, at_ms=now_ms)]


def abort(state: DeviceState, campaign_id: str, reason: str, operator: str, now_ms: int) -> list[ev.Record]:
    _live(state, campaign_id)
    return [ev.CampaignAborted(campaign=campaign_id, reason=reason, operator=operator, at_ms=now_ms)]


def roll_back(state: DeviceState, campaign_id: str, reason: str, operator: str, now_ms: int) -> list[ev.Record]:
    _live(state, campaign_id)
    return [ev.CampaignRolledBack(campaign=campaign_id, reason=reason, operator=operator, at_ms=now_ms)]
