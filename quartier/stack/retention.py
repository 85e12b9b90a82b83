"""Time retention for the embedded broker's durable log: what Apache Kafka's ``retention.ms`` does, and less.

The broker (Tansu 0.6 on its S3 engine) applies no retention, and its DeleteRecords panics, so the
readings would fill the disk at about 8 GB an hour at the reference load (docs/operations.md). It
keeps each partition as one object per record batch, ``topics/<topic>/partitions/<p>/records/
<base offset>.batch``, and answers from what is there: with the oldest batches gone, a fetch from
offset 0 starts at the first batch left and ListOffsets' earliest is that batch's offset (measured:
docs/operations.md). So this process asks the store, every ``--every`` seconds, to delete the record
batches of the topics in :data:`quartier.topics.RETAINED_MS` that are either

- consumed by every consumer group that committed on that partition within the retention, and older
  than :data:`CONSUMED_KEPT_S`; or
- older than the topic's retention (the object's write time), on a partition no group committed on
  within the retention (a group silent for longer is taken for gone, as Kafka expires offsets);

never a partition's newest batch, never a batch some active group has not consumed. Every other
topic, the records of truth, is never touched.

Why consumed batches go so soon here, when Kafka keeps them for the whole retention: the broker lists
every batch object of a partition on every fetch (tansu-storage 0.6.0, ``dynostore.rs``), so a fetch
costs the batches kept: about 28 µs a batch through the indexed store, with three or four batches a
second and partition at the reference load. Two hours kept would make each fetch list some 28,000
(0.8 s); 30 s keeps it near 150. What is consumed is in InfluxDB, the readings' store of record.

Deletions go through the store's S3 API, so the store's index of keys stays exact. Run by the local
stack as a component (``python -m quartier.stack.retention``); it answers ``GET /health`` with the
counts of its sweeps.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import httpx

from quartier.stack.component import Component
from quartier.stack.s3 import OBJECT_SUFFIX, S3Store, delete_object
from quartier.topics import RETAINED_MS

BATCH_SUFFIX = ".batch" + OBJECT_SUFFIX
OFFSET_SUFFIX = ".json" + OBJECT_SUFFIX
#: How long a batch every active group has consumed is kept (see the module's docstring).
CONSUMED_KEPT_S = 30.0


@dataclass
class Sweep:
    at_s: float = 0.0
    batches_deleted: int = 0
    bytes_deleted: int = 0
    batches_kept_unconsumed: int = 0


def retained_for_ms(topic: str, retained: dict[str, int]) -> int | None:
    """The retention of a topic by its full name (a deployment prefix ends with a dot), or None."""
    for declared, ms in retained.items():
        if topic == declared or topic.endswith("." + declared):
            return ms
    return None


def committed_offsets(cluster_dir: Path, active_since_s: float) -> dict[tuple[str, int], list[int]]:
    """Per (topic, partition), the offsets committed there by groups that committed since then."""
    out: dict[tuple[str, int], list[int]] = defaultdict(list)
    groups = cluster_dir / "groups" / "consumers"
    for path in groups.glob(f"*/offsets/*/partitions/*{OFFSET_SUFFIX}"):
        try:
            if path.stat().st_mtime < active_since_s:
                continue
            offset = json.loads(path.read_bytes())["offset"]
        except (OSError, ValueError, KeyError):
            continue  # being rewritten, or not an offset: judged at the next sweep
        topic = path.parent.parent.name
        partition = int(path.name[: -len(OFFSET_SUFFIX)])
        out[(topic, partition)].append(int(offset))
    return out


def sweep(
    bucket_dir: Path,
    delete: Callable[[str], None],
    retained: dict[str, int] = RETAINED_MS,
    now_s: float | None = None,
    consumed_kept_s: float = CONSUMED_KEPT_S,
) -> Sweep:
    """Deletes (``delete(key)``) the old, consumed record batches of the retained topics."""
    now_s = time.time() if now_s is None else now_s
    result = Sweep(at_s=now_s)
    for cluster_dir in (bucket_dir / "clusters").glob("*"):
        longest_s = max(retained.values(), default=0) / 1000
        committed = committed_offsets(cluster_dir, now_s - longest_s)
        for topic_dir in (cluster_dir / "topics").glob("*"):
            retention_ms = retained_for_ms(topic_dir.name, retained)
            if retention_ms is None:
                continue
            for partition_dir in (topic_dir / "partitions").glob("*"):
                groups = committed.get((topic_dir.name, int(partition_dir.name)), [])
                consumed_to = min(groups, default=None)
                cutoff_s = now_s - (retention_ms / 1000 if consumed_to is None else min(consumed_kept_s, retention_ms / 1000))
                _sweep_partition(bucket_dir, partition_dir / "records", cutoff_s, consumed_to, delete, result)
    return result


def _sweep_partition(
    bucket_dir: Path,
    records: Path,
    cutoff_s: float,
    consumed_to: int | None,
    delete: Callable[[str], None],
    result: Sweep,
) -> None:
    try:
        names = [e.name for e in os.scandir(records) if e.name.endswith(BATCH_SUFFIX)]
    except FileNotFoundError:
        return
    batches = sorted((int(name[: -len(BATCH_SUFFIX)]), records / name) for name in names)
    # Each batch but the newest, with the offset after its last record (the next batch's base).
    for (_, path), (next_base, _) in zip(batches, batches[1:]):
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue
        if consumed_to is not None and consumed_to < next_base:
            result.batches_kept_unconsumed += 1
            return
        if stat.st_mtime >= cutoff_s:
            return  # offsets grow with time: the rest is younger
        delete(str(path.relative_to(bucket_dir))[: -len(OBJECT_SUFFIX)])
        result.batches_deleted += 1
        result.bytes_deleted += stat.st_size


class Retention(Component):
    """The sweeping process, beside the broker whose store it sweeps."""

    name = "retention"
    default_port = 9493
    start_timeout_s = 20.0

    def __init__(self, store: S3Store, every_s: float = 10.0) -> None:
        self.store = store
        self.every_s = every_s

    def command(self, port: int, workdir: Path) -> list[str]:
        import sys

        return [sys.executable, "-m", "quartier.stack.retention", "--bucket-dir", str(self.store.bucket_dir()),
                "--store-url", self.store.url(self.store.port), "--port", str(port), "--every", str(self.every_s)]

    def healthy(self, port: int) -> bool:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200

    def settings(self, port: int, workdir: Path) -> dict[str, Any]:
        return {}

    def url(self, port: int) -> str:
        return f"http://127.0.0.1:{port}/health"


def serve(bucket_dir: Path, store_url: str, port: int, every_s: float) -> None:
    totals = {"sweeps": 0, "batches_deleted": 0, "bytes_deleted": 0, "last": asdict(Sweep())}
    lock = threading.Lock()

    class Health(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
            if self.path != "/health":
                self.send_error(404)
                return
            with lock:
                body = json.dumps(totals).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = httpx.Client(timeout=30)
    while True:
        try:
            done = sweep(bucket_dir, lambda key: delete_object(client, store_url, key))
        except httpx.HTTPError as error:  # the store restarting: what is left is swept next time
            print(f"retention: sweep stopped: {error}", flush=True)
            time.sleep(every_s)
            continue
        with lock:
            totals["sweeps"] += 1
            totals["batches_deleted"] += done.batches_deleted
            totals["bytes_deleted"] += done.bytes_deleted
            totals["last"] = asdict(done)
        if done.batches_deleted:
            print(f"retention: dropped {done.batches_deleted} batches, {done.bytes_deleted / 2**20:.1f} MB", flush=True)
        time.sleep(every_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bucket-dir", type=Path, required=True)
    parser.add_argument("--store-url", required=True, help="the bucket's URL, http://HOST:PORT/BUCKET")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--every", type=float, default=10.0, help="seconds between sweeps")
    args = parser.parse_args()
    serve(args.bucket_dir, args.store_url, args.port, args.every)


if __name__ == "__main__":
    main()
