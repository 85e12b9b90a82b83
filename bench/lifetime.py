"""What a benchmark starts never outlives it: every ``python -m bench.NAME`` runs its ``main`` through
:func:`run`.

Python's default SIGTERM (``timeout``, a supervisor) kills the process without running a single
``finally``, so the stack, the workers and the simulator a benchmark started kept running (``bench.market``
under ``timeout`` left its broker, anvil and influxd up for 20 minutes). :func:`run`:

1. turns SIGTERM, SIGINT and SIGHUP into :class:`Interrupted` (a ``SystemExit`` with status 128 + the
   signal's number, as a shell reports it), raised where the benchmark is, so its own ``finally`` blocks
   run (``Stack.down()``, stopping its workers), in ``asyncio.run`` too (which then cancels its tasks);
   a second signal while cleaning up is ignored, so the clean-up is not cut short;
2. then, however ``main`` ended (returned, failed, interrupted), stops every process still descending
   from this one: what a benchmark started outside a ``finally`` (a simulator, py-spy), a server whose
   start the signal interrupted before the stack recorded it, and their children. SIGTERM first (a
   server's whole process group: the servers run in sessions of their own), SIGKILL after
   ``grace_s`` for what is left.

A process only the kernel can stop first (SIGKILL of the benchmark itself) is out of reach of any
handler; the benchmarks' temporary directories name their servers' state if that ever happens.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from types import FrameType
from typing import TypeVar

import psutil

T = TypeVar("T")

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class Interrupted(SystemExit):
    """A benchmark stopped by a signal; its exit status is 128 + the signal's number."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # From now on the benchmark is cleaning up: a second signal must not cut that short.
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    print(f"{signal.Signals(signum).name}: stopping what the benchmark started", file=sys.stderr, flush=True)
    raise Interrupted(signum)


def stop_descendants(grace_s: float = 10.0) -> list[int]:
    """Stops every live descendant of this process (TERM to its process group, KILL after ``grace_s``);
    returns their pids."""
    me = psutil.Process()
    try:
        left = me.children(recursive=True)
    except psutil.Error:
        return []
    for process in left:
        try:
            group = os.getpgid(process.pid)
            if group == process.pid and group != os.getpgid(0):
                os.killpg(group, signal.SIGTERM)  # a server in its own session: its children too
            else:
                process.terminate()
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    _, alive = psutil.wait_procs(left, timeout=grace_s)
    for process in alive:
        try:
            process.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=5)
    return [p.pid for p in left]


def run(main: Callable[[], T], grace_s: float = 10.0) -> T:
    """Runs a benchmark's ``main`` so that nothing it started survives it (see the module docstring)."""
    previous = {sig: signal.signal(sig, _interrupt) for sig in SIGNALS}
    try:
        return main()
    finally:
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        stopped = stop_descendants(grace_s)
        if stopped:
            print(f"stopped {len(stopped)} process(es) the benchmark left running: {stopped}", file=sys.stderr)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
