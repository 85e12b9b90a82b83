"""The console's web pages: server-rendered (Jinja2), charts by uPlot (npm, pinned in package.json,
served from the installed package), live figures over Server-Sent Events (sse-starlette).

Pages (operator and support; anyone else gets the API layer's 401/403):

- ``/console``: the fleet overview, its figures refreshed live from ``/console/live``;
- ``/console/modules``: the module list, filters as a GET form, server-side pages, CSV/XLSX export links;
- ``/console/modules/{meter}``: one module and its 30-day connectivity timeline;
- ``/console/campaigns`` and ``/console/campaigns/{campaign}``: roll-outs and their progress.

The pages read the same projection and state as ``/v1/fleet/...``; they hold no logic of their own
beyond formatting.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone
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


def routes(state: "ConsoleState") -> list[BaseRoute]:
    async def overview(request: Request) -> Response:
        principal = _staff(request)
        figures = state.service.fleet.fleet().as_dict()
        return _render("overview.html.j2", figures=figures, extras=state.overview_extras(figures), who=principal.subject,
                       campaigns=[c.summary() for c in state.service.state.campaigns.values()])

    async def live(request: Request) -> Response:
        _staff(request)

        async def figures() -> Any:
            while True:
                f = state.service.fleet.fleet().as_dict()
                f.pop("connected_curve")
                yield {"event": "fleet", "data": json.dumps(f)}
                await asyncio.sleep(LIVE_EVERY_S)

        return EventSourceResponse(figures(), ping=15)

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

    async def campaign(request: Request) -> Response:
        principal = _staff(request)
        c = state.service.state.campaigns.get(request.path_params["campaign"])
        if c is None:
            raise ApiError(404, "not_found", f"no campaign {request.path_params['campaign']!r}", "campaign", "path")
        phases = [{"name": p.name, "share": p.cumulative_share, "modules": len(c.phase_members[i]) if i < len(c.phase_members) else 0,
                   "updated": c.count("updated", i) if i < len(c.phase_members) else 0} for i, p in enumerate(c.phases)]
        return _render("campaign.html.j2", c=c.summary(), phases=phases, history=c.history[-50:], who=principal.subject)

    out: list[BaseRoute] = [
        Route("/console", overview, methods=["GET"]),
        Route("/console/live", live, methods=["GET"]),
        Route("/console/modules", modules, methods=["GET"]),
        Route("/console/modules/{meter:str}", module, methods=["GET"]),
        Route("/console/campaigns", campaigns, methods=["GET"]),
        Route("/console/campaigns/{campaign:str}", campaign, methods=["GET"]),
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
