"""The accounts' state: a fold of ``accounts.events``, and nothing else.

Each entity is defined once, here, as a dataclass; its read-model table is derived from it
(:func:`table_of`: one column per field, keys and indexes from the field's metadata) and the queries
of :mod:`accounts.readmodel` return the same dataclasses, so state, row and query result cannot drift
apart. Plain dataclasses, not SQLModel objects: a fleet's 48,000 households fold in seconds (a
SQLModel table object costs about 200 us to build here, a dataclass about 1 us).

``AccountsState.apply`` is the one place that says what an event does (one handler per record
type in ``_HANDLERS``). Nothing here reads a clock or draws a random number: the same log gives
the same state. The command layer (:mod:`accounts.commands`) checks every invariant before
appending, but a command run elsewhere (``quartier accounts grant`` while the API runs) could race
another; so the fold enforces the same invariants again and *skips* an event that breaks one (an
email already in use, a meter already paired), recording it in ``skipped``: every replay skips the
same events, so rebuilds stay exact and the first writer wins.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Literal, get_type_hints

from sqlalchemy import BigInteger, Boolean, Column, String, Table
from sqlmodel import SQLModel

from quartier import events as ev

EntityKind = Literal["account", "household", "pairing", "device", "preferences", "email_token", "invite"]
EntityRef = tuple[EntityKind, str]

KEY = {"primary_key": True}
INDEXED = {"index": True}


def _split(text: str) -> list[str]:
    return [part for part in text.split(",") if part]


def _join(values: Any) -> str:
    return ",".join(sorted(set(values)))


@dataclass(slots=True, kw_only=True)
class Account:
    TABLE: ClassVar[str] = "accounts_account"
    account: str = field(metadata=KEY)
    email: str = field(metadata={"index": True, "unique": True})  # personal; lower case
    email_confirmed: bool = False
    name: str  # personal
    password_hash: str
    language: str = "fr"
    household: str | None = field(default=None, metadata=INDEXED)
    household_role: str | None = None  # owner, member
    roles: str = ""  # global roles, comma-separated, sorted: operator, support
    # Sessions and tokens issued before this moment are revoked (password change, sign out everywhere).
    credentials_ms: int = 0
    created_ms: int
    updated_ms: int

    @property
    def role_set(self) -> frozenset[str]:
        return frozenset(_split(self.roles))


@dataclass(slots=True, kw_only=True)
class Household:
    TABLE: ClassVar[str] = "accounts_household"
    household: str = field(metadata=KEY)
    name: str  # personal
    owner: str
    meter: str | None = field(default=None, metadata=INDEXED)
    zone: str | None = field(default=None, metadata=INDEXED)
    market_roles: str = ""  # comma-separated, sorted: consumer, producer
    producer_capacity_w: int | None = None  # peak output of the installation, while a producer
    tariff: str = "base"
    subscribed_kva: int | None = None
    billing_day: int = 1
    heating: str = "electric"
    created_ms: int
    updated_ms: int

    @property
    def market_role_set(self) -> frozenset[str]:
        return frozenset(_split(self.market_roles))


@dataclass(slots=True, kw_only=True)
class Pairing:
    """A meter and the household that proved possession of it (one household per meter)."""

    TABLE: ClassVar[str] = "accounts_pairing"
    meter: str = field(metadata=KEY)
    household: str = field(metadata=INDEXED)
    zone: str
    paired_by: str
    paired_ms: int


@dataclass(slots=True, kw_only=True)
class Device:
    TABLE: ClassVar[str] = "accounts_device"
    device: str = field(metadata=KEY)
    household: str = field(metadata=INDEXED)
    account: str = field(metadata=INDEXED)
    device_token: str  # personal
    added_ms: int


@dataclass(slots=True, kw_only=True)
class Preferences:
    """One member's delivery preferences."""

    TABLE: ClassVar[str] = "accounts_preferences"
    account: str = field(metadata=KEY)
    household: str = field(metadata=INDEXED)
    alert_email: str | None = None  # personal
    channels: str = "email,push"
    quiet_hours: str | None = None
    time_zone: str = "Europe/Paris"
    language: str = "fr"
    muted_kinds: str = ""
    updated_ms: int


