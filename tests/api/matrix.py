"""The authorization matrix harness: every operation of an OpenAPI document, called as every principal,
must answer exactly the status its row says; an operation without a row fails.

A surface engineer adds, per operation, a :class:`Row`: the expected status per principal, and the
:class:`Probe` that calls it (path parameters, query, body). Authorization is decided before
validation, so refused principals get 401/403 whatever the probe; allowed ones get what the probe
earns them (200, 201, 404 for another household's thing, 422 for a probe body the test leaves invalid).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import httpx

PRINCIPALS = ("anonymous", "member_of_other", "member", "owner", "market_participant", "support", "operator")


@dataclass(frozen=True)
class Probe:
    path: dict[str, str] = field(default_factory=dict)
    query: dict[str, Any] = field(default_factory=dict)
    json: Any = None


@dataclass(frozen=True)
class Row:
    expect: dict[str, int]
    probe: Probe = Probe()


def operations(document: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """operationId -> (method, path template) of every operation in the document."""
    return {op["operationId"]: (method.upper(), path) for path, methods in document["paths"].items()
            for method, op in methods.items()}


async def mismatches(client: httpx.AsyncClient, document: dict[str, Any], table: dict[str, Row],
                     credentials: dict[str, dict[str, str]]) -> list[str]:
    """Every way the served app disagrees with the table (empty when it agrees)."""
    problems: list[str] = []
    found = operations(document)
    for operation_id in sorted(set(found) - set(table)):
        problems.append(f"{operation_id}: in the document but missing from the matrix")
    for operation_id in sorted(set(table) - set(found)):
        problems.append(f"{operation_id}: in the matrix but not in the document")
    for operation_id in [o for o in found if o in table]:  # in the document's order
        method, template = found[operation_id]
        row = table[operation_id]
        missing = [p for p in PRINCIPALS if p not in row.expect]
        if missing:
            problems.append(f"{operation_id}: no expected status for {', '.join(missing)}")
            continue
        path = re.sub(r"\{(\w+)\}", lambda m: row.probe.path.get(m.group(1), "x"), template)
        for principal in PRINCIPALS:
            kwargs: dict[str, Any] = {"params": row.probe.query, "headers": credentials.get(principal, {})}
            if row.probe.json is not None:
                kwargs["json"] = row.probe.json
            answer = await client.request(method, path, **kwargs)
            if answer.status_code != row.expect[principal]:
                problems.append(f"{operation_id} as {principal}: {answer.status_code}, expected "
                                f"{row.expect[principal]} ({answer.text[:120]})")
    return problems


def statuses(default: int, **overrides: int) -> dict[str, int]:
    """A row's statuses: ``default`` for every principal but those named."""
    return {p: overrides.get(p, default) for p in PRINCIPALS}
