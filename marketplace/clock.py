"""The market's notion of now: the system clock, or one a test or a replayed day moves by hand.

Gate closure and slot closing read this clock, never ``time`` directly, so tests can walk a market
through a day without waiting for it.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
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


class FileClock:
    """Now is the integer (ms since the epoch) a file holds: a clock another process moves.

    For drills and replayed days that run the market as its own process (``market.clock_file``): the
    test writes the time to the file, as it would call :meth:`ManualClock.set` in-process, and a
    restarted market reads the same time. The file is read at every call; the market asks for the
    time once per command and per scheduler tick.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def now_ms(self) -> int:
        return int(self.path.read_text())

    def set(self, now_ms: int) -> None:
        """Writes the time whole: a reader never sees half a number."""
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(str(now_ms))
        tmp.replace(self.path)


def clock_for(clock_file: Path | None) -> Clock:
    """The market's clock as the settings give it: the system clock, or the file's."""
    return SystemClock() if clock_file is None else FileClock(clock_file)
