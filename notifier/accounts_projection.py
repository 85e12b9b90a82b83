"""The notifier's contacts as a projection of ``accounts.events``.

Who hears of a meter's alerts is decided in accounts: the household that paired the meter, each
member's phones (``device_added``) and preferences (``notifications_set``: alert email, channels,
quiet hours, time zone, language, muted kinds), and the operators. This module folds the accounts
log with the accounts' own fold (:class:`accounts.state.AccountsState`, one definition of what an
event does) and writes, for each member, the notifier's contact rows: a user whose id is the
account id, its device tokens, and one ``notifier_meter`` row per member for the household's
meter. Rebuildable by construction: at start the whole log is folded again and every account-derived
row rewritten (``rebuild``); then new events are followed as they come.

Rows registered straight into the store (``ContactStore.register``, the stages' tests) have other
user ids and are left alone. ``quartier notifier register`` appends accounts events
(:func:`registration_events`) instead of writing rows.

Tokens FCM reports unregistered go back to accounts as ``device_removed`` (reason
``unregistered``), so a rebuild does not bring a dead phone back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Iterable, Sequence

import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import Engine, delete

from quartier import events as ev
from quartier import kafka, topics
from quartier.settings import Settings

from accounts import commands
from accounts.log import PARTITION, AccountsLog, replay
from accounts.passwords import unusable_hash
from accounts.sealed import Sealing
from accounts.state import AccountsState
from notifier.contacts import DeviceToken, MeterOwner, Registration, User

log = logging.getLogger(__name__)

#: Sign-in addresses of the accounts ``quartier notifier register`` creates for a meter nobody paired.
REGISTERED_DOMAIN = "registered.quartier.invalid"
DERIVED_PREFIX = "acct_"


def touched_accounts(state: AccountsState, event: object) -> set[str]:
    """The accounts whose contact rows an event may change: its own, and every member of its household."""
    found: set[str] = set()
    if account := getattr(event, "account", None):
        found.add(account)
    if household := getattr(event, "household", None):
        found.update(a.account for a in state.members(household))
    if isinstance(event, ev.HouseholdCreated):
        found.add(event.owner)
    return found


def contact_rows(state: AccountsState, account_id: str) -> tuple[dict | None, list[dict], list[dict]]:  # type: ignore[type-arg]
    """What the notifier holds for one account, as rows of ``notifier_user``, ``notifier_device`` and
    ``notifier_meter``: nothing unless it is a member of a household or an operator."""
    person = state.accounts.get(account_id)
    if person is None:
        return None, [], []
    operator = "operator" in person.role_set
    if person.household is None and not operator:
        return None, [], []
    prefs = state.preferences.get(account_id)
    user = {
        "id": account_id,
        # A member gets email alerts at the address they gave for alerts; an operator without
        # preferences at their sign-in address.
        "email": prefs.alert_email if prefs else (person.email if operator else None),
        "language": prefs.language if prefs else person.language,
        "time_zone": prefs.time_zone if prefs else "Europe/Paris",
        "quiet_hours": prefs.quiet_hours if prefs else None,
        "channels": prefs.channels if prefs else "email,push",
        "muted_kinds": prefs.muted_kinds if prefs else "",
        "operator": operator,
        "updated_ms": person.updated_ms,
    }
    devices = [{"token": d.device_token, "user_id": account_id, "registered_ms": d.added_ms} for d in state.devices_of(account_id)]
    household = state.households.get(person.household) if person.household else None
    owners = [{"meter": household.meter, "user_id": account_id}] if household is not None and household.meter else []
    return user, devices, owners


_TABLES = ((User, User.id), (DeviceToken, DeviceToken.user_id), (MeterOwner, MeterOwner.user_id))
_CHUNK = 10_000  # ids per IN (...): SQLite allows 32,766 bound parameters


def write_contacts(engine: Engine, state: AccountsState, accounts: Iterable[str] | None = None) -> None:
    """Rewrites the contact rows of ``accounts`` (every account-derived row when None), in one transaction.

    Plain inserts of the rows, not ORM objects: a fleet's 48,000 households are rewritten at every start."""
    wanted = sorted(state.accounts) if accounts is None else sorted(set(accounts))
    users, devices, owners = [], [], []
    for account_id in wanted:
        user, its_devices, its_owners = contact_rows(state, account_id)
        if user is not None:
            users.append(user)
            devices += its_devices
            owners += its_owners
    with engine.begin() as connection:
        for table, column in _TABLES:
            if accounts is None:
                connection.execute(delete(table).where(column.startswith(DERIVED_PREFIX)))  # type: ignore[attr-defined]
            else:
                for start in range(0, len(wanted), _CHUNK):
                    connection.execute(delete(table).where(column.in_(wanted[start:start + _CHUNK])))  # type: ignore[attr-defined]
        tokens = [d["token"] for d in devices]
        for start in range(0, len(tokens), _CHUNK):
            # A token is one phone: registered straight into the store under another user, it moves.
            connection.execute(delete(DeviceToken).where(DeviceToken.token.in_(tokens[start:start + _CHUNK])))  # type: ignore[attr-defined]
        for table, rows in ((User, users), (DeviceToken, devices), (MeterOwner, owners)):
            if rows:
                connection.execute(table.__table__.insert(), rows)  # type: ignore[attr-defined]


