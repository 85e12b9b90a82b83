"""Erasure as a saga: ``erasure_requested`` -> each store erases and reports -> ``erasure_completed``.

The saga's log is ``privacy.erasures`` (keyed by household): an ``ErasureRequested``, one
``ErasureStepDone`` per store with what it removed, then ``ErasureCompleted`` with every store's
report. :func:`run_pending` folds that log and finishes every erasure not completed, skipping the
steps already done; every step is idempotent, so a saga killed at any point and run again ends the
same. Nothing personal is in these records (a household id, store names and counts).

What the saga erases is resolved from the accounts' fold when it runs: the household's meter and
its members' accounts. The steps, in order (the accounts' own step last, because until then its fold
still says which meter and which accounts were the household's):

1. ``notifier``: the meter's owner rows, the household's and members' users, their devices and pending
   notifications (SQLite: ``secure_delete``, then ``VACUUM`` and a WAL checkpoint, so no file keeps them);
2. ``market``: the meter left out of the market's participant row (the market's log keeps a pseudonymous
   participant id for accounting);
3. ``influx``: ``DROP SERIES WHERE meter = ...``: every series of the meter, in every measurement and policy;
4. ``spool``: the meter's lines taken out of the InfluxDB writer's spool files;
5. ``faust``: a tombstone for the meter in every partition of the alert engine's changelog;
6. ``topics``: tombstones for the meter on the compacted ``alerts.rules`` and ``meter.resolution``;
7. ``keys``: the household's and its members' data keys destroyed (``quartier.sealing``), each with its
   ``DataKeyErased`` record: every sealed field of theirs, in every copy of the log, is noise from now on;
8. ``accounts``: ``HouseholdErased`` on ``accounts.events`` (the fold drops the household, its pairing,
   so the meter can be paired again, its accounts, devices, preferences, invitations), the read models
   written and their database vacuumed; the step ends once every process following the log (each API
   process's accounts service, ``accounts/followers.py``) has applied it, so after ``erasure_completed``
   no process authenticates the erased accounts.

The saga's own reads are in the access log (actor ``erasure``, why ``erasure``): one entry per
erasure (its reference is the erasure id), however many times the saga is resumed or retried.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
from aiokafka import AIOKafkaProducer

from quartier import events as ev
from quartier import kafka, topics
from quartier.influx import InfluxError, influx_query, quote_string
from quartier.sealing import KeyStore, publish_erasure
from quartier.settings import Settings

log = logging.getLogger(__name__)

STEPS: tuple[ev.StoreName, ...] = ("notifier", "market", "influx", "spool", "faust", "topics", "keys", "accounts")
_decoder = msgspec.json.Decoder(ev.PrivacyEvent)


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class Target:
    """What belongs to the household, from the accounts' fold."""

    household: str
    meters: list[str] = field(default_factory=list)
    accounts: list[str] = field(default_factory=list)


@dataclass
class Saga:
    erasure: str
    household: str
    requested_ms: int
    done: dict[str, ev.StoreErasure] = field(default_factory=dict)
    completed: bool = False


def fold(records: list[object]) -> dict[str, Saga]:
    """The sagas of ``privacy.erasures``, by erasure id."""
    sagas: dict[str, Saga] = {}
    for record in records:
        if isinstance(record, ev.ErasureRequested):
            sagas.setdefault(record.erasure, Saga(record.erasure, record.household, record.at_ms))
        elif isinstance(record, ev.ErasureStepDone) and record.erasure in sagas:
            sagas[record.erasure].done.setdefault(record.step.store, record.step)
        elif isinstance(record, ev.ErasureCompleted) and record.erasure in sagas:
            sagas[record.erasure].completed = True
    return sagas


# --- SQLite files ---------------------------------------------------------------------------------


def sqlite_path(url: str) -> Path | None:
    return Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None


def sqlite_delete(path: Path, statements: list[tuple[str, tuple[object, ...]]]) -> dict[str, int]:
    """Runs DELETE/UPDATE statements with ``secure_delete``, then VACUUM and truncates the WAL."""
    counts: dict[str, int] = {}
    if not path.exists():
        return counts
    db = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        db.execute("PRAGMA secure_delete=ON")
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement, parameters in statements:
                table = statement.split()[2] if statement.startswith("DELETE") else statement.split()[1]
                try:
                    changed = db.execute(statement, parameters).rowcount
                except sqlite3.OperationalError as exc:
                    if "no such table" in str(exc):
                        continue
                    raise
                counts[table] = counts.get(table, 0) + max(changed, 0)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        vacuum(db)
    finally:
        db.close()
    return counts


