"""One story per alert kind, for a real worker: a meter, its rules, its readings, what it must be told.

The readings carry meter times in the recent past (InfluxDB keeps 30 days), so a story that takes an
evening in meter time is sent in a second: the engine judges on meter time, never by sleeping. Each
story's meter has only its own kind switched on. The disconnect story's meter shares its shard (so
its partition) with a neighbour that keeps reporting: the stream's progress shows the silence.

Stories are told to a worker with fewer meters than the engine needs to compare a fleet with
(``FleetPolicy.inhibit_min_meters``), so no silence is taken for an ingest outage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from quartier import tariffs
from quartier.events import AlertRules, MeterReading, ReadingBatch, shard_of
from quartier import events
from tests.streams.alerting_support import Household
from tests.streams.worker_support import quiet_rules, readings

PARIS = tariffs.LOCAL_TIME

POWER_BELOW = "300000000001"
ENERGY_DAY = "300000000002"
SPENDING = "300000000003"
FUSE = "300000000004"
FLAPPING = "300000000005"
REPEAT = "300000000006"


def same_shard(meter: str, shards: int) -> str:
    """Another meter id on ``meter``'s shard (so on its partition of meter.readings)."""
    shard = shard_of(meter, shards)
    for n in range(1, 1_000):
        other = f"{meter[:-3]}{(int(meter[-3:]) + n) % 1000:03d}"
        if shard_of(other, shards) == shard:
            return other
    raise AssertionError(f"no other meter id on the shard of {meter}")


@dataclass
class Story:
    meter: str
    rules: AlertRules | None
    readings: list[MeterReading]
    marks: dict[str, int] = field(default_factory=dict)  # meter times the assertions refer to


def last_midnight(now_ms: int) -> int:
    """The latest local (Paris) midnight at least two hours before ``now_ms``."""
    local = datetime.fromtimestamp(now_ms / 1000 - 2 * 3600, PARIS)
    return int(local.replace(hour=0, minute=0, second=0, microsecond=0).timestamp() * 1000)


