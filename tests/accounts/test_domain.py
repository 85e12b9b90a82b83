"""The accounts domain without a broker: commands check invariants, the fold applies them, codes prove possession."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import pytest

from accounts import commands, passwords
from accounts.commands import Rejected, digest
from accounts.log import checked
from accounts.state import AccountsState, row
from quartier import events as ev
from quartier import pairing

HASH = passwords.hash_password("correct horse battery")
T0 = 1_767_225_600_000


class Log:
    """A log in a list: folds each command's events as the service would, keeps them for replays."""

    def __init__(self) -> None:
        self.state = AccountsState()
        self.events: list[msgspec.Struct] = []

    def run(self, events: Sequence[msgspec.Struct]) -> list[msgspec.Struct]:
        for event in events:
            checked(event)  # what the log's append does: the contract holds
            self.state.apply(event, len(self.events))
            self.events.append(event)
        return list(events)

    def replayed(self) -> AccountsState:
        state = AccountsState()
        for offset, event in enumerate(self.events):
            state.apply(event, offset)
        return state


def sign_up(log: Log, n: int, email: str | None = None) -> str:
    account = f"acct_{n:016x}"
    log.run(commands.sign_up(log.state, account=account, email=email or f"person{n}@example.test", name=f"P{n}",
                             password_hash=HASH, language="fr", token_sha256=digest(f"tok{n}"), now_ms=T0, ttl_ms=3_600_000))
    return account


def household_with_meter(log: Log, owner: str, n: int, meter: str = "012345678901", zone: str = "zone-0001") -> str:
    household = f"hh_{n:016x}"
    log.run(commands.create_household(log.state, owner, household=household, name="Chez nous", now_ms=T0))
    code = pairing.pairing_code(meter, zone)
    log.run(commands.pair_meter(log.state, owner, meter=meter, zone=zone, code=code, secret="", now_ms=T0))
    return household


def test_pairing_code_is_stable_short_and_bound_to_meter_zone_and_secret() -> None:
    code = pairing.pairing_code("012345678901", "zone-0001")
    assert len(code) == 9 and code[4] == "-"
    assert code == pairing.pairing_code("012345678901", "zone-0001")
    assert pairing.check("012345678901", "zone-0001", code.lower().replace("-", " "))
    assert not pairing.check("012345678902", "zone-0001", code)
    assert not pairing.check("012345678901", "zone-0002", code)
    assert pairing.pairing_code("012345678901", "zone-0001", "fleet secret") != code
    # What a person misreads: a zero for the letter O, a one for I.
    assert pairing.normalise("OIBA-2345".replace("O", "0").replace("I", "1")) == "OIBA-2345"


def test_sign_up_confirm_once_and_the_email_is_used_once() -> None:
    log = Log()
    account = sign_up(log, 1, "Person1@Example.TEST")
    assert log.state.accounts[account].email == "person1@example.test"
    assert not log.state.accounts[account].email_confirmed
    # The same address again, in any case: no events (the caller mails the owner instead).
    assert commands.sign_up(log.state, account="acct_00000000000000ff", email="PERSON1@example.test", name="X",
                            password_hash=HASH, language="en", token_sha256=digest("x"), now_ms=T0, ttl_ms=1) == []
    with pytest.raises(Rejected) as expired:
        commands.confirm_email(log.state, digest("tok1"), T0 + 3_600_000)
    assert (expired.value.status, expired.value.field) == (400, "token")
    log.run(commands.confirm_email(log.state, digest("tok1"), T0 + 1000))
    assert log.state.accounts[account].email_confirmed
    with pytest.raises(Rejected, match="already used"):
        commands.confirm_email(log.state, digest("tok1"), T0 + 2000)
    with pytest.raises(Rejected) as bad:
        commands.sign_up(log.state, account="acct_00000000000000fe", email="not-an-address", name="X",
                         password_hash=HASH, language="en", token_sha256=digest("y"), now_ms=T0, ttl_ms=1)
    assert (bad.value.status, bad.value.field) == (422, "email")


