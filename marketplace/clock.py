"""The market's notion of now: the system clock, or one a test or a replayed day moves by hand.

Gate closure and slot closing read this clock, never ``time`` directly, so tests can walk a market
through a day without waiting for it.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int: ...


class SystemClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


class ManualClock:
    """A clock that stands still until moved (thread-safe: the API may run in another thread)."""

    def __init__(self, now_ms: int) -> None:
        self._now_ms = now_ms
        self._lock = threading.Lock()

    def now_ms(self) -> int:
        with self._lock:
            return self._now_ms

    def set(self, now_ms: int) -> None:
        with self._lock:
            self._now_ms = now_ms

    def advance(self, ms: int) -> None:
        with self._lock:
            self._now_ms += ms
