"""The household app in a real browser (Debian's chromium driven by Playwright) over every real part:
the composed API process (uvicorn), real accounts, the broker, the stream worker and InfluxDB.

A household signs in through the page's form, watches its live power change, reads its 24-hour
chart, sets a power limit in the alerts form (which reaches ``alerts.rules`` through the accounts
operation), and sees the alert the worker then raises in its history. Every page is screenshotted
into the test's temporary directory.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from prometheus_client import CollectorRegistry

from api.compose import compose, discover
from quartier import events, topics
from quartier.events import MeterReading, ReadingBatch, shard_of
from quartier.kafka import ensure_topics, read_all
from quartier.stack.component import pick_port
from quartier.stack.influx import count_points, ensure_database
from tests.accounts.principals import PASSWORD, ZONE, make_accounts
from tests.streams.worker_support import WorkerProcess, scrape, send

pytestmark = pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed (./dev setup)")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
STEP_MS = 600_000


class Meter:
    """The owner's meter: a day of history every 10 minutes, then a reading a second, live."""

    def __init__(self, meter: str) -> None:
        self.meter = meter
        self.wh = 5_000_000
        self.seq = 0

    def reading(self, t_ms: int, va: int, seconds: float) -> MeterReading:
        self.wh += int(va * seconds / 3600)
        self.seq += 1
        return MeterReading(meter=self.meter, zone=ZONE, time_ms=t_ms, seq=self.seq, drawn_va=va, withdrawn_wh=self.wh,
                            withdrawn_wh_by_register=(self.wh,), subscribed_kva=6, cutoff_kva=6)


async def stream_live(settings: Any, meter: Meter, stop: asyncio.Event) -> None:
    """A reading a second at 2,500-3,400 W (always over the limit the test sets), as a Linky sends."""
    shard = shard_of(meter.meter, settings.kafka.reading_shards)
    i = 0
    while not stop.is_set():
        r = meter.reading(int(time.time() * 1000), 2500 + (i % 10) * 100, 1.0)
        await send(settings, topics.METER_READINGS.name,
                   [(str(shard).encode(), events.encode(ReadingBatch(shard=shard, readings=[r])))])
        i += 1
        await asyncio.sleep(1.0)


@pytest.fixture
async def app_url(broker, smtp, influx, make_settings, tmp_path: Path) -> AsyncIterator[tuple[str, Any, Any, dict]]:
    settings = make_settings(broker, smtp, influx)
    await ensure_topics(settings)
    ensure_database(settings)
    made = await make_accounts(settings)
    meter = Meter(made.meters["A"])
    port = pick_port(0)
    argv = ["-m", "quartier.cli", "streams", "worker", "--app-id", settings.topic("worker"), "--metrics-port", str(port)]
    with WorkerProcess(argv, settings, tmp_path / "worker.log") as worker:
        await worker.until(lambda: asyncio.sleep(0, result=bool(scrape(port))), 90, "the worker serving metrics")
        # A day of history, a reading every 10 minutes, at 600 to 1,800 W.
        now = int(time.time() * 1000)
        history = [meter.reading(t, 600 + (k % 3) * 600, 600) for k, t in enumerate(range(now - 86_400_000, now - 60_000, STEP_MS))]
        shard = shard_of(meter.meter, settings.kafka.reading_shards)
        await send(settings, topics.METER_READINGS.name,
                   [(str(shard).encode(), events.encode(ReadingBatch(shard=shard, readings=history[i:i + 50])))
                    for i in range(0, len(history), 50)])

        async def stored() -> bool:
            return count_points(settings, "reading", f"meter = '{meter.meter}'") >= len(history)

        await worker.until(stored, 60, "the day of history in InfluxDB")
        app = compose(settings, CollectorRegistry(), discover())
        web_port = pick_port(0)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=web_port, log_level="warning"))
        serving = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.05)
        stop = asyncio.Event()
        live = asyncio.create_task(stream_live(settings, meter, stop))
        domain = settings.kafka.topic_prefix.strip(".") + ".test"
        try:
            yield f"http://127.0.0.1:{web_port}", settings, worker, {"email": f"owner@{domain}", "meter": meter.meter}
        finally:
            stop.set()
            await live
            server.should_exit = True
            await serving