@dataclass(slots=True, kw_only=True)
class EmailToken:
    """A confirmation link's token, by digest; spent once."""

    TABLE: ClassVar[str] = "accounts_email_token"
    token_sha256: str = field(metadata=KEY)
    account: str = field(metadata=INDEXED)
    expires_ms: int
    used_ms: int | None = None


@dataclass(slots=True, kw_only=True)
class Invite:
    TABLE: ClassVar[str] = "accounts_invite"
    code_sha256: str = field(metadata=KEY)
    household: str = field(metadata=INDEXED)
    by: str
    expires_ms: int
    used_by: str | None = None


ENTITY_TYPES: dict[EntityKind, type] = {
    "account": Account,
    "household": Household,
    "pairing": Pairing,
    "device": Device,
    "preferences": Preferences,
    "email_token": EmailToken,
    "invite": Invite,
}

_SQL_TYPES = {str: String, int: BigInteger, bool: Boolean}


def table_of(cls: type) -> Table:
    """The read-model table of an entity: a column per field (nullable when it may be None)."""
    hints = get_type_hints(cls)
    columns = []
    for f in fields(cls):
        kind = hints[f.name]
        base = next(t for t in (str, bool, int) if t is kind or t in getattr(kind, "__args__", ()))
        nullable = type(None) in getattr(kind, "__args__", ())
        columns.append(Column(f.name, _SQL_TYPES[base](), nullable=nullable, **f.metadata))
    # In SQLModel's metadata, beside every other package's tables (the data map lists them all).
    return Table(cls.TABLE, SQLModel.metadata, *columns)  # type: ignore[attr-defined]


TABLES: dict[EntityKind, Table] = {kind: table_of(cls) for kind, cls in ENTITY_TYPES.items()}


def row(entity: Any) -> dict[str, Any]:
    """A snapshot of an entity as a flat dict (what its read-model row holds)."""
    return {f.name: getattr(entity, f.name) for f in fields(entity)}


def kind_of(entity: Any) -> EntityKind:
    return next(kind for kind, cls in ENTITY_TYPES.items() if isinstance(entity, cls))


class AccountsState:
    def __init__(self) -> None:
        self.accounts: dict[str, Account] = {}
        self.households: dict[str, Household] = {}
        self.pairings: dict[str, Pairing] = {}
        self.devices: dict[str, Device] = {}
        self.preferences: dict[str, Preferences] = {}
        self.email_tokens: dict[str, EmailToken] = {}
        self.invites: dict[str, Invite] = {}
        self.by_email: dict[str, str] = {}  # lower-case email -> account
        # Indexes, so that a fleet's worth of households folds in linear time.
        self.household_members: dict[str, set[str]] = {}  # household -> its accounts
        self.account_devices: dict[str, set[str]] = {}  # account -> its devices
        #: Events the fold refused (offset, reason): a racing writer lost; every replay agrees.
        self.skipped: list[tuple[int, str]] = []
        #: The next offset of accounts.events to apply.
        self.position = 0

    # --- reading -------------------------------------------------------------------------------

    def tables(self) -> dict[EntityKind, dict[str, Any]]:
        return {
            "account": self.accounts,
            "household": self.households,
            "pairing": self.pairings,
            "device": self.devices,
            "preferences": self.preferences,
            "email_token": self.email_tokens,
            "invite": self.invites,
        }

    def entity(self, ref: EntityRef) -> Any:
        kind, key = ref
        return self.tables()[kind].get(key)

    def all_entities(self) -> Iterator[EntityRef]:
        for kind, table in self.tables().items():
            for key in table:
                yield (kind, key)

    def account_by_email(self, email: str) -> Account | None:
        account = self.by_email.get(email.lower())
        return self.accounts.get(account) if account else None

    def members(self, household: str) -> list[Account]:
        return [self.accounts[a] for a in sorted(self.household_members.get(household, ()))]

    def devices_of(self, account: str) -> list[Device]:
        return [self.devices[d] for d in sorted(self.account_devices.get(account, ()))]

    def _forget_device(self, device: str) -> None:
        known = self.devices.pop(device)
        self.account_devices[known.account].discard(device)

    # --- folding -------------------------------------------------------------------------------

    def apply(self, event: object, offset: int) -> list[EntityRef]:
        """Folds one event at ``offset``; returns the entities it touched (possibly deleted)."""
        if offset != self.position:
            raise ValueError(f"accounts.events offset {offset} applied at position {self.position}")
        self.position = offset + 1
        handler = _HANDLERS.get(type(event))
        if handler is None:
            raise TypeError(f"not an accounts event: {event!r}")
        try:
            return handler(self, event)
        except _Skip as skip:
            self.skipped.append((offset, str(skip)))
            return []


