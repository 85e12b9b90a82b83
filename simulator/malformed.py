"""Malformed frames, so that the ingest's rejection path is exercised with real bad bytes.

A module sometimes sends garbage instead of its reading: the frame is cut short, a field has the
wrong type, or a value is impossible (negative power, a voltage no grid has, an index lower than
the meter's last one). Each malformed frame travels alone in its own Kafka message, never inside a
batch: a batch is one JSON document, and one bad reading in it would take the shard's good readings
down with it.
"""

from __future__ import annotations

from enum import StrEnum

import msgspec
import numpy as np

from quartier.events import MeterReading, encode


class Malformation(StrEnum):
    TRUNCATED = "truncated"
    WRONG_TYPE = "wrong_type"
    NEGATIVE_POWER = "negative_power"
    IMPOSSIBLE_VOLTAGE = "impossible_voltage"
    INDEX_BACKWARDS = "index_backwards"


_KINDS = tuple(Malformation)
_WRONG_TYPES = ("drawn_va", "withdrawn_wh", "time_ms", "meter", "voltage_v")


def malformed_frame(reading: MeterReading, rng: np.random.Generator) -> tuple[Malformation, bytes]:
    """A bad frame in place of ``reading``, and what is wrong with it."""
    kind = _KINDS[int(rng.integers(len(_KINDS)))]
    if kind is Malformation.TRUNCATED:
        raw = encode(reading)
        return kind, raw[: int(rng.integers(8, len(raw) - 2))]
    fields = msgspec.to_builtins(reading)
    if kind is Malformation.WRONG_TYPE:
        name = _WRONG_TYPES[int(rng.integers(len(_WRONG_TYPES)))]
        # Numbers sent as strings, and the meter address sent as a number.
        fields[name] = int(fields[name]) if name == "meter" else str(fields[name])
    elif kind is Malformation.NEGATIVE_POWER:
        fields["drawn_va"] = -int(rng.integers(1, 5000))
    elif kind is Malformation.IMPOSSIBLE_VOLTAGE:
        fields["voltage_v"] = int(rng.integers(600, 10_000))
    else:
        # Well-formed and within the contract's ranges: only the meter's history shows it is wrong.
        back = int(rng.integers(1_000, 100_000))
        fields["withdrawn_wh"] = max(0, fields["withdrawn_wh"] - back)
        registers = list(fields["withdrawn_wh_by_register"])
        active = fields["tariff_register"] - 1
        registers[active] = max(0, registers[active] - back)
        fields["withdrawn_wh_by_register"] = registers
    return kind, msgspec.json.encode(fields)
