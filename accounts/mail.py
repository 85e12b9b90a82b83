"""Account mail (confirmation links, a sign-up attempt on an address in use), sent over SMTP.

The same path as the notifier's alert emails: aiosmtplib to ``settings.smtp`` (STARTTLS verified
against its CA file, AUTH when a user is set). One connection per mail: people sign up at a human
rate, so a pool would only hold a connection open.
"""

from __future__ import annotations

import ssl
from email.message import EmailMessage
from urllib.parse import quote

import aiosmtplib

from quartier.settings import Settings

_TEXT = {
    "confirm": {
        "fr": ("Confirmez votre adresse Quartier", "Bonjour {name},\n\nPour confirmer votre adresse, ouvrez ce lien :\n{link}\n\nIl ne sert qu'une fois."),
        "en": ("Confirm your Quartier address", "Hello {name},\n\nTo confirm your address, open this link:\n{link}\n\nIt works once."),
    },
    "exists": {
        "fr": ("Votre compte Quartier", "Bonjour,\n\nQuelqu'un a voulu créer un compte Quartier avec cette adresse, qui en a déjà un.\nSi c'était vous, connectez-vous : {url}"),
        "en": ("Your Quartier account", "Hello,\n\nSomeone tried to sign up to Quartier with this address, which already has an account.\nIf it was you, sign in: {url}"),
    },
}


def confirmation_link(settings: Settings, token: str) -> str:
    return f"{settings.accounts.public_url.rstrip('/')}/v1/accounts/confirm?token={quote(token)}"


class AccountMailer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        smtp = settings.smtp
        self._tls = ssl.create_default_context(cafile=smtp.ca_file or None) if smtp.starttls else None

    async def send(self, to: str, subject: str, body: str) -> None:
        smtp = self.settings.smtp
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = smtp.sender, to, subject
        message.set_content(body)
        await aiosmtplib.send(
            message, hostname=smtp.host, port=smtp.port, start_tls=smtp.starttls, tls_context=self._tls,
            username=smtp.username or None, password=smtp.password or None, timeout=10,
        )

    async def confirmation(self, to: str, name: str, language: str, token: str) -> None:
        subject, body = _TEXT["confirm"]["en" if language == "en" else "fr"]
        await self.send(to, subject, body.format(name=name, link=confirmation_link(self.settings, token)))

    async def already_registered(self, to: str, language: str) -> None:
        subject, body = _TEXT["exists"]["en" if language == "en" else "fr"]
        await self.send(to, subject, body.format(url=self.settings.accounts.public_url))
