"""The market's on-chain events as typed records, read from receipts or by block range.

Every state change of the market emits one of these; together with the token's transfers they are
the audit trail anyone can rebuild. Reading is always bounded: from a receipt, or by ``get_logs``
from the deployment block onwards in chunks, never from block 0.
"""

from __future__ import annotations

from typing import Any, Iterable, Union

import msgspec
from eth_utils import event_abi_to_log_topic
from web3 import Web3
from web3.contract import Contract
from web3.types import LogReceipt, TxReceipt

from contracts.amounts import unpack_wh

#: Blocks per eth_getLogs request: nodes limit the range (and the answer size) of one request.
LOG_CHUNK_BLOCKS = 10_000


class ChainLog(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    block: int
    tx_hash: str
    log_index: int


class ZoneRegistered(ChainLog, frozen=True, kw_only=True):
    zone: bytes
    zone_index: int


class OfferListed(ChainLog, frozen=True, kw_only=True):
    offer_id: bytes
    producer: str
    zone: bytes
    window_start: int
    window_end: int
    energy_wh: int
    price_cents_per_kwh: int


class OfferWithdrawn(ChainLog, frozen=True, kw_only=True):
    offer_id: bytes
    unsold_wh: int


class OrderPlaced(ChainLog, frozen=True, kw_only=True):
    order_id: bytes
    offer_id: bytes
    consumer: str
    slot_start: int
    position: int
    energy_wh: int
    price_cents_per_kwh: int
    escrow_cents: int


class OrderCancelled(ChainLog, frozen=True, kw_only=True):
    order_id: bytes
    refund_cents: int


class OrderReclaimed(ChainLog, frozen=True, kw_only=True):
    order_id: bytes
    refund_cents: int


class SettlementBatch(ChainLog, frozen=True, kw_only=True):
    zone: bytes
    slot_start: int
    first_position: int
    delivered_wh: list[int]
    paid_cents: int
    refunded_cents: int


class SlotSettled(ChainLog, frozen=True, kw_only=True):
    zone: bytes
    slot_start: int
    orders: int


class Withdrawn(ChainLog, frozen=True, kw_only=True):
    account: str
    amount_cents: int


class Paused(ChainLog, frozen=True, kw_only=True):
    account: str


class Unpaused(ChainLog, frozen=True, kw_only=True):
    account: str


MarketLog = Union[
    ZoneRegistered,
    OfferListed,
    OfferWithdrawn,
    OrderPlaced,
    OrderCancelled,
    OrderReclaimed,
    SettlementBatch,
    SlotSettled,
    Withdrawn,
    Paused,
    Unpaused,
]
LOG_TYPES: dict[str, type[ChainLog]] = {t.__name__: t for t in MarketLog.__args__}  # type: ignore[attr-defined]


class EventReader:
    """Decodes the market contract's logs into typed records."""

    def __init__(self, contract: Contract, from_block: int) -> None:
        self.contract = contract
        self.from_block = from_block
        self._by_topic: dict[bytes, str] = {
            event_abi_to_log_topic(item): item["name"]  # type: ignore[arg-type]
            for item in contract.abi
            if item["type"] == "event" and item["name"] in LOG_TYPES
        }

    def decode(self, log: LogReceipt) -> ChainLog | None:
        """The typed record of one log, None when it is not one of the market's events."""
        if Web3.to_checksum_address(log["address"]) != self.contract.address or not log["topics"]:
            return None
        name = self._by_topic.get(bytes(log["topics"][0]))
        if name is None:
            return None
        event = self.contract.events[name]().process_log(log)
        fields: dict[str, Any] = {key: _plain(value) for key, value in event["args"].items()}
        if name == "SettlementBatch":  # packed 4-byte Wh on chain, a list here
            fields["deliveredWh"] = unpack_wh(fields["deliveredWh"])
        fields.update(
            block=event["blockNumber"],
            txHash="0x" + bytes(event["transactionHash"]).hex(),
            logIndex=event["logIndex"],
        )
        return msgspec.convert(fields, LOG_TYPES[name])

    def in_receipt(self, receipt: TxReceipt) -> list[ChainLog]:
        """The market's events emitted by one transaction, in log order."""
        return [record for log in receipt["logs"] if (record := self.decode(log)) is not None]

    def in_blocks(
        self, from_block: int | None = None, to_block: int | None = None, kinds: Iterable[str] | None = None
    ) -> list[ChainLog]:
        """The market's events in [from_block, to_block] (default: deployment block .. latest)."""
        w3 = self.contract.w3
        start = max(self.from_block, from_block or 0)
        end = w3.eth.block_number if to_block is None else to_block
        wanted = [topic for topic, name in self._by_topic.items() if kinds is None or name in set(kinds)]
        records: list[ChainLog] = []
        while start <= end:
            stop = min(end, start + LOG_CHUNK_BLOCKS - 1)
            logs = w3.eth.get_logs(
                {"address": self.contract.address, "fromBlock": start, "toBlock": stop, "topics": [wanted]}
            )
            records.extend(r for log in logs if (r := self.decode(log)) is not None)
            start = stop + 1
        return records


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return bytes(value)
    return value
