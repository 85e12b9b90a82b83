"""The accounts events' personal fields, sealed on the way to the log and opened on the way back.

Which fields, under whose key (``quartier.sealing``; associated data: ``accounts.events``, the owner,
the field name):

| record | field | key |
|---|---|---|
| AccountCreated | email, name | the account (it has no household yet) |
| EmailChanged | email | the account |
| HouseholdCreated | name | the household |
| DeviceAdded | device_token | the household |
| NotificationsSet | alert_email | the household |

A sealed record is version 2; version 1 records (clear fields, written before sealing) still decode
and fold as they are. The fold (:mod:`accounts.state`) and the commands only ever see clear values:
:meth:`Sealing.seal` runs in :meth:`accounts.log.AccountsLog.append`, :meth:`Sealing.open` wherever the
log is read. Once an owner's key is erased, its fields open as placeholders that keep the fold's
invariants (``ERASED_NAME``, ``<account>@erased.invalid``, no alert email, ``erased:<device>``), so a
replay after an erasure holds nothing personal and the read models rebuilt from it neither.
"""

from __future__ import annotations

from typing import Any

import msgspec

from quartier import events as ev
from quartier import topics
from quartier.sealing import KeyErased, KeyStore, Sealer
from quartier.settings import Settings

TOPIC = topics.ACCOUNTS_EVENTS.name
SEALED_VERSION = 2
ERASED_NAME = "(erased)"

#: record type -> ((field, attribute naming the key's owner), ...)
SEALED_FIELDS: dict[type, tuple[tuple[str, str], ...]] = {
    ev.AccountCreated: (("email", "account"), ("name", "account")),
    ev.EmailChanged: (("email", "account"),),
    ev.HouseholdCreated: (("name", "household"),),
    ev.DeviceAdded: (("device_token", "household"),),
    ev.NotificationsSet: (("alert_email", "household"),),
}


def erased_value(event: Any, field: str) -> str | None:
    """What an erased field reads as: nothing personal, and the fold's invariants still hold."""
    if field == "email":
        return f"{event.account}@erased.invalid"  # unique per account, as emails must be
    if field == "alert_email":
        return None
    if field == "device_token":
        return f"erased:{event.device}"
    return ERASED_NAME


class Sealing:
    def __init__(self, sealer: Sealer) -> None:
        self.sealer = sealer

    @classmethod
    def open_store(cls, settings: Settings) -> Sealing:
        return cls(Sealer(KeyStore.open(settings)))

    def seal(self, event: msgspec.Struct) -> msgspec.Struct:
        """The event as it goes to the log: its personal fields sealed, version 2."""
        fields = SEALED_FIELDS.get(type(event))
        if not fields:
            return event
        changes: dict[str, Any] = {}
        for field, owner_attribute in fields:
            value = getattr(event, field)
            if isinstance(value, str):
                changes[field] = self.sealer.seal(value, owner=getattr(event, owner_attribute), topic=TOPIC, field=field)
        if not changes:
            return event
        return msgspec.structs.replace(event, v=SEALED_VERSION, **changes)

    def open(self, event: msgspec.Struct) -> msgspec.Struct:
        """The event as the fold reads it: clear values, or placeholders once the key is erased."""
        fields = SEALED_FIELDS.get(type(event))
        if not fields:
            return event
        changes: dict[str, Any] = {}
        for field, _ in fields:
            value = getattr(event, field)
            if isinstance(value, ev.SealedField):
                try:
                    changes[field] = self.sealer.open(value, topic=TOPIC, field=field)
                except KeyErased:
                    changes[field] = erased_value(event, field)
        return msgspec.structs.replace(event, **changes) if changes else event
