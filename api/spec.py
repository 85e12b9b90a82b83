"""spectree, fitted to the API layer: one SpecTree per composed app, fed the app's operations.

Two parts of spectree's Starlette plugin are replaced through its documented ``backend=`` hook:

- ``find_routes``: the document lists exactly the composed operations (not whatever else is mounted);
- ``request_validation``: the body is validated from its raw bytes by pydantic's JSON mode
  (``model_validate_json``). The stock plugin parses with ``json.loads`` and validates the Python
  value, which turns a body of ``null``, ``[]`` or ``0`` into ``{}``, answers a 500 for a body that is
  not UTF-8, and skips the body silently when ``Content-Type`` carries a charset.

The query string is validated by spectree as it is; every refusal becomes an :class:`api.errors.ApiError`
(the before-hook), so the error shape is the API layer's, not spectree's.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError
from spectree import SpecTree
from spectree.plugins.base import Context
from spectree.plugins.starlette_plugin import Route as SpecRoute
from spectree.plugins.starlette_plugin import StarlettePlugin
from spectree.utils import get_multidict_items_starlette
from starlette.requests import Request

from api.errors import ApiError, ErrorView, validation_error


BODY_LIMIT = "api.max_body_bytes"


def too_large(limit: int) -> ApiError:
    return ApiError(413, "too_large", f"the body may be at most {limit} bytes", "body", "body")


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused (413) as soon as more than ``limit`` bytes arrived: a chunked body of any size
    costs at most ``limit`` bytes of memory."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


class OperationsPlugin(StarlettePlugin):
    routes: list[SpecRoute]

    def find_routes(self) -> list[SpecRoute]:
        return list(getattr(self, "routes", []))

    async def request_validation(self, request: Request, query: Any, json: Any, form: Any, headers: Any,
                                 cookies: Any) -> None:
        # Refusals are raised as ApiError here: spectree would first render its own error body (which
        # fails on a body that is not UTF-8) before its before-hook sees the error.
        try:
            validated_query = (self.model_adapter.validate_obj(
                query, get_multidict_items_starlette(request.query_params, query)) if query else None)
        except ValidationError as exc:
            raise validation_error(exc, "query") from None
        body = None
        if json is not None:
            raw = await read_body(request, request.scope[BODY_LIMIT])
            if not raw.strip():
                raise ApiError(422, "invalid", "a JSON object is required", "body", "body")
            try:
                body = (json.model_validate_json(raw) if issubclass(json, BaseModel)
                        else self.model_adapter.validate_json(json, raw))
            except ValidationError as exc:
                raise validation_error(exc, "body") from None
        request.context = Context(validated_query, body, None, None, None)


def raise_refusal(request: Request, _response: Any, error: Exception | None, _instance: Any, _adapter: Any) -> None:
    """spectree's before-hook, for any refusal of its own: the API layer's 4xx, never spectree's shape."""
    if isinstance(error, ValidationError):
        raise validation_error(error, "query")


def new_spec(title: str, version: str, description: str) -> SpecTree:
    spec = SpecTree(backend=OperationsPlugin, title=title, version=version, description=description,
                    mode="strict", annotations=False, validation_error_status=422,
                    validation_error_model=ErrorView, before=raise_refusal,
                    # Schemas named as the models are: readable refs, one schema per shared nested model.
                    naming_strategy=lambda model: model.__name__,
                    nested_naming_strategy=lambda _parent, child: child)
    return spec
