"""The Faust app's configuration for the embedded broker, without running a worker."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mode.utils.queues import FlowControlQueue

from quartier.kafka import topic_partitions
from quartier.settings import Settings
from streams.app import SteadyFlowControl, create_app
from streams.tansu import TansuTransport


async def test_changelogs_are_created_with_their_tables_partitions_before_the_worker_starts(
    broker: dict[str, Any], make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(broker)
    app = create_app(settings, settings.topic("app"))
    app.Table("three", partitions=3, key_type=bytes, value_type=bytes)
    app.Table("default", key_type=bytes, value_type=bytes)
    await app.on_first_start()  # what the worker does before its consumer and tables exist
    on_broker = await topic_partitions(settings)
    # Tansu would have created them with 4 partitions on first use.
    assert on_broker[f"{settings.topic('app')}-three-changelog"] == 3
    assert on_broker[f"{settings.topic('app')}-default-changelog"] == 8  # the readings' count
    assert on_broker[settings.topic("meter.readings")] == 8


def test_the_fetch_based_highwater_is_used_on_tansu_only(make_settings: Callable[..., Settings]) -> None:
    tansu = create_app(make_settings(), "a")
    kafka = create_app(make_settings({"kafka": {"flavour": "kafka"}}), "b")
    assert isinstance(tansu.transport, TansuTransport)
    assert not isinstance(kafka.transport, TansuTransport)
    assert tansu.conf.processing_guarantee.value == "at_least_once"
    assert tansu.conf.broker_session_timeout == 6.0


async def test_resuming_flow_that_already_flows_keeps_buffered_records() -> None:
    flow = SteadyFlowControl(initially_suspended=True)
    queue: FlowControlQueue[int] = FlowControlQueue(flow_control=flow, clear_on_resume=True)
    queue.put_nowait(1)  # fetched before a rebalance: dropped when flow resumes
    flow.resume()
    assert queue.empty()
    queue.put_nowait(2)  # fetched after it resumed: Faust's recovery resumes a second time
    flow.resume()
    assert queue.get_nowait() == 2
