"""Households trade with their own accounts: a market role granted through the accounts API makes the
household a participant, with no operator step; a revoked role takes it out; the market's accounts feed
restarted mid-way appends nothing twice; the read models rebuilt from the log equal the live ones.

Real broker and SMTP server; the accounts and market surfaces composed as ``quartier api serve`` does.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from accounts.log import AccountsLog
from api.compose import compose, discover
from quartier import events as ev
from quartier import kafka, topics
from quartier.settings import Settings

from marketplace.accountsfeed import AccountsFeed
from marketplace.api.app import market_surface
from marketplace.readmodel import ReadModel
from marketplace.rebuild import rebuild
from marketplace.service import MarketService, wire
from tests.accounts.principals import ZONE, FreshCredentials, MatrixAccounts, make_accounts

SLOT = 900_000
# Two hours ahead: well before the zone's gate (600 s), whatever the clock says when the test runs.
S1 = (int(time.time() * 1000) // SLOT + 8) * SLOT
S2 = S1 + SLOT


async def market_events(settings: Settings) -> list[Any]:
    decoder = ev.decoder(ev.MarketEvent)
    return await kafka.read_all(settings, settings.topic(topics.MARKET_EVENTS.name), decoder.decode)


def membership_counts(events: list[Any]) -> Counter[tuple[str, str]]:
    """(event type, participant) -> how many times the log holds it."""
    kinds = (ev.ParticipantRegistered, ev.ParticipantChanged, ev.ParticipantLeft)
    return Counter((type(e).__name__, e.participant) for e in events if isinstance(e, kinds))


class Composed:
    def __init__(self, client: httpx.AsyncClient, service: MarketService, made: MatrixAccounts,
                 credentials: FreshCredentials, settings: Settings) -> None:
        self.client, self.service, self.made, self.credentials, self.settings = client, service, made, credentials, settings

    def as_(self, principal: str) -> dict[str, str]:
        return self.credentials[principal]

    async def registered(self, principal: str, roles: list[str] | None) -> dict[str, Any] | None:
        """Waits (bounded) until the market holds the principal's household with ``roles`` (None: not an
        active participant), and returns its participant view as the operator sees it."""
        household = self.made.households[{"owner": "A", "owner_of_other": "B", "market_participant": "C"}[principal]]
        async with asyncio.timeout(30):
            while True:
                answer = await self.client.get(f"/v1/participants/{household}", headers=self.as_("operator"))
                view = answer.json() if answer.status_code == 200 else None
                if roles is None and (view is None or view["status"] == "left"):
                    return view
                if view is not None and view["status"] == "active" and view["roles"] == roles:
                    return view
                await asyncio.sleep(0.1)


@pytest.fixture
async def composed(broker, smtp, make_settings) -> AsyncIterator[Composed]:
    settings = make_settings(broker, smtp, {"market": {"settle_on_chain": False}},
                             api={"requests_per_minute": 1_000_000, "anonymous_requests_per_minute": 1_000_000})
    made = await make_accounts(settings)  # households A, B, C paired in ZONE; C already a producer
    credentials = FreshCredentials(settings, made)
    service = wire(settings, close_interval_s=None, charts=False)
    app = compose(settings, CollectorRegistry(),
                  [*discover(["accounts"]), ("market", lambda _context: market_surface(service, manage=True))])
    try:
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api.test") as client:
                yield Composed(client, service, made, credentials, settings)
    finally:
        credentials.close()


async def test_households_trade_with_their_own_tokens_and_a_revoked_role_ends_it(composed: Composed) -> None:
    c, client = composed, composed.client
    a, b = c.made.households["A"], c.made.households["B"]
    # A zone the market does not trade in yet: no household joins, whatever its roles.
    answer = await client.put("/v1/me/household/market-roles", headers=c.as_("owner"),
                              json={"producer": True, "producer_capacity_w": 4000})
    assert answer.status_code == 200, answer.text
    assert (answer.json()["market_roles"], answer.json()["producer_capacity_w"]) == (["producer"], 4000)
    refused = await client.put("/v1/me/household/market-roles", headers=c.as_("owner_of_other"), json={"producer": True})
    assert (refused.status_code, refused.json()["field"]) == (422, "producer_capacity_w")
    answer = await client.put("/v1/me/household/market-roles", headers=c.as_("owner_of_other"), json={"consumer": True})
    assert answer.status_code == 200, answer.text
    assert (await client.get("/v1/market/me", headers=c.as_("owner"))).json()["registered"] is None

    # The operator opens the zone's market: the households with a role join, with no other step.
    assert (await client.put(f"/v1/zones/{ZONE}", headers=c.as_("operator"), json={"mechanism": "bilateral"})).status_code == 200
    joined = await c.registered("owner", ["producer"])
    assert joined is not None and joined["registered_ms"] == joined["updated_ms"]
    assert {k: v for k, v in joined.items() if not k.endswith("_ms")} == {
        "participant": a, "zone": ZONE, "meter": c.made.meters["A"], "roles": ["producer"], "capacity_w": 4000,
        "status": "active"}
    await c.registered("owner_of_other", ["consumer"])
    await c.registered("market_participant", ["producer"])  # C, a producer since make_accounts (capacity 10 kW)

    # A lists, B buys, each with its own access token.
    listed = await client.post("/v1/offers", headers=c.as_("owner"),
                               json={"slot_start_ms": S1, "energy_wh_per_slot": 800, "price_cents_per_kwh": 14})
    assert listed.status_code == 201, listed.text
    [offer] = listed.json()["items"]
    assert (offer["producer"], offer["energy_wh"]) == (a, 800)
    too_much = await client.post("/v1/offers", headers=c.as_("owner"),
                                 json={"slot_start_ms": S1, "energy_wh_per_slot": 300, "price_cents_per_kwh": 14})
    assert too_much.json()["reason"] == (f"an installation of 4000 W produces at most 1000 Wh in a slot; "
                                         f"800 Wh are already offered for slot {S1}")
    seen = (await client.get("/v1/offers", headers=c.as_("owner_of_other"))).json()["items"]
    assert [(o["offer_id"], o["producer"]) for o in seen if o["offer_id"] == offer["offer_id"]] == [(offer["offer_id"], None)]
    bought = await client.post("/v1/orders", headers=c.as_("owner_of_other"), json={"offer_id": offer["offer_id"], "energy_wh": 300})
    assert bought.status_code == 201, bought.text
    assert (bought.json()["consumer"], bought.json()["status"], bought.json()["filled_wh"]) == (b, "filled", 300)

    # The next slot trades by auction: B bids, and its bid is open until the gate.
    assert (await client.put(f"/v1/zones/{ZONE}", headers=c.as_("operator"), json={"mechanism": "pay_as_bid"})).status_code == 200
    assert (await client.post("/v1/offers", headers=c.as_("owner"), json={
        "slot_start_ms": S2, "energy_wh_per_slot": 500, "price_cents_per_kwh": 10})).status_code == 201
    bid = await client.post("/v1/bids", headers=c.as_("owner_of_other"),
                            json={"slot_start_ms": S2, "energy_wh": 200, "price_cents_per_kwh": 12})
    assert bid.status_code == 201, bid.text

    # The market's accounts feed stops (a crash) while B's owner revokes the role.
    await c.service.accounts_feed.stop()  # type: ignore[union-attr]
    answer = await client.put("/v1/me/household/market-roles", headers=c.as_("owner_of_other"), json={"consumer": False})
    assert answer.status_code == 200 and answer.json()["market_roles"] == []
    # The accounts already say no: the API layer refuses B at once.
    no_more = await client.post("/v1/bids", headers=c.as_("owner_of_other"),
                                json={"slot_start_ms": S2, "energy_wh": 100, "price_cents_per_kwh": 12})
    assert no_more.status_code == 403, no_more.text
    before_restart = membership_counts(await market_events(c.settings))

    # A new feed, from the two logs alone, takes B out: its open bid is cancelled, its purchase stays.
    c.service.accounts_feed = AccountsFeed(c.settings, c.service.state, c.service.commands)
    await c.service.accounts_feed.start()
    assert (await c.registered("owner_of_other", None))["status"] == "left"  # type: ignore[index]
    order = (await client.get(f"/v1/orders/{bid.json()['order_id']}", headers=c.as_("operator"))).json()
    purchase = (await client.get(f"/v1/orders/{bought.json()['order_id']}", headers=c.as_("operator"))).json()
    assert (order["status"], purchase["status"], purchase["filled_wh"]) == ("cancelled", "filled", 300)
    for path, body in (("/v1/orders", {"offer_id": offer["offer_id"]}),
                       ("/v1/bids", {"slot_start_ms": S2, "energy_wh": 100, "price_cents_per_kwh": 12})):
        answer = await client.post(path, headers=c.as_("owner_of_other"), json=body)
        assert answer.status_code == 403, answer.text
    await c.service.accounts_feed.idle()

    events = await market_events(c.settings)
    counts = membership_counts(events)
    assert before_restart == {("ParticipantRegistered", a): 1, ("ParticipantRegistered", b): 1,
                              ("ParticipantRegistered", c.made.households["C"]): 1}
    assert counts == {**before_restart, ("ParticipantLeft", b): 1}
    [left] = [e for e in events if isinstance(e, ev.ParticipantLeft)]
    assert (left.zone, left.reason) == (ZONE, "roles_revoked")
    assert [e.order_id for e in events if isinstance(e, ev.OrderCancelled)] == [bid.json()["order_id"]]

    # Restarted again with nothing new on either log: nothing is appended.
    await c.service.accounts_feed.stop()
    c.service.accounts_feed = AccountsFeed(c.settings, c.service.state, c.service.commands)
    await c.service.accounts_feed.start()
    await c.service.accounts_feed.idle()
    assert len(await market_events(c.settings)) == len(events)

    # A's owner restates the capacity: the participant changes in place, once.
    assert (await client.put("/v1/me/household/market-roles", headers=c.as_("owner"),
                             json={"producer": True, "producer_capacity_w": 6000})).status_code == 200
    async with asyncio.timeout(30):
        while (view := (await client.get("/v1/market/me", headers=c.as_("owner"))).json()["registered"])["capacity_w"] != 6000:
            await asyncio.sleep(0.1)
    assert view["roles"] == ["producer"]
    await c.service.accounts_feed.idle()
    assert membership_counts(await market_events(c.settings))[("ParticipantChanged", a)] == 1


async def test_the_read_models_rebuilt_from_the_log_equal_the_live_ones(composed: Composed, tmp_path) -> None:
    c, client = composed, composed.client
    assert (await client.put(f"/v1/zones/{ZONE}", headers=c.as_("operator"), json={"mechanism": "bilateral"})).status_code == 200
    for principal, body in (("owner", {"producer": True, "consumer": True, "producer_capacity_w": 3000}),
                            ("owner_of_other", {"consumer": True})):
        assert (await client.put("/v1/me/household/market-roles", headers=c.as_(principal), json=body)).status_code == 200
    await c.registered("owner", ["consumer", "producer"])
    await c.registered("owner_of_other", ["consumer"])
    [offer] = (await client.post("/v1/offers", headers=c.as_("owner"), json={
        "slot_start_ms": S1, "energy_wh_per_slot": 700, "price_cents_per_kwh": 15})).json()["items"]
    assert (await client.post("/v1/orders", headers=c.as_("owner_of_other"),
                              json={"offer_id": offer["offer_id"], "energy_wh": 200})).status_code == 201
    # A's meter is unpaired: it leaves, its offer's unsold part withdrawn.
    assert (await client.delete(f"/v1/me/meter/{c.made.meters['A']}", headers=c.as_("owner"))).status_code == 200
    assert (await c.registered("owner", None))["status"] == "left"  # type: ignore[index]
    withdrawn = (await client.get(f"/v1/offers/{offer['offer_id']}", headers=c.as_("operator"))).json()
    assert (withdrawn["status"], withdrawn["sold_wh"]) == ("withdrawn", 200)
    await c.service.accounts_feed.idle()  # type: ignore[union-attr]
    await c.service.commands.drain()
    live = c.service.read_model.dump()
    assert [r[0] for r in live["market_participant"]] == sorted(c.made.households[h] for h in "ABC")

    rebuilt = c.settings.model_copy(update={"state_dir": tmp_path / "rebuilt"})
    await rebuild(rebuilt, write_charts=False)
    read_model = ReadModel(rebuilt.sqlite_url("market"))
    try:
        assert read_model.dump() == live
    finally:
        read_model.close()


async def test_an_erased_household_leaves_the_market_and_its_meter_stays_blank_in_a_rebuild(composed: Composed,
                                                                                            tmp_path) -> None:
    c, client = composed, composed.client
    a = c.made.households["A"]
    assert (await client.put(f"/v1/zones/{ZONE}", headers=c.as_("operator"), json={"mechanism": "bilateral"})).status_code == 200
    assert (await client.put("/v1/me/household/market-roles", headers=c.as_("owner"),
                             json={"producer": True, "producer_capacity_w": 3000})).status_code == 200
    await c.registered("owner", ["producer"])
    [offer] = (await client.post("/v1/offers", headers=c.as_("owner"), json={
        "slot_start_ms": S1, "energy_wh_per_slot": 500, "price_cents_per_kwh": 13})).json()["items"]
    # The erasure saga's last step, as privacy/erasure.py appends it.
    accounts_log = AccountsLog(c.settings)
    await accounts_log.start()
    try:
        await accounts_log.append([(a, ev.HouseholdErased(household=a, accounts=(c.made.accounts["owner"], c.made.accounts["member"]),
                                                           at_ms=int(time.time() * 1000)))])
    finally:
        await accounts_log.stop()
    left = await c.registered("owner", None)
    assert left is not None
    assert (left["participant"], left["zone"], left["meter"], left["roles"], left["status"]) == (a, ZONE, "", [], "left")
    assert (await client.get(f"/v1/offers/{offer['offer_id']}", headers=c.as_("operator"))).json()["status"] == "withdrawn"
    events = await market_events(c.settings)
    assert [(e.participant, e.reason) for e in events if isinstance(e, ev.ParticipantLeft)] == [(a, "household_erased")]

    rebuilt = c.settings.model_copy(update={"state_dir": tmp_path / "rebuilt"})
    await rebuild(rebuilt, write_charts=False)
    read_model = ReadModel(rebuilt.sqlite_url("market"))
    try:
        [row] = [r for r in read_model.dump()["market_participant"] if r[0] == a]
    finally:
        read_model.close()
    assert row[2] == ""  # the meter column
