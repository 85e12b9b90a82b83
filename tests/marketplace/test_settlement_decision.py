"""When a closed slot is allocated: complete meter data after the grace, or the deadline with what
arrived (stated in the event); and the metered-energy store keeps the most complete record."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import create_engine

from quartier import events as ev
from quartier.settings import Settings

from marketplace.metering import MeterStore
from marketplace.settlement import MeteredSlot, SettlementTiming, allocate_slot
from marketplace.state import MarketState

T0 = 1_893_456_000_000
SLOT = 900_000
END = T0 + SLOT
TIMING = SettlementTiming(grace_ms=60_000, deadline_ms=3_600_000)


def _closed_slot() -> MarketState:
    """Producer p (meter M-P) sold 600 Wh to c1 (M-C1) and 400 Wh to c2 (M-C2) at 20 c/kWh."""
    state = MarketState()
    at = T0 - 86_400_000
    events: list[object] = [
        ev.ZoneConfigured(zone="z", mechanism="bilateral", gate_closure_s=300, min_lot_wh=1, at_ms=at),
        ev.ParticipantRegistered(participant="p", zone="z", meter="M-P", roles=("producer",), capacity_w=5000, at_ms=at),
        ev.ParticipantRegistered(participant="c1", zone="z", meter="M-C1", roles=("consumer",), capacity_w=0, at_ms=at),
        ev.ParticipantRegistered(participant="c2", zone="z", meter="M-C2", roles=("consumer",), capacity_w=0, at_ms=at),
        ev.OfferListed(offer_id="o", producer="p", zone="z", slot_start_ms=T0, energy_wh=1000,
                       price_cents_per_kwh=20, at_ms=at),
        ev.OrderPlaced(order_id="b1", consumer="c1", zone="z", offer_id="o", slot_start_ms=T0, energy_wh=600,
                       price_cents_per_kwh=20, at_ms=at),
        ev.OrderPlaced(order_id="b2", consumer="c2", zone="z", offer_id="o", slot_start_ms=T0, energy_wh=400,
                       price_cents_per_kwh=20, at_ms=at),
        ev.SlotClosed(zone="z", slot_start_ms=T0, mechanism="bilateral", clearing_price_cents_per_kwh=None,
                      at_ms=T0 - 300_000),
    ]
    for e in events:
        state.apply(e)
    return state


def _metered(meter: str, imported: int, exported: int, completeness: float = 1.0) -> MeteredSlot:
    return MeteredSlot(meter, T0, imported, exported, completeness)


def _delivered(allocated: ev.Allocated) -> dict[str, int]:
    return {d.trade_id: d.delivered_wh for d in allocated.deliveries}


def test_a_slot_with_complete_meter_data_is_allocated_after_the_grace_only() -> None:
    state = _closed_slot()
    metered = {m.meter: m for m in [_metered("M-P", 0, 1000), _metered("M-C1", 700, 0), _metered("M-C2", 500, 0)]}
    assert allocate_slot(state, "z", T0, metered, END + 59_999, TIMING) == []
    [allocated] = allocate_slot(state, "z", T0, metered, END + 60_000, TIMING)
    assert allocated.complete and allocated.missing_meters == ()
    assert sorted(_delivered(allocated).values()) == [400, 600]
    assert sum(d.amount_millicents for d in allocated.deliveries) == 1000 * 20


def test_a_producer_short_of_what_it_sold_delivers_pro_rata() -> None:
    state = _closed_slot()
    metered = {m.meter: m for m in [_metered("M-P", 0, 501), _metered("M-C1", 700, 0), _metered("M-C2", 500, 0)]}
    [allocated] = allocate_slot(state, "z", T0, metered, END + 60_000, TIMING)
    by_order = {state.trades[t].order_id: wh for t, wh in _delivered(allocated).items()}
    # 600:400 of 501 Wh is 300.6 and 200.4: floors 300 and 200, the left-over Wh to the larger fraction.
    assert by_order == {"b1": 301, "b2": 200}


def test_incomplete_data_waits_for_the_deadline_then_allocates_what_arrived_and_says_so() -> None:
    state = _closed_slot()
    metered = {m.meter: m for m in [_metered("M-P", 0, 1000), _metered("M-C1", 700, 0, completeness=0.5)]}
    assert allocate_slot(state, "z", T0, metered, END + 3_599_999, TIMING) == []
    [allocated] = allocate_slot(state, "z", T0, metered, END + 3_600_000, TIMING)
    assert not allocated.complete
    assert allocated.missing_meters == ("M-C1", "M-C2")
    # c2's meter sent nothing: it took nothing; c1's partial record counts as it stands.
    by_order = {state.trades[t].order_id: wh for t, wh in _delivered(allocated).items()}
    assert by_order == {"b1": 600, "b2": 0}


def test_an_allocated_slot_is_never_allocated_again() -> None:
    state = _closed_slot()
    metered = {m.meter: m for m in [_metered("M-P", 0, 1000), _metered("M-C1", 700, 0), _metered("M-C2", 500, 0)]}
    [allocated] = allocate_slot(state, "z", T0, metered, END + 60_000, TIMING)
    state.apply(allocated)
    assert allocate_slot(state, "z", T0, metered, END + 120_000, TIMING) == []


def test_timing_refuses_a_deadline_before_the_grace() -> None:
    with pytest.raises(ValueError, match="deadline_ms"):
        SettlementTiming(grace_ms=10, deadline_ms=5)


def test_the_settings_give_the_timing_and_refuse_a_deadline_before_the_grace() -> None:
    settings = Settings(market={"settlement_grace_s": 30, "settlement_deadline_s": 600})
    assert SettlementTiming.from_settings(settings.market) == SettlementTiming(grace_ms=30_000, deadline_ms=600_000)
    with pytest.raises(ValidationError, match="market.settlement_deadline_s"):
        Settings(market={"settlement_grace_s": 120, "settlement_deadline_s": 60})


def _energy(meter: str, imported: int, completeness: float) -> ev.SlotEnergy:
    return ev.SlotEnergy(meter=meter, zone="z", slot_start_ms=T0, imported_wh=imported, exported_wh=0,
                         completeness=completeness)


def test_the_meter_store_keeps_the_most_complete_record_of_a_slot(tmp_path: Path) -> None:
    store = MeterStore(create_engine(f"sqlite:///{tmp_path / 'm.db'}"))
    store.record([_energy("M-1", 300, 0.5)])
    store.record([_energy("M-1", 600, 1.0), _energy("M-2", 10, 0.2)])
    store.record([_energy("M-1", 100, 0.1)])  # re-emitted after a restart, less complete: ignored
    got = store.slot(T0, ["M-1", "M-2", "M-3"])
    assert {m: (s.imported_wh, s.completeness) for m, s in got.items()} == {"M-1": (600, 1.0), "M-2": (10, 0.2)}
