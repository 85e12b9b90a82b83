"""What a producer's market sales earned, folded from market.events records as the market writes them."""

from __future__ import annotations

from households.solar import MarketSales
from quartier.events import Allocated, OfferListed, OrderPlaced, SettlementConfirmed, SlotClosed, Trade, TradeDelivery

PRODUCER, OTHER = "hh_00000000000000a1", "hh_00000000000000b2"
SLOT = 1_736_895_600_000


def test_bilateral_and_auction_sales_are_counted_once_settled_when_confirmed() -> None:
    log = [
        OfferListed(offer_id="o1", producer=PRODUCER, zone="z", slot_start_ms=SLOT, energy_wh=1000,
                    price_cents_per_kwh=15, at_ms=1),
        OfferListed(offer_id="o2", producer=OTHER, zone="z", slot_start_ms=SLOT, energy_wh=1000,
                    price_cents_per_kwh=14, at_ms=2),
        OfferListed(offer_id="o3", producer=PRODUCER, zone="z", slot_start_ms=SLOT, energy_wh=500,
                    price_cents_per_kwh=12, at_ms=3),
        # a bilateral purchase of o1: the trade is the order
        OrderPlaced(order_id="b1", consumer=OTHER, zone="z", offer_id="o1", slot_start_ms=SLOT, energy_wh=800,
                    price_cents_per_kwh=15, at_ms=4),
        SlotClosed(zone="z", slot_start_ms=SLOT, mechanism="pay_as_clear", clearing_price_cents_per_kwh=12,
                   trades=[Trade(trade_id="t1", offer_id="o3", order_id="x1", energy_wh=500, price_cents_per_kwh=12),
                           Trade(trade_id="t2", offer_id="o2", order_id="x2", energy_wh=400, price_cents_per_kwh=12)],
                   at_ms=5),
        # 800 Wh x 15 c/kWh = 12,000 millicents; 450 Wh x 12 = 5,400; the other producer's 400 x 12
        Allocated(zone="z", slot_start_ms=SLOT, deliveries=[
            TradeDelivery(trade_id="b1", delivered_wh=800, amount_millicents=12_000),
            TradeDelivery(trade_id="t1", delivered_wh=450, amount_millicents=5_400),
            TradeDelivery(trade_id="t2", delivered_wh=400, amount_millicents=4_800),
        ], complete=True, at_ms=6),
    ]
    sales = MarketSales()
    for event in log:
        sales.apply(event)
    mine = sales.of(PRODUCER)
    assert (mine.energy_wh, mine.amount_millicents, mine.eur, mine.settled_eur) == (1250, 17_400, 0.174, 0.0)
    sales.apply(SettlementConfirmed(zone="z", slot_start_ms=SLOT, tx_hash="0xab", block=7, at_ms=7))
    assert sales.of(PRODUCER).settled_eur == 0.174 and sales.of(OTHER).settled_eur == 0.048
    sales.reset()
    assert sales.of(PRODUCER).energy_wh == 0
