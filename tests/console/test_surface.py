"""The console over HTTP and in a browser: the composed API app served by uvicorn on a free port, the
console service following a simulated fleet of 300 modules on the real broker, Debian's chromium
driven by Playwright. Screenshots go to ``.state/screenshots/console/`` in the worktree.
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openpyxl
import pytest
import uvicorn
from prometheus_client import CollectorRegistry

from api.compose import compose
from console.surface import surface
from quartier.stack.component import pick_port
from quartier.settings import Settings
from simulator.config import FleetConfig
from simulator.run import RunPlan, run
from tests.api.surface import TestAuthenticator, bearer
from tests.console.support import tonight_at
from tests.support import isolated_settings

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / ".state" / "screenshots" / "console"
METERS = 300
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


class Served:
    def __init__(self, base: str, settings: Settings, app: Any) -> None:
        self.base = base
        self.settings = settings
        self.app = app

    def client(self, who: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base, headers=bearer(who), timeout=30)


@pytest.fixture(scope="module")
async def served(broker: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Served]:
    settings = isolated_settings(tmp_path_factory.mktemp("console") / "state", broker,
                                 console={"clock": "fleet", "refresh_s": 0.5, "tick_s": 0.5})
    app = compose(settings, CollectorRegistry(), [("console", surface)], extra_authenticators=[TestAuthenticator()])
    port = pick_port(0)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    serving = asyncio.create_task(server.serve())
    config = FleetConfig(meters=METERS, seed=21, malformed_fraction=0.0, disconnects_per_meter_day=200.0,
                         shards=settings.kafka.reading_shards)
    simulator = asyncio.create_task(run(config, RunPlan(duration_s=3 * 3600, speed=10, start_t=tonight_at(2)), settings))
    served = Served(f"http://127.0.0.1:{port}", settings, app)
    try:
        async with served.client("operator") as client:
            for _ in range(240):
                if server.started:
                    figures = (await client.get("/v1/fleet/overview")).json()
                    if figures["modules"] == METERS and sum(figures["hardware"].values()) >= METERS - 10 and figures["disconnected"]:
                        break
                await asyncio.sleep(0.5)
            else:
                raise AssertionError("the console never saw the modules report")
        yield served
    finally:
        simulator.cancel()
        server.should_exit = True
        await asyncio.gather(simulator, serving, return_exceptions=True)


async def _all_rows(client: httpx.AsyncClient, **query: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    while True:
        answer = (await client.get("/v1/fleet/modules", params={**query, "offset": len(rows), "limit": 1000})).json()
        rows += answer["items"]
        if len(rows) >= answer["total"]:
            return rows


async def test_a_filtered_sorted_page_and_the_export_of_the_whole_result(served: Served) -> None:
    async with served.client("support") as client:
        # Every module's first report in (its firmware and hardware): from then on neither moves while no
        # campaign runs, so the filters below and the export select the same modules each time.
        for _ in range(240):
            everything = await _all_rows(client)
            if all(r["firmware"] and r["hardware"] for r in everything):
                break
            await asyncio.sleep(0.5)
        assert len(everything) == METERS
        # Firmware and hardware stand still while no campaign runs (connection states and RSSI move with the fleet).
        query = {"firmware": "3.2.1,3.1.4", "hardware": "5", "sort": "meter", "order": "desc"}
        answer = (await client.get("/v1/fleet/modules", params={**query, "limit": 20, "offset": 5})).json()
        # Read right after: a module's first report (its firmware) may land between two reads.
        everything = await _all_rows(client)
        expected = sorted([r for r in everything if r["firmware"] in ("3.2.1", "3.1.4") and r["hardware"] == "5"],
                          key=lambda r: r["meter"], reverse=True)
        assert answer["total"] == len(expected) > 25
        assert [r["meter"] for r in answer["items"]] == [r["meter"] for r in expected[5:25]]
        live = (await client.get("/v1/fleet/modules", params={"state": "connected", "rssi_band": "good,excellent",
                                                             "sort": "rssi_dbm", "order": "desc", "limit": 100})).json()
        assert live["items"] and all(r["connected"] and r["rssi_band"] in ("good", "excellent") for r in live["items"])
        rssi = [r["rssi_dbm"] for r in live["items"]]
        assert rssi == sorted(rssi, reverse=True)

        exported = await client.get("/v1/fleet/modules/export", params={**query, "format": "csv"})
        assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
        lines = list(csv.DictReader(io.StringIO(exported.text)))
        everything = await _all_rows(client)
        expected = sorted([r for r in everything if r["firmware"] in ("3.2.1", "3.1.4") and r["hardware"] == "5"],
                          key=lambda r: r["meter"], reverse=True)
        assert [line["meter"] for line in lines] == [r["meter"] for r in expected]

        xlsx = await client.get("/v1/fleet/modules/export", params={"firmware": "3.1.4", "format": "xlsx"})
        sheet = openpyxl.load_workbook(io.BytesIO(xlsx.content), read_only=True)["modules"]
        rows = list(sheet.iter_rows(values_only=True))
        assert rows[0][0] == "meter" and len(rows) - 1 == sum(1 for r in everything if r["firmware"] == "3.1.4")

        bad = await client.get("/v1/fleet/modules", params={"rssi_band": "amazing"})
        assert bad.status_code == 422 and bad.json()["field"] == "rssi_band"
        unknown = await client.get("/v1/fleet/modules", params={"colour": "red"})
        assert unknown.status_code == 422 and unknown.json()["field"] == "colour"
        refused = await client.get("/v1/fleet/modules/012345678901/household")
        assert refused.status_code == 422 and refused.json()["field"] == "why"
        curious = await client.get("/v1/fleet/modules/012345678901/household", params={"why": "curious"})
        assert curious.status_code == 422 and curious.json()["field"] == "why"

    # No household has paired any of these modules (no accounts here): no one's personal data went out,
    # so the access log has no entry (tests/console/test_access.py exports a paired one).
    assert exported.headers["quartier-access-reference"].startswith("export:csv:")
    assert xlsx.headers["quartier-access-reference"].startswith("export:xlsx:")
    async with served.client("operator") as client:
        assert (await client.get("/v1/fleet/audit")).json()["reads"] == []


async def test_an_operator_runs_a_campaign_over_rest_and_pauses_it(served: Served) -> None:
    async with served.client("operator") as client:
        released = await client.post("/v1/fleet/firmware", json={"version": "3.3.0", "hardware": ["4", "5"], "notes": "fix"})
        assert released.status_code == 201, released.text
        again = await client.post("/v1/fleet/firmware", json={"version": "3.3.0", "hardware": ["4"]})
        assert again.status_code == 409 and again.json()["field"] == "version"
        created = await client.post("/v1/fleet/campaigns", json={
            "campaign": "rest-1", "firmware": "3.3.0", "group": {"firmware": ["2.9.7"]}, "rate_per_min": 100,
            "window_start_hour": 0, "window_end_hour": 6, "guard": {"min_sample": 3, "observe_s": 60}})
        assert created.status_code == 201, created.text
        assert created.json()["status"] == "running"
        for _ in range(120):
            view = (await client.get("/v1/fleet/campaigns/rest-1")).json()
            if view["by_status"].get("updated"):
                break
            await asyncio.sleep(0.5)
        assert view["phase"] == "canary" and view["modules"] >= 1
        paused = await client.post("/v1/fleet/campaigns/rest-1/pause", json={"reason": "night shift check"})
        assert paused.status_code == 200 and paused.json()["status"] == "paused"
        assert paused.json()["paused"]["reason"] == "night shift check"
        twice = await client.post("/v1/fleet/campaigns/rest-1/pause", json={"reason": "again"})
        assert twice.status_code == 409
        # The commands' record is their events on devices.events, with the operator's account id.
        commands = (await client.get("/v1/fleet/audit")).json()["commands"]
        assert [(c["action"], c["operator"], c["target"], c["reason"]) for c in commands] == [
            ("campaign_pause", "acct_operator", "rest-1", "night shift check"),
            ("campaign_create", "acct_operator", "rest-1", ""),
            ("firmware_release", "acct_operator", "3.3.0", ""),
        ]
        meter = next(m for m in (await _all_rows(client, firmware="3.3.0")))["meter"]
        module = (await client.get(f"/v1/fleet/modules/{meter}")).json()
        assert module["firmware"] == "3.3.0" and module["campaign"] == "rest-1" and module["reboots"] >= 1
    async with served.client("support") as client:
        assert (await client.post("/v1/fleet/campaigns/rest-1/resume", json={})).status_code == 403


async def test_the_pages_in_chromium(served: Served) -> None:
    from playwright.async_api import async_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        context = await browser.new_context(extra_http_headers=bearer("operator"), viewport={"width": 1280, "height": 900},
                                            accept_downloads=True)
        page = await context.new_page()
        await page.goto(f"{served.base}/console")
        assert await page.text_content("#modules") == str(METERS)
        await page.wait_for_selector("body[data-live='1']", timeout=15_000)  # a live SSE update arrived
        await page.wait_for_selector("#curve canvas")  # uPlot drew the 10-day curve
        await page.screenshot(path=str(SCREENSHOTS / "overview.png"), full_page=True)

        await page.goto(f"{served.base}/console/modules")
        await page.select_option("select[name=state]", "disconnected")
        await page.click("button[type=submit]")
        await page.wait_for_url("**state=disconnected**")
        shown = int(await page.text_content("#total") or "0")
        async with served.client("operator") as client:
            api_total = (await client.get("/v1/fleet/modules", params={"state": "disconnected"})).json()["total"]
        assert shown >= 1 and api_total >= 1
        cells = await page.locator("#list tr td:nth-child(3)").all_text_contents()
        assert cells and set(cells) == {"disconnected"}
        await page.screenshot(path=str(SCREENSHOTS / "modules-disconnected.png"), full_page=True)
        async with page.expect_download() as download_info:
            await page.click("#export-csv")
        download = await download_info.value
        exported = list(csv.DictReader(io.StringIO(Path(await download.path()).read_text())))
        # The whole filtered result, as of the click (the fleet at 10x speed moves between page and export).
        assert len(exported) >= 1 and {line["connected"] for line in exported} == {"False"}

        # A module disconnected now (the fleet reconnects them within simulated minutes, seconds here): its
        # page shows it so, unless it came back between the query and the page; then another one.
        for _ in range(5):
            async with served.client("operator") as client:
                disconnected = (await client.get("/v1/fleet/modules", params={"state": "disconnected", "limit": 1})).json()["items"][0]["meter"]
            await page.goto(f"{served.base}/console/modules/{disconnected}")
            if (await page.text_content("#state") or "").startswith("disconnected"):
                break
        assert (await page.text_content("#state") or "").startswith("disconnected")
        assert await page.locator("#timeline .disconnected").count() >= 1
        await page.screenshot(path=str(SCREENSHOTS / "module.png"), full_page=True)

        await page.goto(f"{served.base}/console/campaigns")
        await page.screenshot(path=str(SCREENSHOTS / "campaigns.png"), full_page=True)
        await page.click("#campaigns a")  # the campaign the REST test started and paused
        await page.wait_for_selector("#phases")
        assert await page.text_content("#status") == "paused"
        assert "night shift check" in (await page.text_content("#paused") or "")
        await page.screenshot(path=str(SCREENSHOTS / "campaign.png"), full_page=True)

        # Households see nothing of the console.
        other = await browser.new_context(extra_http_headers=bearer("owner"))
        answer = await (await other.new_page()).goto(f"{served.base}/console")
        assert answer is not None and answer.status == 403
        await browser.close()


async def test_a_campaign_page_follows_its_campaign_live(served: Served) -> None:
    """The page opened once: the campaign is resumed, advances phase by phase and completes through the real
    service (runner, broker, simulated modules), and the page shows each change without a reload."""
    from playwright.async_api import async_playwright

    async with served.client("operator") as client:
        hardware = sorted((await client.get("/v1/fleet/overview")).json()["hardware"])
        released = await client.post("/v1/fleet/firmware", json={"version": "3.4.0", "hardware": hardware})
        assert released.status_code == 201, released.text
        # Margins the fleet's frequent disconnects cannot pass, and phases that need half their modules:
        # the campaign only goes forward, as fast as the modules install.
        created = await client.post("/v1/fleet/campaigns", json={
            "campaign": "live-1", "firmware": "3.4.0", "group": {"firmware": ["3.1.4"]}, "rate_per_min": 1000,
            "window_start_hour": 0, "window_end_hour": 6, "attempt_timeout_s": 120, "retry_base_s": 30, "max_attempts": 2,
            "phases": [{"name": "canary", "cumulative_share": 0.1, "min_modules": 5, "success_share": 0.5},
                       {"name": "all", "cumulative_share": 1.0, "success_share": 0.5}],
            "guard": {"min_sample": 3, "observe_s": 30, "offline_share_margin": 1.0, "frame_gap_p95_ratio": 100,
                      "reboots_per_hour_margin": 100}})
        assert created.status_code == 201, created.text
        held = await client.post("/v1/fleet/campaigns/live-1/pause", json={"reason": "hold for the page"})
        assert held.status_code == 200 and held.json()["status"] == "paused"

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        context = await browser.new_context(extra_http_headers=bearer("support"), viewport={"width": 1280, "height": 900})
        page = await context.new_page()
        await page.goto(f"{served.base}/console/campaigns/live-1")
        await page.evaluate("window.sameDocument = true")  # gone if the page were reloaded
        assert await page.text_content("#status") == "paused"
        assert await page.text_content("#paused-by") == "operator"
        assert await page.text_content("#paused-reason") == "hold for the page"
        assert await page.is_visible("#paused")
        await page.wait_for_selector("body[data-live='1']", timeout=15_000)
        await page.screenshot(path=str(SCREENSHOTS / "campaign-held.png"), full_page=True)

        async with served.client("operator") as client:
            assert (await client.post("/v1/fleet/campaigns/live-1/resume", json={})).status_code == 200
            await page.wait_for_function("document.getElementById('status').textContent === 'running'", timeout=15_000)
            assert not await page.is_visible("#paused")
            assert await page.text_content("#paused-reason") == ""
            await page.wait_for_function("Number(document.getElementById('installed').textContent) > 0", timeout=120_000)
            await page.wait_for_function("document.getElementById('phase').textContent === 'all'", timeout=120_000)
            for _ in range(480):
                view = (await client.get("/v1/fleet/campaigns/live-1")).json()
                if view["status"] == "completed":
                    break
                await asyncio.sleep(0.5)
            assert view["status"] == "completed", view

        await page.wait_for_function("document.getElementById('status').textContent === 'completed'", timeout=15_000)
        installed, failed = view["by_status"].get("updated", 0), view["by_status"].get("failed", 0)
        assert installed >= 1 and view["phase"] == "all"
        assert [await page.text_content(f"#{k}") for k in ("status", "phase", "modules", "installed", "failed")] == [
            "completed", "all", str(view["modules"]), str(installed), str(failed)]
        phases = [await row.locator("td").all_text_contents() for row in await page.locator("#phases tr").all()]
        started = {h["text"].split()[1]: h["text"].split()[-2] for h in view["history"] if h["event"] == "PhaseStarted"}
        assert [row[:3] for row in phases] == [["canary", "10%", started["canary"]], ["all", "100%", started["all"]]]
        assert int(started["canary"]) >= 5 and int(started["canary"]) + int(started["all"]) == view["modules"]
        assert sum(int(row[3]) for row in phases) == installed
        assert await page.text_content("#history tr:first-child td:nth-child(2)") == \
            f"completed: {installed} updated, {failed} failed"
        assert await page.evaluate("window.sameDocument") is True
        await page.screenshot(path=str(SCREENSHOTS / "campaign-live.png"), full_page=True)
        await browser.close()
