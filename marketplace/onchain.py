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

from contracts.amounts import amount_cents, opaque_id, slot_seconds
from contracts.events import SettlementBatch
from contracts.errors import ContractRevert
from contracts.market import Market
from contracts.transactions import Sender

from quartier.settings import Settings

from marketplace.settlement import SLOT_MS
from marketplace.state import MarketState

#: Funds an account before it acts (gas; and euro cents it is about to lock in escrow).
Funding = Callable[[Sender, int], None]


@dataclass(frozen=True, slots=True)
class Confirmation:
    tx_hash: str
    block: int


class ChainSettlement:
    def __init__(self, market: Market, oracle: Sender, custody: Mapping[str, Sender],
                 fund: Funding | None = None) -> None:
        self.market = market
        self.oracle = oracle
        self.custody = custody  # participant -> its custodial account
        self.fund = fund  # None: the accounts are funded by someone else

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
                producer = self._account(trade.producer)
                if self.fund is not None:
                    self.fund(producer, 0)
                self.market.list_offer(producer, offer_id, chain_zone, slot_start,
                                       slot_start + SLOT_MS // 1000, offer.energy_wh, offer.price_cents_per_kwh)
            order_id = opaque_id(trade_id)
            if not self._known(self.market.order, order_id, "UnknownOrder"):
                consumer = self._account(trade.consumer)
                if self.fund is not None:
                    self.fund(consumer, amount_cents(trade.energy_wh, trade.price_cents_per_kwh))
                self.market.place_order(consumer, order_id, offer_id, slot_start,
                                        trade.energy_wh, trade.price_cents_per_kwh)
                placed += 1
        return placed

    def settle(self, state: MarketState, zone: str, slot_start_ms: int) -> Confirmation:
        """Settles an allocated slot on chain; the confirmation of its last batch (found on the chain
        when an earlier, interrupted run already settled it)."""
        chain_zone, slot_start = opaque_id(zone), slot_seconds(slot_start_ms)
        if not state.slot_trades.get((zone, slot_start_ms)):
            return Confirmation("", self.market.w3.eth.block_number)  # nothing traded: nothing on chain
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


def connect(settings: Settings) -> ChainSettlement:
    """Settlement on the chain of ``settings.chain``, with the deployment ``quartier chain deploy``
    recorded under ``settings.state_dir``, the oracle account, and custodial accounts derived from
    ``settings.market.custody_secret`` (funded by the admin on a dev chain).

    Raises ``ChainUnavailable`` saying what is missing (chain down, nothing deployed, a key unset).
    """
    from contracts import connection
    from contracts.deployment import DeploymentError
    from contracts.devchain import DEV_CHAIN_IDS

    from marketplace.custody import Custody, CustodyError, DevFunding

    try:
        w3 = connection.connect(settings)
        market = connection.market(w3, settings)
        oracle = connection.oracle_sender(w3, settings)
        custody = Custody(w3, settings.market.custody_secret)
        fund: Funding | None = None
        if w3.eth.chain_id in DEV_CHAIN_IDS:
            fund = DevFunding(market, connection.admin_sender(w3, settings), settings.market.dev_mint_cents)
    except (connection.ChainConfigError, DeploymentError, CustodyError) as exc:
        raise ChainUnavailable(str(exc)) from None
    if oracle.address.lower() != market.record.oracle.lower():
        raise ChainUnavailable(f"chain.oracle_key is account {oracle.address}, but the market at {market.address} "
                               f"takes settlements from {market.record.oracle}")
    return ChainSettlement(market, oracle, custody, fund)


class ChainUnavailable(RuntimeError):
    """Settlement cannot reach its chain yet (the reason says what to do)."""
