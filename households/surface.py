"""The ``households`` surface: the household app's REST operations and web pages, in one API process.

Every operation is about the caller's own household (``/v1/me/...``): a member or the owner; support
and operators use the console, market tokens the market. Blocking InfluxDB reads run in threads.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import Any, Callable

from sse_starlette.event import JSONServerSentEvent
from sse_starlette.sse import EventSourceResponse
from starlette.responses import JSONResponse, StreamingResponse

from api import ApiError, Call, Surface, SurfaceContext, allow, operation
from households import alert_history, bill, comparison, consumption, export, power, solar
from households.directory import HomeDirectory
from households.home import Home
from households.indexes import BoundaryCache
from households.live import LiveReading, figures
from households.service import HouseholdService
from households.views import (
    AlertPath, BillView, ComparisonView, ConsumptionPoint, ConsumptionQuery, ConsumptionView, DayView, EpisodeView,
    ExportQuery, ExportRowView, HistoryQuery, LiveEventView, LiveQuery, HistoryView, PowerView, SnoozeBody, SolarView, SummaryView,
)
from quartier import tariffs
from quartier.influx import InfluxError

MEMBERS = allow("owner", "member")
#: A comment line every 15 s keeps proxies from closing a quiet live stream.
SSE_PING_S = 15


class _EventStream(EventSourceResponse, JSONResponse):
    """An event stream spectree leaves alone: the API layer validates answers that are JSONResponses
    unless they carry ``_model_class`` (as its own serialized answers do), and reads ``.body`` of any
    other, which a stream has not. (Reported to the API layer: streamed answers need a way through.)"""

    _model_class = LiveEventView


class _CsvStream(StreamingResponse, JSONResponse):
    _model_class = ExportRowView


def service_of(call: Call) -> HouseholdService:
    return call.state  # type: ignore[no-any-return]


def home_of(call: Call) -> Home:
    household = call.me.household
    home = service_of(call).directory.home(household) if household else None
    if home is None:
        raise ApiError(409, "conflict", "your household has no paired meter yet: pair one first", "household")
    return home


async def blocking(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    try:
        return await asyncio.to_thread(partial(function, *args, **kwargs))
    except InfluxError as error:  # the projection is away: say so, the page can be asked again
        raise ApiError(503, "unavailable", f"the readings store did not answer: {error}"[:300]) from None
    except ValueError as error:  # the domain's errors name their field ("unit: ...")
        field, _, reason = str(error).partition(": ")
        raise ApiError(422, "invalid", reason or str(error), field if reason else None, "query") from None


# --- live -------------------------------------------------------------------------------------------


def live_event(reading: LiveReading, option: tariffs.TariffOption, produced_ms: int) -> bytes:
    """One ``reading`` event, framed for the stream (sse-starlette's own encoder, compact JSON)."""
    live = figures(reading, option)
    return JSONServerSentEvent(
        {
            "power_va": live.power_va, "eur_per_hour": live.eur_per_hour,
            "fuse_headroom_pct": live.fuse_headroom_pct, "meter_time_ms": live.meter_time_ms,
            "register_name": live.register_name, "injected_va": live.injected_va, "produced_ms": produced_ms,
        },
        event="reading", id=str(reading.time_ms),
    ).encode()


async def live_events(
    service: HouseholdService, home: Home, last_seen_ms: int, for_s: float | None = None
) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    deadline = None if for_s is None else loop.time() + for_s
    hub = service.hub
    follow = hub.follow(home.meter, last_seen_ms)

    def encode(reading: LiveReading) -> bytes:
        return live_event(reading, home.tariff, hub.produced_ms(home.meter))

    while True:
        try:
            if deadline is None:
                reading = await follow.__anext__()
            else:
                reading = await asyncio.wait_for(follow.__anext__(), max(0.0, deadline - loop.time()))
        except (TimeoutError, StopAsyncIteration):
            await follow.aclose()
            return
        # Every viewer of this meter at this tariff gets the same bytes: encoded once per reading.
        yield hub.encoded(home.meter, reading, home.tariff, encode)


@operation("GET", "/v1/me/live", allow=MEMBERS, query=LiveQuery, response=LiveEventView, summary="Live power, euros per hour and fuse headroom",
           description="Server-Sent Events, one `reading` event per new reading of the household's meter "
                       "(`data`: power_va, eur_per_hour, fuse_headroom_pct, meter_time_ms; `id`: the meter time). "
                       "Reconnect with `Last-Event-ID` to get the latest reading at once.", errors=(409,))
async def live(call: Call) -> EventSourceResponse:
    home = home_of(call)
    header = call.request.headers.get("last-event-id", "")
    last_seen = int(header) if header.isdigit() else -1
    return _EventStream(live_events(service_of(call), home, last_seen, call.query.for_s), ping=SSE_PING_S)


# --- money -------------------------------------------------------------------------------------------


def consumption_view(
    settings: Any, home: Home, range_: str, unit: str, at_ms: int, cache: BoundaryCache | None = None
) -> ConsumptionView:
    chart = consumption.series(settings, home, range_, unit, at_ms=at_ms, cache=cache)
    values = chart.values()
    points = [ConsumptionPoint(start_ms=b.start_ms, value=None if v is None else round(v, 4))
              for b, v in zip(chart.buckets, values)]
    known = [v for v in values if v is not None]
    return ConsumptionView(range=range_, unit=unit, interval_s=chart.interval_s, source=chart.policy,  # type: ignore[arg-type]
                           total=round(sum(known), 3) if known else None, points=points)


@operation("GET", "/v1/me/consumption", allow=MEMBERS, query=ConsumptionQuery, response=ConsumptionView,
           summary="Energy or euros per bucket over 24 hours, 7 days, 30 days or 12 months", errors=(409,))
async def get_consumption(call: Call) -> ConsumptionView:
    service = service_of(call)
    return await blocking(consumption_view, service.settings, home_of(call), call.query.range, call.query.unit,
                          service.clock(), service.charts)


def bill_view(settings: Any, home: Home, at_ms: int) -> BillView:
    b = bill.current_bill(settings, home, at_ms=at_ms)
    return BillView(
        period_start=b.period_start, period_end=b.period_end, days_elapsed=b.days_elapsed,
        days_in_period=b.days_in_period, energy_kwh=round(b.energy_wh / 1000, 3), energy_eur=round(b.energy_eur, 2),
        subscription_eur=round(b.subscription_eur, 2), total_eur=round(b.total_eur, 2),
        projected_total_eur=round(b.projected_total_eur, 2), projected_energy_eur=round(b.projected_energy_eur, 2),
        projected_subscription_eur=round(b.projected_subscription_eur, 2), projection_method=b.method,
        days=[DayView(day=d.day, energy_kwh=d.energy_wh / 1000, eur=None if d.eur is None else round(d.eur, 2),
                      complete=d.complete) for d in b.days],
    )


@operation("GET", "/v1/me/bill", allow=MEMBERS, response=BillView, errors=(409,),
           summary="The billing period so far, subscription included, and its projection to the period's end")
async def get_bill(call: Call) -> BillView:
    service = service_of(call)
    return await blocking(bill_view, service.settings, home_of(call), service.clock())


def summary_view(settings: Any, home: Home, at_ms: int) -> SummaryView:
    instant = datetime.fromtimestamp(at_ms / 1000, timezone.utc)
    register = tariffs.register_at(home.tariff, instant)
    today = home.local_date(at_ms)
    month = consumption.daily(settings, home, today.replace(day=1), today, at_ms=at_ms)
    day = [d for d in month if d.day == today]
    tempo_today = tempo_tomorrow = None
    if home.tariff is tariffs.TariffOption.TEMPO:
        tempo_day = tariffs.tempo_day(instant)
        tempo_today = tariffs.tempo_colour(tempo_day).value
        # The grid operator announces tomorrow's colour in the late morning (about 11:00).
        if tariffs.local_time(instant).hour >= 11:
            tempo_tomorrow = tariffs.tempo_colour(tempo_day + timedelta(days=1)).value
    return SummaryView(
        tariff=home.tariff.value, subscribed_kva=home.subscribed_kva, register_now=register,
        register_name_now=tariffs.register_name(home.tariff, register),
        price_eur_per_kwh_now=tariffs.price_eur_per_kwh(home.tariff, register, instant),
        tempo_today=tempo_today, tempo_tomorrow=tempo_tomorrow,
        today_kwh=day[0].energy_wh / 1000 if day else None,
        today_eur=round(day[0].eur, 2) if day and day[0].eur is not None else None,
        month_eur=round(sum(d.eur or 0.0 for d in month), 2) if month else None,
    )


@operation("GET", "/v1/me/summary", allow=MEMBERS, response=SummaryView, errors=(409,),
           summary="Today and this month in euros, the price in force now, Tempo colours")
async def get_summary(call: Call) -> SummaryView:
    service = service_of(call)
    return await blocking(summary_view, service.settings, home_of(call), service.clock())


def power_view(service: HouseholdService, home: Home) -> PowerView:
    latest = service.hub.latest(home.meter)
    live = figures(latest, home.tariff) if latest is not None else None
    advice = power.subscribed_power_advice(service.settings, home, at_ms=service.clock())
    return PowerView(
        fuse_headroom_pct=live.fuse_headroom_pct if live else None, power_va=live.power_va if live else None,
        subscribed_kva=home.subscribed_kva, peak_va_12_months=advice.peak_va, verdict=advice.verdict,
        recommended_kva=advice.recommended_kva, yearly_eur_at_stake=advice.yearly_eur_at_stake,
    )


@operation("GET", "/v1/me/power", allow=MEMBERS, response=PowerView, errors=(409,),
           summary="Fuse headroom now, and whether the subscribed power fits the last 12 months' peaks")
async def get_power(call: Call) -> PowerView:
    return await blocking(power_view, service_of(call), home_of(call))


# --- alerts ------------------------------------------------------------------------------------------


def episode_view(service: HouseholdService, e: alert_history.Episode) -> EpisodeView:
    done = service.actions.of(e.id)
    return EpisodeView(id=e.id, kind=e.kind, raised_ms=e.raised_ms, resolved_ms=e.resolved_ms, value=e.value,
                       threshold=e.threshold, acknowledged_by=done.acknowledged_by, acknowledged_ms=done.acknowledged_ms,
                       snoozed_until_ms=done.snoozed_until_ms)


@operation("GET", "/v1/me/alerts/history", allow=MEMBERS, query=HistoryQuery, response=HistoryView, errors=(409,),
           summary="The household's alert episodes, newest first, a page at a time")
async def get_alert_history(call: Call) -> HistoryView:
    service = service_of(call)
    episodes = await blocking(alert_history.history, service.settings, home_of(call), before_ms=call.query.before_ms,
                              limit=call.query.limit)
    items = [episode_view(service, e) for e in episodes]
    more = len(items) == call.query.limit
    return HistoryView(items=items, next_before_ms=items[-1].raised_ms if more and items else None)


async def _episode(call: Call) -> tuple[HouseholdService, Home, alert_history.Episode]:
    service, home = service_of(call), home_of(call)
    try:
        episode = await asyncio.to_thread(alert_history.find, service.settings, home, call.path.alert_id)
    except alert_history.NotFound as error:
        raise ApiError(404, "not_found", str(error).partition(": ")[2], "alert_id", "path") from None
    return service, home, episode


@operation("POST", "/v1/me/alerts/history/{alert_id}/acknowledge", allow=MEMBERS, path_params=AlertPath,
           response=EpisodeView, errors=(404, 409), summary="Acknowledge an alert episode (any member)")
async def acknowledge_alert(call: Call) -> EpisodeView:
    service, home, episode = await _episode(call)
    await service.append(alert_history.acknowledge(service.actions, home, episode, call.me.subject, service.clock()))
    return episode_view(service, episode)


@operation("POST", "/v1/me/alerts/history/{alert_id}/snooze", allow=MEMBERS, path_params=AlertPath, body=SnoozeBody,
           response=EpisodeView, errors=(404, 409), summary="Snooze an alert episode: no repeat of it until then")
async def snooze_alert(call: Call) -> EpisodeView:
    service, home, episode = await _episode(call)
    events = alert_history.snooze(service.actions, home, episode, call.me.subject, service.clock(), call.body.minutes)
    await service.append(events)
    return episode_view(service, episode)


# --- neighbours, solar, export -----------------------------------------------------------------------


def comparison_view(service: HouseholdService, home: Home) -> ComparisonView:
    c = comparison.comparison(service.settings, home, service.directory.zone_homes(home.zone), at_ms=service.clock())
    low, high = c.typical_kwh_per_day or (None, None)
    return ComparisonView(available=c.available, reason=c.reason, band=c.band, heating=c.heating,
                          own_kwh_per_day=c.own_kwh_per_day, typical_kwh_per_day_low=low,
                          typical_kwh_per_day_high=None if high == float("inf") else high, position=c.position)


@operation("GET", "/v1/me/comparison", allow=MEMBERS, response=ComparisonView, errors=(409,),
           summary="This home against similar homes of its zone (coarse, at least 10 homes)")
async def get_comparison(call: Call) -> ComparisonView:
    return await blocking(comparison_view, service_of(call), home_of(call))


def solar_view(service: HouseholdService, home: Home) -> SolarView:
    end = service.clock()
    s = solar.solar(service.settings, home, service.sales, start_ms=end - 30 * 86_400_000, end_ms=end)
    return SolarView(exported_kwh_30_days=s.exported_wh / 1000, market_sold_kwh=s.sales_energy_wh / 1000,
                     market_earned_eur=round(s.sales_eur, 2), market_settled_eur=round(s.settled_eur, 2),
                     production_note=s.production_note)


@operation("GET", "/v1/me/solar", allow=MEMBERS, response=SolarView, errors=(409,),
           summary="Energy sent to the grid and what the market sales earned")
async def get_solar(call: Call) -> SolarView:
    return await blocking(solar_view, service_of(call), home_of(call))


@operation("GET", "/v1/me/export.csv", allow=MEMBERS, query=ExportQuery, response=ExportRowView, errors=(409,),
           summary="The household's readings as CSV, one row per point, units in the header (streamed)")
async def export_csv(call: Call) -> StreamingResponse:
    service, home = service_of(call), home_of(call)
    start_ms = home.midnight_ms(call.query.from_)
    end_ms = home.midnight_ms(call.query.to + timedelta(days=1))
    try:
        export.validate(call.query.resolution, start_ms, end_ms)
    except ValueError as error:
        field, _, reason = str(error).partition(": ")
        raise ApiError(422, "invalid", reason, field, "query") from None
    name = f"quartier-{home.meter}-{call.query.from_}-{call.query.to}-{call.query.resolution}.csv"
    return _CsvStream(
        export.stream(service.settings, home, call.query.resolution, start_ms, end_ms), media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


OPERATIONS = [live, get_consumption, get_bill, get_summary, get_power, get_alert_history, acknowledge_alert,
              snooze_alert, get_comparison, get_solar, export_csv]


def build_surface(context: SurfaceContext, directory: HomeDirectory, *, clock: Callable[[], int] | None = None) -> Surface:
    service = HouseholdService(context.settings, directory, **({"clock": clock} if clock else {}))

    @asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    from households import web

    return Surface(name="households", routes=[*OPERATIONS, *web.routes(service)], lifespan=lifespan, state=service,
                   static=web.static())


def surface(context: SurfaceContext) -> Surface:
    """The entry point (``quartier.surfaces``): homes from the accounts read models."""
    from households.accounts_directory import AccountsDirectory

    return build_surface(context, AccountsDirectory(context.settings))
