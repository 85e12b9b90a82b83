"""The ``accounts`` HTTP surface: sign up, confirm, sign in and out, households, the meter, roles, and
the household's preferences (alert rules, notifications, devices).

Every operation is declared once here (``api.operation``): who may call it, its models, its answer.
Handlers call :class:`accounts.operations.AccountOperations`; a refusal of the command layer
(:class:`accounts.commands.Rejected`) becomes the API's error shape naming the field.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api import ApiError, Call, Surface, SurfaceContext, allow, error_response, operation
from api.bounds import Query
from quartier import events as ev

from accounts import alert_rules, commands
from accounts.alert_rules import AlertRulesLog
from accounts.auth import SESSION_COOKIE, AccountsAuthenticator, SignInThrottle
from accounts.commands import Rejected
from accounts.keys import token_secret
from accounts.mail import AccountMailer
from accounts.operations import AccountOperations
from accounts.service import AccountsService
from accounts.sessions import TABLES as CREDENTIAL_TABLES
from accounts.sessions import CredentialStore, Invalid


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Email = Annotated[str, Field(min_length=3, max_length=254, description="an email address")]
Password = Annotated[str, Field(min_length=1, max_length=1024)]
Language = Literal["fr", "en"]


# --- models -----------------------------------------------------------------------------------------


class SignUp(Strict):
    email: Email
    name: Annotated[str, Field(min_length=1, max_length=120)]
    password: Password = Field(description="at least 10 characters")
    language: Language = "fr"


class Accepted(BaseModel):
    status: Literal["confirmation_sent"] = "confirmation_sent"
    detail: str = "if this address can be used, a confirmation link is on its way"


class ConfirmQuery(Query):
    token: Annotated[str, Field(min_length=16, max_length=128)]


class Confirmed(BaseModel):
    account: str
    email_confirmed: bool = True


class SignIn(Strict):
    email: Email
    password: Password


class SessionView(BaseModel):
    account: str
    csrf_token: str = Field(description="send it as X-CSRF-Token on every POST, PUT, PATCH and DELETE")


class TokenView(BaseModel):
    access_token: str
    token_type: Literal["Bearer"] = "Bearer"
    expires_in: int = Field(description="seconds the access token is valid")
    refresh_token: str = Field(description="single use: a refresh returns a new one")


class RefreshBody(Strict):
    refresh_token: Annotated[str, Field(min_length=8, max_length=128)]


class Done(BaseModel):
    status: Literal["ok"] = "ok"


class PasswordChange(Strict):
    current_password: Password
    new_password: Password


class MeView(BaseModel):
    account: str
    email: str
    email_confirmed: bool
    name: str
    language: str
    roles: list[str]
    household: str | None
    household_role: str | None
    market_roles: list[str]


class HouseholdCreate(Strict):
    name: Annotated[str, Field(min_length=1, max_length=120)]


class MemberView(BaseModel):
    account: str
    name: str
    role: str | None


class HouseholdView(BaseModel):
    household: str
    name: str
    meter: str | None
    zone: str | None
    market_roles: list[str]
    producer_capacity_w: int | None
    tariff: str
    subscribed_kva: int | None
    billing_day: int
    heating: str
    members: list[MemberView]


class InvitationView(BaseModel):
    code: str = Field(description="single use; give it to the person joining (POST /v1/households/join)")
    expires_ms: int


class Join(Strict):
    code: Annotated[str, Field(min_length=8, max_length=128)]


class Pair(Strict):
    meter: Annotated[str, Field(pattern=r"^[0-9]{12}$", description="the meter's address (ADSC), 12 digits")]
    zone: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$", description="as the module shows it")]
    code: Annotated[str, Field(min_length=8, max_length=16, description="the pairing code the module shows")]


class Tariff(Strict):
    tariff: Literal["base", "peak_offpeak", "tempo"]
    subscribed_kva: Annotated[int, Field(ge=1, le=36)]
    billing_day: Annotated[int, Field(ge=1, le=28)] = 1
    heating: Literal["electric", "other"] = "electric"


class MarketRoles(Strict):
    producer: bool = False
    consumer: bool = False
    producer_capacity_w: Annotated[int, Field(gt=0, le=1_000_000)] | None = Field(
        None, description="the installation's peak output (W); required with producer: the market caps a "
                          "slot's offers at what it produces in 15 minutes")


class RoleGrant(Strict):
    email: Email
    role: Literal["operator", "support"]
    revoke: bool = False


class RoleView(BaseModel):
    email: str
    role: str
    changed: bool


class MemberPath(Query):
    account: Annotated[str, Field(pattern=r"^acct_[0-9a-f]{16}$")]


class DevicePath(Query):
    device: Annotated[str, Field(pattern=r"^dev_[0-9a-f]{16}$")]


class DeviceCreate(Strict):
    token: Annotated[str, Field(min_length=1, max_length=4096, pattern=r"^\S+$", description="the FCM registration token")]


class DeviceView(BaseModel):
    device: str
    account: str


class Notifications(Strict):
    alert_email: Email | None = Field(None, description="where this member's alert emails go; null: none")
    channels: list[Literal["push", "email"]] = Field(default_factory=lambda: ["push", "email"], max_length=2)
    quiet_hours: Annotated[str, Field(max_length=16)] | None = Field(None, description="22:00-07:00, local time")
    time_zone: Annotated[str, Field(min_length=1, max_length=64)] = "Europe/Paris"
    language: Language = "fr"
    muted_kinds: list[ev.AlertKind] = Field(default_factory=list, max_length=16)


class MemberNotifications(BaseModel):
    account: str
    name: str
    alert_email: str | None
    channels: list[str]
    quiet_hours: str | None
    time_zone: str
    language: str
    muted_kinds: list[str]
    devices: list[str]


class NotificationsView(BaseModel):
    members: list[MemberNotifications]


def _rules_models() -> tuple[type[BaseModel], type[BaseModel]]:
    """The request and answer models of the alert rules, from the record itself: its fields, each
    optional, checked by msgspec and the engine (not a second copy of the constraints here)."""
    fields = alert_rules.editable_fields()
    request = create_model("AlertRulesUpdate", __config__=ConfigDict(extra="forbid"),
                           **{name: (Any, Field(None, description=f"AlertRules.{name}")) for name in fields})  # type: ignore[call-overload]
    answer = create_model("AlertRulesView", meter=(str, ...), updated_ms=(int, 0),
                          **{name: (Any, None) for name in fields})  # type: ignore[call-overload]
    return request, answer


AlertRulesUpdate, AlertRulesView = _rules_models()


# --- state ----------------------------------------------------------------------------------------------


@dataclass
class AccountsSurface:
    ops: AccountOperations
    credentials: CredentialStore
    authenticator: AccountsAuthenticator
    throttle: SignInThrottle
    secure_cookies: bool


def _me(call: Call) -> str:
    """The caller's account id; a principal of another authenticator (a legacy market token) has none."""
    if call.me.subject not in call.state.ops.state.accounts:
        raise ApiError(403, "forbidden", "this needs an account's sign-in, not a legacy token", "Authorization", "header")
    return call.me.subject


