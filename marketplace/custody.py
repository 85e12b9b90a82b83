"""Participants' custodial chain accounts: one key per participant, derived from a secret.

The market signs for its participants (they never hold keys): participant ``p``'s account is the
key ``keccak("quartier-custody:" + secret + ":" + p)``, so the same settings give the same accounts
after a restart, with nothing stored. Without a secret, a public dev secret is used, and only on a
dev chain (anyone can recompute those keys).

On a dev chain the market also funds the accounts it uses: gas (anvil's ``anvil_setBalance``) and,
when an order needs more euro tokens than the account holds, tokens minted by the admin. On any
other chain the accounts must be funded by their owners (deposits are not built).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping

from eth_account import Account
from web3 import Web3

from contracts.devchain import DEV_CHAIN_IDS
from contracts.market import Market
from contracts.transactions import Sender

DEV_SECRET = "quartier-dev-custody"
ANVIL_CHAIN_ID = 31337
#: Gas money given to a dev account below the floor (wei).
DEV_GAS_WEI = 10**20
DEV_GAS_FLOOR_WEI = 10**18


class CustodyError(ValueError):
    pass


class Custody(Mapping[str, Sender]):
    """participant -> its custodial ``Sender`` (derived on first use, then kept)."""

    def __init__(self, w3: Web3, secret: str) -> None:
        if not secret:
            if w3.eth.chain_id not in DEV_CHAIN_IDS:
                raise CustodyError(f"market.custody_secret must be set on chain {w3.eth.chain_id} "
                                   "(the dev secret is public: dev chains only)")
            secret = DEV_SECRET
        self.w3 = w3
        self._secret = secret
        self._senders: dict[str, Sender] = {}
        self._lock = threading.Lock()

    def __getitem__(self, participant: str) -> Sender:
        with self._lock:
            sender = self._senders.get(participant)
            if sender is None:
                key = Web3.keccak(text=f"quartier-custody:{self._secret}:{participant}")
                sender = self._senders[participant] = Sender(self.w3, Account.from_key(key))
            return sender

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._senders))

    def __len__(self) -> int:
        return len(self._senders)


class DevFunding:
    """Funds custodial accounts on a dev chain before they act: gas, and tokens for an order."""

    def __init__(self, market: Market, admin: Sender, mint_cents: int) -> None:
        self.market = market
        self.admin = admin
        self.mint_cents = mint_cents
        self._gassed: set[str] = set()
        self._anvil = market.w3.eth.chain_id == ANVIL_CHAIN_ID

    def __call__(self, account: Sender, spend_cents: int) -> None:
        w3 = self.market.w3
        if self._anvil and account.address not in self._gassed:
            if w3.eth.get_balance(Web3.to_checksum_address(account.address)) < DEV_GAS_FLOOR_WEI:
                w3.provider.make_request("anvil_setBalance", [account.address, hex(DEV_GAS_WEI)])  # type: ignore[arg-type]
            self._gassed.add(account.address)
        if spend_cents > 0:
            balance = self.market.balance_of(account.address)
            if balance < spend_cents:
                self.market.mint(self.admin, account.address, max(self.mint_cents, spend_cents - balance))
