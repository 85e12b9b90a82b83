"""Sending transactions from one account: local signing, its own nonce counter, errors by name.

A service account (the settlement oracle) sends many transactions, often without waiting for each
receipt. Asking the node for the nonce each time races with the transactions still in flight, so a
``Sender`` keeps the next nonce itself, reserves it under a lock, and re-reads it from the node
(``pending``) only when a send fails. Every call is estimated first, which surfaces the contract's
custom error (through ``contracts.errors``) before a nonce is spent.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes
from web3 import Web3
from web3.exceptions import ContractLogicError, Web3RPCError
from web3.types import TxReceipt

from contracts.errors import ContractRevert, decode_revert

#: The per-transaction gas cap (EIP-7825, Osaka: 2**24). Transactions are kept under it on every chain.
TX_GAS_CAP = 2**24
#: Margin over the estimate: state may change between estimation and execution.
GAS_MARGIN = 1.2
#: Priority fee offered, wei (dev chains accept anything; a real network needs a fee policy).
PRIORITY_FEE_WEI = 10**9
_FEE_TTL_S = 2.0
_NONCE_ERRORS = ("invalid transaction nonce", "nonce too low", "already known", "nonce too high", "replacement transaction underpriced")


class GasCapExceeded(ValueError):
    """The transaction needs more gas than one transaction may use; split it."""

    def __init__(self, estimate: int, cap: int) -> None:
        self.estimate = estimate
        self.cap = cap
        super().__init__(f"the transaction needs {estimate} gas, over the per-transaction cap of {cap}")


class TransactionReverted(RuntimeError):
    """A mined transaction failed and replaying it did not tell why."""


def is_revert(exc: BaseException) -> bool:
    """True for the shapes a contract revert takes on eth-tester and JSON-RPC nodes."""
    if isinstance(exc, (ContractLogicError, ContractRevert)):
        return True
    if type(exc).__name__ == "TransactionFailed":  # eth-tester, not imported when absent
        return True
    return isinstance(exc, Web3RPCError) and "revert" in str(exc).lower()


def revert_or_raise(exc: BaseException) -> ContractRevert:
    """The ContractRevert for a revert-shaped exception; re-raises anything else unchanged."""
    if is_revert(exc) and (revert := decode_revert(exc)) is not None:
        return revert
    raise exc


class Sender:
    """Signs and sends transactions for one account, keeping its nonce."""

    def __init__(self, w3: Web3, account: LocalAccount, gas_cap: int = TX_GAS_CAP) -> None:
        self.w3 = w3
        self.account = account
        self.address: str = account.address
        self.gas_cap = gas_cap
        self.chain_id = w3.eth.chain_id
        self._lock = threading.Lock()
        self._next_nonce: int | None = None
        self._fees: tuple[float, dict[str, int]] | None = None
        # eth-tester estimates gas by a binary search (about 15 executions, 0.3 s for a market
        # call); its gas costs nothing real, so there one execution (eth_call) names any revert and
        # the transaction gets the cap as its limit. Real nodes estimate.
        self.preflight_by_call = type(w3.provider).__name__ == "EthereumTesterProvider"

    # --- building blocks ----------------------------------------------------------------------

    def estimate(self, call: Any) -> int:
        """Gas for ``call`` (a contract function or constructor call); raises ContractRevert."""
        try:
            estimate = int(call.estimate_gas({"from": self.address}))
        except Exception as exc:
            raise revert_or_raise(exc) from exc
        if estimate > self.gas_cap:
            raise GasCapExceeded(estimate, self.gas_cap)
        return estimate

    def preflight(self, call: Any) -> None:
        """Executes ``call`` once without sending it; raises its ContractRevert."""
        try:
            # On the pending block: the one the transaction will be mined in (its time included).
            if hasattr(call, "call"):
                call.call({"from": self.address}, block_identifier="pending")
            else:  # a constructor: run its creation code
                tx = {"from": self.address, "data": call.data_in_transaction, "gas": self.gas_cap}
                self.w3.eth.call(tx, "pending")
        except Exception as exc:
            raise revert_or_raise(exc) from exc

    def send(self, call: Any, gas: int | None = None) -> HexBytes:
        """Estimates, signs and sends ``call``; returns the transaction hash without waiting."""
        if gas is None and self.preflight_by_call:
            self.preflight(call)
            gas = self.gas_cap
        elif gas is None:
            gas = min(int(self.estimate(call) * GAS_MARGIN), self.gas_cap)
        fees = self._fee_fields()
        for attempt in (1, 2):
            with self._lock:
                nonce = self._reserve_nonce()
                tx = call.build_transaction(
                    {"from": self.address, "nonce": nonce, "gas": gas, "chainId": self.chain_id, **fees}
                )
                signed = self.account.sign_transaction(tx)
                try:
                    tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
                except Exception as exc:
                    # Whatever happened, the node's view of our nonce is the truth from now on.
                    self._next_nonce = None
                    if attempt == 1 and any(text in str(exc).lower() for text in _NONCE_ERRORS):
                        continue
                    raise revert_or_raise(exc) from exc
                self._next_nonce = nonce + 1
                return tx_hash
        raise AssertionError("unreachable")

    def wait(self, tx_hash: HexBytes, call: Any = None, timeout_s: float = 120.0) -> TxReceipt:
        """The receipt of ``tx_hash``; a failed transaction raises its ContractRevert when replayable."""
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=timeout_s, poll_latency=0.02)
        if receipt["status"] != 1:
            if call is not None:
                # Replay on the state the transaction started from, to learn the contract's error.
                try:
                    call.call({"from": self.address}, block_identifier=receipt["blockNumber"] - 1)
                except Exception as exc:
                    raise revert_or_raise(exc) from exc
            raise TransactionReverted(f"transaction 0x{bytes(tx_hash).hex()} failed (block {receipt['blockNumber']})")
        return receipt

    def transact(self, call: Any, gas: int | None = None) -> TxReceipt:
        """Sends ``call`` and waits for its receipt."""
        return self.wait(self.send(call, gas), call)

    def resync(self) -> None:
        """Forgets the local nonce (after another process used this account, or a chain revert)."""
        with self._lock:
            self._next_nonce = None

    # --- internals ----------------------------------------------------------------------------

    def _reserve_nonce(self) -> int:
        if self._next_nonce is None:
            self._next_nonce = self.w3.eth.get_transaction_count(self.address, "pending")
        return self._next_nonce

    def _fee_fields(self) -> dict[str, int]:
        cached = self._fees
        if cached is not None and time.monotonic() - cached[0] < _FEE_TTL_S:
            return cached[1]
        base_fee = int(self.w3.eth.get_block("latest").get("baseFeePerGas", 0))
        # Twice the base fee survives several full blocks of base-fee increases.
        fees = {"maxFeePerGas": 2 * base_fee + PRIORITY_FEE_WEI, "maxPriorityFeePerGas": PRIORITY_FEE_WEI}
        self._fees = (time.monotonic(), fees)
        return fees
