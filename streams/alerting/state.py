"""The durable part of the alert state: what must survive a worker's restart.

It changes only on transitions (an episode raised, held or resolved) and at period boundaries (a new
local day or month), so the agents write it to their changelog-backed table rarely; everything that
changes on every reading (last seen time, pending conditions, the fuse filter) is volatile and is
rebuilt from the stream after a restart. The records are msgspec structs, encoded as JSON.
"""

from __future__ import annotations

import msgspec


class Episode(msgspec.Struct, kw_only=True):
    """An alert episode that has been raised and not yet resolved."""

    start_ms: int  # meter time the condition began holding: with meter and kind, the episode's id
    raised_ms: int
    value: float  # the value when raised
    threshold: float
    # Flapping: the episode is held raised until its condition has stayed clear for the hold time.
    held: bool = False
    recurrences: int = 0  # times the condition came back while held


class KindState(msgspec.Struct, kw_only=True):
    """One alert kind's durable lifecycle for one meter."""

    open: Episode | None = None
    last_resolved_ms: int | None = None  # the repeat interval counts from here
    recent_raises_ms: list[int] = []  # raise times inside the flapping window, oldest first


class DayState(msgspec.Struct, kw_only=True):
    """The current local day: its bounds and the meter's indexes when it began."""

    start_ms: int
    end_ms: int
    base_ms: int  # meter time of the reading the baseline indexes come from
    base_wh: int  # withdrawn index (EAST) at the baseline
    base_registers: tuple[int, ...]  # per-register withdrawn indexes at the baseline (priced registers only)
    prices: tuple[float, ...]  # EUR per kWh of each register, in force this day
    # True when the baseline was taken at the rollover from the day before: the day is measured whole.
    complete: bool


class MonthState(msgspec.Struct, kw_only=True):
    """The current local month: spending of its closed days, the current day's comes on top."""

    start_ms: int
    end_ms: int
    base_ms: int
    carried_eur: float = 0.0
    complete: bool


class MeterDurable(msgspec.Struct, kw_only=True):
    """Everything about one meter's alerts that a restarted worker needs back."""

    v: int = 1
    kinds: dict[str, KindState] = {}
    day: DayState | None = None
    month: MonthState | None = None
    cadence_ms: float = 0.0  # the meter's learned reading interval, saved at each day boundary


class FleetDurable(msgspec.Struct, kw_only=True):
    """The operator-level state of one engine (one worker's share of the fleet)."""

    v: int = 1
    ingest_down: KindState = msgspec.field(default_factory=KindState)


_encoder = msgspec.json.Encoder()
_meter_decoder = msgspec.json.Decoder(MeterDurable)
_fleet_decoder = msgspec.json.Decoder(FleetDurable)


def encode_state(state: MeterDurable | FleetDurable) -> bytes:
    return _encoder.encode(state)


def decode_meter(data: bytes) -> MeterDurable:
    return _meter_decoder.decode(data)


def decode_fleet(data: bytes) -> FleetDurable:
    return _fleet_decoder.decode(data)