def _my_household(call: Call) -> str:
    household = call.state.ops.state.accounts[_me(call)].household
    if household is None:
        raise ApiError(409, "conflict", "you do not belong to a household yet: create one or join one")
    return household


def _address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


# --- people ---------------------------------------------------------------------------------------------


@operation("POST", "/v1/accounts", allow=allow("anonymous"), body=SignUp, response=Accepted, status=202,
           errors=(422, 429), summary="Sign up: a confirmation link is mailed to the address")
async def sign_up(call: Call) -> Accepted:
    s: AccountsSurface = call.state
    s.throttle.attempt(None, _address(call.request))
    await s.ops.sign_up(email=call.body.email, name=call.body.name, password=call.body.password, language=call.body.language)
    return Accepted()


@operation("GET", "/v1/accounts/confirm", allow=allow("anonymous"), query=ConfirmQuery, response=Confirmed,
           errors=(400,), summary="Confirm an email address (the link in the mail)")
async def confirm_email(call: Call) -> Confirmed:
    s: AccountsSurface = call.state
    return Confirmed(account=await s.ops.confirm(call.query.token))


class ResendConfirmation(Strict):
    email: Email


@operation("POST", "/v1/accounts/confirmation", allow=allow("anonymous"), body=ResendConfirmation, response=Accepted,
           status=202, errors=(429,), summary="Mail a new confirmation link (an unconfirmed person cannot sign in)")
