"""The household app's euros against hand-worked figures and the alert engine's own spending."""

from __future__ import annotations

from datetime import date

import httpx
import pytest

from households.bill import current_bill
from households.consumption import daily, series
from households.home import Home
from households.indexes import REOPENED_FOR_S, RUN_TRUSTED_S, BoundaryCache
from households.live import LiveHub, LiveReading
from quartier.influx import RAW_POLICY
from quartier import tariffs
from tests.households.meters import local_ms
from tests.households.scenarios import METERS, Told


def day_figure(told: Told, name: str, d: date):  # type: ignore[no-untyped-def]
    home = METERS[name].home
    (figure,) = [f for f in daily(told.settings, home, d, d, at_ms=METERS[name].last_ms) if f.day == d]
    assert figure.complete
    return figure


@pytest.mark.parametrize(
    ("name", "day", "energy_wh", "eur"),
    [
        # 1,200 W all day: 28.8 kWh x 0.2516 EUR (base, February 2024 table) = 7.24608
        ("base_day", date(2025, 1, 14), 28_800, 7.25),
        # Off-peak 00:00-06:00 and 22:00-24:00 (the window crossing midnight) at 3,000 W: 24 kWh x 0.2068
        # = 4.9632; peak 06:00-22:00 at 600 W: 9.6 kWh x 0.2700 = 2.592; 7.5552 in all.
        ("peak_offpeak_day", date(2025, 1, 14), 33_600, 7.56),
        # Red Monday 20 January 2025, after a blue Sunday; 1,200 W: 00:00-06:00 is still Sunday's Tempo day
        # (blue off-peak, 7.2 kWh x 0.1296 = 0.93312), 06:00-22:00 red peak (19.2 kWh x 0.7562 = 14.51904),
        # 22:00-24:00 red off-peak (2.4 kWh x 0.1568 = 0.37632): 15.82848.
        ("tempo_red_day", date(2025, 1, 20), 28_800, 15.83),
        # The last day of the February 2024 prices, then the first of the February 2025 ones (0.2016):
        ("before_price_change", date(2025, 1, 31), 28_800, 7.25),
        ("after_price_change", date(2025, 2, 1), 28_800, 5.81),  # 28.8 x 0.2016 = 5.80608
        # The clocks go forward: 23 hours at 1,200 W, 27.6 kWh x 0.2016 = 5.56416.
        ("spring_forward_day", date(2025, 3, 30), 27_600, 5.56),
        # The clocks go back: 25 hours, off-peak 00:00-06:00 (seven hours, 02:00-03:00 twice) and 22:00-24:00
        # at 3,000 W: 27 kWh x 0.1635 = 4.4145; peak 06:00-22:00 at 600 W: 9.6 kWh x 0.2081 = 1.99776
        # (the 1 August 2025 table): 6.41226.
        ("fall_back_day", date(2025, 10, 26), 36_600, 6.41),
    ],
)
async def test_a_day_in_euros_is_the_hand_figure_and_the_engines_spending(
    told: Told, name: str, day: date, energy_wh: int, eur: float
) -> None:
    assert tariffs.tempo_colour(date(2025, 1, 20)) is tariffs.TempoColour.RED
    assert tariffs.tempo_colour(date(2025, 1, 19)) is tariffs.TempoColour.BLUE
    figure = day_figure(told, name, day)
    assert figure.energy_wh == energy_wh
    assert round(figure.eur, 2) == eur
    engine = await told.engine_day_spending(name)
    assert engine.episode_start_ms == METERS[name].home.midnight_ms(date.fromordinal(day.toordinal() + 1))
    assert round(engine.value, 2) == round(figure.eur, 2) == eur
    assert engine.value == pytest.approx(figure.eur, abs=1e-9)  # the same code path, not a second one


