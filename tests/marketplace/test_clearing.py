"""Clearing mechanisms against results computed by hand."""

from __future__ import annotations

import pytest

from marketplace.clearing import (
    Ask,
    Bid,
    Match,
    PurchaseRejected,
    clear_auction,
    purchase_quantity,
)

# A zone's slot: three offers, three bids. By hand, in merit order:
#   offers A1 100 Wh @10, A2 200 Wh @12, A3 150 Wh @15; bids B1 120 Wh @16, B2 100 Wh @13, B3 200 Wh @11
#   A1-B1 100 Wh (A1 done, B1 has 20 left); A2-B1 20 Wh (B1 done, A2 has 180 left);
#   A2-B2 100 Wh (B2 done, A2 has 80 left); A2 @12 vs B3 @11: no longer crosses, stop.
ASKS = [Ask("A3", 150, 15, 3), Ask("A1", 100, 10, 1), Ask("A2", 200, 12, 2)]
BIDS = [Bid("B2", 100, 13, 5), Bid("B3", 200, 11, 6), Bid("B1", 120, 16, 4)]


def test_pay_as_bid_trades_each_match_at_the_bid_price() -> None:
    result = clear_auction("pay_as_bid", ASKS, BIDS)
    assert result.matches == (
        Match("A1", "B1", 100, 16),
        Match("A2", "B1", 20, 16),
        Match("A2", "B2", 100, 13),
    )
    assert result.clearing_price_cents_per_kwh is None
    assert result.traded_wh == 220


def test_pay_as_clear_trades_everything_at_the_marginal_offer_price() -> None:
    result = clear_auction("pay_as_clear", ASKS, BIDS)
    assert result.matches == (
        Match("A1", "B1", 100, 12),
        Match("A2", "B1", 20, 12),
        Match("A2", "B2", 100, 12),
    )
    assert result.clearing_price_cents_per_kwh == 12


def test_equal_prices_go_by_time_priority_then_id() -> None:
    asks = [Ask("late", 100, 10, 9), Ask("early", 100, 10, 1), Ask("b-same-seq", 100, 10, 5), Ask("a-same-seq", 100, 10, 5)]
    bids = [Bid("buyer", 250, 10, 2)]
    result = clear_auction("pay_as_bid", asks, bids)
    assert [(m.offer_id, m.energy_wh) for m in result.matches] == [
        ("early", 100),
        ("a-same-seq", 100),
        ("b-same-seq", 50),
    ]


def test_bids_of_equal_price_fill_in_time_order_and_the_last_one_partially() -> None:
    asks = [Ask("A", 150, 8, 1)]
    bids = [Bid("second", 100, 9, 3), Bid("first", 100, 9, 2)]
    assert clear_auction("pay_as_clear", asks, bids).matches == (
        Match("A", "first", 100, 8),
        Match("A", "second", 50, 8),
    )


def test_no_trade_when_the_best_bid_is_below_the_cheapest_offer() -> None:
    result = clear_auction("pay_as_clear", [Ask("A", 100, 20, 1)], [Bid("B", 100, 19, 2)])
    assert result.matches == ()
    assert result.clearing_price_cents_per_kwh is None


def test_a_match_below_the_minimum_lot_is_never_made() -> None:
    # min lot 50: A1-B1 100 Wh leaves B1 with 30 Wh, below the lot: B1 stops there (partially filled)
    # and A2 goes whole to B2.
    asks = [Ask("A1", 100, 10, 1), Ask("A2", 100, 10, 2)]
    bids = [Bid("B1", 130, 20, 3), Bid("B2", 100, 20, 4)]
    result = clear_auction("pay_as_bid", asks, bids, min_lot_wh=50)
    assert result.matches == (Match("A1", "B1", 100, 20), Match("A2", "B2", 100, 20))
    assert all(m.energy_wh >= 50 for m in result.matches)


def test_clearing_is_deterministic_whatever_the_input_order() -> None:
    forward = clear_auction("pay_as_clear", ASKS, BIDS)
    backward = clear_auction("pay_as_clear", list(reversed(ASKS)), list(reversed(BIDS)))
    assert forward == backward


def test_unknown_mechanism_is_refused() -> None:
    with pytest.raises(ValueError, match="bilateral"):
        clear_auction("bilateral", ASKS, BIDS)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("remaining", "requested", "min_lot", "expected"),
    [(500, None, 1, 500), (500, 200, 1, 200), (500, 400, 100, 400), (500, 500, 100, 500)],
)
def test_purchase_fills_all_or_part_of_an_offer(remaining: int, requested: int | None, min_lot: int, expected: int) -> None:
    assert purchase_quantity(remaining, requested, min_lot_wh=min_lot) == expected


@pytest.mark.parametrize(
    ("remaining", "requested", "min_lot", "reason"),
    [
        (500, 501, 1, "only 500 Wh of the offer are left"),
        (500, 50, 100, "below the zone's minimum lot of 100 Wh"),
        (500, 450, 100, "would leave 50 Wh, below the zone's minimum lot of 100 Wh: buy all 500 Wh or at most 400 Wh"),
        (0, None, 1, "sold out"),
    ],
)
def test_purchase_that_cannot_fill_says_why(remaining: int, requested: int | None, min_lot: int, reason: str) -> None:
    with pytest.raises(PurchaseRejected, match=reason):
        purchase_quantity(remaining, requested, min_lot_wh=min_lot)
