"""Decoding ``meter.readings`` messages: valid readings out, every invalid one kept with its reason.

A message is one ``MeterReading`` or a ``ReadingBatch`` of one shard. The whole message is decoded
in one msgspec call (the fast path). When that fails inside a batch whose envelope is valid, the
batch is decoded again reading by reading, so one bad frame costs only itself: the others go on, and
the bad one is rejected with its own bytes and the path of the offending field
(``$.readings[3].drawn_va``). A message that is not even a valid envelope is rejected whole.
"""

from __future__ import annotations

from typing import Annotated, NamedTuple

import msgspec
from msgspec import Meta

from quartier.events import ContractError, Decoder, IngestMessage, MeterReading, ReadingBatch

_message = Decoder(IngestMessage)
_reading = Decoder(MeterReading)


class _BatchEnvelope(msgspec.Struct, tag_field="type", tag="batch", forbid_unknown_fields=True):
    """A ReadingBatch with its readings left undecoded (same fields as quartier.events.ReadingBatch)."""

    shard: Annotated[int, Meta(ge=0)]
    readings: Annotated[list[msgspec.Raw], Meta(min_length=1)]
    v: int = 1


class _MeterOnly(msgspec.Struct):
    """Just enough of a rejected reading to say whose it was, when that much can be read."""

    meter: str | None = None


_envelope = msgspec.json.Decoder(_BatchEnvelope)
_meter_only = msgspec.json.Decoder(_MeterOnly)


class Rejection(NamedTuple):
    raw: bytes  # the message, or the one reading of a batch that failed
    reason: str
    meter: str | None


class Decoded(NamedTuple):
    readings: list[MeterReading]
    rejections: list[Rejection]

    @property
    def consumed(self) -> int:
        """Readings this message carried, valid or not (an undecodable message counts as one)."""
        return len(self.readings) + len(self.rejections)


def decode_message(value: bytes | None) -> Decoded:
    """Never raises: what cannot be used is returned as rejections, each naming the field."""
    if value is None:
        return Decoded([], [Rejection(b"", "empty message: no value (a tombstone?)", None)])
    try:
        message = _message.decode(value)
    except ContractError as error:
        return _salvage(value, str(error))
    if isinstance(message, ReadingBatch):
        return Decoded(message.readings, [])
    return Decoded([message], [])  # type: ignore[list-item]


def _salvage(value: bytes, reason: str) -> Decoded:
    try:
        envelope = _envelope.decode(value)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return Decoded([], [Rejection(value, reason, _meter_of(value))])
    readings: list[MeterReading] = []
    rejections: list[Rejection] = []
    for index, raw in enumerate(envelope.readings):
        item = bytes(raw)
        try:
            readings.append(_reading.decode(item))  # type: ignore[arg-type]
        except ContractError as error:
            rejections.append(Rejection(item, _within(str(error), f"$.readings[{index}]"), _meter_of(item)))
    if not rejections:  # cannot happen unless the two decoders disagree; never drop the message
        return Decoded([], [Rejection(value, reason, None)])
    return Decoded(readings, rejections)


def _within(reason: str, where: str) -> str:
    """msgspec's path is relative to the reading; make it point into the batch."""
    if "`$" in reason:
        return reason.replace("`$", f"`{where}")
    return f"{reason} - at `{where}`"


def _meter_of(value: bytes) -> str | None:
    try:
        meter = _meter_only.decode(value).meter
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    return meter if isinstance(meter, str) and len(meter) <= 64 else None
