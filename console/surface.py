"""The console surface (``console.surface:surface`` in ``quartier.surfaces``): ``/v1/fleet/...``.

Who sees what:

- **operator**: everything, and every command (firmware catalogue, campaigns and their pause,
  resume, abort and roll-back);
- **support**: the fleet, the module list and pages, exports, campaigns (read only); a household's
  personal data behind a module only with a reason (``why``), and that read is in the access log;
- **households** (owner, member, market participant): nothing here (403).

Every export and every read of a household's personal data is written to the access log
(``quartier.access_log``, the privacy database's hash chain) before the answer goes out: an export
as one entry per household whose module is in it. Operator commands are events on ``devices.events``
(with the operator's account id); ``/v1/fleet/audit`` shows both. Lists and figures come from the projection's
arrays (console.listing, console.projection): nothing is recomputed per request beyond the
filter, sort and page. The pairing state of each module comes from the accounts read model
(``accounts.readmodel.paired_meters``), refreshed every few seconds by the surface's lifespan.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import msgspec
import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import JSONResponse, StreamingResponse

from api import ApiError, Call, Surface, SurfaceContext, allow, operation
from api.bounds import Query as QueryModel
from api.bounds import text
from api.views import view_of
from console import campaigns as cs
from console.projection import FleetFigures
from console.listing import SORT_KEYS, ListError, ModuleFilter, Query, export_csv, export_xlsx, ordered_rows, page
from console.service import ConsoleService, build
from quartier import events as ev
from quartier.access_log import EXPORT_REFERENCE, STAFF_REASONS, AccessLog, StaffRead

log = logging.getLogger(__name__)
STAFF = allow("operator", "support")
OPERATOR = allow("operator")
TAGS = ("console",)


# --- state ----------------------------------------------------------------------------------------


@dataclass
class ConsoleState:
    service: ConsoleService
    access: AccessLog
    accounts_url: str
    started: bool = False
    paired: np.ndarray | None = None
    #: accounts, households and sign-ins (sessions and token families) started today, from accounts' tables.
    people: dict[str, int] = field(default_factory=dict)
    _readmodel: Any = field(default=None, repr=False)

    def readmodel(self) -> Any:
        if self._readmodel is None:
            from accounts.readmodel import ReadModel

            self._readmodel = ReadModel(self.accounts_url)
        return self._readmodel

    def refresh_pairing(self) -> None:
        from accounts.readmodel import paired_meters

        from sqlalchemy import func, select

        from accounts.state import Account, Household

        rm = self.readmodel()
        paired = paired_meters(rm)
        with rm.engine.connect() as connection:
            people = {
                "accounts": int(connection.execute(select(func.count()).select_from(Account)).scalar() or 0),
                "households": int(connection.execute(select(func.count()).select_from(Household)).scalar() or 0),
            }
            try:
                from accounts.sessions import Credential

                midnight = self.service.fleet.local_day_of(int(time.time() * 1000)) * 86_400_000
                midnight -= self.service.fleet._offset_ms(midnight)
                people["sessions_today"] = int(connection.execute(
                    select(func.count(func.distinct(Credential.family))).where(Credential.created_ms >= midnight)).scalar() or 0)
            except Exception:  # no sign-in has happened on this database yet: no table
                people["sessions_today"] = 0
        self.people = people
        fleet = self.service.fleet
        mask = np.zeros(max(fleet.size, 1), dtype=bool)
        for meter in paired:
            row = fleet.rows.get(meter)
            if row is not None:
                mask[row] = True
        self.paired = mask

    def paired_now(self) -> np.ndarray | None:
        p = self.paired
        n = self.service.fleet.size
        if p is None:
            return None
        if len(p) < n:
            p = np.concatenate([p, np.zeros(n - len(p), dtype=bool)])
        return p

    def overview_extras(self, figures: dict[str, Any]) -> dict[str, Any]:
        """Paired modules (accounts) and how many modules still need the latest catalogue firmware."""
        paired = self.paired_now()
        catalogue = self.service.state.firmware
        latest = max(catalogue.values(), key=lambda f: f.released_ms).version if catalogue else None
        return {"paired": None if paired is None else int(paired[: self.service.fleet.size].sum()),
                "accounts": self.people.get("accounts"), "households": self.people.get("households"),
                "sessions_today": self.people.get("sessions_today"),
                "latest_firmware": latest,
                "need_latest_firmware": None if latest is None else figures["modules"] - figures["firmware"].get(latest, 0)}

    def households_of(self, rows: np.ndarray) -> list[str]:
        """The households whose paired module is among ``rows`` of the projection, from the accounts read
        model as it is now (not the pairing mask of the last refresh: the access log names who, exactly)."""
        from accounts.readmodel import paired_meters

        paired = paired_meters(self.readmodel())
        meters = self.service.fleet.meters
        return [found[0] for row in rows.tolist() if (found := paired.get(meters[row])) is not None]


def _csv(value: str) -> tuple[str, ...]:
    return tuple(v for v in (p.strip() for p in value.split(",")) if v)


# --- models ---------------------------------------------------------------------------------------


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModulesQuery(QueryModel):
    firmware: text(200, description="comma-separated firmware versions") = ""  # type: ignore[valid-type]
    hardware: text(100, description="comma-separated hardware versions") = ""  # type: ignore[valid-type]
    state: text(60, description="connected, disconnected, never_seen (comma-separated)") = ""  # type: ignore[valid-type]
    rssi_band: text(60, description="excellent, good, fair, poor (comma-separated)") = ""  # type: ignore[valid-type]
    zone: text(400, description="comma-separated zone ids") = ""  # type: ignore[valid-type]
    pairing: text(20, description="paired, unpaired") = ""  # type: ignore[valid-type]
    frame_gap_min_ms: float | None = Field(None, ge=0)
    frame_gap_max_ms: float | None = Field(None, ge=0)
    sort: Literal[SORT_KEYS] = "meter"  # type: ignore[valid-type]
    order: Literal["asc", "desc"] = "asc"
    limit: int = Field(50, ge=1, le=1000)
    offset: int = Field(0, ge=0, le=1_000_000)

    def to_query(self, limit: int | None = None) -> Query:
        try:
            return Query(
                filter=ModuleFilter(firmware=_csv(self.firmware), hardware=_csv(self.hardware),
                                    state=_csv(self.state), rssi_bands=_csv(self.rssi_band),  # type: ignore[arg-type]
                                    zones=_csv(self.zone), pairing=_csv(self.pairing),
                                    frame_gap_min_ms=self.frame_gap_min_ms, frame_gap_max_ms=self.frame_gap_max_ms),
                sort=self.sort, descending=self.order == "desc", offset=self.offset, limit=limit or self.limit,
            )
        except ListError as exc:
            raise ApiError(422, "invalid", exc.reason, exc.field, "query") from None


class ExportQuery(ModulesQuery):
    format: Literal["csv", "xlsx"] = "csv"


class ModuleRow(BaseModel):
    meter: str
    zone: str | None
    connected: bool | None
    since_ms: int
    last_reading_ms: int
    firmware: str | None
    hardware: str | None
    rssi_dbm: float | None
    rssi_band: str | None
    frame_gap_p50_ms: float | None
    frame_gap_p95_ms: float | None
    reboots: int
    uptime_s: int
    pairing: str | None


class ModulePage(BaseModel):
    total: int
    offset: int
    limit: int
    items: list[ModuleRow]


class Disconnection(BaseModel):
    from_ms: int
    to_ms: int | None
    source: str


class ModuleView(BaseModel):
    meter: str
    zone: str | None
    connected: bool
    since_ms: int
    last_reading_ms: int
    first_seen_ms: int
    frame_gap_p50_ms: float | None
    frame_gap_p95_ms: float | None
    rssi_dbm: float | None
    rssi_band: str | None
    rssi_trend_db: float | None
    firmware: str | None
    firmware_since_ms: int
    hardware: str | None
    uptime_s: int
    reboots: int
    reboot_times_ms: list[int]
    drawn_va: int
    disconnections: list[Disconnection]
    paired: bool | None = None
    campaign: str | None = None


class FleetView(view_of(FleetFigures)):  # type: ignore[misc]
    """The fleet's figures (``console.projection.FleetFigures``) and the accounts' counts beside them."""

    paired: int | None = None
    accounts: int | None = None
    households: int | None = None
    sessions_today: int | None = None  # sign-ins (sessions and token families) started today, local time
    latest_firmware: str | None = None
    need_latest_firmware: int | None = None


class MeterPath(QueryModel):
    meter: Annotated[str, Field(pattern=r"^[0-9]{12}$")]


class CampaignPath(QueryModel):
    campaign: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]


class ReasonQuery(QueryModel):
    why: Literal[("", *STAFF_REASONS)] = Field("", description="why this household is read, recorded in its access log; "  # type: ignore[valid-type]
                                         "support must give one, an operator's defaults to operations")
    reference: Annotated[str, Field(max_length=64, pattern=r"^[A-Za-z0-9_.:-]*$",
                                    description="a ticket or request id, recorded with it")] = ""


class Member(BaseModel):
    account: str
    name: str
    email: str
    role: str | None


class HouseholdView(BaseModel):
    household: str
    name: str
    meter: str | None
    zone: str | None
    tariff: str
    members: list[Member]


class FirmwareCreate(Strict):
    version: Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_.+-]+$")]
    hardware: Annotated[list[Annotated[str, Field(min_length=1, max_length=16, pattern=r"^[A-Za-z0-9_.-]+$")]], Field(min_length=1, max_length=16)]
    notes: Annotated[str, Field(max_length=2000)] = ""


class FirmwareView(BaseModel):
    version: str
    notes: str
    hardware: list[str]
    released_ms: int
    modules: int


class FirmwareList(BaseModel):
    items: list[FirmwareView]


class GroupBody(Strict):
    # Each item bounded as quartier.events.ModuleGroup bounds it: refused here by name (422), not by the record (500).
    firmware: list[Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_.+-]+$")]] = []
    hardware: list[Annotated[str, Field(min_length=1, max_length=16, pattern=r"^[A-Za-z0-9_.-]+$")]] = []
    zones: list[Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]] = []
    rssi_bands: list[Literal["excellent", "good", "fair", "poor"]] = []
    meters: list[Annotated[str, Field(pattern=r"^[0-9]{12}$")]] = Field(default_factory=list, max_length=50_000)


class PhaseBody(Strict):
    name: Annotated[str, Field(min_length=1, max_length=32)]
    cumulative_share: float = Field(gt=0, le=1)
    min_modules: int = Field(0, ge=0)
    success_share: float = Field(0.95, gt=0, le=1)


class GuardBody(Strict):
    min_sample: int = Field(20, ge=1)
    observe_s: float = Field(600.0, ge=0)
    offline_share_margin: float = Field(0.10, ge=0, le=1)
    frame_gap_p95_ratio: float = Field(1.5, ge=1)
    reboots_per_hour_margin: float = Field(1.0, ge=0)


class CampaignCreate(Strict):
    campaign: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
    firmware: Annotated[str, Field(min_length=1, max_length=32)]
    group: GroupBody = GroupBody()
    phases: list[PhaseBody] | None = Field(None, min_length=1, max_length=10)
    guard: GuardBody = GuardBody()
    rate_per_min: int = Field(600, ge=1, le=1_000_000)
    window_start_hour: int = Field(1, ge=0, le=23)
    window_end_hour: int = Field(5, ge=0, le=24)
    time_zone: Annotated[str, Field(min_length=1, max_length=64)] = "Europe/Paris"
    attempt_timeout_s: float = Field(900.0, gt=0)
    max_attempts: int = Field(3, ge=1, le=20)
    retry_base_s: float = Field(300.0, gt=0)


class ActionBody(Strict):
    reason: Annotated[str, Field(max_length=512)] = ""


class CampaignView(BaseModel):
    campaign: str
    firmware: str
    status: str
    phase: str | None
    phase_index: int
    phases: list[str]
    modules: int
    by_status: dict[str, int]
    paused: dict[str, Any] | None
    created_ms: int
    updated_ms: int
    history: list[dict[str, Any]] = []


class CampaignList(BaseModel):
    items: list[CampaignView]


class StaffReadView(view_of(StaffRead)):  # type: ignore[misc]
    """A read of personal data by staff, from the access log: an export's entries are one item."""