async def test_a_chart_across_a_price_change_prices_each_day_with_its_own_table(told: Told) -> None:
    # 30 days ending 10 February 2025 at noon for the meter drawing 1,200 W since 14 January: one-hour
    # buckets from the 10-minute rollup; 31 January at 0.2516, 1 February at 0.2016.
    home = METERS["billing_from_15th"].home
    chart = series(told.settings, home, "30d", "eur", at_ms=local_ms(2025, 2, 10, 12))
    assert (chart.interval_s, chart.policy) == (3600, "rollup")
    by_day: dict[date, float] = {}
    for bucket in chart.buckets:
        by_day[home.local_date(bucket.start_ms)] = by_day.get(home.local_date(bucket.start_ms), 0.0) + bucket.eur
    assert round(by_day[date(2025, 1, 31)], 2) == 7.25
    assert round(by_day[date(2025, 2, 1)], 2) == 5.81
    assert len([b for b in chart.buckets if home.local_date(b.start_ms) == date(2025, 1, 31)]) == 24
    # Each hour of 1,200 W: 1.2 kWh, the first since the meter's first reading to the last.
    kwh = series(told.settings, home, "30d", "kwh", at_ms=local_ms(2025, 2, 10, 12))
    assert kwh.values() == [1.2] * len(kwh.buckets)
    # from the first whole hour after the first reading (14 January 22:00) to noon on the 10th
    assert len(kwh.buckets) == (local_ms(2025, 2, 10, 12) - local_ms(2025, 1, 14, 23)) // 3_600_000


async def test_a_24_hour_chart_from_raw_readings_adds_up_to_the_day(told: Told) -> None:
    home = METERS["peak_offpeak_day"].home
    chart = series(told.settings, home, "24h", "eur", at_ms=local_ms(2025, 1, 15))
    assert (chart.interval_s, chart.policy) == (90, "raw")
    assert round(sum(b.eur for b in chart.buckets), 2) == 7.56
    assert sum(b.energy_wh for b in chart.buckets) == 33_600


async def test_charts_over_the_night_the_clocks_go_back_count_every_real_hour(told: Told) -> None:
    home = METERS["fall_back_day"].home
    # The 24 real hours before midnight of the 27th begin at 01:00 on the 26th (summer time): off-peak
    # 01:00-06:00 is six real hours, 22:00-24:00 two, at 3,000 W (24 kWh); peak 16 hours at 600 W.
    chart = series(told.settings, home, "24h", "kwh", at_ms=local_ms(2025, 10, 27))
    assert (chart.interval_s, chart.policy) == (90, "raw")
    # The readings come every 10 minutes: one non-empty 90-second bucket each, the repeated hour's twice.
    assert len(chart.buckets) == 24 * 6
    assert all(a.start_ms < b.start_ms for a, b in zip(chart.buckets, chart.buckets[1:]))
    assert sum(b.energy_wh for b in chart.buckets) == 33_600
    # A week's chart in euros: the 26th, from its rollup buckets, is its 25 hours at that day's prices.
    week = series(told.settings, home, "7d", "eur", at_ms=local_ms(2025, 10, 27, 0, 10))
    on_the_day = [b for b in week.buckets if home.local_date(b.start_ms) == date(2025, 10, 26)]
    assert len(on_the_day) == 25 * 3600 // week.interval_s
    assert sum(b.energy_wh for b in on_the_day) == 36_600
    assert round(sum(b.eur for b in on_the_day), 2) == 6.41


@pytest.mark.parametrize("range_", ["24h", "7d", "30d", "12mo"])
async def test_an_energy_chart_reads_only_the_total_index_and_has_the_euro_charts_buckets(told: Told, range_: str) -> None:
    # A kWh chart asks InfluxDB for the total index alone (no per-tariff index: nothing to price); its
    # buckets and their energies are the euro chart's, bucket for bucket, read whole and through the cache.
    home = METERS["fall_back_day"].home
    at = local_ms(2025, 10, 27)
    kwh = series(told.settings, home, range_, "kwh", at_ms=at)
    eur = series(told.settings, home, range_, "eur", at_ms=at)
    assert [(b.start_ms, b.energy_wh) for b in kwh.buckets] == [(b.start_ms, b.energy_wh) for b in eur.buckets]
    assert {b.eur for b in kwh.buckets} == {None} and None not in {b.eur for b in eur.buckets}
    if range_ == "24h":  # the 24 real hours before midnight of the 27th (see above)
        assert sum(b.energy_wh for b in kwh.buckets) == 33_600
    cache = BoundaryCache()
    for unit, whole in (("kwh", kwh), ("eur", eur), ("kwh", kwh)):
        assert series(told.settings, home, range_, unit, at_ms=at, cache=cache) == whole


