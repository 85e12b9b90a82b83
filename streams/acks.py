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
from collections.abc import Awaitable, Callable, Sequence
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


class SendsAfter:
    """Records sent to the broker in the order they were asked for, each once what it depends on is done.

    The alert state's changelog needs it. A state saved as "raised" must not reach the broker before
    the event that raised it is acknowledged and its history point spooled: after a crash that lost
    the event, a replay would find the state raised and never raise it again. The agent used to await
    those acknowledgements before handling the next message, and on the durable log (an S3 round trip,
    about 100 ms a produce) that stalled every worker several times a second at the fleet's rate, each
    reading queued behind it. Here the agent goes on at once; the record waits for its dependencies
    instead, and the message that caused it waits for the record (``DurableAcks``), so what is committed
    is unchanged.

    Order: a record asked for while an earlier one still waits goes after it, even with nothing of its
    own to wait for, so each key's last record in the changelog is its latest state.
    """

    def __init__(self, failed: Callable[[BaseException], None]) -> None:
        self._failed = failed
        self._queue: deque[tuple[Sequence[asyncio.Future[object]], Callable[[], Awaitable[asyncio.Future[object]]],
                                 asyncio.Future[object]]] = deque()
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        """Records asked for and not yet handed to the producer."""
        return len(self._queue)

    def send(
        self, after: Sequence[asyncio.Future[object]], send: Callable[[], Awaitable[asyncio.Future[object]]]
    ) -> asyncio.Future[object]:
        """Queues ``send()`` (which hands a record to the producer and returns its acknowledgement) to run once
        every future of ``after`` is done; returns a future done when the broker acknowledged the record."""
        acked: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._queue.append((after, send, acked))
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())
        return acked

    async def drained(self) -> None:
        """Returns once every record asked for so far is handed to the producer (or the queue failed)."""
        while self._task is not None:
            await asyncio.shield(self._task)

    async def _run(self) -> None:
        try:
            while self._queue:
                after, send, acked = self._queue[0]
                try:
                    for dependency in after:
                        await dependency
                    ack = await send()
                except Exception as error:
                    # Nothing queued can go out in order any more: the worker stops and replays.
                    for _, _, waiting in self._queue:
                        waiting.set_exception(error)
                    self._queue.clear()
                    self._failed(error)
                    return
                ack.add_done_callback(lambda done, acked=acked: _copy(done, acked))  # type: ignore[misc]
                self._queue.popleft()
        finally:
            self._task = None


def _copy(done: asyncio.Future[object], into: asyncio.Future[object]) -> None:
    if into.done():
        return
    if done.cancelled():
        into.cancel()
    elif (error := done.exception()) is not None:
        into.set_exception(error)
    else:
        into.set_result(done.result())
