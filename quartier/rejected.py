"""A command refused by the state it was checked against, for every event-sourced package.

Commands (``marketplace.commands``, ``accounts.commands``) only return events or raise
:class:`Rejected`; the HTTP layer of each turns it into a 4xx naming the field and the reason.
"""

from __future__ import annotations


class Rejected(Exception):
    """A command that cannot be carried out; becomes a 4xx answer naming the field and the reason."""

    def __init__(self, status: int, code: str, reason: str, field: str | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.code = code
        self.reason = reason
        self.field = field


def invalid(field: str, reason: str) -> Rejected:
    return Rejected(422, "invalid", reason, field)


def conflict(field: str | None, reason: str) -> Rejected:
    return Rejected(409, "conflict", reason, field)


def not_found(field: str | None, reason: str) -> Rejected:
    return Rejected(404, "not_found", reason, field)


def forbidden(reason: str) -> Rejected:
    return Rejected(403, "forbidden", reason)
