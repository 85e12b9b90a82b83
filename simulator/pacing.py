"""The rate controller: each step goes out at its wall-clock time, and how late it was is measured.

Step ``k`` is due at ``wall0 + k * interval / speed``. In real time (speed 1, starting now) ``wall0``
is the simulated start itself, so the readings stamped second ``s`` leave at wall-clock second
``s``. Speed 0 means no pacing: as fast as the broker takes it (backfill). Lag is the time from a
step's due moment to the broker's acknowledgement of its last message; the achieved rate counts
the frames acknowledged over the run's wall time.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass


@dataclass
class RateController:
    interval_s: float
    speed: float
    #: Wall-clock time (Unix s) step 0 is due; ``None`` starts the clock at the first ``wait``.
    wall0: float | None = None
    frames_acked: int = 0
    max_lag_s: float = 0.0
    last_ack: float = 0.0

    def due(self, step: int) -> float:
        if self.wall0 is None:
            self.wall0 = time.time()
        if self.speed <= 0:
            return self.wall0
        return self.wall0 + step * self.interval_s / self.speed

    async def wait(self, step: int) -> float:
        """Sleeps until ``step`` is due; returns its due time."""
        due = self.due(step)
        if self.speed > 0:
            delay = due - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
        return due

    def acked(self, step: int, due: float, frames: int) -> None:
        """The broker acknowledged all of ``step``'s messages now."""
        now = time.time()
        lag = max(0.0, now - due) if self.speed > 0 else 0.0
        self.max_lag_s = max(self.max_lag_s, lag)
        self.frames_acked += frames
        self.last_ack = max(self.last_ack, now)

    def elapsed_s(self, steps: int) -> float:
        """Wall time of the run: from step 0's due time to the later of the last acknowledgement
        and the end of the last step's interval (a run on time lasts ``steps`` intervals)."""
        if self.wall0 is None:
            return 0.0
        scheduled_end = self.wall0 + (steps * self.interval_s / self.speed if self.speed > 0 else 0.0)
        return max(self.last_ack, scheduled_end) - self.wall0

    def achieved_rate(self, steps: int) -> float:
        elapsed = self.elapsed_s(steps)
        return self.frames_acked / elapsed if elapsed > 0 else 0.0
