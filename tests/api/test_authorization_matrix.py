"""The authorization matrix of the fully composed app (every surface of entry-point group
``quartier.surfaces``), and the harness itself on the notes surface.

Surface engineers: add a Row per operation to ``MATRIX`` and, when your surface needs a running
dependency or principals of its own, extend ``composed`` and ``CREDENTIALS``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from api.compose import compose, discover
from quartier.settings import Settings
from tests.accounts.principals import ZONE
from tests.api.matrix import PRINCIPALS, Probe, Row, mismatches, statuses
from tests.api.surface import TestAuthenticator, bearer, surface

# Each principal's credential. Until accounts lands, the test authenticator's tokens stand for the
# principals (chained after the surfaces' own authenticators).
CREDENTIALS = {p: ({} if p == "anonymous" else bearer(p)) for p in PRINCIPALS}

# --- market (marketplace.surface) ---
# The market participant is household C (tests/accounts/principals.py): its owner granted it the
# producer role through accounts, and once the operator opened its zone's market (``_set_up_market``)
# the market's accounts feed made it a participant; no operator step registers it, and it trades with
# its own access token. The other households hold no market role, support has none in the market. Its
# id is made by the run, so the rows that name it are made with it. With its role revoked, it gets 403
# on every market operation but health (``test_a_household_whose_market_role_was_revoked_...``).
FUTURE_SLOT = (int(time.time() * 1000) // 900_000 + 96) * 900_000
ONLY_OPERATOR = statuses(403, anonymous=401, operator=200)
PARTICIPANT_OR_OPERATOR = statuses(403, anonymous=401, market_participant=200, operator=200)
NOT_FOUND_FOR_PARTICIPANT = statuses(403, anonymous=401, market_participant=404, operator=404)


def market_rows(participant: str) -> dict[str, Row]:
    return {
        "health": Row(statuses(200)),
        "configure_zone": Row(ONLY_OPERATOR, Probe(path={"zone": "matrix-2"}, json={"mechanism": "pay_as_bid"})),
        "register_participant": Row(statuses(403, anonymous=401, operator=201), Probe(json={
            "participant": "matrix-new", "zone": ZONE, "meter": "000000000777", "roles": ["consumer"]})),
        "list_participants": Row(ONLY_OPERATOR),
        "get_participant": Row(PARTICIPANT_OR_OPERATOR, Probe(path={"participant": participant})),
        "issue_token": Row(statuses(403, anonymous=401, operator=201), Probe(path={"participant": participant},
                                                                             json={"role": "producer"})),
        "market_me": Row(PARTICIPANT_OR_OPERATOR),
        "list_zones": Row(PARTICIPANT_OR_OPERATOR),
        "get_zone": Row(PARTICIPANT_OR_OPERATOR, Probe(path={"zone": ZONE})),
        "list_offers": Row(statuses(403, anonymous=401, market_participant=201), Probe(json={
            "slot_start_ms": FUTURE_SLOT, "energy_wh_per_slot": 10, "price_cents_per_kwh": 10})),
        "browse_offers": Row(PARTICIPANT_OR_OPERATOR),
        "get_offer": Row(NOT_FOUND_FOR_PARTICIPANT, Probe(path={"offer_id": "of-none"})),
        "amend_offer": Row(statuses(403, anonymous=401, market_participant=404),
                           Probe(path={"offer_id": "of-none"}, json={"price_cents_per_kwh": 1})),
        "withdraw_offer": Row(statuses(403, anonymous=401, market_participant=404), Probe(path={"offer_id": "of-none"})),
        "buy": Row(statuses(403, anonymous=401), Probe(json={"offer_id": "of-none"})),
        "bid": Row(statuses(403, anonymous=401), Probe(json={"slot_start_ms": FUTURE_SLOT, "energy_wh": 1,
                                                             "price_cents_per_kwh": 1})),
        "list_orders": Row(ONLY_OPERATOR),
        "get_order": Row(statuses(403, anonymous=401, operator=404), Probe(path={"order_id": "or-none"})),
        "cancel_order": Row(statuses(403, anonymous=401), Probe(path={"order_id": "or-none"})),
        "list_trades": Row(PARTICIPANT_OR_OPERATOR),
        "list_slots": Row(PARTICIPANT_OR_OPERATOR),
        # The slot list_offers (probed before) opened.
        "get_slot": Row(PARTICIPANT_OR_OPERATOR, Probe(path={"zone": ZONE, "slot_start_ms": str(FUTURE_SLOT)})),
        # The operator names whose balance: without ?participant= it is a 422 naming the field.
        "balance": Row(statuses(403, anonymous=401, market_participant=200, operator=422)),
    }

# operationId -> Row, for every operation of every composed surface (the market's rows are added by
# the test, with the run's participant id).
MATRIX: dict[str, Row] = {}

# --- accounts ---
# Real accounts stand for the principals (tests/accounts/principals.py): households A (owner, member),
# B (member_of_other) and C (market_participant: its owner, a producer), support and operator without
# a household. Probes of operations that would change who a principal is (leave, unpair, pair, market
# roles, password) are refused by the handler, so later rows still see the same principals.
_AUTHENTICATED = dict(anonymous=401)
_HOUSEHOLDS = dict(anonymous=401, support=403, operator=403)
_OWNERS = dict(anonymous=401, member_of_other=403, member=403, support=403, operator=403)
MATRIX.update({
    "sign_up": Row(statuses(422), Probe(json={})),
    "confirm_email": Row(statuses(400), Probe(query={"token": "not-a-token-of-ours"})),
    "resend_confirmation": Row(statuses(422), Probe(json={"email": "x"})),
    "sign_in": Row(statuses(422), Probe(json={})),
    "sign_out": Row(statuses(200, **_AUTHENTICATED)),
    "issue_tokens": Row(statuses(422), Probe(json={})),
    "refresh_tokens": Row(statuses(401), Probe(json={"refresh_token": "rt_not-a-token-of-ours"})),
    "sign_out_everywhere": Row(statuses(200, **_AUTHENTICATED)),
    "change_password": Row(statuses(422, **_AUTHENTICATED),
                           Probe(json={"current_password": "not the password", "new_password": "a new long password"})),
    "change_email": Row(statuses(422, **_AUTHENTICATED), Probe(json={"email": "not-an-address"})),
    "me": Row(statuses(200, **_AUTHENTICATED)),
    "create_household": Row(statuses(422, **_AUTHENTICATED), Probe(json={"name": ""})),
    "my_household": Row(statuses(200, **_HOUSEHOLDS)),
    "invite": Row(statuses(201, **_OWNERS)),
    "join_household": Row(statuses(409, anonymous=401, support=422, operator=422), Probe(json={"code": "not-an-invitation"})),
    "leave_household": Row(statuses(404, **_HOUSEHOLDS), Probe(json={"household": "hh_0000000000000000"})),
    "remove_member": Row(statuses(404, **_OWNERS), Probe(path={"account": "acct_0000000000000000"})),
    "pair_meter": Row(statuses(422, **_OWNERS), Probe(json={"meter": "100000000009", "zone": "zone-0001", "code": "AAAA-AAAA"})),
    "unpair_meter": Row(statuses(404, **_OWNERS), Probe(path={"meter": "100000000009"})),
    "set_tariff": Row(statuses(200, **_OWNERS), Probe(json={"tariff": "base", "subscribed_kva": 6})),
    "set_market_roles": Row(statuses(422, **_OWNERS), Probe(json={"producer": "maybe"})),
    "grant_role": Row(statuses(403, anonymous=401, operator=404), Probe(json={"email": "nobody@nowhere.test", "role": "support"})),
    "get_alerts": Row(statuses(200, **_HOUSEHOLDS)),
    "put_alerts": Row(statuses(200, **_HOUSEHOLDS), Probe(json={"power_max_w": 6000})),
    "get_notifications": Row(statuses(200, **_HOUSEHOLDS)),
    "put_notifications": Row(statuses(200, **_HOUSEHOLDS), Probe(json={"language": "en"})),
    "add_device": Row(statuses(201, **_HOUSEHOLDS), Probe(json={"token": "matrix-phone"})),
    "remove_device": Row(statuses(404, **_HOUSEHOLDS), Probe(path={"device": "dev_0000000000000000"})),
})

# --- households (the household app) ---
# Every operation is the caller's own household's (/v1/me/...): its owner and members, including the
# market participant's household (C) and household B's member; support and operators use the console.
# The probed episode id exists in no household: 404 for every household, as another household's would.
_MINE = dict(anonymous=401, support=403, operator=403)
_NO_EPISODE = "0" * 24
MATRIX.update({
    "live": Row(statuses(200, **_MINE), Probe(query={"for_s": 0.2})),
    "get_consumption": Row(statuses(200, **_MINE), Probe(query={"range": "24h", "unit": "eur"})),
    "get_bill": Row(statuses(200, **_MINE)),
    "get_summary": Row(statuses(200, **_MINE)),
    "get_power": Row(statuses(200, **_MINE)),
    "get_alert_history": Row(statuses(200, **_MINE)),
    "acknowledge_alert": Row(statuses(404, **_MINE), Probe(path={"alert_id": _NO_EPISODE})),
    "snooze_alert": Row(statuses(404, **_MINE), Probe(path={"alert_id": _NO_EPISODE}, json={"minutes": 30})),
    "get_comparison": Row(statuses(200, **_MINE)),
    "get_solar": Row(statuses(200, **_MINE)),
    "export_csv": Row(statuses(200, **_MINE), Probe(query={"from": "2026-01-01", "to": "2026-01-02"})),
})

# --- privacy --- (probes that would change the household, consent and erasure, are left invalid: 422)
_STAFF = dict(anonymous=401, member_of_other=403, member=403, owner=403, market_participant=403)
MATRIX.update({
    "privacy_access_log": Row(statuses(200, **_HOUSEHOLDS)),
    "privacy_export": Row(statuses(200, **_HOUSEHOLDS)),
    "privacy_readings_csv": Row(statuses(422, **_HOUSEHOLDS), Probe(query={"days": 0})),
    "privacy_set_consent": Row(statuses(422, **_OWNERS), Probe(json={"resolution": "every second"})),
    "privacy_request_erasure": Row(statuses(422, **_OWNERS), Probe(json={"confirm": "yes"})),
    "privacy_household_access_log": Row(statuses(200, **_STAFF), Probe(path={"household": "hh_0000000000000000"})),
    "privacy_verify_access_log": Row(statuses(200, **_STAFF)),
})


# --- operator console (console/surface.py): operator and support only; households see nothing ---
_STAFF_200 = statuses(403, anonymous=401, support=200, operator=200)
_OPERATOR_ONLY = dict(anonymous=401, operator=404)
_UNKNOWN_METER = Probe(path={"meter": "012345678901"})
_UNKNOWN_CAMPAIGN = Probe(path={"campaign": "nope"}, json={"reason": "probe"})
MATRIX.update({
    "fleet_overview": Row(_STAFF_200),
    "fleet_modules": Row(_STAFF_200, Probe(query={"state": "connected", "sort": "rssi_dbm", "order": "desc"})),
    "fleet_modules_export": Row(_STAFF_200, Probe(query={"format": "csv"})),
    "fleet_module": Row(statuses(403, anonymous=401, support=404, operator=404), _UNKNOWN_METER),
    # Support without a reason is refused (422 naming "reason"); the operator finds no household (404).
    "fleet_module_household": Row(statuses(403, anonymous=401, support=422, operator=404), _UNKNOWN_METER),
    "fleet_firmware": Row(_STAFF_200),
    "fleet_firmware_release": Row(statuses(403, anonymous=401, operator=422),
                                  Probe(json={"version": "3.3.0", "hardware": []})),
    "fleet_campaigns": Row(_STAFF_200),
    "fleet_campaign": Row(statuses(403, anonymous=401, support=404, operator=404), Probe(path={"campaign": "nope"})),
    "fleet_campaign_create": Row(statuses(403, anonymous=401, operator=422),
                                 Probe(json={"campaign": "c1", "firmware": "9.9.9"})),
    "fleet_campaign_pause": Row(statuses(403, **_OPERATOR_ONLY), _UNKNOWN_CAMPAIGN),
    "fleet_campaign_resume": Row(statuses(403, **_OPERATOR_ONLY), _UNKNOWN_CAMPAIGN),
    "fleet_campaign_abort": Row(statuses(403, **_OPERATOR_ONLY), _UNKNOWN_CAMPAIGN),
    "fleet_campaign_rollback": Row(statuses(403, **_OPERATOR_ONLY), _UNKNOWN_CAMPAIGN),
    "fleet_audit": Row(statuses(403, anonymous=401, operator=200)),
})


async def _set_up_market(client: httpx.AsyncClient, credentials: Any, participant: str) -> None:
    """The operator opens the market of the households' zone; household C, a producer in its accounts,
    becomes a participant by itself (the market's accounts feed)."""
    assert (await client.put(f"/v1/zones/{ZONE}", json={"mechanism": "bilateral"},
                             headers=credentials["operator"])).status_code == 200
    async with asyncio.timeout(30):
        while (await client.get("/v1/market/me", headers=credentials["market_participant"])).json().get("registered") is None:
            await asyncio.sleep(0.1)
    me = (await client.get("/v1/market/me", headers=credentials["market_participant"])).json()
    assert (me["participant"], me["registered"]["roles"], me["registered"]["capacity_w"]) == (participant, ["producer"], 10_000)


@pytest.fixture
async def composed(broker, smtp, influx, make_settings) -> AsyncIterator[tuple[httpx.AsyncClient, dict, Any]]:
    # --- accounts --- the accounts surface runs on the real broker and SMTP server; its principals are real.
    from tests.accounts.principals import FreshCredentials, make_accounts

    settings = make_settings(broker, smtp, influx, {"market": {"settle_on_chain": False}})
    # --- households --- the household app reads the test's own InfluxDB database.
    from quartier.stack.influx import ensure_database

    ensure_database(settings)
    made = await make_accounts(settings)
    credentials = FreshCredentials(settings, made)
    app = compose(settings, CollectorRegistry(), discover(), extra_authenticators=[TestAuthenticator()])
    try:
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api.test") as client:
                participant = made.households["C"]
                await _set_up_market(client, credentials, participant)
                yield client, app.state.openapi(), {**market_rows(participant), **MATRIX}, credentials
    finally:
        credentials.close()


async def test_every_composed_operation_answers_each_principal_as_the_matrix_says(composed) -> None:
    client, document, matrix, credentials = composed
    assert await mismatches(client, document, matrix, credentials) == []


async def test_a_household_whose_market_role_was_revoked_gets_403_on_every_market_operation(composed) -> None:
    client, document, matrix, credentials = composed
    answer = await client.put("/v1/me/household/market-roles", json={"producer": False},
                              headers=credentials["market_participant"])
    assert answer.status_code == 200 and answer.json()["market_roles"] == []
    # The market learns of it from accounts.events: once it has, the participant has left, and the
    # operator can no longer issue it a token.
    issue = matrix["issue_token"].probe
    [(method, template)] = [(m, path) for path, methods in document["paths"].items()
                            for m, op in methods.items() if op["operationId"] == "issue_token"]
    issue_path = template.replace("{participant}", issue.path["participant"])
    async with asyncio.timeout(30):
        while (await client.request(method, issue_path, json=issue.json,
                                    headers=credentials["operator"])).status_code != 409:
            await asyncio.sleep(0.2)
    market = set(market_rows("x"))
    only_market = {"paths": {path: {m: op for m, op in methods.items() if op["operationId"] in market}
                             for path, methods in document["paths"].items()}}
    revoked = {op: Row({**row.expect, "market_participant": 200 if op == "health" else 403}, row.probe)
               for op, row in matrix.items() if op in market}
    revoked["issue_token"] = Row({**revoked["issue_token"].expect, "operator": 409}, revoked["issue_token"].probe)
    # The participant could not list an offer this time: the probed slot was never opened.
    revoked["get_slot"] = Row({**revoked["get_slot"].expect, "operator": 404}, revoked["get_slot"].probe)
    assert await mismatches(client, only_market, revoked, credentials) == []


NOTES_MATRIX = {
    "health": Row(statuses(200)),
    "create_note": Row(statuses(403, anonymous=401, member_of_other=201, member=201, owner=201),
                       Probe(json={"text": "hello"})),
    "list_notes": Row(statuses(403, anonymous=401, member_of_other=200, member=200, owner=200)),
    "get_note": Row(statuses(404, anonymous=401, market_participant=403, member=200, owner=200, support=200,
                             operator=200), Probe(path={"note_id": "n1"})),
    "delete_note": Row(statuses(403, anonymous=401, owner=200), Probe(path={"note_id": "n1"})),
    "upload": Row(statuses(201, anonymous=401), Probe(json={"data": "abc"})),
    "fleet": Row(statuses(403, anonymous=401, support=200, operator=200)),
}


@pytest.fixture
async def notes(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, dict]]:
    app = compose(Settings(state_dir=tmp_path), CollectorRegistry(), [("notes", surface)])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api.test") as client:
        # n1 belongs to hh_1 (member, owner); get_note is probed before delete_note (the document's order).
        assert (await client.post("/v1/notes", json={"text": "n1"}, headers=bearer("owner"))).status_code == 201
        yield client, app.state.openapi()


async def test_the_harness_passes_a_matrix_the_app_agrees_with(notes) -> None:
    client, document = notes
    assert await mismatches(client, document, NOTES_MATRIX, CREDENTIALS) == []


async def test_the_harness_fails_on_a_missing_operation_and_on_a_wrong_status(notes) -> None:
    client, document = notes
    table = {k: v for k, v in NOTES_MATRIX.items() if k != "fleet"}
    table["health"] = Row(statuses(200, anonymous=401))
    assert await mismatches(client, document, table, CREDENTIALS) == [
        "fleet: in the document but missing from the matrix",
        'health as anonymous: 200, expected 401 ({"status":"ok"})',
    ]
