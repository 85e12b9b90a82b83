"""``quartier accounts``: rebuild the read models, grant roles, print pairing codes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import TypeVar

import click

from quartier.settings import Settings

T = TypeVar("T")


@click.group()
def accounts() -> None:
    """People, households, pairings and roles."""


@accounts.command("rebuild")
@click.option("--json", "as_json", is_flag=True, help="One JSON object with the counts.")
def rebuild(as_json: bool) -> None:
    """Drop the read models and fold accounts.events from the beginning into them again."""
    from accounts.service import rebuild as run

    counts = asyncio.run(run(Settings()))
    if as_json:
        click.echo(json.dumps(counts, sort_keys=True))
    else:
        click.echo("rebuilt from " + ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items())))


def _with_operations(use: Callable[..., Awaitable[T]]) -> T:
    from accounts.operations import AccountOperations
    from accounts.service import AccountsService

    async def main() -> T:
        settings = Settings()
        service = AccountsService(settings, follow_interval_s=0)
        await service.start()
        try:
            return await use(AccountOperations(settings, service))
        finally:
            await service.stop()

    return asyncio.run(main())


@accounts.command("grant")
@click.argument("email")
@click.argument("role", type=click.Choice(["operator", "support"]))
@click.option("--revoke", is_flag=True, help="Take the role away instead.")
def grant(email: str, role: str, revoke: bool) -> None:
    """Grant ROLE to the account with EMAIL (the first operator is made this way)."""
    from accounts.commands import Rejected

    try:
        changed = _with_operations(lambda ops: ops.grant("cli", email, role, revoke=revoke))
    except Rejected as exc:
        raise click.ClickException(f"{exc.field}: {exc.reason}" if exc.field else exc.reason) from None
    verb = "revoked from" if revoke else "granted to"
    click.echo(f"{role} {verb} {email}" if changed else f"nothing to do: {email} already {'lacks' if revoke else 'has'} {role}")
