"""The market as one of the surfaces ``quartier api serve`` composes (entry-point group
``quartier.surfaces``: ``market = "marketplace.surface:surface"``)."""

from __future__ import annotations

import api
from marketplace import onchain
from marketplace.api.app import market_surface
from marketplace.clock import clock_for
from marketplace.service import wire


def build(context: api.SurfaceContext, *, close_interval_s: float = 5.0, settle: bool | None = None) -> api.Surface:
    """The market service (closing slots every ``close_interval_s``, settling on chain unless
    ``settle`` is False; default ``market.settle_on_chain``) and its surface, started by its lifespan."""
    settings = context.settings
    if settle is None:
        settle = settings.market.settle_on_chain
    service = wire(settings, clock=clock_for(settings.market.clock_file), close_interval_s=close_interval_s,
                            connect_chain=(lambda: onchain.connect(settings)) if settle else None)
    return market_surface(service, manage=True)


def surface(context: api.SurfaceContext) -> api.Surface:
    return build(context)
