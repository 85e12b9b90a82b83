"""The physics a user of the readings would notice, checked on what the simulator sends."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pytest

from quartier.events import ContractError, ReadingBatch
from simulator.config import FleetConfig
from simulator.fleet import TARIFFS

from .conftest import INGEST, simulate

UTC = timezone.utc


def test_indexes_only_grow_and_match_the_power_reported() -> None:
    # A winter evening that crosses 22:00 local time, when off-peak registers take over.
    config = FleetConfig(meters=80, zones=1, seed=3, malformed_fraction=0.0, disconnects=False)
    wire = simulate(config, datetime(2025, 1, 15, 20, 30, tzinfo=UTC), steps=3600)
    meters = wire.by_meter()
    assert len(meters) == 80
    for meter, readings in meters.items():
        assert len(readings) == 3600
        seq = np.array([r.seq for r in readings])
        time_ms = np.array([r.time_ms for r in readings])
        assert (np.diff(seq) == 1).all()
        # The meter's own clock: a second apart, give or take its drift.
        assert (np.abs(np.diff(time_ms) - 1000) <= 2).all()
        registers = np.array([r.withdrawn_wh_by_register for r in readings])
        withdrawn = np.array([r.withdrawn_wh for r in readings])
        injected = np.array([r.injected_wh for r in readings])
        assert (registers.sum(axis=1) == withdrawn).all()
        assert (np.diff(registers, axis=0) >= 0).all(), meter
        assert (np.diff(injected) >= 0).all(), meter
        # Only the active register moves.
        active = np.array([r.tariff_register for r in readings])
        moved = np.diff(registers, axis=0) > 0
        for step, column in zip(*np.nonzero(moved)):
            assert column == active[step + 1] - 1
        # Energy between two readings is the reported power over the interval, at a power factor
        # between 0.88 and 0.98, give or take the rounding of each register to whole Wh.
        drawn_va = np.array([r.drawn_va for r in readings], dtype=float)
        slack = registers.shape[1] + 1
        for a, b in ((0, 899), (900, 1799), (1800, 2699), (2700, 3599)):
            energy_wh = withdrawn[b] - withdrawn[a]
            apparent_wh = drawn_va[a + 1 : b + 1].sum() / 3600.0
            assert 0.88 * apparent_wh - slack <= energy_wh <= 0.98 * apparent_wh + slack, (meter, a, b)


def test_off_peak_meters_switch_register_at_22h_local() -> None:
    config = FleetConfig(meters=200, zones=1, seed=4, malformed_fraction=0.0, disconnects=False, interval_s=60)
    # 20:00 to 23:00 UTC in January is 21:00 to 00:00 in Paris.
    wire = simulate(config, datetime(2025, 1, 15, 20, 0, tzinfo=UTC), steps=180)
    homes = {h["meter"]: h for h in wire.fleet.describe()}
    switch_ms = datetime(2025, 1, 15, 21, 0, tzinfo=UTC).timestamp() * 1000
    checked = 0
    for reading in wire.readings():
        if homes[reading.meter]["tariff"] != "peak_offpeak" or abs(reading.time_ms - switch_ms) < 5_000:
            continue
        checked += 1
        assert reading.tariff_register == (2 if reading.time_ms < switch_ms else 1)
        assert len(reading.withdrawn_wh_by_register) == 2
    assert checked > 1000


def _mean_by_hour(table: dict[str, np.ndarray], meters: set[str], field: str, hours_utc: tuple[float, float]) -> dict[str, float]:
    """Each of ``meters``' mean ``field`` over readings whose UTC hour is in ``hours_utc``."""
    low, high = hours_utc
    chosen = np.isin(table["meter"], list(meters)) & (table["hour_utc"] >= low) & (table["hour_utc"] < high)
    names, inverse = np.unique(table["meter"][chosen], return_inverse=True)
    sums = np.bincount(inverse, weights=table[field][chosen])
    counts = np.bincount(inverse)
    return {str(name): float(total / count) for name, total, count in zip(names, sums, counts)}


@pytest.fixture(scope="module")
def clear_midsummer_day():
    config = FleetConfig(meters=300, zones=3, seed=5, cloud_cover=0.0, malformed_fraction=0.0, disconnects=False,
                         interval_s=120)
    return simulate(config, datetime(2025, 6, 21, 0, 0, tzinfo=UTC), steps=720)