def test_a_meter_belongs_to_one_household_and_pairing_needs_its_code() -> None:
    log = Log()
    alice, bob = sign_up(log, 1), sign_up(log, 2)
    household = household_with_meter(log, alice, 1)
    assert log.state.households[household].meter == "012345678901"
    assert log.state.households[household].zone == "zone-0001"
    log.run(commands.create_household(log.state, bob, household="hh_0000000000000002", name="Bob", now_ms=T0))
    with pytest.raises(Rejected) as wrong_code:
        commands.pair_meter(log.state, bob, meter="012345678901", zone="zone-0001", code="AAAA-AAAA", secret="", now_ms=T0)
    assert (wrong_code.value.status, wrong_code.value.field) == (422, "code")
    with pytest.raises(Rejected) as taken:
        commands.pair_meter(log.state, bob, meter="012345678901", zone="zone-0001",
                            code=pairing.pairing_code("012345678901", "zone-0001"), secret="", now_ms=T0)
    assert (taken.value.status, taken.value.field) == (409, "meter")
    # Unpaired by its owner, the meter can be paired by the other household.
    log.run(commands.unpair_meter(log.state, alice, now_ms=T0))
    assert log.state.households[household].meter is None
    log.run(commands.pair_meter(log.state, bob, meter="012345678901", zone="zone-0001",
                                code=pairing.pairing_code("012345678901", "zone-0001"), secret="", now_ms=T0))
    assert log.state.pairings["012345678901"].household == "hh_0000000000000002"


def test_invitation_joins_once_members_cannot_owner_things_and_leaving_takes_devices() -> None:
    log = Log()
    owner, member, late = sign_up(log, 1), sign_up(log, 2), sign_up(log, 3)
    household = household_with_meter(log, owner, 1)
    log.run(commands.issue_invite(log.state, owner, code_sha256=digest("invite"), now_ms=T0, ttl_ms=60_000))
    log.run(commands.join_household(log.state, member, code_sha256=digest("invite"), now_ms=T0 + 1))
    assert (log.state.accounts[member].household, log.state.accounts[member].household_role) == (household, "member")
    with pytest.raises(Rejected) as spent:
        commands.join_household(log.state, late, code_sha256=digest("invite"), now_ms=T0 + 2)
    assert (spent.value.status, spent.value.field) == (422, "code")
    for owner_only in (
        lambda: commands.issue_invite(log.state, member, code_sha256=digest("x"), now_ms=T0, ttl_ms=1),
        lambda: commands.unpair_meter(log.state, member, now_ms=T0),
        lambda: commands.set_tariff(log.state, member, tariff="tempo", subscribed_kva=9, billing_day=15, now_ms=T0),
    ):
        with pytest.raises(Rejected) as refused:
            owner_only()
        assert refused.value.status == 403
    log.run(commands.add_device(log.state, member, device_token="fcm-token-of-member", now_ms=T0))
    log.run(commands.set_notifications(log.state, member, alert_email="Member@Example.test", channels=("push",),
                                       quiet_hours_text="22:00 - 07:00", time_zone_name="Europe/Paris", language="en",
                                       muted_kinds=("power_below",), now_ms=T0))
    assert log.state.preferences[member].quiet_hours == "22:00-07:00"
    assert log.state.preferences[member].alert_email == "member@example.test"
    with pytest.raises(Rejected, match="owner leaves last"):
        commands.leave_household(log.state, owner, T0)
    log.run(commands.leave_household(log.state, member, T0 + 5))
    assert log.state.accounts[member].household is None
    assert log.state.devices == {} and log.state.preferences == {}


def test_roles_need_an_operator_or_the_command_line() -> None:
    log = Log()
    first, other = sign_up(log, 1), sign_up(log, 2)
    with pytest.raises(Rejected) as refused:
        commands.grant_role(log.state, other, email="person1@example.test", role="operator", now_ms=T0)
    assert refused.value.status == 403
    log.run(commands.grant_role(log.state, "cli", email="person1@example.test", role="operator", now_ms=T0))
    log.run(commands.grant_role(log.state, first, email="person2@example.test", role="support", now_ms=T0))
    assert log.state.accounts[other].role_set == {"support"}
    assert commands.grant_role(log.state, first, email="person2@example.test", role="support", now_ms=T0) == []
    log.run(commands.grant_role(log.state, first, email="person2@example.test", role="support", now_ms=T0, revoke=True))
    assert log.state.accounts[other].role_set == frozenset()
    with pytest.raises(Rejected) as unknown:
        commands.grant_role(log.state, "cli", email="nobody@example.test", role="operator", now_ms=T0)
    assert (unknown.value.status, unknown.value.field) == (404, "email")


