"""Erasure and export times: one household forgotten by every store, one meter's readings exported.

Starts a private broker, InfluxDB and SMTP server, creates a household through the accounts service
(sign-up, household, pairing, a phone, notifications), registers it with the notifier, and fills
InfluxDB with ``--meters`` meters' series (the fleet: 48,000) of ``--points-per-meter`` readings each,
plus ``--export-days`` days of 1 Hz readings of the household's meter. Then:

- ``erase_s``: from ``erasure_requested`` to ``erasure_completed`` (``privacy.erasure``, every store);
  baseline: the bare ``DROP SERIES`` of one other meter, measured in the same run (``erase_baseline_s``);
- ``export_s``: ``privacy.export.export_household`` at 1 Hz over the exported days (CSV + JSON), and its
  rate in points per second; baseline: the range's last day read in one query through the ordinary
  client (``quartier.influx.influx_query``, JSON), no file (``export_baseline_rate_pts_s``); ``export_ratio``
  is the export's rate over the baseline's;
  ``export_year_s`` is measured when ``--export-days`` is 365 or more, else given as
  ``export_year_s_extrapolated`` (the CSV part, ``export_csv_s``, x 365 / days, plus the rest), named so.

    python -m bench.privacy [--meters 48000] [--points-per-meter 10] [--export-days 1] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench import lifetime
from quartier import pairing
from quartier.influx import ensure_database, influx_query
from quartier.kafka import ensure_topics
from quartier.settings import Settings
from quartier.stack import Stack
from quartier.stack.broker import Broker
from quartier.stack.influx import Influx
from quartier.stack.smtp import SmtpServer

ZONE = "zone-bench"
METER = "031899999999"
DAY_MS = 86_400_000


def write_lines(settings: Settings, lines: list[str]) -> None:
    with httpx.Client(timeout=300) as client:
        for start in range(0, len(lines), 20_000):
            answer = client.post(f"{settings.influx.url}/write",
                                 params={"db": settings.influx.database, "rp": "raw", "precision": "ms"},
                                 content="\n".join(lines[start : start + 20_000]))
            answer.raise_for_status()


def fill_influx(settings: Settings, meters: int, per_meter: int, export_days: float, now_ms: int) -> int:
    written = 0
    for first in range(0, meters, 2_000):
        lines = [
            f"reading,meter={m:012d},zone=zone-{m % 60} drawn_va={300 + m % 5000}i,withdrawn_wh={1_000_000 + k}i "
            f"{now_ms - (per_meter - k) * 1000}"
            for m in range(first, min(first + 2_000, meters)) for k in range(per_meter)
        ]
        write_lines(settings, lines)
        written += len(lines)
    seconds = int(export_days * 86_400)
    start = now_ms - seconds * 1000
    for first in range(0, seconds, 200_000):
        lines = [f"reading,meter={METER},zone={ZONE} drawn_va={i % 7000}i,withdrawn_wh={5_000_000 + i}i,injected_va=0i,"
                 f"injected_wh=0i {start + i * 1000}" for i in range(first, min(first + 200_000, seconds))]
        write_lines(settings, lines)
        written += len(lines)
    return written


async def make_household(settings: Settings) -> str:
    from accounts import commands
    from accounts.operations import AccountOperations
    from accounts.service import AccountsService
    from notifier.contacts import DeviceToken, MeterOwner, User
    from notifier.database import notifier_engine
    from sqlmodel import Session

    service = AccountsService(settings, follow_interval_s=0)
    await service.start()
    ops = AccountOperations(settings, service)
    tag = secrets.token_hex(4)
    try:
        await ops.sign_up(email=f"bench.{tag}@example.test", name=f"Bench {tag}", password="a long enough password")
        account = service.state.account_by_email(f"bench.{tag}@example.test").account  # type: ignore[union-attr]
        household = await ops.create_household(account, "Chez Bench")
        await ops.pair(account, meter=METER, zone=ZONE, code=pairing.pairing_code(METER, ZONE))
        await service.execute(lambda s, now: commands.add_device(s, account, device_token=f"tok-{tag}", now_ms=now))
    finally:
        await service.stop()
    engine = notifier_engine(settings)
    with Session(engine) as session:
        session.add(User(id=account, email=f"bench.{tag}@example.test"))
        session.add(MeterOwner(meter=METER, user_id=account))
        session.add(DeviceToken(token=f"tok-{tag}", user_id=account))
        session.commit()
    engine.dispose()
    return household


async def measure(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    from privacy.erasure import ErasureSaga
    from privacy.export import export_household, write_readings_csv

    await ensure_topics(settings)
    ensure_database(settings)
    now_ms = int(time.time() * 1000)
    household = await make_household(settings)
    began = time.perf_counter()
    points = fill_influx(settings, args.meters, args.points_per_meter, args.export_days, now_ms)
    fill_s = time.perf_counter() - began
    series = influx_query(settings.influx, "SHOW SERIES CARDINALITY")[0]["cardinality estimation"]

    start_ms = now_ms - int(args.export_days * DAY_MS) - 1000
    # Baseline: the range's last day in one query through the platform's ordinary InfluxDB client
    # (influx_query: JSON, parsed into dicts), as a rate of points per second.
    baseline_start_ms = max(start_ms, now_ms - DAY_MS)
    began = time.perf_counter()
    baseline_rows = len(influx_query(settings.influx, f"SELECT * FROM \"reading\" WHERE meter = '{METER}' AND "
                                     f"time >= {baseline_start_ms}ms AND time < {now_ms + 1000}ms", timeout_s=600))
    export_baseline_s = time.perf_counter() - began
    csv_s = None
    with tempfile.TemporaryDirectory(prefix="quartier-export-") as out:
        began = time.perf_counter()
        document = await export_household(settings, household, Path(out), resolution="1hz",
                                          start_ms=start_ms, end_ms=now_ms + 1000)
        export_s = time.perf_counter() - began
        if args.export_days < 365:
            # The CSV alone (what grows with the range), to extrapolate a year from a shorter run.
            began = time.perf_counter()
            write_readings_csv(settings, METER, Path(out) / "again.csv", resolution="1hz", start_ms=start_ms,
                               end_ms=now_ms + 1000)
            csv_s = time.perf_counter() - began

    began = time.perf_counter()
    influx_query(settings.influx, "DROP SERIES WHERE \"meter\" = '000000000007'")
    erase_baseline_s = time.perf_counter() - began
    saga = ErasureSaga(settings)
    began = time.perf_counter()
    completed = await saga.run(await saga.request(household))
    erase_s = time.perf_counter() - began
    assert completed is not None
    result: dict[str, Any] = {
        "meters": args.meters, "points": points, "fill_s": round(fill_s, 2), "series_cardinality": series,
        "erase_s": round(erase_s, 3), "erase_baseline_s": round(erase_baseline_s, 3),
        "erase_ratio": round(erase_s / erase_baseline_s, 1) if erase_baseline_s else None,
        "erased": {s.store: s.erased for s in completed.stores},
        "export_days": args.export_days, "export_rows": document["readings"]["rows"],
        "export_s": round(export_s, 3), "export_csv_s": round(csv_s, 3) if csv_s is not None else None,
        "export_rate_pts_s": round(document["readings"]["rows"] / export_s),
        "export_baseline_rows": baseline_rows, "export_baseline_s": round(export_baseline_s, 3),
        "export_baseline_rate_pts_s": round(baseline_rows / export_baseline_s),
        # How many times faster than the baseline the export reads a point (file and JSON document included).
        "export_ratio": round(document["readings"]["rows"] / export_s / (baseline_rows / export_baseline_s), 2),
        "load_average": os.getloadavg(),
    }
    if args.export_days >= 365:
        result["export_year_s"] = result["export_s"]
    else:
        # The JSON part does not grow with the range; the CSV part does, about linearly. Only an estimate:
        # the raw policy here lasts N + 30 days, so under 150 days its shard groups are a day long and a
        # year's are a week (privacy.export.query_windows); --export-days 365 measures the year's shape.
        assert csv_s is not None
        result["export_year_s_extrapolated"] = round(export_s - csv_s + csv_s * 365 / args.export_days, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--meters", type=int, default=48_000)
    parser.add_argument("--points-per-meter", type=int, default=10)
    parser.add_argument("--export-days", type=float, default=1.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="quartier-bench-privacy-") as tmp:
        root = Path(tmp)
        stack = Stack(root / "stack", [Broker(), Influx(), SmtpServer()])
        overrides = stack.up()
        try:
            values = {**overrides, "state_dir": root / "state",
                      "kafka": {**overrides.get("kafka", {}), "topic_prefix": "bench."},
                      "influx": {**overrides.get("influx", {}), "database": "bench_privacy",
                                 "raw_retention": f"{int(args.export_days) + 30}d"}}
            settings = Settings(**values)
            result = asyncio.run(measure(settings, args))
        finally:
            stack.down()
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:<28} {value}")


if __name__ == "__main__":
    lifetime.run(main)
