"""The Starlette application: the ``/v1`` operations, the OpenAPI document and its readable page.

``create_app(service)`` serves an existing service; with ``manage=True`` the app starts and stops
it in its lifespan, as ``quartier market api`` runs it under uvicorn.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiokafka.errors import KafkaError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from marketplace.api import docs
from marketplace.api.endpoints import api
from marketplace.api.routing import error_response
from marketplace.commands import Principal
from marketplace.service import MarketService

log = logging.getLogger(__name__)


async def _authenticate(request: Request, token: str) -> Principal | None:
    service: MarketService = request.app.state.service
    return await run_in_threadpool(service.tokens.resolve, token)


api.authenticate = _authenticate
OPENAPI = api.openapi()
DOCS_HTML = docs.render(OPENAPI)


async def openapi(_request: Request) -> Response:
    return JSONResponse(OPENAPI)


async def documentation(_request: Request) -> Response:
    return HTMLResponse(DOCS_HTML)


async def _http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "error")
    reason = {404: "no such endpoint: see /v1/docs", 405: "method not allowed here"}.get(exc.status_code, str(exc.detail))
    return error_response(exc.status_code, code, reason, "path", "path", headers=exc.headers)


async def _log_unavailable(_request: Request, exc: Exception) -> Response:
    # The append may or may not have reached the broker; the service folds whatever the log holds
    # before the next command of that partition, so a retry is checked against the truth.
    log.warning("market.events unavailable: %r", exc)
    return error_response(503, "unavailable", "the market's log (Kafka) did not confirm the command: it may "
                          "still have been recorded; a retry is checked against the log first",
                          headers={"Retry-After": "5"})


async def _server_error(_request: Request, exc: Exception) -> Response:
    log.exception("unhandled error", exc_info=exc)
    return error_response(500, "internal", "the market could not answer; the error is logged")


def create_app(service: MarketService, *, manage: bool = False) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[dict[str, Any]]:
        if manage:
            await service.start()
        try:
            yield {}
        finally:
            if manage:
                await service.stop()

    app = Starlette(
        routes=[Route("/v1/openapi.json", openapi), Route("/v1/docs", documentation), *api.routes()],
        exception_handlers={HTTPException: _http_error, KafkaError: _log_unavailable, Exception: _server_error},
        lifespan=lifespan,
    )
    app.state.service = service
    return app
