"""The operator console's costs at the reference fleet (48,000 modules), no broker.

    python -m bench.console [--meters 48000] [--seconds 20] [--json]

- ``projection_cores``: CPU seconds the projection takes to fold one second of the fleet's traffic
  (every ``meter.readings`` batch the simulator produces, byte for byte, and the telemetry reports
  due in that second), so 0.05 means 5% of one core. Baseline, same messages: the contract's full
  decoder (``IngestMessage``, every field) and a per-reading Python fold (``baseline_cores``).
  ``decompress_cores`` is what following the topic adds on the consumer side for zstd-compressed
  record batches (the simulator's default), measured with the same codec on the same bytes; the
  broker fetch itself is not in either figure.
- ``list_p99_ms``: p99 over ``--queries`` filtered, sorted pages of 50 rows of the module list
  (random filters on firmware, connection state, RSSI band, zone, frame gap; random sort key and
  direction; random page); baseline: the same queries over a list of dicts in plain Python.
- ``list_http_p99_ms``: the same queries through the whole API layer (authentication, rate limit,
  validation, serialization) of the ``console`` surface, in process over ASGI (no socket).
- ``export_csv_s`` / ``export_xlsx_s``: the whole list (every module) as CSV and as XLSX (XlsxWriter);
  ``export_xlsx_openpyxl_s``: the same rows through openpyxl's write-only workbook, the baseline.
- ``export_access_log_s``: what an export adds before its first byte when every exported module is
  paired (the worst case): one access-log entry per household, hash-chained, in one transaction, in a
  fresh SQLite privacy database (``verify_log_s``: recomputing that chain).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import time
from datetime import datetime

import cramjam
import numpy as np

from bench import lifetime
from console.listing import ModuleFilter, Query, export_csv, export_xlsx, ordered_rows, page
from console.projection import RSSI_BANDS, FleetProjection
from quartier import events
from quartier.events import DeviceTelemetry
from simulator.config import FleetConfig
from simulator.devices import FIRMWARE, HARDWARE
from simulator.encoding import BatchEncoder
from simulator.engine import Simulation
from simulator.fleet import build_fleet

DEFAULT_START = "2025-01-15T20:59:30+00:00"


def _openpyxl_write_only(projection, q: Query) -> int:
    """The baseline for ``export_xlsx_s``: the same rows through openpyxl's write-only workbook."""
    import tempfile

    from openpyxl import Workbook

    from console.listing import COLUMNS, row_dict

    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("modules")
    sheet.append(list(COLUMNS))
    for row in ordered_rows(projection, q).tolist():
        d = row_dict(projection, row)
        sheet.append([d[c] for c in COLUMNS])
    with tempfile.TemporaryFile() as out:
        workbook.save(out)
        return out.tell()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--meters", type=int, default=48_000)
    parser.add_argument("--seconds", type=int, default=20, help="Simulated seconds of traffic folded.")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    config = FleetConfig(meters=args.meters, seed=0)
    fleet_model = build_fleet(config)
    simulation = Simulation(fleet_model, datetime.fromisoformat(DEFAULT_START).timestamp())
    encoder = BatchEncoder(fleet_model)
    steps: list[tuple[list[bytes], list[DeviceTelemetry]]] = []
    for _ in range(args.seconds):
        frame = simulation.step()
        steps.append(([m for _, m in encoder.encode(frame)], frame.telemetry))
    readings = sum(len(events.decoder(events.IngestMessage).decode(m).readings) for ms, _ in steps for m in ms)  # type: ignore[attr-defined]
    message_bytes = sum(len(m) for ms, _ in steps for m in ms)

    # --- the projection's fold ---
    projection = FleetProjection()
    # Every module's first report, so the list has firmware, hardware and RSSI for all of them.
    modules = simulation.modules
    first_ms = int(simulation.start_t * 1000)
    for i, meter in enumerate(fleet_model.meter_ids):
        projection.on_telemetry(DeviceTelemetry(
            meter=meter, time_ms=first_ms, rssi_dbm=int(np.clip(round(modules.base_rssi_dbm[i]), -120, 0)),
            firmware=FIRMWARE[modules.firmware[i]], uptime_s=3600, hardware=HARDWARE[modules.hardware[i]]))
    cpu = time.process_time()
    for messages, telemetry in steps:
        for m in messages:
            projection.on_readings_message(m)
        for report in telemetry:
            projection.on_telemetry(report)
    projection.refresh()
    fold_cpu_s = time.process_time() - cpu
    assert projection.readings == readings, (projection.readings, readings)

    # --- baseline: full decoding and a per-reading fold ---
    decoder = events.decoder(events.IngestMessage)
    last: dict[str, int] = {}
    gaps: dict[str, list[int]] = {}
    power: dict[str, int] = {}
    cpu = time.process_time()
    for messages, telemetry in steps:
        for m in messages:
            batch = decoder.decode(m)
            for r in batch.readings:  # type: ignore[attr-defined]
                previous = last.get(r.meter)
                if previous is not None:
                    gaps.setdefault(r.meter, []).append(r.time_ms - previous)
                last[r.meter] = r.time_ms
                power[r.meter] = r.drawn_va
    baseline_cpu_s = time.process_time() - cpu

    # --- what following the topic adds: zstd record batches decompressed ---
    compressed = [bytes(cramjam.zstd.compress(b"".join(ms))) for ms, _ in steps]
    cpu = time.process_time()
    for blob in compressed:
        cramjam.zstd.decompress(blob)
    decompress_cpu_s = time.process_time() - cpu

    # --- the list ---
    rng = random.Random(7)
    zones = projection.zones
    sort_keys = ["meter", "zone", "firmware", "rssi_dbm", "frame_gap_p50_ms", "last_reading_ms", "reboots"]
    queries = []
    for _ in range(args.queries):
        f = ModuleFilter(
            firmware=tuple(rng.sample(list(FIRMWARE), rng.randint(0, 2))),
            state=tuple(rng.sample(["connected", "disconnected"], rng.randint(0, 1))),  # type: ignore[arg-type]
            rssi_bands=tuple(rng.sample([b for b, _ in RSSI_BANDS], rng.randint(0, 2))),
            zones=tuple(rng.sample(zones, rng.randint(0, 3))) if rng.random() < 0.3 else (),
            frame_gap_min_ms=rng.choice([None, 900.0]),
        )
        queries.append(Query(filter=f, sort=rng.choice(sort_keys), descending=rng.random() < 0.5,
                             offset=rng.choice([0, 50, 500, 5000]), limit=50))
    times = []
    for q in queries:
        t0 = time.perf_counter()
        page(projection, q)
        times.append((time.perf_counter() - t0) * 1000)
    rows = [page(projection, Query(offset=i, limit=1000))["items"] for i in range(0, projection.size, 1000)]
    flat = [r for chunk in rows for r in chunk]
    baseline_times = []
    for q in queries[:50]:
        t0 = time.perf_counter()
        f = q.filter
        matched = [r for r in flat
                   if (not f.firmware or r["firmware"] in f.firmware)
                   and (not f.state or ("connected" if r["connected"] else "disconnected") in f.state)
                   and (not f.rssi_bands or r["rssi_band"] in f.rssi_bands)
                   and (not f.zones or r["zone"] in f.zones)
                   and (f.frame_gap_min_ms is None or (r["frame_gap_p50_ms"] or 0) >= f.frame_gap_min_ms)]
        matched.sort(key=lambda r: (r[q.sort] is None, r[q.sort] or 0) if q.sort != "meter" and q.sort != "zone" and q.sort != "firmware" else (False, r[q.sort] or ""), reverse=q.descending)
        matched[q.offset : q.offset + q.limit]
        baseline_times.append((time.perf_counter() - t0) * 1000)

    list_http_ms = asyncio.run(_http_list_times(projection, queries))

    t0 = time.perf_counter()
    csv_bytes = sum(len(chunk) for chunk in export_csv(projection, ordered_rows(projection, Query(limit=1000))))
    export_csv_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    xlsx_bytes = sum(len(chunk) for chunk in export_xlsx(projection, ordered_rows(projection, Query(limit=1000))))
    export_xlsx_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    _openpyxl_write_only(projection, Query(limit=1000))
    export_xlsx_openpyxl_s = time.perf_counter() - t0

    access = access_log_cost(args.meters)

    seconds = args.seconds
    result = {
        "meters": args.meters,
        "seconds_of_traffic": seconds,
        "readings": readings,
        "message_mb": round(message_bytes / 1e6, 1),
        "projection_cores": round(fold_cpu_s / seconds, 4),
        "baseline_cores": round(baseline_cpu_s / seconds, 4),
        "ratio_to_baseline": round(baseline_cpu_s / fold_cpu_s, 2) if fold_cpu_s else None,
        "decompress_cores": round(decompress_cpu_s / seconds, 4),
        "list_p50_ms": round(float(np.percentile(times, 50)), 2),
        "list_p99_ms": round(float(np.percentile(times, 99)), 2),
        "list_baseline_p99_ms": round(float(np.percentile(baseline_times, 99)), 2),
        "list_http_p50_ms": round(float(np.percentile(list_http_ms, 50)), 2),
        "list_http_p99_ms": round(float(np.percentile(list_http_ms, 99)), 2),
        "export_csv_s": round(export_csv_s, 3),
        "export_csv_mb": round(csv_bytes / 1e6, 2),
        "export_xlsx_s": round(export_xlsx_s, 3),
        "export_xlsx_mb": round(xlsx_bytes / 1e6, 2),
        "export_xlsx_openpyxl_s": round(export_xlsx_openpyxl_s, 3),
        "export_xlsx_ratio_to_openpyxl": round(export_xlsx_s / export_xlsx_openpyxl_s, 3),
        **access,
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:>24}: {v}")


