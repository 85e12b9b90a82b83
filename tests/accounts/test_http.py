"""The accounts surface over HTTP (the composed app, the real broker and SMTP server): sign-up to
pairing, sessions with CSRF, tokens that rotate and are revoked, throttled sign-in without enumeration."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from accounts.surface import surface
from api.compose import compose
from quartier import pairing
from quartier.settings import Settings
from tests.accounts.test_service import confirmation_token

PASSWORD = "a long enough password"
METER, ZONE = "032347287152", "zone-0001"
#: The sign-in window of these tests: five argon2id checks (about 1 s each at a load of 15) fit in it.
WINDOW_S = 8


@pytest.fixture
async def http(broker: dict[str, Any], smtp: dict[str, Any], make_settings: Callable[..., Settings]) -> AsyncIterator[tuple[httpx.AsyncClient, Settings]]:
    settings = make_settings(broker, smtp, accounts={"sign_in_per_account": 5, "sign_in_window_s": WINDOW_S})
    app = compose(settings, CollectorRegistry(), [("accounts", surface)])
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://accounts.test") as client:
            yield client, settings


async def signed_up(client: httpx.AsyncClient, settings: Settings, email: str, name: str = "Someone") -> None:
    answer = await client.post("/v1/accounts", json={"email": email, "name": name, "password": PASSWORD, "language": "en"})
    assert answer.status_code == 202, answer.text
    confirmed = await client.get("/v1/accounts/confirm", params={"token": confirmation_token(settings, email)})
    assert confirmed.status_code == 200, confirmed.text


async def bearer(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> tuple[dict[str, str], str]:
    answer = await client.post("/v1/tokens", json={"email": email, "password": password})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    return {"Authorization": f"Bearer {body['access_token']}"}, body["refresh_token"]


def unique(name: str) -> str:
    return f"{name}@{uuid.uuid4().hex[:8]}.test"


async def test_sign_up_confirm_household_pairing_and_preferences_over_http(http) -> None:
    client, settings = http
    email = unique("owner")
    answer = await client.post("/v1/accounts", json={"email": email, "name": "Owner", "password": PASSWORD, "language": "en"})
    assert answer.status_code == 202
    # Not confirmed yet: the right password gets a 403 saying so (a wrong one still the usual 401).
    early = await client.post("/v1/tokens", json={"email": email, "password": PASSWORD})
    assert (early.status_code, early.json()["error"]) == (403, "email_unconfirmed")
    # A new link on request (the same 202 for an address with no account); the first one still works.
    first = confirmation_token(settings, email)
    assert (await client.post("/v1/accounts/confirmation", json={"email": email})).status_code == 202
    assert (await client.post("/v1/accounts/confirmation", json={"email": unique("nobody")})).status_code == 202
    assert confirmation_token(settings, email) != first
    confirmed = await client.get("/v1/accounts/confirm", params={"token": first})
    assert confirmed.status_code == 200
    again = await client.get("/v1/accounts/confirm", params={"token": first})
    assert (again.status_code, again.json()["field"]) == (400, "token")

    auth, _ = await bearer(client, email)
    me = (await client.get("/v1/me", headers=auth)).json()
    assert (me["email"], me["email_confirmed"], me["household"]) == (email, True, None)
    created = await client.post("/v1/households", json={"name": "Chez nous"}, headers=auth)
    assert created.status_code == 201
    household = created.json()["household"]
    wrong = await client.put("/v1/me/meter", json={"meter": METER, "zone": ZONE, "code": "AAAA-AAAA"}, headers=auth)
    assert (wrong.status_code, wrong.json()["field"]) == (422, "code")
    paired = await client.put("/v1/me/meter", json={"meter": METER, "zone": ZONE, "code": pairing.pairing_code(METER, ZONE)},
                              headers=auth)
    assert paired.status_code == 200, paired.text
    assert (paired.json()["meter"], paired.json()["zone"]) == (METER, ZONE)

    device = await client.post("/v1/me/devices", json={"token": "phone-token-1"}, headers=auth)
    assert device.status_code == 201
    prefs = await client.put("/v1/me/notifications", headers=auth, json={
        "alert_email": "alerts@example.test", "channels": ["push", "email"], "quiet_hours": "22:00-07:00", "language": "en"})
    assert prefs.status_code == 200, prefs.text
    [mine] = prefs.json()["members"]
    assert (mine["alert_email"], mine["quiet_hours"], mine["devices"]) == ("alerts@example.test", "22:00-07:00", [device.json()["device"]])
    bad = await client.put("/v1/me/notifications", headers=auth, json={"quiet_hours": "soon"})
    assert (bad.status_code, bad.json()["field"]) == (422, "quiet_hours")
    unknown = await client.put("/v1/me/notifications", headers=auth, json={"colour": "red"})
    assert (unknown.status_code, unknown.json()["field"]) == (422, "colour")

    rules = await client.put("/v1/me/alerts", json={"power_max_w": 6000}, headers=auth)
    assert rules.status_code == 200, rules.text
    assert (rules.json()["meter"], rules.json()["power_max_w"]) == (METER, 6000)
    refused = await client.put("/v1/me/alerts", json={"power_max_w": 6000, "power_min_w": 9000}, headers=auth)
    assert (refused.status_code, refused.json()["field"]) == (422, "power_min_w")
    assert (await client.get("/v1/me/alerts", headers=auth)).json()["power_max_w"] == 6000

    # A second person joins with the owner's code and is a member.
    other = unique("member")
    await signed_up(client, settings, other)
    other_auth, _ = await bearer(client, other)
    code = (await client.post("/v1/me/household/invitations", headers=auth)).json()["code"]
    joined = await client.post("/v1/households/join", json={"code": code}, headers=other_auth)
    assert joined.status_code == 200 and joined.json()["household"] == household
    # Its token was issued before it joined; the Principal is filled at each request from the accounts state.
    assert (await client.get("/v1/me/household", headers=other_auth)).json()["meter"] == METER
    forbidden = await client.delete(f"/v1/me/meter/{METER}", headers=other_auth)
    assert forbidden.status_code == 403


async def test_a_session_cookie_is_httponly_lax_and_needs_the_csrf_token(http) -> None:
    client, settings = http
    email = unique("web")
    await signed_up(client, settings, email)
    answer = await client.post("/v1/sessions", json={"email": email, "password": PASSWORD})
    assert answer.status_code == 200
    cookie = answer.headers["set-cookie"]
    assert "quartier_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" not in cookie
    csrf = answer.json()["csrf_token"]
    assert (await client.get("/v1/me")).json()["email"] == email  # the client keeps the cookie
    refused = await client.post("/v1/households", json={"name": "H"})
    assert refused.status_code == 403
    created = await client.post("/v1/households", json={"name": "H"}, headers={"X-CSRF-Token": csrf})
    assert created.status_code == 201
    out = await client.delete("/v1/sessions/current", headers={"X-CSRF-Token": csrf})
    assert out.status_code == 200
    client.cookies.set("quartier_session", cookie.split(";")[0].split("=", 1)[1])
    assert (await client.get("/v1/me")).status_code == 401
    client.cookies.clear()


async def test_password_change_revokes_every_session_and_token(http) -> None:
    client, settings = http
    email = unique("revoked")
    await signed_up(client, settings, email)
    auth, refresh = await bearer(client, email)
    other_auth, other_refresh = await bearer(client, email)
    session = await client.post("/v1/sessions", json={"email": email, "password": PASSWORD})
    cookie = session.cookies["quartier_session"]
    client.cookies.clear()
    client.headers.pop("cookie", None)

    # A refresh rotates: the new pair works, the spent refresh token revokes its family when replayed.
    rotated = await client.post("/v1/tokens/refresh", json={"refresh_token": other_refresh})
    assert rotated.status_code == 200
    replayed = await client.post("/v1/tokens/refresh", json={"refresh_token": other_refresh})
    assert replayed.status_code == 401
    rotated_auth = {"Authorization": f"Bearer {rotated.json()['access_token']}"}
    assert (await client.get("/v1/me", headers=rotated_auth)).status_code == 401  # its family was revoked

    changed = await client.put("/v1/me/password", json={"current_password": PASSWORD, "new_password": "another long password"},
                               headers=auth)
    assert changed.status_code == 200
    assert (await client.get("/v1/me", headers=auth)).status_code == 401
    assert (await client.post("/v1/tokens/refresh", json={"refresh_token": refresh})).status_code == 401
    client.cookies.set("quartier_session", cookie)
    assert (await client.get("/v1/me")).status_code == 401
    client.cookies.clear()
    assert (await client.post("/v1/tokens", json={"email": email, "password": PASSWORD})).status_code == 401
    new_auth, _ = await bearer(client, email, "another long password")
    assert (await client.get("/v1/me", headers=new_auth)).status_code == 200
    # Sign out everywhere does the same without a password change.
    assert (await client.post("/v1/me/sign-out-everywhere", headers=new_auth)).status_code == 200
    assert (await client.get("/v1/me", headers=new_auth)).status_code == 401


async def test_twenty_wrong_passwords_are_throttled_and_the_right_one_works_after_the_window(http) -> None:
    client, settings = http
    email = unique("guessed")
    await signed_up(client, settings, email)
    statuses = [(await client.post("/v1/tokens", json={"email": email, "password": f"wrong guess {i}"})).status_code
                for i in range(20)]
    assert statuses == [401] * 5 + [429] * 15
    throttled = await client.post("/v1/tokens", json={"email": email, "password": PASSWORD})
    retry_after = int(throttled.headers["Retry-After"])
    assert throttled.status_code == 429 and 1 <= retry_after <= WINDOW_S
    assert throttled.json()["field"] == "email"
    time.sleep(retry_after + 0.2)
    assert (await client.post("/v1/tokens", json={"email": email, "password": PASSWORD})).status_code == 200


async def test_an_unknown_email_and_a_wrong_password_answer_alike(http) -> None:
    client, settings = http
    email = unique("known")
    await signed_up(client, settings, email)

    async def attempt(address: str) -> tuple[int, dict[str, Any], float]:
        started = time.perf_counter()
        answer = await client.post("/v1/tokens", json={"email": address, "password": "not the password"})
        return answer.status_code, answer.json(), time.perf_counter() - started

    # Interleaved, so a burst of load on the shared machine hits both alike.
    wrong, unknown = [], []
    for _ in range(4):
        wrong.append(await attempt(email))
        unknown.append(await attempt(unique("nobody")))
    assert {(s, str(b)) for s, b, _ in wrong} == {(s, str(b)) for s, b, _ in unknown}
    assert wrong[0][:2] == (401, {"error": "invalid_credentials", "status": 401, "field": "password", "location": "body",
                                  "reason": "this email and password do not match an account",
                                  "errors": [{"field": "password", "location": "body",
                                              "reason": "this email and password do not match an account"}]})
    # Both verify an argon2id hash (a dummy one for the unknown address): the same work, about the same
    # time. The fastest of each: load on the shared machine only ever adds time.
    ratio = min(t for *_, t in unknown) / min(t for *_, t in wrong)
    assert 0.5 < ratio < 2.0, ratio


async def test_a_new_address_is_unconfirmed_until_its_link_and_the_contract_is_the_owners(http) -> None:
    client, settings = http
    email, new = unique("old"), unique("new")
    await signed_up(client, settings, email)
    auth, _ = await bearer(client, email)
    taken = unique("taken")
    await signed_up(client, settings, taken)
    assert (await client.put("/v1/me/email", json={"email": taken}, headers=auth)).json()["field"] == "email"
    assert (await client.put("/v1/me/email", json={"email": new}, headers=auth)).status_code == 200
    assert (await client.get("/v1/me", headers=auth)).json()["email_confirmed"] is False
    assert (await client.get("/v1/accounts/confirm", params={"token": confirmation_token(settings, new)})).status_code == 200
    assert (await client.get("/v1/me", headers=auth)).json()[("email")] == new
    await client.post("/v1/households", json={"name": "H"}, headers=auth)
    contract = await client.put("/v1/me/household/tariff", headers=auth,
                                json={"tariff": "tempo", "subscribed_kva": 9, "billing_day": 15, "heating": "other"})
    assert contract.status_code == 200, contract.text
    assert {k: contract.json()[k] for k in ("tariff", "subscribed_kva", "billing_day", "heating")} == \
        {"tariff": "tempo", "subscribed_kva": 9, "billing_day": 15, "heating": "other"}
    bad = await client.put("/v1/me/household/tariff", headers=auth, json={"tariff": "tempo", "subscribed_kva": 9, "billing_day": 31})
    assert (bad.status_code, bad.json()["field"]) == (422, "billing_day")