def test_a_producer_exports_more_at_noon_than_at_dawn_on_a_clear_day(clear_midsummer_day) -> None:
    wire = clear_midsummer_day
    table = wire.table()
    producers = {h["meter"] for h in wire.fleet.describe() if h["producer"]}
    assert 20 <= len(producers) <= 80  # 10-25% of 300 homes
    noon = _mean_by_hour(table, producers, "injected_va", (11.0, 13.0))
    dawn = _mean_by_hour(table, producers, "injected_va", (4.5, 5.5))
    night = _mean_by_hour(table, producers, "injected_va", (22.0, 24.0))
    higher = sum(noon[m] > dawn[m] for m in producers)
    assert higher >= 0.9 * len(producers)
    assert np.median(list(noon.values())) > 1000
    assert max(night.values()) == 0
    consumers = {h["meter"] for h in wire.fleet.describe() if not h["producer"]}
    assert max(_mean_by_hour(table, consumers, "injected_va", (0.0, 24.0)).values()) == 0


def test_clouds_cut_a_zones_production() -> None:
    def noon_export(cloud: float) -> float:
        config = FleetConfig(meters=200, zones=2, seed=6, cloud_cover=cloud, malformed_fraction=0.0,
                             disconnects=False, interval_s=60)
        wire = simulate(config, datetime(2025, 6, 21, 11, 0, tzinfo=UTC), steps=120)
        producers = {h["meter"] for h in wire.fleet.describe() if h["producer"]}
        return float(np.mean(list(_mean_by_hour(wire.table(), producers, "injected_va", (11.0, 13.0)).values())))

    assert noon_export(1.0) < 0.5 * noon_export(0.0)


def test_water_heaters_run_in_off_peak_hours() -> None:
    config = FleetConfig(meters=300, zones=2, seed=7, malformed_fraction=0.0, disconnects=False, interval_s=120)
    # A July day: no space heating to blur the picture. Paris is UTC+2.
    wire = simulate(config, datetime(2025, 7, 10, 12, 0, tzinfo=UTC), steps=720)
    table = wire.table()
    homes = wire.fleet.describe()
    heaters = {h["meter"] for h in homes if h["water_heater"]}
    others = {h["meter"] for h in homes if not h["water_heater"]}
    assert heaters and others
    night = (20.5, 23.5)  # 22:30-01:30 local, the first off-peak hours
    afternoon = (12.0, 15.0)  # 14:00-17:00 local, peak hours
    night_gap = np.mean(list(_mean_by_hour(table, heaters, "drawn_va", night).values())) - np.mean(
        list(_mean_by_hour(table, others, "drawn_va", night).values())
    )
    day_gap = np.mean(list(_mean_by_hour(table, heaters, "drawn_va", afternoon).values())) - np.mean(
        list(_mean_by_hour(table, others, "drawn_va", afternoon).values())
    )
    assert night_gap > 600
    assert day_gap < 250
    # On peak/off-peak contracts that night's heating lands in the off-peak register (1).
    first: dict[str, tuple[int, ...]] = {}
    last: dict[str, tuple[int, ...]] = {}
    for reading in wire.readings():
        if reading.meter in heaters and len(reading.withdrawn_wh_by_register) == 2:
            first.setdefault(reading.meter, reading.withdrawn_wh_by_register)
            last[reading.meter] = reading.withdrawn_wh_by_register
    offpeak_wh = np.mean([last[m][0] - first[m][0] for m in last])
    assert offpeak_wh > 2000


def test_some_homes_pile_up_appliances_to_their_cut_off_power() -> None:
    config = FleetConfig(meters=800, zones=4, seed=8, malformed_fraction=0.0, disconnects=False, interval_s=30)
    wire = simulate(config, datetime(2025, 1, 20, 6, 0, tzinfo=UTC), steps=6 * 120)
    cutoff_va = {h["meter"]: h["cutoff_kva"] * 1000 for h in wire.fleet.describe()}
    near, over = set(), set()
    for reading in wire.readings():
        if reading.drawn_va >= 0.9 * cutoff_va[reading.meter]:
            near.add(reading.meter)
            if reading.drawn_va > cutoff_va[reading.meter]:
                over.add(reading.meter)
    # A few percent of homes, not most of them.
    assert 8 <= len(near) <= 0.3 * 800
    assert over


