"""The stream worker's per-reading path in one process, without servers: where its CPU goes, GC included.

``python -m bench.worker_path [--meters 24000] [--seconds 40] [--json]``

The simulated fleet's readings (one step a second, encoded as the ingest contract's batches) go
through what ``StreamWorker.judge`` and ``StreamWorker.store`` do per message: decode, the index guard, the InfluxDB lines,
the alert engine (10 % of the meters with a power limit), the slot tracker. Measured in CPU time
(``time.process_time``, so a busy machine slows it but does not skew it), after a 5-step warm-up,
each variant in a fresh subprocess on the same readings:

- ``baseline``: full reading points, CPython's garbage-collector defaults (the worker before
  docs/pipeline.md's levers);
- ``changed_points``: ``ReadingLines`` (what changed only), collector defaults;
- ``changed_points_gc_frozen``: and ``gc.freeze()`` after the warm-up (the long-lived state out of
  the collector's sight), young-generation threshold unchanged;
- ``levers``: and the worker's ``freeze_long_lived`` (freeze, then a young threshold of 50,000): what
  ``quartier streams worker`` runs by default.

Per variant: µs of CPU per reading, the collector's share of it, its longest pause, the field values
and bytes of line protocol per reading point, and per stage
(decode / guard / lines / engine / slots) the µs per reading; ratios are to the baseline.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from datetime import datetime
from typing import Any

from bench import lifetime

VARIANTS = ("baseline", "changed_points", "changed_points_gc_frozen", "levers")
WARM_STEPS = 5
#: A winter weekday evening, as bench.simulator: heating, cooking, the busiest curve.
START = "2025-01-15T20:59:30+00:00"


def measure(variant: str, meters: int, seconds: int) -> dict[str, Any]:
    from quartier.events import AlertRules
    from simulator.config import FleetConfig
    from simulator.encoding import BatchEncoder
    from simulator.engine import Simulation
    from simulator.fleet import build_fleet
    from streams.alerting import AlertEngine
    from streams.ingest import decode_message
    from streams.line_protocol import ReadingLines, reading_line
    from streams.physics import IndexGuard
    from streams.slots import SlotTracker
    from streams.worker import freeze_long_lived

    fleet = build_fleet(FleetConfig(meters=meters, seed=7))
    simulation = Simulation(fleet, datetime.fromisoformat(START).timestamp())
    encoder = BatchEncoder(fleet)
    steps = [[body for _shard, body in encoder.encode(simulation.step())] for _ in range(seconds)]
    engine, guard, slots = AlertEngine(), IndexGuard(), SlotTracker()
    changed = ReadingLines()
    lines_of = (lambda rs: [reading_line(r) for r in rs]) if variant == "baseline" else changed.lines
    for meter in fleet.meter_ids[::10]:
        engine.set_rules(AlertRules(meter=meter, power_max_w=1_500, for_s=5))

    stage_s = dict.fromkeys(("decode", "guard", "lines", "engine", "slots"), 0.0)
    written = {"fields": 0, "bytes": 0}
    clock = time.process_time

    def step(messages: list[bytes], timed: bool) -> int:
        count = 0
        for value in messages:
            t0 = clock()
            readings = decode_message(value).readings
            t1 = clock()
            readings, _ = guard.check(readings)
            t2 = clock()
            lines = lines_of(readings)
            t3 = clock()
            engine.on_readings(readings, 0)
            t4 = clock()
            on_reading = slots.on_reading
            for reading in readings:
                on_reading(reading)
            t5 = clock()
            if timed:
                for name, spent in zip(stage_s, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
                    stage_s[name] += spent
                # Field values per point: what InfluxDB's cost goes with (counted outside the timing).
                written["fields"] += sum(line.rsplit(" ", 2)[1].count(",") + 1 for line in lines)
                written["bytes"] += sum(len(line) for line in lines)
            count += len(readings)
        return count

    for messages in steps[:WARM_STEPS]:
        step(messages, timed=False)
    if variant == "changed_points_gc_frozen":
        gc.collect()
        gc.freeze()
    elif variant == "levers":
        freeze_long_lived()

    collected = {"s": 0.0, "longest_s": 0.0, "started": 0.0, "count": 0}

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            collected["started"] = time.thread_time()
            return
        pause = time.thread_time() - collected["started"]
        collected["s"] += pause
        collected["count"] += 1
        collected["longest_s"] = max(collected["longest_s"], pause)

    gc.callbacks.append(on_gc)
    began = clock()
    readings = sum(step(messages, timed=True) for messages in steps[WARM_STEPS:])
    spent = clock() - began
    gc.callbacks.remove(on_gc)
    return {
        "readings": readings,
        "cpu_us_per_reading": round(spent / readings * 1e6, 3),
        "fields_per_point": round(written["fields"] / readings, 2),
        "line_bytes_per_point": round(written["bytes"] / readings, 1),
        "gc_share": round(collected["s"] / spent, 4),
        "gc_collections": collected["count"],
        "gc_longest_ms": round(collected["longest_s"] * 1000, 1),
        "stages_us_per_reading": {name: round(s / readings * 1e6, 3) for name, s in stage_s.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--meters", type=int, default=24_000, help="one worker's share of the 48,000-meter fleet")
    parser.add_argument("--seconds", type=int, default=40, help="simulated seconds (the first 5 warm up)")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # one variant, in a subprocess
    parser.add_argument("--json", action="store_true", help="also print one JSON object on the last line")
    args = parser.parse_args()
    if args.seconds <= WARM_STEPS:
        parser.error(f"--seconds must be more than the {WARM_STEPS} warm-up steps")
    if args.variant:
        print(json.dumps(measure(args.variant, args.meters, args.seconds)))
        return

    result: dict[str, Any] = {"meters": args.meters, "seconds": args.seconds}
    for variant in VARIANTS:
        done = subprocess.run(
            [sys.executable, "-m", "bench.worker_path", "--variant", variant, "--meters", str(args.meters),
             "--seconds", str(args.seconds)], capture_output=True, text=True, check=True,
        )
        result[variant] = json.loads(done.stdout.strip().splitlines()[-1])
    base = result["baseline"]["cpu_us_per_reading"]
    for variant in VARIANTS:
        result[variant]["ratio_to_baseline"] = round(base / result[variant]["cpu_us_per_reading"], 3)
    result["load_average_1m"] = round(os.getloadavg()[0], 2)
    print(f"worker path, {args.meters:,} meters, {args.seconds - WARM_STEPS} s measured (CPU time; load {result['load_average_1m']}):")
    for variant in VARIANTS:
        r = result[variant]
        stages = ", ".join(f"{k} {v}" for k, v in r["stages_us_per_reading"].items())
        print(f"  {variant:<26} {r['cpu_us_per_reading']:>6} µs/reading ({r['ratio_to_baseline']}x baseline), "
              f"GC {r['gc_share']:.1%} ({r['gc_collections']} collections, longest {r['gc_longest_ms']} ms); "
              f"{r['fields_per_point']} fields, {r['line_bytes_per_point']} bytes per point; {stages}")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    lifetime.run(main)
