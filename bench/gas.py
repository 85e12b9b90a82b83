"""Gas report for the settlement contracts, and transactions per second against anvil.

Starts anvil as the local stack does (its own state directory, stopped at the end) and measures:

- deployment, listing an offer, placing an order (first and later), cancelling, withdrawing;
- settlement of one (zone, slot) in batches of 1, 10, 100 deliveries and the largest batch that fits
  the per-transaction gas cap (2**24), with gas per delivery (the transaction's whole gas / deliveries);
- the baseline, in the same run: a plain escrow-and-settle contract (contracts/solidity/baseline/
  PlainEscrow.sol: an order record per delivery, marked settled, balances credited, an event each),
  settling one delivery per transaction and 100 per batch; ratios are baseline / market;
- transactions per second on anvil: a nonce-managed sender pipelining token transfers, and the
  binding's estimate + send + wait per transaction; eth-tester in process as the baseline.

Deliveries follow a metered profile: every order gets 80 % of its energy (so every consumer is
refunded and every producer paid), orders from distinct consumers, round-robin over 10 producers.

    python -m bench.gas [--json] [--skip-largest]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from web3 import Web3

from bench import lifetime
from contracts.amounts import SLOT_SECONDS, opaque_id, pack_wh
from contracts.artifacts import load
from contracts.deployment import deploy
from contracts.devchain import ADMIN, ORACLE, advance_to, dev_account, in_process_chain, now
from contracts.market import Market
from contracts.transactions import TX_GAS_CAP, GasCapExceeded, Sender
from quartier.stack import Stack
from quartier.stack.chain import Chain

PRODUCERS = 10
PRICE = 27  # cents per kWh
SIZES = (1, 10, 100)
ORDER_GAS = 400_000  # explicit limits for pipelined set-up transactions (no estimate round trip)
SMALL_GAS = 120_000


def energy(i: int) -> int:
    return 1_000 + (i % 7) * 150


def delivered(wh: int) -> int:
    return wh * 4 // 5


@dataclass
class Bench:
    w3: Web3
    admin: Sender
    oracle: Sender
    market: Market
    producers: list[Sender]
    consumers: list[Sender]


def bench_account(i: int) -> LocalAccount:
    return Account.from_key(keccak(text=f"quartier-bench-{i}"))


#: Transactions in flight at most while pipelining set-up (anvil's pool is not meant for thousands).
WINDOW = 200


def pipelined(sends: Iterable[tuple[Sender, Any]]) -> list[Any]:
    """Sends ``(sender, call)`` pairs without waiting for each, at most WINDOW in flight; receipts."""
    receipts: list[Any] = []
    in_flight: list[tuple[Sender, Any]] = []
    for sender, call in sends:
        in_flight.append((sender, sender.send(call, gas=ORDER_GAS)))
        if len(in_flight) >= WINDOW:
            receipts.extend(s.wait(h) for s, h in in_flight)
            in_flight.clear()
    receipts.extend(s.wait(h) for s, h in in_flight)
    for receipt in receipts:
        assert receipt["status"] == 1
    return receipts


def ensure_consumers(b: Bench, count: int) -> None:
    """Funds, mints and approves new consumer accounts until there are ``count`` (pipelined)."""
    start = len(b.consumers)
    if count <= start:
        return
    new = [Sender(b.w3, bench_account(i)) for i in range(start, count)]
    for s in new:
        b.w3.provider.make_request("anvil_setBalance", [s.address, hex(10**21)])  # type: ignore[arg-type]
    token = b.market.token.functions
    pipelined((b.admin, token.mint(s.address, 10**9)) for s in new)
    pipelined((s, token.approve(b.market.address, 2**256 - 1)) for s in new)
    b.consumers.extend(new)


def open_slot(
    b: Bench, tag: str, orders: int, slot: int, producers: list[Sender] | None = None
) -> tuple[bytes, list[bytes]]:
    """A zone with one offer per producer and ``orders`` orders from distinct consumers, assigned
    round-robin to the offers."""
    producers = producers or b.producers
    zone = opaque_id(f"bench-zone-{tag}")
    offers = [opaque_id(f"bench-offer-{tag}-{k}") for k in range(len(producers))]
    listing = b.market.contract.functions.listOffer
    pipelined(
        (producer, listing(offer_id, zone, slot, slot + SLOT_SECONDS, 2**32 - 1, PRICE))
        for producer, offer_id in zip(producers, offers)
    )
    ensure_consumers(b, orders)
    order_ids = [opaque_id(f"bench-order-{tag}-{i}") for i in range(orders)]
    ordering = b.market.contract.functions.placeOrder
    pipelined(
        (b.consumers[i], ordering(order_id, offers[i % len(offers)], slot, energy(i), PRICE))
        for i, order_id in enumerate(order_ids)
    )
    return zone, order_ids


def settle_gas(b: Bench, zone: bytes, slot: int, count: int, full: bool = False) -> int:
    deliveries = [energy(i) if full else delivered(energy(i)) for i in range(count)]
    event, receipt = b.market.settle_batch(b.oracle, zone, slot, 0, deliveries)
    assert len(event.delivered_wh) == count
    return int(receipt["gasUsed"])


def next_slot(w3: Web3, ahead: int = 3) -> int:
    return (now(w3) // SLOT_SECONDS + ahead) * SLOT_SECONDS


def measure_operations(b: Bench) -> dict[str, int]:
    """Gas of the single operations, through the binding (receipts' gasUsed)."""
    w3, m = b.w3, b.market
    slot = next_slot(w3)
    zone = opaque_id("bench-ops-zone")
    ops: dict[str, int] = {}

    def gas_of(event: Any) -> int:
        return int(w3.eth.get_transaction_receipt(event.tx_hash)["gasUsed"])

    ops["list_offer_first_in_zone"] = gas_of(
        m.list_offer(b.producers[0], opaque_id("ops-offer-0"), zone, slot, slot + SLOT_SECONDS, 100_000, PRICE)
    )
    ops["list_offer"] = gas_of(
        m.list_offer(b.producers[1], opaque_id("ops-offer-1"), zone, slot, slot + SLOT_SECONDS, 100_000, PRICE)
    )
    fresh = Sender(w3, bench_account(10**6))
    w3.provider.make_request("anvil_setBalance", [fresh.address, hex(10**21)])  # type: ignore[arg-type]
    m.mint(b.admin, fresh.address, 10**6)
    m.approve(fresh)
    ops["place_order_first_of_account"] = gas_of(m.place_order(fresh, opaque_id("ops-o-0"), opaque_id("ops-offer-0"), slot, 1_000))
    ops["place_order"] = gas_of(m.place_order(fresh, opaque_id("ops-o-1"), opaque_id("ops-offer-0"), slot, 1_000))
    ops["cancel_order"] = gas_of(m.cancel_order(fresh, opaque_id("ops-o-1")))
    advance_to(w3, slot + SLOT_SECONDS)
    m.settle_slot(b.oracle, zone, slot, {opaque_id("ops-o-0"): 800, opaque_id("ops-o-1"): 0})
    ops["withdraw_producer"] = gas_of(m.withdraw(b.producers[0]))
    ops["withdraw_consumer"] = gas_of(m.withdraw(fresh))
    return ops


def measure_baseline(b: Bench, count: int = 100, singles: int = 10) -> dict[str, float]:
    """The plain escrow design: one delivery per transaction, and a batch of ``count``."""
    w3, artifact = b.w3, load("PlainEscrow")
    receipt = b.admin.transact(
        w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode).constructor(b.market.token.address, b.oracle.address)
    )
    plain = w3.eth.contract(address=receipt["contractAddress"], abi=artifact.abi)
    ensure_consumers(b, count + singles)
    token = b.market.token.functions
    pipelined((c, token.approve(plain.address, 2**256 - 1)) for c in b.consumers[: count + singles])
    ids = [opaque_id(f"plain-{i}") for i in range(count + singles)]
    pipelined(
        (b.consumers[i], plain.functions.placeOrder(order_id, b.producers[i % PRODUCERS].address, energy(i), PRICE))
        for i, order_id in enumerate(ids)
    )
    # Credited balances start nonzero, as in the market (whose credit slots never return to zero).
    warm = plain.functions.settle([ids[0]], [delivered(energy(0))])
    b.oracle.transact(warm)
    single = [
        int(b.oracle.transact(plain.functions.settle([ids[i]], [delivered(energy(i))]))["gasUsed"])
        for i in range(1, singles)
    ]
    batch_ids = ids[singles:]
    batch = int(
        b.oracle.transact(plain.functions.settle(batch_ids, [delivered(energy(i + singles)) for i in range(count)]))["gasUsed"]
    )
    return {"per_delivery_single": sum(single) / len(single), f"per_delivery_batch_{count}": batch / count}


