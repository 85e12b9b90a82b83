"""Chains for the contract tests: eth-tester in process, and anvil from the local stack.

``any_chain`` runs a test on both. Each test gets its own market (``world``) on a chain shared by
the module, with a token minted once to the dev accounts; slots are placed after the chain's
current time, which only moves forward, so tests never see each other's trades.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Iterator

import pytest
from web3 import Web3

from contracts.amounts import SLOT_SECONDS, opaque_id
from contracts.deployment import DeploymentRecord, deploy
from contracts.errors import ContractRevert
from contracts.devchain import ADMIN, DEV_ACCOUNTS, ORACLE, advance_to, dev_account, in_process_chain, now
from contracts.market import Market
from contracts.transactions import Sender

GATE_CLOSURE_S = 300
SETTLEMENT_TIMEOUT_S = 3600
MINTED_CENTS = 10_000_000


def reverts(name: str) -> AbstractContextManager[Any]:
    """Expects the contract's custom error ``name``, whatever shape the chain reports it in."""
    return pytest.raises(ContractRevert, match=rf"^{name}\(")


@dataclass
class Chain:
    w3: Web3
    token: str
    name: str


def _prepare(w3: Web3, name: str) -> Chain:
    admin = Sender(w3, dev_account(ADMIN))
    record = deploy(w3, admin, dev_account(ORACLE).address)
    market = Market(w3, record)
    for index in range(2, DEV_ACCOUNTS):
        market.mint(admin, dev_account(index).address, MINTED_CENTS)
    return Chain(w3, record.token, name)


@pytest.fixture(scope="module")
def tester_chain() -> Chain:
    return _prepare(in_process_chain(), "eth-tester")


@pytest.fixture(scope="module")
def anvil_chain(chain: dict[str, Any]) -> Chain:
    return _prepare(Web3(Web3.HTTPProvider(chain["chain"]["rpc_url"])), "anvil")


@pytest.fixture(params=["eth-tester", "anvil"])
def any_chain(request: pytest.FixtureRequest) -> Chain:
    return request.getfixturevalue("tester_chain" if request.param == "eth-tester" else "anvil_chain")


@dataclass
class World:
    """A fresh market on a chain, its actors, and a zone and slot still open for trading."""

    w3: Web3
    market: Market
    record: DeploymentRecord
    admin: Sender
    oracle: Sender
    producer: Sender
    producer2: Sender
    consumers: list[Sender]
    zone: bytes
    slot: int  # a slot start whose gate is still open

    def ids(self, prefix: str, count: int) -> list[bytes]:
        return [opaque_id(f"{self.record.market}:{prefix}:{i}") for i in range(count)]

    def after_gate(self) -> None:
        advance_to(self.w3, self.slot - GATE_CLOSURE_S)

    def after_slot(self) -> None:
        advance_to(self.w3, self.slot + SLOT_SECONDS)

    def offer(self, energy_wh: int = 10_000, price: int = 25, producer: Sender | None = None, tag: str = "o") -> bytes:
        offer_id = self.ids(tag, 1)[0]
        self.market.list_offer(
            producer or self.producer, offer_id, self.zone, self.slot, self.slot + SLOT_SECONDS, energy_wh, price
        )
        return offer_id


def make_world(chain: Chain) -> World:
    w3 = chain.w3
    admin = Sender(w3, dev_account(ADMIN))
    record = deploy(
        w3,
        admin,
        dev_account(ORACLE).address,
        gate_closure_s=GATE_CLOSURE_S,
        settlement_timeout_s=SETTLEMENT_TIMEOUT_S,
        token_address=chain.token,
    )
    senders = [Sender(w3, dev_account(i)) for i in range(2, DEV_ACCOUNTS)]
    # Two slots ahead: the gate of the next one may close while the test runs.
    slot = (now(w3) // SLOT_SECONDS + 2) * SLOT_SECONDS
    return World(
        w3=w3,
        market=Market(w3, record),
        record=record,
        admin=admin,
        oracle=Sender(w3, dev_account(ORACLE)),
        producer=senders[0],
        producer2=senders[1],
        consumers=senders[2:],
        zone=opaque_id(f"{record.market}:zone"),
        slot=slot,
    )


@pytest.fixture
def world(any_chain: Chain) -> Iterator[World]:
    yield make_world(any_chain)


@pytest.fixture
def tester_world(tester_chain: Chain) -> Iterator[World]:
    yield make_world(tester_chain)
