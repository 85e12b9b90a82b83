"""What the durable log's object store is asked, per second, from its log.

``QUARTIER_S3_REQUEST_MIX_S=30 python -m bench.soak ... --keep`` makes the store
(``quartier/stack/s3rver_for_tansu.js``) log, every 30 s, its CPU time and its requests so far by
kind; then

    python -m bench.store_requests RUN_DIR/stack/logs/s3.log [--from N] [--to M] [--top 20]

prints, between the N-th and the M-th block (0 the first; by default the second and the last but
one, leaving out the start-up and the drain), the store's cores used, its requests a second in all and
by kind (method, status, key with digits as N), and each kind's mean duration.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from bench import lifetime

HEADER = re.compile(r"^request mix at (\S+): cpu_s (\S+) requests (\d+)$")
ROW = re.compile(r"^  (\d+)\t(\S+) ms\t(\d+) B\t(.+)$")


@dataclass
class Block:
    at: datetime
    cpu_s: float
    requests: int
    kinds: dict[str, tuple[int, float]] = field(default_factory=dict)  # kind -> (count, mean ms)


def read_blocks(log: Path) -> list[Block]:
    blocks: list[Block] = []
    for line in log.read_text(errors="replace").splitlines():
        if header := HEADER.match(line):
            at = datetime.fromisoformat(header[1].replace("Z", "+00:00"))
            blocks.append(Block(at, float(header[2]), int(header[3])))
        elif (row := ROW.match(line)) and blocks:
            blocks[-1].kinds[row[4]] = (int(row[1]), float(row[2]))
    return blocks


def rates(first: Block, last: Block) -> tuple[float, float, list[tuple[float, float, str]]]:
    """Cores, requests a second, and (requests a second, mean ms, kind) by kind, most asked first."""
    seconds = (last.at - first.at).total_seconds()
    by_kind = []
    for kind, (count, mean_ms) in last.kinds.items():
        count_before, mean_before = first.kinds.get(kind, (0, 0.0))
        asked = count - count_before
        if asked > 0:
            ms = (count * mean_ms - count_before * mean_before) / asked
            by_kind.append((asked / seconds, ms, kind))
    by_kind.sort(reverse=True)
    return (last.cpu_s - first.cpu_s) / seconds, (last.requests - first.requests) / seconds, by_kind


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("log", type=Path)
    parser.add_argument("--from", dest="first", type=int, default=1)
    parser.add_argument("--to", dest="last", type=int, default=-2)
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args()
    blocks = read_blocks(args.log)
    if len(blocks) < 2:
        raise SystemExit(f"{args.log}: {len(blocks)} request-mix block(s); was the store run with QUARTIER_S3_REQUEST_MIX_S?")
    first, last = blocks[args.first], blocks[args.last]
    cores, per_s, by_kind = rates(first, last)
    print(f"{first.at:%H:%M:%S} -> {last.at:%H:%M:%S} UTC: {cores:.3f} of a core, {per_s:.1f} requests/s")
    for asked, ms, kind in by_kind[: args.top]:
        print(f"{asked:8.1f}/s {ms:7.2f} ms  {kind}")


if __name__ == "__main__":
    lifetime.run(main)
