"""Development chains: the deterministic dev accounts, an in-process eth-tester chain, moving time.

Both dev chains use anvil's well-known mnemonic, so account N is the same address (and key) on
anvil and in eth-tester. These keys are public: never use them on a real network.
"""

from __future__ import annotations

from functools import cache

from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3

DEV_MNEMONIC = "test test test test test test test test test test test junk"
DEV_ACCOUNTS = 10
#: Chain ids on which the dev accounts and free minting are allowed (anvil; eth-tester's own id).
DEV_CHAIN_IDS = frozenset({31337, 131277322940537})

#: Dev account roles: 0 deploys and administers, 1 is the settlement oracle, the rest trade.
ADMIN, ORACLE = 0, 1


@cache
def dev_account(index: int) -> LocalAccount:
    """Dev account ``index`` of the anvil mnemonic (m/44'/60'/0'/0/index)."""
    Account.enable_unaudited_hdwallet_features()
    return Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")


def in_process_chain(accounts: int = DEV_ACCOUNTS) -> Web3:
    """A fresh eth-tester (py-evm) chain in this process, auto-mining, the dev accounts funded."""
    from eth_tester import EthereumTester, PyEVMBackend
    from web3 import EthereumTesterProvider

    backend = PyEVMBackend.from_mnemonic(DEV_MNEMONIC, num_accounts=accounts, hd_path="m/44'/60'/0'/0")
    return Web3(EthereumTesterProvider(EthereumTester(backend)))


def now(w3: Web3) -> int:
    """The latest block's timestamp (the contract's clock)."""
    return int(w3.eth.get_block("latest")["timestamp"])


def advance_to(w3: Web3, timestamp: int) -> None:
    """Moves the chain's clock so the next transaction runs at ``timestamp`` or later (unix seconds).

    Works on eth-tester and anvil; time only moves forward.
    """
    if timestamp <= now(w3):
        return
    tester = getattr(w3.provider, "ethereum_tester", None)
    if tester is not None:
        tester.time_travel(timestamp)
    else:
        w3.provider.make_request("evm_setNextBlockTimestamp", [timestamp])  # type: ignore[arg-type]
        w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
