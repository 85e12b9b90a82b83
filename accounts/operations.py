"""What a person (or the server's command line) can do with accounts, as the HTTP routes and CLI call it.

Each operation makes what the pure command needs and must not make itself (ids, random tokens and
their digests, argon2 hashes: in a thread, they take tens of milliseconds), runs the command through
the service, and does the side effect that follows (the confirmation mail).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass

from quartier import events as ev
from quartier.settings import Settings

from accounts import commands, passwords
from accounts.commands import Rejected, digest
from accounts.alert_rules import AlertRulesLog, rules_from_request
from accounts.mail import AccountMailer
from accounts.service import AccountsService
from accounts.state import Account

log = logging.getLogger(__name__)


def new_account_id() -> str:
    return f"acct_{secrets.token_hex(8)}"


def new_household_id() -> str:
    return f"hh_{secrets.token_hex(8)}"


def new_secret() -> str:
    """A single-use secret for a link or a code: 256 bits, URL-safe."""
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Invitation:
    code: str
    expires_ms: int


class AccountOperations:
    def __init__(self, settings: Settings, service: AccountsService, mailer: AccountMailer | None = None,
                 rules: AlertRulesLog | None = None) -> None:
        self.settings = settings
        self.service = service
        self.mailer = mailer or AccountMailer(settings)
        self.rules = rules

    @property
    def state(self):  # noqa: ANN201 - the live fold, read-only for callers
        return self.service.state

    # --- people --------------------------------------------------------------------------------

    async def sign_up(self, *, email: str, name: str, password: str, language: str = "fr") -> None:
        """Creates the account and mails its confirmation link; an address already in use gets a
        mail saying so instead, and the caller answers alike in both cases."""
        if reason := passwords.weakness(password):
            raise commands.invalid("password", f"a password needs {reason}")
        email = commands.email_address(email)
        password_hash = await asyncio.to_thread(passwords.hash_password, password)
        token = new_secret()
        ttl_ms = self.settings.accounts.confirmation_ttl_s * 1000
        events = await self.service.execute(lambda state, now: commands.sign_up(
            state, account=new_account_id(), email=email, name=name, password_hash=password_hash,
            language=language, token_sha256=digest(token), now_ms=now, ttl_ms=ttl_ms,
        ))
        if events:
            await self.mailer.confirmation(email, name, language, token)
        else:
            existing = self.state.account_by_email(email)
            await self.mailer.already_registered(email, existing.language if existing else language)

    async def confirm(self, token: str) -> str:
        """Spends a confirmation token; returns the account it confirmed."""
        [confirmed] = await self.service.execute(lambda state, now: commands.confirm_email(state, digest(token), now))
        return confirmed.account  # type: ignore[attr-defined]

    async def resend_confirmation(self, account: str) -> None:
        token = new_secret()
        ttl_ms = self.settings.accounts.confirmation_ttl_s * 1000
        await self.service.execute(lambda state, now: commands.resend_confirmation(
            state, account, token_sha256=digest(token), now_ms=now, ttl_ms=ttl_ms))
        person = self.state.accounts[account]
        await self.mailer.confirmation(person.email, person.name, person.language, token)

    async def check_password(self, email: str, password: str) -> Account | None:
        """The account if the password is right; None otherwise, after the same work either way."""
        try:
            email = commands.email_address(email)
        except Rejected:
            email = ""
        person = self.state.account_by_email(email) if email else None
        ok = await asyncio.to_thread(passwords.verify, person.password_hash if person else None, password)
        if not ok or person is None:
            return None
        if passwords.needs_rehash(person.password_hash):
            fresh = await asyncio.to_thread(passwords.hash_password, password)
            await self.service.execute(lambda state, now: commands.change_password(state, person.account, fresh, now, rehash=True))
        return person

    async def change_password(self, account: str, current: str, new: str) -> None:
        person = self.state.accounts.get(account)
        if person is None or not await asyncio.to_thread(passwords.verify, person.password_hash, current):
            raise commands.invalid("current_password", "this is not your current password")
        if reason := passwords.weakness(new):
            raise commands.invalid("new_password", f"a password needs {reason}")
        fresh = await asyncio.to_thread(passwords.hash_password, new)
        await self.service.execute(lambda state, now: commands.change_password(state, account, fresh, now))

    async def sign_out_everywhere(self, account: str) -> None:
        await self.service.execute(lambda state, now: commands.sign_out_everywhere(state, account, now))

    # --- households ----------------------------------------------------------------------------

    async def create_household(self, account: str, name: str) -> str:
        household = new_household_id()
        await self.service.execute(lambda state, now: commands.create_household(state, account, household=household, name=name, now_ms=now))
        return household

    async def invite(self, account: str) -> Invitation:
        code = new_secret()
        ttl_ms = self.settings.accounts.invite_ttl_s * 1000
        [issued] = await self.service.execute(lambda state, now: commands.issue_invite(
            state, account, code_sha256=digest(code), now_ms=now, ttl_ms=ttl_ms))
        return Invitation(code, issued.expires_ms)  # type: ignore[attr-defined]

    async def join(self, account: str, code: str) -> str:
        [joined] = await self.service.execute(lambda state, now: commands.join_household(state, account, code_sha256=digest(code.strip()), now_ms=now))
        return joined.household  # type: ignore[attr-defined]

    async def pair(self, account: str, *, meter: str, zone: str, code: str) -> None:
        secret = self.settings.accounts.pairing_secret
        await self.service.execute(lambda state, now: commands.pair_meter(state, account, meter=meter, zone=zone, code=code, secret=secret, now_ms=now))

    async def grant(self, actor: str, email: str, role: str, *, revoke: bool = False) -> bool:
        """Grants (or revokes) a global role; False when the account already had it so."""
        return bool(await self.service.execute(lambda state, now: commands.grant_role(state, actor, email=email, role=role, now_ms=now, revoke=revoke)))

    async def unpair(self, actor: str, household: str | None = None) -> None:
        await self.service.execute(lambda state, now: commands.unpair_meter(state, actor, household=household, now_ms=now))

    async def leave(self, account: str) -> None:
        await self.service.execute(lambda state, now: commands.leave_household(state, account, now))

    async def remove_member(self, owner: str, member: str) -> None:
        await self.service.execute(lambda state, now: commands.remove_member(state, owner, member, now))

    async def set_tariff(self, account: str, *, tariff: str, subscribed_kva: int, billing_day: int, heating: str = "electric") -> None:
        await self.service.execute(lambda state, now: commands.set_tariff(
            state, account, tariff=tariff, subscribed_kva=subscribed_kva, billing_day=billing_day, heating=heating, now_ms=now))

    async def change_email(self, account: str, email: str) -> None:
        """A new sign-in address, unconfirmed until the link mailed to it is followed."""
        token = new_secret()
        ttl_ms = self.settings.accounts.confirmation_ttl_s * 1000
        await self.service.execute(lambda state, now: commands.change_email(
            state, account, email, token_sha256=digest(token), now_ms=now, ttl_ms=ttl_ms))
        person = self.state.accounts[account]
        await self.mailer.confirmation(person.email, person.name, person.language, token)

    async def set_market_role(self, actor: str, role: str, enabled: bool, household: str | None = None,
                              capacity_w: int | None = None) -> None:
        await self.service.execute(lambda state, now: commands.set_market_role(
            state, actor, role=role, enabled=enabled, household=household, capacity_w=capacity_w, now_ms=now))

    # --- delivery preferences --------------------------------------------------------------------

    async def add_device(self, account: str, device_token: str) -> str:
        await self.service.execute(lambda state, now: commands.add_device(state, account, device_token=device_token, now_ms=now))
        return commands.device_id(device_token)

    async def remove_device(self, account: str, device: str) -> None:
        await self.service.execute(lambda state, now: commands.remove_device(state, account, device=device, now_ms=now))

    async def set_notifications(self, account: str, *, alert_email: str | None, channels: tuple[str, ...],
                                quiet_hours: str | None, time_zone: str, language: str, muted_kinds: tuple[str, ...]) -> None:
        await self.service.execute(lambda state, now: commands.set_notifications(
            state, account, alert_email=alert_email, channels=channels, quiet_hours_text=quiet_hours,
            time_zone_name=time_zone, language=language, muted_kinds=muted_kinds, now_ms=now))

    # --- alert rules -----------------------------------------------------------------------------

    def _meter_of(self, account: str) -> tuple[str, str]:
        person = self.state.accounts.get(account)
        if person is None or person.household is None:
            raise commands.conflict(None, "you do not belong to a household yet: create one or join one")
        household = self.state.households[person.household]
        if household.meter is None:
            raise commands.conflict("meter", "pair the household's meter first: alert rules are the meter's")
        return household.meter, household.tariff

    def alert_rules(self, account: str) -> ev.AlertRules:
        """The household's rules in force (the engine's defaults until it sets some)."""
        meter, tariff = self._meter_of(account)
        if self.rules is None:
            raise Rejected(503, "unavailable", "alert rules are not served by this process")
        return self.rules.latest.get(meter) or ev.AlertRules(meter=meter, tariff=tariff)  # type: ignore[arg-type]

    async def put_alert_rules(self, account: str, body: dict) -> ev.AlertRules:  # type: ignore[type-arg]
        """Validates the household's rules with the engine's own checks and appends them to alerts.rules."""
        meter, tariff = self._meter_of(account)
        if self.rules is None:
            raise Rejected(503, "unavailable", "alert rules are not served by this process")
        record = rules_from_request(meter, body, self.service.now_ms(), default_tariff=tariff)
        await self.rules.put(record)
        return record
