"""Anonymisation over a backfilled year: no per-home point older than 365 days, only groups of 50 or more."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from privacy.anonymise import DAY_MS, Anonymiser, HotShards, cutoff_ms
from quartier.influx import count_points, database_shards, ensure_database, query
from tests.support import isolated_settings

NOW_MS = 1_796_000_000_000 - 1_796_000_000_000 % DAY_MS + 13 * 3600_000  # 13:00 UTC on some day
TEN_MIN_MS = 600_000


def write(settings: Any, lines: list[str], policy: str) -> None:
    for start in range(0, len(lines), 20_000):
        answer = httpx.post(
            f"{settings.influx.url}/write",
            params={"db": settings.influx.database, "rp": policy, "precision": "ms"},
            content="\n".join(lines[start : start + 20_000]), timeout=60,
        )
        assert answer.status_code == 204, answer.text


def backfill(settings: Any) -> dict[str, int]:
    """400 days of 10-minute rollup points, as a backfill writes them (to the rollup policy).

    Zone north has 60 homes, zone south 12 (too few to publish). Each home draws 100 + i VA and its
    index grows 10 + i Wh every 10 minutes. Points every 6 hours, and every 10 minutes over the three
    days before the cutoff (so 30-minute energies exist there). One north home chose daily data.
    """
    cut = cutoff_ms(NOW_MS, 365)
    times = sorted({*range(NOW_MS - 400 * DAY_MS - 13 * 3600_000, NOW_MS, 6 * 3600_000), *range(cut - 3 * DAY_MS, cut, TEN_MIN_MS)})
    lines, daily = [], []
    for zone, homes in (("north", 60), ("south", 12)):
        for i in range(homes):
            meter = f"{'1' if zone == 'north' else '2'}{i:011d}"
            for t in times:
                index = 1_000_000 + (t // TEN_MIN_MS) * (10 + i)
                lines.append(
                    f"reading_10m,meter={meter},zone={zone} drawn_va={100 + i}.0,drawn_va_max={200 + i}i,"
                    f"withdrawn_wh={index}i,injected_wh=0i {t}"
                )
    for t in range(cut - 30 * DAY_MS, NOW_MS, DAY_MS):
        daily.append(f"reading_1d,meter=300000000001,zone=north drawn_va=150.0,withdrawn_wh={t // 1000}i,readings=86400i {t}")
    write(settings, lines + daily, "rollup")
    return {"cutoff": cut, "after": sum(1 for t in times if t >= cut) * 72, "daily_after": len(range(cut, NOW_MS, DAY_MS))}


def test_after_the_job_no_home_point_older_than_a_year_remains_and_every_group_counts_50_homes(
    influx: dict[str, Any], tmp_path: Path
) -> None:
    settings = isolated_settings(tmp_path / "state", influx)
    ensure_database(settings)
    counts = backfill(settings)
    cut = counts["cutoff"]
    # The backfill's points are all still in InfluxDB's cache: the job must not delete while they are
    # (a DELETE racing the cache's write-out loses points after the cutoff; privacy/anonymise.py).
    shards = database_shards(settings.influx)
    assert len(shards) == 59  # 400 days of weekly rollup shards
    wall_ms = time.time_ns() // 1_000_000
    assert Anonymiser(settings).hot_shards(wall_ms) == sorted(f"rollup/{row['id']}" for row in shards)
    with pytest.raises(HotShards, match=f"rollup/{shards[0]['id']}"):
        Anonymiser(settings).wait_for_cold_shards(timeout_s=0.5)

    report = Anonymiser(settings).run(NOW_MS)

    assert Anonymiser(settings).hot_shards(time.time_ns() // 1_000_000) == []

    assert report.cutoff_ms == cut == NOW_MS - 13 * 3600_000 - 365 * DAY_MS
    for measurement in ("reading_10m", "reading_1d"):
        assert count_points(settings, measurement, f"time < {cut}ms", retention_policy="rollup") == 0
    assert count_points(settings, "reading_10m", f"time >= {cut}ms", retention_policy="rollup") == counts["after"]
    assert count_points(settings, "reading_1d", f"time >= {cut}ms", retention_policy="rollup") == counts["daily_after"]
    aggregates = query(settings, 'SELECT * FROM "rollup"."zone_reading_30m"')
    assert aggregates and all(row["homes"] >= 50 for row in aggregates)
    assert {row["zone"] for row in aggregates} == {"north"}  # south's 12 homes are never published
    assert all(row["time"] < cut for row in aggregates)
    assert report.groups_withheld > 0 and report.smallest_group == 60
    # One window of the dense days: the 60 north homes, exactly (the daily home is in no 30-minute group).
    window = next(row for row in aggregates if row["time"] == cut - 2 * 3600_000)
    powers = [100 + i for i in range(60)]
    energies = [3 * (10 + i) for i in range(60)]  # three 10-minute steps from one window's last index to the next
    assert (window["homes"], window["drawn_va_sum"], window["drawn_va_sum_sq"]) == (
        60, float(sum(powers)), float(sum(p * p for p in powers))
    )
    assert (window["energy_homes"], window["withdrawn_wh_sum"], window["withdrawn_wh_sum_sq"]) == (
        60, float(sum(energies)), float(sum(e * e for e in energies))
    )
    # Sparse windows (6-hourly points) have no previous index: no energy, but the power aggregate.
    sparse = next(row for row in aggregates if row["time"] == cut - 30 * DAY_MS)
    assert sparse["homes"] == 60 and sparse["energy_homes"] is None

    again = Anonymiser(settings).run(NOW_MS)  # nothing left to anonymise; the aggregates stay as they were
    assert (again.days, again.aggregates) == (0, 0)
    assert query(settings, 'SELECT * FROM "rollup"."zone_reading_30m"') == aggregates


async def test_the_job_is_scheduled_on_apscheduler_with_its_interval_and_persisted(tmp_path: Path) -> None:
    from privacy.anonymise import JOB_ID, anonymise_job, start_scheduler
    from quartier.sql import privacy_engine

    settings = isolated_settings(tmp_path / "state", privacy={"anonymise_interval_s": 3600})
    engine = privacy_engine(settings, [])
    scheduler = start_scheduler(settings, engine)
    try:
        job = scheduler.get_job(JOB_ID)
        assert job.func is anonymise_job and job.trigger.interval.total_seconds() == 3600
    finally:
        scheduler.shutdown(wait=False)
    import sqlite3

    stored = sqlite3.connect(settings.state_dir / "privacy.db").execute("SELECT id FROM privacy_scheduler_jobs").fetchall()
    assert stored == [(JOB_ID,)]
