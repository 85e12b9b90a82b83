"""What every delivery channel offers the pipeline."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from quartier.events import Channel
from notifier.notification import Notification, Outcome


class DeliveryChannel(Protocol):
    name: Channel

    async def send(self, notifications: Sequence[Notification]) -> list[Outcome]:
        """Sends each notification; one outcome per notification, in the same order. Never raises
        for one recipient's failure: that is an outcome with the reason."""
        ...

    async def close(self) -> None: ...
