"""The privacy surface over HTTP, composed with the accounts surface and real accounts: an operator's read is
in the household's access log, the owner's consent reaches meter.resolution, an erasure asked for runs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import pytest
from prometheus_client import CollectorRegistry

from api.compose import compose, discover
from quartier import events as ev
from quartier import topics
from quartier.kafka import read_all


@pytest.fixture
async def app(broker, smtp, influx, make_settings) -> AsyncIterator[tuple[httpx.AsyncClient, Any, Any, Any]]:
    from tests.accounts.principals import FreshCredentials, make_accounts, until_followed

    settings = make_settings(broker, smtp, influx)
    made = await make_accounts(settings)
    credentials = FreshCredentials(settings, made)
    composed = compose(settings, CollectorRegistry(), discover())
    try:
        async with composed.router.lifespan_context(composed):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=composed), base_url="http://api.test") as client:
                await until_followed(client, credentials, made)
                yield client, credentials, made, settings
    finally:
        credentials.close()


async def test_access_log_consent_and_erasure_over_http(app) -> None:
    client, credentials, made, settings = app
    household_a = made.households["A"]

    seen = await client.get(f"/v1/privacy/households/{household_a}/access-log", headers=credentials["operator"])
    assert seen.status_code == 200
    mine = (await client.get("/v1/me/privacy/access-log", headers=credentials["member"])).json()
    assert mine["household"] == household_a
    assert [(e["actor"], e["actor_role"], e["what"]) for e in mine["entries"]] == [
        (made.accounts["operator"], "operator", "access_log")
    ]

    consent = await client.put("/v1/me/privacy/consent", json={"resolution": "30min"}, headers=credentials["owner"])
    assert consent.status_code == 200 and consent.json() == {"meter": made.meters["A"], "resolution": "30min"}
    choices = await read_all(settings, settings.topic(topics.METER_RESOLUTION.name), ev.decoder(ev.ResolutionChosen).decode)
    assert [(c.meter, c.resolution) for c in choices] == [(made.meters["A"], "30min")]
    refused = await client.put("/v1/me/privacy/consent", json={"resolution": "2hz"}, headers=credentials["owner"])
    assert refused.status_code == 422 and "resolution" in refused.text

    exported = (await client.get("/v1/me/privacy/export", headers=credentials["owner"])).json()
    assert exported["profile"]["household"]["household"] == household_a
    assert exported["consent"]["resolution"] == "30min"

    asked = await client.post("/v1/me/privacy/erasure", json={"confirm": "erase my household"},
                              headers=credentials["market_participant"])
    assert asked.status_code == 202
    erasure = asked.json()["erasure"]
    decoder = msgspec.json.Decoder(ev.PrivacyEvent)
    async with asyncio.timeout(60):
        while not [r for r in await read_all(settings, settings.topic(topics.PRIVACY_ERASURES.name), decoder.decode)
                   if isinstance(r, ev.ErasureCompleted) and r.erasure == erasure]:
            await asyncio.sleep(0.3)
    # The account went with its household, in this process too: erasure_completed waits for every
    # follower of accounts.events (accounts/followers.py), so the first ask after it is refused.
    gone = await client.get("/v1/me", headers=credentials["market_participant"])
    assert gone.status_code == 401
    verified = await client.get("/v1/privacy/access-log/verification", headers=credentials["support"])
    assert verified.json()["ok"] is True and verified.json()["entries"] >= 3