class CommandView(BaseModel):
    """An operator command, from its event on devices.events."""

    at_ms: int
    operator: str
    action: str
    target: str
    reason: str


class AuditView(BaseModel):
    reads: list[StaffReadView]  # newest first
    commands: list[CommandView]  # newest first


class AuditQuery(QueryModel):
    limit: int = Field(100, ge=1, le=1000)


# --- operations -------------------------------------------------------------------------------------


class _ExportStream(StreamingResponse, JSONResponse):
    """A streamed export spectree lets through: it skips validating JSONResponses that carry the
    operation's ``_model_class``, and a stream has no ``.body`` to validate (the household app's
    export does the same; the API layer has no other way through for streamed answers yet)."""

    _model_class = None  # set below, once ModuleRow exists as the operation's documented row


def _state(call: Call) -> ConsoleState:
    return call.state  # type: ignore[no-any-return]


@operation("GET", "/v1/fleet/overview", allow=STAFF, response=FleetView, tags=TAGS, operation_id="fleet_overview",
           summary="Fleet figures: connected, firmware, RSSI bands, frame gap, power, yesterday's energy, alerts")
async def fleet_overview(call: Call) -> FleetView:
    state = _state(call)
    figures = state.service.fleet.fleet().as_dict()
    return FleetView(**figures, **state.overview_extras(figures))