def vacuum(db: sqlite3.Connection) -> None:
    """Rewrites the file without free pages and empties the WAL: deleted rows are in no file."""
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.execute("VACUUM")
    for _ in range(50):
        busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if not busy:
            return
        time.sleep(0.1)
    log.warning("the WAL could not be truncated (a reader holds it); it is on the next checkpoint")


def placeholders(values: list[str]) -> str:
    return ",".join("?" * len(values)) or "NULL"


# --- the stores -----------------------------------------------------------------------------------


class Stores:
    """Each store's erasure; every method is idempotent and returns counts of what it removed."""

    def __init__(self, settings: Settings, keys: KeyStore | None = None) -> None:
        self.settings = settings
        self.key_store = keys or KeyStore.open(settings)

    async def run(self, step: str, target: Target) -> dict[str, int]:
        return await getattr(self, step)(target)

    async def notifier(self, target: Target) -> dict[str, int]:
        path = sqlite_path(self.settings.sqlite_url("notifier"))
        if path is None:
            return {}
        meters = target.meters
        return await asyncio.to_thread(self._notifier_rows, path, meters, [target.household, *target.accounts])

    @staticmethod
    def _notifier_rows(path: Path, meters: list[str], known_users: list[str]) -> dict[str, int]:
        users = set(known_users) | set(meters)  # a meter registered without a user is its own user
        if path.exists():
            db = sqlite3.connect(path, timeout=30)
            try:
                if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'notifier_meter'").fetchone():
                    users |= {row[0] for row in db.execute(
                        f"SELECT user_id FROM notifier_meter WHERE meter IN ({placeholders(meters)})", meters)}
            finally:
                db.close()
        people = sorted(users)
        return sqlite_delete(path, [
            (f"DELETE FROM notifier_meter WHERE meter IN ({placeholders(meters)}) OR user_id IN ({placeholders(people)})",
             (*meters, *people)),
            (f"DELETE FROM notifier_device WHERE user_id IN ({placeholders(people)})", tuple(people)),
            (f"DELETE FROM notifier_pending WHERE user_id IN ({placeholders(people)})", tuple(people)),
            (f"DELETE FROM notifier_user WHERE id IN ({placeholders(people)})", tuple(people)),
        ])

    async def market(self, target: Target) -> dict[str, int]:
        path = sqlite_path(self.settings.sqlite_url("market"))
        if path is None:
            return {}
        return await asyncio.to_thread(sqlite_delete, path, [
            ("UPDATE market_participant SET meter = '' WHERE participant = ?", (target.household,)),
        ])

    async def influx(self, target: Target) -> dict[str, int]:
        series = 0
        for meter in target.meters:
            condition = f'"meter" = {quote_string(meter)}'
            try:
                rows = await asyncio.to_thread(influx_query, self.settings.influx, f"SHOW SERIES WHERE {condition}")
            except InfluxError as error:
                if "database not found" in str(error):
                    return {"series": 0}  # nothing was ever written there
                raise  # InfluxDB unreachable: the step fails, the saga resumes it later
            series += len(rows)
            await asyncio.to_thread(influx_query, self.settings.influx, f"DROP SERIES WHERE {condition}")
        return {"series": series}

    async def spool(self, target: Target) -> dict[str, int]:
        return await asyncio.to_thread(self._spool_lines, target.meters)

    def _spool_lines(self, meters: list[str]) -> dict[str, int]:
        root = self.settings.state_dir / "influx-spool"
        if not meters or not root.exists():
            return {"lines": 0}
        pattern = re.compile(rb"(^|,)meter=(" + b"|".join(re.escape(m.encode()) for m in meters) + rb")(,| )")
        removed = 0
        for path in sorted(root.glob("*/*.lp")):
            lines = path.read_bytes().split(b"\n")
            kept = [line for line in lines if not pattern.search(line.split(b" ", 1)[0])]
            if len(kept) == len(lines):
                continue
            removed += len(lines) - len(kept)
            # The name carries the points count (streams/influx_spool.py): rename with the new count.
            stem = path.name.rsplit("-", 1)[0]
            if kept:
                replacement = path.with_name(f"{stem}-{len(kept)}.lp")
                temporary = path.with_name(f".{path.name}.erasing")
                temporary.write_bytes(b"\n".join(kept))
                os.replace(temporary, replacement)
                if replacement != path:
                    path.unlink()
            else:
                path.unlink()
        return {"lines": removed}

    async def faust(self, target: Target) -> dict[str, int]:
        app_id = self.settings.privacy.streams_app_id or f"{self.settings.kafka.topic_prefix}quartier-streams"
        changelog = f"{app_id}-alert_state-changelog"
        partitions = (await kafka.topic_partitions(self.settings)).get(changelog)
        if not partitions or not target.meters:
            return {"tombstones": 0}
        sent = 0
        async with self._producer() as producer:
            for meter in target.meters:
                for partition in range(partitions):
                    await producer.send(changelog, None, key=meter.encode(), partition=partition)
                    sent += 1
            await producer.flush()
        return {"tombstones": sent}

    async def topics(self, target: Target) -> dict[str, int]:
        sent = 0
        existing = await kafka.topic_partitions(self.settings)
        async with self._producer() as producer:
            for declared in (topics.ALERTS_RULES, topics.METER_RESOLUTION):
                name = self.settings.topic(declared.name)
                if name not in existing:
                    continue
                for meter in target.meters:
                    await producer.send(name, None, key=meter.encode())
                    sent += 1
            await producer.flush()
        return {"tombstones": sent}

    async def keys(self, target: Target) -> dict[str, int]:
        owners = [target.household, *target.accounts]
        now = wall_ms()
        had = await asyncio.to_thread(self.key_store.forget, owners, now)
        for owner in owners:
            await publish_erasure(self.settings, owner, now)
        return {"keys": len(had)}

    async def accounts(self, target: Target) -> dict[str, int]:
        from accounts import followers
        from accounts.log import AccountsLog
        from accounts.readmodel import ReadModel
        from accounts.sealed import Sealing
        from accounts.service import fold as fold_accounts
        from quartier.sealing import Sealer

        state = await fold_accounts(self.settings)
        touched = 0
        if target.household in state.households or any(a in state.accounts for a in target.accounts):
            accounts_log = AccountsLog(self.settings, Sealing(Sealer(self.key_store)))
            await accounts_log.start()
            try:
                await accounts_log.append([(target.household, ev.HouseholdErased(
                    household=target.household, accounts=tuple(target.accounts), at_ms=wall_ms()))])
            finally:
                await accounts_log.stop()
            state = await fold_accounts(self.settings)
        url = self.settings.sqlite_url("accounts")
        read_model = ReadModel(url)
        try:
            # Entities of the household are gone from the state: the write deletes their rows.
            refs = [("household", target.household), *[("account", a) for a in target.accounts]]
            refs += [(kind, key) for kind, key in self._household_rows(read_model, target)]
            await asyncio.to_thread(read_model.write, state, refs)
            touched = len(refs)
            # Done only once every process serving accounts has applied the erasure (and what came
            # before it): none authenticates the erased accounts any more (accounts/followers.py).
            await followers.wait_applied(read_model.engine, state.position)
        finally:
            read_model.close()
        path = sqlite_path(url)
        counts: dict[str, int] = {}
        if path is not None and path.exists():
            # Sessions and refresh tokens are not on the log (accounts/readmodel.py): deleted here.
            members = list(target.accounts)
            counts = await asyncio.to_thread(sqlite_delete, path, [
                (f"DELETE FROM accounts_credential WHERE account IN ({placeholders(members)})", tuple(members)),
            ])
        return {"rows": touched, "credentials": counts.get("accounts_credential", 0)}

    @staticmethod
    def _household_rows(read_model: object, target: Target) -> list[tuple[str, str]]:
        from sqlalchemy import or_, select

        from accounts.state import TABLES

        members = sorted(target.accounts)
        t = TABLES
        queries = [
            ("pairing", select(t["pairing"].c.meter).where(t["pairing"].c.household == target.household)),
            ("device", select(t["device"].c.device).where(t["device"].c.household == target.household)),
            ("invite", select(t["invite"].c.code_sha256).where(t["invite"].c.household == target.household)),
            ("preferences", select(t["preferences"].c.account).where(
                or_(t["preferences"].c.household == target.household, t["preferences"].c.account.in_(members)))),
            ("email_token", select(t["email_token"].c.token_sha256).where(t["email_token"].c.account.in_(members))),
        ]
        refs: list[tuple[str, str]] = []
        with read_model.engine.connect() as connection:  # type: ignore[attr-defined]
            for kind, query in queries:
                refs += [(kind, key) for (key,) in connection.execute(query)]
        return refs

    def _producer(self):  # type: ignore[no-untyped-def]
        settings = self.settings

        class _Open:
            async def __aenter__(self) -> AIOKafkaProducer:
                self.producer = AIOKafkaProducer(**kafka.producer_config(settings))
                await self.producer.start()
                return self.producer

            async def __aexit__(self, *exc: object) -> None:
                await self.producer.stop()

        return _Open()


