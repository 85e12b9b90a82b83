"""``quartier api``: serve every HTTP surface in one process."""

from __future__ import annotations

import logging

import click

from quartier.settings import Settings


@click.group()
def api() -> None:
    """The HTTP API: every surface (accounts, market, households, console) in one process."""


@api.command("serve")
@click.option("--host", default=None, help="Address to listen on [default: api.host].")
@click.option("--port", default=None, type=click.IntRange(0, 65535), help="Port [default: api.port].")
@click.option("--surface", "names", multiple=True,
              help="Serve only this surface (repeatable) [default: every one in entry-point group quartier.surfaces].")
@click.option("--access-log/--no-access-log", default=True, show_default=True, help="Log every request.")
@click.option("--loop", type=click.Choice(["auto", "asyncio", "uvloop"]), default="auto", show_default=True,
              help="The event loop (uvicorn's; auto: uvloop when installed).")
def serve(host: str | None, port: int | None, names: tuple[str, ...], access_log: bool, loop: str) -> None:
    """Serve the surfaces' operations, /v1/openapi.json, /v1/docs and /metrics in one uvicorn process."""
    import uvicorn
    from prometheus_client import CollectorRegistry

    from api.compose import compose, discover

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings()
    try:
        factories = discover(names or None)
    except LookupError as exc:
        raise click.ClickException(str(exc)) from None
    app = compose(settings, CollectorRegistry(), factories)
    uvicorn.run(app, host=host or settings.api.host, port=settings.api.port if port is None else port,
                log_level="info", access_log=access_log, loop=loop)
