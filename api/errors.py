"""Every refusal is one JSON shape: a short code, the status, the field at fault and the reason.

The shape is the marketplace's (``error``, ``status``, ``field``, ``location``, ``reason``,
``errors``): clients written against the market keep working on every surface.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, ValidationError
from starlette.responses import JSONResponse


class FieldError(BaseModel):
    field: str | None = Field(description="the field at fault, as a path (`roles[0]`), or null")
    location: str | None = Field(description="body, query, path or header")
    reason: str


class ErrorView(BaseModel):
    error: str = Field(description="a short code: invalid, malformed_json, unauthenticated, forbidden, not_found, "
                       "conflict, too_large, rate_limited")
    status: int
    field: str | None
    location: str | None
    reason: str
    errors: list[FieldError] = Field(description="every problem found, the first one repeated above")


class ApiError(Exception):
    """Raised anywhere in a request (authenticator, access check, handler): answered as :class:`ErrorView`."""

    def __init__(self, status: int, code: str, reason: str, field: str | None = None, location: str | None = None,
                 headers: dict[str, str] | None = None, errors: list[FieldError] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.code = code
        self.reason = reason
        self.field = field
        self.location = location
        self.headers = headers
        self.errors = errors

    def response(self) -> JSONResponse:
        return error_response(self.status, self.code, self.reason, self.field, self.location, self.headers,
                              self.errors)


def error_response(status: int, code: str, reason: str, field: str | None = None, location: str | None = None,
                   headers: dict[str, str] | None = None, errors: list[FieldError] | None = None) -> JSONResponse:
    body = ErrorView(error=code, status=status, field=field, location=location, reason=reason,
                     errors=errors or [FieldError(field=field, location=location, reason=reason)])
    return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=headers)


def _field_path(loc: tuple[Any, ...]) -> str | None:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or None


def _reason(problem: Any) -> str:
    if problem["type"] == "extra_forbidden":
        return "unknown field: not part of this request"
    return str(problem["msg"])


def validation_error(exc: ValidationError, location: str) -> ApiError:
    """A pydantic refusal as an :class:`ApiError` naming each field (400 for a body that is not JSON)."""
    problems = exc.errors(include_url=False)
    if location == "body" and any(p["type"] == "json_invalid" for p in problems):
        detail = next(p for p in problems if p["type"] == "json_invalid")
        return ApiError(400, "malformed_json",
                        f"the body is not valid JSON: {detail.get('ctx', {}).get('error', detail['msg'])}",
                        "body", "body")
    errors = [FieldError(field=_field_path(p["loc"]) or location, location=location, reason=_reason(p))
              for p in problems]
    first = errors[0]
    return ApiError(422, "invalid", first.reason, first.field, location, errors=errors)
