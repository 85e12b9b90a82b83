"""Acknowledges a consumed message only once everything it produced is durable (issue 12).

Faust commits a partition's offset up to the first message not acknowledged. Acknowledged as soon as
the agent had handled it, a message's InfluxDB points could still be in the writer's memory (up to
its bound, 2,000,000 points, while InfluxDB is slow or away) when its offset was committed: a kill -9
then lost them for good, the restarted worker resuming after the offset. So a handled message waits
here until each writer's ``durable_mark`` has reached the mark the writer gave after the message's
lines (InfluxDB acknowledged them, or they are in the fsynced spool) and each record it sent (a rejected
reading, a slot, a state change) is acknowledged by the broker; then it is acknowledged to Faust.

Messages are acknowledged in the order they were handled, which keeps each partition's acknowledgements
in offset order: Faust's commit takes the first run of consecutive acknowledged offsets
(``Consumer._new_offset``), and an acknowledgement ahead of a hole is not safe there (a hole of exactly
one offset after the committed one is skipped over). The cost is one small record per message and a
look at the head of the line when a writer's mark moves or a send completes; nothing per reading.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

M = TypeVar("M")


@dataclass(slots=True)
class Held(Generic[M]):
    """A handled message, the writers' marks after its lines, and how many of its sends are not acknowledged."""

    message: M
    marks: tuple[int, ...]
    sends: int


class DurableAcks(Generic[M]):
    """Handled messages waiting for their outputs to be durable, acknowledged in order once they are.

    ``durable``: each writer's durable mark, in the order of the marks given to ``hold``; ``ack``
    acknowledges a message to the consumer; ``failed`` is told of a send the broker did not take (the
    message is then never acknowledged: the worker must stop and replay it).
    """

    def __init__(
        self, durable: Sequence[Callable[[], int]], ack: Callable[[M], None], failed: Callable[[BaseException], None]
    ) -> None:
        self._durable = tuple(durable)
        self._ack = ack
        self._failed = failed
        self._held: deque[Held[M]] = deque()

    def __len__(self) -> int:
        """Messages handled and not yet acknowledged."""
        return len(self._held)

    def hold(self, message: M, marks: tuple[int, ...], sends: Sequence[asyncio.Future[object]] = ()) -> None:
        """A message is handled: acknowledged now if everything it produced is durable, else once it is."""
        pending = [send for send in sends if not send.done() or send.cancelled() or send.exception() is not None]
        if not self._held and not pending and self._reached(marks):
            self._ack(message)
            return
        held = Held(message, marks, len(pending))
        self._held.append(held)
        for send in pending:
            send.add_done_callback(lambda done, held=held: self._sent(held, done))  # type: ignore[misc]

    def release(self) -> None:
        """Acknowledges, from the oldest, every message whose outputs are now durable (a writer's mark moved)."""
        held = self._held
        while held and held[0].sends == 0 and self._reached(held[0].marks):
            self._ack(held.popleft().message)

    def forget(self) -> None:
        """Drops every held message unacknowledged: after a rebalance Faust reads from the committed offsets
        again, so each of them is handled (and acknowledged) anew."""
        self._held.clear()

    def _reached(self, marks: tuple[int, ...]) -> bool:
        return all(mark <= durable() for mark, durable in zip(marks, self._durable))

    def _sent(self, held: Held[M], send: asyncio.Future[object]) -> None:
        error = asyncio.CancelledError() if send.cancelled() else send.exception()
        if error is not None:
            self._failed(error)
            return
        held.sends -= 1
        if held.sends == 0:
            self.release()
