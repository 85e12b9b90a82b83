"""``quartier chain``: The settlement contracts on the chain."""

import click


@click.group()
def chain() -> None:
    """The settlement contracts on the chain."""
