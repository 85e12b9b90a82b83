"""The access log: every read of a household's personal data by someone other than its members.

In the core because every reader writes it: the privacy package (its surface, the export and erasure
jobs) and the operator console (its exports and support reads), which may not import each other
(docs/architecture.md). Its database is the privacy database (``quartier.sql.privacy_engine``).

Each entry says who read (the reader's account id and role: staff, or the export job), when, what (a
category of the data map: :data:`CATEGORIES`) and why (a reason code, and optionally a
ticket reference), about which household (its pseudonymous id). There is no personal data in clear in
an entry: no name, no email, no meter address, no free text (the reference is a short identifier), so
erasing a household never touches the log, and the chain still verifies after it.

Entries form a hash chain: each entry's hash is SHA-256 over its fields and the previous entry's hash,
and its sequence number follows the previous one. :func:`verify` recomputes the chain and finds an
entry changed (its hash), removed (a gap in the sequence, or a previous hash that no longer matches),
reordered (the same), or cut off at the end (the head record, kept apart, names the last entry).

The interface other surfaces (the operator console, exports) call::

    log = AccessLog(privacy_engine(settings, AccessLog.TABLES))    # or AccessLog.open(settings)
    log.record_read(principal, household="hh_...", what="readings", why="support_ticket", reference="T-1234")
    #   -> the entry, or None when the principal is a member of that household (not logged)
    log.record_reads(principal, ["hh_a", "hh_b"], what="telemetry", why="operations", reference="export:csv:...")
    #   -> how many entries: one per household but the reader's own, one transaction, one time
    log.entries(household="hh_...")                                # what the household sees: who looked
    log.recent(limit=100)                                          # staff reads, newest first, an export as one
    log.verify()                                                   # -> Verification(ok, entries, head, problem)

``principal`` is anything with ``subject``, ``roles`` and ``household`` (``api.principal.Principal``).
``quartier privacy verify-log`` runs :func:`verify` from the command line (exit status 1 when broken).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, Protocol, get_args

import msgspec
from sqlalchemy import Engine, String, case, cast, func
from sqlmodel import Field, Session, SQLModel, col, select

from quartier.settings import Settings
from quartier.sql import BigInt, privacy_engine

GENESIS = "0" * 64

#: What a household's data is filed under, in its export and in this log (``privacy.datamap`` files
#: every place of the data map under one of them).
CATEGORIES = frozenset({
    "profile", "contacts", "devices", "readings", "alerts", "rules", "deliveries", "trades", "consent",
    "telemetry", "access_log",
})
#: The reference of every entry an export wrote starts with this: ``export:<format>:<id>``. The
#: entries of one export share it, so the staff's view counts them as one read of many households.
EXPORT_REFERENCE = "export:"

#: Why a household's data was read: a closed list, so no free text (which could be personal) gets in.
Reason = Literal[
    "support_ticket",  # a member asked support for help
    "operations",  # fleet operations on the meter or module (firmware, pairing, faults)
    "fraud_investigation",
    "legal_request",  # a request from an authority
    "export",  # the portability export the household asked for
    "erasure",  # the erasure saga reading what it must erase
]
REASONS: tuple[str, ...] = get_args(Reason)
#: The reasons a member of staff gives (the other two are the export's and the erasure's jobs).
STAFF_REASONS: tuple[str, ...] = ("support_ticket", "operations", "fraud_investigation", "legal_request")


class Reader(Protocol):
    subject: str
    roles: frozenset[str]
    household: str | None


class AccessEntry(SQLModel, table=True):
    """One read, in the chain. The row is the entry; ``hash`` covers every other column."""

    __tablename__ = "privacy_access_log"

    seq: int = Field(primary_key=True)
    at_ms: int = Field(sa_type=BigInt)
    actor: str  # the reader's account id ("acct_..."), or "export" / "erasure" for those jobs
    actor_role: str  # "operator", "support", "export", "system"
    household: str = Field(index=True)
    what: str
    why: str
    reference: str = ""  # a ticket or request id, [A-Za-z0-9_.:-]{0,64}
    prev_hash: str
    hash: str

    def computed_hash(self) -> str:
        return entry_hash(
            self.seq, self.at_ms, self.actor, self.actor_role, self.household, self.what, self.why,
            self.reference, self.prev_hash,
        )


class AccessLogHead(SQLModel, table=True):
    """The last entry's sequence number and hash, so an entry cut off the end is noticed."""

    __tablename__ = "privacy_access_log_head"

    id: int = Field(default=1, primary_key=True)
    seq: int
    hash: str