# --- the saga -------------------------------------------------------------------------------------


class ErasureSaga:
    def __init__(self, settings: Settings, stores: Stores | None = None, *, clock=wall_ms) -> None:  # type: ignore[no-untyped-def]
        self.settings = settings
        self.stores = stores or Stores(settings)
        self.clock = clock
        self.topic = settings.topic(topics.PRIVACY_ERASURES.name)

    async def _publish(self, record: msgspec.Struct, household: str) -> None:
        producer = AIOKafkaProducer(**kafka.producer_config(self.settings))
        await producer.start()
        try:
            await producer.send_and_wait(self.topic, ev.encode(record), key=household.encode())
        finally:
            await producer.stop()

    async def sagas(self) -> dict[str, Saga]:
        return fold(await kafka.read_all(self.settings, self.topic, _decoder.decode))

    async def request(self, household: str, by: str = "cli") -> str:
        """Appends ``erasure_requested``; returns the erasure id (run it with :meth:`run`)."""
        await kafka.ensure_topics(self.settings, [topics.PRIVACY_ERASURES])
        erasure = f"er_{secrets.token_hex(8)}"
        await self._publish(ev.ErasureRequested(erasure=erasure, household=household, by=by, at_ms=self.clock()), household)
        return erasure

    async def target(self, household: str) -> Target:
        from accounts.service import fold as fold_accounts

        state = await fold_accounts(self.settings)
        found = state.households.get(household)
        meters = sorted({p.meter for p in state.pairings.values() if p.household == household}
                        | ({found.meter} if found is not None and found.meter else set()))
        accounts = sorted(a.account for a in state.accounts.values() if a.household == household)
        return Target(household, meters, accounts)

    async def run(self, erasure: str, *, stop_after: str | None = None) -> ev.ErasureCompleted | None:
        """Runs (or resumes) one erasure to ``erasure_completed``; ``stop_after`` (tests) stops after that step."""
        saga = (await self.sagas()).get(erasure)
        if saga is None:
            raise LookupError(f"erasure: no erasure {erasure!r} was requested")
        if saga.completed:
            return None
        target = await self.target(saga.household)
        if any(step not in saga.done for step in STEPS[:-1]):
            # Every run (the first, a resumed one after a crash, each retry of the API's background
            # task) reads the household, but the log says once that this erasure read it: the entry
            # is keyed by the erasure id. Appending per run put two entries for one erasure.
            self._log_read(saga.household, erasure)
        for step in STEPS:
            if step in saga.done:
                continue
            erased = await self.stores.run(step, target)
            report = ev.StoreErasure(store=step, erased=erased)
            await self._publish(ev.ErasureStepDone(erasure=erasure, household=saga.household, step=report,
                                                   at_ms=self.clock()), saga.household)
            saga.done[step] = report
            log.info("erasure %s: %s %s", erasure, step, erased)
            if step == stop_after:
                return None
        completed = ev.ErasureCompleted(
            erasure=erasure, household=saga.household, stores=[saga.done[s] for s in STEPS],
            requested_ms=saga.requested_ms, at_ms=self.clock(),
        )
        await self._publish(completed, saga.household)
        return completed

    def _log_read(self, household: str, erasure: str) -> None:
        from quartier.access_log import AccessLog

        access = AccessLog.open(self.settings)
        try:
            access.append_once(actor="erasure", actor_role="system", household=household, what="profile",
                               why="erasure", reference=erasure)
        finally:
            access.engine.dispose()

    async def run_pending(self) -> list[ev.ErasureCompleted]:
        """Finishes every erasure requested and not completed (at start, after a crash)."""
        done = []
        for erasure, saga in (await self.sagas()).items():
            if not saga.completed:
                completed = await self.run(erasure)
                if completed is not None:
                    done.append(completed)
        return done