async def resend_confirmation(call: Call) -> Accepted:
    s: AccountsSurface = call.state
    s.throttle.attempt(None, _address(call.request))
    person = s.ops.state.account_by_email(call.body.email.strip().lower())
    # The same answer whether the address has an account, a confirmed one or none.
    if person is not None and not person.email_confirmed:
        await s.ops.resend_confirmation(person.account)
    return Accepted()


async def _signed_in(call: Call) -> str:
    """The account whose email and password the body carries; one answer for every failure."""
    s: AccountsSurface = call.state
    s.throttle.attempt(call.body.email, _address(call.request))
    person = await s.ops.check_password(call.body.email, call.body.password)
    if person is None:
        raise ApiError(401, "invalid_credentials", "this email and password do not match an account", "password", "body")
    if not person.email_confirmed:
        raise ApiError(403, "email_unconfirmed", "confirm your email address first (the link in the mail)", "email", "body")
    return person.account


@operation("POST", "/v1/sessions", allow=allow("anonymous"), body=SignIn, response=SessionView, errors=(401, 403, 429),
           summary="Sign in for the web: sets the quartier_session cookie")
async def sign_in(call: Call) -> Response:
    s: AccountsSurface = call.state
    account = await _signed_in(call)
    cookie, csrf = s.credentials.open_session(account)
    response = JSONResponse(SessionView(account=account, csrf_token=csrf).model_dump())
    response.set_cookie(SESSION_COOKIE, cookie, max_age=s.ops.settings.accounts.session_ttl_s, httponly=True,
                        samesite="lax", secure=s.secure_cookies or call.request.url.scheme == "https", path="/")
    return response


@operation("DELETE", "/v1/sessions/current", allow=allow("authenticated"), response=Done,
           summary="Sign out: ends this session (or this token family)")
async def sign_out(call: Call) -> Response:
    s: AccountsSurface = call.state
    _, family = getattr(call.request.state, "credential", (None, None))
    if family:
        s.credentials.revoke_family(family)
    response = JSONResponse(Done().model_dump())
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@operation("POST", "/v1/tokens", allow=allow("anonymous"), body=SignIn, response=TokenView, errors=(401, 403, 429),
           summary="Sign in for an API client: an access token and a refresh token")
async def issue_tokens(call: Call) -> TokenView:
    s: AccountsSurface = call.state
    pair = s.credentials.issue_tokens(await _signed_in(call))
    return TokenView(access_token=pair.access_token, expires_in=pair.expires_in, refresh_token=pair.refresh_token)


@operation("POST", "/v1/tokens/refresh", allow=allow("anonymous"), body=RefreshBody, response=TokenView, errors=(401,),
           summary="A new token pair for a refresh token (single use)")
async def refresh_tokens(call: Call) -> TokenView:
    s: AccountsSurface = call.state
    try:
        pair = s.credentials.refresh(call.body.refresh_token, s.authenticator.still_valid)
    except Invalid:
        raise ApiError(401, "unauthenticated", "this refresh token is invalid, spent, expired or revoked: sign in",
                       "refresh_token", "body") from None
    return TokenView(access_token=pair.access_token, expires_in=pair.expires_in, refresh_token=pair.refresh_token)


