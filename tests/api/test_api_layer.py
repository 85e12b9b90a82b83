"""The API layer as a client meets it: validation and its errors, access, CSRF, rate, metrics, the document."""

from __future__ import annotations

import httpx
from prometheus_client import CollectorRegistry

from tests.api.surface import SESSION_CSRF, bearer


async def test_a_refused_field_is_named_with_the_reason(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/notes", json={"text": "", "priority": 9}, headers=bearer("member"))
    assert r.status_code == 422
    body = r.json()
    assert body["error"] == "invalid" and body["status"] == 422 and body["location"] == "body"
    assert [(e["field"], e["location"]) for e in body["errors"]] == [("text", "body"), ("priority", "body")]
    assert body["field"] == "text" and "at least 1 character" in body["reason"]
    assert "less than or equal to 5" in body["errors"][1]["reason"]


async def test_a_wrong_type_is_refused_not_coerced(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/notes", json={"text": "hi", "priority": "3"}, headers=bearer("member"))
    assert r.status_code == 422
    assert (r.json()["field"], r.json()["reason"]) == ("priority", "Input should be a valid integer")


async def test_an_unknown_field_is_refused_by_name(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/notes", json={"text": "hi", "colour": "red"}, headers=bearer("member"))
    assert r.status_code == 422
    assert (r.json()["field"], r.json()["location"], r.json()["reason"]) == (
        "colour", "body", "unknown field: not part of this request")
    r = await client.get("/v1/notes", params={"limit": 5, "sort": "x"}, headers=bearer("member"))
    assert r.status_code == 422
    assert (r.json()["field"], r.json()["location"]) == ("sort", "query")


async def test_query_path_and_malformed_bodies_are_refused_by_name(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/notes", params={"limit": 5000}, headers=bearer("member"))
    assert (r.status_code, r.json()["field"], r.json()["location"]) == (422, "limit", "query")
    r = await client.get("/v1/notes", params={"search": "x" * 33}, headers=bearer("member"))
    assert (r.status_code, r.json()["field"]) == (422, "search")
    r = await client.get("/v1/notes", params=[("limit", "1"), ("limit", "2")], headers=bearer("member"))
    assert (r.status_code, r.json()["field"], r.json()["reason"]) == (422, "limit", "given more than once")
    r = await client.get("/v1/notes/zz", headers=bearer("member"))
    assert (r.status_code, r.json()["field"], r.json()["location"]) == (422, "note_id", "path")
    r = await client.post("/v1/notes", content=b'{"text": ', headers={**bearer("member"),
                                                                       "content-type": "application/json"})
    assert (r.status_code, r.json()["error"], r.json()["field"]) == (400, "malformed_json", "body")
    r = await client.post("/v1/notes", content=b"\xff\xfe", headers={**bearer("member"),
                                                                      "content-type": "application/json"})
    assert r.status_code == 400
    r = await client.post("/v1/notes", content=b"null", headers={**bearer("member"),
                                                                  "content-type": "application/json; charset=utf-8"})
    assert (r.status_code, r.json()["field"]) == (422, "body")
    r = await client.post("/v1/notes", content=b"text=hi", headers={**bearer("member"),
                                                                     "content-type": "text/plain"})
    assert (r.status_code, r.json()["field"]) == (415, "Content-Type")


async def test_a_valid_request_is_served_with_its_model(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/notes", json={"text": "boiler service", "priority": 2}, headers=bearer("owner"))
    assert r.status_code == 201
    assert r.json() == {"note_id": "n1", "household": "hh_1", "text": "boiler service", "priority": 2}
    r = await client.get("/v1/notes", params={"search": "boiler"}, headers=bearer("member"))
    assert r.json() == {"items": [{"note_id": "n1", "household": "hh_1", "text": "boiler service", "priority": 2}]}


async def test_access_anonymous_401_others_403_other_household_404(client: httpx.AsyncClient) -> None:
    assert (await client.post("/v1/notes", json={"text": "a"}, headers=bearer("owner"))).status_code == 201
    r = await client.get("/v1/notes")
    assert (r.status_code, r.json()["error"]) == (401, "unauthenticated")
    assert r.headers["www-authenticate"].startswith("Bearer")
    r = await client.get("/v1/notes", headers=bearer("operator"))
    assert (r.status_code, r.json()["error"]) == (403, "forbidden")
    assert (await client.get("/v1/notes/n1", headers=bearer("member_of_other"))).status_code == 404
    assert (await client.get("/v1/notes/n1", headers=bearer("member"))).status_code == 200
    assert (await client.get("/v1/notes/n1", headers=bearer("support"))).status_code == 200
    r = await client.get("/v1/notes", headers={"Authorization": "Bearer forged"})
    assert (r.status_code, r.json()["reason"]) == (401, "unknown token")


async def test_csrf_is_required_of_a_session_principal(client: httpx.AsyncClient) -> None:
    cookies = {"sid": "session-1"}
    client.cookies.update(cookies)
    r = await client.post("/v1/notes", json={"text": "from the browser"})
    assert (r.status_code, r.json()["error"], r.json()["field"]) == (403, "csrf", "X-CSRF-Token")
    r = await client.post("/v1/notes", json={"text": "from the browser"}, headers={"X-CSRF-Token": "guess"})
    assert r.status_code == 403
    r = await client.post("/v1/notes", json={"text": "from the browser"}, headers={"X-CSRF-Token": SESSION_CSRF})
    assert r.status_code == 201
    assert (await client.get("/v1/notes")).status_code == 200  # reads need no token
    r = await client.post("/notes/form", data={"text": "x"})
    assert (r.status_code, r.json()["field"]) == (403, "csrf_token")
    r = await client.post("/notes/form", data={"text": "x", "csrf_token": SESSION_CSRF})
    assert r.status_code == 201
    client.cookies.clear()
    # A bearer token is not sent by a browser on its own: no CSRF token needed.
    assert (await client.post("/v1/notes", json={"text": "api"}, headers=bearer("owner"))).status_code == 201


async def test_a_principal_over_its_rate_gets_429_while_another_is_served(notes_client) -> None:
    async with notes_client(api={"requests_per_minute": 5, "anonymous_requests_per_minute": 3}) as client:
        for _ in range(5):
            assert (await client.get("/v1/notes", headers=bearer("member"))).status_code == 200
        r = await client.get("/v1/notes", headers=bearer("member"))
        assert (r.status_code, r.json()["error"]) == (429, "rate_limited")
        assert 1 <= int(r.headers["retry-after"]) <= 60
        assert (await client.get("/v1/notes", headers=bearer("owner"))).status_code == 200
        for _ in range(3):
            assert (await client.get("/v1/health")).status_code == 200
        assert (await client.get("/v1/health")).status_code == 429


async def test_a_body_over_the_operation_s_limit_is_413(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/uploads", json={"data": "x" * 100}, headers=bearer("member"))
    assert (r.status_code, r.json()["error"], r.json()["field"]) == (413, "too_large", "body")
    assert r.json()["reason"] == "the body may be at most 64 bytes"
    assert (await client.post("/v1/uploads", json={"data": "x" * 10}, headers=bearer("member"))).json() == {"size": 10}

    async def chunks():
        yield b'{"data": "'
        for _ in range(10):
            yield b"x" * 20
        yield b'"}'

    r = await client.post("/v1/uploads", content=chunks(), headers={**bearer("member"),
                                                                     "content-type": "application/json"})
    assert (r.status_code, r.json()["error"]) == (413, "too_large")
    r = await client.post("/v1/notes", content=b"x" * 1_048_577, headers={**bearer("member"),
                                                                          "content-type": "application/json"})
    assert (r.status_code, r.json()["reason"]) == (413, "the body may be at most 1048576 bytes")


async def test_metrics_count_each_route_and_status(client: httpx.AsyncClient, registry: CollectorRegistry) -> None:
    for _ in range(3):
        await client.get("/v1/notes", headers=bearer("member"))
    await client.get("/v1/notes")
    await client.get("/v1/notes/n7", headers=bearer("member"))
    count = registry.get_sample_value
    assert count("quartier_api_requests_total", {"route": "/v1/notes", "method": "GET", "status": "200"}) == 3
    assert count("quartier_api_requests_total", {"route": "/v1/notes", "method": "GET", "status": "401"}) == 1
    assert count("quartier_api_requests_total", {"route": "/v1/notes/{note_id}", "method": "GET",
                                                  "status": "404"}) == 1
    assert count("quartier_api_request_duration_seconds_count", {"route": "/v1/notes", "method": "GET"}) == 4
    text = (await client.get("/metrics")).text
    assert 'quartier_api_requests_total{method="GET",route="/v1/notes",status="200"} 3.0' in text


async def test_the_document_is_openapi_3_1_with_every_operation_and_who_may_call_it(client: httpx.AsyncClient) -> None:
    document = (await client.get("/v1/openapi.json")).json()
    assert document["openapi"] == "3.1.0"
    operations = {op["operationId"]: (path, method, op) for path, methods in document["paths"].items()
                  for method, op in methods.items()}
    assert {k: (p, m, op["x-allow"]) for k, (p, m, op) in operations.items()} == {
        "health": ("/v1/health", "get", ["anonymous"]),
        "create_note": ("/v1/notes", "post", ["owner", "member"]),
        "list_notes": ("/v1/notes", "get", ["owner", "member"]),
        "get_note": ("/v1/notes/{note_id}", "get", ["owner", "member", "support", "operator"]),
        "delete_note": ("/v1/notes/{note_id}", "delete", ["owner"]),
        "upload": ("/v1/uploads", "post", ["authenticated"]),
        "fleet": ("/v1/fleet", "get", ["operator", "support"]),
    }
    _, _, create = operations["create_note"]
    assert set(create["responses"]) == {"201", "400", "401", "403", "413", "414", "415", "422", "429"}
    assert create["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("NoteCreate")
    _, _, get = operations["get_note"]
    assert get["parameters"][0]["name"] == "note_id" and get["parameters"][0]["schema"]["pattern"] == "^n[0-9]{1,9}$"
    _, _, listing = operations["list_notes"]
    assert {p["name"] for p in listing["parameters"]} == {"limit", "offset", "search"}
    page = await client.get("/v1/docs")
    assert page.status_code == 200 and "create_note" in page.text and "allowed: owner, member" in page.text


async def test_ready_names_the_surfaces_that_cannot_serve_yet(tmp_path) -> None:
    from api import Surface, build_app
    from quartier.settings import Settings
    from tests.api.surface import TestAuthenticator

    started = {"console": False}
    surfaces = [Surface(name="notes", routes=[]), Surface(name="console", routes=[], ready=lambda: started["console"])]
    app = build_app(surfaces, authenticator=TestAuthenticator(), settings=Settings(state_dir=tmp_path),
                    registry=CollectorRegistry())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api.test") as client:
        waiting = await client.get("/v1/ready")
        assert (waiting.status_code, waiting.headers["Retry-After"]) == (503, "1")
        assert waiting.json()["reason"] == "not ready yet: console"
        started["console"] = True
        ready = await client.get("/v1/ready")
        assert (ready.status_code, ready.json()) == (200, {"ready": ["notes", "console"]})
