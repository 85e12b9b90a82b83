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

And two corrections for Faust itself, whatever the broker: :class:`SteadyFlowControl` and
:class:`SeekFirstRecovery`; and :attr:`QuartierApp.settle`, for an agent that acknowledges its
messages later than Faust would (the stream worker, once their points are durable).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import faust
from faust.types import TP, TransportT
from faust.tables import TableManager
from faust.tables.recovery import Recovery
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


class SeekFirstRecovery(Recovery):
    """Faust's table recovery, except that stream partitions are sought before they are resumed.

    When recovery ends, Faust resumes the stream partitions and only then seeks them to their
    committed offsets (faust-streaming issue #596), in both of its endings (tables restored, or no
    tables). In between, the fetcher may already be delivering a batch read from wherever the
    consumer stood; the seek resets the read offsets under it, so Faust takes the jump from the
    committed offset to that batch for a hole in the topic and acknowledges the records in it
    unprocessed, and the gap entries duplicate acknowledged offsets, after which commits advance one
    offset a second, or (a gap at the head) never again. Sought while still paused, the first batch
    fetched starts at the committed offset, and the race has nothing to race with.
    """

    async def _seek_then_resume_streams(self) -> None:
        consumer = self.app.consumer
        assignment = consumer.assignment()
        if assignment:
            self.log.info("Seek stream partitions to committed offsets, then resume them.")
            await self._wait(consumer.perform_seek(), timeout=self.app.conf.broker_request_timeout)
            streams = {tp for tp in assignment if not self._is_changelog_tp(tp)}
            await self._seek_uncommitted_to_start(streams)
            consumer.resume_partitions(streams)
            # And once more, as Faust does, after resuming. Without it a restarted stream worker
            # sometimes fetched nothing at all (6 of 6 runs of test_worker_restart): Faust's resume
            # only widens the set its fetch loop asks for, and the seek, run on the consumer's thread,
            # is what gets aiokafka's fetcher going again. The partitions already stand at their
            # committed offsets, so whatever was fetched in between starts there: no jump, no gap.
            await self._wait(consumer.perform_seek(), timeout=self.app.conf.broker_request_timeout)
            await self._seek_uncommitted_to_start(streams)
        else:
            self.log.info("Resuming streams with empty assignment")

    async def _seek_uncommitted_to_start(self, streams: set[TP]) -> None:
        """Seeks the stream partitions the group never committed on to their first offset.

        ``perform_seek`` seeks only the partitions with a committed offset, and a seek is what gets
        aiokafka's fetcher going again: a worker killed before its first commit came back fetching
        nothing at all (tests/test_drills.py, 2 runs in 5). Offset 0 of a partition whose oldest
        batches the retention dropped is out of range, and the consumer resets to the earliest one.
        """
        committed = self.app.consumer._committed_offset  # type: ignore[attr-defined]
        for tp in streams:
            if committed.get(tp) is None:
                await self.app.consumer.seek(tp, 0)

    async def _start_streams(self, *, standbys_ready: bool) -> None:
        """What both endings do once the streams are sought and resumed (as Faust does it)."""
        self.completed.set()
        self.app.flow_control.resume()
        self.app.consumer.resume_flow()
        await self.app._fetcher.maybe_start()  # type: ignore[attr-defined]
        self.tables.on_actives_ready()
        if standbys_ready:
            self.tables.on_standbys_ready()
        self.app.on_rebalance_end()
        self.log.info("Worker ready")

    async def _resume_streams(self, generation_id: int = 0) -> None:
        await self.app.on_rebalance_complete.send()
        if self.app.consumer_generation_id != generation_id:
            self.log.warning("Recovery rebalancing again")
            return
        await self._seek_then_resume_streams()
        await self._start_streams(standbys_ready=True)

    async def on_recovery_completed(self, generation_id: int = 0) -> None:
        self.log.info("Restore complete!")
        await self.app.on_rebalance_complete.send()
        self._set_recovery_ended()
        callbacks = [
            asyncio.ensure_future(
                table.on_recovery_completed(self.actives_for_table[table], self.standbys_for_table[table])
            )
            for table in self.tables.values()
        ]
        if callbacks:
            await asyncio.wait(callbacks)
        if self.app.consumer_generation_id != generation_id:
            self.log.warning("Recovery rebalancing again")
            return
        await self._seek_then_resume_streams()
        await self._start_streams(standbys_ready=not self.app.assignor.assigned_standbys())


class QuartierTableManager(TableManager):
    """Faust's table manager with :class:`SeekFirstRecovery`."""

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = SeekFirstRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery


class QuartierApp(faust.App):
    """A Faust app that knows Quartier's settings, creates its topics first and picks the transport."""

    #: What a rebalance (False) or a stop (True) waits for, in place of Faust's wait until every
    #: message taken is acknowledged (``stream_wait_empty``). Set by an agent that acknowledges
    #: messages only once their outputs are durable (:mod:`streams.acks`): on a rebalance Faust's
    #: wait would last as long as InfluxDB is away, and hold up the group's rebalance with it.
    settle: Callable[[bool], Awaitable[None]] | None = None

    def __init__(
        self, app_id: str, *, settings: Settings, extra_topics: Mapping[str, int] | None = None, **options: Any
    ) -> None:
        super().__init__(app_id, **options)
        self.quartier_settings = settings
        self.extra_topics = dict(extra_topics or {})

    @cached_property
    def flow_control(self) -> FlowControlEvent:
        return SteadyFlowControl(loop=self.loop)

    async def _consumer_wait_empty(self, consumer: Any, logger: Any) -> None:
        if self.settle is None:
            await super()._consumer_wait_empty(consumer, logger)
            return
        logger.info("Settle the streams...")
        # The app's own stop sets should_stop before it stops the consumer; a rebalance does not.
        await self.settle(self.should_stop)

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
        TableManager=QuartierTableManager,
    )


def run_worker(app: faust.App, *, loglevel: str = "info") -> None:
    """Runs ``app``'s worker in the foreground until SIGTERM or SIGINT, then stops it cleanly."""
    worker = faust.Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()
