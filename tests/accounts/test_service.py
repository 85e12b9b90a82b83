"""The accounts service over the real broker and SMTP server: the confirmation mail, read models that
follow the log (other writers included) and a rebuild that gives the same tables."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from accounts import readmodel
from accounts.commands import Rejected
from accounts.operations import AccountOperations
from accounts.readmodel import ReadModel
from accounts.service import AccountsService, rebuild
from quartier import pairing
from quartier.settings import Settings
from quartier.stack.smtp import read_mailbox
from tests.support import settings_env

PASSWORD = "a long enough password"


def confirmation_token(settings: Settings, to: str) -> str:
    *_, message = read_mailbox(settings.smtp.maildir, recipient=to)  # the newest
    link = re.search(r"https?://\S+/v1/accounts/confirm\?\S+", message.get_content())
    assert link, message.get_content()
    return parse_qs(urlparse(link.group(0)).query)["token"][0]


async def wait_for(check: Callable[[], Any], timeout_s: float = 10.0) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not (found := check()):
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.1)
    return found


async def test_sign_up_confirm_household_pairing_and_rebuild_over_the_real_broker(
    broker: dict[str, Any], smtp: dict[str, Any], postgres: str, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(broker, smtp)
    service = AccountsService(settings, follow_interval_s=0.2)
    await service.start()
    ops = AccountOperations(settings, service)
    try:
        await ops.sign_up(email="Owner@Example.test", name="Owner", password=PASSWORD, language="en")
        owner = service.state.account_by_email("owner@example.test")
        assert owner is not None and not owner.email_confirmed
        token = confirmation_token(settings, "owner@example.test")
        assert await ops.confirm(token) == owner.account
        with pytest.raises(Rejected, match="already used"):
            await ops.confirm(token)
        rm = service.read_model
        assert readmodel.account(rm, owner.account).email_confirmed  # type: ignore[union-attr]

        # Signing up again with the address: no second account, and its owner is told by mail, in the account's language.
        await ops.sign_up(email="owner@example.test", name="Intruder", password=PASSWORD)
        mails = read_mailbox(settings.smtp.maildir, recipient="owner@example.test")
        assert [m["Subject"] for m in mails] == ["Confirm your Quartier address", "Your Quartier account"]
        assert len(service.state.accounts) == 1

        assert (await ops.check_password("OWNER@example.test", PASSWORD)).account == owner.account  # type: ignore[union-attr]
        assert await ops.check_password("owner@example.test", "a wrong password!") is None
        assert await ops.check_password("nobody@example.test", PASSWORD) is None

        household = await ops.create_household(owner.account, "Chez Owner")
        code = pairing.pairing_code("031800797452", "zone-0001")
        await ops.pair(owner.account, meter="031800797452", zone="zone-0001", code=code)
        assert readmodel.household_of_meter(rm, "031800797452").household == household  # type: ignore[union-attr]
        assert readmodel.paired_meters(rm) == {"031800797452": (household, "zone-0001")}

        await ops.sign_up(email="member@example.test", name="Member", password=PASSWORD)
        member = service.state.account_by_email("member@example.test")
        invitation = await ops.invite(owner.account)
        assert await ops.join(member.account, invitation.code) == household  # type: ignore[union-attr]
        assert [a.household_role for a in readmodel.members(rm, household)] == \
            [a.household_role for a in sorted([owner, member], key=lambda a: a.account)]  # type: ignore[list-item]

        # Another writer: the command line grants a role while the service runs; the follower folds it.
        env = {**os.environ, **settings_env(settings)}
        granted = subprocess.run([sys.executable, "-m", "quartier.cli", "accounts", "grant", "owner@example.test", "operator"],
                                 env=env, capture_output=True, text=True, timeout=60)
        assert granted.returncode == 0, granted.stderr
        assert granted.stdout.strip() == "operator granted to owner@example.test"
        await wait_for(lambda: "operator" in service.state.accounts[owner.account].role_set)
        await wait_for(lambda: readmodel.account(rm, owner.account).roles == "operator")  # type: ignore[union-attr]
        live = rm.dump()
    finally:
        await service.stop()

    counts = await rebuild(settings)
    assert counts["account"] == 2 and counts["household"] == 1 and counts["pairing"] == 1 and counts["skipped"] == 0
    rebuilt = ReadModel(settings.sqlite_url("accounts"))
    try:
        assert rebuilt.dump() == live
    finally:
        rebuilt.close()

    # The same log rebuilt into PostgreSQL (database_url): the same rows.
    on_postgres = settings.model_copy(update={"database_url": postgres})
    assert await rebuild(on_postgres) == counts
    rebuilt = ReadModel(postgres)
    try:
        assert rebuilt.dump() == live
    finally:
        rebuilt.close()


def test_quartier_accounts_grant_names_the_problem(broker: dict[str, Any], make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(broker)
    env = {**os.environ, **settings_env(settings)}
    result = subprocess.run([sys.executable, "-m", "quartier.cli", "accounts", "grant", "nobody@example.test", "operator"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "email: no account has this address" in result.stderr


async def test_alert_rules_are_judged_by_the_engine_and_reach_alerts_rules(
    broker: dict[str, Any], smtp: dict[str, Any], make_settings: Callable[..., Settings]
) -> None:
    from accounts.alert_rules import AlertRulesLog
    from quartier import events as ev
    from quartier import kafka, topics

    settings = make_settings(broker, smtp)
    service = AccountsService(settings, follow_interval_s=0)
    await service.start()
    rules = AlertRulesLog(settings)
    await rules.start()
    ops = AccountOperations(settings, service, rules=rules)
    try:
        await ops.sign_up(email="rules@example.test", name="R", password=PASSWORD)
        account = service.state.account_by_email("rules@example.test").account  # type: ignore[union-attr]
        await ops.create_household(account, "R")
        with pytest.raises(Rejected) as unpaired:
            await ops.put_alert_rules(account, {"power_max_w": 6000})
        assert (unpaired.value.status, unpaired.value.field) == (409, "meter")
        await ops.pair(account, meter="032347287152", zone="zone-0001", code=pairing.pairing_code("032347287152", "zone-0001"))
        await ops.set_tariff(account, tariff="tempo", subscribed_kva=9, billing_day=15)
        assert ops.alert_rules(account) == ev.AlertRules(meter="032347287152", tariff="tempo")

        cases = {
            ("power_min_w", 7000): "power_min_w",  # above the maximum: the engine's RuleError
            ("time_zone", "Mars/Olympus"): "time_zone",  # the engine's RuleError too
            ("power_max_w", -5): "power_max_w",  # msgspec's constraint
            ("meter", "000000000000"): "meter",  # not the household's to choose
            ("colour", "red"): "colour",  # unknown
        }
        for (field, value), named in cases.items():
            with pytest.raises(Rejected) as refused:
                await ops.put_alert_rules(account, {"power_max_w": 6000, field: value})
            assert (refused.value.status, refused.value.field) == (422, named), refused.value.reason
        saved = await ops.put_alert_rules(account, {"power_max_w": 6000, "for_s": 2})
        assert ops.alert_rules(account) == saved
    finally:
        await rules.stop()
        await service.stop()
    [on_topic] = await kafka.read_all(settings, settings.topic(topics.ALERTS_RULES.name), ev.decoder(ev.AlertRules).decode)
    assert on_topic == saved
    assert (on_topic.meter, on_topic.power_max_w, on_topic.for_s, on_topic.tariff) == ("032347287152", 6000, 2.0, "tempo")
    # A new process reads the rules in force back from the topic.
    again = AlertRulesLog(settings)
    await again.start()
    try:
        assert again.latest == {"032347287152": saved}
    finally:
        await again.stop()


async def test_a_hash_under_older_argon2_parameters_is_rehashed_at_sign_in_revoking_nothing(
    broker: dict[str, Any], smtp: dict[str, Any], make_settings: Callable[..., Settings]
) -> None:
    from argon2 import PasswordHasher

    from accounts import passwords
    from quartier import events as ev

    settings = make_settings(broker, smtp)
    service = AccountsService(settings, follow_interval_s=0)
    await service.start()
    ops = AccountOperations(settings, service)
    try:
        old = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD)
        account = "acct_00000000000000aa"
        await service.execute(lambda state, now: [
            ev.AccountCreated(account=account, email="old@example.test", name="Old", password_hash=old, at_ms=now)])
        assert (await ops.check_password("old@example.test", PASSWORD)).account == account  # type: ignore[union-attr]
        person = service.state.accounts[account]
        assert person.password_hash != old and not passwords.needs_rehash(person.password_hash)
        assert passwords.verify(person.password_hash, PASSWORD)
        assert person.credentials_ms == 0  # nothing revoked
    finally:
        await service.stop()
