"""Property-based testing of the real API from its own OpenAPI document (schemathesis).

Every operation gets generated requests, valid and invalid, with a token of a role it allows (so
the handlers run, not only the authentication), against a market that has zones, participants,
offers and orders. No request may get a server error, and every answer must be one the document
declares, with a body that matches its schema.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from marketplace.api.app import openapi_document
from tests.marketplace.conftest import HOUR, T0, Market, RunningMarket

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


@pytest.fixture(scope="module")
def tokens(running_market: RunningMarket) -> dict[str, str]:
    running_market.clock.set(T0)
    market = Market(running_market)
    zone = market.new_zone("bilateral")
    auction = market.new_zone("pay_as_clear")
    producer, p = market.join(zone, "producer", capacity_w=100_000, name="fuzz-producer")
    consumer, c = market.join(zone, "consumer", name="fuzz-consumer")
    _, ac = market.join(auction, "consumer")
    offer = p.post("/v1/offers", json={"slot_start_ms": T0 + HOUR, "slot_end_ms": T0 + 5 * HOUR,
                                       "energy_wh_per_slot": 1000, "price_cents_per_kwh": 12}).json()["items"][0]
    assert c.post("/v1/orders", json={"offer_id": offer["offer_id"], "energy_wh": 100}).status_code == 201
    assert ac.post("/v1/bids", json={"slot_start_ms": T0 + HOUR, "energy_wh": 100, "price_cents_per_kwh": 5}).status_code == 201
    return {
        "operator": market.operator_token,
        "producer": p.headers["authorization"].split()[1],
        "consumer": c.headers["authorization"].split()[1],
    }


# The document the app serves, loaded at collection time (schemathesis' lazy fixture loader does not
# work with pytest 9); the first test checks the server serves exactly this one.
OPENAPI = openapi_document()
# A query string over the API layer's bound is refused with 414 (URI Too Long), a rejection too.
REJECTIONS = ["400", "401", "403", "404", "405", "406", "409", "413", "414", "415", "422", "428", "429", "5xx"]
schema = schemathesis.openapi.from_dict(OPENAPI, config=SchemathesisConfig.from_dict(
    {"checks": {"negative_data_rejection": {"expected-statuses": REJECTIONS}}}))


def test_the_served_document_is_the_one_under_test(running_market: RunningMarket) -> None:
    assert httpx.get(f"{running_market.url}/v1/openapi.json").json() == OPENAPI


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_gets_a_server_error_or_an_undocumented_answer(
    case: Any, tokens: dict[str, str], running_market: RunningMarket
) -> None:
    allowed = [kind for kind in case.operation.definition.raw["x-allow"] if kind in tokens]
    generated = (case.headers or {}).get("Authorization")
    # Where schemathesis generated a well-formed bearer header, it stands for "a valid token": use a
    # real one of an allowed role. A header it dropped or mangled on purpose stays as generated.
    if allowed and isinstance(generated, str) and generated.startswith("Bearer "):
        case.headers["Authorization"] = f"Bearer {tokens[allowed[0]]}"
    case.call_and_validate(base_url=running_market.url, checks=CHECKS)