def stories(now_ms: int, shards: int) -> dict[str, Story]:
    midnight = last_midnight(now_ms)
    told: dict[str, Story] = {}

    # Power below 200 W for 30 s, held for 10 s before it raises, cleared at 210 W (hysteresis 5 %).
    start = midnight - 3 * 3600_000
    told["power_below"] = Story(
        POWER_BELOW, quiet_rules(POWER_BELOW, power_min_w=200, for_s=10),
        readings(POWER_BELOW, start, [500] * 20 + [50] * 30 + [500] * 20),
        {"below": start + 20_000, "raised": start + 30_000, "back": start + 50_000},
    )

    # 1 Wh a second from ten minutes before midnight: over 100 Wh after 100 s, ended by the day.
    start = midnight - 600_000
    energy = readings(ENERGY_DAY, start, [3_600] * 631)
    base = energy[0].withdrawn_wh
    over = next(r.time_ms for r in energy if r.withdrawn_wh - base > 100)
    at_midnight = next(r for r in energy if r.time_ms >= midnight)
    told["energy_day_above"] = Story(
        ENERGY_DAY, quiet_rules(ENERGY_DAY, energy_day_max_wh=100, for_s=10), energy,
        {"over": over, "midnight": midnight, "day_wh": at_midnight.withdrawn_wh - base},
    )

    # Peak/off-peak, 2 kW from 21:30: half an hour at the peak price (1 kWh), then off-peak from
    # 22:00. The limit is one peak kWh plus one off-peak kWh, so it is passed at 22:30; priced at one
    # flat rate it would be passed at 22:23 (all peak) or 22:39 (all off-peak).
    day = datetime.fromtimestamp((midnight - 1) / 1000, PARIS).date()
    peak = tariffs.price_eur_per_kwh("peak_offpeak", 2, day)
    offpeak = tariffs.price_eur_per_kwh("peak_offpeak", 1, day)
    start = midnight - (2 * 3600 + 1800) * 1000
    home = Household(SPENDING, start_ms=start, tariff="peak_offpeak")
    spent = home.readings(2_000, 2 * 3600 + 1800 + 60, dt_s=10)
    told["spending_day_above"] = Story(
        SPENDING,
        quiet_rules(SPENDING, spending_day_max_eur=round(peak + offpeak, 4), spending_pace=False, for_s=0,
                    tariff="peak_offpeak"),
        spent,
        {"crossing": midnight - 3600_000 - 1800_000, "midnight": midnight,
         "day_eur_cents": round((peak + offpeak * 4) * 100)},  # 1 peak kWh, then 4 off-peak kWh (22-24 h)
    )

    # A 9 kVA meter at 200 % of its cut-off power: the model cuts after about 36 s, so waiting the
    # 30 s of for_s would leave too little: it warns once the cut is less than 30 s away, at once.
    start = midnight - 2 * 3600_000
    fuse = readings(FUSE, start, [1_000] * 20 + [18_000] * 20 + [1_000] * 20)
    told["fuse_limit"] = Story(
        FUSE, AlertRules(meter=FUSE, disconnect=False, fuse_warning=True, for_s=30, repeat_s=0), fuse,
        {"over": start + 20_000, "back": start + 40_000},
    )

    # Over 3 kW twice within the flapping window (2 episodes): the second is held, comes back once,
    # and resolves once it has stayed clear for flap_hold_s (60 s).
    start = midnight - 90 * 60_000
    flapping = [1_000] * 5 + [5_000] * 5 + [1_000] * 10 + [5_000] * 5 + [1_000] * 10 + [5_000] * 3 + [1_000] * 70
    told["flapping"] = Story(
        FLAPPING,
        quiet_rules(FLAPPING, power_max_w=3_000, for_s=2, flap_max_episodes=2, flap_window_s=3600, flap_hold_s=60),
        readings(FLAPPING, start, flapping),
        {"first": start + 5_000, "first_back": start + 10_000, "second": start + 20_000,
         "clear_again": start + 38_000, "held_until": start + 98_000},
    )

    # Over 3 kW, resolved; back 20 s later for 10 s (inside the 120 s repeat interval: nothing said);
    # back again 80 s after the resolution and still there when the interval has passed: raised then,
    # with the start of that condition.
    start = midnight - 60 * 60_000
    repeat = [1_000] * 5 + [5_000] * 5 + [1_000] * 20 + [5_000] * 10 + [1_000] * 50 + [5_000] * 50 + [1_000] * 10
    told["repeat"] = Story(
        REPEAT, quiet_rules(REPEAT, power_max_w=3_000, for_s=2, repeat_s=120),
        readings(REPEAT, start, repeat),
        {"first": start + 5_000, "first_back": start + 10_000, "again": start + 90_000,
         "interval_over": start + 130_000, "second_back": start + 140_000},
    )

    # The disconnect story is the newest in meter time, so nothing else on its partition is ahead.
    meter = "300000000100"
    neighbour = same_shard(meter, shards)
    start = now_ms - 400_000
    mine = readings(meter, start, [500] * 220)
    gone = [r for r in mine if not 100_000 <= r.time_ms - start < 160_000]  # silent for 60 s
    told["disconnected"] = Story(
        meter, AlertRules(meter=meter, disconnect=True, fuse_warning=False, for_s=10, repeat_s=3600), gone,
        {"last_seen": start + 99_000, "back": start + 160_000},
    )
    told["neighbour"] = Story(neighbour, None, readings(neighbour, start, [700] * 220))
    return told


def messages(all_readings: list[MeterReading], shards: int, size: int = 20) -> list[tuple[bytes, bytes]]:
    """Shard batches of at most ``size`` readings, sent in meter-time order as an ingest gateway would."""
    by_shard: dict[int, list[MeterReading]] = {}
    for r in all_readings:
        by_shard.setdefault(shard_of(r.meter, shards), []).append(r)
    batches: list[tuple[int, int, ReadingBatch]] = []
    for shard, rs in by_shard.items():
        rs.sort(key=lambda r: (r.time_ms, r.meter))
        for i in range(0, len(rs), size):
            chunk = rs[i : i + size]
            batches.append((chunk[0].time_ms, shard, ReadingBatch(shard=shard, readings=chunk)))
    batches.sort(key=lambda b: (b[0], b[1]))
    return [(str(shard).encode(), events.encode(batch)) for _, shard, batch in batches]


