"""Units, rounding and ids shared by the contracts and the Python side.

Money is euro cents of the settlement token (2 decimals), energy is Wh, a price is cents per kWh.
The contract has one rounding rule, and these functions are it, so the marketplace computes the
same figures as the chain:

    amount(Wh, price) = floor(Wh * price / 1000)          (cents)
    escrow  = amount(ordered Wh,   price)
    payment = amount(delivered Wh, price)                  (to the producer)
    refund  = escrow - payment                             (to the consumer)

so escrow == payment + refund exactly, and rounding always favours the consumer's refund.
Nothing personal goes on chain: zones, offers and orders are identified by ``opaque_id``.
"""

from __future__ import annotations

from eth_utils import keccak

SLOT_SECONDS = 900
WH_PER_KWH = 1000
UINT32_MAX = 2**32 - 1


def amount_cents(energy_wh: int, price_cents_per_kwh: int) -> int:
    """Cents for ``energy_wh`` at ``price_cents_per_kwh``, rounded down (the contract's rule)."""
    if energy_wh < 0 or price_cents_per_kwh < 0:
        raise ValueError(f"energy_wh and price_cents_per_kwh must be >= 0 (got {energy_wh}, {price_cents_per_kwh})")
    return energy_wh * price_cents_per_kwh // WH_PER_KWH


def settlement_split(ordered_wh: int, delivered_wh: int, price_cents_per_kwh: int) -> tuple[int, int]:
    """(payment to the producer, refund to the consumer) in cents for one order."""
    if not 0 <= delivered_wh <= ordered_wh:
        raise ValueError(f"delivered_wh must be between 0 and ordered_wh={ordered_wh} (got {delivered_wh})")
    escrow = amount_cents(ordered_wh, price_cents_per_kwh)
    payment = amount_cents(delivered_wh, price_cents_per_kwh)
    return payment, escrow - payment


def opaque_id(text: str) -> bytes:
    """The 32-byte on-chain id for an off-chain id (keccak-256 of its UTF-8 text)."""
    if not text:
        raise ValueError("an id must not be empty")
    return keccak(text=text)


def slot_seconds(epoch_ms: int) -> int:
    """A slot start in unix seconds (the chain's unit) from epoch milliseconds (the events' unit)."""
    seconds, rest = divmod(epoch_ms, 1000)
    if rest or seconds % SLOT_SECONDS:
        raise ValueError(f"slot_start_ms {epoch_ms} is not on a {SLOT_SECONDS // 60}-minute slot boundary")
    return seconds


def pack_wh(values: list[int]) -> bytes:
    """Deliveries as the contract takes them: 4-byte big-endian unsigned Wh, one after another."""
    out = bytearray()
    for index, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= UINT32_MAX:
            raise ValueError(f"delivered_wh[{index}] must be an integer between 0 and {UINT32_MAX}, got {value!r}")
        out += value.to_bytes(4, "big")
    return bytes(out)


def unpack_wh(packed: bytes) -> list[int]:
    """The Wh values of a SettlementBatch event's packed ``deliveredWh``."""
    if len(packed) % 4:
        raise ValueError(f"packed deliveries must be a multiple of 4 bytes, got {len(packed)}")
    return [int.from_bytes(packed[i : i + 4], "big") for i in range(0, len(packed), 4)]
