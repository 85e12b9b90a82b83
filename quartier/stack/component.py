"""What a local-stack component is, and the process plumbing they share.

A component is a real server started on loopback: it says what is missing to run it (and the command
that installs it), how to start it on a port with its data and log under the state directory, how to
tell it is healthy, what it must be given once it is up (topics, databases), and which settings
point clients at it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable


class Component(ABC):
    #: Short name used in the CLI, the status table and stack.json.
    name: str
    #: The port tried first; a free one is picked when it is taken.
    default_port: int

    def missing(self) -> str | None:
        """None when the component can run here; else one line naming it and the install command."""
        return None

    @abstractmethod
    def command(self, port: int, workdir: Path) -> list[str]:
        """The argv that runs the server on ``port``; may write config files into ``workdir``."""

    def environment(self, port: int, workdir: Path) -> dict[str, str]:
        """Extra environment variables for the server process."""
        return {}

    @abstractmethod
    def healthy(self, port: int) -> bool:
        """True when the server answers on ``port`` as it should."""

    def located(self, port: int, workdir: Path) -> None:
        """Told where the stack runs this component, before it starts it or when it finds it running.

        Components that depend on another one (the broker on its object store) read its place here.
        """

    def prepare(self, port: int, workdir: Path) -> None:
        """One-time set-up once the server is healthy (topics, databases, accounts). Idempotent."""

    @abstractmethod
    def settings(self, port: int, workdir: Path) -> dict[str, Any]:
        """Settings overrides (nested, as in quartier.settings) that point clients at this server."""

    @abstractmethod
    def url(self, port: int) -> str:
        """The address a person would paste into a client."""

    #: Seconds to wait for health after start.
    start_timeout_s: float = 30.0


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def pick_port(preferred: int, taken: set[int] = frozenset()) -> int:  # type: ignore[assignment]
    """``preferred`` when it is free (0 means any), else a free port the kernel hands out."""
    if preferred and preferred not in taken and port_is_free(preferred):
        return preferred
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in taken:
            return port


def tcp_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def spawn(argv: list[str], log_path: Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> int:
    """Starts a server in its own session (so stopping it stops its children), logging to a file."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
        )
    return proc.pid


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours still answers kill(0); reap it if it is ours.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return _not_zombie(pid)


def _not_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def stop(pid: int, timeout_s: float = 10.0) -> None:
    """SIGTERM the process group, then SIGKILL what is still there after ``timeout_s``."""
    for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        except PermissionError:
            os.kill(pid, sig)
        if wait_until(lambda: not pid_alive(pid), wait):
            return


def wait_until(check: Callable[[], bool], timeout_s: float, interval_s: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if check():
                return True
        except Exception:  # a server still starting may answer with anything
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)
