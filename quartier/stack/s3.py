"""The local S3-compatible object store the durable broker keeps its log in: npm's ``s3rver``.

``s3rver`` (pinned in package.json) stores each object as files in a directory, so whatever the
broker wrote survives ``quartier stack down``, a reboot and kill -9 of either process. It runs
through ``s3rver_for_tansu.js``, which adds S3's conditional writes (If-Match, If-None-Match) that
s3rver lacks and the broker's consumer groups rely on, and answers listings from a sorted index of the
keys (s3rver's own walk costs the whole bucket per page, and the broker lists a partition on every
fetch). It is the
storage the embedded broker's ``s3://`` engine writes to (docs/operations.md has the measurements
that chose it over the memory engine and PyPI's ``moto[server]``, which keeps objects in memory).

``s3rver`` keeps object ``KEY`` of bucket ``B`` at ``<data dir>/B/KEY._S3rver_object`` (with an
``.md5`` and a ``_S3rver_metadata.json`` beside it): :mod:`quartier.stack.retention` relies on that to
find the record batches of the bulky topics that it asks the store to delete (neither the broker nor
s3rver would ever delete one).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import httpx

from quartier.stack.component import Component

BUCKET = "tansu"
DATA_DIR = "data"
#: The credentials s3rver accepts (it checks the signature's form, not a secret): a local store only.
ACCESS_KEY = "S3RVER"
SECRET_KEY = "S3RVER"
OBJECT_SUFFIX = "._S3rver_object"
#: The files s3rver writes beside each object.
OBJECT_FILES = (OBJECT_SUFFIX, OBJECT_SUFFIX + ".md5", "._S3rver_metadata.json")

_ROOT = Path(__file__).resolve().parents[2]


#: s3rver with S3's conditional writes and indexed listings; node needs OpenSSL's legacy provider for
#: s3rver's continuation tokens (DES): without it every listing of more than 1,000 keys answers 500.
SCRIPT = Path(__file__).with_name("s3rver_for_tansu.js")


def s3rver_path() -> Path | None:
    """The pinned s3rver package's directory (the script requires it from ``node_modules``)."""
    local = _ROOT / "node_modules" / "s3rver"
    return local if (local / "package.json").exists() else None


class S3Store(Component):
    name = "s3"
    default_port = 4568
    start_timeout_s = 30.0

    def __init__(self) -> None:
        #: Where the store answers and keeps its files, once the stack has placed it (:meth:`located`).
        self.port: int | None = None
        self.data_dir: Path | None = None

    def missing(self) -> str | None:
        if s3rver_path() is None:
            return "s3: s3rver not found — run ./dev setup (npm installs the pinned s3rver)"
        if shutil.which("node") is None:
            return "s3: node not found — install it with: sudo apt-get install nodejs (or ./dev setup)"
        return None

    def located(self, port: int, workdir: Path) -> None:
        self.port = port
        self.data_dir = workdir / DATA_DIR

    def command(self, port: int, workdir: Path) -> list[str]:
        (workdir / DATA_DIR).mkdir(parents=True, exist_ok=True)
        return [
            str(shutil.which("node")), "--openssl-legacy-provider", str(SCRIPT), "--directory", str(workdir / DATA_DIR),
            "--address", "127.0.0.1", "--port", str(port), "--configure-bucket", BUCKET,
        ]

    def healthy(self, port: int) -> bool:
        # The bucket answers once s3rver has created it: the broker's first request needs it.
        response = httpx.head(f"http://127.0.0.1:{port}/{BUCKET}", timeout=2)
        return response.status_code == 200

    def settings(self, port: int, workdir: Path) -> dict[str, Any]:
        return {}

    def url(self, port: int) -> str:
        return f"http://127.0.0.1:{port}/{BUCKET}"

    def client_environment(self) -> dict[str, str]:
        """What an S3 client (the broker's ``object_store``) needs to reach this store."""
        if self.port is None:
            raise RuntimeError("s3: the store has not been started or found yet")
        return {
            "AWS_ENDPOINT": f"http://127.0.0.1:{self.port}",
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ALLOW_HTTP": "true",
        }

    def bucket_dir(self) -> Path:
        if self.data_dir is None:
            raise RuntimeError("s3: the store has not been started or found yet")
        return self.data_dir / BUCKET


def delete_object(client: httpx.Client, bucket_url: str, key: str) -> None:
    """Deletes one object through the store's S3 API (so s3rver's index of keys stays exact).

    s3rver accepts unsigned requests from loopback; an object already gone is not an error.
    """
    response = client.delete(f"{bucket_url}/{key}")
    if response.status_code not in (200, 204, 404):
        response.raise_for_status()
