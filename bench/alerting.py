"""Alert engine throughput: readings per second through ``AlertEngine`` for a realistic rule mix.

Builds a fleet's readings up front (one reading a second per meter, loads wandering around a
household's base load with appliances switching on, a few meters overloading), encodes them as the
ingest does (batches of one shard), then times, on the same readings:

- the baseline: decoding the batches with the contract's msgspec decoder, nothing else;
- the engine: ``on_reading`` for every decoded reading, after every meter got its rules;
- one ``check_silence`` pass over the fleet (the deadman timer's cost per tick).

The rule mix: every meter has the disconnect and fuse warnings; 60 % a power maximum, 15 % a power
minimum, 30 % a daily energy maximum, 40 % a monthly spending maximum (on pace), 15 % a daily
spending maximum; tariffs 55 % base, 30 % peak/off-peak, 15 % Tempo.

    python -m bench.alerting [--meters 4000] [--seconds 30] [--json]
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import time
from datetime import datetime, timezone
from typing import Any

from bench import lifetime
from quartier import tariffs
from quartier.events import AlertRules, Decoder, IngestMessage, MeterReading, ReadingBatch, encode, shard_of
from streams.alerting import AlertEngine

SHARDS = 32
PASSES = 3
START_MS = int(datetime(2025, 3, 12, 9, 0, tzinfo=timezone.utc).timestamp() * 1000)


def fleet_rules(meters: list[str], rng: random.Random) -> list[AlertRules]:
    rules = []
    for meter in meters:
        tariff = rng.choices(["base", "peak_offpeak", "tempo"], [55, 30, 15])[0]
        rules.append(
            AlertRules(
                meter=meter, tariff=tariff,  # type: ignore[arg-type]
                power_max_w=6_000 if rng.random() < 0.6 else None,
                power_min_w=50 if rng.random() < 0.15 else None,
                energy_day_max_wh=20_000 if rng.random() < 0.3 else None,
                spending_month_max_eur=90.0 if rng.random() < 0.4 else None,
                spending_day_max_eur=4.0 if rng.random() < 0.15 else None,
            )
        )
    return rules


def fleet_readings(meters: list[str], seconds: int, rules: list[AlertRules], rng: random.Random) -> list[bytes]:
    """Encoded ingest messages: per second, one batch per shard."""
    count = len(meters)
    load = [rng.uniform(200, 1_500) for _ in meters]
    heavy = [rng.random() < 0.02 for _ in meters]
    withdrawn = [rng.uniform(1e6, 2e7) for _ in meters]
    registers = [
        [0.0] * tariffs.REGISTER_COUNT[tariffs.TariffOption(r.tariff)] for r in rules
    ]
    for i, regs in enumerate(registers):
        regs[0] = withdrawn[i]
    messages = []
    for second in range(seconds):
        t = START_MS + second * 1000
        utc = datetime.fromtimestamp(t / 1000, timezone.utc)
        active = {option: tariffs.register_at(option, utc) for option in ("base", "peak_offpeak", "tempo")}
        by_shard: dict[int, list[MeterReading]] = {}
        for i in range(count):
            load[i] = min(max(load[i] + rng.gauss(0, 60), 80), 4_000)
            drawn = load[i] + (5_000 if heavy[i] and second % 20 < 12 else 0) + (2_000 if rng.random() < 0.01 else 0)
            wh = drawn / 3600
            withdrawn[i] += wh
            register = active[rules[i].tariff]
            registers[i][register - 1] += wh
            by_shard.setdefault(shard_of(meters[i], SHARDS), []).append(
                MeterReading(
                    meter=meters[i], zone=f"zone-{i % 20:02d}", time_ms=t + i % 997, seq=second,
                    drawn_va=int(drawn), withdrawn_wh=int(withdrawn[i]),
                    withdrawn_wh_by_register=tuple(int(x) for x in registers[i]), tariff_register=register,
                    subscribed_kva=9, cutoff_kva=9, voltage_v=231, current_a=int(drawn / 231),
                )
            )
        messages.extend(encode(ReadingBatch(shard=s, readings=rs)) for s, rs in sorted(by_shard.items()))
    return messages


def run(meters_count: int, seconds: int) -> dict[str, Any]:
    rng = random.Random(7)
    meters = [f"{rng.randrange(10**12):012d}" for _ in range(meters_count)]
    rules = fleet_rules(meters, rng)
    messages = fleet_readings(meters, seconds, rules, rng)
    decoder = Decoder(IngestMessage)
    readings_total = meters_count * seconds

    # Best of a few passes for both, as timeit does: the machine is shared, the minimum is the cost.
    decode_s = engine_s = float("inf")
    for _ in range(PASSES):
        gc.collect()
        began = time.perf_counter()
        batches = [decoder.decode(m) for m in messages]
        decode_s = min(decode_s, time.perf_counter() - began)
    readings = [r for b in batches for r in b.readings]  # type: ignore[attr-defined]
    assert len(readings) == readings_total

    for _ in range(PASSES):
        engine = AlertEngine()  # a fresh engine each pass: a second pass would be all replays
        for r in rules:
            engine.set_rules(r, at_ms=START_MS)
        gc.collect()
        began = time.perf_counter()
        # The first second is every meter's first reading (it sets the day baseline: one write each).
        first = engine.on_readings(readings[:meters_count])
        steady = engine.on_readings(readings[meters_count:])
        engine_s = min(engine_s, time.perf_counter() - began)
    events = [e for _, outcome in first + steady for e in outcome.events]
    writes = sum(1 for _, outcome in steady if outcome.changed)

    began = time.perf_counter()
    engine.check_silence(START_MS + seconds * 1000 + 5_000)
    silence_s = time.perf_counter() - began

    decode_rate = readings_total / decode_s
    engine_rate = readings_total / engine_s
    return {
        "meters": meters_count,
        "readings": readings_total,
        "decode_readings_per_s": round(decode_rate),
        "engine_readings_per_s": round(engine_rate),
        "engine_us_per_reading": round(engine_s / readings_total * 1e6, 2),
        "engine_to_decode_ratio": round(engine_rate / decode_rate, 3),
        "decode_plus_engine_readings_per_s": round(readings_total / (decode_s + engine_s)),
        "events": len(events),
        "durable_writes_after_first_reading": writes,
        "durable_writes_per_reading": round(writes / (readings_total - meters_count), 5),
        "check_silence_ms": round(silence_s * 1000, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--meters", type=int, default=4_000)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--json", action="store_true", help="also print one JSON object on the last line")
    args = parser.parse_args()
    result = run(args.meters, args.seconds)
    print(f"{result['readings']:,} readings from {result['meters']:,} meters")
    print(f"baseline, msgspec decode only: {result['decode_readings_per_s']:>12,} readings/s")
    print(
        f"alert engine:                  {result['engine_readings_per_s']:>12,} readings/s "
        f"({result['engine_us_per_reading']} us each, {result['engine_to_decode_ratio']}x the decode rate)"
    )
    print(f"decode + engine:               {result['decode_plus_engine_readings_per_s']:>12,} readings/s")
    print(
        f"{result['events']} alert events; {result['durable_writes_after_first_reading']} durable-state writes after "
        f"each meter's first reading ({result['durable_writes_per_reading']} per reading); check_silence over the fleet: "
        f"{result['check_silence_ms']} ms"
    )
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    lifetime.run(main)