@operation("GET", "/v1/fleet/modules", allow=STAFF, query=ModulesQuery, response=ModulePage, tags=TAGS,
           operation_id="fleet_modules", summary="The module list: filters, sort, server-side pages")
async def fleet_modules(call: Call) -> ModulePage:
    state = _state(call)
    q = call.query.to_query()
    try:
        result = page(state.service.fleet, q, state.paired_now())
    except ListError as exc:
        raise ApiError(422, "invalid", exc.reason, exc.field, "query") from None
    return ModulePage(**result)


@operation("GET", "/v1/fleet/modules/export", allow=STAFF, query=ExportQuery, response=ModuleRow, tags=TAGS,
           description="One CSV line or XLSX row per module, with the columns of ModuleRow, streamed.",
           operation_id="fleet_modules_export", summary="The whole filtered, sorted module list as CSV or XLSX (recorded)")
async def fleet_modules_export(call: Call) -> StreamingResponse:
    state = _state(call)
    q = call.query.to_query(limit=1000)
    fleet = state.service.fleet
    paired = state.paired_now()
    try:
        rows = ordered_rows(fleet, q, paired)
    except ListError as exc:
        raise ApiError(422, "invalid", exc.reason, exc.field, "query") from None
    # Written before the first byte goes out: one entry per household whose module is exported (its own
    # access log then shows it), all under this export's reference, in one transaction.
    households = await asyncio.to_thread(state.households_of, rows)
    reference = f"{EXPORT_REFERENCE}{call.query.format}:{secrets.token_hex(6)}"
    await asyncio.to_thread(state.access.record_reads, call.me, households, what="telemetry", why="operations",
                            reference=reference)
    chunks = export_xlsx(fleet, rows, paired) if call.query.format == "xlsx" else export_csv(fleet, rows, paired)
    first = next(chunks)

    def body() -> Any:
        yield first
        yield from chunks

    media = ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet" if call.query.format == "xlsx"
             else "text/csv; charset=utf-8")
    return _ExportStream(body(), media_type=media, headers={
        "Content-Disposition": f'attachment; filename="modules.{call.query.format}"', "Quartier-Access-Reference": reference})


