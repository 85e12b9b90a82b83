"""Deploying the token and the market, once per chain: a deployment record per chain id.

``ensure_deployed`` is idempotent. It reads ``<state_dir>/contracts/deployment-<chain id>.json``
and reuses the contracts it names when the chain still holds their code (same code hash as when
deployed), they were built from the current artifacts, and the parameters are the ones asked for;
otherwise it deploys afresh and rewrites the record. The record also keeps the deployment block,
so events are read from there and never from block 0.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec
from eth_utils import keccak
from web3 import Web3

from contracts.artifacts import load
from contracts.transactions import Sender

DEFAULT_GATE_CLOSURE_S = 300
DEFAULT_SETTLEMENT_TIMEOUT_S = 7 * 24 * 3600


class DeploymentRecord(msgspec.Struct, frozen=True, kw_only=True):
    chain_id: int
    token: str
    market: str
    #: The block of the first deployment transaction: where event reading starts.
    block: int
    admin: str
    oracle: str
    gate_closure_s: int
    settlement_timeout_s: int
    token_build_hash: str
    market_build_hash: str
    token_code_hash: str
    market_code_hash: str
    tx_hashes: list[str]


class DeploymentError(RuntimeError):
    pass


def record_path(state_dir: Path, chain_id: int) -> Path:
    return Path(state_dir) / "contracts" / f"deployment-{chain_id}.json"


def read_record(state_dir: Path, chain_id: int) -> DeploymentRecord | None:
    path = record_path(state_dir, chain_id)
    try:
        return msgspec.json.decode(path.read_bytes(), type=DeploymentRecord)
    except FileNotFoundError:
        return None
    except msgspec.DecodeError as exc:  # ValidationError included
        raise DeploymentError(f"deployment record {path} is unreadable: {exc}") from None


def write_record(state_dir: Path, record: DeploymentRecord) -> Path:
    path = record_path(state_dir, record.chain_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(msgspec.json.format(msgspec.json.encode(record)))
    os.replace(tmp, path)
    return path


def code_hash(w3: Web3, address: str) -> str:
    return "0x" + keccak(bytes(w3.eth.get_code(Web3.to_checksum_address(address)))).hex()


def still_deployed(w3: Web3, record: DeploymentRecord) -> bool:
    """True when the chain holds the recorded contracts' code (false after a chain reset)."""
    return (
        record.chain_id == w3.eth.chain_id
        and code_hash(w3, record.token) == record.token_code_hash
        and code_hash(w3, record.market) == record.market_code_hash
    )


def deploy(
    w3: Web3,
    admin: Sender,
    oracle: str,
    *,
    gate_closure_s: int = DEFAULT_GATE_CLOSURE_S,
    settlement_timeout_s: int = DEFAULT_SETTLEMENT_TIMEOUT_S,
    token_address: str | None = None,
) -> DeploymentRecord:
    """Deploys a new market (and a new token unless ``token_address`` is given)."""
    tx_hashes: list[str] = []
    token_artifact, market_artifact = load("EuroToken"), load("QuartierMarket")
    if token_address is None:
        receipt = admin.transact(
            w3.eth.contract(abi=token_artifact.abi, bytecode=token_artifact.bytecode).constructor(admin.address)
        )
        token_address, first_block = receipt["contractAddress"], receipt["blockNumber"]
        tx_hashes.append("0x" + bytes(receipt["transactionHash"]).hex())
    market_receipt = admin.transact(
        w3.eth.contract(abi=market_artifact.abi, bytecode=market_artifact.bytecode).constructor(
            token_address, admin.address, oracle, gate_closure_s, settlement_timeout_s
        )
    )
    tx_hashes.append("0x" + bytes(market_receipt["transactionHash"]).hex())
    if len(tx_hashes) == 1:
        first_block = market_receipt["blockNumber"]
    return DeploymentRecord(
        chain_id=admin.chain_id,
        token=token_address,
        market=market_receipt["contractAddress"],
        block=first_block,
        admin=admin.address,
        oracle=Web3.to_checksum_address(oracle),
        gate_closure_s=gate_closure_s,
        settlement_timeout_s=settlement_timeout_s,
        token_build_hash=token_artifact.build_hash,
        market_build_hash=market_artifact.build_hash,
        token_code_hash=code_hash(w3, token_address),
        market_code_hash=code_hash(w3, market_receipt["contractAddress"]),
        tx_hashes=tx_hashes,
    )


def ensure_deployed(
    w3: Web3,
    admin: Sender,
    oracle: str,
    state_dir: Path,
    *,
    gate_closure_s: int = DEFAULT_GATE_CLOSURE_S,
    settlement_timeout_s: int = DEFAULT_SETTLEMENT_TIMEOUT_S,
) -> tuple[DeploymentRecord, bool]:
    """(the deployment, whether it was created now): reuses the recorded one when it still fits."""
    record = read_record(state_dir, admin.chain_id)
    if record is not None and _fits(w3, record, admin.address, oracle, gate_closure_s, settlement_timeout_s):
        return record, False
    record = deploy(
        w3, admin, oracle, gate_closure_s=gate_closure_s, settlement_timeout_s=settlement_timeout_s
    )
    write_record(state_dir, record)
    return record, True


def load_deployment(w3: Web3, state_dir: Path) -> DeploymentRecord:
    """The recorded deployment on ``w3``'s chain; DeploymentError when there is none or it is gone."""
    chain_id = w3.eth.chain_id
    record = read_record(state_dir, chain_id)
    if record is None:
        raise DeploymentError(
            f"no deployment recorded for chain {chain_id} in {record_path(state_dir, chain_id)} "
            "(run: quartier chain deploy)"
        )
    if not still_deployed(w3, record):
        raise DeploymentError(
            f"chain {chain_id} no longer holds the market at {record.market} (was the chain reset?); "
            "run: quartier chain deploy"
        )
    return record


def _fits(
    w3: Web3, record: DeploymentRecord, admin: str, oracle: str, gate_closure_s: int, settlement_timeout_s: int
) -> bool:
    return (
        record.token_build_hash == load("EuroToken").build_hash
        and record.market_build_hash == load("QuartierMarket").build_hash
        and record.admin == admin
        and record.oracle == Web3.to_checksum_address(oracle)
        and record.gate_closure_s == gate_closure_s
        and record.settlement_timeout_s == settlement_timeout_s
        and still_deployed(w3, record)
    )
