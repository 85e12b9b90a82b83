"""``quartier market``: the energy marketplace's API, read-model rebuild and tokens."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import click

from quartier.settings import Settings


@click.group()
def market() -> None:
    """The energy marketplace."""


@market.command("api")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8600, show_default=True, type=click.IntRange(0, 65535))
@click.option("--close-interval", default=5.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds between checks for slots whose gate has closed.")
@click.option("--access-log/--no-access-log", default=True, show_default=True, help="Log every request.")
@click.option("--keep-alive", default=5, show_default=True, type=click.IntRange(1, 3600),
              help="Seconds an idle client connection stays open.")
@click.option("--settle/--no-settle", default=None,
              help="Settle slots on the chain deployed by `quartier chain deploy` [default: market.settle_on_chain].")
def api(host: str, port: int, close_interval: float, access_log: bool, keep_alive: int, settle: bool | None) -> None:
    """Serve the REST API, close slots at their gate, allocate them from the meters and settle them on
    chain, until interrupted."""
    from functools import partial

    import uvicorn
    from prometheus_client import CollectorRegistry

    from api.compose import compose
    from marketplace.surface import build

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The same composition as `quartier api serve`, with the market surface only.
    market_only = partial(build, close_interval_s=close_interval, settle=settle)
    app = compose(Settings(), CollectorRegistry(), [("market", market_only)])
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=access_log, timeout_keep_alive=keep_alive)


@market.command("rebuild")
@click.option("--json", "as_json", is_flag=True, help="One JSON object with the counts.")
@click.option("--charts/--no-charts", default=True, help="Rewrite the market_slot points in InfluxDB too.")
def rebuild(as_json: bool, charts: bool) -> None:
    """Drop the read models and replay market.events from the beginning into them (stop the API first)."""
    from marketplace.rebuild import rebuild as run

    counts = asyncio.run(run(Settings(), write_charts=charts))
    if as_json:
        click.echo(json.dumps(counts, sort_keys=True))
    else:
        click.echo("rebuilt from " + ", ".join(f"{n} {kind}s" for kind, n in sorted(counts.items())))


@market.group("token")
def token() -> None:
    """API bearer tokens (only their hashes are stored)."""


@token.command("create")
@click.option("--participant", required=True, help="Who the token speaks for.")
@click.option("--role", required=True, type=click.Choice(["producer", "consumer", "operator"]))
def token_create(participant: str, role: str) -> None:
    """Issue a token and print it (once: it cannot be shown again)."""
    import re

    from marketplace import queries
    from marketplace.auth import TokenStore
    from marketplace.readmodel import ParticipantRow, ReadModel
    from marketplace.requests import ID_PATTERN

    if not re.fullmatch(ID_PATTERN, participant):
        raise click.BadParameter(f"must match {ID_PATTERN}", param_hint="--participant")
    read_model = ReadModel(Settings().sqlite_url("market"))
    try:
        if role != "operator":
            registered = queries.get(read_model.engine, ParticipantRow, participant)
            if registered is None or role not in registered.roles.split(","):
                raise click.BadParameter(
                    f"{participant!r} is not registered as a {role} (POST /v1/participants as the operator first)",
                    param_hint="--participant",
                )
        click.echo(TokenStore(read_model.engine).issue(participant, role, time.time_ns() // 1_000_000))  # type: ignore[arg-type]
    finally:
        read_model.close()
