"""``quartier notifier``: Push and email notifications."""

import click


@click.group()
def notifier() -> None:
    """Push and email notifications."""