def test_malformed_frames_come_at_the_configured_fraction_and_are_all_rejectable() -> None:
    config = FleetConfig(meters=300, zones=2, seed=9, malformed_fraction=0.02, disconnects=False)
    wire = simulate(config, datetime(2025, 3, 1, 8, 0, tzinfo=UTC), steps=200)
    good = wire.readings()
    total = len(good) + len(wire.malformed)
    assert total == 300 * 200
    assert abs(len(wire.malformed) / total - 0.02) < 0.003
    kinds = {kind for _m, kind, _raw in wire.malformed}
    assert kinds == {"truncated", "wrong_type", "negative_power", "impossible_voltage", "index_backwards"}
    by_meter = wire.by_meter()
    for meter, kind, raw in wire.malformed:
        try:
            decoded = INGEST.decode(raw)
        except ContractError:
            assert kind != "index_backwards"
            continue
        # Schema-valid: the only way to tell is the meter's history; its index went backwards.
        assert kind == "index_backwards"
        assert not isinstance(decoded, ReadingBatch)
        before = [r.withdrawn_wh for r in by_meter[meter] if r.seq < decoded.seq]
        if before:
            assert decoded.withdrawn_wh < before[-1]


def test_disconnect_episodes_show_as_gaps_at_the_configured_rate() -> None:
    per_day, interval, steps = 48.0, 10, 4 * 360  # four hours
    config = FleetConfig(meters=200, zones=2, seed=10, malformed_fraction=0.0, disconnects_per_meter_day=per_day,
                         interval_s=interval)
    start = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
    wire = simulate(config, start, steps=steps)
    missed: list[int] = []  # steps missed, per outage
    online_s = 0
    by_meter = wire.by_meter()
    for readings in by_meter.values():
        # Which step each reading belongs to, from the meter's clock (it drifts by far less than a step).
        index = np.rint((np.array([r.time_ms for r in readings]) / 1000 - start.timestamp()) / interval).astype(int)
        bounded = np.concatenate([[-1], index, [steps]])
        jumps = np.diff(bounded)
        missed.extend((jumps[jumps > 1] - 1).tolist())
        online_s += len(readings) * interval
    missed.extend([steps] * (200 - len(by_meter)))  # away the whole time
    assert len(missed) == wire.simulation.modules.episodes
    rate_per_day = len(missed) / (online_s / 86400.0)
    assert per_day * 0.85 < rate_per_day < per_day * 1.15
    missed_s = np.array(missed) * interval
    assert (missed_s <= 120).sum() > 0.3 * len(missed)  # Wi-Fi blips and reboots
    assert (missed_s >= 600).sum() > 0.05 * len(missed)  # routers off for a while


def test_same_seed_same_readings_other_seed_other_fleet() -> None:
    start = datetime(2025, 2, 3, 7, 0, tzinfo=UTC)
    a = simulate(FleetConfig(meters=80, seed=11), start, steps=120)
    b = simulate(FleetConfig(meters=80, seed=11), start, steps=120)
    c = simulate(FleetConfig(meters=80, seed=12), start, steps=120)
    assert a.messages == b.messages
    assert a.malformed == b.malformed
    assert a.fleet.describe() == b.fleet.describe()
    assert {h["meter"] for h in a.fleet.describe()}.isdisjoint({h["meter"] for h in c.fleet.describe()})
    assert a.messages != c.messages


def test_tariff_options_are_all_present_with_their_registers() -> None:
    wire = simulate(FleetConfig(meters=400, seed=13), datetime(2025, 2, 3, 7, 0, tzinfo=UTC), steps=2)
    counts = {option.value: 0 for option in TARIFFS}
    homes = {h["meter"]: h for h in wire.fleet.describe()}
    for reading in wire.readings():
        option = homes[reading.meter]["tariff"]
        counts[option] += 1
        assert len(reading.withdrawn_wh_by_register) == {"base": 1, "peak_offpeak": 2, "tempo": 6}[option]
    assert all(counts.values())
