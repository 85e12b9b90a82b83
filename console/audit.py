"""The console's audit record of operator actions: exports, personal-data reads, campaign commands.

Behind a small interface (:class:`AuditLog`: ``record`` and ``recent``) because the personal-data
issue's access log (``privacy/``) is meant to take this over; until it is on main, records are
appended to a JSON-lines file under the state directory (``console/audit.jsonl``), one msgspec
record per line, flushed before the action's answer goes out.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Protocol

import msgspec


class AuditRecord(msgspec.Struct, frozen=True, kw_only=True):
    at_ms: int
    actor: str  # the principal's subject
    roles: tuple[str, ...]
    action: str  # "export_csv", "export_xlsx", "read_household", "campaign_create", ...
    target: str  # what it was about: a meter, a campaign, the filter of an export
    detail: dict[str, str | int | float] = {}


class AuditLog(Protocol):
    def record(self, entry: AuditRecord) -> None: ...
    def recent(self, limit: int) -> list[AuditRecord]: ...


class FileAuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._encoder = msgspec.json.Encoder()
        self._decoder = msgspec.json.Decoder(AuditRecord)

    def record(self, entry: AuditRecord) -> None:
        line = self._encoder.encode(entry) + b"\n"
        with self._lock, open(self.path, "ab") as out:
            out.write(line)
            out.flush()

    def recent(self, limit: int) -> list[AuditRecord]:
        if not self.path.exists():
            return []
        lines = self.path.read_bytes().splitlines()[-limit:]
        return [self._decoder.decode(line) for line in reversed(lines)]