def test_market_role_needs_the_meter_and_password_change_moves_the_revocation_horizon() -> None:
    log = Log()
    owner = sign_up(log, 1)
    log.run(commands.create_household(log.state, owner, household="hh_0000000000000001", name="H", now_ms=T0))
    with pytest.raises(Rejected, match="pair the household's meter first"):
        commands.set_market_role(log.state, owner, role="producer", enabled=True, now_ms=T0)
    log.run(commands.pair_meter(log.state, owner, meter="012345678901", zone="z1",
                                code=pairing.pairing_code("012345678901", "z1"), secret="", now_ms=T0))
    with pytest.raises(Rejected) as no_capacity:
        commands.set_market_role(log.state, owner, role="producer", enabled=True, now_ms=T0)
    assert (no_capacity.value.status, no_capacity.value.field) == (422, "producer_capacity_w")
    log.run(commands.set_market_role(log.state, owner, role="producer", enabled=True, capacity_w=4_000, now_ms=T0))
    assert log.state.households["hh_0000000000000001"].market_role_set == {"producer"}
    assert log.state.households["hh_0000000000000001"].producer_capacity_w == 4_000
    # The same capacity again is nothing new; another one restates it; revoking forgets it.
    assert commands.set_market_role(log.state, owner, role="producer", enabled=True, capacity_w=4_000, now_ms=T0) == []
    log.run(commands.set_market_role(log.state, owner, role="producer", enabled=True, capacity_w=6_000, now_ms=T0))
    assert log.state.households["hh_0000000000000001"].producer_capacity_w == 6_000
    log.run(commands.set_market_role(log.state, owner, role="producer", enabled=False, now_ms=T0))
    assert (log.state.households["hh_0000000000000001"].market_role_set,
            log.state.households["hh_0000000000000001"].producer_capacity_w) == (frozenset(), None)
    log.run(commands.set_market_role(log.state, owner, role="producer", enabled=True, capacity_w=4_000, now_ms=T0))
    log.run(commands.change_password(log.state, owner, HASH, T0 + 10, rehash=True))
    assert log.state.accounts[owner].credentials_ms == 0
    log.run(commands.change_password(log.state, owner, HASH, T0 + 20))
    assert log.state.accounts[owner].credentials_ms == T0 + 20


def test_a_racing_writer_loses_the_same_way_on_every_replay() -> None:
    """Two processes checked against the same state both append a pairing of one meter: the fold
    keeps the first and skips the second, and a replay does exactly the same."""
    log = Log()
    alice, bob = sign_up(log, 1), sign_up(log, 2)
    log.run(commands.create_household(log.state, alice, household="hh_0000000000000001", name="A", now_ms=T0))
    log.run(commands.create_household(log.state, bob, household="hh_0000000000000002", name="B", now_ms=T0))
    code = pairing.pairing_code("012345678901", "z1")
    first = commands.pair_meter(log.state, alice, meter="012345678901", zone="z1", code=code, secret="", now_ms=T0)
    second = commands.pair_meter(log.state, bob, meter="012345678901", zone="z1", code=code, secret="", now_ms=T0)
    log.run(first)
    log.run(second)
    assert log.state.pairings["012345678901"].household == "hh_0000000000000001"
    assert log.state.households["hh_0000000000000002"].meter is None
    assert [reason for _, reason in log.state.skipped] == ["meter 012345678901 is paired to another household"]
    again = log.replayed()
    assert again.skipped == log.state.skipped
    assert {k: {key: row(e) for key, e in t.items()} for k, t in again.tables().items()} == \
        {k: {key: row(e) for key, e in t.items()} for k, t in log.state.tables().items()}


def test_an_event_breaking_the_contract_never_reaches_the_log() -> None:
    bad = ev.AccountCreated(account="acct_1", email="a@b.c", name="A", password_hash=HASH, at_ms=T0)
    with pytest.raises(ev.ContractError, match="account"):
        checked(bad)


def test_passwords_verify_rehash_and_refuse_weak_ones() -> None:
    assert passwords.verify(HASH, "correct horse battery")
    assert not passwords.verify(HASH, "wrong horse battery")
    assert not passwords.verify(None, "correct horse battery")
    assert HASH.startswith("$argon2id$")
    assert not passwords.needs_rehash(HASH)
    from argon2 import PasswordHasher

    old = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash("correct horse battery")
    assert passwords.verify(old, "correct horse battery") and passwords.needs_rehash(old)
    assert passwords.weakness("short") == "at least 10 characters"
    assert passwords.weakness("aaaaaaaaaaaa") == "more than three different characters"
    assert passwords.weakness("correct horse battery") is None
