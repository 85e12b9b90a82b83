"""InfluxDB write throughput: the batched concurrent ``InfluxWriter`` against one plain writer.

Starts a private influxd (Debian 1.6.7) in a temporary directory, builds reading lines up front, then writes
the same points into two fresh databases: the baseline POSTs batches one after another from one client
(same batch size), the writer gets them through ``write()`` in chunks of 1,000 (as a stream worker hands
them over) and is flushed. Each database is then counted, so a fast but lossy run cannot pass. Also times
building a reading's line with the f-string builder against ``influxdb_client.Point``.

``--meters`` sets how many series the points spread over (one a second each): InfluxDB's cost per
point grows with it, and the whole fleet is 48,000. ``--stock-cache`` runs influxd with its default
cache sizes instead of the local stack's (quartier/stack/influx.py says why they differ).

    python -m bench.influx [--points 600000] [--meters 1000] [--batch 5000] [--concurrency 2]
                           [--stock-cache] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench import lifetime
from quartier.events import MeterReading
from quartier.settings import Settings
from quartier.stack import Stack
from quartier.stack import influx as influx_stack
from quartier.stack.influx import Influx, count_points, ensure_database
from streams.influx_writer import InfluxWriter
from streams.line_protocol import reading_line

def make_readings(count: int, meters: int = 1_000) -> list[MeterReading]:
    start_ms = int(time.time() * 1000) - (count // meters + 1) * 1000
    return [
        MeterReading(
            meter=f"{i % meters:012d}", zone=f"zone-{i % meters // 100}", time_ms=start_ms + (i // meters) * 1000,
            seq=i, drawn_va=300 + i % 5_000, withdrawn_wh=1_000_000 + i, withdrawn_wh_by_register=(600_000 + i, 400_000),
            tariff_register=1, subscribed_kva=9, cutoff_kva=9, voltage_v=231, current_a=i % 40,
        )
        for i in range(count)
    ]


def plain_writer(settings: Settings, lines: list[str], batch: int) -> float:
    """The baseline: one client, one batch at a time. Returns seconds."""
    params = {"db": settings.influx.database, "rp": "raw", "precision": "ms"}
    with httpx.Client(timeout=60) as client:
        began = time.perf_counter()
        for start in range(0, len(lines), batch):
            answer = client.post(
                f"{settings.influx.url}/write", params=params, content="\n".join(lines[start : start + batch]).encode()
            )
            answer.raise_for_status()
        return time.perf_counter() - began


async def batched_writer(settings: Settings, lines: list[str], batch: int, concurrency: int) -> float:
    writer = InfluxWriter(settings, batch_points=batch, concurrency=concurrency)
    await writer.start()
    began = time.perf_counter()
    for start in range(0, len(lines), 1_000):
        writer.write(lines[start : start + 1_000])
        if start % 50_000 == 0:
            await asyncio.sleep(0)  # a worker yields between messages; let the senders run
    await writer.flush()
    elapsed = time.perf_counter() - began
    await writer.stop()
    return elapsed


def line_building(readings: list[MeterReading]) -> tuple[float, float]:
    """Lines per second: the f-string builder, and influxdb_client.Point for the same readings."""
    from influxdb_client import Point, WritePrecision

    began = time.perf_counter()
    for r in readings:
        reading_line(r)
    fstring = len(readings) / (time.perf_counter() - began)
    began = time.perf_counter()
    for r in readings:
        point = Point("reading").tag("meter", r.meter).tag("zone", r.zone)
        point.field("drawn_va", r.drawn_va).field("injected_va", r.injected_va).field("withdrawn_wh", r.withdrawn_wh)
        point.field("injected_wh", r.injected_wh)
        for i, wh in enumerate(r.withdrawn_wh_by_register, 1):
            point.field(f"withdrawn_wh_r{i}", wh)
        point.field("tariff_register", r.tariff_register).field("voltage_v", r.voltage_v)
        point.field("current_a", r.current_a).time(r.time_ms, WritePrecision.MS).to_line_protocol()
    return fstring, len(readings) / (time.perf_counter() - began)


STACK_CONFIG = influx_stack.influxd_config


def stock_cache_config(workdir: Path, *, http_port: int, rpc_port: int) -> str:
    """The local stack's influxd config without its cache sizes (influxd's defaults: 25 MB, 1 GB)."""
    text = STACK_CONFIG(workdir, http_port=http_port, rpc_port=rpc_port)
    return "\n".join(line for line in text.splitlines() if not line.strip().startswith("cache-")) + "\n"


def run(points: int, batch: int, concurrency: int, meters: int = 1_000, stock_cache: bool = False) -> dict[str, Any]:
    if stock_cache:
        influx_stack.influxd_config = stock_cache_config  # type: ignore[assignment]
    readings = make_readings(points, meters)
    lines = [reading_line(r) for r in readings]
    fstring_per_s, point_per_s = line_building(readings[:50_000])
    with tempfile.TemporaryDirectory(prefix="bench-influx-") as tmp:
        stack = Stack(Path(tmp), [Influx()])
        url = stack.up()["influx"]["url"]
        try:
            baseline_db = Settings(influx={"url": url, "database": "baseline"}, state_dir=Path(tmp) / "state")
            writer_db = Settings(influx={"url": url, "database": "writer"}, state_dir=Path(tmp) / "state")
            ensure_database(baseline_db)
            ensure_database(writer_db)
            baseline_s = plain_writer(baseline_db, lines, batch)
            writer_s = asyncio.run(batched_writer(writer_db, lines, batch, concurrency))
            counted = {"baseline": count_points(baseline_db, "reading"), "writer": count_points(writer_db, "reading")}
        finally:
            stack.down()
    if counted != {"baseline": points, "writer": points}:
        raise SystemExit(f"points lost: wrote {points}, InfluxDB counted {counted}")
    baseline_per_s = points / baseline_s
    writer_per_s = points / writer_s
    return {
        "points": points,
        "meters": meters,
        "stock_cache": stock_cache,
        "batch_points": batch,
        "concurrency": concurrency,
        "baseline_points_per_s": round(baseline_per_s),
        "points_per_s": round(writer_per_s),
        "ratio": round(writer_per_s / baseline_per_s, 2),
        "line_fstring_per_s": round(fstring_per_s),
        "line_point_per_s": round(point_per_s),
        "line_ratio": round(fstring_per_s / point_per_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=600_000)
    parser.add_argument("--meters", type=int, default=1_000, help="series the points spread over")
    parser.add_argument("--stock-cache", action="store_true", help="influxd's default cache sizes")
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="also print one JSON object on the last line")
    args = parser.parse_args()
    result = run(args.points, args.batch, args.concurrency, args.meters, args.stock_cache)
    cache = "stock cache sizes" if result["stock_cache"] else "the local stack's cache sizes"
    print(
        f"{result['points']:,} reading points from {result['meters']:,} meters, batches of "
        f"{result['batch_points']:,}, influxd 1.6.7 with {cache}\n"
        f"  baseline (one plain writer): {result['baseline_points_per_s']:>9,} points/s\n"
        f"  InfluxWriter ({result['concurrency']} concurrent):  {result['points_per_s']:>9,} points/s"
        f"  ({result['ratio']}x baseline)\n"
        f"  building lines: f-string {result['line_fstring_per_s']:,}/s, influxdb_client.Point "
        f"{result['line_point_per_s']:,}/s ({result['line_ratio']}x)"
    )
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    lifetime.run(main)
