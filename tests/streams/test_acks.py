"""DurableAcks: a handled message is acknowledged once its points are durable and its sends are taken."""

from __future__ import annotations

import asyncio

from streams.acks import DurableAcks


class Marks:
    """Two writers' durable marks, moved by the test."""

    def __init__(self) -> None:
        self.detail = 0
        self.coarse = 0


def ledger(marks: Marks, acked: list[str], failures: list[BaseException]) -> DurableAcks[str]:
    return DurableAcks((lambda: marks.detail, lambda: marks.coarse), ack=acked.append, failed=failures.append)


async def test_messages_are_acknowledged_in_order_once_every_writer_has_their_points() -> None:
    marks, acked, failures = Marks(), [], []
    acks = ledger(marks, acked, failures)
    acks.hold("a", (0, 0))  # nothing written: acknowledged at once
    acks.hold("b", (500, 0))
    acks.hold("c", (500, 20))
    acks.hold("d", (500, 20))
    acks.hold("e", (900, 20))
    assert acked == ["a"] and len(acks) == 4
    marks.coarse = 20
    acks.release()
    assert acked == ["a"]  # b's points are not durable, and c waits behind it
    marks.detail = 500
    acks.release()
    assert acked == ["a", "b", "c", "d"] and len(acks) == 1
    acks.hold("f", (0, 0))  # no points of its own, but behind e
    assert acked == ["a", "b", "c", "d"]
    marks.detail = 900
    acks.release()
    assert acked == ["a", "b", "c", "d", "e", "f"] and not failures


async def test_a_message_waits_for_the_broker_to_take_what_it_sent() -> None:
    marks, acked, failures = Marks(), [], []
    acks = ledger(marks, acked, failures)
    loop = asyncio.get_running_loop()
    rejected, slot = loop.create_future(), loop.create_future()
    acks.hold("a", (0, 0), [rejected, slot])
    acks.hold("b", (0, 0))
    rejected.set_result("meter.readings.rejected[3]@17")
    await asyncio.sleep(0)
    assert acked == []
    slot.set_result("meter.slots[1]@4")
    await asyncio.sleep(0)
    assert acked == ["a", "b"] and not failures


async def test_a_send_the_broker_refused_is_reported_and_its_message_never_acknowledged() -> None:
    marks, acked, failures = Marks(), [], []
    acks = ledger(marks, acked, failures)
    send = asyncio.get_running_loop().create_future()
    acks.hold("a", (0, 0), [send])
    send.set_exception(TimeoutError("no broker"))
    await asyncio.sleep(0)
    acks.release()
    assert acked == [] and [str(e) for e in failures] == ["no broker"] and len(acks) == 1


async def test_after_a_rebalance_the_held_messages_are_dropped_unacknowledged() -> None:
    marks, acked, failures = Marks(), [], []
    acks = ledger(marks, acked, failures)
    acks.hold("a", (10, 0))
    acks.forget()
    marks.detail = 10
    acks.release()
    assert acked == [] and len(acks) == 0
