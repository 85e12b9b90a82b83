"""The Faust application, configured for Quartier's broker.

What the embedded broker (Tansu) needs from Faust, and why (docs/operations.md has the measurements):

- ``processing_guarantee="at_least_once"``: Tansu fails idempotent and transactional producers, so
  exactly-once cannot start; every sink is idempotent instead (deterministic ids).
- a short session timeout: Tansu completes a group's first join after half of it (Faust's default
  of 60 s meant 30 s before the first message).
- every topic, changelogs included, is created with its declared partition count before any
  client touches it (:meth:`QuartierApp.on_first_start`): Tansu auto-creates an unknown topic with
  4 partitions, for ever, and a table's changelog must have as many partitions as its source.
- on flavour ``tansu`` only, the Fetch-based highwater lookup of :mod:`streams.tansu`, without
  which table recovery stops short after a restart.

And one correction for Faust itself, whatever the broker: :class:`SteadyFlowControl`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import faust
from faust.types import TransportT
from mode.utils.objects import cached_property
from mode.utils.queues import FlowControlEvent

from quartier.kafka import ensure_topics
from quartier.settings import Settings
from quartier.topics import ALL, METER_READINGS


class SteadyFlowControl(FlowControlEvent):
    """Faust's flow control, except that resuming flow that is already flowing clears nothing.

    ``FlowControlEvent.resume()`` empties every stream's buffer, and Faust's table recovery calls it
    twice: when it starts reading changelogs, and again after it has resumed the stream partitions
    and sought them to their committed offsets. Records fetched between those two calls (a worker
    restarted with records waiting) sit in the agent's buffer and the second call dropped them:
    never processed, never acknowledged, and not fetched again until the next restart. Clearing on
    the way from suspended to flowing is kept: that is what drops records fetched before a rebalance.
    """

    def resume(self) -> None:
        if self.is_active():
            return
        super().resume()


class QuartierApp(faust.App):
    """A Faust app that knows Quartier's settings, creates its topics first and picks the transport."""

    def __init__(
        self, app_id: str, *, settings: Settings, extra_topics: Mapping[str, int] | None = None, **options: Any
    ) -> None:
        super().__init__(app_id, **options)
        self.quartier_settings = settings
        self.extra_topics = dict(extra_topics or {})

    @cached_property
    def flow_control(self) -> FlowControlEvent:
        return SteadyFlowControl(loop=self.loop)

    def _new_transport(self) -> TransportT:
        if self.quartier_settings.kafka.flavour == "tansu":
            from streams.tansu import TansuTransport

            return TansuTransport(self.conf.broker_consumer, self)
        return super()._new_transport()

    def changelog_partitions(self) -> dict[str, int]:
        """Each table's changelog topic and its partition count (the table's, else the app default)."""
        return {
            table.changelog_topic.get_topic_name(): table.partitions or self.conf.topic_partitions
            for table in self.tables.values()
        }

    async def on_first_start(self) -> None:
        Path(self.conf.datadir).parent.mkdir(parents=True, exist_ok=True)
        await super().on_first_start()
        # Before the consumer, the tables or any agent exists: nothing may auto-create a topic.
        await ensure_topics(
            self.quartier_settings, ALL, extra={**self.changelog_partitions(), **self.extra_topics}
        )


def create_app(settings: Settings, app_id: str, *, extra_topics: Mapping[str, int] | None = None) -> QuartierApp:
    """A Faust app for this broker; ``extra_topics`` (full name → partitions) are created at start too."""
    session_s = settings.kafka.session_timeout_s
    return QuartierApp(
        app_id,
        settings=settings,
        extra_topics=extra_topics,
        broker=[f"kafka://{host.strip()}" for host in settings.kafka.bootstrap.split(",")],
        processing_guarantee="at_least_once",
        broker_session_timeout=session_s,
        broker_heartbeat_interval=session_s / 3,
        # Commit often: after a crash, at-least-once replays what came since the last commit.
        broker_commit_interval=1.0,
        # Topics an agent declares without a count (and tables without one) get the readings' count,
        # so tables are co-partitioned with the ingest topic.
        topic_partitions=METER_READINGS.partitions,
        topic_replication_factor=1,
        # No leader election topic: nothing here uses it, and it would be one more topic to create.
        topic_disable_leader=True,
        table_standby_replicas=0,
        store="memory://",
        datadir=str(settings.state_dir / "faust" / app_id),
        # Records are msgspec-encoded bytes; Faust passes them through untouched.
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        worker_redirect_stdouts=False,
    )


def run_worker(app: faust.App, *, loglevel: str = "info") -> None:
    """Runs ``app``'s worker in the foreground until SIGTERM or SIGINT, then stops it cleanly."""
    worker = faust.Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()
