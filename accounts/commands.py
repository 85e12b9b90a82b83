"""The command layer: a request is checked against the state and becomes events.

Each function takes the state, who asks, what they ask and the time, and returns the events to
append, or raises :class:`Rejected` naming the field and the reason. Nothing here appends, reads a
clock, hashes a password or draws a random number: the caller (:mod:`accounts.service`) passes in
the ids, digests and hashes it made, appends the events and folds them in, one command at a time,
so the state a command was checked against is the state its events apply to.
"""

from __future__ import annotations

import datetime
import hashlib
from email.errors import HeaderParseError
from email.headerregistry import Address
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from quartier import events as ev
from quartier import pairing
from quartier.rejected import Rejected, conflict, forbidden, invalid, not_found  # noqa: F401  (commands raise them)

from accounts.state import Account, AccountsState, Household


def digest(secret: str) -> str:
    """SHA-256 of a high-entropy secret (token, invitation code): what is kept instead of it."""
    return hashlib.sha256(secret.encode()).hexdigest()


def device_id(token: str) -> str:
    return "dev_" + hashlib.sha256(token.encode()).hexdigest()[:16]


def key_of(state: AccountsState, event: msgspec.Struct) -> str:
    """The record key: the household the event belongs to, else its account's household, else the account."""
    household = getattr(event, "household", None)
    if household:
        return household
    account_id = getattr(event, "account", None)
    account = state.accounts.get(account_id) if account_id else None
    if account is not None and account.household:
        return account.household
    if account_id:
        return account_id
    raise ValueError(f"no key for {event!r}")


# --- field checks --------------------------------------------------------------------------------


def email_address(value: str, field: str = "email") -> str:
    """The address in its canonical (lower-case) form, or :class:`Rejected` naming ``field``."""
    try:
        address = Address(addr_spec=value.strip())
    except (ValueError, IndexError, HeaderParseError) as exc:
        raise invalid(field, f"not an email address: {exc}") from None
    if not address.username or "." not in address.domain or not address.addr_spec.isascii():
        raise invalid(field, "not an email address (ASCII user@domain.tld)")
    return address.addr_spec.lower()


def quiet_hours(value: str | None, field: str = "quiet_hours") -> str | None:
    if value is None or value == "":
        return None
    try:
        start, end = (datetime.time.fromisoformat(part.strip()) for part in value.split("-"))
    except ValueError:
        raise invalid(field, f"quiet hours look like 22:00-07:00, not {value!r}") from None
    if start == end:
        raise invalid(field, "quiet hours start and end at the same time")
    return f"{start:%H:%M}-{end:%H:%M}"


def time_zone(value: str, field: str = "time_zone") -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise invalid(field, f"unknown time zone {value!r} (an IANA name such as Europe/Paris)") from None
    return value


def _account(state: AccountsState, account: str) -> Account:
    found = state.accounts.get(account)
    if found is None:
        raise Rejected(401, "unauthenticated", "this account does not exist")
    return found


def _household_of(state: AccountsState, account: str) -> tuple[Account, Household]:
    person = _account(state, account)
    if person.household is None:
        raise conflict(None, "you do not belong to a household yet: create one or join one")
    return person, state.households[person.household]


def _owner(state: AccountsState, account: str) -> tuple[Account, Household]:
    person, household = _household_of(state, account)
    if person.household_role != "owner":
        raise forbidden("only the household's owner may do this")
    return person, household


def _operator(state: AccountsState, actor: str) -> None:
    if actor == "cli":
        return
    if "operator" not in _account(state, actor).role_set:
        raise forbidden("only an operator may do this")


# --- people ----------------------------------------------------------------------------------------


def sign_up(
    state: AccountsState, *, account: str, email: str, name: str, password_hash: str, language: str,
    token_sha256: str, now_ms: int, ttl_ms: int,
) -> list[msgspec.Struct]:
    """A new account and its confirmation link; no events when the address is already in use (the
    caller mails its owner instead, and answers alike, so sign-up does not reveal who has an account)."""
    email = email_address(email)
    if state.account_by_email(email) is not None:
        return []
    return [
        ev.AccountCreated(account=account, email=email, name=name, password_hash=password_hash, language=language, at_ms=now_ms),  # type: ignore[arg-type]
        ev.EmailConfirmationIssued(account=account, token_sha256=token_sha256, expires_ms=now_ms + ttl_ms, at_ms=now_ms),
    ]


def resend_confirmation(state: AccountsState, account: str, *, token_sha256: str, now_ms: int, ttl_ms: int) -> list[msgspec.Struct]:
    person = _account(state, account)
    if person.email_confirmed:
        raise conflict("email", "this address is already confirmed")
    return [ev.EmailConfirmationIssued(account=account, token_sha256=token_sha256, expires_ms=now_ms + ttl_ms, at_ms=now_ms)]


