"""``quartier households``: the household app's commands."""

from __future__ import annotations

import asyncio
import json
import mailbox
import re
import secrets
from urllib.parse import parse_qs, urlparse

import click

from quartier.settings import Settings


def confirmation_link(maildir: str, to: str) -> re.Match[str] | None:
    """The newest confirmation link mailed to ``to`` in the local SMTP server's Maildir."""
    box = mailbox.Maildir(maildir, factory=None, create=False)
    found = None
    for message in sorted(box, key=lambda m: m.get_date()):
        if to in str(message.get("To", "")):
            body = message.get_payload(decode=True) if not message.is_multipart() else b"".join(
                part.get_payload(decode=True) or b"" for part in message.walk() if part.get_content_type() == "text/plain")
            found = re.search(r"https?://\S+/v1/accounts/confirm\?\S+", (body or b"").decode("utf-8", "replace")) or found
    return found


@click.group()
def households() -> None:
    """The household app."""


@households.command("demo-household")
@click.option("--meter", required=True, help="The meter to pair (12 digits).")
@click.option("--zone", required=True, help="Its zone.")
@click.option("--email", default=None, help="The account's email [default: demo-<meter>@demo.quartier.test].")
@click.option("--tariff", type=click.Choice(["base", "peak_offpeak", "tempo"]), default="base", show_default=True)
@click.option("--kva", type=int, default=9, show_default=True, help="Subscribed power.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object: email, password, household, meter.")
def demo_household(meter: str, zone: str, email: str | None, tariff: str, kva: int, as_json: bool) -> None:
    """A signed-up, confirmed account owning a household that paired METER, for a local demo.

    A development helper: it confirms the address with the link the local stack's SMTP server
    received (``settings.smtp.maildir``), as the person would by clicking it.
    """
    from accounts.operations import AccountOperations
    from accounts.service import AccountsService
    from quartier import pairing

    email = email or f"demo-{meter}@demo.quartier.test"
    password = secrets.token_urlsafe(12)

    async def main() -> str:
        settings = Settings()
        service = AccountsService(settings, follow_interval_s=0)
        await service.start()
        ops = AccountOperations(settings, service)
        try:
            await ops.sign_up(email=email, name="Demo household", password=password, language="en")
            link = confirmation_link(settings.smtp.maildir, email)
            if link is None:
                raise click.ClickException("no confirmation link in the mail the SMTP server received")
            await ops.confirm(parse_qs(urlparse(link.group(0)).query)["token"][0])
            account = service.state.account_by_email(email).account  # type: ignore[union-attr]
            household = await ops.create_household(account, "Demo household")
            await ops.pair(account, meter=meter, zone=zone, code=pairing.pairing_code(meter, zone))
            await ops.set_tariff(account, tariff=tariff, subscribed_kva=kva, billing_day=1)
            return household
        finally:
            await service.stop()

    household = asyncio.run(main())
    if as_json:
        click.echo(json.dumps({"email": email, "password": password, "household": household, "meter": meter}))
    else:
        click.echo(f"{email} / {password}: household {household}, meter {meter} in {zone}")
