"""``quartier market``: The energy marketplace."""

import click


@click.group()
def market() -> None:
    """The energy marketplace."""