def confirm_email(state: AccountsState, token_sha256: str, now_ms: int) -> list[msgspec.Struct]:
    token = state.email_tokens.get(token_sha256)
    if token is None or token.used_ms is not None:
        raise Rejected(400, "invalid_token", "this confirmation link is unknown or was already used", "token")
    if now_ms >= token.expires_ms:
        raise Rejected(400, "invalid_token", "this confirmation link has expired: ask for a new one", "token")
    return [ev.EmailConfirmed(account=token.account, token_sha256=token_sha256, at_ms=now_ms)]


def change_email(state: AccountsState, account: str, email: str, *, token_sha256: str, now_ms: int, ttl_ms: int) -> list[msgspec.Struct]:
    person = _account(state, account)
    email = email_address(email)
    if email == person.email:
        raise conflict("email", "this is already your address")
    if state.account_by_email(email) is not None:
        raise conflict("email", "this address belongs to another account")
    return [
        ev.EmailChanged(account=account, email=email, at_ms=now_ms),
        ev.EmailConfirmationIssued(account=account, token_sha256=token_sha256, expires_ms=now_ms + ttl_ms, at_ms=now_ms),
    ]


def change_password(state: AccountsState, account: str, password_hash: str, now_ms: int, *, rehash: bool = False) -> list[msgspec.Struct]:
    _account(state, account)
    return [ev.PasswordChanged(account=account, password_hash=password_hash, rehash=rehash, at_ms=now_ms)]


def sign_out_everywhere(state: AccountsState, account: str, now_ms: int) -> list[msgspec.Struct]:
    _account(state, account)
    return [ev.SignedOutEverywhere(account=account, at_ms=now_ms)]


# --- households ------------------------------------------------------------------------------------


def create_household(state: AccountsState, account: str, *, household: str, name: str, now_ms: int) -> list[msgspec.Struct]:
    person = _account(state, account)
    if person.household is not None:
        raise conflict(None, "you already belong to a household: leave it first")
    return [
        ev.HouseholdCreated(household=household, owner=account, name=name, at_ms=now_ms),
        ev.MemberJoined(household=household, account=account, role="owner", at_ms=now_ms),
    ]


def issue_invite(state: AccountsState, account: str, *, code_sha256: str, now_ms: int, ttl_ms: int) -> list[msgspec.Struct]:
    _, household = _owner(state, account)
    return [ev.InviteIssued(household=household.household, by=account, code_sha256=code_sha256, expires_ms=now_ms + ttl_ms, at_ms=now_ms)]


def join_household(state: AccountsState, account: str, *, code_sha256: str, now_ms: int) -> list[msgspec.Struct]:
    person = _account(state, account)
    if person.household is not None:
        raise conflict(None, "you already belong to a household: leave it first")
    invite = state.invites.get(code_sha256)
    if invite is None or invite.used_by is not None or now_ms >= invite.expires_ms:
        raise invalid("code", "this invitation is unknown, expired or already used")
    return [ev.MemberJoined(household=invite.household, account=account, role="member", invite_sha256=code_sha256, at_ms=now_ms)]


def leave_household(state: AccountsState, account: str, now_ms: int) -> list[msgspec.Struct]:
    person, household = _household_of(state, account)
    if person.household_role == "owner" and len(state.members(household.household)) > 1:
        raise conflict(None, "the owner leaves last: remove the other members first")
    return [ev.MemberLeft(household=household.household, account=account, by=account, at_ms=now_ms)]


def remove_member(state: AccountsState, owner: str, member: str, now_ms: int) -> list[msgspec.Struct]:
    _, household = _owner(state, owner)
    target = state.accounts.get(member)
    if target is None or target.household != household.household:
        raise not_found("account", f"{member} is not a member of your household")
    if member == owner:
        raise conflict("account", "the owner leaves with POST /v1/me/household/leave")
    return [ev.MemberLeft(household=household.household, account=member, by=owner, at_ms=now_ms)]


def set_tariff(state: AccountsState, account: str, *, tariff: str, subscribed_kva: int, billing_day: int,
               now_ms: int, heating: str = "electric") -> list[msgspec.Struct]:
    _, household = _owner(state, account)
    return [ev.HouseholdTariffSet(
        household=household.household, tariff=tariff, subscribed_kva=subscribed_kva, billing_day=billing_day,  # type: ignore[arg-type]
        heating=heating, at_ms=now_ms,  # type: ignore[arg-type]
    )]


# --- the meter -------------------------------------------------------------------------------------


def pair_meter(state: AccountsState, account: str, *, meter: str, zone: str, code: str, secret: str, now_ms: int) -> list[msgspec.Struct]:
    """Pairs the household's meter; the code proves possession of the meter in that zone."""
    _, household = _household_of(state, account)
    if not pairing.check(meter, zone, code, secret):
        raise invalid("code", "this pairing code is not the one this meter's module shows for this zone")
    paired = state.pairings.get(meter)
    if paired is not None:
        if paired.household == household.household:
            raise conflict("meter", "this meter is already paired to your household")
        raise conflict("meter", "this meter is paired to another household: it must be unpaired there first")
    if household.meter is not None:
        raise conflict("meter", f"your household already has meter {household.meter}: unpair it first")
    return [ev.MeterPaired(household=household.household, meter=meter, zone=zone, by=account, at_ms=now_ms)]