@operation("GET", "/v1/fleet/modules/{meter}", allow=STAFF, path_params=MeterPath, response=ModuleView, errors=(404,),
           tags=TAGS, operation_id="fleet_module", summary="One module: pairing, connection, firmware, RSSI, frame gap, 30-day timeline")
async def fleet_module(call: Call) -> ModuleView:
    state = _state(call)
    found = state.service.fleet.module(call.path.meter)
    if found is None:
        raise ApiError(404, "not_found", f"no module {call.path.meter} in the fleet", "meter", "path")
    paired = state.paired_now()
    row = state.service.fleet.rows[call.path.meter]
    return ModuleView(**found, paired=None if paired is None else bool(paired[row]),
                      campaign=state.service.state.active_campaign_of(call.path.meter))


@operation("GET", "/v1/fleet/modules/{meter}/household", allow=STAFF, path_params=MeterPath, query=ReasonQuery,
           response=HouseholdView, errors=(404, 422), tags=TAGS, operation_id="fleet_module_household",
           summary="The household behind a module: personal data, every read in the access log; support must say why")
async def fleet_module_household(call: Call) -> HouseholdView:
    state = _state(call)
    why = call.query.why or ("operations" if "operator" in call.me.roles else "")
    if not why:
        raise ApiError(422, "invalid", "support reads a household's personal data only with a reason, which is "
                       f"recorded in its access log: one of {', '.join(STAFF_REASONS)}", "why", "query")
    from accounts.readmodel import household_of_meter, members

    rm = state.readmodel()
    household = await asyncio.to_thread(household_of_meter, rm, call.path.meter)
    if household is None:
        raise ApiError(404, "not_found", f"no household has paired meter {call.path.meter}", "meter", "path")
    await asyncio.to_thread(state.access.record_read, call.me, household=household.household, what="profile", why=why,
                            reference=call.query.reference)
    people = await asyncio.to_thread(members, rm, household.household)
    return HouseholdView(household=household.household, name=household.name, meter=household.meter, zone=household.zone,
                         tariff=household.tariff,
                         members=[Member(account=a.account, name=a.name, email=a.email, role=a.household_role) for a in people])