def largest_batch(b: Bench, marginal: float, base: float) -> tuple[int, int]:
    """The most deliveries one settlement transaction takes under the gas cap, and its gas."""
    guess = int((TX_GAS_CAP - base) / marginal)
    orders = int(guess * 1.03) + 10
    slot = next_slot(b.w3)
    zone, _ = open_slot(b, "largest", orders, slot)
    advance_to(b.w3, slot + SLOT_SECONDS)
    fn = b.market.contract.functions.settleBatch
    deliveries = [delivered(energy(i)) for i in range(orders)]

    def fits(n: int) -> bool:
        try:
            return b.oracle.estimate(fn(zone, slot, 0, pack_wh(deliveries[:n]))) <= TX_GAS_CAP
        except GasCapExceeded:
            return False

    low, high = 1, orders
    while low < high:  # largest n that fits
        mid = (low + high + 1) // 2
        low, high = (mid, high) if fits(mid) else (low, mid - 1)
    return low, settle_gas(b, zone, slot, low)


def tx_rate(w3: Web3, count: int, pipelined: bool) -> float:
    """Token transfers per second from one account: pipelined sends, or estimate+send+wait each."""
    sender = Sender(w3, dev_account(ADMIN))
    artifact = load("EuroToken")
    token_receipt = sender.transact(w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode).constructor(sender.address))
    token = w3.eth.contract(address=token_receipt["contractAddress"], abi=artifact.abi)
    sender.transact(token.functions.mint(sender.address, 10**12))
    to = dev_account(5).address
    start = time.perf_counter()
    if pipelined:
        hashes = [sender.send(token.functions.transfer(to, 1), gas=SMALL_GAS) for _ in range(count)]
        for h in hashes:
            sender.wait(h)
    else:
        for _ in range(count):
            sender.transact(token.functions.transfer(to, 1))
    return count / (time.perf_counter() - start)


