"""A household's alert preferences: validated by the engine's own rules, appended to ``alerts.rules``.

One validation, not two: the record is :class:`quartier.events.AlertRules` (msgspec checks each
field while converting the request, naming it) and :func:`streams.alerting.rules.compile_rules`
judges what only the engine can (a minimum above its maximum, an unknown time zone), raising the
engine's ``RuleError``; both become a 422 naming the field. The record is keyed by the
household's meter, as the worker reads it.

The current rules are read back from ``alerts.rules`` itself (the latest record per meter wins, as
in the worker): read once at start, then kept as this process appends them.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
from aiokafka import AIOKafkaProducer

from quartier import events as ev
from quartier import kafka, topics
from quartier.settings import Settings
from streams.alerting.rules import RuleError, compile_rules

from accounts.commands import Rejected, invalid

#: Fields the household does not set: the meter is its paired one, the time of the change is now.
_SERVER_FIELDS = ("meter", "updated_ms", "type", "v")
_FIELD = re.compile(r"^\$\.(\w+)")


def editable_fields() -> tuple[str, ...]:
    return tuple(f for f in ev.AlertRules.__struct_fields__ if f not in _SERVER_FIELDS)


def rules_from_request(meter: str, body: dict[str, Any], now_ms: int, *, default_tariff: str | None = None) -> ev.AlertRules:
    """The record for ``meter`` from a request body (every field optional; unknown ones refused)."""
    unknown = sorted(set(body) - set(editable_fields()))
    if unknown:
        raise invalid(unknown[0], "unknown field")
    values = dict(body)
    if default_tariff is not None:
        values.setdefault("tariff", default_tariff)
    try:
        record = msgspec.convert({**values, "meter": meter, "updated_ms": now_ms}, ev.AlertRules)
    except msgspec.ValidationError as exc:
        text = str(exc)
        found = re.search(r"at `\$\.(\w+)", text)
        raise invalid(found.group(1) if found else "body", text) from None
    try:
        compile_rules(record)
    except RuleError as exc:
        text = str(exc)
        field = re.match(r"^(\w+)", text)
        raise invalid(field.group(1) if field else "body", text) from None
    return record


def as_body(record: ev.AlertRules) -> dict[str, Any]:
    data = msgspec.to_builtins(record)
    return {k: v for k, v in data.items() if k not in ("type", "v")}


class AlertRulesLog:
    """Appends households' rules to ``alerts.rules`` and remembers the latest per meter."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = settings.topic(topics.ALERTS_RULES.name)
        self.latest: dict[str, ev.AlertRules] = {}
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        await kafka.ensure_topics(self.settings, [topics.ALERTS_RULES])
        decoder = ev.decoder(ev.AlertRules)
        for record in await kafka.read_records(self.settings, self.topic):
            if record.value is None:
                self.latest.pop((record.key or b"").decode(), None)
                continue
            try:
                rules = decoder.decode(record.value)
            except ev.ContractError:
                continue  # the worker rejects it too; it changes nothing
            self.latest[rules.meter] = rules  # type: ignore[attr-defined]
        producer = AIOKafkaProducer(**{**kafka.producer_config(self.settings), "linger_ms": 0})
        await producer.start()
        self._producer = producer

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def put(self, record: ev.AlertRules) -> None:
        if self._producer is None:
            raise Rejected(503, "unavailable", "alert rules cannot be saved right now")
        await self._producer.send_and_wait(self.topic, ev.encode(record), key=record.meter.encode())
        self.latest[record.meter] = record