@operation("GET", "/v1/fleet/firmware", allow=STAFF, response=FirmwareList, tags=TAGS, operation_id="fleet_firmware",
           summary="The firmware catalogue, with how many modules run each version")
async def fleet_firmware(call: Call) -> FirmwareList:
    state = _state(call)
    counts = state.service.fleet.fleet().firmware
    return FirmwareList(items=[FirmwareView(version=f.version, notes=f.notes, hardware=list(f.hardware),
                                            released_ms=f.released_ms, modules=counts.get(f.version, 0))
                               for f in sorted(state.service.state.firmware.values(), key=lambda f: f.released_ms)])


def _command_error(exc: cs.CommandError) -> ApiError:
    code = {404: "not_found", 409: "conflict"}.get(exc.status, "invalid")
    return ApiError(exc.status, code, exc.reason, exc.field, "path" if exc.status == 404 else "body")


async def _run(call: Call, build_events: Any) -> list[ev.Record]:
    """Runs an operator command; its events (on devices.events, with the operator's id) are its record."""
    state = _state(call)
    service = state.service
    # Validated against the state first, so a refused command never waits for the broker.
    try:
        build_events(service.state, service.now_ms())
    except cs.CommandError as exc:
        raise _command_error(exc) from None
    except msgspec.ValidationError as exc:
        raise ApiError(422, "invalid", str(exc), str(exc).rsplit("$.", 1)[-1].strip("`") if "$." in str(exc) else "body", "body") from None
    if not state.started:
        raise ApiError(503, "unavailable", "the console is not connected to the broker yet; try again", "broker", "header",
                       headers={"Retry-After": "5"})
    try:
        new = await service.command(build_events)
    except cs.CommandError as exc:
        raise _command_error(exc) from None
    return new


