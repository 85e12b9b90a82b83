"""A home with solar panels: what it sent to the grid and what its market sales earned.

**Production and self-consumption.** A Linky frame carries the energy *injected* into the grid
(EAIT, ``injected_wh``) and withdrawn from it, not what the panels produced: the energy the home
used from its own panels never passes the meter. The app therefore shows the exported energy (index
differences of ``injected_wh``) and says that production and self-consumption need the inverter's
own meter; it does not estimate them.

**Market sales** come from the market's public log, ``market.events`` (the contract every reader
may fold), never from the marketplace package, a sibling this one does not import. The fold keeps
who listed each offer, which offer each trade filled (a bilateral purchase is its order; an auction
trade is listed in ``SlotClosed``), and the allocations: what each trade delivered and its amount.
A participant id is a household id (the contract), so the household's sales are the allocated
deliveries of its offers, settled once the slot's settlement is confirmed on chain.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from households.home import Home
from quartier.events import (
    Allocated, MarketEvent, OfferListed, OrderPlaced, SettlementConfirmed, SlotClosed,
)
from quartier.settings import Settings
from quartier.influx import RAW_POLICY, ROLLUP_MEASUREMENT, ROLLUP_POLICY, influx_query, quote_ident, quote_string


@dataclass
class Sales:
    energy_wh: int = 0
    amount_millicents: int = 0
    settled_millicents: int = 0

    @property
    def eur(self) -> float:
        return self.amount_millicents / 100_000

    @property
    def settled_eur(self) -> float:
        return self.settled_millicents / 100_000


@dataclass
class MarketSales:
    """The fold of ``market.events`` the app needs: each producer's allocated sales."""

    offer_producer: dict[str, str] = field(default_factory=dict)
    trade_offer: dict[str, str] = field(default_factory=dict)
    # (zone, slot start) -> [(producer, delivered Wh, millicents)], until settled
    pending: dict[tuple[str, int], list[tuple[str, int, int]]] = field(default_factory=dict)
    by_producer: dict[str, Sales] = field(default_factory=dict)

    def apply(self, event: MarketEvent) -> None:
        if isinstance(event, OfferListed):
            self.offer_producer[event.offer_id] = event.producer
        elif isinstance(event, OrderPlaced) and event.offer_id is not None:
            self.trade_offer[event.order_id] = event.offer_id
        elif isinstance(event, SlotClosed):
            for trade in event.trades:
                self.trade_offer[trade.trade_id] = trade.offer_id
        elif isinstance(event, Allocated):
            slot = self.pending.setdefault((event.zone, event.slot_start_ms), [])
            for delivery in event.deliveries:
                producer = self.offer_producer.get(self.trade_offer.get(delivery.trade_id, ""), "")
                if not producer:
                    continue
                sales = self.by_producer.setdefault(producer, Sales())
                sales.energy_wh += delivery.delivered_wh
                sales.amount_millicents += delivery.amount_millicents
                slot.append((producer, delivery.delivered_wh, delivery.amount_millicents))
        elif isinstance(event, SettlementConfirmed):
            for producer, _, amount in self.pending.pop((event.zone, event.slot_start_ms), []):
                self.by_producer[producer].settled_millicents += amount

    def of(self, household: str) -> Sales:
        return self.by_producer.get(household, Sales())

    def reset(self) -> None:
        """Back to the empty fold (before folding the log again from its start)."""
        self.offer_producer.clear()
        self.trade_offer.clear()
        self.pending.clear()
        self.by_producer.clear()


@dataclass(frozen=True)
class Solar:
    exported_wh: int
    sales_energy_wh: int
    sales_eur: float
    settled_eur: float
    production_note: str


PRODUCTION_NOTE = (
    "Production and self-consumption are not measured by the Linky meter (it counts only what goes to "
    "and comes from the grid); they need the inverter's own meter."
)


def exported_wh(settings: Settings, home: Home, start_ms: int, end_ms: int) -> int:
    db = quote_ident(settings.influx.database)
    rows = []
    for policy, measurement in ((RAW_POLICY, "reading"), (ROLLUP_POLICY, ROLLUP_MEASUREMENT)):
        rows = influx_query(
            settings.influx,
            f"SELECT first(\"injected_wh\") AS a, last(\"injected_wh\") AS b FROM {db}.{quote_ident(policy)}."
            f"{quote_ident(measurement)} WHERE \"meter\" = {quote_string(home.meter)} AND time >= {start_ms}ms "
            f"AND time < {end_ms}ms",
        )
        if rows and rows[0].get("a") is not None:
            break
    if not rows or rows[0].get("a") is None:
        return 0
    return max(0, int(rows[0]["b"]) - int(rows[0]["a"]))


def solar(settings: Settings, home: Home, sales: MarketSales, *, start_ms: int, end_ms: int) -> Solar:
    mine = sales.of(home.household)
    return Solar(
        exported_wh(settings, home, start_ms, end_ms), mine.energy_wh, mine.eur, mine.settled_eur, PRODUCTION_NOTE
    )
