"""The market's scheduled jobs, on APScheduler: closing slots at their gate, allocating them from the
meters, settling them on chain.

The jobs are the running service's own coroutines, handed in (:class:`MarketJobs`): no registry to
find the service by, and this module knows nothing of the service. They live in memory with the
scheduler that runs them. Nothing about them needs to outlive the process: every job looks for what
is due itself and is idempotent against the market state (closing a slot that is closed appends
nothing), so at start each runs at once (catching up what came due while the service was down), then
every interval.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone

from apscheduler.executors.asyncio import AsyncIOExecutor
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler

log = logging.getLogger(__name__)

CLOSE_JOB = "market-close-due-slots"
ALLOCATE_JOB = "market-allocate-due-slots"
SETTLE_JOB = "market-settle-due-slots"

Job = Callable[[], Awaitable[int]]


@dataclass(frozen=True)
class MarketJobs:
    """What the scheduler runs; each returns how many slots it moved on."""

    close_due_slots: Job
    allocate_due_slots: Job
    settle_due_slots: Job


class MarketScheduler:
    def __init__(self, jobs: MarketJobs, interval_s: float) -> None:
        self.jobs = jobs
        self.interval_s = interval_s
        self._scheduler: AsyncIOScheduler | None = None

    async def _close(self) -> None:
        if closed := await self.jobs.close_due_slots():
            log.info("closed %d slot(s)", closed)

    async def _allocate(self) -> None:
        if allocated := await self.jobs.allocate_due_slots():
            log.info("allocated %d slot(s)", allocated)

    async def _settle(self) -> None:
        # What is due for allocation is allocated first, so it settles in this run, not the next.
        await self.jobs.allocate_due_slots()
        if confirmed := await self.jobs.settle_due_slots():
            log.info("settled %d slot(s) on chain", confirmed)

    def start(self) -> None:
        scheduler = AsyncIOScheduler(
            jobstores={"default": MemoryJobStore()},
            executors={"default": AsyncIOExecutor()},
            # One run of a job at a time; a run missed while the loop was busy runs once, however late.
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        now = datetime.now(timezone.utc)
        for job_id, run in ((CLOSE_JOB, self._close), (ALLOCATE_JOB, self._allocate), (SETTLE_JOB, self._settle)):
            scheduler.add_job(run, "interval", seconds=self.interval_s, id=job_id, next_run_time=now)
        scheduler.start()
        self._scheduler = scheduler

    def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
