"""Allocation of metered energy to trades: pro rata, whole watt-hours, deterministic."""

from __future__ import annotations

import pytest

from marketplace.allocation import DeliveredTrade, TradeLine, allocate, pro_rata


def test_pro_rata_shares_in_proportion() -> None:
    assert pro_rata({"t1": 300, "t2": 100}, 200) == {"t1": 150, "t2": 50}


def test_pro_rata_gives_left_over_watt_hours_to_the_largest_fractions_then_by_id() -> None:
    # 5:3 of 7 Wh is 4.375 and 2.625: floors 4 and 2, the one Wh left goes to the larger fraction.
    assert pro_rata({"a": 5, "b": 3}, 7) == {"a": 4, "b": 3}
    # Equal fractions: the ids decide.
    assert pro_rata({"c": 1, "b": 1, "a": 1}, 2) == {"a": 1, "b": 1, "c": 0}


def test_pro_rata_never_gives_more_than_sold() -> None:
    assert pro_rata({"a": 10, "b": 20}, 1000) == {"a": 10, "b": 20}


def test_pro_rata_refuses_negative_energy() -> None:
    with pytest.raises(ValueError, match="available"):
        pro_rata({"a": 1}, -1)


TRADES = [
    TradeLine("t2", producer="P", consumer="C2", energy_wh=400, price_cents_per_kwh=12),
    TradeLine("t1", producer="P", consumer="C1", energy_wh=600, price_cents_per_kwh=10),
    TradeLine("t3", producer="Q", consumer="C1", energy_wh=100, price_cents_per_kwh=20),
]


def test_short_delivery_is_shared_pro_rata_among_the_producers_buyers() -> None:
    # P sold 1000 Wh and exported 800: t1 gets 600*0.8 = 480, t2 gets 400*0.8 = 320.
    # Q delivered in full; the consumers took all they bought.
    result = allocate(TRADES, exported_wh={"P": 800, "Q": 150}, imported_wh={"C1": 2000, "C2": 2000})
    assert result == [
        DeliveredTrade("t1", 480, 4800),
        DeliveredTrade("t2", 320, 3840),
        DeliveredTrade("t3", 100, 2000),
    ]


def test_a_consumer_that_took_less_than_it_bought_pays_for_what_it_took() -> None:
    # P delivered in full; C2 imported only 300 Wh of its 400.
    result = allocate(TRADES, exported_wh={"P": 1000, "Q": 100}, imported_wh={"C1": 700, "C2": 300})
    assert result[1] == DeliveredTrade("t2", 300, 3600)


def test_both_limits_apply_producer_first() -> None:
    # P exports 500 of 1000: t1 300, t2 200. C1 imports 200 over t1 (300) and t3 (100): 150 and 50.
    result = allocate(TRADES, exported_wh={"P": 500, "Q": 100}, imported_wh={"C1": 200, "C2": 1000})
    assert {d.trade_id: d.delivered_wh for d in result} == {"t1": 150, "t2": 200, "t3": 50}


def test_a_participant_without_meter_data_delivered_nothing() -> None:
    result = allocate(TRADES, exported_wh={"Q": 100}, imported_wh={"C1": 1000, "C2": 1000})
    assert {d.trade_id: d.delivered_wh for d in result} == {"t1": 0, "t2": 0, "t3": 100}
