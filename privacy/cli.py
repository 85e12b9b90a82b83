"""``quartier privacy``: the access log's verification, anonymisation, and the privacy service."""

from __future__ import annotations

import json
import sys

import click

from quartier.settings import Settings


@click.group()
def privacy() -> None:
    """Personal data: access log, anonymisation after a year (docs/privacy.md)."""


@privacy.command("verify-log")
@click.option("--json", "as_json", is_flag=True, help="One JSON object: ok, entries, head, problem, seq.")
def verify_log(as_json: bool) -> None:
    """Recompute the access log's hash chain; exit status 1 if an entry was changed, removed or reordered."""
    from privacy.access_log import AccessLog

    verification = AccessLog.open(Settings()).verify()
    if as_json:
        click.echo(json.dumps(verification.as_dict()))
    elif verification.ok:
        click.echo(f"access log intact: {verification.entries} entries, head {verification.head}")
    else:
        click.echo(f"access log BROKEN: {verification.problem}", err=True)
    sys.exit(0 if verification.ok else 1)


@privacy.command("anonymise")
@click.option("--json", "as_json", is_flag=True)
def anonymise(as_json: bool) -> None:
    """Run the anonymisation once: detail older than privacy.anonymise_after_days becomes zone aggregates."""
    from privacy.anonymise import Anonymiser

    report = Anonymiser(Settings()).run()
    click.echo(json.dumps(report.as_dict()) if as_json else
               "\n".join(f"{key:<16} {value}" for key, value in report.as_dict().items()))


@privacy.command("run")
def run() -> None:
    """Run the privacy service: the anonymisation job on its schedule (APScheduler), until stopped."""
    import asyncio
    import logging

    from privacy.anonymise import start_scheduler
    from privacy.database import privacy_engine

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    async def serve() -> None:
        settings = Settings()
        scheduler = start_scheduler(settings, privacy_engine(settings, []))
        try:
            await asyncio.Event().wait()
        finally:
            scheduler.shutdown(wait=False)

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass
