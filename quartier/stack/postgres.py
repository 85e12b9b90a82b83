"""PostgreSQL on loopback, for the read models' "PostgreSQL by URL" (``database_url``).

Debian's server (package ``postgresql``), run from its binaries with a cluster of its own under the
component's workdir: ``initdb`` once, password authentication (scram-sha-256) with a generated
password written next to it, listening on 127.0.0.1 only, its socket in the workdir. The server
refuses to run as root, so as root it runs as the ``postgres`` user the package creates.

Not in the default stack (SQLite is the default store); the tests start it for the read models'
PostgreSQL runs.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any

from quartier.stack.component import Component, tcp_open

USER = "quartier"
DATABASE = "quartier"
PASSWORD_FILE = "password"
_INSTALL_HINT = "postgres: PostgreSQL's server not found — install it with: sudo apt-get install postgresql"


def server_binaries() -> Path | None:
    """The newest installed server's bin directory (/usr/lib/postgresql/<major>/bin), if any."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(Path(p).parent.parent.name))
    return Path(found[-1]).parent if found else None


class Postgres(Component):
    name = "postgres"
    default_port = 5433
    start_timeout_s = 60.0

    def missing(self) -> str | None:
        return None if server_binaries() else _INSTALL_HINT

    def _as_server_user(self, argv: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv

    def command(self, port: int, workdir: Path) -> list[str]:
        binaries = server_binaries()
        assert binaries is not None, _INSTALL_HINT
        data, socket_dir = workdir / "data", workdir / "socket"
        if not (data / "PG_VERSION").exists():
            self._init(binaries, workdir, data)
        socket_dir.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(socket_dir, "postgres")
        return self._as_server_user([
            str(binaries / "postgres"), "-D", str(data), "-p", str(port), "-h", "127.0.0.1",
            "-k", str(socket_dir),
            # A test database: durability is not what is tested here, speed is welcome.
            "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
        ])

    def _init(self, binaries: Path, workdir: Path, data: Path) -> None:
        password = workdir / PASSWORD_FILE
        password.write_text(secrets.token_urlsafe(24))
        password.chmod(0o600)
        if os.geteuid() == 0:
            # The server user must own its cluster and read the password file once.
            shutil.chown(workdir, "postgres")
            shutil.chown(password, "postgres")
        done = subprocess.run(self._as_server_user([
            str(binaries / "initdb"), "-D", str(data), "-U", USER, f"--pwfile={password}",
            "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C.UTF-8",
        ]), capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed in {data} (the server user must reach it): {done.stderr.strip()}")

    def healthy(self, port: int) -> bool:
        return tcp_open(port)

    def prepare(self, port: int, workdir: Path) -> None:
        import psycopg  # the read models' driver (extra "postgres")

        url = f"postgresql://{USER}:{self._password(workdir)}@127.0.0.1:{port}/postgres"
        with psycopg.connect(url, autocommit=True) as connection:
            exists = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()
            if exists is None:
                connection.execute(f"CREATE DATABASE {DATABASE}")

    def _password(self, workdir: Path) -> str:
        return (workdir / PASSWORD_FILE).read_text().strip()

    def settings(self, port: int, workdir: Path) -> dict[str, Any]:
        return {"database_url": f"postgresql+psycopg://{USER}:{self._password(workdir)}@127.0.0.1:{port}/{DATABASE}"}

    def url(self, port: int) -> str:
        return f"postgresql://{USER}@127.0.0.1:{port}/{DATABASE}"
