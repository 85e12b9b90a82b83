"""The unit the delivery pipeline moves: one alert transition, for one recipient, on one channel."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

from quartier.events import AlertEvent, Channel
from notifier.contacts import Language
from notifier.sent_log import SentKey


def recipient_hash(address: str) -> str:
    """What the delivery log and sent log hold instead of a token or email address."""
    return hashlib.blake2b(address.strip().lower().encode(), digest_size=10).hexdigest()


@dataclass(frozen=True)
class Notification:
    alert: AlertEvent
    channel: Channel
    address: str  # the device token or the email address: only the channel sees it
    language: Language

    @property
    def recipient(self) -> str:
        return recipient_hash(self.address)

    @property
    def key(self) -> SentKey:
        return SentKey(self.alert.id, self.alert.state, self.channel, self.recipient)


@dataclass(frozen=True)
class Outcome:
    """What a channel did with one notification."""

    notification: Notification
    status: Literal["sent", "failed"]
    attempts: int
    provider_id: str | None = None
    reason: str | None = None
    #: The address no longer exists (an unregistered device token): stop sending to it.
    address_gone: bool = False
