"""Third-party Kafka clients speak Quartier's event contracts: confluent-kafka (librdkafka) beside
aiokafka, and ``quartier produce`` for anyone with JSON lines and no client that reaches the broker.

Readings produced by confluent-kafka go through the real worker and raise exactly the episode they
should; that episode is read back from ``alerts.events`` by a confluent-kafka consumer group.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import confluent_kafka
import pytest

from quartier import events, topics
from quartier.events import AlertEvent, alert_id, shard_of
from quartier.kafka import ensure_topics
from quartier.settings import Settings
from quartier.stack.component import pick_port
from tests.streams.worker_support import WorkerProcess, quiet_rules, readings, scrape
from tests.support import isolated_settings, settings_env

ROOT = Path(__file__).resolve().parent.parent
METER = "310000000001"


def confluent_producer(settings: Settings) -> confluent_kafka.Producer:
    return confluent_kafka.Producer({"bootstrap.servers": settings.kafka.bootstrap, "acks": "all"})


def confluent_consumer(settings: Settings) -> confluent_kafka.Consumer:
    return confluent_kafka.Consumer({
        "bootstrap.servers": settings.kafka.bootstrap,
        "group.id": f"confluent-{uuid.uuid4().hex[:8]}",
        # Tansu completes a group's first join after half the session timeout (librdkafka's default
        # of 45 s would mean 22 s before the first record).
        "session.timeout.ms": 6000,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })


def produce_with_confluent(settings: Settings, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    producer = confluent_producer(settings)
    failures: list[str] = []

    def delivered(error: confluent_kafka.KafkaError | None, _: Any) -> None:
        if error is not None:
            failures.append(str(error))

    for key, value in messages:
        producer.produce(settings.topic(topic), value=value, key=key, on_delivery=delivered)
    assert producer.flush(30) == 0
    assert failures == []


def consume_with_confluent(settings: Settings, topic: str, count: int, timeout_s: float = 60) -> list[tuple[bytes, bytes]]:
    """(key, value) of the first ``count`` records of the topic, read by a new consumer group."""
    consumer = confluent_consumer(settings)
    consumer.subscribe([settings.topic(topic)])
    found: list[tuple[bytes, bytes]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(found) < count and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=100, timeout=0.5):
                assert message.error() is None, message.error()
                found.append((message.key(), message.value()))
    finally:
        consumer.close()
    return found


async def test_readings_from_confluent_kafka_raise_their_episode_and_it_reads_back_with_confluent_kafka(
    broker: dict[str, Any], influx: dict[str, Any], tmp_path: Path
) -> None:
    settings = isolated_settings(tmp_path / "state", broker, influx)
    await ensure_topics(settings)
    rules = quiet_rules(METER, power_max_w=3_000, for_s=2)
    await asyncio.to_thread(
        produce_with_confluent, settings, topics.ALERTS_RULES.name, [(METER.encode(), events.encode(rules))]
    )
    start = int(time.time() * 1000) - 3_600_000
    # Five quiet seconds, five over 3 kW, five quiet: one episode, raised after 2 s over, resolved at once.
    told = readings(METER, start, [1_000] * 5 + [5_000] * 5 + [1_000] * 5)
    shard = str(shard_of(METER, settings.kafka.reading_shards)).encode()
    # Single readings, one message each, as a gateway that does not batch would send them.
    await asyncio.to_thread(
        produce_with_confluent, settings, topics.METER_READINGS.name, [(shard, events.encode(r)) for r in told]
    )
    port = pick_port(0)
    argv = ["-m", "quartier.cli", "streams", "worker", "--app-id", settings.topic("worker"),
            "--metrics-port", str(port)]
    with WorkerProcess(argv, settings, tmp_path / "worker.log") as worker:

        async def consumed() -> bool:
            return scrape(port).get("quartier_readings_consumed_total", 0) >= len(told)

        await worker.until(consumed, 120, "every reading consumed")
        records = await asyncio.to_thread(consume_with_confluent, settings, topics.ALERTS_EVENTS.name, 2)
    alerts = [events.decoder(AlertEvent).decode(value) for _, value in records]
    episode = alert_id(METER, "power_above", start + 5_000)
    assert [(key, a.id, a.kind, a.state, a.at_ms, a.value) for (key, _), a in zip(records, alerts)] == [
        (METER.encode(), episode, "power_above", "raised", start + 7_000, 5_000),
        (METER.encode(), episode, "power_above", "resolved", start + 10_000, 1_000),
    ]


# --- quartier produce ---------------------------------------------------------------------------


def run_produce(settings: Settings, topic: str, stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "quartier.cli", "produce", topic],
        input=stdin, capture_output=True, text=True, timeout=60, cwd=ROOT,
        env={**os.environ, **settings_env(settings)},
    )


def line(record: Any) -> str:
    return events.encode(record).decode()


async def test_quartier_produce_sends_good_lines_keyed_and_refuses_bad_ones_by_line_and_field(
    broker: dict[str, Any], tmp_path: Path
) -> None:
    settings = isolated_settings(tmp_path / "state", broker)
    shards = settings.kafka.reading_shards
    first, second = readings(METER, 1_763_800_000_000, [1_840, 900])
    other = next(f"3100000000{n:02d}" for n in range(2, 99) if shard_of(f"3100000000{n:02d}", shards) != shard_of(METER, shards))
    shard = shard_of(METER, shards)
    batch = events.ReadingBatch(shard=shard, readings=[first, second])
    wrong_shard = events.ReadingBatch(shard=shard, readings=[first, readings(other, 1_763_800_000_000, [5])[0]])
    stdin = "\n".join([
        line(first),                                              # 1: a single reading
        line(batch),                                              # 2: a batch of its shard
        "",                                                       # 3: blank, skipped
        line(first).replace('"drawn_va":1840', '"drawn_va":-5'),  # 4: out of range
        line(batch).replace('"shard":', '"shards":'),             # 5: unknown field (and no shard)
        line(wrong_shard),                                        # 6: a meter of another shard
        '{"type": "reading", "v": 1,',                            # 7: truncated JSON
    ]) + "\n"

    done = await asyncio.to_thread(run_produce, settings, "meter.readings", stdin)

    assert done.returncode == 1, done.stderr
    said = done.stderr.splitlines()
    assert said[:3] == [
        "line 4: Expected `int` >= 0 - at `$.drawn_va`",
        "line 5: Object contains unknown field `shards`",
        f"line 6: meter {other} is in shard {shard_of(other, shards)}, not the batch's shard {shard}"
        " - at `$.readings[1].meter`",
    ]
    assert said[3].startswith("line 7: malformed JSON")
    assert said[4:] == [f"2 sent to {settings.topic('meter.readings')}, 4 refused"]
    # Read back with the other client: exactly the two good lines, keyed by the shard.
    sent = await asyncio.to_thread(consume_with_confluent, settings, "meter.readings", 2)
    decode = events.decoder(events.IngestMessage).decode
    assert [(key, decode(value)) for key, value in sent] == [(str(shard).encode(), first), (str(shard).encode(), batch)]


async def test_quartier_produce_keys_each_topic_as_its_consumers_expect(broker: dict[str, Any], tmp_path: Path) -> None:
    settings = isolated_settings(tmp_path / "state", broker)
    rules = quiet_rules(METER, power_max_w=6_000)
    done = await asyncio.to_thread(run_produce, settings, "alerts.rules", line(rules) + "\n")
    assert (done.returncode, done.stderr) == (0, f"1 sent to {settings.topic('alerts.rules')}, 0 refused\n")
    sent = await asyncio.to_thread(consume_with_confluent, settings, "alerts.rules", 1)
    assert [(key, events.decoder(events.AlertRules).decode(value)) for key, value in sent] == [(METER.encode(), rules)]
    # A reading is not a rule: refused naming the tag, nothing sent.
    reading = readings(METER, 1_763_800_000_000, [10])[0]
    refused = await asyncio.to_thread(run_produce, settings, "alerts.rules", line(reading) + "\n")
    assert refused.returncode == 1
    assert refused.stderr.splitlines()[0].startswith("line 1: Invalid value 'reading' - at `$.type`")


def test_quartier_produce_refuses_an_unknown_topic_naming_those_it_knows(tmp_path: Path) -> None:
    settings = isolated_settings(tmp_path / "state", {"kafka": {"bootstrap": "127.0.0.1:1"}})
    done = run_produce(settings, "meter.reading", "{}\n")
    assert done.returncode == 2
    assert "TOPIC: 'meter.reading' is not a topic quartier produce knows (one of: meter.readings," in done.stderr


def test_every_declared_topic_has_a_key_rule() -> None:
    from quartier.produce import KEYS

    assert sorted(KEYS) == sorted(t.name for t in topics.ALL)


def test_the_events_page_names_the_verified_client_versions() -> None:
    page = (ROOT / "docs" / "events.md").read_text()
    assert f"confluent-kafka {confluent_kafka.version()[0]}" in page
    assert "quartier produce meter.readings" in page
