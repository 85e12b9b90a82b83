"""What a surface hands the composing entry point, and what it gets from it."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

import prometheus_client
from starlette.routing import BaseRoute, Mount

import quartier.settings
from api.principal import Authenticator


@dataclass
class Surface:
    name: str  # "accounts", "market", "households", "console"
    routes: list[BaseRoute]  # api.operation(...) routes (validated, documented) and plain Starlette routes
    lifespan: Callable[[], AbstractAsyncContextManager[None]] | None = None  # starts/stops its consumers, jobs
    static: list[Mount] = field(default_factory=list)  # optional static files / web pages
    # --- beyond the contract's fields (all optional) ---
    # What every operation handler of this surface gets as ``call.state`` (its service, stores).
    state: Any = None
    # Authenticators this surface provides (accounts: sessions and tokens; the market: legacy qm_
    # tokens). `quartier api serve` chains them: the accounts surface's first, then the others'.
    authenticators: list[Authenticator] = field(default_factory=list)
    # Exception type -> handler(request, exc) -> Response, for the surface's own failures.
    exception_handlers: dict[Any, Callable[..., Any]] = field(default_factory=dict)
    # Whether the surface can serve every operation yet (its consumers connected, its state caught up);
    # GET /v1/ready answers 503 naming the surfaces not ready, for a load balancer or a test to wait on.
    ready: Callable[[], bool] = lambda: True


@dataclass
class SurfaceContext:
    """What the composing entry point hands each surface."""

    settings: quartier.settings.Settings
    registry: prometheus_client.CollectorRegistry
    authenticator: Authenticator  # the chain of every composed surface's authenticators
