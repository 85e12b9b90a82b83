"""The local stack's durable log: the records of truth survive ``quartier stack down`` and ``up``; the
readings' old batches are dropped by the retention once consumed, and nothing else is."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from xml.etree import ElementTree

import httpx
import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.store_requests import rates, read_blocks
from quartier import events, topics
from quartier.events import AlertRules, OfferListed, ReadingBatch
from quartier.kafka import ensure_topics, latest_offsets, read_records
from quartier.settings import KafkaSettings, Settings
from quartier.stack import Stack, durable_broker
from quartier.stack.component import wait_until
from quartier.stack.retention import CONSUMED_KEPT_S, sweep
from quartier.stack.s3 import delete_object
from tests.streams.worker_support import readings
from tests.test_stack_and_demo import quartier

ACCOUNTS_EVENTS = topics.ACCOUNTS_EVENTS.name
S3_XML = "{http://doc.s3.amazonaws.com/2006-03-01/}"

def bootstrap_of(state_dir: Path) -> str:
    return json.loads((state_dir / "stack.json").read_text())["settings"]["kafka"]["bootstrap"]


async def produce(bootstrap: str, records: dict[str, list[tuple[bytes, bytes]]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for topic, pairs in records.items():
            for key, value in pairs:
                await producer.send(topic, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


async def read_topics(bootstrap: str, names: list[str]) -> dict[str, list[tuple[int, int, bytes, bytes]]]:
    settings = Settings(kafka=KafkaSettings(bootstrap=bootstrap))
    out = {}
    for name in names:
        records = await read_records(settings, name)
        out[name] = [(r.partition, r.offset, r.key, r.value) for r in records]
    return out


def test_stack_down_and_up_keeps_the_market_the_accounts_and_the_rules(tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert quartier(state, "stack", "up").returncode == 0
    try:
        bootstrap = bootstrap_of(state)
        settings = Settings(kafka=KafkaSettings(bootstrap=bootstrap))
        asyncio.run(ensure_topics(settings, topics.ALL))
        now = int(time.time() * 1000)
        offers = [
            OfferListed(offer_id=f"o{i}", producer="p1", zone="rennes-01", slot_start_ms=now + 900_000,
                        energy_wh=100 + i, price_cents_per_kwh=12, at_ms=now)
            for i in range(20)
        ]
        records = {
            topics.MARKET_EVENTS.name: [(b"rennes-01", events.encode(o)) for o in offers],
            topics.ALERTS_RULES.name: [
                (m.encode(), events.encode(AlertRules(meter=m, power_max_w=3000 + i)))
                for i, m in enumerate(f"20000000{i:04d}" for i in range(30))
            ],
            ACCOUNTS_EVENTS: [(f"h{i}".encode(), json.dumps({"household": f"h{i}", "v": 1}).encode()) for i in range(10)],
        }
        asyncio.run(produce(bootstrap, records))
        before = asyncio.run(read_topics(bootstrap, list(records)))
        assert {name: len(got) for name, got in before.items()} == {name: len(r) for name, r in records.items()}

        down = quartier(state, "stack", "down")
        assert down.returncode == 0, down.stderr
        up = quartier(state, "stack", "up")
        assert up.returncode == 0, up.stderr

        after = asyncio.run(read_topics(bootstrap_of(state), list(records)))
        assert after == before  # same records, same partitions, same offsets
        market = [events.decoder(events.MarketEvent).decode(v) for _, _, _, v in after[topics.MARKET_EVENTS.name]]
        assert sorted(o.offer_id for o in market) == sorted(o.offer_id for o in offers)
    finally:
        quartier(state, "stack", "down")


async def test_retention_drops_consumed_reading_batches_soon_unclaimed_ones_after_the_retention_and_nothing_else(
    tmp_path: Path,
) -> None:
    components = durable_broker()
    store = components[0]
    stack = Stack(tmp_path / "stack", components[:2])  # the store and the broker; the sweep is run here
    overrides = stack.up()
    client = httpx.Client(timeout=10)
    delete = lambda key: delete_object(client, store.url(store.port), key)  # noqa: E731
    try:
        settings = Settings(kafka=KafkaSettings(**overrides["kafka"]))
        await ensure_topics(settings)
        readings_topic = topics.METER_READINGS.name
        tp = TopicPartition(readings_topic, 0)
        rs = readings("200000000001", 1_700_000_000_000, [1000] * 52)
        # Ten batches of four readings on partition 0 and three on partition 1, each its own request
        # (and so its own stored batch).
        for i in range(13):
            batch = ReadingBatch(shard=0, readings=rs[4 * i : 4 * i + 4])
            producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap)
            await producer.start()
            try:
                await producer.send_and_wait(readings_topic, events.encode(batch), key=b"0", partition=0 if i < 10 else 1)
            finally:
                await producer.stop()
        await produce(settings.kafka.bootstrap, {topics.MARKET_EVENTS.name: [(b"z", b"kept")] * 3})
        # A worker's group has handled the first six messages of partition 0; nobody reads partition 1.
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap, group_id="worker", enable_auto_commit=False)
        await consumer.start()
        try:
            consumer.assign([tp])
            await consumer.commit({tp: 6})
        finally:
            await consumer.stop()

        bucket = store.bucket_dir()
        now = time.time()
        assert sweep(bucket, delete, now_s=now).batches_deleted == 0  # nothing is old yet
        soon = now + CONSUMED_KEPT_S + 5
        done = sweep(bucket, delete, now_s=soon)
        assert done.batches_deleted == 6  # consumed and older than CONSUMED_KEPT_S; partition 1 waits
        assert done.batches_kept_unconsumed == 1  # the first one the group has not handled stops it

        records = await read_records(settings, readings_topic)
        assert [(r.partition, r.offset) for r in records] == [(0, o) for o in range(6, 10)] + [(1, 0), (1, 1), (1, 2)]
        assert (await latest_offsets(settings, [tp]))[tp] == 10
        kept = await read_records(settings, topics.MARKET_EVENTS.name)
        assert [r.value for r in kept] == [b"kept"] * 3

        # Once the group has handled everything, all but the newest batch go.
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap, group_id="worker", enable_auto_commit=False)
        await consumer.start()
        try:
            consumer.assign([tp])
            await consumer.commit({tp: 10})
        finally:
            await consumer.stop()
        assert sweep(bucket, delete, now_s=soon).batches_deleted == 3
        # Past the retention, a partition no group reads loses all but its newest batch too.
        later = now + topics.RETAINED_MS[readings_topic] / 1000 + 60
        for path in bucket.glob("clusters/*/groups/consumers/worker/offsets/*/partitions/*"):
            os.utime(path, (later - 10, later - 10))  # the group still counts as active then
        assert sweep(bucket, delete, now_s=later).batches_deleted == 2
        records = await read_records(settings, readings_topic)
        assert [(r.partition, r.offset) for r in records] == [(0, 9), (1, 2)]
        assert [r.value for r in await read_records(settings, topics.MARKET_EVENTS.name)] == [b"kept"] * 3
    finally:
        client.close()
        stack.down()


def test_the_store_lists_a_partition_of_thousands_of_batches_page_by_page_in_order_and_after_a_restart(
    tmp_path: Path,
) -> None:
    """The broker lists a partition's batch objects on every fetch: past 1,000 the listing needs pages
    (s3rver's continuation tokens, DES: 500 without OpenSSL's legacy provider), and it must stay exact
    as the retention deletes and across a restart of the store."""
    store = durable_broker()[0]
    stack = Stack(tmp_path / "stack", [store])
    stack.up()
    prefix = "clusters/c/topics/meter.readings/partitions/0000000000/records/"
    keys = [f"{prefix}{offset:020d}.batch" for offset in range(0, 250_000, 100)]  # 2,500 batches

    def listing(client: httpx.Client, prefix: str, delimiter: str = "") -> tuple[list[str], list[str], int]:
        found, common, pages, token = [], [], 0, None
        while True:
            params = {"list-type": "2", "prefix": prefix, **({"delimiter": delimiter} if delimiter else {})}
            if token:
                params["continuation-token"] = token
            response = client.get(store.url(store.port), params=params)
            assert response.status_code == 200, response.text
            pages += 1
            body = ElementTree.fromstring(response.content)
            found += [e.text for e in body.iter(f"{S3_XML}Key")]
            common += [e.text for e in body.iter(f"{S3_XML}Prefix") if e.text != prefix]
            token = body.findtext(f"{S3_XML}NextContinuationToken")
            if not token:
                return found, common, pages

    try:
        with httpx.Client(timeout=10) as client:
            for key in reversed(keys):  # written out of order: the listing sorts
                assert client.put(f"{store.url(store.port)}/{key}", content=b"batch").status_code == 200
            client.put(f"{store.url(store.port)}/clusters/c/topics/market.events/partitions/0000000000/records/"
                       f"{0:020d}.batch", content=b"other")
            assert listing(client, prefix) == (keys, [], 3)
            for key in keys[:700]:
                delete_object(client, store.url(store.port), key)
            assert listing(client, prefix) == (keys[700:], [], 2)
            topics_prefix = "clusters/c/topics/"
            assert listing(client, topics_prefix, "/") == (
                [], [f"{topics_prefix}market.events/", f"{topics_prefix}meter.readings/"], 1)
        stack.down()
        stack.up()  # a new store process reads its keys from the disk
        with httpx.Client(timeout=10) as client:
            assert listing(client, prefix) == (keys[700:], [], 2)
    finally:
        stack.down()


def test_the_store_answers_conditional_gets_without_keeping_a_file_open(tmp_path: Path) -> None:
    """The broker reads each partition's watermark and the cluster's meta.json with If-None-Match: on
    s3rver as published each 304 kept the object's file open, and the store died of EMFILE within the
    hour at the reference load."""
    store = durable_broker()[0]
    stack = Stack(tmp_path / "stack", [store])
    stack.up()
    process = psutil.Process(stack.status()[0].pid)

    def open_data_files() -> int:
        return sum(f.path.endswith("._S3rver_object") for f in process.open_files())

    try:
        url = f"{store.url(store.port)}/tansu/clusters/c/topics/t/partitions/0000000000/watermark.json"
        with httpx.Client(timeout=10) as client:
            etag = client.put(url, content=b'{"high":7}').headers["etag"]
            unchanged = [client.get(url, headers={"If-None-Match": etag}).status_code for _ in range(150)]
            not_modified = [client.get(url, headers={"If-Modified-Since": "Fri, 01 Jan 2100 00:00:00 GMT"}).status_code
                            for _ in range(150)]
            changed = client.get(url, headers={"If-None-Match": '"an-older-etag"'})
            missing = client.get(f"{url}.missing", headers={"If-None-Match": etag})
        assert (unchanged, not_modified) == ([304] * 150, [304] * 150)
        assert (changed.status_code, changed.content, changed.headers["etag"]) == (200, b'{"high":7}', etag)
        assert missing.status_code == 404
        assert wait_until(lambda: open_data_files() == 0, 5.0), f"{open_data_files()} files left open"
    finally:
        stack.down()


def test_the_store_counts_what_it_is_asked_by_kind_when_told_to(tmp_path: Path, monkeypatch) -> None:
    """``QUARTIER_S3_REQUEST_MIX_S`` makes the store log its requests by kind; ``bench.store_requests``
    reads them back (docs/operations.md, "What the store is asked")."""
    monkeypatch.setenv("QUARTIER_S3_REQUEST_MIX_S", "1")
    store = durable_broker()[0]
    stack = Stack(tmp_path / "stack", [store])
    stack.up()
    log = tmp_path / "stack" / "logs" / "s3.log"
    records = "clusters/c/topics/t/partitions/0000000003/records/"
    kind = "clusters/c/topics/t/partitions/N/records/N.batch"
    try:
        base = store.url(store.port)  # the bucket's URL
        with httpx.Client(timeout=10) as client:
            wait_until(lambda: len(read_blocks(log)) >= 1, 10.0)
            for offset in (0, 40, 95):
                assert client.put(f"{base}/{records}{offset:020d}.batch", content=b"batch").status_code == 200
            assert [client.get(f"{base}/{records}{0:020d}.batch").status_code for _ in range(2)] == [200, 200]
            assert client.get(f"{base}/{records}{7:020d}.batch").status_code == 404
            assert client.get(base, params={"list-type": "2", "prefix": records}).status_code == 200
        wait_until(lambda: read_blocks(log)[-1].kinds.get(f"GET 200 LIST {kind[:-len('N.batch')]}") is not None, 10.0)
        blocks = read_blocks(log)
    finally:
        stack.down()
    first, last = blocks[0], blocks[-1]
    asked = {k: count for k, (count, _ms) in last.kinds.items() if "/t/" in k}
    assert asked == {f"PUT 200 {kind}": 3, f"GET 200 {kind}": 2, f"GET 404 {kind}": 1,
                     "GET 200 LIST clusters/c/topics/t/partitions/N/records/": 1}
    seconds = (last.at - first.at).total_seconds()
    _cores, _per_s, by_kind = rates(first, last)
    assert {k: round(per_s * seconds) for per_s, _ms, k in by_kind if "/t/" in k} == asked


async def test_a_get_while_its_object_is_rewritten_gets_one_whole_version(tmp_path: Path) -> None:
    """s3rver rewrites an object's file in place: a GET during a PUT of the same key sent a body cut
    short (14 of 54 here), and the broker, reading its group's state so, closed its client's
    connection (``IncompleteBody``) a few times an hour at the reference load."""
    store = durable_broker()[0]
    stack = Stack(tmp_path / "stack", [store])
    stack.up()
    versions = [bytes([ord("A") + i]) * (200_000 + 5_000 * i) for i in range(8)]
    url = f"{store.url(store.port)}/clusters/c/groups/consumers/g.json"
    bodies: list[bytes] = []
    try:
        async with httpx.AsyncClient(timeout=10, limits=httpx.Limits(max_connections=16)) as client:
            etag = (await client.put(url, content=versions[0])).headers["etag"]
            written = asyncio.Event()

            async def rewrite() -> None:
                nonlocal etag
                for n in range(1, 201):  # conditional PUTs, as the broker updates a group's state
                    answer = await client.put(url, content=versions[n % 8], headers={"If-Match": etag})
                    assert answer.status_code == 200
                    etag = answer.headers["etag"]
                written.set()

            async def read() -> None:
                while not written.is_set():
                    bodies.append((await client.get(url)).content)

            await asyncio.gather(rewrite(), *(read() for _ in range(6)))
            final = (await client.get(url)).content
    finally:
        stack.down()
    assert final == versions[200 % 8]
    assert bodies and [len(b) for b in bodies if b not in versions] == []