async def test_a_billing_period_from_the_15th_prorates_the_subscription_across_the_price_change(told: Told) -> None:
    home = METERS["billing_from_15th"].home
    bill = current_bill(told.settings, home, at_ms=local_ms(2025, 2, 10, 12))
    assert (bill.period_start, bill.period_end) == (date(2025, 1, 15), date(2025, 2, 14))
    assert (bill.days_elapsed, bill.days_in_period) == (27, 31)
    # 17 days of January at 7.24608, 9 of February at 5.80608, and 10 February to noon (14.4 kWh x
    # 0.2016 = 2.90304): 178.34112 EUR for 763.2 kWh.
    assert bill.energy_wh == 763_200
    assert round(bill.energy_eur, 2) == 178.34
    # 6 kVA base: 149.28 EUR a year to 31 January, 185.64 from 1 February, per day over 365:
    # (17 x 149.28 + 10 x 185.64) / 365 = 12.0388
    assert round(bill.subscription_eur, 2) == 12.04
    assert round(bill.total_eur, 2) == 190.38
    # The last 7 whole days (3-9 February) at 5.80608 a day, for 4 days and half of today: +26.12736;
    # the whole period's subscription (17 x 149.28 + 14 x 185.64) / 365 = 14.0732.
    assert round(bill.projected_energy_eur, 2) == 204.47
    assert round(bill.projected_subscription_eur, 2) == 14.07
    assert round(bill.projected_total_eur, 2) == 218.54
    assert "last 7 whole day(s)" in bill.method
    # Every day of the period is the engine's kind of day: 15 January closed by 16 January's first reading.
    assert [round(d.eur, 2) for d in bill.days[:2]] == [7.25, 7.25]
    assert [round(d.eur, 2) for d in bill.days[17:19]] == [5.81, 5.81]


@pytest.mark.parametrize("name", ["billing_from_15th", "fall_back_day"])
@pytest.mark.parametrize("range_", ["24h", "7d", "30d", "12mo"])
async def test_charts_through_the_sealed_bucket_cache_equal_the_charts_read_whole(
    told: Told, name: str, range_: str
) -> None:
    # One cache asked again and again as time goes on (across 1 February 2025's price change and the
    # night of 26 October 2025), as the API process does: every chart, in kWh and in euros, bucket for
    # bucket and to the last bit, is the one read whole from InfluxDB at the same instant.
    home = METERS[name].home
    cache = BoundaryCache()
    start = local_ms(2025, 1, 31, 20) if name == "billing_from_15th" else local_ms(2025, 10, 25, 23)
    buckets = 0
    for step in range(8):
        at = start + step * 37 * 60_000 + step * step * 3_600_000
        for unit in ("kwh", "eur"):
            whole = series(told.settings, home, range_, unit, at_ms=at)
            assert series(told.settings, home, range_, unit, at_ms=at, cache=cache) == whole
            buckets += len(whole.buckets)
    assert buckets > 0, "the meter has readings in the ranges asked"


LATE_METER = "200000000977"  # a meter of this test alone: its late readings change no other test's figures


def write_readings(told: Told, readings: list[tuple[int, int]]) -> None:
    """Raw readings (meter time, total index) as the worker writes them: one register, the base tariff's."""
    lines = [f"reading,meter={LATE_METER},zone=late-test withdrawn_wh={wh}i,withdrawn_wh_r1={wh}i {t}" for t, wh in readings]
    answer = httpx.post(f"{told.settings.influx.url}/write", params={"db": told.settings.influx.database, "rp": RAW_POLICY,
                        "precision": "ms"}, content="\n".join(lines).encode(), timeout=30)
    answer.raise_for_status()