class _Skip(Exception):
    """The event breaks an invariant of the state folded so far: the fold leaves it out."""


def _account(state: AccountsState, account: str) -> Account:
    found = state.accounts.get(account)
    if found is None:
        raise _Skip(f"unknown account {account}")
    return found


def _household(state: AccountsState, household: str) -> Household:
    found = state.households.get(household)
    if found is None:
        raise _Skip(f"unknown household {household}")
    return found


def _member_of(state: AccountsState, household: str, account: str) -> Account:
    found = _account(state, account)
    if found.household != household:
        raise _Skip(f"account {account} is not a member of {household}")
    return found


def _account_created(state: AccountsState, e: ev.AccountCreated) -> list[EntityRef]:
    email = e.email.lower()
    if e.account in state.accounts:
        raise _Skip(f"account {e.account} exists")
    if email in state.by_email:
        raise _Skip("email already in use")
    state.accounts[e.account] = Account(
        account=e.account, email=email, name=e.name, password_hash=e.password_hash, language=e.language,
        created_ms=e.at_ms, updated_ms=e.at_ms,
    )
    state.by_email[email] = e.account
    return [("account", e.account)]


def _confirmation_issued(state: AccountsState, e: ev.EmailConfirmationIssued) -> list[EntityRef]:
    _account(state, e.account)
    state.email_tokens[e.token_sha256] = EmailToken(token_sha256=e.token_sha256, account=e.account, expires_ms=e.expires_ms)
    return [("email_token", e.token_sha256)]


def _email_confirmed(state: AccountsState, e: ev.EmailConfirmed) -> list[EntityRef]:
    account = _account(state, e.account)
    token = state.email_tokens.get(e.token_sha256)
    if token is None or token.account != e.account or token.used_ms is not None:
        raise _Skip("confirmation token unknown or spent")
    token.used_ms = e.at_ms
    account.email_confirmed = True
    account.updated_ms = e.at_ms
    return [("account", e.account), ("email_token", e.token_sha256)]


def _email_changed(state: AccountsState, e: ev.EmailChanged) -> list[EntityRef]:
    account = _account(state, e.account)
    email = e.email.lower()
    if state.by_email.get(email, e.account) != e.account:
        raise _Skip("email already in use")
    del state.by_email[account.email]
    state.by_email[email] = e.account
    account.email = email
    account.email_confirmed = False
    account.updated_ms = e.at_ms
    return [("account", e.account)]


def _password_changed(state: AccountsState, e: ev.PasswordChanged) -> list[EntityRef]:
    account = _account(state, e.account)
    account.password_hash = e.password_hash
    if not e.rehash:
        account.credentials_ms = e.at_ms
    account.updated_ms = e.at_ms
    return [("account", e.account)]


def _signed_out_everywhere(state: AccountsState, e: ev.SignedOutEverywhere) -> list[EntityRef]:
    account = _account(state, e.account)
    account.credentials_ms = e.at_ms
    account.updated_ms = e.at_ms
    return [("account", e.account)]


def _household_created(state: AccountsState, e: ev.HouseholdCreated) -> list[EntityRef]:
    owner = _account(state, e.owner)
    if e.household in state.households:
        raise _Skip(f"household {e.household} exists")
    if owner.household is not None:
        raise _Skip(f"account {e.owner} already belongs to a household")
    state.households[e.household] = Household(
        household=e.household, name=e.name, owner=e.owner, created_ms=e.at_ms, updated_ms=e.at_ms
    )
    return [("household", e.household)]


def _invite_issued(state: AccountsState, e: ev.InviteIssued) -> list[EntityRef]:
    _household(state, e.household)
    _member_of(state, e.household, e.by)
    state.invites[e.code_sha256] = Invite(code_sha256=e.code_sha256, household=e.household, by=e.by, expires_ms=e.expires_ms)
    return [("invite", e.code_sha256)]


