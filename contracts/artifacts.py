"""The compiled contracts, as committed in contracts/artifacts/ by ``node contracts/compile.mjs``.

Python never needs Node at run time: it reads the ABI and bytecode from these files. A test
recompiles and fails when any artifact differs from what the sources produce.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from eth_utils import keccak

ARTIFACTS_DIR = Path(__file__).with_name("artifacts")


@dataclass(frozen=True)
class Artifact:
    name: str
    abi: list[dict[str, Any]]
    bytecode: str
    deployed_bytecode: str
    compiler_version: str
    source_hash: str

    @property
    def build_hash(self) -> str:
        """keccak-256 of the creation bytecode: changes with any source, library, compiler or setting."""
        return "0x" + keccak(hexstr=self.bytecode).hex()


@cache
def load(name: str) -> Artifact:
    """The artifact of contract ``name`` (``QuartierMarket``, ``EuroToken``, ...)."""
    path = ARTIFACTS_DIR / f"{name}.json"
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"no artifact for contract {name!r} at {path} (run node contracts/compile.mjs)") from None
    return Artifact(
        name=raw["contractName"],
        abi=raw["abi"],
        bytecode=raw["bytecode"],
        deployed_bytecode=raw["deployedBytecode"],
        compiler_version=raw["compiler"]["version"],
        source_hash=raw["sourceHash"],
    )