def access_log_cost(households: int) -> dict[str, float]:
    """An export of ``households`` paired modules: its access-log entries written, then the chain verified."""
    import tempfile
    from pathlib import Path

    from api import Principal
    from quartier.access_log import AccessLog
    from quartier.settings import Settings

    settings = Settings(state_dir=Path(tempfile.mkdtemp(prefix="bench-console-access-")))
    access = AccessLog.open(settings)
    operator = Principal("acct_bench", roles=frozenset({"operator"}))
    names = [f"hh_{i:016x}" for i in range(households)]
    t0 = time.perf_counter()
    written = access.record_reads(operator, names, what="telemetry", why="operations", reference="export:csv:bench")
    write_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    verification = access.verify()
    verify_s = time.perf_counter() - t0
    access.engine.dispose()
    assert written == households and verification.ok and verification.entries == households
    return {"export_access_log_s": round(write_s, 3), "verify_log_s": round(verify_s, 3)}


class _Operator:
    """The bench's one principal: an operator (the API layer's authentication runs, accounts are not needed)."""

    async def authenticate(self, request: object) -> object:
        from api import Principal

        return Principal("acct_bench", roles=frozenset({"operator"}))


async def _http_list_times(projection: FleetProjection, queries: list[Query]) -> list[float]:
    import tempfile
    from pathlib import Path

    import httpx
    from prometheus_client import CollectorRegistry

    from api import SurfaceContext, build_app
    from console.surface import surface
    from quartier.settings import Settings

    settings = Settings(state_dir=Path(tempfile.mkdtemp(prefix="bench-console-")),
                        api={"requests_per_minute": 1_000_000})
    registry = CollectorRegistry()
    console = surface(SurfaceContext(settings=settings, registry=registry, authenticator=_Operator()))  # type: ignore[arg-type]
    console.state.service.fleet = projection
    app = build_app([console], authenticator=_Operator(), settings=settings, registry=registry)  # type: ignore[arg-type]
    times = []
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as client:
        for q in queries:
            f = q.filter
            params = {"firmware": ",".join(f.firmware), "state": ",".join(f.state), "rssi_band": ",".join(f.rssi_bands),
                      "zone": ",".join(f.zones), "sort": q.sort, "order": "desc" if q.descending else "asc",
                      "offset": q.offset, "limit": q.limit}
            if f.frame_gap_min_ms is not None:
                params["frame_gap_min_ms"] = f.frame_gap_min_ms
            t0 = time.perf_counter()
            answer = await client.get("/v1/fleet/modules", params={k: v for k, v in params.items() if v != ""})
            times.append((time.perf_counter() - t0) * 1000)
            assert answer.status_code == 200, answer.text
    return times


if __name__ == "__main__":
    lifetime.run(main)
