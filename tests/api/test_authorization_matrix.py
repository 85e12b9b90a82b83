"""The authorization matrix of the fully composed app (every surface of entry-point group
``quartier.surfaces``), and the harness itself on the notes surface.

Surface engineers: add a Row per operation to ``MATRIX`` and, when your surface needs a running
dependency or principals of its own, extend ``composed`` and ``CREDENTIALS``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from api.compose import compose, discover
from quartier.settings import Settings
from tests.api.matrix import PRINCIPALS, Probe, Row, mismatches, statuses
from tests.api.surface import TestAuthenticator, bearer, surface

# Each principal's credential. Until accounts lands, the test authenticator's tokens stand for the
# principals (chained after the surfaces' own authenticators).
CREDENTIALS = {p: ({} if p == "anonymous" else bearer(p)) for p in PRINCIPALS}

# operationId -> Row, for every operation of every composed surface.
MATRIX: dict[str, Row] = {}

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




@pytest.fixture
async def composed(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, dict]]:
    app = compose(Settings(state_dir=tmp_path), CollectorRegistry(), discover(),
                  extra_authenticators=[TestAuthenticator()])
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api.test") as client:
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
