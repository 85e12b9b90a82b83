"""Faust's Kafka transport, corrected for the embedded broker (Tansu 0.6).

Faust ends table recovery at each changelog partition's "highwater", which its aiokafka driver
gets from ListOffsets (``AIOKafkaConsumerThread._highwaters`` → ``consumer.end_offsets``). Tansu
answers that request with the first offset of the last record batch plus one instead of the last
offset plus one, so a restarted worker stopped recovery short and silently lost its newest table
updates. Here the highwater is read from a Fetch response instead, which Tansu gets right.

And Tansu answers a Fetch that found records only after sleeping half its remaining max wait, so
Faust's fixed 1,500 ms made every fetch of the stream workers take 750 ms: the worker's consumer
gets ``settings.kafka.fetch_max_wait_ms`` instead.

The corrections are subclasses used only when ``settings.kafka.flavour == "tansu"`` (see
``streams.app.QuartierApp._new_transport``): against Apache Kafka Faust runs unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import aiokafka
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Consumer, Transport
from faust.types import TP, ConsumerT

from quartier.kafka import fetch_high_watermarks


class TansuConsumerThread(AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Transport) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # Faust passes fetch_max_wait_ms=1500 and offers no setting; Tansu delays each fetch by half
        # of it (quartier.settings.KafkaSettings.fetch_max_wait_ms). The consumer hands it to its
        # fetcher at start, which comes later.
        consumer._fetch_max_wait_ms = self.app.quartier_settings.kafka.fetch_max_wait_ms
        return consumer

    async def _highwaters(self, partitions: list[TP]) -> Mapping[TP, int]:  # type: ignore[override]
        if self.consumer.in_transaction:  # exactly-once cannot start on Tansu; keep Faust's path
            return await super()._highwaters(partitions)
        # Runs on the consumer thread's loop, like the original; reuses the consumer's connection.
        found = await fetch_high_watermarks(self._ensure_consumer()._client, partitions)
        return {tp: found[tp] for tp in partitions}


class TansuConsumer(Consumer):
    def _new_consumer_thread(self) -> TansuConsumerThread:
        return TansuConsumerThread(self, loop=self.loop, beacon=self.beacon)


class TansuTransport(Transport):
    """The aiokafka transport with the Fetch-based highwater lookup."""

    Consumer: ClassVar[type[ConsumerT]] = TansuConsumer  # type: ignore[assignment]
