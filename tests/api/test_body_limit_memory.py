"""A 300 MB body is refused at once, in a real server process, without the server's memory growing."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

BODY_BYTES = 300 * 1024 * 1024
CHUNK = b"x" * (1024 * 1024)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, psutil.Process]]:
    port = _free_port()
    env = {**os.environ, "QUARTIER_STATE_DIR": str(tmp_path_factory.mktemp("api-state"))}
    process = subprocess.Popen([sys.executable, "-m", "tests.api.serve_notes", str(port)], env=env,
                               cwd=Path(__file__).resolve().parents[2])
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert process.poll() is None and time.monotonic() < deadline, "the notes server did not start"
        time.sleep(0.1)
    try:
        yield port, psutil.Process(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=30)


class PeakRss:
    """Samples a process's resident memory every 5 ms while in use."""

    def __init__(self, process: psutil.Process) -> None:
        self.process = process
        self.peak = process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.005)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def _stream(port: int, head: bytes, chunks: Iterator[bytes]) -> tuple[bytes, int]:
    """Sends the head, then the body chunk by chunk until the server answers; returns the answer's
    first bytes and how many body bytes were sent by then."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(head)
        for chunk in chunks:
            if select.select([sock], [], [], 0)[0]:
                break
            try:
                sock.sendall(chunk)
            except OSError:  # the server answered and closed: the answer is in the socket's buffer
                break
            sent += len(chunk)
        sock.settimeout(10)
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.partition(b"\r\n\r\n")[2]) < _length(answer):
            data = sock.recv(65536)
            if not data:
                break
            answer += data
        return answer, sent


def _length(answer: bytes) -> int:
    for line in answer.partition(b"\r\n\r\n")[0].split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def _head(port: int, extra: str) -> bytes:
    return (f"POST /v1/notes HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer tok_member\r\n"
            f"Content-Type: application/json\r\n{extra}\r\n").encode()


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_300_mb_body_gets_413_at_once_and_memory_stays_flat(server: tuple[int, psutil.Process],
                                                               framing: str) -> None:
    port, process = server
    idle = process.memory_info().rss
    if framing == "content-length":
        head = _head(port, f"Content-Length: {BODY_BYTES}\r\n")
        chunks: Iterator[bytes] = iter([CHUNK] * (BODY_BYTES // len(CHUNK)))
    else:
        head = _head(port, "Transfer-Encoding: chunked\r\n")
        framed = f"{len(CHUNK):x}\r\n".encode() + CHUNK + b"\r\n"
        chunks = iter([framed] * (BODY_BYTES // len(CHUNK)))
    with PeakRss(process) as rss:
        answer, sent = _stream(port, head, chunks)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert b'"error":"too_large"' in answer and b'"field":"body"' in answer
    assert sent < BODY_BYTES // 4, f"the server let {sent} bytes in before answering"
    assert rss.peak - idle < 50 * 1024 * 1024, f"peak RSS {rss.peak / 2**20:.0f} MiB, idle {idle / 2**20:.0f} MiB"
    # The server is still fine.
    assert httpx.get(f"http://127.0.0.1:{port}/v1/health").status_code == 200
