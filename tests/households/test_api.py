"""The households surface over real HTTP (uvicorn on a loopback port), the real broker and InfluxDB,
and real accounts (signed up, confirmed, the owner pairing the scripted billing meter with its code):
the same euros as the domain, the live stream with Last-Event-ID, refusals naming the field."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
import uvicorn
from prometheus_client import CollectorRegistry

from accounts.keys import token_secret
from accounts.operations import AccountOperations
from accounts.readmodel import ReadModel
from accounts.service import AccountsService
from accounts.sessions import CredentialStore
from accounts.surface import surface as accounts_surface
from api.compose import compose
from households.accounts_directory import AccountsDirectory
from households.surface import build_surface
from quartier import events, pairing, topics
from quartier.events import MeterReading, ReadingBatch, shard_of
from quartier.kafka import read_all
from quartier.stack.component import pick_port
from tests.accounts.test_service import confirmation_token
from tests.households.meters import local_ms
from tests.households.scenarios import METERS, Told
from tests.streams.worker_support import send

NOW = local_ms(2025, 2, 10, 12)
BILLING = METERS["billing_from_15th"].home
CREDENTIALS: dict[str, dict[str, str]] = {}  # principal -> Authorization header, filled by ``served``
CREDENTIALS_ACCOUNTS: dict[str, str] = {}  # principal -> account id
OWNER: dict[str, str] = {}


def bearer(name: str) -> dict[str, str]:
    return CREDENTIALS[name]


async def make_people(settings: Any) -> dict[str, str]:
    """owner and member of the household with the billing meter (base, 6 kVA, billed from the 15th), and
    another household's owner (no meter) and an operator; returns principal -> account id."""
    service = AccountsService(settings, follow_interval_s=0)
    await service.start()
    ops = AccountOperations(settings, service)
    try:
        people: dict[str, str] = {}
        domain = settings.kafka.topic_prefix.strip(".") + ".test"
        for name in ("owner", "member", "member_of_other", "operator"):
            email = f"{name}@{domain}"
            await ops.sign_up(email=email, name=name, password="a long enough password")
            await ops.confirm(confirmation_token(settings, email))
            people[name] = service.state.account_by_email(email).account  # type: ignore[union-attr]
        await ops.create_household(people["owner"], "Billed from the 15th")
        await ops.pair(people["owner"], meter=BILLING.meter, zone=BILLING.zone,
                       code=pairing.pairing_code(BILLING.meter, BILLING.zone))
        await ops.set_tariff(people["owner"], tariff="base", subscribed_kva=6, billing_day=15)
        await ops.join(people["member"], (await ops.invite(people["owner"])).code)
        await ops.create_household(people["member_of_other"], "No meter yet")
        await ops.grant("cli", f"operator@{domain}", "operator")
        return people
    finally:
        await service.stop()


@pytest.fixture(scope="module")
async def served(told: Told) -> AsyncIterator[str]:
    people = await make_people(told.settings)
    factory = lambda context: build_surface(context, AccountsDirectory(context.settings), clock=lambda: NOW)  # noqa: E731
    app = compose(told.settings, CollectorRegistry(), [("accounts", accounts_surface), ("households", factory)])
    port = pick_port(0)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    # Tokens once the accounts surface has made its tables, as a client signing in would get them.
    read_model = ReadModel(told.settings.sqlite_url("accounts"))
    store = CredentialStore(told.settings, read_model.engine, token_secret(told.settings))
    for name, account in people.items():
        CREDENTIALS[name] = {"Authorization": f"Bearer {store.issue_tokens(account).access_token}"}
    OWNER.update(CREDENTIALS["owner"])
    CREDENTIALS_ACCOUNTS.update(people)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        read_model.close()