async def test_a_household_signs_in_watches_its_power_and_sets_a_limit_that_raises_an_alert(app_url, tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    base, settings, worker, who = app_url
    shots = tmp_path / "screenshots"
    shots.mkdir()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_FLAGS)
        page = await browser.new_page(viewport={"width": 390, "height": 844}, locale="en-GB")  # a phone
        try:
            await page.goto(f"{base}/app?lang=en")
            assert page.url.startswith(f"{base}/app/sign-in")  # anonymous: sent to sign in
            await page.screenshot(path=str(shots / "sign-in.png"), full_page=True)
            await page.get_by_label("Email").fill(who["email"])
            await page.get_by_label("Password").fill(PASSWORD)
            await page.get_by_role("button", name="Sign in").click()
            await page.wait_for_url(f"{base}/app")

            # The live power (an aria-live region) changes at least twice within 3 s.
            live = page.locator("#live-power [data-field=power_va]")
            await page.wait_for_function("window.quartierLiveEvents > 0", timeout=15_000)
            seen, changes = [await live.text_content()], 0
            deadline = time.monotonic() + 3.0
            while time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                value = await live.text_content()
                if value != seen[-1]:
                    seen.append(value)
                    changes += 1
            assert changes >= 2, seen
            assert await page.locator("#live-power").get_attribute("aria-live") == "polite"
            await page.screenshot(path=str(shots / "home.png"), full_page=True)

            await page.goto(f"{base}/app/consumption?range=24h&unit=kwh")
            points = await page.evaluate("window.quartierCharts.consumption.data[0].length")
            assert points >= 100, points  # a reading every 10 minutes for a day: 144 buckets
            await page.screenshot(path=str(shots / "consumption.png"), full_page=True)

            await page.goto(f"{base}/app/alerts")
            await page.get_by_label("Alert when the power goes over (W)").fill("2000")
            await page.get_by_role("button", name="Save").click()
            await page.wait_for_url(f"{base}/app/alerts")
            rules = await read_all(settings, settings.topic(topics.ALERTS_RULES.name), events.decoder(events.AlertRules).decode)
            assert [r.power_max_w for r in rules if r.meter == who["meter"]][-1] == 2000  # type: ignore[attr-defined]

            async def alert_listed() -> bool:
                await page.reload()
                return await page.locator(".episodes li h2", has_text="power_above").count() > 0

            async def minutes_drawn() -> bool:
                # The spark draws the readings around the episode (the minutes around it), which reach
                # InfluxDB through their own writer: they may land a moment after the alert's point.
                await page.reload()
                return await page.locator(".episodes li svg.spark polyline").count() >= 1

            await worker.until(alert_listed, 90, "the power alert in the history page")
            await worker.until(minutes_drawn, 30, "the minutes around the episode drawn in its spark")
            await page.screenshot(path=str(shots / "alerts.png"), full_page=True)
            await page.get_by_role("button", name="Acknowledge").first.click()
            await page.wait_for_url(f"{base}/app/alerts*")
            assert await page.get_by_text("Acknowledged by").count() == 1

            # Every rule the engine knows, each explained; a daily spending limit set in the form.
            await page.goto(f"{base}/app/preferences?lang=en")
            assert await page.get_by_text("Alert when the day's spending goes over this amount").count() == 1
            await page.get_by_label("spending_day_max_eur").fill("12.5")
            await page.get_by_role("button", name="Save").first.click()
            await page.wait_for_url(f"{base}/app/preferences")
            assert await page.get_by_label("spending_day_max_eur").input_value() == "12.5"
            assert await page.get_by_label("power_max_w").input_value() == "2000"  # the other rules kept
            await page.screenshot(path=str(shots / "preferences.png"), full_page=True)

            for name in ("bill", "compare", "solar", "export"):
                await page.goto(f"{base}/app/{name}")
                assert await page.locator("h1").count() == 1
                await page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
            await page.goto(f"{base}/app/bill?lang=fr")
            assert await page.locator("html").get_attribute("lang") == "fr"
            await page.screenshot(path=str(shots / "bill-fr.png"), full_page=True)
        finally:
            await browser.close()
    assert sorted(p.name for p in shots.iterdir()) == [
        "alerts.png", "bill-fr.png", "bill.png", "compare.png", "consumption.png", "export.png", "home.png",
        "preferences.png", "sign-in.png", "solar.png",
    ]


async def test_every_page_works_without_javascript(app_url) -> None:
    from playwright.async_api import async_playwright

    base, _, _, who = app_url
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_FLAGS)
        context = await browser.new_context(java_script_enabled=False)
        page = await context.new_page()
        try:
            await page.goto(f"{base}/app/sign-in?lang=en")
            await page.get_by_label("Email").fill(who["email"])
            await page.get_by_label("Password").fill(PASSWORD)
            await page.get_by_role("button", name="Sign in").click()
            await page.wait_for_url(f"{base}/app")
            assert await page.locator("#live-power").count() == 1  # the latest reading, rendered by the server
            await page.goto(f"{base}/app/consumption?range=24h&unit=eur")
            rows = await page.locator("details table tbody tr").count()
            assert rows >= 100
            await page.goto(f"{base}/app/bill")
            assert await page.get_by_role("rowheader", name="Subscription").count() == 1
        finally:
            await browser.close()
