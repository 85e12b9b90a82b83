"""The ``quartier`` command.

The core defines ``stack`` and ``demo``; each package adds its own commands through the
``quartier.commands`` entry-point group (see pyproject.toml), so the core never imports them.
"""

from __future__ import annotations

import json
import sys
from importlib.metadata import entry_points

import click

from quartier.settings import Settings


@click.group()
def main() -> None:
    """Quartier: smart-meter alerts and a neighbourhood energy market."""


@main.group()
def stack() -> None:
    """The local stack: broker, InfluxDB, chain, SMTP server, FCM endpoint on loopback."""


def _stack():
    from quartier.stack import Stack

    return Stack(Settings().state_dir)


@stack.command("up")
def stack_up() -> None:
    """Start every component that is not already running and healthy."""
    from quartier.stack import StackError

    try:
        _stack().up()
    except StackError as exc:
        raise click.ClickException(str(exc)) from None
    _print_status(as_json=False)


@stack.command("status")
@click.option("--json", "as_json", is_flag=True, help="One JSON object: healthy per component, and URLs.")
def stack_status(as_json: bool) -> None:
    """Show each component's health, address, pid and log."""
    if not _print_status(as_json):
        sys.exit(1)


@stack.command("down")
def stack_down() -> None:
    """Stop every component of the local stack."""
    stopped = _stack().down()
    click.echo(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")


def _print_status(as_json: bool) -> bool:
    statuses = _stack().status()
    healthy = all(s.healthy for s in statuses)
    if as_json:
        click.echo(json.dumps({"healthy": healthy, "components": {s.name: s.as_dict() for s in statuses}}))
        return healthy
    click.echo(f"{'component':<10} {'health':<9} {'pid':>7}  url")
    for s in statuses:
        state = "healthy" if s.healthy else ("unhealthy" if s.running else "stopped")
        click.echo(f"{s.name:<10} {state:<9} {s.pid or '-':>7}  {s.url or '-'}")
        if s.running and not s.healthy:
            click.echo(f"{'':<10} log: {s.log}")
    return healthy


@main.command()
@click.option("--meters", default=200, show_default=True)
@click.option("--duration", default=60.0, show_default=True, help="Seconds of simulated readings.")
@click.option("--json", "as_json", is_flag=True)
def demo(meters: int, duration: float, as_json: bool) -> None:
    """Run the stack, a small fleet, the stream worker and the notifier; print what each did."""
    from quartier.demo import run_demo

    def announce(app: dict) -> None:  # type: ignore[type-arg]
        # The household app, as soon as it is served: one JSON line before the summary with --json.
        if as_json:
            click.echo(json.dumps(app), nl=True)
        else:
            login = app["household_login"]
            click.echo(f"household app: {app['app_url']}  sign in as {login['email']} / {login['password']}", err=True)
            if "console_url" in app:
                operator = app["operator_login"]
                click.echo(f"operator console: {app['console_url']}  sign in as {operator['email']} / {operator['password']}", err=True)

    summary = run_demo(Settings(), meters=meters, duration_s=duration, progress=not as_json, announce=announce)
    if as_json:
        click.echo(json.dumps(summary))
    else:
        for key, value in summary.items():
            click.echo(f"{key:<22} {value}")


# --- produce (any Kafka client: docs/events.md) -----------------------------------------------


@main.command()
@click.argument("topic")
def produce(topic: str) -> None:
    """Send JSON lines from stdin to TOPIC, each checked against the topic's record type and keyed
    as its consumers expect; a bad line is reported with its number and field, and not sent."""
    import asyncio

    from quartier.produce import produce as produce_lines
    from quartier.produce import topic_named

    try:
        declared = topic_named(topic)
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    settings = Settings()
    outcome = asyncio.run(
        produce_lines(settings, declared, click.get_text_stream("stdin"), lambda e: click.echo(str(e), err=True))
    )
    click.echo(f"{outcome.sent} sent to {settings.topic(declared.name)}, {outcome.refused} refused", err=True)
    if outcome.refused:
        sys.exit(1)


def _load_plugins() -> None:
    for entry in entry_points(group="quartier.commands"):
        command = entry.load()
        main.add_command(command, entry.name)


_load_plugins()


if __name__ == "__main__":
    main()