def run(skip_largest: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="quartier-bench-gas-") as tmp:
        stack = Stack(Path(tmp), [Chain()])
        rpc = stack.up()["chain"]["rpc_url"]
        try:
            return _measure(Web3(Web3.HTTPProvider(rpc, request_kwargs={"timeout": 120})), skip_largest)
        finally:
            stack.down()


def _measure(w3: Web3, skip_largest: bool) -> dict[str, Any]:
    # Throughput first, on the fresh chain the stack starts (anvil slows as its history grows).
    rates = {
        "anvil_tx_per_s": round(tx_rate(w3, 500, pipelined=True)),
        "anvil_tx_per_s_sequential": round(tx_rate(w3, 100, pipelined=False)),
        "eth_tester_tx_per_s_sequential": round(tx_rate(in_process_chain(), 50, pipelined=False)),
    }
    rates["ratio_anvil_vs_eth_tester"] = round(rates["anvil_tx_per_s_sequential"] / rates["eth_tester_tx_per_s_sequential"], 1)
    admin, oracle = Sender(w3, dev_account(ADMIN)), Sender(w3, dev_account(ORACLE))
    record = deploy(w3, admin, oracle.address)
    market = Market(w3, record)
    deploy_gas = {
        name: int(w3.eth.get_transaction_receipt(h)["gasUsed"]) for name, h in zip(("token", "market"), record.tx_hashes)
    }
    producers = [Sender(w3, dev_account(2 + k)) for k in range(8)] + [Sender(w3, bench_account(-1 - k)) for k in range(2)]
    for p in producers:
        w3.provider.make_request("anvil_setBalance", [p.address, hex(10**21)])  # type: ignore[arg-type]
    b = Bench(w3, admin, oracle, market, producers, [])

    report: dict[str, Any] = {**rates, "deploy_gas": deploy_gas, "operations_gas": measure_operations(b)}
    # Producers' and consumers' credit slots already hold their sentinel (opened when they first
    # listed or ordered), as for any account after its first trade.
    slot = next_slot(w3)
    zones = {n: open_slot(b, f"size-{n}", n, slot)[0] for n in SIZES}
    full_zone = open_slot(b, "full-100", 100, slot)[0]
    # Worst case: every order on its own producer's offer (producers drawn from other accounts).
    ensure_consumers(b, 200)
    solo_zone = open_slot(b, "solo-100", 100, slot, producers=b.consumers[100:200])[0]
    advance_to(w3, slot + SLOT_SECONDS)
    settle = {n: settle_gas(b, zones[n], slot, n) for n in SIZES}
    report["gas_per_delivery_full_delivery_100"] = round(settle_gas(b, full_zone, slot, 100, full=True) / 100)
    report["gas_per_delivery_producer_per_order_100"] = round(settle_gas(b, solo_zone, slot, 100) / 100)
    per_delivery = {str(n): settle[n] / n for n in SIZES}
    marginal = (settle[100] - settle[10]) / 90
    base = settle[10] - 10 * marginal
    report["settle_gas"] = {str(n): g for n, g in settle.items()}
    report["settle_marginal_gas_per_delivery"] = round(marginal)
    report["settle_fixed_gas"] = round(base)
    if not skip_largest:
        n_max, gas_max = largest_batch(b, marginal, base)
        report["largest_batch"] = n_max
        report["settle_gas"][str(n_max)] = gas_max
        per_delivery[str(n_max)] = gas_max / n_max
    report["gas_per_delivery_by_batch"] = {k: round(v) for k, v in per_delivery.items()}
    best = min(per_delivery.values())
    report["gas_per_delivery"] = round(best)

    baseline = measure_baseline(b)
    report["baseline_plain_escrow"] = {k: round(v) for k, v in baseline.items()}
    report["ratio_vs_baseline_single"] = round(baseline["per_delivery_single"] / per_delivery["1"], 2)
    report["ratio_vs_baseline_batch_100"] = round(baseline["per_delivery_batch_100"] / per_delivery["100"], 2)
    report["ratio_best_vs_baseline_batch_100"] = round(baseline["per_delivery_batch_100"] / best, 2)

    report["chain_transactions"] = w3.eth.block_number  # automine: one block per transaction
    report["anvil_tx_per_s_after_run"] = round(tx_rate(w3, 200, pipelined=True))
    return report