def _member_joined(state: AccountsState, e: ev.MemberJoined) -> list[EntityRef]:
    household = _household(state, e.household)
    account = _account(state, e.account)
    if account.household is not None:
        raise _Skip(f"account {e.account} already belongs to a household")
    touched: list[EntityRef] = [("account", e.account)]
    if e.invite_sha256 is None:
        if e.role != "owner" or household.owner != e.account:
            raise _Skip("only the founding owner joins without an invitation")
    else:
        invite = state.invites.get(e.invite_sha256)
        if invite is None or invite.household != e.household or invite.used_by is not None:
            raise _Skip("invitation unknown or spent")
        invite.used_by = e.account
        touched.append(("invite", e.invite_sha256))
    account.household = e.household
    account.household_role = e.role
    account.updated_ms = e.at_ms
    state.household_members.setdefault(e.household, set()).add(e.account)
    return touched


def _member_left(state: AccountsState, e: ev.MemberLeft) -> list[EntityRef]:
    account = _member_of(state, e.household, e.account)
    account.household = None
    account.household_role = None
    account.updated_ms = e.at_ms
    state.household_members[e.household].discard(e.account)
    touched: list[EntityRef] = [("account", e.account)]
    # What was the member's own goes with them: their phones and their delivery preferences.
    for device in state.devices_of(e.account):
        state._forget_device(device.device)
        touched.append(("device", device.device))
    if state.preferences.pop(e.account, None) is not None:
        touched.append(("preferences", e.account))
    return touched


def _meter_paired(state: AccountsState, e: ev.MeterPaired) -> list[EntityRef]:
    household = _household(state, e.household)
    _member_of(state, e.household, e.by)
    if e.meter in state.pairings:
        raise _Skip(f"meter {e.meter} is paired to another household")
    if household.meter is not None:
        raise _Skip(f"household {e.household} already has meter {household.meter}")
    state.pairings[e.meter] = Pairing(meter=e.meter, household=e.household, zone=e.zone, paired_by=e.by, paired_ms=e.at_ms)
    household.meter = e.meter
    household.zone = e.zone
    household.updated_ms = e.at_ms
    return [("pairing", e.meter), ("household", e.household)]


def _meter_unpaired(state: AccountsState, e: ev.MeterUnpaired) -> list[EntityRef]:
    household = _household(state, e.household)
    pairing = state.pairings.get(e.meter)
    if pairing is None or pairing.household != e.household:
        raise _Skip(f"meter {e.meter} is not paired to {e.household}")
    del state.pairings[e.meter]
    household.meter = None
    household.zone = None
    household.updated_ms = e.at_ms
    return [("pairing", e.meter), ("household", e.household)]


def _role_granted(state: AccountsState, e: ev.RoleGranted) -> list[EntityRef]:
    account = _account(state, e.account)
    account.roles = _join([*account.role_set, e.role])
    account.updated_ms = e.at_ms
    return [("account", e.account)]


def _role_revoked(state: AccountsState, e: ev.RoleRevoked) -> list[EntityRef]:
    account = _account(state, e.account)
    account.roles = _join(account.role_set - {e.role})
    account.updated_ms = e.at_ms
    return [("account", e.account)]


def _market_role_granted(state: AccountsState, e: ev.MarketRoleGranted) -> list[EntityRef]:
    household = _household(state, e.household)
    household.market_roles = _join([*household.market_role_set, e.role])
    if e.role == "producer":
        # A v1 grant carries no capacity: it stands for the documented default (quartier/events.py).
        household.producer_capacity_w = e.capacity_w if e.capacity_w is not None else ev.V1_PRODUCER_CAPACITY_W
    household.updated_ms = e.at_ms
    return [("household", e.household)]


def _market_role_revoked(state: AccountsState, e: ev.MarketRoleRevoked) -> list[EntityRef]:
    household = _household(state, e.household)
    household.market_roles = _join(household.market_role_set - {e.role})
    if e.role == "producer":
        household.producer_capacity_w = None
    household.updated_ms = e.at_ms
    return [("household", e.household)]


