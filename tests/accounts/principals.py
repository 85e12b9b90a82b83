"""Real accounts for each principal of the authorization matrix, and a fresh credential per request.

Made through the accounts' own operations (a second writer of the log, as the command line is),
then followed by the app's service. Each request gets a newly minted access token, so an operation
that signs its caller out (``sign_out``, ``sign_out_everywhere``) revokes only what it was called
with and the next operation still finds its principal signed in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import httpx

from accounts import commands
from accounts.keys import token_secret
from accounts.operations import AccountOperations
from accounts.readmodel import ReadModel
from accounts.service import AccountsService
from accounts.sessions import CredentialStore
from quartier import pairing
from quartier.settings import Settings
from tests.accounts.test_service import confirmation_token

PASSWORD = "a long enough password"
ZONE = "zone-0001"
#: (principal, household label, role in it, meter) — households A (member, owner), B (member_of_other), C (the market participant).
PEOPLE = {
    "owner": ("A", "owner", "100000000001"),
    "member": ("A", "member", None),
    "owner_of_other": ("B", "owner", "100000000002"),
    "member_of_other": ("B", "member", None),
    "market_participant": ("C", "owner", "100000000003"),
    "support": (None, None, None),
    "operator": (None, None, None),
}


@dataclass
class MatrixAccounts:
    accounts: dict[str, str]  # principal -> account id
    households: dict[str, str]  # label -> household id
    meters: dict[str, str]  # label -> meter


async def make_accounts(settings: Settings) -> MatrixAccounts:
    service = AccountsService(settings, follow_interval_s=0)
    await service.start()
    ops = AccountOperations(settings, service)
    try:
        domain = settings.kafka.topic_prefix.strip(".") + ".test"
        accounts: dict[str, str] = {}
        for name in PEOPLE:
            email = f"{name}@{domain}"
            await ops.sign_up(email=email, name=name, password=PASSWORD)
            await ops.confirm(confirmation_token(settings, email))
            accounts[name] = service.state.account_by_email(email).account  # type: ignore[union-attr]
        households: dict[str, str] = {}
        meters: dict[str, str] = {}
        for name, (label, role, meter) in PEOPLE.items():
            if role == "owner":
                households[label] = await ops.create_household(accounts[name], f"Household {label}")
                await ops.pair(accounts[name], meter=meter, zone=ZONE, code=pairing.pairing_code(meter, ZONE))  # type: ignore[arg-type]
                meters[label] = meter  # type: ignore[assignment]
        for name, (label, role, _) in PEOPLE.items():
            if role == "member":
                owner = next(n for n, (l, r, _) in PEOPLE.items() if l == label and r == "owner")
                await ops.join(accounts[name], (await ops.invite(accounts[owner])).code)
        await ops.set_market_role(accounts["market_participant"], "producer", True, capacity_w=10_000)
        await ops.grant("cli", f"support@{domain}", "support")
        await ops.grant("cli", f"operator@{domain}", "operator")
        return MatrixAccounts(accounts, households, meters)
    finally:
        await service.stop()


class FreshCredentials(Mapping[str, dict[str, str]]):
    """principal -> headers with a newly minted access token (anonymous: none)."""

    def __init__(self, settings: Settings, made: MatrixAccounts) -> None:
        self._read_model = ReadModel(settings.sqlite_url("accounts"))
        self._store = CredentialStore(settings, self._read_model.engine, token_secret(settings))
        self._accounts = made.accounts

    def __getitem__(self, principal: str) -> dict[str, str]:
        if principal == "anonymous":
            return {}
        pair = self._store.issue_tokens(self._accounts[principal])
        return {"Authorization": f"Bearer {pair.access_token}"}

    def __iter__(self) -> Iterator[str]:
        return iter(["anonymous", *self._accounts])

    def __len__(self) -> int:
        return len(self._accounts) + 1

    def close(self) -> None:
        self._read_model.close()


async def until_followed(client: httpx.AsyncClient, credentials: FreshCredentials, made: MatrixAccounts) -> None:
    """Waits until the app's service has folded what ``make_accounts`` appended."""
    async with asyncio.timeout(30):
        while True:
            answer = await client.get("/v1/me", headers=credentials["market_participant"])
            if answer.status_code == 200 and answer.json()["market_roles"] == ["producer"]:
                operator = await client.get("/v1/me", headers=credentials["operator"])
                if operator.status_code == 200 and operator.json()["roles"] == ["operator"]:
                    return
            await asyncio.sleep(0.2)


def device_of(token: str) -> str:
    return commands.device_id(token)
