"""An ASGI app served by uvicorn on a free loopback port, in a thread with its own event loop."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

import httpx
import uvicorn


class Served:
    def __init__(self, app: Any) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self._thread = threading.Thread(target=self._run, name="served-app", daemon=True)
        self._error: BaseException | None = None

    def _run(self) -> None:
        try:
            asyncio.run(self._server.serve(sockets=[self._sock]))
        except BaseException as exc:  # reported by start()
            self._error = exc

    def start(self) -> Served:
        self._thread.start()
        deadline = time.monotonic() + 60
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the app did not start: {self._error!r}")
            time.sleep(0.02)
        return self

    def wait_ready(self, timeout_s: float = 60) -> Served:
        """Until GET /v1/ready answers 200: every composed surface can serve (the console has joined the broker)."""
        deadline = time.monotonic() + timeout_s
        while (answer := httpx.get(f"{self.url}/v1/ready")).status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the app did not get ready: {answer.text}")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)
        self._sock.close()
