"""Metered 15-minute slots from index differences, with completeness (streams/slots.py)."""

from __future__ import annotations

import random

import pytest

from quartier.events import MeterReading, SlotEnergy
from streams.slots import SLOT_MS, SlotTracker
from tests.streams.alerting_support import Household, ms

QUARTER = ms(2025, 3, 10, 12, 0)  # a slot boundary


def track(tracker: SlotTracker, readings: list[MeterReading]) -> list[SlotEnergy]:
    out: list[SlotEnergy] = []
    for reading in readings:
        out.extend(tracker.on_reading(reading))
    return out


def test_a_steady_load_gives_equal_slots_fully_covered() -> None:
    home = Household(start_ms=QUARTER - 2_000)
    slots = track(SlotTracker(), home.readings(1_000, 3_600 + 10))
    assert [s.slot_start_ms for s in slots] == [QUARTER - SLOT_MS] + [QUARTER + i * SLOT_MS for i in range(4)]
    first, *whole = slots
    assert first.completeness == pytest.approx(1 / 900)  # seen for its last second only
    assert [s.imported_wh for s in whole] == [250, 250, 250, 250]  # 1 kW × 15 min
    assert [s.completeness for s in whole] == [1.0, 1.0, 1.0, 1.0]
    assert {(s.meter, s.zone, s.exported_wh) for s in slots} == {(home.meter, "rennes-01", 0)}


def test_a_boundary_between_two_readings_is_interpolated() -> None:
    home = Household(start_ms=QUARTER - 45_000)
    tracker = SlotTracker()
    # A reading every 40 s at 3.6 kW (1 Wh a second): the boundary falls 5 s after a reading.
    readings = home.readings(3_600, 1_000, dt_s=40)
    slots = track(tracker, readings)
    assert slots[0].imported_wh == 5  # from the first reading (5 s before the boundary) to the boundary
    assert [s.imported_wh for s in slots[1:]] == [900]


def test_producers_export_from_the_injection_index() -> None:
    home = Household(start_ms=QUARTER - 1_000)
    readings = [home.reading(200, injected_va=2_400) for _ in range(SLOT_MS // 1000 + 2)]
    slots = track(SlotTracker(), readings)  # the first reading is on the boundary
    assert [(s.slot_start_ms, s.imported_wh, s.exported_wh) for s in slots] == [(QUARTER, 50, 600)]


def test_a_silence_inside_a_slot_lowers_its_completeness_not_its_energy() -> None:
    home = Household(start_ms=QUARTER - 1_000)
    readings = home.readings(1_000, 300) + [home.reading(1_000, dt_s=300)] + home.readings(1_000, 301)
    slots = track(SlotTracker(), readings)
    slot = next(s for s in slots if s.slot_start_ms == QUARTER)
    assert slot.imported_wh == 250  # the index moved through the silence all the same
    assert slot.completeness == pytest.approx(600 / 900, abs=0.002)


def test_slots_a_meter_was_silent_through_get_their_share_with_no_completeness() -> None:
    home = Household(start_ms=QUARTER - 1_000)
    tracker = SlotTracker()
    track(tracker, home.readings(1_000, 61))
    # Silent for one hour, drawing 1 kW all along, then back.
    slots = track(tracker, [home.reading(1_000, dt_s=3_600)] + home.readings(1_000, 900))
    assert [(s.slot_start_ms - QUARTER) // SLOT_MS for s in slots] == [0, 1, 2, 3, 4]
    # Meters report whole Wh, so an interpolated boundary can move one Wh between neighbours.
    assert [s.imported_wh for s in slots] == pytest.approx([250] * 5, abs=1)
    assert sum(s.imported_wh for s in slots) == 1_250
    assert slots[1].completeness == 0.0 and slots[2].completeness == 0.0
    assert slots[0].completeness == pytest.approx(60 / 900, abs=0.002)


def test_the_timer_closes_a_slot_whose_next_reading_is_late() -> None:
    home = Household(start_ms=QUARTER)
    tracker = SlotTracker()
    track(tracker, home.readings(1_000, 600))  # ten minutes, then the meter goes quiet
    assert tracker.close_due(QUARTER + SLOT_MS + 30_000) == []  # still within the grace period
    closed = tracker.close_due(QUARTER + SLOT_MS + 60_000)
    assert [(s.slot_start_ms, s.imported_wh) for s in closed] == [(QUARTER, 166)]
    assert closed[0].completeness == pytest.approx(599 / 900, abs=0.002)
    assert tracker.close_due(QUARTER + 3 * SLOT_MS + 60_000) == []  # slots it is silent through wait
    # Back after 40 minutes: the energy since its last reading goes to the slots after the closed one.
    later = track(tracker, [home.reading(1_000, dt_s=2_400)] + home.readings(1_000, 900))
    assert [(s.slot_start_ms - QUARTER) // SLOT_MS for s in later] == [1, 2, 3]
    assert sum(s.imported_wh for s in later) == pytest.approx(3_000 / 3.6, abs=1)  # from 10 min to 60 min
    assert [s.completeness for s in later][:2] == [0.0, 0.0]


def test_consecutive_slots_add_up_to_the_index_difference_exactly() -> None:
    rng = random.Random(3)
    home = Household(start_ms=QUARTER - 7_000)
    tracker = SlotTracker()
    readings = []
    for _ in range(6_000):
        readings.append(home.reading(rng.randrange(0, 9_000), dt_s=rng.choice([1, 1, 1, 2, 5, 90, 400])))
    slots = track(tracker, readings)
    assert len(slots) > 20
    boundary = slots[-1].slot_start_ms + SLOT_MS
    before = [r for r in readings if r.time_ms < boundary][-1]
    after = next(r for r in readings if r.time_ms >= boundary)
    at_boundary = before.withdrawn_wh + (after.withdrawn_wh - before.withdrawn_wh) * (
        (boundary - before.time_ms) / (after.time_ms - before.time_ms)
    )
    # Every boundary is counted once as an end and once as a start: the slots telescope.
    assert sum(s.imported_wh for s in slots) == round(at_boundary) - readings[0].withdrawn_wh
    assert all(0 <= s.completeness <= 1 for s in slots)


def test_a_replayed_reading_changes_nothing() -> None:
    home = Household(start_ms=QUARTER - 1_000)
    tracker = SlotTracker()
    readings = home.readings(1_000, 1_000)
    once = track(tracker, readings[:950])
    again = track(tracker, readings[900:950])  # redelivered after a rebalance
    assert again == [] and tracker.stale_readings == 50
    assert track(tracker, readings[950:]) == []
    assert [s.imported_wh for s in once] == [250]
