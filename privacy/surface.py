"""The ``privacy`` HTTP surface: a household's rights over its data, and the operators' access log checks.

Members of a household (owner or member):

- ``GET /v1/me/privacy/access-log``: who other than the members read the household's data, when, what, why;
- ``GET /v1/me/privacy/export``: everything held about the household (``privacy.export``), as JSON;
- ``GET /v1/me/privacy/readings.csv?resolution=&days=``: the meter's readings as CSV;

the owner:

- ``PUT /v1/me/privacy/consent``: the stored resolution of the household's meter (1 Hz, 30 minutes, daily);
- ``POST /v1/me/privacy/erasure`` with ``{"confirm": "erase my household"}``: the erasure saga starts
  (202; it runs in the background, tried again with backoff while a store is down, and resumes at the
  next start if the process stops);

support and operators:

- ``GET /v1/privacy/households/{household}/access-log``: a household's access log (itself a read, logged);
- ``GET /v1/privacy/access-log/verification``: the hash chain recomputed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any, Literal

import stamina
from pydantic import BaseModel, ConfigDict, Field
from starlette.background import BackgroundTask
from starlette.responses import FileResponse

from api import ApiError, Call, Surface, SurfaceContext, allow, operation
from api.bounds import Query
from quartier.access_log import AccessLog
from privacy.erasure import ErasureSaga
from quartier import events as ev
from quartier import kafka, topics

log = logging.getLogger(__name__)

HouseholdId = Annotated[str, Field(pattern=r"^hh_[0-9a-f]{16}$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AccessEntryView(BaseModel):
    seq: int
    at_ms: int
    actor: str
    actor_role: str
    what: str
    why: str
    reference: str


class AccessLogView(BaseModel):
    household: str
    entries: list[AccessEntryView]


class VerificationView(BaseModel):
    ok: bool
    entries: int
    head: str
    problem: str | None
    seq: int | None


class ConsentBody(Strict):
    resolution: Literal["1hz", "30min", "daily"]


class ConsentView(BaseModel):
    meter: str
    resolution: str


class ErasureBody(Strict):
    confirm: Literal["erase my household"] = Field(description='exactly "erase my household"')


class ErasureView(BaseModel):
    erasure: str
    status: Literal["requested"] = "requested"


class ExportView(BaseModel):
    """One key per category of the data map (privacy/datamap.py)."""

    household: str
    profile: dict[str, Any]
    contacts: list[dict[str, Any]]
    devices: list[dict[str, Any]]
    readings: dict[str, Any]
    alerts: list[dict[str, Any]]
    rules: dict[str, Any] | None
    deliveries: list[dict[str, Any]]
    trades: dict[str, Any]
    consent: dict[str, Any]
    telemetry: list[dict[str, Any]]
    access_log: list[dict[str, Any]]


class ReadingsCsv(BaseModel):
    """The answer is text/csv, not JSON: a header ``time_ms,drawn_va,injected_va,withdrawn_wh,injected_wh``
    and one line per stored point of the range."""


class ReadingsQuery(Query):
    resolution: Literal["1hz", "10min", "30min", "daily"] = "30min"
    days: Annotated[float, Field(gt=0, le=366)] = 30


class HouseholdPath(Query):
    household: HouseholdId


class PrivacySurface:
    def __init__(self, context: SurfaceContext) -> None:
        self.settings = context.settings
        self.access = AccessLog.open(context.settings)
        self.saga = ErasureSaga(context.settings)
        self.erasures: set[asyncio.Task[Any]] = set()

    async def _run_until_done(self, erasure: str) -> None:
        # A store that is down (InfluxDB restarting, the broker away) fails its step: the saga's log
        # keeps what is done, and the run is tried again with backoff (stamina) until it completes.
        async for attempt in stamina.retry_context(on=Exception, attempts=None, timeout=3600.0, wait_max=30.0):
            with attempt:
                await self.saga.run(erasure)

    def run_erasure(self, erasure: str) -> None:
        task = asyncio.create_task(self._run_until_done(erasure), name=f"erasure-{erasure}")
        self.erasures.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self.erasures.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # Retried for an hour; the saga's log says which steps are done: the next start finishes it.
            log.error("%s stopped before erasure_completed; it resumes at the next start", task.get_name(),
                      exc_info=task.exception())


def _household(call: Call) -> str:
    household = call.me.household
    if household is None:
        raise ApiError(404, "not_found", "you do not belong to a household")
    return household


async def _meter_of(call: Call, household: str) -> str | None:
    from accounts.service import fold

    state = await fold(call.state.settings)
    found = state.households.get(household)
    return found.meter if found is not None else None


def _entries(access: AccessLog, household: str) -> list[AccessEntryView]:
    return [AccessEntryView(**{k: getattr(e, k) for k in AccessEntryView.model_fields}) for e in access.entries(household)]


@operation("GET", "/v1/me/privacy/access-log", allow=allow("owner", "member"), response=AccessLogView,
           summary="Who other than the household's members read its data, when, what and why")
async def privacy_access_log(call: Call) -> AccessLogView:
    household = _household(call)
    return AccessLogView(household=household, entries=await asyncio.to_thread(_entries, call.state.access, household))


@operation("GET", "/v1/me/privacy/export", allow=allow("owner", "member"), response=ExportView, errors=(404,),
           summary="Everything Quartier holds about the household, one key per category of the data map")
async def privacy_export(call: Call) -> ExportView:
    from privacy.export import household_data

    from accounts.service import fold

    household = _household(call)
    found = (await fold(call.state.settings)).households.get(household)
    if found is None:
        raise ApiError(404, "not_found", "no such household in the accounts")
    await asyncio.to_thread(call.state.access.append, actor=call.me.subject, actor_role="export",
                            household=household, what="profile", why="export")
    readings = {"file": "/v1/me/privacy/readings.csv", "meter": found.meter}
    return ExportView(**await household_data(call.state.settings, household, readings=readings))


@operation("GET", "/v1/me/privacy/readings.csv", allow=allow("owner", "member"), query=ReadingsQuery, response=ReadingsCsv,
           errors=(404,), summary="The household meter's readings as CSV, at the resolution asked for")
async def privacy_readings_csv(call: Call) -> FileResponse:
    from privacy.export import write_readings_csv

    household = _household(call)
    meter = await _meter_of(call, household)
    if meter is None:
        raise ApiError(404, "not_found", "the household has no meter paired")
    await asyncio.to_thread(call.state.access.append, actor=call.me.subject, actor_role="export",
                            household=household, what="readings", why="export")
    end = int(time.time() * 1000)
    directory = Path(tempfile.mkdtemp(prefix="quartier-readings-"))
    path = directory / "readings.csv"
    await asyncio.to_thread(write_readings_csv, call.state.settings, meter, path, resolution=call.query.resolution,
                            start_ms=end - int(call.query.days * 86_400_000), end_ms=end)

    def clean() -> None:
        path.unlink(missing_ok=True)
        directory.rmdir()

    return FileResponse(path, media_type="text/csv", filename="readings.csv", background=BackgroundTask(clean))


@operation("PUT", "/v1/me/privacy/consent", allow=allow("owner"), body=ConsentBody, response=ConsentView,
           errors=(409,), summary="Choose what is stored of the meter's readings: 1 Hz, 30-minute or daily points")
async def privacy_set_consent(call: Call) -> ConsentView:
    from aiokafka import AIOKafkaProducer

    household = _household(call)
    meter = await _meter_of(call, household)
    if meter is None:
        raise ApiError(409, "conflict", "pair a meter first", "resolution", "body")
    settings = call.state.settings
    choice = ev.ResolutionChosen(meter=meter, resolution=call.body.resolution, at_ms=int(time.time() * 1000))
    producer = AIOKafkaProducer(**kafka.producer_config(settings))
    await producer.start()
    try:
        await producer.send_and_wait(settings.topic(topics.METER_RESOLUTION.name), ev.encode(choice), key=meter.encode())
    finally:
        await producer.stop()
    return ConsentView(meter=meter, resolution=choice.resolution)


@operation("POST", "/v1/me/privacy/erasure", allow=allow("owner"), body=ErasureBody, response=ErasureView, status=202,
           summary="Forget the household in every store (the erasure saga; it runs in the background)")
async def privacy_request_erasure(call: Call) -> ErasureView:
    household = _household(call)
    erasure = await call.state.saga.request(household, by=call.me.subject)
    call.state.run_erasure(erasure)
    return ErasureView(erasure=erasure)


@operation("GET", "/v1/privacy/households/{household}/access-log", allow=allow("operator", "support"),
           path_params=HouseholdPath, response=AccessLogView,
           summary="A household's access log (this read is logged too)")
async def privacy_household_access_log(call: Call) -> AccessLogView:
    household = call.path.household
    await asyncio.to_thread(call.state.access.record_read, call.me, household=household, what="access_log",
                            why="support_ticket")
    return AccessLogView(household=household, entries=await asyncio.to_thread(_entries, call.state.access, household))


@operation("GET", "/v1/privacy/access-log/verification", allow=allow("operator", "support"), response=VerificationView,
           summary="Recompute the access log's hash chain")
async def privacy_verify_access_log(call: Call) -> VerificationView:
    verification = await asyncio.to_thread(call.state.access.verify)
    return VerificationView(**verification.as_dict())  # type: ignore[arg-type]


ROUTES = [privacy_access_log, privacy_export, privacy_readings_csv, privacy_set_consent, privacy_request_erasure,
          privacy_household_access_log, privacy_verify_access_log]


def surface(context: SurfaceContext) -> Surface:
    state = PrivacySurface(context)

    @contextlib.asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        await kafka.ensure_topics(context.settings, [topics.PRIVACY_ERASURES, topics.METER_RESOLUTION])
        # Erasures a stopped process left unfinished are finished first, in the background.
        resume = asyncio.create_task(state.saga.run_pending(), name="erasures-resume")
        try:
            yield
        finally:
            for task in [resume, *state.erasures]:
                task.cancel()
            await asyncio.gather(resume, *state.erasures, return_exceptions=True)
            state.access.engine.dispose()

    return Surface(name="privacy", routes=list(ROUTES), lifespan=lifespan, state=state)
