"""Schemathesis over the whole document of the fully composed app (every surface of entry-point
group ``quartier.surfaces``): no generated request, valid or not, gets a server error.

Each operation is called with the credential of a principal its ``x-allow`` names (the test
authenticator's, chained after the surfaces' own), so the handlers run, not only the access check.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from prometheus_client import CollectorRegistry
from schemathesis.checks import not_a_server_error

from api.compose import compose, discover
from quartier.settings import Settings
from tests.api.serving import Served
from tests.api.surface import PRINCIPALS, TestAuthenticator
from tests.support import isolated_settings

# A principal standing for each kind x-allow may name.
KIND_TOKEN = {"authenticated": "tok_member", "owner": "tok_owner", "member": "tok_member",
              "producer": "tok_market_participant", "consumer": "tok_market_participant",
              "operator": "tok_operator", "support": "tok_support"}


def _document() -> dict[str, Any]:
    # Built at collection time (schemathesis parametrizes from it); nothing is started.
    with tempfile.TemporaryDirectory() as state:
        app = compose(Settings(state_dir=Path(state)), CollectorRegistry(), discover())
        return app.state.openapi()  # type: ignore[no-any-return]


schema = schemathesis.openapi.from_dict(_document())


@pytest.fixture(scope="module")
def served(broker: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings_ = isolated_settings(tmp_path_factory.mktemp("whole"), broker, {"market": {"settle_on_chain": False}},
                                  api={"requests_per_minute": 1_000_000, "anonymous_requests_per_minute": 1_000_000})
    app = compose(settings_, CollectorRegistry(), discover(), extra_authenticators=[TestAuthenticator()])
    running = Served(app).start().wait_ready()
    try:
        operator = {"Authorization": "Bearer tok_operator"}
        with httpx.Client(base_url=running.url, headers=operator) as client:
            assert client.put("/v1/zones/whole", json={"mechanism": "bilateral"}).status_code == 200
            assert client.post("/v1/participants", json={
                "participant": PRINCIPALS["market_participant"].household, "zone": "whole",
                "meter": "000000000555", "roles": ["producer"], "capacity_w": 10_000}).status_code == 201
        yield running.url
    finally:
        running.stop()


@schema.parametrize()
@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_to_any_surface_gets_a_server_error(case: Any, served: str) -> None:
    kinds = [k for k in case.operation.definition.raw["x-allow"] if k in KIND_TOKEN]
    generated = (case.headers or {}).get("Authorization")
    if kinds and isinstance(generated, str) and generated.startswith("Bearer "):
        case.headers["Authorization"] = f"Bearer {KIND_TOKEN[kinds[0]]}"
    case.call_and_validate(base_url=served, checks=[not_a_server_error])
