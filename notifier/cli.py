"""``quartier notifier``: push and email notifications of alert transitions."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

import click

from quartier.settings import Settings


@click.group()
def notifier() -> None:
    """Push and email notifications."""


@notifier.command("run")
@click.option("--log-level", default="INFO", show_default=True)
def run(log_level: str) -> None:
    """Consume alert events and notify each household, until SIGTERM or Ctrl-C."""
    from notifier.service import Notifier

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        stats = await Notifier.from_settings(Settings()).run(stop)
        click.echo(f"stopped: {stats.alerts} alert events, deliveries {stats.deliveries}, rejected {stats.rejected}")

    asyncio.run(main())


@notifier.command("register")
@click.option("--meter", help="Linky meter address (12 digits).")
@click.option("--token", "tokens", multiple=True, help="An FCM device token; repeat for several devices.")
@click.option("--email", help="Where alert emails go.")
@click.option("--language", type=click.Choice(["fr", "en"]), help="Language of notifications.")
@click.option(
    "--from-file", "from_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="CSV with columns meter,token,email,language (one row per device); all rows or none.",
)
def register(meter: str | None, tokens: tuple[str, ...], email: str | None, language: str | None,
             from_file: Path | None) -> None:
    """Register a household's devices, email and language for a meter (or many, from a CSV file)."""
    from notifier.contacts import ContactStore, RegistrationError, read_registrations, validate
    from notifier.database import notifier_engine

    if (meter is None) == (from_file is None):
        raise click.UsageError("give either --meter (with --token/--email/--language) or --from-file")
    try:
        if from_file is not None:
            if tokens or email or language:
                raise click.UsageError("--from-file takes no --token, --email or --language")
            registrations = read_registrations(from_file)
        else:
            registrations = [validate({"meter": meter, "tokens": tokens, "email": email, "language": language})]
    except RegistrationError as exc:
        raise click.ClickException(str(exc)) from None
    ContactStore(notifier_engine(Settings())).register(registrations)
    devices = sum(len(r.tokens) for r in registrations)
    click.echo(f"registered {len(registrations)} meter(s), {devices} device(s)")
