"""One place that turns every chain's revert shape into the contract's custom error.

eth-tester and JSON-RPC nodes (anvil, geth) report a revert differently: web3 may raise
``ContractCustomError`` with the hex data, ``ContractLogicError`` with a dict or a "Reverted 0x.."
string, or the node's own error carrying the data somewhere in its arguments. ``decode_revert``
finds the revert bytes in any of them and names the error from the contracts' ABIs, so callers
and tests match on ``ContractRevert.name`` and never on a node's message.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from typing import Any, Iterable

from eth_abi import decode as abi_decode
from eth_utils import function_signature_to_4byte_selector, to_checksum_address

from contracts.artifacts import load

#: Contracts whose errors are recognised (their ABIs include the OpenZeppelin errors they can raise).
KNOWN_CONTRACTS = ("QuartierMarket", "EuroToken", "CallbackToken", "ReentrantWithdrawer")
_HEX = re.compile(r"0x[0-9a-fA-F]{8,}")


class ContractRevert(Exception):
    """A transaction or call the contract rejected: ``name`` is the custom error, ``args`` its fields."""

    def __init__(self, name: str, args: dict[str, Any], data: bytes) -> None:
        self.name = name
        self.args_by_name = args
        self.data = data
        fields = ", ".join(f"{key}={_show(value)}" for key, value in args.items())
        super().__init__(f"{name}({fields})")


@cache
def _errors() -> dict[bytes, tuple[str, list[str], list[str]]]:
    """Selector -> (name, field names, field types) for every known custom error."""
    table: dict[bytes, tuple[str, list[str], list[str]]] = {
        function_signature_to_4byte_selector("Error(string)"): ("Error", ["message"], ["string"]),
        function_signature_to_4byte_selector("Panic(uint256)"): ("Panic", ["code"], ["uint256"]),
    }
    for contract in KNOWN_CONTRACTS:
        for item in load(contract).abi:
            if item["type"] != "error":
                continue
            types = [_abi_type(i) for i in item["inputs"]]
            selector = function_signature_to_4byte_selector(f"{item['name']}({','.join(types)})")
            table[selector] = (item["name"], [i["name"] for i in item["inputs"]], types)
    return table


def _abi_type(item: dict[str, Any]) -> str:
    if item["type"].startswith("tuple"):
        return "(" + ",".join(_abi_type(c) for c in item["components"]) + ")" + item["type"][5:]
    return item["type"]


def decode_revert_data(data: bytes) -> ContractRevert:
    """The named error for raw revert bytes (``UnknownError`` when no known ABI declares it)."""
    known = _errors().get(data[:4])
    if known is None:
        return ContractRevert("UnknownError", {"data": "0x" + data.hex()}, data)
    name, fields, types = known
    try:
        values = abi_decode(types, data[4:])
    except Exception:  # the selector matched but the payload is not that error's
        return ContractRevert("UnknownError", {"data": "0x" + data.hex()}, data)
    values = [to_checksum_address(v) if t == "address" else v for t, v in zip(types, values)]
    return ContractRevert(name, dict(zip(fields, values)), data)


def revert_data(exc: BaseException) -> bytes | None:
    """The revert bytes carried by an exception from any chain backend, or None."""
    seen: set[int] = set()
    stack: list[Any] = [exc]
    while stack:
        item = stack.pop()
        if id(item) in seen or item is None:
            continue
        seen.add(id(item))
        if isinstance(item, (bytes, bytearray)) and len(item) >= 4:
            return bytes(item)
        if isinstance(item, str):
            # eth-tester's provider formats undecodable revert bytes as "execution reverted: b'...'".
            if (literal := _bytes_literal(item)) is not None:
                return literal
            match = _HEX.search(item)
            if match and len(match.group()) % 2 == 0:
                return bytes.fromhex(match.group()[2:])
            continue
        if isinstance(item, dict):
            stack.extend(item.get(k) for k in ("message", "data") if k in item)
            continue
        if isinstance(item, BaseException):
            stack.extend(_candidates(item))
    return None


def _bytes_literal(text: str) -> bytes | None:
    """The first Python bytes literal (repr of bytes) in ``text`` that parses, if any."""
    for match in re.finditer(r"""b['"]""", text):
        try:
            literal = ast.literal_eval(text[match.start() :])
        except (ValueError, SyntaxError):
            continue
        if isinstance(literal, bytes) and len(literal) >= 4:
            return literal
    return None


def _candidates(exc: BaseException) -> Iterable[Any]:
    # Pushed in reverse priority (a stack): the explicit ``data`` attribute is looked at first.
    yield exc.__cause__
    yield exc.__context__
    yield from reversed(exc.args)
    yield getattr(exc, "message", None)
    yield getattr(exc, "data", None)


def decode_revert(exc: BaseException) -> ContractRevert | None:
    """The contract's error behind ``exc``, or None when ``exc`` is not a revert with data."""
    if isinstance(exc, ContractRevert):
        return exc
    data = revert_data(exc)
    return decode_revert_data(data) if data is not None else None


def _show(value: Any) -> str:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return repr(value) if isinstance(value, str) else str(value)
