"""The console's web pages: server-rendered (Jinja2), charts by uPlot (npm, pinned in package.json,
served from the installed package), live figures over Server-Sent Events (sse-starlette).

Pages (operator and support; anyone else gets the API layer's 401/403):

- ``/console``: the fleet overview, its figures refreshed live from ``/console/live``;
- ``/console/modules``: the module list, filters as a GET form, server-side pages, CSV/XLSX export links;
- ``/console/modules/{meter}``: one module and its 30-day connectivity timeline;
- ``/console/campaigns`` and ``/console/campaigns/{campaign}``: roll-outs and their progress, the
  campaign's refreshed live from ``/console/campaigns/{campaign}/live`` (phase, installed, failed,
  paused and why, history).

Live figures are one mechanism (:func:`_live`): a Server-Sent Events stream of what a function of the
state gives, every ``LIVE_EVERY_S``, sent when it changed; the page renders the same function's value
first, so the first paint and every update agree. The pages read the same projection and state as
``/v1/fleet/...``; they hold no logic of their own beyond formatting.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import jinja2
from sse_starlette.sse import EventSourceResponse
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from api import ApiError, allow
from console import campaigns as cs
from console.listing import ListError, ModuleFilter, Query, page
from console.projection import RSSI_BANDS

if TYPE_CHECKING:
    from console.surface import ConsoleState

ROOT = Path(__file__).resolve().parent.parent
UPLOT_DIR = ROOT / "node_modules" / "uplot" / "dist"
STAFF = allow("operator", "support")
LIVE_EVERY_S = 2.0


def _when(ms: int | None) -> str:
    if ms is None or ms < 0:
        return "-"
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=jinja2.select_autoescape(["html", "j2"]),
    undefined=jinja2.StrictUndefined,
)
_env.filters["when"] = _when
_env.filters["tojson_safe"] = lambda v: jinja2.utils.htmlsafe_json_dumps(v)


def _staff(request: Request) -> Any:
    principal = getattr(request.state, "principal", None)
    STAFF.check(principal)
    return principal


def _render(name: str, **context: Any) -> HTMLResponse:
    return HTMLResponse(_env.get_template(name).render(**context))


def _live(event: str, snapshot: Callable[[], dict[str, Any] | None]) -> EventSourceResponse:
    """``snapshot()`` as SSE events named ``event``: at once, then every LIVE_EVERY_S when it changed
    (a ping every 15 s keeps proxies from closing a quiet stream); None ends the stream."""

    async def events() -> Any:
        last = None
        while (value := snapshot()) is not None:
            data = json.dumps(value)
            if data != last:
                yield {"event": event, "data": data}
                last = data
            await asyncio.sleep(LIVE_EVERY_S)

    return EventSourceResponse(events(), ping=15)


def _fleet_live(state: "ConsoleState") -> dict[str, Any]:
    f = state.service.fleet.fleet().as_dict()
    f.pop("connected_curve")
    return f


def campaign_page(c: cs.Campaign) -> dict[str, Any]:
    """What a campaign's page shows: rendered into the page, then sent live as it changes."""
    # Formatted here, once, so the server's first paint and the page's script show the same text.
    summary = c.summary()
    started = len(c.phase_members)
    phases = [{"name": p.name, "share": f"{p.cumulative_share * 100:g}%",
               "modules": len(c.phase_members[i]) if i < started else 0,
               "updated": c.count(cs.UPDATED, i) if i < started else 0} for i, p in enumerate(c.phases)]
    paused = summary["paused"]
    by_status = summary["by_status"]
    return {**summary, "installed": by_status.get(cs.UPDATED, 0), "failed": by_status.get(cs.FAILED, 0),
            "phase_rows": phases, "by_status_text": ", ".join(f"{k}: {by_status[k]}" for k in sorted(by_status)),
            "figures": [] if paused is None else [[k, f"{v:g}"] for k, v in sorted(paused["figures"].items())],
            "history": [{"when": _when(h["at_ms"]), "text": h["text"]} for h in reversed(c.history[-50:])]}