class ContactsProjection:
    def __init__(self, settings: Settings, engine: Engine, follow_interval_s: float = 0.5) -> None:
        self.settings = settings
        self.engine = engine
        self.state = AccountsState()
        self.follow_interval_s = follow_interval_s
        self._task: asyncio.Task[None] | None = None
        self._log: AccountsLog | None = None
        # Personal fields travel sealed (accounts/sealed.py): opened here with the households' keys.
        self._sealing: Sealing | None = None

    @property
    def sealing(self) -> Sealing:
        if self._sealing is None:
            self._sealing = Sealing.open_store(self.settings)
        return self._sealing

    async def rebuild(self) -> int:
        """Folds the whole accounts log again and rewrites every account-derived contact; returns the events folded."""
        await kafka.ensure_topics(self.settings, [topics.ACCOUNTS_EVENTS])
        state = AccountsState()
        async for entry in replay(self.settings, sealing=self.sealing):
            state.apply(entry.event, entry.offset)
        self.state = state
        await asyncio.to_thread(write_contacts, self.engine, state)
        return state.position

    async def start(self) -> None:
        await self.rebuild()
        self._task = asyncio.create_task(self._follow(), name="notifier-accounts-projection")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._log is not None:
            await self._log.stop()
            self._log = None

    async def _follow(self) -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.kafka.bootstrap, enable_auto_commit=False)
        await consumer.start()
        tp = TopicPartition(self.settings.topic(topics.ACCOUNTS_EVENTS.name), PARTITION)
        decoder = ev.decoder(ev.AccountsEvent)
        try:
            consumer.assign([tp])
            consumer.seek(tp, self.state.position)
            while True:
                batch = await consumer.getmany(tp, timeout_ms=int(self.follow_interval_s * 1000))
                touched: set[str] = set()
                for record in batch.get(tp, []):
                    if record.offset != self.state.position:
                        continue
                    event = self.sealing.open(decoder.decode(record.value))  # type: ignore[arg-type]
                    before = touched_accounts(self.state, event)
                    self.state.apply(event, record.offset)
                    touched |= before | touched_accounts(self.state, event)
                if touched:
                    await asyncio.to_thread(write_contacts, self.engine, self.state, touched)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("following accounts.events failed; contacts stay as they were until the next start")
        finally:
            await consumer.stop()

    async def unregistered(self, tokens: Sequence[str]) -> None:
        """FCM said these tokens are gone: the accounts devices holding them are removed, on the log."""
        now = int(time.time() * 1000)
        events = [e for token in dict.fromkeys(tokens) for e in commands.device_unregistered(self.state, token, now)]
        if not events:
            return
        if self._log is None:
            self._log = AccountsLog(self.settings, self.sealing)
            await self._log.start()
        await self._log.append([(commands.key_of(self.state, e), e) for e in events])


# --- quartier notifier register ----------------------------------------------------------------


