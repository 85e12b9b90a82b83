"""The accounts service: the writer of ``accounts.events``, and the state and read models it keeps.

Write path, as the market's: the service folds the whole log at start. A command takes the lock,
is checked against the state (:mod:`accounts.commands`), is appended as one record batch, and once
the broker has it is folded in and written to the read models (with the position it reflects)
before the answer goes out: read-your-writes without waiting on a consumer.

Other writers exist (``quartier accounts grant``, ``quartier notifier register``, a second API
process): a follower task keeps reading the log and folds what it did not write itself, and an
append whose offset is not where the state expects first folds the events before it. The fold
skips an event that lost a race (:mod:`accounts.state`), so every process agrees with a rebuild.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition

from quartier import events as ev
from quartier.settings import Settings

from accounts import commands, followers
from accounts.log import PARTITION, AccountsLog, replay
from accounts.readmodel import ReadModel
from accounts.state import AccountsState, EntityRef

log = logging.getLogger(__name__)

Decide = Callable[[AccountsState, int], Sequence[msgspec.Struct]]


def system_ms() -> int:
    return int(time.time() * 1000)


async def fold(settings: Settings) -> AccountsState:
    """The accounts state after every event of the log."""
    state = AccountsState()
    async for entry in replay(settings):
        state.apply(entry.event, entry.offset)
    return state


async def rebuild(settings: Settings) -> dict[str, int]:
    """Drops and rewrites the read models from the whole log; returns what they now hold."""
    state = await fold(settings)
    read_model = ReadModel(settings.sqlite_url("accounts"))
    try:
        await asyncio.to_thread(read_model.rebuild, state)
    finally:
        read_model.close()
    counts = {kind: len(table) for kind, table in state.tables().items()}
    counts["events"] = state.position
    counts["skipped"] = len(state.skipped)
    return counts


class AccountsService:
    def __init__(self, settings: Settings, *, clock: Callable[[], int] = system_ms, follow_interval_s: float = 1.0,
                 extra_tables: Sequence[object] = ()) -> None:
        self.settings = settings
        self.clock = clock
        self.read_model = ReadModel(settings.sqlite_url("accounts"), [*followers.TABLES, *extra_tables])  # type: ignore[list-item]
        self.log = AccountsLog(settings)
        self.state = AccountsState()
        self.lock = asyncio.Lock()
        self.follow_interval_s = follow_interval_s
        self._follower: asyncio.Task[None] | None = None
        # This process's row in accounts_follower (accounts/followers.py), while it follows the log.
        self.follower_id = followers.new_id()

    # --- life cycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.log.start()
        if self.follow_interval_s:
            # Registered before the fold, at offset 0: a writer waiting on followers waits for this one too.
            await asyncio.to_thread(followers.report, self.read_model.engine, self.follower_id, 0, followers.wall_ms())
        stored = await asyncio.to_thread(self.read_model.position)
        touched: dict[EntityRef, None] = {}
        async for entry in replay(self.settings, sealing=self.log.sealing):
            refs = self.state.apply(entry.event, entry.offset)
            if entry.offset >= stored:
                touched.update(dict.fromkeys(refs))
        if stored > self.state.position:
            log.warning("accounts read models are ahead of the log (%d > %d): rebuilding them", stored, self.state.position)
            await asyncio.to_thread(self.read_model.rebuild, self.state)
        else:
            await asyncio.to_thread(self.read_model.write, self.state, list(touched))
        if self.follow_interval_s:
            self._follower = asyncio.create_task(self._follow(), name="accounts-follower")
        log.info("accounts state loaded at offset %d (%d skipped events)", self.state.position, len(self.state.skipped))

    async def stop(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
            self._follower = None
            await asyncio.to_thread(followers.forget, self.read_model.engine, self.follower_id)
        async with self.lock:
            pass
        await self.log.stop()
        self.read_model.close()

    # --- commands --------------------------------------------------------------------------------

    def now_ms(self) -> int:
        return self.clock()

    async def execute(self, decide: Decide) -> list[msgspec.Struct]:
        """Checks a command against the state, appends its events, folds and projects them."""
        async with self.lock:
            now = self.clock()
            events = list(decide(self.state, now))
            if not events:
                return []
            keyed = []
            # Keys as the state stands before each event: an account's first events are keyed by it.
            for event in events:
                keyed.append((commands.key_of(self.state, event), event))
            first = await self.log.append(keyed)
            if first != self.state.position:
                log.info("accounts.events offsets %d..%d came from another writer; folding them first", self.state.position, first - 1)
                await self._catch_up(until=first)
            touched: list[EntityRef] = []
            for i, event in enumerate(events):
                touched += self.state.apply(event, first + i)
            await asyncio.to_thread(self.read_model.write, self.state, touched)
            return events

    async def _catch_up(self, until: int | None = None) -> None:
        touched: list[EntityRef] = []
        async for entry in replay(self.settings, self.state.position, sealing=self.log.sealing):
            if until is not None and entry.offset >= until:
                break
            touched += self.state.apply(entry.event, entry.offset)
        if touched or until is not None:
            await asyncio.to_thread(self.read_model.write, self.state, touched)

    async def _follow(self) -> None:
        """Folds events other writers appended, as they arrive, and says in ``accounts_follower`` which
        offset the state reflects (every batch, and every follow interval when idle)."""
        topic = self.log.topic
        consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.kafka.bootstrap, enable_auto_commit=False)
        await consumer.start()
        tp = TopicPartition(topic, PARTITION)
        decoder = ev.decoder(ev.AccountsEvent)
        try:
            consumer.assign([tp])
            consumer.seek(tp, self.state.position)
            while True:
                batch = await consumer.getmany(tp, timeout_ms=int(self.follow_interval_s * 1000))
                records = batch.get(tp, [])
                async with self.lock:
                    before = self.state.position
                    touched: list[EntityRef] = []
                    for record in records:
                        if record.offset < self.state.position:
                            continue  # this service wrote and folded it already
                        if record.offset > self.state.position:
                            consumer.seek(tp, self.state.position)
                            break
                        event = self.log.sealing.open(decoder.decode(record.value))  # type: ignore[arg-type]
                        touched += self.state.apply(event, record.offset)
                    if self.state.position != before:
                        await asyncio.to_thread(self.read_model.write, self.state, touched)
                    applied = self.state.position
                await asyncio.to_thread(followers.report, self.read_model.engine, self.follower_id, applied,
                                        followers.wall_ms())
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("the accounts follower stopped; commands still fold other writers' events when they append")
        finally:
            await consumer.stop()
