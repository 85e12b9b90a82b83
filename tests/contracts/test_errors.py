"""Every shape a revert arrives in becomes the contract's named error."""

from __future__ import annotations

import pytest
from eth_abi import encode
from web3 import Web3
from web3.exceptions import ContractCustomError, ContractLogicError

from contracts.errors import decode_revert

ORDER_ID = bytes.fromhex("51243ae30add1fcbb726bcda5dafd39d2759b396b5364eb7b1495b1bab27078d")
# OrderExists(bytes32): an id whose bytes hold both quote characters once printed by Python.
DATA = Web3.keccak(text="OrderExists(bytes32)")[:4] + encode(["bytes32"], [ORDER_ID])


@pytest.mark.parametrize(
    "exc",
    [
        ContractCustomError("0x" + DATA.hex(), data="0x" + DATA.hex()),  # JSON-RPC node via web3
        ContractLogicError("execution reverted", data={"message": "reverted", "data": "0x" + DATA.hex()}),
        Exception(f"execution reverted: {DATA!r}"),  # eth-tester's provider (repr of the bytes)
        Exception(DATA),  # eth-tester's backend
    ],
    ids=["custom-error", "logic-error-dict", "eth-tester-repr", "raw-bytes"],
)
def test_revert_shapes_decode_to_the_custom_error(exc: Exception) -> None:
    revert = decode_revert(exc)
    assert revert is not None and revert.name == "OrderExists"
    assert revert.args_by_name == {"orderId": ORDER_ID}
    assert str(revert) == f"OrderExists(orderId=0x{ORDER_ID.hex()})"


def test_unknown_selectors_are_reported_not_guessed() -> None:
    revert = decode_revert(ContractCustomError("0xdeadbeef", data="0xdeadbeef"))
    assert revert is not None and revert.name == "UnknownError" and revert.args_by_name == {"data": "0xdeadbeef"}


def test_a_standard_error_string_is_named_error() -> None:
    data = Web3.keccak(text="Error(string)")[:4] + encode(["string"], ["nope"])
    revert = decode_revert(ContractLogicError("execution reverted: nope", data="0x" + data.hex()))
    assert revert is not None and (revert.name, revert.args_by_name) == ("Error", {"message": "nope"})
