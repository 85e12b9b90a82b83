"""Helpers: run the simulator without a broker and read back what it would have sent, decoded."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

import msgspec
import numpy as np

from quartier.events import IngestMessage, MeterReading, ReadingBatch, decoder
from simulator.config import FleetConfig
from simulator.encoding import BatchEncoder
from simulator.engine import Simulation
from simulator.fleet import Fleet, build_fleet

INGEST = decoder(IngestMessage)


@dataclass
class Wire:
    """Everything a run sent, as a consumer of meter.readings would see it."""

    fleet: Fleet
    simulation: Simulation
    messages: list[tuple[int, bytes]] = field(default_factory=list)
    malformed: list[tuple[str, str, bytes]] = field(default_factory=list)  # meter, kind, raw
    steps: list[float] = field(default_factory=list)  # true time of each step

    def readings(self) -> list[MeterReading]:
        out: list[MeterReading] = []
        for _shard, raw in self.messages:
            batch = INGEST.decode(raw)
            assert isinstance(batch, ReadingBatch)
            out.extend(batch.readings)
        return out

    def table(self) -> dict[str, np.ndarray]:
        """The readings as columns (one array per field, meter ids as strings), in wire order."""
        rows = [
            (r.meter, r.time_ms, r.seq, r.drawn_va, r.injected_va, r.withdrawn_wh, r.injected_wh)
            for r in self.readings()
        ]
        meter, time_ms, seq, drawn_va, injected_va, withdrawn_wh, injected_wh = zip(*rows)
        return {
            "meter": np.array(meter),
            "time_ms": np.array(time_ms),
            "hour_utc": (np.array(time_ms) / 3_600_000) % 24,
            "seq": np.array(seq),
            "drawn_va": np.array(drawn_va),
            "injected_va": np.array(injected_va),
            "withdrawn_wh": np.array(withdrawn_wh),
            "injected_wh": np.array(injected_wh),
        }

    def by_meter(self) -> dict[str, list[MeterReading]]:
        meters: dict[str, list[MeterReading]] = defaultdict(list)
        for reading in self.readings():
            meters[reading.meter].append(reading)
        return meters


def simulate(config: FleetConfig, start: datetime, steps: int) -> Wire:
    fleet = build_fleet(config)
    simulation = Simulation(fleet, start.timestamp())
    encoder = BatchEncoder(fleet)
    wire = Wire(fleet, simulation)
    for _ in range(steps):
        frame = simulation.step()
        wire.steps.append(frame.t)
        wire.messages.extend(encoder.encode(frame))
        wire.malformed.extend((fleet.meter_ids[row], kind.value, raw) for row, kind, raw in frame.malformed)
    return wire


def as_builtins(readings: list[MeterReading]) -> list[dict[str, object]]:
    return [msgspec.to_builtins(r) for r in readings]
