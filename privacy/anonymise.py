"""Anonymisation after a year: per-home detail older than 365 days becomes zone aggregates, then goes.

Over the detail older than the cutoff (``privacy.anonymise_after_days``, 365 by default, counted back
from the run's start to a UTC midnight), 30 days at a time, oldest first:

1. every home's 30-minute values are read from the detail it has: ``reading_10m`` (homes at 1 Hz) and
   ``reading_30m`` (homes that chose 30 minutes): mean apparent power drawn (``drawn_va``) and energy
   withdrawn (``withdrawn_wh``, the difference of the last index of the window and of the window before);
   homes that chose daily data have nothing at 30 minutes and join no aggregate;
2. per zone and window, the homes' count, sum and sum of squares (enough for the group's mean and
   variance) are written to ``zone_reading_30m`` in the rollup policy, tagged by zone only, when the
   group counts at least ``privacy.min_group_homes`` homes (50): a smaller group is never published
   (its detail is dropped all the same, the year is up); energy is published only when at least that
   many homes have an energy value too;
3. once every aggregate is written, every per-meter point before the cutoff is deleted from every
   measurement that holds them (``reading``, ``reading_10m``, ``reading_30m``, ``reading_1d``, ``alert``).

The aggregates are a pure function of the detail and are written before it is deleted, so a run killed
half-way, or run twice, writes the same points again (same series, same times) and then deletes. The job runs on APScheduler, as the market's jobs do (``start_scheduler``),
every ``privacy.anonymise_interval_s``; ``quartier privacy anonymise`` runs it once.

Before the DELETE the job waits until no shard is hot (``hot_shards``, ``wait_for_cold_shards``):
InfluxDB 1.x's DELETE walks every shard of the database, and in a shard whose cache is being written
out to a TSM file at that moment it can drop from the shard's index a series it should keep, so the
points after the cutoff vanish from queries (the engine says so in ``deleteSeriesRange``: "this is
inherently racy"). Reproduced on the stack's InfluxDB 1.6.7: 72 series written over 400 days, a DELETE
of the first 200 days repeated while the shards were written out, 3 runs of 3 lost 2,016-6,048 of the
57,600 points after the range. A backfill, or the aggregates this job has just written, leave shards
hot until InfluxDB's ``cache-snapshot-write-cold-duration`` (30 s in the stack, 10 min by default).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field

import httpx
import stamina
from apscheduler.executors.asyncio import AsyncIOExecutor
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy import Engine

from quartier.line_protocol import escape_tag
from quartier.settings import Settings
from quartier.influx import ROLLUP_POLICY, InfluxError, auth, database_shards, influx_query, quote_ident

log = logging.getLogger(__name__)

AGGREGATE_MEASUREMENT = "zone_reading_30m"
AGGREGATE_POLICY = ROLLUP_POLICY
#: Every measurement holding per-meter points (tag ``meter``), whatever its policy.
PER_METER_MEASUREMENTS = ("reading", "reading_10m", "reading_30m", "reading_1d", "alert")
#: Where a home's 30-minute values come from, in order of preference.
SOURCES = ("reading_10m", "reading_30m")
WINDOW_MS = 30 * 60 * 1000
DAY_MS = 24 * 3600 * 1000
JOB_ID = "privacy-anonymise"
#: How long the job waits for the hot shards' caches to be written out before it gives up (the run is
#: tried again at the next interval): longer than InfluxDB's default cold duration, 10 minutes.
COLD_SHARDS_TIMEOUT_S = 900.0


class HotShards(RuntimeError):
    """Shards hold cached points a DELETE could lose: it must wait (see the module's docstring)."""


@dataclass
class Group:
    homes: int = 0
    drawn_va_sum: float = 0.0
    drawn_va_sum_sq: float = 0.0
    energy_homes: int = 0
    withdrawn_wh_sum: float = 0.0
    withdrawn_wh_sum_sq: float = 0.0

    def line(self, zone: str, start_ms: int, min_homes: int) -> str:
        fields = f"homes={self.homes}i,drawn_va_sum={self.drawn_va_sum},drawn_va_sum_sq={self.drawn_va_sum_sq}"
        if self.energy_homes >= min_homes:
            fields += (
                f",energy_homes={self.energy_homes}i,withdrawn_wh_sum={self.withdrawn_wh_sum},"
                f"withdrawn_wh_sum_sq={self.withdrawn_wh_sum_sq}"
            )
        return f"{AGGREGATE_MEASUREMENT},zone={escape_tag(zone, 'zone')} {fields} {start_ms}"


@dataclass
class Report:
    cutoff_ms: int
    days: int = 0
    aggregates: int = 0  # zone-window points written
    groups_withheld: int = 0  # zone-windows with fewer homes than the minimum: not published
    smallest_group: int | None = None
    homes: set[str] = field(default_factory=set)

    def as_dict(self) -> dict[str, object]:
        return {
            "cutoff_ms": self.cutoff_ms, "days": self.days, "aggregates": self.aggregates,
            "groups_withheld": self.groups_withheld, "smallest_group": self.smallest_group, "homes": len(self.homes),
        }


def cutoff_ms(now_ms: int, days: int) -> int:
    """The UTC midnight at or before ``now - days``: detail before it is anonymised."""
    edge = now_ms - days * DAY_MS
    return edge - edge % DAY_MS


class Anonymiser:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.min_homes = settings.privacy.min_group_homes
        #: Days read per query: 30 days of 50 homes at 30 minutes is about 72,000 rows.
        self.chunk_days = 30

    def _query(self, influxql: str) -> list[dict]:
        return influx_query(self.settings.influx, influxql, timeout_s=120)

    def _write(self, lines: list[str]) -> None:
        if not lines:
            return
        influx = self.settings.influx
        headers, params = auth(influx)
        params = {**params, "db": influx.database, "rp": AGGREGATE_POLICY, "precision": "ms"}
        answer = httpx.post(f"{influx.url}/write", params=params, headers=headers, content="\n".join(lines), timeout=120)
        if answer.status_code != 204:
            raise RuntimeError(f"InfluxDB refused the aggregates ({answer.status_code}): {answer.text[:300]}")

    def oldest_detail_ms(self) -> int | None:
        """The time of the oldest per-meter point, in any measurement and policy."""
        oldest = None
        for policy in ("raw", "rollup"):
            for measurement in PER_METER_MEASUREMENTS:
                rows = self._query(
                    f"SELECT * FROM {quote_ident(policy)}.{quote_ident(measurement)} ORDER BY time ASC LIMIT 1"
                )
                for row in rows:
                    oldest = row["time"] if oldest is None else min(oldest, row["time"])
        return oldest

    def run(self, now_ms: int | None = None) -> Report:
        now_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        report = Report(cutoff_ms(now_ms, self.settings.privacy.anonymise_after_days))
        oldest = self.oldest_detail_ms()
        if oldest is None or oldest >= report.cutoff_ms:
            return report
        first_day = day = oldest - oldest % DAY_MS
        while day < report.cutoff_ms:
            end = min(day + self.chunk_days * DAY_MS, report.cutoff_ms)
            self.aggregate(day, end, report)
            day = end
        self.wait_for_cold_shards()
        # Only once every aggregate is written: a run killed before this line is simply run again.
        # DELETE applies to every retention policy of the database; only per-meter measurements.
        self._query(";".join(
            f"DELETE FROM {quote_ident(m)} WHERE time >= {first_day}ms AND time < {report.cutoff_ms}ms"
            for m in PER_METER_MEASUREMENTS
        ))
        report.days = (report.cutoff_ms - first_day) // DAY_MS
        log.info("anonymised %d day(s) before %d: %d aggregates, %d groups withheld (too small)",
                 report.days, report.cutoff_ms, report.aggregates, report.groups_withheld)
        return report

    def hot_shards(self, now_ms: int) -> list[str]:
        """The database's shards whose cached points a DELETE could lose ("policy/id"), in two kinds:
        a shard that ended before ``now`` and still holds cached points (only a backfill or this job's
        aggregates write there), and a shard with cached points never yet written out (every series
        in it is in the cache alone: a backfill into the open shard, or any shard after a restart)."""
        database = self.settings.influx.database
        past = {str(row["id"]) for row in database_shards(self.settings.influx) if row["end_ms"] <= now_ms}
        stats = influx_query(self.settings.influx, "SHOW STATS FOR 'tsm1_cache'", database=False)
        return sorted(
            f"{row['retentionPolicy']}/{row['id']}" for row in stats
            if row.get("database") == database and row.get("memBytes", 0) > 0
            and (row.get("id") in past or row.get("cachedBytes", 0) == 0)
        )

    def wait_for_cold_shards(self, timeout_s: float = COLD_SHARDS_TIMEOUT_S) -> None:
        """Returns once no shard is hot (``hot_shards``); raises ``HotShards`` after ``timeout_s``.

        Now is the wall clock's, whatever the run's ``now``. The open shards that live writes keep
        cached are not waited for once written out at least once: a series of theirs is then on disk
        too, except one that first appeared since (docs/privacy.md says what that leaves).
        """
        try:
            for attempt in stamina.retry_context(on=HotShards, attempts=None, timeout=timeout_s, wait_initial=1.0, wait_max=10.0):
                with attempt:
                    if hot := self.hot_shards(time.time_ns() // 1_000_000):
                        raise HotShards(f"shards still cached: {', '.join(hot)}")
        except InfluxError as exc:
            # SHOW SHARDS and SHOW STATS need an admin user; without one the job cannot see the race coming.
            log.warning("anonymisation: cannot see InfluxDB's caches (%s); deleting without waiting", exc)

    def home_windows(self, from_ms: int, to_ms: int) -> dict[tuple[str, str], dict[int, tuple[float | None, float | None]]]:
        """(zone, meter) -> window start -> (mean drawn VA, energy withdrawn Wh), windows in [from, to)."""
        homes: dict[tuple[str, str], dict[int, tuple[float | None, float | None]]] = {}
        # The window before the span too: its last index is where the first window's energy starts.
        start, end = from_ms - WINDOW_MS, to_ms
        for measurement in SOURCES:
            rows = self._query(
                f'SELECT mean("drawn_va") AS drawn_va, last("withdrawn_wh") AS withdrawn_wh '
                f'FROM "rollup".{quote_ident(measurement)} WHERE time >= {start}ms AND time < {end}ms '
                f'GROUP BY time(30m), "meter", "zone" fill(none)'
            )
            series: dict[tuple[str, str], list[dict]] = defaultdict(list)
            for row in rows:
                series[(row.get("zone") or "", row["meter"])].append(row)
            for home, points in series.items():
                if home in homes:
                    continue  # a home with both kinds of detail: the finer one counts
                windows: dict[int, tuple[float | None, float | None]] = {}
                previous_index, previous_time = None, None
                for point in sorted(points, key=lambda r: r["time"]):
                    index = point["withdrawn_wh"]
                    # Energy needs the index at the end of the window just before (fill(none) leaves
                    # windows without points out: a gap means no energy for the window after it).
                    follows = previous_time == point["time"] - WINDOW_MS
                    energy = index - previous_index if follows and index is not None and previous_index is not None else None
                    previous_index, previous_time = index, point["time"]
                    if point["time"] >= from_ms and (point["drawn_va"] is not None or energy is not None):
                        windows[point["time"]] = (point["drawn_va"], energy)
                if windows:
                    homes[home] = windows
        return homes

    def aggregate(self, from_ms: int, to_ms: int, report: Report) -> None:
        """Writes the zone aggregates of the windows in [from, to)."""
        groups: dict[tuple[str, int], Group] = defaultdict(Group)
        for (zone, meter), windows in self.home_windows(from_ms, to_ms).items():
            report.homes.add(meter)
            for start, (drawn_va, energy) in windows.items():
                group = groups[(zone, start)]
                if drawn_va is not None and math.isfinite(drawn_va):
                    group.homes += 1
                    group.drawn_va_sum += drawn_va
                    group.drawn_va_sum_sq += drawn_va * drawn_va
                if energy is not None and math.isfinite(energy):
                    group.energy_homes += 1
                    group.withdrawn_wh_sum += energy
                    group.withdrawn_wh_sum_sq += energy * energy
        lines = []
        for (zone, start), group in sorted(groups.items()):
            if group.homes >= self.min_homes:
                lines.append(group.line(zone, start, self.min_homes))
                report.smallest_group = group.homes if report.smallest_group is None else min(report.smallest_group, group.homes)
            else:
                report.groups_withheld += 1
        for start in range(0, len(lines), 5000):
            self._write(lines[start : start + 5000])
        report.aggregates += len(lines)


# --- the schedule ---------------------------------------------------------------------------------


async def anonymise_job() -> None:
    """The scheduled job: module-level, with no arguments (nothing secret is pickled into the job store);
    the settings are the running process's own."""
    report = await asyncio.to_thread(Anonymiser(Settings()).run)
    if report.days:
        log.info("anonymisation: %s", report.as_dict())


def start_scheduler(settings: Settings, engine: Engine) -> AsyncIOScheduler:
    scheduler = AsyncIOScheduler(
        jobstores={"default": SQLAlchemyJobStore(engine=engine, tablename="privacy_scheduler_jobs")},
        executors={"default": AsyncIOExecutor()},
        # A run missed while the service was down runs once at start, however late.
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
    )
    scheduler.start()
    scheduler.add_job(
        anonymise_job, "interval", seconds=settings.privacy.anonymise_interval_s, id=JOB_ID, replace_existing=True,
    )
    return scheduler
