"""The local chain: anvil (Foundry's JSON-RPC dev node, pinned in package.json) on loopback.

Chain id 31337, the well-known dev mnemonic (so account N is the same on every run and in
eth-tester), auto-mining, and the chain state kept in ``<workdir>/anvil-state.json``: anvil loads it
at start and writes it at exit and every 30 seconds, so deployed contracts survive a restart.
"""

from __future__ import annotations

import glob
import platform
from pathlib import Path
from typing import Any

import httpx

from quartier.stack.component import Component

CHAIN_ID = 31337
DEV_MNEMONIC = "test test test test test test test test test test test junk"
STATE_FILE = "anvil-state.json"
#: Seconds between state dumps while running (exit dumps too; this bounds what a crash loses).
#: Each dump rewrites the whole chain with its history (about 5 MB per 1,000 transactions), so
#: not too often.
STATE_INTERVAL_S = 30


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def find_anvil(root: Path | None = None) -> Path | None:
    """anvil installed by ``npm ci``: the platform binary when present (no Node wrapper process
    between the stack and the node), else the ``node_modules/.bin/anvil`` launcher."""
    root = root or repo_root()
    machine = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    for pattern in (
        f"node_modules/@foundry-rs/anvil-{platform.system().lower()}-{machine}/bin/anvil",
        "node_modules/.bin/anvil",
    ):
        for match in sorted(glob.glob(str(root / pattern))):
            path = Path(match)
            if path.is_file():
                return path
    return None


class Chain(Component):
    name = "chain"
    default_port = 8545
    start_timeout_s = 20.0

    def __init__(self, root: Path | None = None) -> None:
        self.root = root

    def missing(self) -> str | None:
        if find_anvil(self.root) is None:
            return "chain: anvil not found — run ./dev setup (npm ci)"
        return None

    def command(self, port: int, workdir: Path) -> list[str]:
        anvil = find_anvil(self.root)
        assert anvil is not None, self.missing()
        return [
            str(anvil),
            "--host", "127.0.0.1",
            "--port", str(port),
            "--chain-id", str(CHAIN_ID),
            "--mnemonic", DEV_MNEMONIC,
            "--accounts", "10",
            "--state", str(workdir / STATE_FILE),
            "--state-interval", str(STATE_INTERVAL_S),
            "--quiet",
        ]  # fmt: skip

    def healthy(self, port: int) -> bool:
        reply = httpx.post(
            self.url(port),
            json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []},
            timeout=2.0,
        )
        return reply.status_code == 200 and int(reply.json()["result"], 16) == CHAIN_ID

    def settings(self, port: int, workdir: Path) -> dict[str, Any]:
        return {"chain": {"rpc_url": self.url(port), "chain_id": CHAIN_ID}}

    def url(self, port: int) -> str:
        return f"http://127.0.0.1:{port}"
