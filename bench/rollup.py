"""What the 10-minute rollup costs InfluxDB, against what writing the same points cost it.

Starts a private influxd (Debian 1.6.7, the local stack's config, at the workers' priority so that
nothing else decides its share), writes ``--minutes`` of 1 Hz reading points for ``--meters`` meters
(full points, as ``bench.pipeline`` writes them) through ``InfluxWriter``, waits for the shard's cache
to be written out, then runs the rollup's query (``quartier.influx.rollup_range``, the continuous
query's own SELECT) over those minutes ``--passes`` times. influxd's CPU seconds (user + system) are
read from /proc around each step:

- ``write_cpu_us_per_point``: influxd's CPU per point written;
- ``rollup_cpu_us_per_point``: influxd's CPU per raw point, for one pass of the rollup;
- ``ratio``: the second over the first. The continuous query recomputes the last 20 minutes every 10
  (``RESAMPLE FOR 20m``, quartier/influx.py says why), so each raw point is rolled up twice: at the
  fleet's rate the rollup costs InfluxDB about twice ``ratio`` of its write cost.

    python -m bench.rollup [--meters 10000] [--minutes 10] [--passes 2] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from bench import lifetime
from bench.influx import batched_writer
from quartier.events import MeterReading
from quartier.settings import Settings
from quartier.stack import Stack
from quartier.stack.influx import ROLLUP_INTERVAL_S, Influx, count_points, ensure_database, rollup_range
from streams.line_protocol import reading_line

COLD_WAIT_S = 40  # past the stack's cache-snapshot-write-cold-duration (30 s)


def influxd_cpu_s() -> float:
    [influxd] = [p for p in psutil.Process().children(recursive=True) if p.name() == "influxd"]
    times = influxd.cpu_times()
    return times.user + times.system


def minute_of_lines(meters: int, start_ms: int, minute: int) -> list[str]:
    return [
        reading_line(MeterReading(
            meter=f"{m:012d}", zone=f"zone-{m // 100}", time_ms=start_ms + t * 1000, seq=t,
            drawn_va=300 + (m * 7 + t) % 5_000, withdrawn_wh=1_000_000 + t, withdrawn_wh_by_register=(600_000 + t, 400_000),
            tariff_register=1, subscribed_kva=9, cutoff_kva=9, voltage_v=231, current_a=(m + t) % 40,
        ))
        for t in range(minute * 60, minute * 60 + 60)
        for m in range(meters)
    ]


def run(meters: int, minutes: int, passes: int) -> dict[str, Any]:
    points = meters * minutes * 60
    # Whole rollup windows, ending before now (the raw policy keeps them; the query's range is exact).
    start_ms = (int(time.time()) // ROLLUP_INTERVAL_S - (minutes * 60 // ROLLUP_INTERVAL_S + 2)) * ROLLUP_INTERVAL_S * 1000
    with tempfile.TemporaryDirectory(prefix="bench-rollup-") as tmp:
        stack = Stack(Path(tmp), [Influx(nice=0)])
        url = stack.up()["influx"]["url"]
        try:
            settings = Settings(influx={"url": url, "database": "rollup"}, state_dir=Path(tmp) / "state")
            ensure_database(settings)
            write_cpu_s = 0.0
            for minute in range(minutes):
                lines = minute_of_lines(meters, start_ms, minute)  # built outside the measured span
                before = influxd_cpu_s()
                asyncio.run(batched_writer(settings, lines, 5_000, 2))
                write_cpu_s += influxd_cpu_s() - before
            before = influxd_cpu_s()
            time.sleep(COLD_WAIT_S)
            snapshot_cpu_s = influxd_cpu_s() - before  # the write-out of the cold shard's cache
            written = count_points(settings, "reading")
            rollups = []
            for _ in range(passes):
                before, began = influxd_cpu_s(), time.perf_counter()
                rolled = rollup_range(settings, start_ms, start_ms + minutes * 60_000)
                rollups.append((influxd_cpu_s() - before, time.perf_counter() - began, rolled))
        finally:
            stack.down()
    if written != points:
        raise SystemExit(f"points lost: wrote {points}, InfluxDB counted {written}")
    expected_rollup = meters * (minutes * 60 // ROLLUP_INTERVAL_S)
    if any(rolled != expected_rollup for _, _, rolled in rollups):
        raise SystemExit(f"the rollup wrote {[r for _, _, r in rollups]} points, expected {expected_rollup} a pass")
    rollup_cpu_s = min(cpu for cpu, _, _ in rollups)
    write_us = (write_cpu_s + snapshot_cpu_s) / points * 1e6
    rollup_us = rollup_cpu_s / points * 1e6
    return {
        "meters": meters,
        "minutes": minutes,
        "points": points,
        "write_cpu_s": round(write_cpu_s, 2),
        "snapshot_cpu_s": round(snapshot_cpu_s, 2),
        "write_cpu_us_per_point": round(write_us, 2),
        "rollup_passes": [{"cpu_s": round(c, 2), "wall_s": round(w, 2), "points": r} for c, w, r in rollups],
        "rollup_cpu_us_per_point": round(rollup_us, 2),
        "ratio": round(rollup_us / write_us, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--meters", type=int, default=10_000)
    parser.add_argument("--minutes", type=int, default=10, help="a multiple of 10: whole rollup windows")
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="also print one JSON object on the last line")
    args = parser.parse_args()
    if args.minutes % (ROLLUP_INTERVAL_S // 60):
        parser.error("--minutes: a multiple of 10 (whole rollup windows)")
    r = run(args.meters, args.minutes, args.passes)
    passes = ", ".join(f"{p['cpu_s']} s CPU in {p['wall_s']} s" for p in r["rollup_passes"])
    print(
        f"{r['points']:,} full reading points ({r['meters']:,} meters, {r['minutes']} minutes), influxd 1.6.7\n"
        f"  writing them: {r['write_cpu_us_per_point']:.2f} µs of influxd CPU a point "
        f"({r['write_cpu_s']} s, and {r['snapshot_cpu_s']} s writing the cache out)\n"
        f"  one rollup pass: {r['rollup_cpu_us_per_point']:.2f} µs a raw point "
        f"(passes: {passes})\n"
        f"  ratio {r['ratio']} of the write; the continuous query makes two passes over every point "
        f"(RESAMPLE FOR 20m): about {2 * r['ratio']:.2f} of the write cost"
    )
    if args.json:
        print(json.dumps(r))


if __name__ == "__main__":
    lifetime.run(main)