def entry_hash(*fields: object) -> str:
    return hashlib.sha256(msgspec.json.encode(list(fields))).hexdigest()


@dataclass(frozen=True)
class Verification:
    ok: bool
    entries: int
    head: str  # the last entry's hash (GENESIS for an empty log)
    problem: str | None = None  # what broke, naming the first entry where it did
    seq: int | None = None

    def as_dict(self) -> dict[str, object]:
        return {"ok": self.ok, "entries": self.entries, "head": self.head, "problem": self.problem, "seq": self.seq}


@dataclass(frozen=True)
class StaffRead:
    """One read by staff as the console lists it: an entry, or every entry of one export together."""

    seq: int  # the last entry's
    at_ms: int
    actor: str
    actor_role: str
    what: str
    why: str
    reference: str
    households: int
    household: str | None  # when it was one household's


class AccessLogError(ValueError):
    """An entry refused: the message names the field and why."""


_REFERENCE_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-")


class AccessLog:
    TABLES = [AccessEntry, AccessLogHead]

    def __init__(self, engine: Engine, *, clock=lambda: time.time_ns() // 1_000_000) -> None:  # type: ignore[no-untyped-def]
        self.engine = engine
        self.clock = clock

    @classmethod
    def open(cls, settings: Settings) -> AccessLog:
        return cls(privacy_engine(settings, cls.TABLES))

    def record_read(
        self, reader: Reader, *, household: str, what: str, why: str, reference: str = ""
    ) -> AccessEntry | None:
        """Logs a read of ``household``'s ``what`` by ``reader``; None (nothing logged) for its own members."""
        if reader.household is not None and reader.household == household:
            return None
        role = next((r for r in ("operator", "support") if r in reader.roles), "system")
        return self.append(actor=reader.subject, actor_role=role, household=household, what=what, why=why,
                           reference=reference)

    def record_reads(
        self, reader: Reader, households: Iterable[str], *, what: str, why: str, reference: str = ""
    ) -> int:
        """Logs one read of ``what`` of each of ``households`` (an export's), but the reader's own household,
        in one transaction at one time; returns how many entries were written."""
        others = [h for h in dict.fromkeys(households) if h != reader.household]
        if not others:
            return 0
        role = next((r for r in ("operator", "support") if r in reader.roles), "system")
        return len(self._append(reader.subject, role, others, what, why, reference))

    def append(self, *, actor: str, actor_role: str, household: str, what: str, why: str, reference: str = "") -> AccessEntry:
        return AccessEntry(**self._append(actor, actor_role, [household], what, why, reference)[0])

    def append_once(self, *, actor: str, actor_role: str, household: str, what: str, why: str, reference: str) -> AccessEntry:
        """Like :meth:`append`, but a job that may run its read again (a resumed or retried saga) names
        it by ``reference``: when an entry of that actor, household, what, why and reference is in the
        log, that entry is returned and nothing is appended. The check is in the append's own
        transaction (the head's lock), so two runs at once still write one entry."""
        if not reference:
            raise AccessLogError("reference: append_once needs the id of the read it must not repeat")
        return AccessEntry(**self._append(actor, actor_role, [household], what, why, reference, once=True)[0])

    def _append(
        self, actor: str, actor_role: str, households: list[str], what: str, why: str, reference: str,
        *, once: bool = False,
    ) -> list[dict[str, object]]:
        if what not in CATEGORIES:
            raise AccessLogError(f"what: must be one of the data map's categories {sorted(CATEGORIES)}, got {what!r}")
        if why not in REASONS:
            raise AccessLogError(f"why: must be one of {list(REASONS)}, got {why!r}")
        if len(reference) > 64 or not set(reference) <= _REFERENCE_CHARS:
            raise AccessLogError("reference: at most 64 letters, digits or _.:- (an id, never free text)")
        for name, value in (("actor", actor), ("actor_role", actor_role), *(("household", h) for h in households)):
            if not value or len(value) > 128:
                raise AccessLogError(f"{name}: must be 1 to 128 characters")
        at_ms = self.clock()
        with Session(self.engine) as session, session.begin():
            head = session.get(AccessLogHead, 1, with_for_update=True)
            if once:
                e = AccessEntry
                found = session.exec(select(e).where(
                    e.actor == actor, e.household == households[0], e.what == what, e.why == why,
                    e.reference == reference).order_by(col(e.seq)).limit(1)).first()
                if found is not None:
                    return [found.model_dump()]
            seq, prev = (head.seq, head.hash) if head else (0, GENESIS)
            # Plain rows and one multi-row INSERT: an export writes thousands, and building an ORM
            # object per entry cost more than the export itself (bench.console: export_access_log_s).
            rows: list[dict[str, object]] = []
            for household in households:
                seq += 1
                digest = entry_hash(seq, at_ms, actor, actor_role, household, what, why, reference, prev)
                rows.append({"seq": seq, "at_ms": at_ms, "actor": actor, "actor_role": actor_role, "household": household,
                             "what": what, "why": why, "reference": reference, "prev_hash": prev, "hash": digest})
                prev = digest
            session.execute(AccessEntry.__table__.insert(), rows)  # type: ignore[attr-defined]
            if head is None:
                session.add(AccessLogHead(id=1, seq=seq, hash=prev))
            else:
                head.seq, head.hash = seq, prev
                session.add(head)
        return rows

    def recent(self, limit: int = 100) -> list[StaffRead]:
        """Staff reads (operator, support), newest first; the entries of one export are one item."""
        e = AccessEntry
        # An export's entries share their reference; any other entry stands alone (its own sequence number).
        group = case((col(e.reference).startswith(EXPORT_REFERENCE), e.reference), else_=cast(e.seq, String))
        statement = (
            select(func.max(e.seq), func.min(e.at_ms), e.actor, e.actor_role, e.what, e.why, e.reference,
                   func.count(), func.min(e.household))
            .where(col(e.actor_role).in_(("operator", "support")))
            .group_by(group, e.actor, e.actor_role, e.what, e.why, e.reference)
            .order_by(func.max(e.seq).desc())
            .limit(limit)
        )
        with Session(self.engine) as session:
            return [StaffRead(seq=seq, at_ms=at, actor=actor, actor_role=role, what=what, why=why, reference=ref,
                              households=n, household=one if n == 1 else None)
                    for seq, at, actor, role, what, why, ref, n, one in session.exec(statement)]

    def entries(self, household: str | None = None) -> list[AccessEntry]:
        with Session(self.engine) as session:
            statement = select(AccessEntry).order_by(AccessEntry.seq)  # type: ignore[arg-type]
            if household is not None:
                statement = statement.where(AccessEntry.household == household)
            return list(session.exec(statement))

    def verify(self) -> Verification:
        """Recomputes the chain; the first entry changed, removed, reordered or cut off is named."""
        expected_prev, expected_seq, count = GENESIS, 1, 0
        with Session(self.engine) as session:
            head = session.get(AccessLogHead, 1)
            # Rows, not ORM objects: the chain is read whole, and an export adds one entry per household.
            rows = session.connection().execute(AccessEntry.__table__.select().order_by(AccessEntry.seq))  # type: ignore[attr-defined]
            for entry in rows:
                count += 1
                if entry.seq != expected_seq:
                    return Verification(False, count, expected_prev,
                                        f"entry {expected_seq} is missing (next is {entry.seq})", expected_seq)
                if entry.prev_hash != expected_prev:
                    return Verification(False, count, expected_prev,
                                        f"entry {entry.seq} does not follow entry {entry.seq - 1} "
                                        "(removed, reordered or altered before it)", entry.seq)
                if AccessEntry.computed_hash(entry) != entry.hash:  # a row has the entry's fields as attributes
                    return Verification(False, count, expected_prev, f"entry {entry.seq} was altered", entry.seq)
                expected_prev, expected_seq = entry.hash, entry.seq + 1
        last_seq = expected_seq - 1
        if head is None and count:
            return Verification(False, count, expected_prev, "the head record is missing", None)
        if head is not None and (head.seq, head.hash) != (last_seq, expected_prev):
            return Verification(False, count, expected_prev,
                                f"the log ends at entry {last_seq} but its head names entry {head.seq} "
                                "(entries cut off the end, or the head altered)", last_seq + 1)
        return Verification(True, count, expected_prev)