def _device_added(state: AccountsState, e: ev.DeviceAdded) -> list[EntityRef]:
    _member_of(state, e.household, e.account)
    # The same token again (a phone that changed hands) moves to the new member.
    if e.device in state.devices:
        state._forget_device(e.device)
    state.account_devices.setdefault(e.account, set()).add(e.device)
    state.devices[e.device] = Device(
        device=e.device, household=e.household, account=e.account, device_token=e.device_token, added_ms=e.at_ms
    )
    return [("device", e.device)]


def _device_removed(state: AccountsState, e: ev.DeviceRemoved) -> list[EntityRef]:
    device = state.devices.get(e.device)
    if device is None or device.household != e.household:
        raise _Skip(f"device {e.device} is not one of {e.household}")
    state._forget_device(e.device)
    return [("device", e.device)]


def _notifications_set(state: AccountsState, e: ev.NotificationsSet) -> list[EntityRef]:
    _member_of(state, e.household, e.account)
    state.preferences[e.account] = Preferences(
        account=e.account, household=e.household, alert_email=e.alert_email.lower() if e.alert_email else None,
        channels=_join(e.channels), quiet_hours=e.quiet_hours, time_zone=e.time_zone, language=e.language,
        muted_kinds=_join(e.muted_kinds), updated_ms=e.at_ms,
    )
    return [("preferences", e.account)]


def _tariff_set(state: AccountsState, e: ev.HouseholdTariffSet) -> list[EntityRef]:
    household = _household(state, e.household)
    household.tariff = e.tariff
    household.subscribed_kva = e.subscribed_kva
    household.billing_day = e.billing_day
    household.heating = e.heating
    household.updated_ms = e.at_ms
    return [("household", e.household)]


def _household_erased(state: AccountsState, e: ev.HouseholdErased) -> list[EntityRef]:
    """privacy: the erasure saga's last step. The household and everything of it leaves the state,
    its members' accounts too (their email and name are personal data of the household's people)."""
    touched: list[EntityRef] = []
    if state.households.pop(e.household, None) is not None:
        touched.append(("household", e.household))
    members = {a.account for a in state.accounts.values() if a.household == e.household} | set(e.accounts)
    state.household_members.pop(e.household, None)
    for key in [k for k, device in state.devices.items() if device.household == e.household or device.account in members]:
        state._forget_device(key)
        touched.append(("device", key))
    for kind, table in (("pairing", state.pairings), ("invite", state.invites)):
        for key in [k for k, entity in table.items() if entity.household == e.household]:
            del table[key]
            touched.append((kind, key))  # type: ignore[arg-type]
    for key in [k for k, p in state.preferences.items() if p.household == e.household or k in members]:
        del state.preferences[key]
        touched.append(("preferences", key))
    for key in [k for k, t in state.email_tokens.items() if t.account in members]:
        del state.email_tokens[key]
        touched.append(("email_token", key))
    for account in sorted(members):
        found = state.accounts.pop(account, None)
        state.account_devices.pop(account, None)
        if found is not None:
            state.by_email.pop(found.email, None)
            touched.append(("account", account))
    return touched


_HANDLERS: dict[type, Callable[[AccountsState, Any], list[EntityRef]]] = {
    ev.AccountCreated: _account_created,
    ev.EmailConfirmationIssued: _confirmation_issued,
    ev.EmailConfirmed: _email_confirmed,
    ev.EmailChanged: _email_changed,
    ev.PasswordChanged: _password_changed,
    ev.SignedOutEverywhere: _signed_out_everywhere,
    ev.HouseholdCreated: _household_created,
    ev.InviteIssued: _invite_issued,
    ev.MemberJoined: _member_joined,
    ev.MemberLeft: _member_left,
    ev.MeterPaired: _meter_paired,
    ev.MeterUnpaired: _meter_unpaired,
    ev.RoleGranted: _role_granted,
    ev.RoleRevoked: _role_revoked,
    ev.MarketRoleGranted: _market_role_granted,
    ev.MarketRoleRevoked: _market_role_revoked,
    ev.DeviceAdded: _device_added,
    ev.DeviceRemoved: _device_removed,
    ev.NotificationsSet: _notifications_set,
    ev.HouseholdTariffSet: _tariff_set,
    # privacy
    ev.HouseholdErased: _household_erased,
}
