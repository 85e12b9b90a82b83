"""Typed Python binding of the deployed market and its euro token.

    market = Market.connect(w3, record)                 # or Market.from_settings(settings)
    market.list_offer(producer, offer_id, zone, window_start, window_end, energy_wh, price)
    market.place_order(consumer, order_id, offer_id, slot_start, energy_wh)   # escrow locked
    market.settle_slot(oracle, zone, slot_start, {order_id: delivered_wh, ...})
    market.withdraw(producer)                             # pull what one is owed

Every write takes the ``Sender`` acting (its account signs, its nonce is managed) and returns the
typed events the transaction emitted; a rejection raises ``ContractRevert`` named after the
contract's custom error. Units: euro cents, Wh, cents per kWh, unix seconds; ids are 32 bytes
(``contracts.amounts.opaque_id``). Rounding: see ``contracts.amounts``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, TypeVar

from web3 import Web3
from web3.contract import Contract
from web3.types import TxReceipt

from contracts import events as ev
from contracts.amounts import UINT32_MAX, amount_cents, pack_wh
from contracts.artifacts import load
from contracts.deployment import DeploymentRecord, load_deployment
from contracts.errors import ContractRevert
from contracts.transactions import GasCapExceeded, Sender, revert_or_raise

#: Largest settlement batch tried first; a batch is shrunk until its gas estimate fits the budget.
DEFAULT_MAX_BATCH = 1000
#: Share of the per-transaction gas cap a settlement batch may use (room for estimate drift).
BATCH_GAS_BUDGET = 0.9
#: Upper bound of one delivery's settlement gas (cold order and offer reads, two cold credit
#: writes, calldata; measured worst case about 14k, see bench/gas.py) and of a batch's fixed part.
#: A batch that fits under the budget by these bounds is sent without a separate estimate.
WORST_GAS_PER_DELIVERY = 20_000
BATCH_BASE_GAS = 100_000
_PAGE = 500
_MAX_UINT256 = 2**256 - 1

L = TypeVar("L", bound=ev.ChainLog)


@dataclass(frozen=True)
class OfferState:
    offer_id: bytes
    producer: str
    zone: bytes
    window_start: int
    window_end: int
    remaining_wh: int
    price_cents_per_kwh: int
    withdrawn: bool


@dataclass(frozen=True)
class OrderState:
    order_id: bytes
    consumer: str
    zone: bytes
    slot_start: int
    position: int
    energy_wh: int  # 0 once cancelled or reclaimed
    price_cents_per_kwh: int
    settled: bool

    @property
    def escrow_cents(self) -> int:
        return amount_cents(self.energy_wh, self.price_cents_per_kwh)


@dataclass(frozen=True)
class SlotState:
    orders: int
    settled: int
    complete: bool


@dataclass
class SlotSettlement:
    """What ``settle_slot`` did: its batches (one transaction each), in order."""

    zone: bytes
    slot_start: int
    batches: list[ev.SettlementBatch] = field(default_factory=list)
    gas_used: list[int] = field(default_factory=list)
    complete: bool = False
    already_settled: bool = False

    @property
    def paid_cents(self) -> int:
        return sum(b.paid_cents for b in self.batches)

    @property
    def refunded_cents(self) -> int:
        return sum(b.refunded_cents for b in self.batches)

    @property
    def deliveries(self) -> int:
        return sum(len(b.delivered_wh) for b in self.batches)


@dataclass(frozen=True)
class MarketTotals:
    token_supply_cents: int
    held_cents: int  # the market's token balance
    escrowed_cents: int  # locked in open orders
    credited_cents: int  # owed to accounts, not withdrawn
    last_settled_slot_start: int  # 0 when none
    paused: bool


class Market:
    """The market contract and its token, bound to one deployment."""

    def __init__(self, w3: Web3, record: DeploymentRecord) -> None:
        self.w3 = w3
        self.record = record
        self.contract: Contract = w3.eth.contract(address=record.market, abi=load("QuartierMarket").abi)
        self.token: Contract = w3.eth.contract(address=record.token, abi=load("EuroToken").abi)
        self.events = ev.EventReader(self.contract, record.block)

    @classmethod
    def connect(cls, w3: Web3, record: DeploymentRecord) -> "Market":
        return cls(w3, record)

    @classmethod
    def from_state(cls, w3: Web3, state_dir: Path) -> "Market":
        """The market recorded for ``w3``'s chain under ``state_dir`` (DeploymentError if none)."""
        return cls(w3, load_deployment(w3, state_dir))

    @property
    def address(self) -> str:
        return self.contract.address

    # --- token ----------------------------------------------------------------------------------

    def mint(self, admin: Sender, to: str, cents: int) -> TxReceipt:
        """Mints ``cents`` to ``to`` (the admin holds the minter role; test chains only)."""
        return admin.transact(self.token.functions.mint(Web3.to_checksum_address(to), _uint("cents", cents)))

    def approve(self, owner: Sender, cents: int = _MAX_UINT256) -> TxReceipt:
        """Lets the market take up to ``cents`` of ``owner``'s tokens into escrow."""
        return owner.transact(self.token.functions.approve(self.address, cents))

    def balance_of(self, account: str) -> int:
        return int(self.token.functions.balanceOf(Web3.to_checksum_address(account)).call())

    # --- producers -------------------------------------------------------------------------------

    def list_offer(
        self,
        producer: Sender,
        offer_id: bytes,
        zone: bytes,
        window_start: int,
        window_end: int,
        energy_wh: int,
        price_cents_per_kwh: int,
    ) -> ev.OfferListed:
        """Lists ``energy_wh`` for delivery in ``zone`` during [window_start, window_end) (unix seconds)."""
        call = self.contract.functions.listOffer(
            _id("offer_id", offer_id),
            _id("zone", zone),
            _uint("window_start", window_start, 2**64 - 1),
            _uint("window_end", window_end, 2**64 - 1),
            _uint("energy_wh", energy_wh, UINT32_MAX),
            _uint("price_cents_per_kwh", price_cents_per_kwh, UINT32_MAX),
        )
        return self._one(producer.transact(call), ev.OfferListed)

    def withdraw_offer(self, producer: Sender, offer_id: bytes) -> ev.OfferWithdrawn:
        """Takes the unsold part of an offer off the market."""
        call = self.contract.functions.withdrawOffer(_id("offer_id", offer_id))
        return self._one(producer.transact(call), ev.OfferWithdrawn)

    # --- consumers -------------------------------------------------------------------------------

    def place_order(
        self,
        consumer: Sender,
        order_id: bytes,
        offer_id: bytes,
        slot_start: int,
        energy_wh: int,
        price_cents_per_kwh: int | None = None,
    ) -> ev.OrderPlaced:
        """Buys ``energy_wh`` of an offer for the slot starting at ``slot_start``; the price (default:
        the offer's) is locked in escrow, approving the market first when its allowance is short."""
        if price_cents_per_kwh is None:
            price_cents_per_kwh = self.offer(offer_id).price_cents_per_kwh
        escrow = amount_cents(
            _uint("energy_wh", energy_wh, UINT32_MAX), _uint("price_cents_per_kwh", price_cents_per_kwh, UINT32_MAX)
        )
        if self.token.functions.allowance(consumer.address, self.address).call() < escrow:
            self.approve(consumer)
        call = self.contract.functions.placeOrder(
            _id("order_id", order_id),
            _id("offer_id", offer_id),
            _uint("slot_start", slot_start, 2**64 - 1),
            energy_wh,
            price_cents_per_kwh,
        )
        return self._one(consumer.transact(call), ev.OrderPlaced)

    def cancel_order(self, consumer: Sender, order_id: bytes) -> ev.OrderCancelled:
        """Cancels an order before gate closure; its escrow is credited back to the consumer."""
        call = self.contract.functions.cancelOrder(_id("order_id", order_id))
        return self._one(consumer.transact(call), ev.OrderCancelled)

    def reclaim_unsettled(self, sender: Sender, order_id: bytes) -> ev.OrderReclaimed:
        """Credits the consumer the escrow of an order the oracle left unsettled past the timeout."""
        call = self.contract.functions.reclaimUnsettled(_id("order_id", order_id))
        return self._one(sender.transact(call), ev.OrderReclaimed)

    # --- settlement ------------------------------------------------------------------------------

    def settle_batch(
        self, oracle: Sender, zone: bytes, slot_start: int, first_position: int, delivered_wh: list[int]
    ) -> tuple[ev.SettlementBatch, TxReceipt]:
        """One settlement transaction: positions first_position.. of the slot (low level)."""
        call = self._settle_call(zone, slot_start, first_position, delivered_wh)
        receipt = oracle.transact(call)
        return self._one(receipt, ev.SettlementBatch), receipt

    def settle_slot(
        self,
        oracle: Sender,
        zone: bytes,
        slot_start: int,
        delivered_wh: Mapping[bytes, int],
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> SlotSettlement:
        """Settles every unsettled order of (zone, slot) with its metered delivery, in as many
        batches as the per-transaction gas cap needs.

        ``delivered_wh`` maps each order id of the slot to the Wh delivered (0 for a cancelled
        order or no delivery). Every unsettled order must have an entry and every entry must be an
        order of the slot: the error names the ids otherwise. Resumes where a previous, interrupted
        run stopped; a slot already settled is reported, not settled again.
        """
        zone = _id("zone", zone)
        result = SlotSettlement(zone=zone, slot_start=slot_start)
        state = self.slot_state(zone, slot_start)
        if state.complete:
            result.already_settled = result.complete = True
            return result
        all_ids = self.slot_order_ids(zone, slot_start)
        unknown = set(delivered_wh) - set(all_ids)
        if unknown:
            raise ValueError(f"delivered_wh names orders not in this slot: {_ids(unknown)}")
        pending = all_ids[state.settled :]
        missing = [order_id for order_id in pending if order_id not in delivered_wh]
        if missing:
            raise ValueError(f"delivered_wh has no delivery for orders: {_ids(missing)}")
        values = [_uint(f"delivered_wh[0x{i.hex()}]", delivered_wh[i], UINT32_MAX) for i in pending]

        if not all_ids:  # no order in the slot: nothing to pay or refund
            result.complete = True
            return result
        position, budget = state.settled, int(oracle.gas_cap * BATCH_GAS_BUDGET)
        size = max(1, max_batch)
        while position < len(all_ids):
            chunk = values[position - state.settled : position - state.settled + size]
            call = self._settle_call(zone, slot_start, position, chunk)
            gas: int | None = None  # the sender estimates (or preflights) it
            try:
                if BATCH_BASE_GAS + len(chunk) * WORST_GAS_PER_DELIVERY > budget:
                    try:
                        estimate = oracle.estimate(call)
                    except GasCapExceeded as exc:
                        estimate = exc.estimate
                    if estimate > budget and len(chunk) > 1:
                        size = max(1, len(chunk) * budget // estimate)
                        continue
                    gas = min(int(estimate * 1.2), oracle.gas_cap)
                receipt = oracle.transact(call, gas=gas)
            except ContractRevert as exc:
                raise _with_order_id(exc, all_ids) from None
            result.batches.append(self._one(receipt, ev.SettlementBatch))
            result.gas_used.append(int(receipt["gasUsed"]))
            position += len(chunk)
        result.complete = True
        return result

    def _settle_call(self, zone: bytes, slot_start: int, first_position: int, delivered_wh: list[int]) -> Any:
        return self.contract.functions.settleBatch(
            _id("zone", zone),
            _uint("slot_start", slot_start, 2**64 - 1),
            _uint("first_position", first_position, UINT32_MAX),
            pack_wh(delivered_wh),
        )

    # --- payments and administration --------------------------------------------------------------

    def withdraw(self, account: Sender) -> ev.Withdrawn:
        """Transfers everything ``account`` is owed to it."""
        return self._one(account.transact(self.contract.functions.withdraw()), ev.Withdrawn)

    def credit_of(self, account: str) -> int:
        """Cents ``account`` can withdraw."""
        return int(self.contract.functions.creditOf(Web3.to_checksum_address(account)).call())

    def pause(self, admin: Sender) -> TxReceipt:
        return admin.transact(self.contract.functions.pause())

    def unpause(self, admin: Sender) -> TxReceipt:
        return admin.transact(self.contract.functions.unpause())

    # --- reads -----------------------------------------------------------------------------------

    def offer(self, offer_id: bytes) -> OfferState:
        try:
            values = self.contract.functions.offerOf(_id("offer_id", offer_id)).call()
        except Exception as exc:
            raise revert_or_raise(exc) from exc
        return OfferState(offer_id, *values)

    def order(self, order_id: bytes) -> OrderState:
        try:
            values = self.contract.functions.orderOf(_id("order_id", order_id)).call()
        except Exception as exc:
            raise revert_or_raise(exc) from exc
        return OrderState(order_id, *values)

    def slot_state(self, zone: bytes, slot_start: int) -> SlotState:
        try:
            orders, settled, complete = self.contract.functions.slotState(_id("zone", zone), slot_start).call()
        except Exception as exc:
            revert = revert_or_raise(exc)
            if revert.name == "UnknownZone":  # no offer was ever listed there: nothing to settle
                return SlotState(0, 0, False)
            raise revert from exc
        return SlotState(orders, settled, complete)

    def slot_order_ids(self, zone: bytes, slot_start: int, start: int = 0) -> list[bytes]:
        """The slot's order ids in settlement order, from position ``start``."""
        ids: list[bytes] = []
        while True:
            page = self.contract.functions.slotOrderIds(_id("zone", zone), slot_start, start + len(ids), _PAGE).call()
            ids.extend(bytes(i) for i in page)
            if len(page) < _PAGE:
                return ids

    def totals(self) -> MarketTotals:
        f = self.contract.functions
        return MarketTotals(
            token_supply_cents=int(self.token.functions.totalSupply().call()),
            held_cents=self.balance_of(self.address),
            escrowed_cents=int(f.totalEscrowed().call()),
            credited_cents=int(f.totalCredited().call()),
            last_settled_slot_start=int(f.lastSettledSlotStart().call()),
            paused=bool(f.paused().call()),
        )

    # --- events ----------------------------------------------------------------------------------

    def events_in(self, receipt: TxReceipt) -> list[ev.ChainLog]:
        """The market events one transaction emitted."""
        return self.events.in_receipt(receipt)

    def events_between(
        self, from_block: int | None = None, to_block: int | None = None, kinds: Iterable[str] | None = None
    ) -> list[ev.ChainLog]:
        """The market events in a block range, from the deployment block at the earliest."""
        return self.events.in_blocks(from_block, to_block, kinds)

    def _one(self, receipt: TxReceipt, kind: type[L]) -> L:
        found = [e for e in self.events.in_receipt(receipt) if isinstance(e, kind)]
        if len(found) != 1:
            raise RuntimeError(f"expected one {kind.__name__} event in the receipt, found {len(found)}")
        return found[0]


def _id(name: str, value: bytes) -> bytes:
    if not isinstance(value, (bytes, bytearray)) or len(value) != 32:
        raise ValueError(f"{name} must be 32 bytes (use contracts.amounts.opaque_id), got {value!r}")
    return bytes(value)


def _uint(name: str, value: int, maximum: int = _MAX_UINT256) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise ValueError(f"{name} must be an integer between 0 and {maximum}, got {value!r}")
    return value


def _with_order_id(revert: ContractRevert, slot_ids: list[bytes]) -> ContractRevert:
    """A DeliveryExceedsOrder names a position; add the order id the caller knows it by."""
    position = revert.args_by_name.get("position")
    if revert.name != "DeliveryExceedsOrder" or not isinstance(position, int) or position >= len(slot_ids):
        return revert
    return ContractRevert(revert.name, {"order_id": slot_ids[position], **revert.args_by_name}, revert.data)


def _ids(ids: Iterable[bytes]) -> str:
    return ", ".join(sorted("0x" + i.hex() for i in ids))


__all__ = [
    "ContractRevert",
    "Market",
    "MarketTotals",
    "OfferState",
    "OrderState",
    "SlotSettlement",
    "SlotState",
]
