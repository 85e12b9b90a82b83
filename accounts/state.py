"""The accounts' state: a fold of ``accounts.events``, and nothing else.

Each entity is defined once, here, as a SQLModel table: the fold keeps instances in memory (never
attached to a session), and the read models are their rows (:mod:`accounts.readmodel` writes
``row(entity)``), so state, row and query result cannot drift apart.

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
from typing import Any, Literal

from sqlmodel import Field, SQLModel

from quartier import events as ev

EntityKind = Literal["account", "household", "pairing", "device", "preferences", "email_token", "invite"]
EntityRef = tuple[EntityKind, str]


def _split(text: str) -> list[str]:
    return [part for part in text.split(",") if part]


def _join(values: Any) -> str:
    return ",".join(sorted(set(values)))


class Account(SQLModel, table=True):
    __tablename__ = "accounts_account"
    account: str = Field(primary_key=True)
    email: str = Field(index=True, unique=True)  # personal; lower case
    email_confirmed: bool = False
    name: str  # personal
    password_hash: str
    language: str = "fr"
    household: str | None = Field(default=None, index=True)
    household_role: str | None = None  # owner, member
    roles: str = ""  # global roles, comma-separated, sorted: operator, support
    # Sessions and tokens issued before this moment are revoked (password change, sign out everywhere).
    credentials_ms: int = 0
    created_ms: int
    updated_ms: int

    @property
    def role_set(self) -> frozenset[str]:
        return frozenset(_split(self.roles))


class Household(SQLModel, table=True):
    __tablename__ = "accounts_household"
    household: str = Field(primary_key=True)
    name: str  # personal
    owner: str
    meter: str | None = Field(default=None, index=True)
    zone: str | None = Field(default=None, index=True)
    market_roles: str = ""  # comma-separated, sorted: consumer, producer
    tariff: str = "base"
    subscribed_kva: int | None = None
    billing_day: int = 1
    heating: str = "electric"
    created_ms: int
    updated_ms: int

    @property
    def market_role_set(self) -> frozenset[str]:
        return frozenset(_split(self.market_roles))


class Pairing(SQLModel, table=True):
    """A meter and the household that proved possession of it (one household per meter)."""

    __tablename__ = "accounts_pairing"
    meter: str = Field(primary_key=True)
    household: str = Field(index=True)
    zone: str
    paired_by: str
    paired_ms: int


class Device(SQLModel, table=True):
    __tablename__ = "accounts_device"
    device: str = Field(primary_key=True)
    household: str = Field(index=True)
    account: str = Field(index=True)
    device_token: str  # personal
    added_ms: int


class Preferences(SQLModel, table=True):
    """One member's delivery preferences."""

    __tablename__ = "accounts_preferences"
    account: str = Field(primary_key=True)
    household: str = Field(index=True)
    alert_email: str | None = None  # personal
    channels: str = "email,push"
    quiet_hours: str | None = None
    time_zone: str = "Europe/Paris"
    language: str = "fr"
    muted_kinds: str = ""
    updated_ms: int


class EmailToken(SQLModel, table=True):
    """A confirmation link's token, by digest; spent once."""

    __tablename__ = "accounts_email_token"
    token_sha256: str = Field(primary_key=True)
    account: str = Field(index=True)
    expires_ms: int
    used_ms: int | None = None


class Invite(SQLModel, table=True):
    __tablename__ = "accounts_invite"
    code_sha256: str = Field(primary_key=True)
    household: str = Field(index=True)
    by: str
    expires_ms: int
    used_by: str | None = None


ENTITY_TYPES: dict[EntityKind, type[SQLModel]] = {
    "account": Account,
    "household": Household,
    "pairing": Pairing,
    "device": Device,
    "preferences": Preferences,
    "email_token": EmailToken,
    "invite": Invite,
}


def row(entity: SQLModel) -> dict[str, Any]:
    """A snapshot of an entity as a flat dict (what its read-model row holds)."""
    return {column.name: getattr(entity, column.name) for column in entity.__table__.columns}  # type: ignore[attr-defined]


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

    def entity(self, ref: EntityRef) -> SQLModel | None:
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
        return sorted((a for a in self.accounts.values() if a.household == household), key=lambda a: a.account)

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
    return touched


def _member_left(state: AccountsState, e: ev.MemberLeft) -> list[EntityRef]:
    account = _member_of(state, e.household, e.account)
    account.household = None
    account.household_role = None
    account.updated_ms = e.at_ms
    touched: list[EntityRef] = [("account", e.account)]
    # What was the member's own goes with them: their phones and their delivery preferences.
    for device in [d for d in state.devices.values() if d.account == e.account]:
        del state.devices[device.device]
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
    household.updated_ms = e.at_ms
    return [("household", e.household)]


def _market_role_revoked(state: AccountsState, e: ev.MarketRoleRevoked) -> list[EntityRef]:
    household = _household(state, e.household)
    household.market_roles = _join(household.market_role_set - {e.role})
    household.updated_ms = e.at_ms
    return [("household", e.household)]


def _device_added(state: AccountsState, e: ev.DeviceAdded) -> list[EntityRef]:
    _member_of(state, e.household, e.account)
    # The same token again (a phone that changed hands) moves to the new member.
    state.devices[e.device] = Device(
        device=e.device, household=e.household, account=e.account, device_token=e.device_token, added_ms=e.at_ms
    )
    return [("device", e.device)]


def _device_removed(state: AccountsState, e: ev.DeviceRemoved) -> list[EntityRef]:
    device = state.devices.get(e.device)
    if device is None or device.household != e.household:
        raise _Skip(f"device {e.device} is not one of {e.household}")
    del state.devices[e.device]
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
    for kind, table in (("pairing", state.pairings), ("device", state.devices), ("invite", state.invites)):
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