async def test_a_reading_that_reaches_the_log_late_reopens_its_meters_sealed_buckets(told: Told) -> None:
    # 12 March 2025, a reading every 10 minutes from midnight to 13:00, 100 Wh apart; the 24-hour chart at
    # 13:00 seals its buckets to noon. A reading of 05:05 then arrives (a module's buffer after a loss):
    # 05:00-05:10's 100 Wh split 40 and 60 around it (90-s buckets from local midnight: 04:49:30, 05:00,
    # 05:04:30, 05:09), which the chart read whole shows at once.
    home = Home(household="late-household", meter=LATE_METER, zone="late-test")
    day, at = local_ms(2025, 3, 12), local_ms(2025, 3, 12, 13)
    write_readings(told, [(day + i * 600_000, 1_000_000 + 100 * i) for i in range(79)])
    clock = [0.0]
    cache = BoundaryCache(clock=lambda: clock[0])
    before = series(told.settings, home, "24h", "kwh", at_ms=at, cache=cache)
    assert sum(b.energy_wh for b in before.buckets) == 7_800
    late_ms = local_ms(2025, 3, 12, 5, 5)
    write_readings(told, [(late_ms, 1_000_000 + 100 * 30 + 40)])
    after = series(told.settings, home, "24h", "kwh", at_ms=at)
    split = [(b.start_ms, b.energy_wh) for b in after.buckets if local_ms(2025, 3, 12, 4, 45) <= b.start_ms < local_ms(2025, 3, 12, 5, 15)]
    assert [wh for _, wh in split] == [100, 40, 60, 100]
    # Untold, the warm cache still serves the chart as it was sealed...
    assert series(told.settings, home, "24h", "kwh", at_ms=at, cache=cache) == before
    # ...and once the live feed tells it, the chart is the one read whole, now and an hour later.
    LiveHub(on_late=cache.reopen).publish([LiveReading(LATE_METER, late_ms, 500, 6)],
                                          produced_ms=at)
    assert series(told.settings, home, "24h", "kwh", at_ms=at, cache=cache) == after
    assert series(told.settings, home, "24h", "kwh", at_ms=at + 3_600_000, cache=cache) == series(
        told.settings, home, "24h", "kwh", at_ms=at + 3_600_000)
    # The meter stays open an hour after its last late reading; then its buckets seal again, to 13:00.
    clock[0] += REOPENED_FOR_S + 1
    later = at + 3_600_000
    sealed = series(told.settings, home, "24h", "kwh", at_ms=later, cache=cache)
    # A late point no feed saw (the worker's spool writing back after a long outage) is in the chart
    # once the sealed run is older than the cache trusts any run.
    write_readings(told, [(local_ms(2025, 3, 12, 8, 5), 1_000_000 + 100 * 48 + 70)])
    whole = series(told.settings, home, "24h", "kwh", at_ms=later)
    assert whole != sealed
    assert series(told.settings, home, "24h", "kwh", at_ms=later, cache=cache) == sealed
    clock[0] += RUN_TRUSTED_S + 1
    assert series(told.settings, home, "24h", "kwh", at_ms=later, cache=cache) == whole


def test_the_hub_tells_only_of_readings_produced_more_than_55_minutes_after_their_time() -> None:
    told_late: list[tuple[str, int]] = []
    hub = LiveHub(on_late=lambda meter, t: told_late.append((meter, t)))
    produced = local_ms(2025, 3, 12, 13)

    def at(minutes_before: int, meter: str = LATE_METER) -> LiveReading:
        return LiveReading(meter, produced - minutes_before * 60_000, 500, 6)

    hub.publish([at(54), at(56), at(120, "200000000978"), at(0)], produced_ms=produced)
    hub.publish([at(120)], produced_ms=0)  # no producer time (a record without one): nothing to judge by
    assert told_late == [(LATE_METER, produced - 56 * 60_000), ("200000000978", produced - 120 * 60_000)]
    # The live figure is still the newest reading, late ones notwithstanding.
    assert hub.latest(LATE_METER).time_ms == produced  # type: ignore[union-attr]