@operation("POST", "/v1/me/sign-out-everywhere", allow=allow("authenticated"), response=Done,
           summary="End every session and revoke every token of this account")
async def sign_out_everywhere(call: Call) -> Done:
    s: AccountsSurface = call.state
    await s.ops.sign_out_everywhere(_me(call))
    s.credentials.revoke_account(_me(call))
    return Done()


@operation("PUT", "/v1/me/password", allow=allow("authenticated"), body=PasswordChange, response=Done, errors=(422,),
           summary="Change the password: every session and token is revoked")
async def change_password(call: Call) -> Done:
    s: AccountsSurface = call.state
    await s.ops.change_password(_me(call), call.body.current_password, call.body.new_password)
    s.credentials.revoke_account(_me(call))
    return Done()


class EmailChange(Strict):
    email: Email


@operation("PUT", "/v1/me/email", allow=allow("authenticated"), body=EmailChange, response=Done, errors=(409, 422),
           summary="Change the sign-in address: a confirmation link is mailed to the new one")
async def change_email(call: Call) -> Done:
    await call.state.ops.change_email(_me(call), call.body.email)
    return Done()


@operation("GET", "/v1/me", allow=allow("authenticated"), response=MeView, summary="Who I am")
async def me(call: Call) -> MeView:
    state = call.state.ops.state
    person = state.accounts[_me(call)]
    return MeView(account=person.account, email=person.email, email_confirmed=person.email_confirmed, name=person.name,
                  language=person.language, roles=sorted(person.role_set), household=person.household,
                  household_role=person.household_role, market_roles=sorted(call.me.market_roles))


# --- households -------------------------------------------------------------------------------------------


@operation("POST", "/v1/households", allow=allow("authenticated"), body=HouseholdCreate, response=HouseholdView,
           status=201, errors=(409,), summary="Create a household (its owner is the caller)")
async def create_household(call: Call) -> HouseholdView:
    household = await call.state.ops.create_household(_me(call), call.body.name)
    return _household_view(call.state, household)


def _household_view(s: AccountsSurface, household_id: str) -> HouseholdView:
    state = s.ops.state
    household = state.households[household_id]
    return HouseholdView(
        household=household.household, name=household.name, meter=household.meter, zone=household.zone,
        market_roles=sorted(household.market_role_set), producer_capacity_w=household.producer_capacity_w,
        tariff=household.tariff, subscribed_kva=household.subscribed_kva,
        billing_day=household.billing_day, heating=household.heating,
        members=[MemberView(account=a.account, name=a.name, role=a.household_role) for a in state.members(household_id)],
    )


@operation("GET", "/v1/me/household", allow=allow("owner", "member"), response=HouseholdView,
           summary="My household: its meter, zone, contract and members")
async def my_household(call: Call) -> HouseholdView:
    return _household_view(call.state, _my_household(call))


@operation("POST", "/v1/me/household/invitations", allow=allow("owner"), response=InvitationView, status=201,
           summary="A single-use code another person joins the household with")
async def invite(call: Call) -> InvitationView:
    invitation = await call.state.ops.invite(_me(call))
    return InvitationView(code=invitation.code, expires_ms=invitation.expires_ms)


@operation("POST", "/v1/households/join", allow=allow("authenticated"), body=Join, response=HouseholdView,
           errors=(409, 422), summary="Join a household with its owner's invitation code")
async def join_household(call: Call) -> HouseholdView:
    household = await call.state.ops.join(_me(call), call.body.code)
    return _household_view(call.state, household)


class Leave(Strict):
    household: Annotated[str, Field(pattern=r"^hh_[0-9a-f]{16}$", description="the household left, as a check")]


