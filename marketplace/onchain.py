"""A slot's trades on the chain: escrowed at gate closure, settled with the allocated deliveries.

Ids on chain are ``opaque_id`` of the market's ids (nothing personal on chain); each trade is one
on-chain order (order id = opaque id of the trade id) of its offer, from the consumer's custodial
account, at the trade's price. Both steps are idempotent against the chain: an offer or order
already there is not sent again, and ``settle_slot`` resumes at the contract's cursor or reports the
slot already settled, so a run interrupted at any point and started again settles each slot once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from contracts.amounts import opaque_id, slot_seconds
from contracts.events import SettlementBatch
from contracts.errors import ContractRevert
from contracts.market import Market
from contracts.transactions import Sender

from marketplace.settlement import SLOT_MS
from marketplace.state import MarketState


@dataclass(frozen=True, slots=True)
class Confirmation:
    tx_hash: str
    block: int


class ChainSettlement:
    def __init__(self, market: Market, oracle: Sender, custody: Mapping[str, Sender]) -> None:
        self.market = market
        self.oracle = oracle
        self.custody = custody  # participant -> its custodial account

    def _account(self, participant: str) -> Sender:
        try:
            return self.custody[participant]
        except KeyError:
            raise LookupError(f"participant {participant!r} has no custodial chain account") from None

    @staticmethod
    def _known(read: Callable[[bytes], object], chain_id: bytes, unknown: str) -> bool:
        try:
            read(chain_id)
        except ContractRevert as exc:
            if exc.name == unknown:
                return False
            raise
        return True

    def escrow(self, state: MarketState, zone: str, slot_start_ms: int) -> int:
        """Puts a closed slot's trades on chain (offers, then one order per trade); returns how many
        orders were placed now."""
        slot_start = slot_seconds(slot_start_ms)
        chain_zone = opaque_id(zone)
        placed = 0
        for trade_id in state.slot_trades.get((zone, slot_start_ms), ()):
            trade = state.trades[trade_id]
            offer_id = opaque_id(trade.offer_id)
            if not self._known(self.market.offer, offer_id, "UnknownOffer"):
                offer = state.offers[trade.offer_id]
                self.market.list_offer(self._account(trade.producer), offer_id, chain_zone, slot_start,
                                       slot_start + SLOT_MS // 1000, offer.energy_wh, offer.price_cents_per_kwh)
            order_id = opaque_id(trade_id)
            if not self._known(self.market.order, order_id, "UnknownOrder"):
                self.market.place_order(self._account(trade.consumer), order_id, offer_id, slot_start,
                                        trade.energy_wh, trade.price_cents_per_kwh)
                placed += 1
        return placed

    def settle(self, state: MarketState, zone: str, slot_start_ms: int) -> Confirmation:
        """Settles an allocated slot on chain; the confirmation of its last batch (found on the chain
        when an earlier, interrupted run already settled it)."""
        chain_zone, slot_start = opaque_id(zone), slot_seconds(slot_start_ms)
        delivered = {
            opaque_id(t): state.trades[t].delivered_wh or 0 for t in state.slot_trades.get((zone, slot_start_ms), ())
        }
        result = self.market.settle_slot(self.oracle, chain_zone, slot_start, delivered)
        if result.batches:
            last = result.batches[-1]
            return Confirmation(last.tx_hash, last.block)
        batches = [
            log for log in self.market.events_between(None, None, ["SettlementBatch"])
            if isinstance(log, SettlementBatch) and log.zone == chain_zone and log.slot_start == slot_start
        ]
        if not batches:
            return Confirmation("", self.market.w3.eth.block_number)  # a slot without orders: nothing on chain
        return Confirmation(batches[-1].tx_hash, batches[-1].block)
