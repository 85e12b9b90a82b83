"""The console writes the access log: the fully composed app (every surface) with real accounts, the
console following the real broker. An operator's CSV export of a paired module and a support agent's
read of a household behind a module are one entry each, with who, what and why; the household sees
the export in its own access log; the chain verifies, and still does after the household's erasure."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry

from api.compose import compose, discover
from quartier import events as ev
from quartier import topics
from quartier.access_log import AccessLog
from quartier.kafka import ensure_topics, producer_config, read_all

UNPAIRED = "100000000009"


@pytest.fixture
async def app(broker, smtp, influx, make_settings) -> AsyncIterator[tuple[httpx.AsyncClient, Any, Any, Any]]:
    from tests.accounts.principals import FreshCredentials, make_accounts, until_followed

    settings = make_settings(broker, smtp, influx, console={"refresh_s": 0.2, "tick_s": 0.5})
    made = await make_accounts(settings)
    credentials = FreshCredentials(settings, made)
    composed = compose(settings, CollectorRegistry(), discover())
    try:
        async with composed.router.lifespan_context(composed):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=composed), base_url="http://api.test",
                                         timeout=30) as client:
                await until_followed(client, credentials, made)
                yield client, credentials, made, settings
    finally:
        credentials.close()


async def _report(settings: Any, modules: dict[str, str]) -> None:
    """Each module reports its firmware on meter.telemetry, as the simulator's do."""
    await ensure_topics(settings, [topics.METER_TELEMETRY])
    producer = AIOKafkaProducer(**producer_config(settings))
    await producer.start()
    try:
        for meter, firmware in modules.items():
            report = ev.DeviceTelemetry(meter=meter, time_ms=1_764_000_000_000, rssi_dbm=-61, firmware=firmware,
                                        uptime_s=600, hardware="5")
            await producer.send_and_wait(settings.topic(topics.METER_TELEMETRY.name), ev.encode(report),
                                         key=meter.encode())
    finally:
        await producer.stop()


def _seen(access: AccessLog) -> list[tuple[Any, ...]]:
    return [(e.seq, e.actor, e.actor_role, e.household, e.what, e.why, e.reference) for e in access.entries()]


async def test_an_export_and_a_support_read_are_one_entry_each_and_the_chain_survives_an_erasure(app) -> None:
    client, credentials, made, settings = app
    household_a, household_b = made.households["A"], made.households["B"]
    operator, support = made.accounts["operator"], made.accounts["support"]
    await _report(settings, {made.meters["A"]: "9.9.1", UNPAIRED: "9.9.1", made.meters["B"]: "9.9.2"})
    async with asyncio.timeout(60):
        while (await client.get("/v1/fleet/modules", params={"firmware": "9.9.1,9.9.2"},
                                headers=credentials["operator"])).json()["total"] != 3:
            await asyncio.sleep(0.2)
    access = AccessLog.open(settings)
    assert access.entries() == []

    # The operator exports 9.9.1's modules: household A's and one nobody paired. One entry: household A's.
    exported = await client.get("/v1/fleet/modules/export", params={"firmware": "9.9.1", "format": "csv"},
                                headers=credentials["operator"])
    assert exported.status_code == 200
    assert sorted(line["meter"] for line in csv.DictReader(io.StringIO(exported.text))) == [made.meters["A"], UNPAIRED]
    reference = exported.headers["quartier-access-reference"]
    assert reference.startswith("export:csv:") and len(reference) == len("export:csv:") + 12
    assert _seen(access) == [(1, operator, "operator", household_a, "telemetry", "operations", reference)]

    # Support reads household B behind its module, with a reason and a ticket: one entry.
    refused = await client.get(f"/v1/fleet/modules/{made.meters['B']}/household", headers=credentials["support"])
    assert refused.status_code == 422 and refused.json()["field"] == "why"
    read = await client.get(f"/v1/fleet/modules/{made.meters['B']}/household",
                            params={"why": "support_ticket", "reference": "T-42"}, headers=credentials["support"])
    assert read.status_code == 200, read.text
    assert read.json()["household"] == household_b and read.json()["name"] == "Household B"
    assert _seen(access)[1:] == [(2, support, "support", household_b, "profile", "support_ticket", "T-42")]
    assert access.verify().ok and access.verify().entries == 2

    # The console's view of staff actions reads the access log; household A sees the export in its own.
    audit = (await client.get("/v1/fleet/audit", headers=credentials["operator"])).json()
    assert [(r["seq"], r["actor"], r["actor_role"], r["what"], r["why"], r["reference"], r["households"], r["household"])
            for r in audit["reads"]] == [
        (2, support, "support", "profile", "support_ticket", "T-42", 1, household_b),
        (1, operator, "operator", "telemetry", "operations", reference, 1, household_a),
    ]
    mine = (await client.get("/v1/me/privacy/access-log", headers=credentials["member"])).json()
    assert [(e["actor"], e["actor_role"], e["what"], e["why"]) for e in mine["entries"]] == [
        (operator, "operator", "telemetry", "operations")
    ]

    # Household A is forgotten: the log keeps its entries (ids and codes only) and still verifies.
    asked = await client.post("/v1/me/privacy/erasure", json={"confirm": "erase my household"},
                              headers=credentials["owner"])
    assert asked.status_code == 202
    decoder = msgspec.json.Decoder(ev.PrivacyEvent)
    async with asyncio.timeout(90):
        while not [r for r in await read_all(settings, settings.topic(topics.PRIVACY_ERASURES.name), decoder.decode)
                   if isinstance(r, ev.ErasureCompleted) and r.erasure == asked.json()["erasure"]]:
            await asyncio.sleep(0.3)
    after = _seen(access)
    assert after[:2] == [(1, operator, "operator", household_a, "telemetry", "operations", reference),
                         (2, support, "support", household_b, "profile", "support_ticket", "T-42")]
    # Then the saga's own read, once however often its steps ran, referencing the erasure.
    assert after[2:] == [(3, "erasure", "system", household_a, "profile", "erasure", asked.json()["erasure"])]
    verified = access.verify()
    assert verified.ok and verified.entries == len(after) and verified.head == access.entries()[-1].hash
    access.engine.dispose()