def routes(state: "ConsoleState") -> list[BaseRoute]:
    async def overview(request: Request) -> Response:
        principal = _staff(request)
        figures = state.service.fleet.fleet().as_dict()
        return _render("overview.html.j2", figures=figures, extras=state.overview_extras(figures), who=principal.subject,
                       campaigns=[c.summary() for c in state.service.state.campaigns.values()])

    async def live(request: Request) -> Response:
        _staff(request)
        return _live("fleet", lambda: _fleet_live(state))

    async def modules(request: Request) -> Response:
        principal = _staff(request)
        params = request.query_params
        def csv(name: str) -> tuple[str, ...]:
            return tuple(v for v in (p.strip() for p in params.get(name, "").split(",")) if v)
        try:
            offset = int(params.get("offset", "0") or 0)
            gap_min = float(params["frame_gap_min_ms"]) if params.get("frame_gap_min_ms") else None
            q = Query(filter=ModuleFilter(firmware=csv("firmware"), state=csv("state"), rssi_bands=csv("rssi_band"),  # type: ignore[arg-type]
                                          zones=csv("zone"), frame_gap_min_ms=gap_min),
                      sort=params.get("sort", "meter"), descending=params.get("order") == "desc", offset=offset, limit=50)
            result = page(state.service.fleet, q, state.paired_now())
        except (ListError, ValueError) as exc:
            field = getattr(exc, "field", "query")
            raise ApiError(422, "invalid", str(exc), field, "query") from None
        kept = {k: v for k, v in params.items() if k != "offset" and v}
        return _render("modules.html.j2", result=result, params=dict(params), who=principal.subject,
                       bands=[b for b, _ in RSSI_BANDS], firmware=state.service.fleet.firmware_names,
                       export_csv="/v1/fleet/modules/export?" + urlencode({**kept, "format": "csv"}),
                       export_xlsx="/v1/fleet/modules/export?" + urlencode({**kept, "format": "xlsx"}),
                       next_page="?" + urlencode({**kept, "offset": offset + 50}) if offset + 50 < result["total"] else None,
                       previous_page="?" + urlencode({**kept, "offset": max(0, offset - 50)}) if offset else None)

    async def module(request: Request) -> Response:
        principal = _staff(request)
        meter = request.path_params["meter"]
        found = state.service.fleet.module(meter)
        if found is None:
            raise ApiError(404, "not_found", f"no module {meter} in the fleet", "meter", "path")
        paired = state.paired_now()
        found["paired"] = None if paired is None else bool(paired[state.service.fleet.rows[meter]])
        found["campaign"] = state.service.state.active_campaign_of(meter)
        now = state.service.fleet.watermark_ms
        return _render("module.html.j2", m=found, who=principal.subject, now_ms=now,
                       timeline=_timeline(found, now))

    async def campaigns(request: Request) -> Response:
        principal = _staff(request)
        items = sorted(state.service.state.campaigns.values(), key=lambda c: -c.created_ms)
        return _render("campaigns.html.j2", items=[c.summary() for c in items], who=principal.subject,
                       firmware=list(state.service.state.firmware.values()))

    def found_campaign(request: Request) -> cs.Campaign:
        c = state.service.state.campaigns.get(request.path_params["campaign"])
        if c is None:
            raise ApiError(404, "not_found", f"no campaign {request.path_params['campaign']!r}", "campaign", "path")
        return c

    async def campaign(request: Request) -> Response:
        principal = _staff(request)
        return _render("campaign.html.j2", c=campaign_page(found_campaign(request)), who=principal.subject)

    async def campaign_live(request: Request) -> Response:
        _staff(request)
        name = found_campaign(request).campaign
        campaigns = state.service.state.campaigns
        return _live("campaign", lambda: campaign_page(campaigns[name]) if name in campaigns else None)

    out: list[BaseRoute] = [
        Route("/console", overview, methods=["GET"]),
        Route("/console/live", live, methods=["GET"]),
        Route("/console/modules", modules, methods=["GET"]),
        Route("/console/modules/{meter:str}", module, methods=["GET"]),
        Route("/console/campaigns", campaigns, methods=["GET"]),
        Route("/console/campaigns/{campaign:str}", campaign, methods=["GET"]),
        Route("/console/campaigns/{campaign:str}/live", campaign_live, methods=["GET"]),
    ]
    if UPLOT_DIR.is_dir():
        out.append(Mount("/console/static/uplot", app=StaticFiles(directory=UPLOT_DIR), name="console-uplot"))
    return out


def _timeline(m: dict[str, Any], now_ms: int) -> list[dict[str, Any]]:
    """The last 30 days as segments (connected / disconnected), oldest first, with their share of the width."""
    if now_ms < 0:
        return []
    start = max(now_ms - 30 * 86_400_000, m["first_seen_ms"] if m["first_seen_ms"] >= 0 else now_ms)
    span = max(now_ms - start, 1)
    segments = []
    cursor = start
    for d in m["disconnections"]:
        a = max(d["from_ms"], start)
        b = now_ms if d["to_ms"] is None else min(d["to_ms"], now_ms)
        if b <= a:
            continue
        if a > cursor:
            segments.append({"state": "connected", "from_ms": cursor, "to_ms": a, "share": (a - cursor) / span})
        segments.append({"state": "disconnected", "from_ms": a, "to_ms": b, "share": (b - a) / span})
        cursor = b
    if cursor < now_ms:
        segments.append({"state": "connected", "from_ms": cursor, "to_ms": now_ms, "share": (now_ms - cursor) / span})
    return segments
