"""The household app's web pages: rendered on the server (Jinja2), a small script for the live figures
and the charts (uPlot, from npm, pinned in package.json and served from the installed package).

Every page works without JavaScript but the live chart: figures, tables and forms are HTML; forms
post with the session's CSRF token in a hidden field (``api.csrf.check_form``). An anonymous
visitor is sent to the accounts' sign-in page.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from api import ApiError
from api.csrf import check_form
from households import alert_history, preferences
from households.home import Home
from households.i18n import language, translator
from households.live import figures
from households.service import HouseholdService
from households.views import HistoryView

HERE = Path(__file__).resolve().parent
#: uPlot's distribution files, from the npm package (package.json pins the version).
UPLOT_DIST = HERE.parent / "node_modules" / "uplot" / "dist"
SIGN_IN_URL = "/app/sign-in"

_templates = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["j2", "html"]))


def static() -> list[Mount]:
    mounts = [Mount("/app/static", app=StaticFiles(directory=HERE / "static"), name="household-static")]
    if UPLOT_DIST.is_dir():
        mounts.append(Mount("/app/vendor", app=StaticFiles(directory=UPLOT_DIST), name="household-vendor"))
    return mounts


def render(request: Request, template: str, page: str, status: int = 200, **values: Any) -> HTMLResponse:
    lang = language(request)
    home: Home | None = values.get("home")
    tz = home.zoneinfo if home else timezone.utc

    def when(t_ms: int | None) -> str:
        if t_ms is None:
            return ""
        return datetime.fromtimestamp(t_ms / 1000, tz).strftime("%d/%m %H:%M" if lang == "fr" else "%b %d %H:%M")

    principal = getattr(request.state, "principal", None)
    html = _templates.get_template(template).render(
        lang=lang, t=translator(lang), page=page, title_key=values.pop("title_key", "title"), when=when,
        csrf_token=getattr(principal, "csrf_token", "") or "", **values,
    )
    response = HTMLResponse(html, status_code=status)
    if request.query_params.get("lang") in ("fr", "en"):
        response.set_cookie("quartier_lang", request.query_params["lang"], samesite="lax", httponly=True)
    return response


async def through_api(request: Request, method: str, path: str, body: dict[str, Any] | None = None,
                      headers: dict[str, str] | None = None) -> httpx.Response:
    """One of the composed app's own operations, called in process with the visitor's cookies.

    The pages' forms post HTML; the operations they stand for (sign-in, alert rules) belong to the
    accounts surface and take JSON: a form handler calls them as any client would, so the rules of
    each operation (validation, throttling, CSRF) are applied once, by the operation itself.
    """
    transport = httpx.ASGITransport(app=request.app, client=(request.client.host if request.client else "127.0.0.1", 0))
    async with httpx.AsyncClient(transport=transport, base_url="http://app.internal", cookies=request.cookies) as client:
        return await client.request(method, path, json=body, headers=headers or {})


def routes(service: HouseholdService) -> list[Route]:
    from households import surface as api_views

    def signed_in(request: Request) -> tuple[Any, Home] | Response:
        principal = getattr(request.state, "principal", None)
        t = translator(language(request))
        if principal is None:
            return RedirectResponse(f"{SIGN_IN_URL}?next={request.url.path}", status_code=303)
        if principal.household_role not in ("owner", "member"):
            return render(request, "message.html.j2", "home", 403, message=t("sign_in_needed"), sign_in=SIGN_IN_URL)
        home = service.directory.home(principal.household) if principal.household else None
        if home is None:
            return render(request, "message.html.j2", "home", 409, message=t("no_meter"))
        return principal, home

    async def home_page(request: Request) -> Response:
        found = signed_in(request)
        if isinstance(found, Response):
            return found
        _, home = found
        latest = service.hub.latest(home.meter)
        summary = await asyncio.to_thread(api_views.summary_view, service.settings, home, service.clock())
        power = await asyncio.to_thread(api_views.power_view, service, home)
        return render(request, "home.html.j2", "home", home=home, summary=summary, power=power,
                      live=figures(latest, home.tariff) if latest else None)

    async def consumption_page(request: Request) -> Response:
        found = signed_in(request)
        if isinstance(found, Response):
            return found
        _, home = found
        range_ = request.query_params.get("range", "24h")
        unit = request.query_params.get("unit", "kwh")
        if range_ not in ("24h", "7d", "30d", "12mo") or unit not in ("kwh", "eur"):
            return render(request, "message.html.j2", "consumption", 422, message="range: 24h, 7d, 30d, 12mo; unit: kwh, eur")
        chart = await asyncio.to_thread(api_views.consumption_view, service.settings, home, range_, unit, service.clock(), service.charts)
        return render(request, "consumption.html.j2", "consumption", home=home, chart=chart,
                      chart_json=json.dumps(chart.model_dump()).replace("</", "<\\/"))

    async def bill_page(request: Request) -> Response:
        found = signed_in(request)
        if isinstance(found, Response):
            return found
        _, home = found
        bill = await asyncio.to_thread(api_views.bill_view, service.settings, home, service.clock())
        return render(request, "bill.html.j2", "bill", home=home, bill=bill)

    async def alerts_page(request: Request) -> Response:
        found = signed_in(request)
        if isinstance(found, Response):
            return found
        _, home = found
        before = request.query_params.get("before_ms")
        episodes = await asyncio.to_thread(
            alert_history.history, service.settings, home, before_ms=int(before) if before and before.isdigit() else None
        )
        items = [api_views.episode_view(service, e) for e in episodes]
        sparks = {}
        for e in episodes:
            points = await asyncio.to_thread(alert_history.minutes_around, service.settings, home, e)
            threshold = e.threshold if e.kind.startswith(("power", "fuse")) else None
            sparks[e.id] = Markup(alert_history.sparkline(points, threshold))
        history = HistoryView(items=items, next_before_ms=items[-1].raised_ms if len(items) == 20 else None)
        rules = await through_api(request, "GET", "/v1/me/alerts")
        return render(request, "alerts.html.j2", "alerts", home=home, history=history, sparks=sparks,
                      rules_form=rules.json() if rules.status_code == 200 else {"power_max_w": None})

    async def episode_action(request: Request) -> Response:
        found = signed_in(request)
        if isinstance(found, Response):
            return found
        principal, home = found
        form = await request.form()
        check_form(request, form)
        alert_id = request.path_params["alert_id"]
        try:
            episode = await asyncio.to_thread(alert_history.find, service.settings, home, alert_id)
        except alert_history.NotFound as error:
            raise ApiError(404, "not_found", str(error), "alert_id", "path") from None
        if request.path_params["action"] == "acknowledge":
            records: list[Any] = alert_history.acknowledge(service.actions, home, episode, principal.subject, service.clock())
        else:
            minutes = str(form.get("minutes", ""))
            if not minutes.isdigit():
                raise ApiError(422, "invalid", "a whole number of minutes", "minutes", "body")
            try:
                records = alert_history.snooze(service.actions, home, episode, principal.subject, service.clock(), int(minutes))
            except ValueError as error:
                raise ApiError(422, "invalid", str(error).partition(": ")[2], "minutes", "body") from None
        await service.append(records)
        return RedirectResponse(f"/app/alerts#episode-{alert_id}", status_code=303)

    async def compare_page(request: Request) -> Response:
        found = signed_in(request)
        if isinstance(found, Response):
            return found
        _, home = found
        c = await asyncio.to_thread(api_views.comparison_view, service, home)
        return render(request, "compare.html.j2", "compare", home=home, c=c)

    async def solar_page(request: Request) -> Response:
        found = signed_in(request)
        if isinstance(found, Response):
            return found
        _, home = found
        s = await asyncio.to_thread(api_views.solar_view, service, home)
        return render(request, "solar.html.j2", "solar", home=home, s=s)

    async def export_page(request: Request) -> Response:
        found = signed_in(request)
        if isinstance(found, Response):
            return found
        _, home = found
        today = home.local_date(service.clock())
        return render(request, "export.html.j2", "export", home=home, default_from=today - timedelta(days=7),
                      default_to=today)

    async def sign_in_page(request: Request) -> Response:
        next_path = request.query_params.get("next", "/app")
        return render(request, "sign_in.html.j2", "home", next=next_path if next_path.startswith("/app") else "/app",
                      email="", error=None, title_key="sign_in")

    async def sign_in(request: Request) -> Response:
        form = await request.form()
        email, password = str(form.get("email", "")), str(form.get("password", ""))
        next_path = str(form.get("next", "/app"))
        answer = await through_api(request, "POST", "/v1/sessions", {"email": email, "password": password})
        if answer.status_code != 200:
            reason = answer.json().get("reason", "") if answer.headers.get("content-type", "").startswith("application/json") else ""
            return render(request, "sign_in.html.j2", "home", answer.status_code, next=next_path, email=email,
                          error=reason, title_key="sign_in")
        response = RedirectResponse(next_path if next_path.startswith("/app") else "/app", status_code=303)
        for cookie in answer.headers.get_list("set-cookie"):
            response.headers.append("set-cookie", cookie)
        return response

    async def power_limit(request: Request) -> Response:
        found = signed_in(request)
        if isinstance(found, Response):
            return found
        principal, _home = found
        form = await request.form()
        check_form(request, form)
        value = str(form.get("power_max_w", "")).strip()
        if value and not value.isdigit():
            raise ApiError(422, "invalid", "a whole number of watts", "power_max_w", "body")
        # PUT replaces the household's rules: send the ones in force with only the power limit changed.
        current = await through_api(request, "GET", "/v1/me/alerts")
        body = {k: v for k, v in current.json().items() if k not in ("meter", "updated_ms")} if current.status_code == 200 else {}
        body["power_max_w"] = int(value) if value else None
        answer = await through_api(request, "PUT", "/v1/me/alerts", body, headers={"X-CSRF-Token": principal.csrf_token or ""})
        if answer.status_code != 200:
            return Response(answer.content, status_code=answer.status_code, media_type="application/json")
        return RedirectResponse("/app/alerts", status_code=303)

    async def preferences_page(request: Request, error: str | None = None, status: int = 200) -> Response:
        found = signed_in(request)
        if isinstance(found, Response):
            return found
        principal, home = found
        rules = await through_api(request, "GET", "/v1/me/alerts")
        notifications = await through_api(request, "GET", "/v1/me/notifications")
        members = notifications.json()["members"] if notifications.status_code == 200 else []
        mine = next((m for m in members if m["account"] == principal.subject),
                    {"alert_email": None, "channels": ["push", "email"], "quiet_hours": None, "language": "fr"})
        lang = language(request)
        return render(request, "preferences.html.j2", "preferences", status, home=home,
                      rules=rules.json() if rules.status_code == 200 else {}, members=members, mine=mine,
                      fields=[(f, kind) for f, (kind, _, _) in preferences.RULES.items()],
                      explain=lambda field: preferences.explain(field, lang), error=error)

    async def save_alert_rules(request: Request) -> Response:
        found = signed_in(request)
        if isinstance(found, Response):
            return found
        principal, _ = found
        form = await request.form()
        check_form(request, form)
        current = await through_api(request, "GET", "/v1/me/alerts")
        try:
            body = preferences.rules_from_form(form, current.json() if current.status_code == 200 else {})
        except ValueError as problem:
            return await preferences_page(request, str(problem), 422)
        answer = await through_api(request, "PUT", "/v1/me/alerts", body, headers={"X-CSRF-Token": principal.csrf_token or ""})
        if answer.status_code != 200:
            refused = answer.json()
            return await preferences_page(request, f"{refused.get('field')}: {refused.get('reason')}", answer.status_code)
        return RedirectResponse("/app/preferences", status_code=303)

    async def save_notifications(request: Request) -> Response:
        found = signed_in(request)
        if isinstance(found, Response):
            return found
        principal, _ = found
        form = await request.form()
        check_form(request, form)
        body = {"alert_email": str(form.get("alert_email", "")).strip() or None,
                "channels": [str(c) for c in form.getlist("channels")],
                "quiet_hours": str(form.get("quiet_hours", "")).strip() or None,
                "language": str(form.get("language", "fr"))}
        answer = await through_api(request, "PUT", "/v1/me/notifications", body,
                                   headers={"X-CSRF-Token": principal.csrf_token or ""})
        if answer.status_code != 200:
            refused = answer.json()
            return await preferences_page(request, f"{refused.get('field')}: {refused.get('reason')}", answer.status_code)
        return RedirectResponse("/app/preferences", status_code=303)

    return [
        Route("/app/preferences", preferences_page),
        Route("/app/preferences/alerts", save_alert_rules, methods=["POST"]),
        Route("/app/preferences/notifications", save_notifications, methods=["POST"]),
        Route("/app/sign-in", sign_in_page),
        Route("/app/sign-in", sign_in, methods=["POST"]),
        Route("/app/alerts/power-limit", power_limit, methods=["POST"]),
        Route("/app", home_page),
        Route("/app/consumption", consumption_page),
        Route("/app/bill", bill_page),
        Route("/app/alerts", alerts_page),
        Route("/app/alerts/{alert_id:str}/{action:str}", episode_action, methods=["POST"]),
        Route("/app/compare", compare_page),
        Route("/app/solar", solar_page),
        Route("/app/export", export_page),
    ]