def summary(r: dict[str, Any]) -> str:
    lines = ["Settlement gas (80 % delivered, distinct consumers, 10 producers), per delivery:"]
    for size, gas in r["gas_per_delivery_by_batch"].items():
        lines.append(f"  batch of {size:>5}: {gas:>7,} gas/delivery  (tx {r['settle_gas'][size]:,})")
    lines.append(f"  marginal {r['settle_marginal_gas_per_delivery']:,} gas/delivery, fixed {r['settle_fixed_gas']:,} per batch")
    lines.append(
        f"  batch of 100, all delivered in full: {r['gas_per_delivery_full_delivery_100']:,}; "
        f"each order its own producer (worst case): {r['gas_per_delivery_producer_per_order_100']:,}"
    )
    if "largest_batch" in r:
        lines.append(f"  largest batch under the {TX_GAS_CAP:,} gas cap: {r['largest_batch']:,} deliveries")
    base = r["baseline_plain_escrow"]
    lines.append(
        f"Baseline plain escrow: {base['per_delivery_single']:,} gas single, {base['per_delivery_batch_100']:,} per delivery "
        f"in batches of 100; market is {r['ratio_vs_baseline_batch_100']}x cheaper at 100, "
        f"{r['ratio_best_vs_baseline_batch_100']}x at its best"
    )
    lines.append("Operations: " + ", ".join(f"{k} {v:,}" for k, v in r["operations_gas"].items()))
    lines.append("Deploy: " + ", ".join(f"{k} {v:,}" for k, v in r["deploy_gas"].items()))
    lines.append(
        f"anvil: {r['anvil_tx_per_s']} tx/s pipelined, {r['anvil_tx_per_s_sequential']} tx/s estimate+send+wait; "
        f"eth-tester {r['eth_tester_tx_per_s_sequential']} tx/s ({r['ratio_anvil_vs_eth_tester']}x); "
        f"{r['anvil_tx_per_s_after_run']} tx/s pipelined after {r['chain_transactions']:,} blocks"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    parser.add_argument("--skip-largest", action="store_true", help="skip the largest-batch search (thousands of orders)")
    args = parser.parse_args(argv)
    report = run(args.skip_largest)
    print(summary(report))
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    lifetime.run(main)
