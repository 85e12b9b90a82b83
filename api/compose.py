"""The composition ``quartier api serve`` runs: every surface of the ``quartier.surfaces`` entry-point
group, in one app, behind one chain of authenticators.

Each entry point names ``surface(context: api.SurfaceContext) -> api.Surface``. The authenticators
the surfaces provide are chained in one :class:`api.principal.ChainAuthenticator`: the ``accounts``
surface's first (sessions and access tokens), then the others' in entry-point order (the market's
legacy ``qm_`` tokens), so a request is one Principal whichever credential it carries.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from importlib.metadata import entry_points

from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from api.app import build_app
from api.principal import Authenticator, ChainAuthenticator
from api.surface import Surface, SurfaceContext
from quartier.settings import Settings

GROUP = "quartier.surfaces"
SurfaceFactory = Callable[[SurfaceContext], Surface]


def discover(names: Iterable[str] | None = None) -> list[tuple[str, SurfaceFactory]]:
    """The surface factories of the entry-point group (only ``names``, when given), by name."""
    wanted = set(names) if names is not None else None
    found = sorted(entry_points(group=GROUP), key=lambda e: e.name)
    if wanted is not None:
        missing = wanted - {e.name for e in found}
        if missing:
            raise LookupError(f"no surface {', '.join(sorted(missing))} in entry-point group {GROUP}")
    return [(e.name, e.load()) for e in found if wanted is None or e.name in wanted]


def compose(settings: Settings, registry: CollectorRegistry, factories: Sequence[tuple[str, SurfaceFactory]],
            extra_authenticators: Sequence[Authenticator] = ()) -> Starlette:
    """Builds each surface and serves them all in one app."""
    chain = ChainAuthenticator()
    context = SurfaceContext(settings=settings, registry=registry, authenticator=chain)
    surfaces = [factory(context) for _, factory in factories]
    for surface in sorted(surfaces, key=lambda s: s.name != "accounts"):
        for authenticator in surface.authenticators:
            chain.add(authenticator)
    for authenticator in extra_authenticators:
        chain.add(authenticator)
    return build_app(surfaces, authenticator=chain, settings=settings, registry=registry)
