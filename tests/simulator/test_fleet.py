"""The fleet a user describes, and the tariff calendar shared with the stream engine."""

from __future__ import annotations

from collections import Counter
from datetime import date, datetime, timedelta, timezone

import pytest

from quartier import tariffs
from quartier.tariffs import TariffOption, TempoColour
from simulator.config import ConfigError, FleetConfig
from simulator.fleet import SUBSCRIBED_KVA, build_fleet


def test_fleet_has_realistic_homes_in_zones_of_neighbours() -> None:
    fleet = build_fleet(FleetConfig(meters=4000, zones=20, seed=31))
    homes = fleet.describe()
    assert len({h["meter"] for h in homes}) == 4000
    assert all(len(h["meter"]) == 12 and h["meter"].isdigit() for h in homes)
    assert {h["subscribed_kva"] for h in homes} <= set(SUBSCRIBED_KVA.tolist())
    assert all(h["cutoff_kva"] == h["subscribed_kva"] for h in homes)
    assert {h["tariff"] for h in homes} == {"base", "peak_offpeak", "tempo"}
    sizes = Counter(h["zone"] for h in homes)
    assert len(sizes) == 20
    assert 50 <= min(sizes.values()) and max(sizes.values()) <= 500
    for zone, size in sizes.items():
        share = sum(h["producer"] for h in homes if h["zone"] == zone) / size
        assert 0.03 <= share <= 0.35, zone
    producers = [h for h in homes if h["producer"]]
    assert all(h["pv_kwp"] > 0 for h in producers)
    heated = [h for h in homes if h["electric_heating"]]
    assert 0.25 < len(heated) / 4000 < 0.5
    # Homes heated electrically subscribe more power.
    mean = lambda hs: sum(h["subscribed_kva"] for h in hs) / len(hs)  # noqa: E731
    assert mean(heated) > mean([h for h in homes if not h["electric_heating"]])


def test_default_zone_count_gives_neighbourhoods_of_about_200_homes() -> None:
    assert FleetConfig(meters=48_000).zone_count == 240
    assert FleetConfig(meters=30).zone_count == 1


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"meters": 0}, "meters"),
        ({"meters": 10, "zones": 11}, "zones"),
        ({"meters": 10, "malformed_fraction": -0.1}, "malformed_fraction"),
        ({"meters": 10, "producer_share": (0.3, 0.2)}, "producer_share"),
        ({"meters": 10, "cloud_cover": 2.0}, "cloud_cover"),
        ({"meters": 10, "interval_s": 0}, "interval_s"),
        ({"meters": 10, "disconnects_per_meter_day": -1.0}, "disconnects_per_meter_day"),
    ],
)
def test_bad_parameters_are_refused_naming_the_parameter(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=f"^{field}: ") as error:
        FleetConfig(**kwargs)
    assert error.value.field == field


def test_tempo_calendar_has_the_regulated_number_of_days_in_winter_weekdays() -> None:
    first = date(2024, 9, 1)
    days = [first + timedelta(days=i) for i in range(365)]
    colours = {d: tariffs.tempo_colour(d) for d in days}
    counts = Counter(colours.values())
    assert counts[TempoColour.RED] == tariffs.TEMPO_RED_DAYS
    assert counts[TempoColour.WHITE] == tariffs.TEMPO_WHITE_DAYS
    for day, colour in colours.items():
        if colour is TempoColour.RED:
            assert day.weekday() < 5 and day.month in (11, 12, 1, 2, 3)
        if colour is TempoColour.WHITE:
            assert day.weekday() != 6
    # Every process computes the same calendar.
    assert [tariffs.tempo_colour(d) for d in days] == list(colours.values())


def test_registers_follow_local_off_peak_hours_and_the_tempo_day() -> None:
    utc = timezone.utc
    winter_22h_local = datetime(2025, 1, 15, 21, 0, tzinfo=utc)
    assert tariffs.register_at("base", winter_22h_local) == 1
    assert tariffs.register_at("peak_offpeak", winter_22h_local - timedelta(seconds=1)) == 2
    assert tariffs.register_at("peak_offpeak", winter_22h_local) == 1
    summer_06h_local = datetime(2025, 7, 1, 4, 0, tzinfo=utc)
    assert tariffs.register_at("peak_offpeak", summer_06h_local - timedelta(seconds=1)) == 1
    assert tariffs.register_at("peak_offpeak", summer_06h_local) == 2
    # A Tempo night belongs to the day that began at 06:00 the day before.
    red = next(d for d in (date(2025, 1, 1) + timedelta(days=i) for i in range(90))
               if tariffs.tempo_colour(d) is TempoColour.RED and tariffs.tempo_colour(d + timedelta(days=1)) is TempoColour.BLUE)
    next_morning_5h_local = datetime(red.year, red.month, red.day, 4, 0, tzinfo=utc) + timedelta(days=1)
    assert tariffs.register_at(TariffOption.TEMPO, next_morning_5h_local) == 5  # red off-peak
    assert tariffs.register_at(TariffOption.TEMPO, next_morning_5h_local + timedelta(hours=1)) == 2  # blue peak
    assert tariffs.price_eur_per_kwh("tempo", 6) > 3 * tariffs.price_eur_per_kwh("tempo", 2)
    with pytest.raises(ValueError, match="registers 1..2"):
        tariffs.price_eur_per_kwh("peak_offpeak", 3)
    with pytest.raises(ValueError, match="timezone-aware"):
        tariffs.register_at("tempo", datetime(2025, 1, 1))