def _new(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


def registration_events(
    state: AccountsState, registrations: Sequence[Registration], now_ms: int, zone: str = "unassigned"
) -> list[tuple[str, msgspec.Struct]]:
    """The accounts events that give each registration's meter (or operator) these contacts.

    A meter already paired gets the devices and preferences on its household's owner. A meter nobody
    paired gets a household of its own, owned by an account that signs in nowhere (address
    ``meter-<meter>@registered.quartier.invalid``, a random password), and is paired to it in
    ``zone``: the server's operator vouches for it, as for ``quartier accounts grant``. ``state`` is
    folded forward as events are made, so later registrations see earlier ones; each event comes
    with its record key, as the state stood before it.
    """
    made: list[tuple[str, msgspec.Struct]] = []

    def emit(*events: msgspec.Struct) -> None:
        for event in events:
            made.append((commands.key_of(state, event), event))
            state.apply(event, state.position)

    for r in registrations:
        if r.meter is not None:
            pairing = state.pairings.get(r.meter)
            if pairing is not None:
                account = state.households[pairing.household].owner
            else:
                email = f"meter-{r.meter}@{REGISTERED_DOMAIN}"
                person = state.account_by_email(email)
                account = person.account if person else _new("acct")
                if person is None:
                    emit(ev.AccountCreated(account=account, email=email, name=f"Meter {r.meter}",
                                           password_hash=unusable_hash(), at_ms=now_ms))
                household = state.accounts[account].household
                if household is None:
                    household = _new("hh")
                    emit(ev.HouseholdCreated(household=household, owner=account, name=f"Meter {r.meter}", at_ms=now_ms),
                         ev.MemberJoined(household=household, account=account, role="owner", at_ms=now_ms))
                emit(ev.MeterPaired(household=household, meter=r.meter, zone=zone, by=account, at_ms=now_ms))
        else:
            # No meter: an operator's (or building manager's) own contact, by the address given.
            if not r.email:
                raise commands.invalid("email", "a registration without a meter needs the email it goes to")
            person = state.account_by_email(r.email)
            account = person.account if person else _new("acct")
            if person is None:
                emit(ev.AccountCreated(account=account, email=r.email.lower(), name=r.user or r.email,
                                       password_hash=unusable_hash(), at_ms=now_ms))
        person = state.accounts[account]
        if r.operator is not None and r.operator != ("operator" in person.role_set):
            record = ev.RoleGranted if r.operator else ev.RoleRevoked
            emit(record(account=account, role="operator", by="cli", at_ms=now_ms))
        if person.household is None:
            continue
        for token in r.tokens:
            emit(*commands.add_device(state, account, device_token=token, now_ms=now_ms))
        given = {k: v for k, v in r.model_dump().items() if v is not None}
        if set(given) & {"email", "language", "time_zone", "quiet_hours", "channels", "muted_kinds"}:
            prefs = state.preferences.get(account)
            emit(*commands.set_notifications(
                state, account,
                alert_email=r.email if r.email is not None else (prefs.alert_email if prefs else None),
                channels=tuple(r.channels) if r.channels is not None else tuple((prefs.channels if prefs else "email,push").split(",")),
                quiet_hours_text=(r.quiet_hours or None) if r.quiet_hours is not None else (prefs.quiet_hours if prefs else None),
                time_zone_name=r.time_zone or (prefs.time_zone if prefs else "Europe/Paris"),
                language=r.language or (prefs.language if prefs else person.language),
                muted_kinds=tuple(r.muted_kinds) if r.muted_kinds is not None else tuple(k for k in (prefs.muted_kinds if prefs else "").split(",") if k),
                now_ms=now_ms,
            ))
    return made


async def register(settings: Settings, registrations: Sequence[Registration], zone: str = "unassigned") -> int:
    """Appends the registrations' accounts events, all in one batch (all or none); returns how many."""
    accounts_log = AccountsLog(settings)
    await accounts_log.start()
    try:
        state = AccountsState()
        async for entry in replay(settings):
            state.apply(entry.event, entry.offset)
        keyed = await asyncio.to_thread(registration_events, state, registrations, int(time.time() * 1000), zone)
        if keyed:
            await accounts_log.append(keyed)
        return len(keyed)
    finally:
        await accounts_log.stop()