async def get(base: str, path: str, headers: dict[str, str] = OWNER, **params: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        return await client.get(path, params=params, headers=headers)


async def test_the_bill_over_http_is_the_hand_figure(served: str) -> None:
    answer = await get(served, "/v1/me/bill")
    assert answer.status_code == 200, answer.text
    bill = answer.json()
    assert (bill["period_start"], bill["period_end"]) == ("2025-01-15", "2025-02-14")
    assert (bill["energy_eur"], bill["subscription_eur"], bill["total_eur"]) == (178.34, 12.04, 190.38)
    assert bill["projected_total_eur"] == 218.54
    assert bill["days"][16] == {"day": "2025-01-31", "energy_kwh": 28.8, "eur": 7.25, "complete": True}


async def test_consumption_in_euros_and_refusals_naming_the_field(served: str) -> None:
    answer = await get(served, "/v1/me/consumption", range="24h", unit="eur")
    assert answer.status_code == 200, answer.text
    chart = answer.json()
    assert (chart["interval_s"], chart["source"]) == (90, "raw")
    # 24 hours to noon on 10 February: 28.8 kWh at 0.2016 = 5.81 EUR
    assert round(chart["total"], 2) == 5.81 and len(chart["points"]) <= 1000
    bad = await get(served, "/v1/me/consumption", range="1y")
    assert bad.status_code == 422 and bad.json()["field"] == "range"
    unknown = await get(served, "/v1/me/consumption", colour="red")
    assert unknown.status_code == 422 and unknown.json()["field"] == "colour"


async def test_summary_power_history_comparison_solar(served: str) -> None:
    summary = (await get(served, "/v1/me/summary")).json()
    # 10 February: 14.4 kWh to noon at 0.2016 (base); this month: 9 x 5.80608 + 2.90304 = 55.16
    assert (summary["today_kwh"], summary["today_eur"], summary["month_eur"]) == (14.4, 2.9, 55.16)
    assert (summary["register_name_now"], summary["price_eur_per_kwh_now"]) == ("base", 0.2016)
    power = (await get(served, "/v1/me/power")).json()
    assert (power["peak_va_12_months"], power["verdict"]) == (1200, "too_high")  # 6 kVA for 1.2 kW; 3 kVA would do
    assert power["yearly_eur_at_stake"] == round((15.47 - 11.73) * 12, 2)
    history = (await get(served, "/v1/me/alerts/history")).json()
    # The run's daily spending minimum (1,000 EUR): raised when 15 January, the first whole day, closed.
    (episode,) = history["items"]
    assert (episode["kind"], episode["raised_ms"], round(episode["value"], 2)) == (
        "spending_day_below", local_ms(2025, 1, 16), 7.25
    )
    assert history["next_before_ms"] is None
    missing = await get(served, "/v1/me/alerts/history", before_ms=-1)
    assert missing.status_code == 422 and missing.json()["field"] == "before_ms"
    comparison = (await get(served, "/v1/me/comparison")).json()
    assert comparison["available"] is False and "fewer than 10" in comparison["reason"]
    solar = (await get(served, "/v1/me/solar")).json()
    assert (solar["exported_kwh_30_days"], solar["market_earned_eur"]) == (0.0, 0.0)


async def test_members_acknowledge_and_snooze_an_episode(served: str, told: Told) -> None:
    async with httpx.AsyncClient(base_url=served, timeout=30) as client:
        (episode,) = (await client.get("/v1/me/alerts/history", headers=OWNER)).json()["items"]
        acked = await client.post(f"/v1/me/alerts/history/{episode['id']}/acknowledge", headers=bearer("member"))
        assert acked.status_code == 200, acked.text
        member = CREDENTIALS_ACCOUNTS["member"]
        assert (acked.json()["acknowledged_by"], acked.json()["acknowledged_ms"]) == (member, NOW)
        snoozed = await client.post(f"/v1/me/alerts/history/{episode['id']}/snooze", json={"minutes": 90}, headers=OWNER)
        assert snoozed.json()["snoozed_until_ms"] == NOW + 90 * 60_000
        too_long = await client.post(f"/v1/me/alerts/history/{episode['id']}/snooze", json={"minutes": 99_999},
                                     headers=OWNER)
        assert too_long.status_code == 422 and too_long.json()["field"] == "minutes"
        (listed,) = (await client.get("/v1/me/alerts/history", headers=OWNER)).json()["items"]
        assert (listed["acknowledged_by"], listed["snoozed_until_ms"]) == (member, NOW + 90 * 60_000)
        # another household does not find it
        other = await client.post(f"/v1/me/alerts/history/{episode['id']}/acknowledge", headers=bearer("member_of_other"))
        assert other.status_code == 409
    # What the notifier's snooze stage reads: the episode's kind, so its next episodes stay quiet.
    snoozes = [a for a in await read_all(told.settings, told.settings.topic(topics.HOUSEHOLDS_ALERT_ACTIONS.name),
                                         events.decoder(topics.HOUSEHOLDS_ALERT_ACTIONS.record).decode)
               if isinstance(a, events.AlertSnoozed) and a.alert_id == episode["id"]]
    assert [(s.kind, s.until_ms, s.v) for s in snoozes] == [(episode["kind"], NOW + 90 * 60_000, 2)]


async def test_acknowledging_an_unknown_or_malformed_episode(served: str) -> None:
    async with httpx.AsyncClient(base_url=served, timeout=30, headers=OWNER) as client:
        unknown = await client.post(f"/v1/me/alerts/history/{'0' * 24}/acknowledge")
        assert unknown.status_code == 404 and unknown.json()["field"] == "alert_id"
        malformed = await client.post("/v1/me/alerts/history/nope/snooze", json={"minutes": 30})
        assert malformed.status_code == 422 and malformed.json()["field"] == "alert_id"


async def test_a_household_without_a_meter_is_told_to_pair_one(served: str) -> None:
    answer = await get(served, "/v1/me/bill", headers=bearer("member_of_other"))
    assert answer.status_code == 409 and answer.json()["field"] == "household"
    assert (await get(served, "/v1/me/bill", headers={})).status_code == 401
    assert (await get(served, "/v1/me/bill", headers=bearer("operator"))).status_code == 403


async def test_the_csv_export_streams_one_row_per_point(served: str) -> None:
    async with httpx.AsyncClient(base_url=served, timeout=30, headers=OWNER) as client:
        async with client.stream("GET", "/v1/me/export.csv", params={"from": "2025-02-01", "to": "2025-02-01",
                                                                      "resolution": "raw"}) as answer:
            assert answer.status_code == 200
            assert answer.headers["content-type"].startswith("text/csv")
            lines = [line async for line in answer.aiter_lines()]
    assert lines[0].startswith("time_utc,power_va,") and len(lines) == 1 + 144  # every 10 minutes of the day
    bad = await get(served, "/v1/me/export.csv", **{"from": "2025-02-02", "to": "2025-02-01"})
    assert bad.status_code == 422 and bad.json()["field"] == "to"


async def read_events(base: str, count: int, headers: dict[str, str]) -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        async with client.stream("GET", "/v1/me/live", headers=headers) as answer:
            assert answer.status_code == 200
            event_id = ""
            async for line in answer.aiter_lines():
                if line.startswith("id:"):
                    event_id = line[3:].strip()
                elif line.startswith("data:"):
                    found.append((event_id, json.loads(line[5:])))
                    if len(found) == count:
                        return found
    return found


def live_reading(t_ms: int, va: int) -> MeterReading:
    return MeterReading(
        meter=BILLING.meter, zone=BILLING.zone, time_ms=t_ms, seq=1, drawn_va=va, withdrawn_wh=2_000_000,
        withdrawn_wh_by_register=(2_000_000,), subscribed_kva=6, cutoff_kva=6,
    )


async def test_the_live_stream_sends_each_new_reading_and_the_latest_at_once_on_reconnect(served: str, told: Told) -> None:
    shard = shard_of(BILLING.meter, told.settings.kafka.reading_shards)
    # The viewer has seen the scripted run's last reading (noon, 10 February): only newer ones come.
    viewer = asyncio.create_task(read_events(served, 2, {**OWNER, "Last-Event-ID": str(NOW)}))
    await asyncio.sleep(1.0)
    for i, va in enumerate((1800, 3000)):
        batch = ReadingBatch(shard=shard, readings=[live_reading(NOW + 1000 * (i + 1), va)])
        await send(told.settings, topics.METER_READINGS.name, [(str(shard).encode(), events.encode(batch))])
        await asyncio.sleep(0.5)
    (first_id, first), (second_id, second) = await asyncio.wait_for(viewer, 20)
    # 1,800 VA at 0.2016 EUR/kWh = 0.3629 EUR/h; a 6 kVA cut-off: 70 % headroom
    assert (first["power_va"], first["eur_per_hour"], first["fuse_headroom_pct"]) == (1800, 0.3629, 70.0)
    assert (first_id, second_id) == (str(NOW + 1000), str(NOW + 2000)) and second["power_va"] == 3000
    # A viewer that saw the first reading reconnects: it gets the latest at once.
    (again_id, again), = await asyncio.wait_for(read_events(served, 1, {**OWNER, "Last-Event-ID": first_id}), 5)
    assert (again_id, again["power_va"]) == (second_id, 3000)
