"""``build_app``: composes surfaces into one Starlette app with the API layer around every request.

In the order a request meets them (:class:`Guard`, then the route):

1. the query string's length (414 beyond ``settings.api.max_query_bytes``);
2. authentication: ``request.state.principal`` (None when anonymous; a bad credential is a 401);
3. requests per principal per minute, or per client address when anonymous (429 with Retry-After);
4. CSRF for session principals' unsafe requests (``X-CSRF-Token``; forms: :func:`api.csrf.check_form`);
5. per operation: who may call it (401/403), the body's size (413 from ``Content-Length`` before
   anything is read, and while reading a chunked body), its media type (415), then the path, query and
   body validated against the declared models (422 naming the field), the handler, and the answer
   serialized with the declared model.

Every answer is counted per route template, method and status, with its latency, in the registry
passed in (served on ``/metrics``). ``/v1/openapi.json`` is the OpenAPI 3.1 document of every
surface's operations (with ``x-allow``), ``/v1/docs`` a readable page of it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import Any

from limits import RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import ValidationError
from spectree import Response as SpecResponse
from spectree.plugins.starlette_plugin import Route as SpecRoute
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import csrf, docs
from api.errors import ApiError, ErrorView, error_response, validation_error
from api.metrics import ApiMetrics
from api.operation import Call, Operation
from api.principal import Authenticator
from api.spec import BODY_LIMIT, new_spec, too_large
from api.surface import Surface
from quartier.settings import Settings

log = logging.getLogger(__name__)

ERROR_DESCRIPTIONS = {
    400: "Malformed JSON",
    401: "No credential, or an invalid, expired or revoked one",
    403: "This principal may not do this",
    404: "No such thing (or not yours to see)",
    409: "Refused by the current state: already done, closed, sold out",
    413: "The body is larger than this operation takes",
    414: "The query string is longer than the API takes",
    415: "The body is not JSON",
    422: "A field is missing, of the wrong type, out of range or unknown",
    429: "Too many requests from this principal this minute: see Retry-After",
    503: "A dependency did not confirm: try again after Retry-After",
}


class _ModelResponse(JSONResponse):
    """Already serialized with the declared model: spectree recognises ``_model_class`` and skips
    validating it a second time."""

    def __init__(self, content: bytes, status_code: int, model: Any) -> None:
        super().__init__(content, status_code=status_code)
        self._model_class = model

    def render(self, content: Any) -> bytes:
        return content  # type: ignore[no-any-return]


class Guard:
    """The part of every request before routing: query length, authentication, rate, CSRF, metrics."""

    def __init__(self, app: ASGIApp, *, authenticator: Authenticator, settings: Settings, metrics: ApiMetrics,
                 max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.authenticator = authenticator
        self.max_query_bytes = settings.api.max_query_bytes
        # limits' asyncio memory storage expires counters in a task of this event loop (its threaded
        # sibling starts a timer thread every few requests): made on the first request, in the loop.
        self.limiter: SlidingWindowCounterRateLimiter | None = None
        self.per_principal = RateLimitItemPerMinute(settings.api.requests_per_minute)
        self.per_address = RateLimitItemPerMinute(settings.api.anonymous_requests_per_minute)
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            refusal = await self._admit(scope)
            if refusal is not None:
                await refusal.response()(scope, receive, send_counted)
            else:
                await self.app(scope, self._bounded(scope, receive), send_counted)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.observe(template, scope["method"], status, time.perf_counter() - started)

    def _bounded(self, scope: Scope, receive: Receive) -> Receive:
        """A chunked body (no Content-Length) is cut off at the largest any route takes; each operation
        applies its own, smaller or equal, limit as it reads."""
        if Headers(scope=scope).get("content-length") is not None:
            return receive
        received = 0

        async def receive_bounded() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body_bytes:
                raise too_large(self.max_body_bytes)
            return message

        return receive_bounded

    async def _admit(self, scope: Scope) -> ApiError | None:
        if len(scope.get("query_string", b"")) > self.max_query_bytes:
            return ApiError(414, "too_long", f"the query string may be at most {self.max_query_bytes} bytes",
                            "query", "query")
        length = Headers(scope=scope).get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            # Refused before anything is read, whoever sends it.
            return too_large(self.max_body_bytes)
        request = Request(scope)
        try:
            principal = await self.authenticator.authenticate(request)
        except ApiError as exc:
            return exc
        scope.setdefault("state", {})["principal"] = principal
        if principal is not None:
            item, key = self.per_principal, f"p:{principal.subject}"
        else:
            item, key = self.per_address, f"a:{scope['client'][0] if scope.get('client') else '-'}"
        if self.limiter is None:
            self.limiter = SlidingWindowCounterRateLimiter(MemoryStorage())
        if not await self.limiter.hit(item, key):
            reset = (await self.limiter.get_window_stats(item, key)).reset_time
            wait = max(1, math.ceil(reset - time.time()))
            return ApiError(429, "rate_limited", f"more than {item.amount} requests a minute; try again in {wait} s",
                            headers={"Retry-After": str(wait)})
        headers = Headers(scope=scope)
        if not csrf.is_form(headers.get("content-type", "")):
            try:
                csrf.check_header(scope["method"], headers, principal)
            except ApiError as exc:
                return exc
        return None


def _repeated(request: Request) -> str | None:
    counts = Counter(k for k, _ in request.query_params.multi_items())
    return next((k for k, n in counts.items() if n > 1), None)


def _serve(op: Operation, surface: Surface, spec: Any, default_body_bytes: int) -> Route:
    """The route that serves one operation: access, bounds, validation (spectree), handler."""

    async def handle(request: Request) -> Response:
        context = request.context  # type: ignore[attr-defined]  # set by spectree's validation
        call = Call(request, request.state.principal, request.scope["api.path"], context.query, context.json,
                    surface.state)
        result = await op.handler(call)
        if isinstance(result, Response):
            return result
        return _ModelResponse(op.adapter.dump_json(result), op.status, op.response)

    handle.__name__ = op.operation_id
    handle.__doc__ = f"{op.summary}\n\n{op.description}" if op.description else op.summary
    responses: dict[str, Any] = {f"HTTP_{op.status}": (op.response, "OK")}
    for code in _error_codes(op):
        responses[f"HTTP_{code}"] = (ErrorView, ERROR_DESCRIPTIONS.get(code, "Refused"))
    validated = spec.validate(query=op.query, json=op.body, resp=SpecResponse(**responses),
                              tags=op.tags or (surface.name,), operation_id=op.operation_id)(handle)

    limit = op.max_body_bytes or default_body_bytes

    async def endpoint(request: Request) -> Response:
        op.allow.check(getattr(request.state, "principal", None))
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise too_large(limit)
        request.scope[BODY_LIMIT] = limit
        if op.body is not None:
            media = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
            if media != "application/json":
                raise ApiError(415, "unsupported_media_type", "send the body as application/json",
                               "Content-Type", "header")
        try:
            request.scope["api.path"] = (op.path_params.model_validate(request.path_params)
                                         if op.path_params else None)
        except ValidationError as exc:
            raise validation_error(exc, "path") from None
        repeated = _repeated(request)
        if repeated is not None:
            raise ApiError(422, "invalid", "given more than once", repeated, "query")
        return await validated(request)

    spec.backend.routes.append(SpecRoute(op.path, {op.method}, validated))
    return Route(op.path, endpoint, methods=[op.method], name=op.operation_id)


def _error_codes(op: Operation) -> list[int]:
    codes = set(op.errors) | {414, 422, 429}
    if "anonymous" not in op.allow.kinds:
        codes |= {401, 403}
    if op.body is not None:
        codes |= {400, 413, 415}
    return sorted(codes)


def _document(spec: Any, operations: list[tuple[Surface, Operation]]) -> dict[str, Any]:
    """spectree's document, completed with what it does not know: path models, access, security."""
    document = _without_null_defaults(spec.spec)
    for surface, op in operations:
        entry = document["paths"][op.path][op.method.lower()]
        entry["x-allow"] = list(op.allow.kinds)
        entry["x-surface"] = surface.name
        if "anonymous" in op.allow.kinds:
            entry["security"] = []
        else:
            entry["security"] = [{"bearer": []}, {"session": []}]
        if op.path_params is not None:
            schema = op.path_params.model_json_schema()
            parameters = [p for p in entry.get("parameters", []) if p.get("in") != "path"]
            for name, prop in schema.get("properties", {}).items():
                description = prop.pop("description", None)
                prop.pop("title", None)
                parameter = {"name": name, "in": "path", "required": True, "schema": prop}
                if description:
                    parameter["description"] = description
                parameters.insert(0, parameter)
            entry["parameters"] = parameters
        for parameter in entry.get("parameters", []):
            if not parameter.get("description"):
                parameter.pop("description", None)
        if not entry.get("description"):
            entry.pop("description", None)
    document.pop("security", None)
    document["servers"] = [{"url": "/"}]
    document.setdefault("components", {})["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer", "description": "an access token (accounts) or a market token"},
        "session": {"type": "apiKey", "in": "cookie", "name": "quartier_session",
                    "description": "the web session; unsafe methods also need X-CSRF-Token"},
    }
    return document


