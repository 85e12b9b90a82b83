"""The access log: reads by non-members are entries; changing, removing or reordering one is detected."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from quartier.access_log import AccessLog, AccessLogError, StaffRead
from tests.support import isolated_settings, settings_env

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Person:
    subject: str
    roles: frozenset[str] = field(default_factory=frozenset)
    household: str | None = None


OPERATOR = Person("acct_op1", frozenset({"operator"}))
SUPPORT = Person("acct_sup1", frozenset({"support"}))
MEMBER = Person("acct_m1", household="hh_a")


@pytest.fixture
def log(tmp_path: Path) -> AccessLog:
    settings = isolated_settings(tmp_path / "state")
    clock = iter(range(1_700_000_000_000, 1_800_000_000_000, 1000))
    access = AccessLog.open(settings)
    access.clock = lambda: next(clock)
    access.settings = settings  # type: ignore[attr-defined]
    return access


def database(log: AccessLog) -> Path:
    return Path(log.engine.url.database)  # type: ignore[arg-type]


def tamper(log: AccessLog, statement: str) -> None:
    log.engine.dispose()
    with sqlite3.connect(database(log)) as db:
        db.executescript(statement)


def verify_cli(log: AccessLog) -> tuple[int, dict]:
    settings = log.settings  # type: ignore[attr-defined]
    done = subprocess.run(
        [sys.executable, "-m", "quartier.cli", "privacy", "verify-log", "--json"],
        env={**os.environ, **settings_env(settings)}, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    return done.returncode, json.loads(done.stdout)


def three_reads(log: AccessLog) -> None:
    log.record_read(OPERATOR, household="hh_a", what="readings", why="operations", reference="FW-2026-11")
    log.record_read(SUPPORT, household="hh_a", what="profile", why="support_ticket", reference="T-1234")
    log.record_read(SUPPORT, household="hh_b", what="alerts", why="support_ticket", reference="T-1235")


def test_reads_by_others_are_entries_reads_by_members_are_not(log: AccessLog) -> None:
    three_reads(log)
    assert log.record_read(MEMBER, household="hh_a", what="readings", why="support_ticket") is None
    seen = [(e.seq, e.actor, e.actor_role, e.what, e.why, e.reference, e.at_ms) for e in log.entries(household="hh_a")]
    assert seen == [
        (1, "acct_op1", "operator", "readings", "operations", "FW-2026-11", 1_700_000_000_000),
        (2, "acct_sup1", "support", "profile", "support_ticket", "T-1234", 1_700_000_001_000),
    ]
    assert [e.seq for e in log.entries()] == [1, 2, 3]
    assert verify_cli(log) == (0, {"ok": True, "entries": 3, "head": log.entries()[-1].hash, "problem": None, "seq": None})


def test_an_export_is_one_entry_per_household_at_one_time_and_staff_see_it_as_one_read(log: AccessLog) -> None:
    exporter = Person("acct_op1", frozenset({"operator"}), household="hh_b")  # staff who is also a member of hh_b
    written = log.record_reads(exporter, ["hh_a", "hh_b", "hh_c", "hh_a"], what="telemetry", why="operations",
                               reference="export:csv:0123abcd")
    log.record_read(SUPPORT, household="hh_c", what="profile", why="support_ticket", reference="T-9")
    log.record_read(MEMBER, household="hh_a", what="profile", why="support_ticket")  # a member: not logged
    assert written == 2  # hh_a once, hh_c; not hh_b, the exporter's own household
    assert [(e.seq, e.household, e.what, e.reference, e.at_ms) for e in log.entries()] == [
        (1, "hh_a", "telemetry", "export:csv:0123abcd", 1_700_000_000_000),
        (2, "hh_c", "telemetry", "export:csv:0123abcd", 1_700_000_000_000),
        (3, "hh_c", "profile", "T-9", 1_700_000_001_000),
    ]
    assert log.recent(10) == [
        StaffRead(seq=3, at_ms=1_700_000_001_000, actor="acct_sup1", actor_role="support", what="profile",
                  why="support_ticket", reference="T-9", households=1, household="hh_c"),
        StaffRead(seq=2, at_ms=1_700_000_000_000, actor="acct_op1", actor_role="operator", what="telemetry",
                  why="operations", reference="export:csv:0123abcd", households=2, household=None),
    ]
    assert log.recent(1)[0].seq == 3
    assert log.record_reads(exporter, ["hh_b"], what="telemetry", why="operations") == 0
    assert log.verify().as_dict() == {"ok": True, "entries": 3, "head": log.entries()[-1].hash, "problem": None, "seq": None}


def test_an_entry_refuses_free_text_and_unknown_categories_naming_the_field(log: AccessLog) -> None:
    with pytest.raises(AccessLogError, match="^reference: "):
        log.record_read(SUPPORT, household="hh_a", what="profile", why="support_ticket", reference="called Luna Adalyn")
    with pytest.raises(AccessLogError, match="^what: "):
        log.record_read(SUPPORT, household="hh_a", what="everything", why="support_ticket")
    with pytest.raises(AccessLogError, match="^why: "):
        log.record_read(SUPPORT, household="hh_a", what="profile", why="curious")
    assert log.entries() == [] and log.verify().ok


@pytest.mark.parametrize(
    ("statement", "problem"),
    [
        ("UPDATE privacy_access_log SET what = 'contacts' WHERE seq = 2", "entry 2 was altered"),
        ("UPDATE privacy_access_log SET at_ms = at_ms + 1 WHERE seq = 1", "entry 1 was altered"),
        ("DELETE FROM privacy_access_log WHERE seq = 2", "entry 2 is missing (next is 3)"),
        # Reordered: entries 2 and 3 swap places (their numbers swapped with them).
        ("UPDATE privacy_access_log SET seq = 100 WHERE seq = 2; UPDATE privacy_access_log SET seq = 2 WHERE seq = 3;"
         " UPDATE privacy_access_log SET seq = 3 WHERE seq = 100", "entry 2 does not follow entry 1"),
        ("DELETE FROM privacy_access_log WHERE seq = 3", "the log ends at entry 2 but its head names entry 3"),
    ],
    ids=["changed", "changed-time", "removed", "reordered", "cut-off-the-end"],
)
def test_a_changed_removed_or_reordered_entry_is_detected_by_verify_log(
    log: AccessLog, statement: str, problem: str
) -> None:
    three_reads(log)
    assert log.verify().as_dict() == {"ok": True, "entries": 3, "head": log.entries()[-1].hash, "problem": None, "seq": None}
    tamper(log, statement)
    status, answer = verify_cli(log)
    assert status == 1 and not answer["ok"]
    assert answer["problem"].startswith(problem)