@operation("POST", "/v1/me/household/leave", allow=allow("owner", "member"), body=Leave, response=Done,
           errors=(404, 409), summary="Leave my household (the owner leaves last)")
async def leave_household(call: Call) -> Done:
    if call.body.household != _my_household(call):
        raise ApiError(404, "not_found", "you are not a member of this household", "household", "body")
    await call.state.ops.leave(_me(call))
    return Done()


@operation("DELETE", "/v1/me/household/members/{account}", allow=allow("owner"), path_params=MemberPath,
           response=Done, errors=(404, 409), summary="Remove a member from my household")
async def remove_member(call: Call) -> Done:
    await call.state.ops.remove_member(_me(call), call.path.account)
    return Done()


@operation("PUT", "/v1/me/meter", allow=allow("owner"), body=Pair, response=HouseholdView, errors=(409, 422),
           summary="Pair the household's meter with the code its module shows")
async def pair_meter(call: Call) -> HouseholdView:
    await call.state.ops.pair(_me(call), meter=call.body.meter, zone=call.body.zone, code=call.body.code)
    return _household_view(call.state, _my_household(call))


class MeterPath(Query):
    meter: Annotated[str, Field(pattern=r"^[0-9]{12}$")]


@operation("DELETE", "/v1/me/meter/{meter}", allow=allow("owner"), path_params=MeterPath, response=HouseholdView,
           errors=(404,), summary="Unpair the household's meter (named, so a stale page unpairs nothing)")
async def unpair_meter(call: Call) -> HouseholdView:
    household = call.state.ops.state.households[_my_household(call)]
    if household.meter != call.path.meter:
        raise ApiError(404, "not_found", f"meter {call.path.meter} is not your household's", "meter", "path")
    await call.state.ops.unpair(_me(call))
    return _household_view(call.state, _my_household(call))


@operation("PUT", "/v1/me/household/tariff", allow=allow("owner"), body=Tariff, response=HouseholdView,
           summary="The household's contract: tariff option, subscribed power, billing day")
async def set_tariff(call: Call) -> HouseholdView:
    await call.state.ops.set_tariff(_me(call), tariff=call.body.tariff, subscribed_kva=call.body.subscribed_kva,
                                    billing_day=call.body.billing_day, heating=call.body.heating)
    return _household_view(call.state, _my_household(call))


@operation("PUT", "/v1/me/household/market-roles", allow=allow("owner"), body=MarketRoles, response=HouseholdView,
           errors=(409,), summary="Take part in the zone's market as a producer and/or a consumer")
async def set_market_roles(call: Call) -> HouseholdView:
    for role in ("producer", "consumer"):
        await call.state.ops.set_market_role(_me(call), role, getattr(call.body, role),
                                             capacity_w=call.body.producer_capacity_w if role == "producer" else None)
    return _household_view(call.state, _my_household(call))


@operation("POST", "/v1/roles", allow=allow("operator"), body=RoleGrant, response=RoleView, errors=(404,),
           summary="Grant or revoke a global role (operator, support)")
async def grant_role(call: Call) -> RoleView:
    changed = await call.state.ops.grant(_me(call), call.body.email, call.body.role, revoke=call.body.revoke)
    return RoleView(email=call.body.email, role=call.body.role, changed=changed)


# --- preferences ---------------------------------------------------------------------------------------------


@operation("GET", "/v1/me/alerts", allow=allow("owner", "member"), response=AlertRulesView, errors=(409,),
           summary="The household's alert rules in force")
async def get_alerts(call: Call) -> Any:
    return AlertRulesView(**alert_rules.as_body(call.state.ops.alert_rules(_me(call))))


@operation("PUT", "/v1/me/alerts", allow=allow("owner", "member"), body=AlertRulesUpdate, response=AlertRulesView,
           errors=(409, 422), summary="Set the household's alert rules (checked by the alert engine's own rules)")
