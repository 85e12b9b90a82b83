"""The authorization matrix of the fully composed app (every surface of entry-point group
``quartier.surfaces``), and the harness itself on the notes surface.

Surface engineers: add a Row per operation to ``MATRIX`` and, when your surface needs a running
dependency or principals of its own, extend ``composed`` and ``CREDENTIALS``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

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
    "resend_confirmation": Row(statuses(409, **_AUTHENTICATED)),
    "sign_in": Row(statuses(422), Probe(json={})),
    "sign_out": Row(statuses(200, **_AUTHENTICATED)),
    "issue_tokens": Row(statuses(422), Probe(json={})),
    "refresh_tokens": Row(statuses(401), Probe(json={"refresh_token": "rt_not-a-token-of-ours"})),
    "sign_out_everywhere": Row(statuses(200, **_AUTHENTICATED)),
    "change_password": Row(statuses(422, **_AUTHENTICATED),
                           Probe(json={"current_password": "not the password", "new_password": "a new long password"})),
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




@pytest.fixture
async def composed(broker, smtp, make_settings) -> AsyncIterator[tuple[httpx.AsyncClient, dict, Any]]:
    # --- accounts --- the accounts surface runs on the real broker and SMTP server; its principals are real.
    from tests.accounts.principals import FreshCredentials, make_accounts

    settings = make_settings(broker, smtp)
    made = await make_accounts(settings)
    credentials = FreshCredentials(settings, made)
    app = compose(settings, CollectorRegistry(), discover(), extra_authenticators=[TestAuthenticator()])
    try:
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api.test") as client:
                yield client, app.state.openapi(), credentials
    finally:
        credentials.close()


async def test_every_composed_operation_answers_each_principal_as_the_matrix_says(composed) -> None:
    client, document, credentials = composed
    assert await mismatches(client, document, MATRIX, credentials) == []


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