@operation("POST", "/v1/fleet/firmware", allow=OPERATOR, body=FirmwareCreate, response=FirmwareView, status=201,
           errors=(409, 422, 503), tags=TAGS, operation_id="fleet_firmware_release", summary="Add a firmware to the catalogue")
async def fleet_firmware_release(call: Call) -> FirmwareView:
    body: FirmwareCreate = call.body
    await _run(call, lambda s, now: cs.release_firmware(s, body.version, tuple(body.hardware), body.notes, now,
                                                        operator=call.me.subject))
    f = _state(call).service.state.firmware[body.version]
    return FirmwareView(version=f.version, notes=f.notes, hardware=list(f.hardware), released_ms=f.released_ms, modules=0)


def _campaign_view(c: cs.Campaign, history: bool = False) -> CampaignView:
    return CampaignView(**c.summary(), history=c.history[-50:] if history else [])


@operation("GET", "/v1/fleet/campaigns", allow=STAFF, response=CampaignList, tags=TAGS, operation_id="fleet_campaigns",
           summary="Firmware campaigns and their progress")
async def fleet_campaigns(call: Call) -> CampaignList:
    campaigns = sorted(_state(call).service.state.campaigns.values(), key=lambda c: -c.created_ms)
    return CampaignList(items=[_campaign_view(c) for c in campaigns])


@operation("GET", "/v1/fleet/campaigns/{campaign}", allow=STAFF, path_params=CampaignPath, response=CampaignView,
           errors=(404,), tags=TAGS, operation_id="fleet_campaign", summary="One campaign: phases, modules by status, history")
async def fleet_campaign(call: Call) -> CampaignView:
    c = _state(call).service.state.campaigns.get(call.path.campaign)
    if c is None:
        raise ApiError(404, "not_found", f"no campaign {call.path.campaign!r}", "campaign", "path")
    return _campaign_view(c, history=True)


@operation("POST", "/v1/fleet/campaigns", allow=OPERATOR, body=CampaignCreate, response=CampaignView, status=201,
           errors=(409, 422, 503), tags=TAGS, operation_id="fleet_campaign_create",
           summary="Start a firmware roll-out: canary, then phases, at a rate, inside a night window")
async def fleet_campaign_create(call: Call) -> CampaignView:
    body: CampaignCreate = call.body
    group = msgspec.convert(body.group.model_dump(), ev.ModuleGroup)
    guard = msgspec.convert(body.guard.model_dump(), ev.HealthGuard)
    phases = tuple(msgspec.convert(p.model_dump(), ev.PhasePlan) for p in body.phases) if body.phases else cs.DEFAULT_PHASES
    options = body.model_dump(exclude={"campaign", "firmware", "group", "phases", "guard"})

    def build_events(s: cs.DeviceState, now: int) -> list[ev.Record]:
        created = cs.create_campaign(s, campaign=body.campaign, firmware=body.firmware, group=group, now_ms=now,
                                     phases=phases, guard=guard, operator=call.me.subject, **dict(options))
        return [msgspec.convert(msgspec.to_builtins(e), ev.CampaignCreated) for e in created]  # validates every field

    await _run(call, build_events)
    return _campaign_view(_state(call).service.state.campaigns[body.campaign], history=True)


