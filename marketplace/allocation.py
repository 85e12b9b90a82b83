"""Allocation of metered energy to a slot's trades: pure, deterministic, exact integers.

After a slot, the meters decide. A producer that exported less than it sold delivers to each of its
trades pro rata; a consumer that imported less than it bought takes from each of its trades pro
rata. Both limits apply, producer first. Shares are whole watt-hours: each trade gets the floor of
its exact share, and the watt-hours left over go one each to the largest fractional parts, ties by
trade id, so the same meter data always gives the same allocation.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TradeLine:
    trade_id: str
    producer: str
    consumer: str
    energy_wh: int
    price_cents_per_kwh: int


@dataclass(frozen=True, slots=True)
class DeliveredTrade:
    trade_id: str
    delivered_wh: int
    amount_millicents: int  # delivered Wh x cents/kWh


def pro_rata(amounts: Mapping[str, int], available: int) -> dict[str, int]:
    """Shares ``available`` among ``amounts`` in proportion, never more than each amount.

    >>> pro_rata({"a": 300, "b": 100}, 200)
    {'a': 150, 'b': 50}
    """
    if available < 0:
        raise ValueError(f"available must not be negative, got {available}")
    if any(v < 0 for v in amounts.values()):
        raise ValueError("amounts must not be negative")
    total = sum(amounts.values())
    if available >= total:
        return dict(amounts)
    shares = {key: amount * available // total for key, amount in amounts.items()}
    left = available - sum(shares.values())
    # Largest fractional part first, then key: the same inputs always give the same shares.
    by_fraction = sorted(amounts, key=lambda key: (-(amounts[key] * available % total), key))
    for key in by_fraction[:left]:
        shares[key] += 1
    return shares


def allocate(
    trades: Iterable[TradeLine],
    exported_wh: Mapping[str, int],
    imported_wh: Mapping[str, int],
) -> list[DeliveredTrade]:
    """Delivered energy and amount of each trade, in trade-id order.

    ``exported_wh`` is each producer's metered export in the slot, ``imported_wh`` each consumer's
    metered import; a participant missing from its mapping delivered (or took) nothing.
    """
    lines = sorted(trades, key=lambda t: t.trade_id)
    by_producer: dict[str, dict[str, int]] = defaultdict(dict)
    for line in lines:
        by_producer[line.producer][line.trade_id] = line.energy_wh
    delivered: dict[str, int] = {}
    for producer, sold in by_producer.items():
        delivered.update(pro_rata(sold, exported_wh.get(producer, 0)))

    by_consumer: dict[str, dict[str, int]] = defaultdict(dict)
    for line in lines:
        by_consumer[line.consumer][line.trade_id] = delivered[line.trade_id]
    for consumer, received in by_consumer.items():
        delivered.update(pro_rata(received, imported_wh.get(consumer, 0)))

    return [
        DeliveredTrade(line.trade_id, delivered[line.trade_id], delivered[line.trade_id] * line.price_cents_per_kwh)
        for line in lines
    ]
