"""Clearing mechanisms: pure, deterministic functions from a slot's offers and orders to trades.

Three mechanisms, selectable per zone (Grid Singularity's exchange offers the same three):

- **bilateral**: a consumer buys all or part of one listed offer at its price, at once
  (:func:`purchase_quantity` decides how much of a purchase can fill);
- **pay-as-bid**: at gate closure, bids and offers meet in merit order and each match trades at the
  bid's price;
- **pay-as-clear**: the same merit-order matches all trade at one uniform price, the price of the
  marginal (most expensive accepted) offer, so every accepted bid pays at most its limit and every
  accepted offer earns at least its ask.

Merit order: offers by ascending price, bids by descending price; equal prices by time priority
(``seq``, the order in which the market's log received them), then by id, so a replayed log clears
the same way. A match smaller than the zone's minimum lot is never made: when a remainder is below
the lot it cannot trade with anyone, so that side moves on; partial fills are otherwise normal.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

AuctionMechanism = Literal["pay_as_bid", "pay_as_clear"]


@dataclass(frozen=True, slots=True)
class Ask:
    """The unsold energy of one offer."""

    offer_id: str
    energy_wh: int
    price_cents_per_kwh: int
    seq: int


@dataclass(frozen=True, slots=True)
class Bid:
    """The unfilled energy of one order, with the highest price its consumer accepts."""

    order_id: str
    energy_wh: int
    price_cents_per_kwh: int
    seq: int


@dataclass(frozen=True, slots=True)
class Match:
    offer_id: str
    order_id: str
    energy_wh: int
    price_cents_per_kwh: int


@dataclass(frozen=True, slots=True)
class Clearing:
    matches: tuple[Match, ...]
    clearing_price_cents_per_kwh: int | None  # uniform price (pay-as-clear with matches), else None

    @property
    def traded_wh(self) -> int:
        return sum(m.energy_wh for m in self.matches)


class PurchaseRejected(ValueError):
    """A bilateral purchase that cannot fill; the message says why and what would."""


def merit_order(asks: Iterable[Ask], bids: Iterable[Bid]) -> tuple[list[Ask], list[Bid]]:
    """Offers cheapest first and bids highest first; ties by time priority, then id."""
    ordered_asks = sorted(asks, key=lambda a: (a.price_cents_per_kwh, a.seq, a.offer_id))
    ordered_bids = sorted(bids, key=lambda b: (-b.price_cents_per_kwh, b.seq, b.order_id))
    return ordered_asks, ordered_bids


def _matched_volumes(asks: list[Ask], bids: list[Bid], min_lot_wh: int) -> list[tuple[Ask, Bid, int]]:
    """Walks both merit orders while the best bid still pays the best ask's price."""
    matched: list[tuple[Ask, Bid, int]] = []
    i = j = 0
    ask_left = asks[0].energy_wh if asks else 0
    bid_left = bids[0].energy_wh if bids else 0
    while i < len(asks) and j < len(bids):
        ask, bid = asks[i], bids[j]
        if bid.price_cents_per_kwh < ask.price_cents_per_kwh:
            break
        quantity = min(ask_left, bid_left)
        if quantity >= min_lot_wh:
            matched.append((ask, bid, quantity))
            ask_left -= quantity
            bid_left -= quantity
        else:
            # The smaller remainder is below the lot: no counterpart can ever fill it, so it
            # leaves the auction (both do, when both are).
            if ask_left < min_lot_wh:
                ask_left = 0
            if bid_left < min_lot_wh:
                bid_left = 0
        if ask_left == 0:
            i += 1
            ask_left = asks[i].energy_wh if i < len(asks) else 0
        if bid_left == 0:
            j += 1
            bid_left = bids[j].energy_wh if j < len(bids) else 0
    return matched


def clear_auction(
    mechanism: AuctionMechanism, asks: Iterable[Ask], bids: Iterable[Bid], *, min_lot_wh: int = 1
) -> Clearing:
    """Clears one zone's slot by pay-as-bid or pay-as-clear."""
    if min_lot_wh < 1:
        raise ValueError(f"min_lot_wh must be at least 1, got {min_lot_wh}")
    ordered_asks, ordered_bids = merit_order(asks, bids)
    matched = _matched_volumes(ordered_asks, ordered_bids, min_lot_wh)
    if mechanism == "pay_as_bid":
        return Clearing(
            tuple(Match(a.offer_id, b.order_id, q, b.price_cents_per_kwh) for a, b, q in matched),
            None,
        )
    if mechanism == "pay_as_clear":
        if not matched:
            return Clearing((), None)
        # Asks are matched in ascending price, so the last match holds the marginal offer.
        price = matched[-1][0].price_cents_per_kwh
        return Clearing(tuple(Match(a.offer_id, b.order_id, q, price) for a, b, q in matched), price)
    raise ValueError(f"unknown auction mechanism {mechanism!r}")


def purchase_quantity(remaining_wh: int, requested_wh: int | None, *, min_lot_wh: int = 1) -> int:
    """How much of a bilateral purchase fills: all of ``requested_wh`` (``None``: all that is left).

    A purchase never leaves a remainder below the minimum lot, which nobody could buy afterwards.
    """
    if remaining_wh <= 0:
        raise PurchaseRejected("the offer is sold out")
    quantity = remaining_wh if requested_wh is None else requested_wh
    if quantity > remaining_wh:
        raise PurchaseRejected(f"only {remaining_wh} Wh of the offer are left")
    if quantity < min_lot_wh:
        raise PurchaseRejected(f"{quantity} Wh is below the zone's minimum lot of {min_lot_wh} Wh")
    left = remaining_wh - quantity
    if 0 < left < min_lot_wh:
        largest = remaining_wh - min_lot_wh
        alternative = f" or at most {largest} Wh" if largest >= min_lot_wh else ""
        raise PurchaseRejected(
            f"buying {quantity} Wh would leave {left} Wh, below the zone's minimum lot of "
            f"{min_lot_wh} Wh: buy all {remaining_wh} Wh{alternative}"
        )
    return quantity
