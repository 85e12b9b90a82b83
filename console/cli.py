"""``quartier console run``: the fleet projection and the campaign runner as one process."""

from __future__ import annotations

import asyncio
import signal

import click


@click.group()
def console() -> None:
    """The operator console."""


@console.command("run")
def run_console() -> None:
    """Follow the fleet into the projection and run the firmware campaigns until stopped."""
    from console.service import build
    from quartier.settings import Settings

    async def main() -> None:
        service = build(Settings())
        await service.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await service.run(stop)
        finally:
            await service.stop()

    asyncio.run(main())


@console.command("operator")
@click.option("--email", required=True, help="The operator's sign-in address.")
@click.option("--password", required=True, help="The operator's password (at least what accounts asks for).")
@click.option("--name", default="Operator", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print {email, account} as JSON.")
def create_operator(email: str, password: str, name: str, as_json: bool) -> None:
    """Create a confirmed account with the operator role (a demo's or a new deployment's first operator)."""
    import json

    from accounts import commands, passwords
    from accounts.commands import Rejected, digest
    from accounts.operations import new_account_id, new_secret
    from accounts.service import AccountsService
    from quartier.settings import Settings

    async def main() -> str:
        settings = Settings()
        service = AccountsService(settings, follow_interval_s=0)
        await service.start()
        try:
            if reason := passwords.weakness(password):
                raise Rejected(422, "invalid", f"a password needs {reason}", "password")
            password_hash = await asyncio.to_thread(passwords.hash_password, password)
            token = new_secret()
            account = new_account_id()
            created = await service.execute(lambda state, now: commands.sign_up(
                state, account=account, email=email, name=name, password_hash=password_hash, language="en",
                token_sha256=digest(token), now_ms=now, ttl_ms=3_600_000))
            if not created:
                raise Rejected(409, "conflict", "an account with this address exists", "email")
            # The link is spent at once: this command stands for the person who reads the mail.
            await service.execute(lambda state, now: commands.confirm_email(state, digest(token), now))
            await service.execute(lambda state, now: commands.grant_role(state, "cli", email=email, role="operator", now_ms=now))
            return account
        finally:
            await service.stop()

    try:
        account = asyncio.run(main())
    except Rejected as exc:
        raise click.ClickException(f"{exc.field}: {exc.reason}" if exc.field else exc.reason) from None
    click.echo(json.dumps({"email": email, "account": account}) if as_json else f"operator {email} ({account})")