def unpair_meter(state: AccountsState, actor: str, *, household: str | None = None, now_ms: int) -> list[msgspec.Struct]:
    """The owner unpairs their meter; an operator (or the CLI) may unpair any household's."""
    if household is None:
        _, found = _owner(state, actor)
    else:
        _operator(state, actor)
        found = state.households.get(household)
        if found is None:
            raise not_found("household", f"no household {household}")
    if found.meter is None:
        raise conflict("meter", "no meter is paired to this household")
    return [ev.MeterUnpaired(household=found.household, meter=found.meter, by=actor, at_ms=now_ms)]


# --- roles -------------------------------------------------------------------------------------------


def grant_role(state: AccountsState, actor: str, *, email: str, role: str, now_ms: int, revoke: bool = False) -> list[msgspec.Struct]:
    """Grants (or revokes) a global role; only an operator, or ``quartier accounts grant`` ("cli")."""
    _operator(state, actor)
    target = state.account_by_email(email_address(email))
    if target is None:
        raise not_found("email", "no account has this address")
    if role not in ("operator", "support"):
        raise invalid("role", f"{role!r} is not a role (operator, support)")
    has = role in target.role_set
    if has != revoke:
        return []  # already so: nothing to append
    record = ev.RoleRevoked if revoke else ev.RoleGranted
    return [record(account=target.account, role=role, by=actor, at_ms=now_ms)]  # type: ignore[arg-type]


def set_market_role(state: AccountsState, actor: str, *, role: str, enabled: bool, household: str | None = None,
                    capacity_w: int | None = None, now_ms: int) -> list[msgspec.Struct]:
    """The owner opts the household in or out of its zone's market; an operator may for any household.

    A producer gives the peak output of its installation (``capacity_w``, W): the market caps what it
    may offer in a slot by it. Granting the producer role again with another capacity restates it."""
    if household is None:
        _, found = _owner(state, actor)
    else:
        _operator(state, actor)
        found = state.households.get(household)
        if found is None:
            raise not_found("household", f"no household {household}")
    if role not in ("producer", "consumer"):
        raise invalid("role", f"{role!r} is not a market role (producer, consumer)")
    if enabled and found.meter is None:
        raise conflict("role", "pair the household's meter first: the market settles on its readings")
    if enabled and role == "producer":
        if capacity_w is None or capacity_w <= 0:
            raise invalid("producer_capacity_w", "a producer gives the peak output of its installation (W), above 0")
        if role in found.market_role_set and found.producer_capacity_w == capacity_w:
            return []
        return [ev.MarketRoleGranted(household=found.household, role="producer", capacity_w=capacity_w, by=actor,  # type: ignore[arg-type]
                                     at_ms=now_ms)]
    if (role in found.market_role_set) == enabled:
        return []
    record = ev.MarketRoleGranted if enabled else ev.MarketRoleRevoked
    return [record(household=found.household, role=role, by=actor, at_ms=now_ms)]  # type: ignore[arg-type]


# --- delivery preferences --------------------------------------------------------------------------


def add_device(state: AccountsState, account: str, *, device_token: str, now_ms: int) -> list[msgspec.Struct]:
    _, household = _household_of(state, account)
    device = device_id(device_token)
    known = state.devices.get(device)
    if known is not None and known.account == account:
        return []
    return [ev.DeviceAdded(household=household.household, account=account, device=device, device_token=device_token, at_ms=now_ms)]


def remove_device(state: AccountsState, account: str, *, device: str, now_ms: int) -> list[msgspec.Struct]:
    _, household = _household_of(state, account)
    known = state.devices.get(device)
    if known is None or known.household != household.household:
        raise not_found("device", "no such device in your household")
    return [ev.DeviceRemoved(household=household.household, device=device, reason="member", at_ms=now_ms)]


def device_unregistered(state: AccountsState, device_token: str, now_ms: int) -> list[msgspec.Struct]:
    """FCM said the token is gone: the device leaves the household it was in."""
    known = state.devices.get(device_id(device_token))
    if known is None:
        return []
    return [ev.DeviceRemoved(household=known.household, device=known.device, reason="unregistered", at_ms=now_ms)]


def set_notifications(
    state: AccountsState, account: str, *, alert_email: str | None, channels: tuple[str, ...],
    quiet_hours_text: str | None, time_zone_name: str, language: str, muted_kinds: tuple[str, ...], now_ms: int,
) -> list[msgspec.Struct]:
    _, household = _household_of(state, account)
    return [ev.NotificationsSet(
        household=household.household, account=account,
        alert_email=email_address(alert_email, "alert_email") if alert_email else None,
        channels=tuple(sorted(set(channels))), quiet_hours=quiet_hours(quiet_hours_text),  # type: ignore[arg-type]
        time_zone=time_zone(time_zone_name), language=language, muted_kinds=tuple(sorted(set(muted_kinds))),  # type: ignore[arg-type]
        at_ms=now_ms,
    )]
