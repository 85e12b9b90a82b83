"""The push channel spread over worker processes, each an :class:`FcmChannel` with its own threads.

One process's push threads share its interpreter lock, and a push costs about 0.8 ms of
firebase-admin/requests CPU, so one process tops out near 1,000 pushes/s on this machine;
measured with the same local endpoint, two processes sent 1,650/s where one sent 1,100/s
(docs/notifier.md). A batch is cut into one contiguous slice per process; each worker sends its
slice on its threads and journals each acceptance itself, the moment FCM answers (the journal is
one O_APPEND file: lines from several processes never interleave), so a kill leaves the same
window as one process. Outcomes come back in the order given.

If a worker dies (killed, out of memory), the pool is replaced at once; of the batch in hand, what
the journal shows FCM accepted is ``sent`` and the rest a transient failure, retried later.

Workers are started with ``spawn`` (the notifier has threads and open connections a ``fork``
would copy) and ask the kernel to kill them when the notifier dies (``PR_SET_PDEATHSIG``): after a
``kill -9`` of the notifier, no orphan keeps sending a slice the restarted notifier will replay.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import multiprocessing
import os
import signal
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from quartier.settings import FcmSettings
from notifier.channels.fcm import FcmChannel
from notifier.notification import Notification, Outcome
from notifier.sent_log import SentJournal, SentKey

log = logging.getLogger(__name__)

#: linux/prctl.h: deliver a signal to this process when its parent dies.
PR_SET_PDEATHSIG = 1

#: The worker process's channel, built once by ``_start_worker``.
_channel: FcmChannel | None = None


class FcmProcesses:
    name = "push"

    def __init__(self, fcm: FcmSettings, journal_path: Path | None, processes: int, threads: int) -> None:
        if processes < 2:
            raise ValueError(f"push_processes must be at least 2 for worker processes, got {processes}")
        self.processes = processes
        self.journal_path = journal_path
        self._initargs = (fcm.model_dump_json(), str(journal_path) if journal_path else None, threads, os.getpid())
        self.pool = self._start_pool()

    def _start_pool(self) -> ProcessPoolExecutor:
        pool = ProcessPoolExecutor(
            self.processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=self._initargs,
        )
        # Start every worker now (a spawned interpreter takes a second or two to import
        # firebase-admin), not on the first alert; from this thread, whose end the workers watch.
        for _ in range(self.processes):
            pool.submit(_ready)
        return pool

    async def send(self, notifications: Sequence[Notification]) -> list[Outcome]:
        size = -(-len(notifications) // self.processes)  # ceiling: every process gets a slice
        slices = [list(notifications[i : i + size]) for i in range(0, len(notifications), size)]
        results = await asyncio.gather(*(self._send_slice(part) for part in slices), return_exceptions=True)
        accepted: dict[SentKey, str | None] = {}
        if any(isinstance(r, BrokenProcessPool) for r in results):
            log.error("a push worker process died; starting new ones")
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = self._start_pool()
            accepted = self._journaled()
        outcomes: list[Outcome] = []
        for part, result in zip(slices, results):
            if isinstance(result, BrokenProcessPool):
                outcomes += [_after_worker_died(n, accepted) for n in part]
            elif isinstance(result, BaseException):
                raise result
            else:
                outcomes += result
        return outcomes

    async def _send_slice(self, part: list[Notification]) -> list[Outcome]:
        # Inside a coroutine, so that a pool already broken (``submit`` raises) is a result too.
        return await asyncio.get_running_loop().run_in_executor(self.pool, _send, part)

    def _journaled(self) -> dict[SentKey, str | None]:
        if self.journal_path is None:
            return {}
        return {key: provider_id for key, provider_id, _ in SentJournal.read_path(self.journal_path)}

    async def close(self) -> None:
        await asyncio.to_thread(self.pool.shutdown, wait=True, cancel_futures=True)


def _after_worker_died(notification: Notification, accepted: dict[SentKey, str | None]) -> Outcome:
    """What the journal knows of a notification whose worker died: sent, or not known to be."""
    if all(key in accepted for key in notification.keys):
        return Outcome(notification, "sent", provider_id=accepted[notification.key])
    return Outcome(notification, "failed", reason="push worker process died before FCM answered", transient=True)


def _start_worker(fcm_json: str, journal_path: str | None, threads: int, notifier_pid: int) -> None:
    """Runs once in each worker process."""
    global _channel
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
    if os.getppid() != notifier_pid:  # the notifier died before the signal was armed
        os._exit(1)
    from notifier.firebase import firebase_app
    from notifier.render import Renderer
    from notifier.sent_log import SentJournal

    # The notifier decides when its workers stop: a Ctrl-C or a SIGTERM to its process group must
    # not kill them under the window the notifier is finishing (it dies, they die: PDEATHSIG). So
    # they leave the group rather than ignore the signals: the pool's own SIGTERM, when it replaces
    # a broken pool, must still end them (ignored, it left the pool's manager thread waiting for
    # them for ever, and the interpreter with it at exit).
    os.setpgid(0, 0)
    journal = SentJournal(Path(journal_path), exclusive=False) if journal_path else None
    _channel = FcmChannel(firebase_app(FcmSettings.model_validate_json(fcm_json)), Renderer(), journal, threads)


def _ready() -> None:
    pass


def _send(notifications: list[Notification]) -> list[Outcome]:
    assert _channel is not None, "worker not started"
    return _channel.send_blocking(notifications)