async def put_alerts(call: Call) -> Any:
    record = await call.state.ops.put_alert_rules(_me(call), call.body.model_dump(exclude_unset=True))
    return AlertRulesView(**alert_rules.as_body(record))


def _notifications_view(s: AccountsSurface, household: str) -> NotificationsView:
    state = s.ops.state
    members = []
    for person in state.members(household):
        prefs = state.preferences.get(person.account)
        devices = [d.device for d in state.devices_of(person.account)]
        members.append(MemberNotifications(
            account=person.account, name=person.name, alert_email=prefs.alert_email if prefs else None,
            channels=prefs.channels.split(",") if prefs else ["email", "push"],
            quiet_hours=prefs.quiet_hours if prefs else None, time_zone=prefs.time_zone if prefs else "Europe/Paris",
            language=prefs.language if prefs else person.language,
            muted_kinds=[k for k in (prefs.muted_kinds if prefs else "").split(",") if k], devices=devices,
        ))
    return NotificationsView(members=members)


@operation("GET", "/v1/me/notifications", allow=allow("owner", "member"), response=NotificationsView,
           summary="Who in the household receives what, where and when")
async def get_notifications(call: Call) -> NotificationsView:
    return _notifications_view(call.state, _my_household(call))


@operation("PUT", "/v1/me/notifications", allow=allow("owner", "member"), body=Notifications,
           response=NotificationsView, errors=(422,), summary="My own delivery preferences")
async def put_notifications(call: Call) -> NotificationsView:
    b = call.body
    await call.state.ops.set_notifications(_me(call), alert_email=b.alert_email, channels=tuple(b.channels),
                                           quiet_hours=b.quiet_hours, time_zone=b.time_zone, language=b.language,
                                           muted_kinds=tuple(b.muted_kinds))
    return _notifications_view(call.state, _my_household(call))


@operation("POST", "/v1/me/devices", allow=allow("owner", "member"), body=DeviceCreate, response=DeviceView,
           status=201, summary="Register my phone for push alerts")
async def add_device(call: Call) -> DeviceView:
    device = await call.state.ops.add_device(_me(call), call.body.token)
    return DeviceView(device=device, account=_me(call))


@operation("DELETE", "/v1/me/devices/{device}", allow=allow("owner", "member"), path_params=DevicePath,
           response=Done, errors=(404,), summary="Forget a phone of the household")
async def remove_device(call: Call) -> Done:
    await call.state.ops.remove_device(_me(call), call.path.device)
    return Done()


ROUTES = [sign_up, confirm_email, resend_confirmation, sign_in, sign_out, issue_tokens, refresh_tokens,
          sign_out_everywhere, change_password, change_email, me, create_household, my_household, invite, join_household,
          leave_household, remove_member, pair_meter, unpair_meter, set_tariff, set_market_roles, grant_role,
          get_alerts, put_alerts, get_notifications, put_notifications, add_device, remove_device]


def _rejected(_request: Request, exc: Rejected) -> Response:
    return error_response(exc.status, exc.code, exc.reason, exc.field, "body" if exc.field else None)


def surface(context: SurfaceContext) -> Surface:
    settings = context.settings
    service = AccountsService(settings, extra_tables=CREDENTIAL_TABLES)
    rules = AlertRulesLog(settings)
    ops = AccountOperations(settings, service, AccountMailer(settings), rules)
    credentials = CredentialStore(settings, service.read_model.engine, token_secret(settings))
    authenticator = AccountsAuthenticator(lambda: service.state, credentials)
    state = AccountsSurface(ops, credentials, authenticator, SignInThrottle(settings.accounts), settings.accounts.secure_cookies)

    @contextlib.asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        await service.start()
        try:
            await rules.start()
            try:
                yield
            finally:
                await rules.stop()
        finally:
            await service.stop()

    return Surface(name="accounts", routes=list(ROUTES), lifespan=lifespan, state=state, authenticators=[authenticator],
                   exception_handlers={Rejected: _rejected})