def _without_null_defaults(value: Any) -> Any:
    # Optional fields are left out, never null: a "default": null would document the opposite.
    if isinstance(value, dict):
        return {k: _without_null_defaults(v) for k, v in value.items() if not (k == "default" and v is None)}
    if isinstance(value, list):
        return [_without_null_defaults(v) for v in value]
    return value


async def _api_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return exc.response()


async def _http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(exc.status_code, "error")
    reason = {404: "no such endpoint: see /v1/docs", 405: "method not allowed here",
              413: "the body is larger than this operation takes"}.get(exc.status_code, str(exc.detail))
    location = "body" if exc.status_code == 413 else "path"
    return error_response(exc.status_code, code, reason, location, location, headers=exc.headers)


async def _server_error(_request: Request, exc: Exception) -> Response:
    log.exception("unhandled error", exc_info=exc)
    return error_response(500, "internal", "the server could not answer; the error is logged")


def build_app(surfaces: Sequence[Surface], *, authenticator: Authenticator, settings: Settings,
              registry: CollectorRegistry, title: str = "Quartier", version: str = "1",
              description: str = "") -> Starlette:
    """One app serving every surface's routes behind the API layer (see the module docstring)."""
    spec = new_spec(title, version, description or (
        "Quartier's HTTP API: every surface's operations. Energies in Wh, prices in euro cents per kWh, amounts in "
        "millicents, times in Unix milliseconds UTC. Every refusal is a JSON body naming the field and the reason."))
    spec.backend.routes = []
    routes: list[BaseRoute] = []
    operations: list[tuple[Surface, Operation]] = []
    seen: dict[str, str] = {}
    exception_handlers: dict[Any, Any] = {}
    for surface in surfaces:
        for route in surface.routes:
            if isinstance(route, Operation):
                if route.operation_id in seen:
                    raise ValueError(f"operation {route.operation_id!r} of surface {surface.name!r} is already "
                                     f"declared by surface {seen[route.operation_id]!r}")
                seen[route.operation_id] = surface.name
                operations.append((surface, route))
                routes.append(_serve(route, surface, spec, settings.api.max_body_bytes))
            else:
                routes.append(route)
        routes.extend(surface.static)
        exception_handlers.update(surface.exception_handlers)
    document: dict[str, Any] = {}
    page: list[str] = []

    def get_document() -> dict[str, Any]:
        # Built on first use: the document of what was composed, the same for the app's lifetime.
        if not document:
            document.update(_document(spec, operations))
        return document

    async def openapi(_request: Request) -> Response:
        return JSONResponse(get_document())

    async def documentation(_request: Request) -> Response:
        if not page:
            page.append(docs.render(get_document()))
        return HTMLResponse(page[0])

    async def metrics(_request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def ready(_request: Request) -> Response:
        waiting = [surface.name for surface in surfaces if not surface.ready()]
        if waiting:
            return error_response(503, "unavailable", f"not ready yet: {', '.join(waiting)}", "surfaces",
                                  headers={"Retry-After": "1"})
        return JSONResponse({"ready": [surface.name for surface in surfaces]})

    ceiling = max([settings.api.max_body_bytes, *(op.max_body_bytes or 0 for _, op in operations)])
    routes[:0] = [Route("/v1/openapi.json", openapi), Route("/v1/docs", documentation), Route("/metrics", metrics),
                  Route("/v1/ready", ready)]

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            for surface in surfaces:
                if surface.lifespan is not None:
                    await stack.enter_async_context(surface.lifespan())
            yield

    app = Starlette(
        routes=routes,
        middleware=[Middleware(Guard, authenticator=authenticator, settings=settings,
                               metrics=ApiMetrics.create(registry), max_body_bytes=ceiling)],
        exception_handlers={ApiError: _api_error, HTTPException: _http_error, **exception_handlers,
                            Exception: _server_error},
        lifespan=lifespan,
    )
    app.state.openapi = get_document
    return app
