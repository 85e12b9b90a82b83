"""Simulator throughput: generate and encode the reference fleet, no broker.

    python -m bench.simulator --meters 48000 --seconds 60 [--json]

Steps the fleet ``--seconds`` simulated seconds (physics for every meter, then the Kafka messages of
the ingest contract, byte for byte) and reports readings per second per core: readings over the
process's CPU time (the simulator is single-threaded, so CPU seconds are core seconds). The baseline,
measured in the same run on the same frames, is the obvious path: one msgspec ``MeterReading``
Struct per reading, encoded as one ``ReadingBatch`` per shard.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime

from bench import lifetime
from quartier.events import MeterReading, ReadingBatch, encode, shard_of
from simulator.config import FleetConfig
from simulator.encoding import BatchEncoder
from simulator.engine import Frame, Simulation
from simulator.fleet import build_fleet

#: A winter weekday evening: heating, cooking, off-peak switching at 22:00 local: the busiest curve.
DEFAULT_START = "2025-01-15T20:59:30+00:00"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--meters", type=int, default=48_000)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start", default=DEFAULT_START)
    parser.add_argument("--baseline-seconds", type=int, default=5, help="Steps encoded the slow way too.")
    parser.add_argument("--json", action="store_true", help="One JSON object on the last line.")
    args = parser.parse_args()

    config = FleetConfig(meters=args.meters, seed=args.seed)
    cpu, wall = time.process_time(), time.perf_counter()
    fleet = build_fleet(config)
    simulation = Simulation(fleet, datetime.fromisoformat(args.start).timestamp())
    encoder = BatchEncoder(fleet)
    setup_cpu_s, setup_wall_s = time.process_time() - cpu, time.perf_counter() - wall

    readings = messages = size = 0
    physics_s = encode_s = 0.0
    baseline_readings = 0
    baseline_s = 0.0
    identical = True
    wall = time.perf_counter()
    for step in range(args.seconds):
        t0 = time.process_time()
        frame = simulation.step()
        t1 = time.process_time()
        batches = encoder.encode(frame)
        t2 = time.process_time()
        physics_s += t1 - t0
        encode_s += t2 - t1
        readings += len(frame.sent)
        messages += len(batches)
        size += sum(len(b) for _s, b in batches)
        if step < args.baseline_seconds:
            # The slow path on the same frame: same physics, Structs and msgspec for the encoding.
            b0 = time.process_time()
            slow = _msgspec_batches(simulation, frame, config.shards, encoder.max_readings_per_message)
            baseline_s += (time.process_time() - b0) + (t1 - t0)
            baseline_readings += len(frame.sent)
            identical &= slow == batches
    total_wall_s = time.perf_counter() - wall
    fast_cpu_s = physics_s + encode_s

    rate = readings / fast_cpu_s
    baseline_rate = baseline_readings / baseline_s if baseline_s else 0.0
    result = {
        "readings_per_s_per_core": round(rate),
        "baseline_readings_per_s_per_core": round(baseline_rate),
        "ratio_to_baseline": round(rate / baseline_rate, 2) if baseline_rate else None,
        "identical_to_baseline": identical,
        "meters": args.meters,
        "seconds": args.seconds,
        "readings": readings,
        "cpu_s": round(fast_cpu_s, 3),
        "wall_s": round(total_wall_s, 3),
        "physics_ms_per_step": round(physics_s / args.seconds * 1000, 1),
        "encode_ms_per_step": round(encode_s / args.seconds * 1000, 1),
        "setup_cpu_s": round(setup_cpu_s, 3),
        "setup_wall_s": round(setup_wall_s, 3),
        "messages": messages,
        "bytes_per_reading": round(size / readings, 1),
        "target_readings_per_s_per_core": 300_000,
    }
    print(f"simulator: {args.meters:,} meters x {args.seconds} s = {readings:,} readings (no broker)")
    print(f"  fast path   {rate:>12,.0f} readings/s per core  "
          f"(physics {result['physics_ms_per_step']} ms + encode {result['encode_ms_per_step']} ms per step)")
    print(f"  baseline    {baseline_rate:>12,.0f} readings/s per core  (msgspec Structs, {args.baseline_seconds} steps)")
    print(f"  ratio       {result['ratio_to_baseline']}x, output identical: {identical}")
    print(f"  target      {300_000:>12,} readings/s per core: {'met' if rate >= 300_000 else 'NOT met'}")
    print(f"  {messages:,} messages, {result['bytes_per_reading']} bytes per reading before compression")
    if args.json:
        print(json.dumps(result))


def _msgspec_batches(simulation: Simulation, frame: Frame, shards: int, per_message: int) -> list[tuple[int, bytes]]:
    by_shard: dict[int, list[MeterReading]] = {}
    for reading in simulation.readings(frame):
        by_shard.setdefault(shard_of(reading.meter, shards), []).append(reading)
    return [
        (s, encode(ReadingBatch(shard=s, readings=rs[i : i + per_message])))
        for s, rs in sorted(by_shard.items())
        for i in range(0, len(rs), per_message)
    ]


if __name__ == "__main__":
    lifetime.run(main)
