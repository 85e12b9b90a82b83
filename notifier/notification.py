"""The unit the delivery pipeline moves: alert transitions for one recipient on one channel.

Usually one transition; several when the group stage merged a storm into one message.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Literal
from zoneinfo import ZoneInfo

from quartier.events import AlertEvent, Channel
from notifier.contacts import Language
from notifier.sent_log import SentKey

#: Kinds that pass quiet hours: the household must act now (the meter is about to cut the power).
URGENT_KINDS = frozenset({"fuse_limit"})


def recipient_hash(address: str) -> str:
    """What the delivery log and sent log hold instead of a token or email address."""
    return hashlib.blake2b(address.strip().lower().encode(), digest_size=10).hexdigest()


@dataclass(frozen=True)
class Notification:
    alerts: tuple[AlertEvent, ...]
    channel: Channel
    address: str  # the device token or the email address: only the channel sees it
    language: Language
    user: str = ""
    zone: ZoneInfo = ZoneInfo("Europe/Paris")
    attempts: int = 0  # attempts already made (a retry carries them)
    held: bool = False  # comes from the pending table (quiet hours or a retry)
    recipient: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.recipient:
            object.__setattr__(self, "recipient", recipient_hash(self.address))

    @property
    def alert(self) -> AlertEvent:
        return self.alerts[0]

    @property
    def grouped(self) -> bool:
        return len(self.alerts) > 1

    @property
    def urgent(self) -> bool:
        return any(a.kind in URGENT_KINDS for a in self.alerts)

    @property
    def keys(self) -> tuple[SentKey, ...]:
        return tuple(SentKey(a.id, a.state, self.channel, self.recipient) for a in self.alerts)

    @property
    def key(self) -> SentKey:
        return self.keys[0]

    def with_attempts(self, attempts: int) -> "Notification":
        return replace(self, attempts=attempts)


@dataclass(frozen=True)
class Outcome:
    """What a channel did with one notification (one attempt)."""

    notification: Notification
    status: Literal["sent", "failed"]
    provider_id: str | None = None
    reason: str | None = None
    #: The address no longer exists (an unregistered device token): stop sending to it.
    address_gone: bool = False
    #: A failure that may pass if tried again later (unavailable, quota, connection lost).
    transient: bool = False
    #: The wait the provider asked for before trying again (Retry-After), in seconds.
    retry_after_s: float | None = None

    @property
    def attempts(self) -> int:
        return self.notification.attempts + 1
