"""The market as a surface of the API layer, and the app serving it alone.

``market_surface(service)`` is the market's :class:`api.Surface`: its operations
(:mod:`marketplace.api.endpoints`), the service as their state, the legacy ``qm_`` token
authenticator, and a 503 for a log that did not confirm. With ``manage=True`` its lifespan starts
and stops the service. ``create_app(service)`` composes it alone (the tests, ``quartier market
api``); ``quartier api serve`` composes it with the other surfaces (:mod:`marketplace.surface`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response

import api
from marketplace.api.endpoints import DESCRIPTION, OPERATIONS
from marketplace.auth import MarketTokenAuthenticator
from marketplace.service import MarketService
from quartier.settings import Settings

log = logging.getLogger(__name__)


async def _log_unavailable(_request: Request, exc: Exception) -> Response:
    # The append may or may not have reached the broker; the service folds whatever the log holds
    # before the next command of that partition, so a retry is checked against the truth.
    log.warning("market.events unavailable: %r", exc)
    return api.error_response(503, "unavailable", "the market's log (Kafka) did not confirm the command: it may "
                              "still have been recorded; a retry is checked against the log first",
                              headers={"Retry-After": "5"})


def market_surface(service: MarketService | None, *, manage: bool = False) -> api.Surface:
    """The market's surface; ``service`` None only to build the document."""

    @contextlib.asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        assert service is not None
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    return api.Surface(
        name="market", routes=list(OPERATIONS), lifespan=lifespan if manage else None, state=service,
        authenticators=[MarketTokenAuthenticator(service.tokens)] if service is not None else [],
        exception_handlers={KafkaError: _log_unavailable},
    )


def _compose(surface: api.Surface, settings: Settings, registry: CollectorRegistry | None) -> Starlette:
    return api.build_app([surface], authenticator=api.ChainAuthenticator(surface.authenticators), settings=settings,
                         registry=registry or CollectorRegistry(), title="Quartier market", description=DESCRIPTION)


def create_app(service: MarketService, *, manage: bool = False, registry: CollectorRegistry | None = None) -> Starlette:
    return _compose(market_surface(service, manage=manage), service.settings, registry)


def openapi_document(settings: Settings | None = None) -> dict[str, Any]:
    """The market's OpenAPI document, without a running service (tests load it at collection time)."""
    app = _compose(market_surface(None), settings or Settings(), None)
    return app.state.openapi()  # type: ignore[no-any-return]
