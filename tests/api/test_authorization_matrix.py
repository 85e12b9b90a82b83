"""The authorization matrix of the fully composed app (every surface of entry-point group
``quartier.surfaces``), and the harness itself on the notes surface.

Surface engineers: add a Row per operation to ``MATRIX`` and, when your surface needs a running
dependency or principals of its own, extend ``composed`` and ``CREDENTIALS``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from api.compose import compose, discover
from quartier.settings import Settings
from tests.api.matrix import PRINCIPALS, Probe, Row, mismatches, statuses
from tests.api.surface import PRINCIPALS as TEST_PRINCIPALS
from tests.api.surface import TestAuthenticator, bearer, surface
from tests.support import isolated_settings

# Each principal's credential. Until accounts lands, the test authenticator's tokens stand for the
# principals (chained after the surfaces' own authenticators).
CREDENTIALS = {p: ({} if p == "anonymous" else bearer(p)) for p in PRINCIPALS}

# --- market (marketplace.surface) ---
# The market participant is household hh_2, registered as a producer of zone "matrix" (``composed``);
# the other households hold no market role, support has none in the market.
MARKET_PARTICIPANT = TEST_PRINCIPALS["market_participant"].household
FUTURE_SLOT = (int(time.time() * 1000) // 900_000 + 96) * 900_000
ONLY_OPERATOR = statuses(403, anonymous=401, operator=200)
PARTICIPANT_OR_OPERATOR = statuses(403, anonymous=401, market_participant=200, operator=200)
NOT_FOUND_FOR_PARTICIPANT = statuses(403, anonymous=401, market_participant=404, operator=404)
MARKET: dict[str, Row] = {
    "health": Row(statuses(200)),
    "configure_zone": Row(ONLY_OPERATOR, Probe(path={"zone": "matrix-2"}, json={"mechanism": "pay_as_bid"})),
    "register_participant": Row(statuses(403, anonymous=401, operator=201), Probe(json={
        "participant": "matrix-new", "zone": "matrix", "meter": "000000000777", "roles": ["consumer"]})),
    "list_participants": Row(ONLY_OPERATOR),
    "get_participant": Row(PARTICIPANT_OR_OPERATOR, Probe(path={"participant": MARKET_PARTICIPANT})),
    "issue_token": Row(statuses(403, anonymous=401, operator=201), Probe(path={"participant": MARKET_PARTICIPANT},
                                                                         json={"role": "producer"})),
    "me": Row(PARTICIPANT_OR_OPERATOR),
    "list_zones": Row(PARTICIPANT_OR_OPERATOR),
    "get_zone": Row(PARTICIPANT_OR_OPERATOR, Probe(path={"zone": "matrix"})),
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
    "get_slot": Row(PARTICIPANT_OR_OPERATOR, Probe(path={"zone": "matrix", "slot_start_ms": str(FUTURE_SLOT)})),
    # The operator names whose balance: without ?participant= it is a 422 naming the field.
    "balance": Row(statuses(403, anonymous=401, market_participant=200, operator=422)),
}

# operationId -> Row, for every operation of every composed surface.
MATRIX: dict[str, Row] = {**MARKET}


async def _set_up_market(client: httpx.AsyncClient) -> None:
    operator = bearer("operator")
    assert (await client.put("/v1/zones/matrix", json={"mechanism": "bilateral"}, headers=operator)).status_code == 200
    registered = await client.post("/v1/participants", headers=operator, json={
        "participant": MARKET_PARTICIPANT, "zone": "matrix", "meter": "000000000666", "roles": ["producer"],
        "capacity_w": 10_000})
    assert registered.status_code == 201, registered.text


@pytest.fixture
async def composed(tmp_path: Path, broker: dict[str, Any]) -> AsyncIterator[tuple[httpx.AsyncClient, dict]]:
    settings = isolated_settings(tmp_path, broker, {"market": {"settle_on_chain": False}})
    app = compose(settings, CollectorRegistry(), discover(), extra_authenticators=[TestAuthenticator()])
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api.test") as client:
            await _set_up_market(client)
            yield client, app.state.openapi()


async def test_every_composed_operation_answers_each_principal_as_the_matrix_says(composed) -> None:
    client, document = composed
    assert await mismatches(client, document, MATRIX, CREDENTIALS) == []


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
