"""Nothing personal on chain: every transaction's input and every event log of a settled slot is read,
and no meter address, household or account id, or email is in them (in clear, hex, or as its keccak)."""

from __future__ import annotations

from eth_utils import keccak

from contracts.amounts import SLOT_SECONDS
from contracts.devchain import advance_to
from marketplace.onchain import ChainSettlement
from marketplace.settlement import MeteredSlot, SettlementTiming, allocate_slot
from marketplace.state import MarketState
from quartier import events as ev
from tests.contracts.conftest import Chain, make_world, tester_chain  # noqa: F401 (fixture)

PRODUCER, CONSUMER = "hh_00000000000000f1", "hh_00000000000000f2"
METERS = {PRODUCER: "031800000091", CONSUMER: "031800000092"}
# The zone goes on chain as its keccak (a neighbourhood, not a person): it is not in the list.
PERSONAL = [*METERS.values(), PRODUCER, CONSUMER, "acct_00000000000000e1", "luna.a@orange.com"]


def on_chain_bytes(w3, first_block: int) -> list[bytes]:  # type: ignore[no-untyped-def]
    """Every transaction input and every log's topics and data since ``first_block``."""
    found = []
    for number in range(first_block, w3.eth.block_number + 1):
        for tx in w3.eth.get_block(number, full_transactions=True).transactions:
            found.append(bytes(tx.get("input", tx.get("data", b""))))  # eth-tester names it data
            for entry in w3.eth.get_transaction_receipt(tx["hash"])["logs"]:
                found += [bytes(topic) for topic in entry["topics"]] + [bytes(entry["data"])]
    return found


def test_a_settled_slot_puts_no_meter_household_account_or_email_on_chain(tester_chain: Chain) -> None:  # noqa: F811
    world = make_world(tester_chain)
    first_block = world.w3.eth.block_number
    slot_ms, at = world.slot * 1000, world.slot * 1000 - 86_400_000
    zone = "zone-rennes-07"
    state = MarketState()
    for e in [
        ev.ZoneConfigured(zone=zone, mechanism="bilateral", gate_closure_s=300, min_lot_wh=1, at_ms=at),
        ev.ParticipantRegistered(participant=PRODUCER, zone=zone, meter=METERS[PRODUCER], roles=("producer",),
                                 capacity_w=8000, at_ms=at),
        ev.ParticipantRegistered(participant=CONSUMER, zone=zone, meter=METERS[CONSUMER], roles=("consumer",),
                                 capacity_w=0, at_ms=at),
        ev.OfferListed(offer_id=f"o-{world.slot}", producer=PRODUCER, zone=zone, slot_start_ms=slot_ms, energy_wh=1000,
                       price_cents_per_kwh=20, at_ms=at),
        ev.OrderPlaced(order_id=f"b-{world.slot}", consumer=CONSUMER, zone=zone, offer_id=f"o-{world.slot}",
                       slot_start_ms=slot_ms, energy_wh=600, price_cents_per_kwh=20, at_ms=at),
        ev.SlotClosed(zone=zone, slot_start_ms=slot_ms, mechanism="bilateral", clearing_price_cents_per_kwh=None,
                      at_ms=slot_ms - 300_000),
    ]:
        state.apply(e)
    chain = ChainSettlement(world.market, world.oracle, {PRODUCER: world.producer, CONSUMER: world.consumers[0]})
    assert chain.escrow(state, zone, slot_ms) == 1
    advance_to(world.w3, world.slot + SLOT_SECONDS)
    metered = {m: MeteredSlot(m, slot_ms, wh_in, wh_out, 1.0)
               for m, wh_in, wh_out in ((METERS[PRODUCER], 0, 700), (METERS[CONSUMER], 650, 0))}
    [allocated] = allocate_slot(state, zone, slot_ms, metered, slot_ms + 960_000, SettlementTiming())
    state.apply(allocated)
    assert chain.settle(state, zone, slot_ms).block > 0

    payloads = on_chain_bytes(world.w3, first_block + 1)
    assert len(payloads) >= 4  # escrow and settlement transactions, and their events
    for value in PERSONAL:
        forms = {value.encode(), value.encode().hex().encode(), keccak(text=value)}
        assert [p for p in payloads for form in forms if form in p or form in p.hex().encode()] == [], value
