"""``quartier streams``: The stream worker (Faust agents)."""

import click


@click.group()
def streams() -> None:
    """The stream worker (Faust agents)."""
