"""CSRF protection for session-authenticated requests (bearer tokens are not sent by browsers on their own).

A state-changing request (POST, PUT, PATCH, DELETE) authenticated by a session cookie must prove it
comes from one of our pages: JSON clients send the session's token in ``X-CSRF-Token`` (checked by
:func:`check_header`, which ``build_app`` applies to every such request); an HTML form carries it in a
hidden ``csrf_token`` field, and its handler calls :func:`check_form` on the parsed form (a form body
cannot be read before routing without reading it twice).
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request

from api.errors import ApiError
from api.principal import Principal

HEADER = "x-csrf-token"
FORM_FIELD = "csrf_token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def _matches(sent: str | None, principal: Principal) -> bool:
    return bool(sent) and principal.csrf_token is not None and hmac.compare_digest(sent, principal.csrf_token)


def needs_check(method: str, principal: Principal | None) -> bool:
    return principal is not None and principal.via == "session" and method in UNSAFE_METHODS


def is_form(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() in FORM_TYPES


def check_header(method: str, headers: Mapping[str, str], principal: Principal | None) -> None:
    if not needs_check(method, principal):
        return
    assert principal is not None
    if not _matches(headers.get(HEADER), principal):
        raise ApiError(403, "csrf", "send the session's CSRF token in X-CSRF-Token", "X-CSRF-Token", "header")


def check_form(request: Request, form: Mapping[str, Any]) -> None:
    """For HTML form handlers: the hidden ``csrf_token`` field must be the session's token."""
    principal: Principal | None = getattr(request.state, "principal", None)
    if not needs_check(request.method, principal):
        return
    assert principal is not None
    sent = form.get(FORM_FIELD)
    if not _matches(sent if isinstance(sent, str) else None, principal):
        raise ApiError(403, "csrf", "the form's csrf_token is missing or not this session's", FORM_FIELD, "body")
