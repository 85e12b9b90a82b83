"""``quartier simulate``."""

import click


@click.command()
def simulate() -> None:
    """Generate a simulated fleet of Linky meters into Kafka."""
    raise click.ClickException("not built yet")
