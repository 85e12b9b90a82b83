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
@click.option("--metrics-port", type=int, default=None, help="Serve Prometheus metrics on this port.")
@click.option(
    "--channel", "channels", multiple=True, type=click.Choice(["push", "email"]),
    help="Only these channels (repeat for several); default both. One process per channel uses one core each.",
)
def run(log_level: str, metrics_port: int | None, channels: tuple[str, ...]) -> None:
    """Consume alert events and notify each household, until SIGTERM or Ctrl-C."""
    from notifier.service import Notifier

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        settings = Settings() if metrics_port is None else Settings(metrics_port=metrics_port)
        stats = await Notifier.from_settings(settings, channels or ("push", "email")).run(stop)
        click.echo(f"stopped: {stats.alerts} alert events, deliveries {stats.deliveries}, rejected {stats.rejected}")

    asyncio.run(main())


@notifier.command("register")
@click.option("--meter", help="Linky meter address (12 digits).")
@click.option("--user", help="The user (household) the meter belongs to; default: the meter itself.")
@click.option("--token", "tokens", multiple=True, help="An FCM device token; repeat for several devices.")
@click.option("--email", help="Where alert emails go.")
@click.option("--language", type=click.Choice(["fr", "en"]), help="Language of notifications.")
@click.option("--time-zone", help="The user's IANA time zone (quiet hours and times shown).")
@click.option("--quiet-hours", help='Daily quiet hours, e.g. 22:00-07:00 ("" turns them off).')
@click.option("--channels", help="Channels wanted, comma-separated: push,email.")
@click.option("--mute", help="Alert kinds the user does not want, comma-separated.")
@click.option("--operator/--no-operator", default=None, help="Also receive operator-level alerts.")
@click.option("--zone", default="unassigned", show_default=True,
              help="The zone of a meter nobody has paired yet (its household is created for it).")
@click.option(
    "--from-file", "from_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="CSV with columns meter,token,email,language (one row per device) and optionally "
    "user,time_zone,quiet_hours,channels,muted_kinds; all rows or none.",
)
def register(meter: str | None, user: str | None, tokens: tuple[str, ...], email: str | None, language: str | None,
             time_zone: str | None, quiet_hours: str | None, channels: str | None, mute: str | None,
             operator: bool | None, zone: str, from_file: Path | None) -> None:
    """Register a household's devices, email and preferences for a meter (or many, from a CSV file).

    Appends accounts events (accounts.events): the devices and preferences go to the owner of the
    household that paired the meter, or to a household created for a meter nobody paired. The
    notifier's contacts follow from them (notifier/accounts_projection.py). Without --meter, --email
    names an operator's own contact."""
    from accounts.commands import Rejected
    from notifier.accounts_projection import register as append_registrations
    from notifier.contacts import RegistrationError, read_registrations, validate

    single = {
        "meter": meter, "user": user, "tokens": tokens, "email": email, "language": language,
        "time_zone": time_zone, "quiet_hours": quiet_hours, "operator": operator,
        "channels": None if channels is None else [c.strip() for c in channels.split(",") if c.strip()],
        "muted_kinds": None if mute is None else [k.strip() for k in mute.split(",") if k.strip()],
    }
    if (meter is None and user is None) == (from_file is None):
        raise click.UsageError("give either --meter/--user (with their options) or --from-file")
    try:
        if from_file is not None:
            if any(v for k, v in single.items() if k not in ("meter", "user")) or operator is not None:
                raise click.UsageError("--from-file takes no other option")
            registrations = read_registrations(from_file)
        else:
            registrations = [validate({k: v for k, v in single.items() if v is not None})]
    except RegistrationError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        asyncio.run(append_registrations(Settings(), registrations, zone))
    except Rejected as exc:
        raise click.ClickException(f"{exc.field}: {exc.reason}") from None
    devices = sum(len(r.tokens) for r in registrations)
    meters = sum(1 for r in registrations if r.meter)
    click.echo(f"registered {meters} meter(s), {devices} device(s)")
