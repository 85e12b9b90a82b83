"""The market's scheduled jobs, on APScheduler with its jobs stored in the market's database.

Jobs are module-level functions (APScheduler stores a job by reference) that find their running
service through a registry, keyed by something stable across restarts (the database URL and topic
prefix). Every job is idempotent against the market state, so a job that runs late, twice, or
after a restart changes nothing twice: closing a slot that is closed appends nothing.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from apscheduler.executors.asyncio import AsyncIOExecutor
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler

if TYPE_CHECKING:
    from marketplace.service import MarketService

log = logging.getLogger(__name__)

CLOSE_JOB = "market-close-due-slots"
ALLOCATE_JOB = "market-allocate-due-slots"
SETTLE_JOB = "market-settle-due-slots"
_RUNNING: dict[str, MarketService] = {}


def service_key(service: MarketService) -> str:
    return f"{service.database_url}#{service.log.topic}"


async def close_due_slots(key: str) -> None:
    service = _RUNNING.get(key)
    if service is None:
        log.warning("close_due_slots: no market service %s is running in this process", key)
        return
    closed = await service.close_due_slots()
    if closed:
        log.info("closed %d slot(s)", closed)


async def allocate_due_slots(key: str) -> None:
    service = _RUNNING.get(key)
    if service is None:
        log.warning("allocate_due_slots: no market service %s is running in this process", key)
        return
    allocated = await service.allocate_due_slots()
    if allocated:
        log.info("allocated %d slot(s)", allocated)


async def settle_due_slots(key: str) -> None:
    service = _RUNNING.get(key)
    if service is None:
        log.warning("settle_due_slots: no market service %s is running in this process", key)
        return
    # What is due for allocation is allocated first, so it settles in this run, not the next.
    await service.allocate_due_slots()
    confirmed = await service.settle_due_slots()
    if confirmed:
        log.info("settled %d slot(s) on chain", confirmed)


def start(service: MarketService) -> AsyncIOScheduler:
    key = service_key(service)
    _RUNNING[key] = service
    scheduler = AsyncIOScheduler(
        jobstores={"default": SQLAlchemyJobStore(engine=service.read_model.engine, tablename="market_scheduler_jobs")},
        executors={"default": AsyncIOExecutor()},
        # A job missed while the service was down runs once at start, however late.
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
    )
    scheduler.start()
    scheduler.add_job(
        close_due_slots,
        "interval",
        seconds=service.close_interval_s,
        args=[key],
        id=CLOSE_JOB,
        replace_existing=True,
    )
    scheduler.add_job(
        allocate_due_slots,
        "interval",
        seconds=service.close_interval_s,
        args=[key],
        id=ALLOCATE_JOB,
        replace_existing=True,
    )
    scheduler.add_job(
        settle_due_slots,
        "interval",
        seconds=service.close_interval_s,
        args=[key],
        id=SETTLE_JOB,
        replace_existing=True,
    )
    return scheduler


def stop(service: MarketService, scheduler: AsyncIOScheduler) -> None:
    scheduler.shutdown(wait=False)
    _RUNNING.pop(service_key(service), None)
