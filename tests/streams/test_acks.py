"""DurableAcks: a handled message is acknowledged once its points are durable and its sends are taken."""

from __future__ import annotations

import asyncio

from streams.acks import DurableAcks, SendsAfter


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


class Producer:
    """Records handed to the producer, in order, each with the acknowledgement the test gives it."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.acks: dict[str, asyncio.Future[object]] = {}

    def send(self, record: str):  # type: ignore[no-untyped-def]
        async def hand_over() -> asyncio.Future[object]:
            self.sent.append(record)
            self.acks[record] = asyncio.get_running_loop().create_future()
            return self.acks[record]

        return hand_over


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_state_record_waits_for_its_alert_event_and_later_records_wait_behind_it() -> None:
    producer, failures = Producer(), []
    sends = SendsAfter(failed=failures.append)
    event_acked = asyncio.get_running_loop().create_future()  # the "raised" event's acknowledgement
    raised = sends.send([event_acked], producer.send("m1 raised"))
    other = sends.send([], producer.send("m2 changed"))  # nothing to wait for, but queued behind m1
    await settle()
    assert producer.sent == [] and len(sends) == 2  # the agent went on; nothing reached the broker
    event_acked.set_result(None)
    await settle()
    assert producer.sent == ["m1 raised", "m2 changed"] and len(sends) == 0
    assert not raised.done()  # handed over, not yet acknowledged: its message still waits
    producer.acks["m1 raised"].set_result("offset 7")
    producer.acks["m2 changed"].set_result("offset 8")
    await settle()
    assert raised.result() == "offset 7" and other.result() == "offset 8" and not failures
    await sends.drained()


async def test_a_state_record_is_never_sent_when_its_alert_event_was_refused() -> None:
    producer, failures = Producer(), []
    sends = SendsAfter(failed=failures.append)
    event_acked = asyncio.get_running_loop().create_future()
    raised = sends.send([event_acked], producer.send("m1 raised"))
    behind = sends.send([], producer.send("m1 resolved"))
    event_acked.set_exception(RuntimeError("broker refused the event"))
    await sends.drained()
    assert producer.sent == []  # a replay raises the episode again: the state must not say raised
    assert [str(f) for f in failures] == ["broker refused the event"]
    assert str(raised.exception()) == str(behind.exception()) == "broker refused the event"