def _action(verb: str, command: Any, summary: str) -> Any:
    async def handler(call: Call) -> CampaignView:
        reason = call.body.reason
        if verb == "resume":
            build_events = lambda s, now: command(s, call.path.campaign, call.me.subject, now)  # noqa: E731
        else:
            build_events = lambda s, now: command(s, call.path.campaign, reason, call.me.subject, now)  # noqa: E731
        await _run(call, build_events)
        return _campaign_view(_state(call).service.state.campaigns[call.path.campaign], history=True)

    handler.__name__ = f"fleet_campaign_{verb}"
    return operation("POST", f"/v1/fleet/campaigns/{{campaign}}/{verb}", allow=OPERATOR, path_params=CampaignPath,
                     body=ActionBody, response=CampaignView, errors=(404, 409, 503), tags=TAGS,
                     operation_id=f"fleet_campaign_{verb}", summary=summary)(handler)


fleet_campaign_pause = _action("pause", cs.pause, "Pause a campaign (an event with the reason)")
fleet_campaign_resume = _action("resume", cs.resume, "Resume a paused campaign")
fleet_campaign_abort = _action("abort", cs.abort, "Abort a campaign: no more requests")
fleet_campaign_rollback = _action("rollback", cs.roll_back, "Roll back: updated modules are asked for their previous firmware")


@operation("GET", "/v1/fleet/audit", allow=OPERATOR, query=AuditQuery, response=AuditView, tags=TAGS,
           operation_id="fleet_audit",
           summary="Recent staff actions: personal-data reads and exports (the access log), operator commands (devices.events)")
async def fleet_audit(call: Call) -> AuditView:
    state = _state(call)
    reads = await asyncio.to_thread(state.access.recent, call.query.limit)
    commands = list(state.service.state.commands)[::-1][: call.query.limit]
    return AuditView(reads=[StaffReadView(**vars(r)) for r in reads],
                     commands=[CommandView(**vars(c)) for c in commands])


_ExportStream._model_class = ModuleRow  # type: ignore[assignment]

OPERATIONS = [fleet_overview, fleet_modules, fleet_modules_export, fleet_module, fleet_module_household, fleet_firmware,
              fleet_firmware_release, fleet_campaigns, fleet_campaign, fleet_campaign_create, fleet_campaign_pause,
              fleet_campaign_resume, fleet_campaign_abort, fleet_campaign_rollback, fleet_audit]


# --- the surface ------------------------------------------------------------------------------------


def surface(context: SurfaceContext) -> Surface:
    settings = context.settings
    service = build(settings)
    state = ConsoleState(service=service, access=AccessLog.open(settings), accounts_url=settings.sqlite_url("accounts"))

    @contextlib.asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        stop = asyncio.Event()
        task = asyncio.create_task(_keep_running(state, stop))
        try:
            yield
        finally:
            stop.set()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            with contextlib.suppress(Exception):
                await service.stop()
            state.access.engine.dispose()

    from console.web import routes as web_routes

    return Surface(name="console", routes=[*OPERATIONS, *web_routes(state)], lifespan=lifespan, state=state,
                   ready=lambda: state.started)


async def _keep_running(state: ConsoleState, stop: asyncio.Event) -> None:
    """Connects to the broker (retrying, so the API serves while the broker comes up), then follows it."""
    import stamina

    # stamina (the project's retry library): exponential backoff up to 30 s, for as long as it takes.
    async for attempt in stamina.retry_context(on=Exception, attempts=None, timeout=None, wait_max=30.0):
        with attempt:
            if attempt.num > 1:
                log.warning("console: broker not reachable, attempt %d", attempt.num)
            await state.service.start()
    state.started = True
    pairing = asyncio.create_task(_refresh_pairing(state, stop))
    try:
        await state.service.run(stop)
    finally:
        pairing.cancel()


async def _refresh_pairing(state: ConsoleState, stop: asyncio.Event, every_s: float = 5.0) -> None:
    while not stop.is_set():
        try:
            await asyncio.to_thread(state.refresh_pairing)
        except Exception:  # the accounts database may not exist yet
            log.debug("console: pairing state not readable yet", exc_info=True)
        await asyncio.sleep(every_s)
