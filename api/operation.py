"""An operation is declared once, beside its handler: method, path, who may call it, and the models of
its path, query, body and answer. ``build_app`` turns the declaration into the validated route and its
entry in the OpenAPI document, so they cannot disagree.

    @operation("GET", "/v1/households/{household}", allow=allow("owner", "member", "operator"),
               path_params=HouseholdPath, response=HouseholdView, errors=(404,),
               summary="One household")
    async def get_household(call: Call) -> HouseholdView: ...

The surface lists its operations in ``Surface.routes``; nothing is registered anywhere else. A
handler gets a :class:`Call` and returns an instance of its response model (serialized with that
model, as the document says) or a Starlette ``Response`` of its own (an HTML page, a redirect).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, TypeAdapter
from starlette.requests import Request
from starlette.routing import Route

from api.access import Allow
from api.bounds import NoQuery, Query
from api.principal import Principal


@dataclass
class Call:
    """What a handler gets: the request, who asks, the validated parts, and its surface's state."""

    request: Request
    principal: Principal | None
    path: Any
    query: Any
    body: Any
    state: Any

    @property
    def me(self) -> Principal:
        """The principal, for operations that do not allow anonymous callers."""
        assert self.principal is not None, "this operation allows anonymous callers: use call.principal"
        return self.principal


Handler = Callable[[Call], Awaitable[Any]]


async def _not_composed(_request: Request) -> Any:
    raise RuntimeError("an api.operation route is served only inside api.build_app")


class Operation(Route):
    """A Starlette route that carries its declaration; ``build_app`` serves and documents it."""

    def __init__(self, method: str, path: str, handler: Handler, *, allow: Allow, response: Any, summary: str,
                 status: int = 200, body: type[BaseModel] | None = None, query: type[Query] = NoQuery,
                 path_params: type[Query] | None = None, errors: tuple[int, ...] = (), description: str = "",
                 max_body_bytes: int | None = None, tags: tuple[str, ...] = (), operation_id: str | None = None,
                 ) -> None:
        super().__init__(path, _not_composed, methods=[method], name=operation_id or handler.__name__)
        self.method = method.upper()
        self.handler = handler
        self.allow = allow
        self.response = response
        self.summary = summary
        self.status = status
        self.body = body
        self.query = query
        self.path_params = path_params
        self.errors = tuple(errors)
        self.description = description
        self.max_body_bytes = max_body_bytes
        self.tags = tuple(tags)
        self.operation_id = operation_id or handler.__name__
        self.adapter: TypeAdapter[Any] = TypeAdapter(response)


def operation(method: str, path: str, **declaration: Any) -> Callable[[Handler], Operation]:
    """Declares the decorated handler as an operation (see the module docstring)."""

    def declare(handler: Handler) -> Operation:
        return Operation(method, path, handler, **declaration)

    return declare
