"""The fast batch encoder writes exactly what msgspec writes for the same records."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pytest

from quartier.events import ReadingBatch, encode, shard_of
from simulator.config import FleetConfig
from simulator.encoding import BatchEncoder
from simulator.engine import Simulation
from simulator.fleet import build_fleet

from .conftest import INGEST

START = datetime(2025, 1, 15, 20, 55, tzinfo=timezone.utc)  # five minutes before off-peak opens


def _check_identical(simulation: Simulation, encoder: BatchEncoder, steps: int) -> int:
    checked = 0
    for _ in range(steps):
        frame = simulation.step()
        expected = simulation.readings(frame)
        at = 0
        for shard, message in encoder.encode(frame):
            batch = INGEST.decode(message)
            assert isinstance(batch, ReadingBatch) and batch.shard == shard
            count = len(batch.readings)
            assert message == encode(ReadingBatch(shard=shard, readings=expected[at : at + count]))
            assert all(shard_of(r.meter, encoder.shards) == shard for r in batch.readings)
            at += count
            checked += count
        assert at == len(expected)
    return checked


def test_batches_are_byte_identical_to_msgspec_across_a_tariff_switch() -> None:
    fleet = build_fleet(FleetConfig(meters=500, zones=3, seed=21, malformed_fraction=0.01))
    simulation = Simulation(fleet, START.timestamp())
    # 400 s: every tariff, registers moving, the 22:00 switch of active register, outages.
    assert _check_identical(simulation, BatchEncoder(fleet), steps=400) > 190_000


def test_numbers_gaining_a_digit_are_written_whole() -> None:
    fleet = build_fleet(FleetConfig(meters=60, seed=22, disconnects=False, malformed_fraction=0.0))
    simulation = Simulation(fleet, START.timestamp())
    encoder = BatchEncoder(fleet)
    _check_identical(simulation, encoder, steps=2)
    # Put every index just below a power of ten, so that they roll over to one more digit.
    simulation.withdrawn_acc_wh[:] = np.where(simulation.withdrawn_acc_wh > 0, 9_999_999.9, 0.0)
    simulation.injected_acc_wh[:] = 99_999.95
    simulation.seq[:] = 99_999
    _check_identical(simulation, encoder, steps=30)


def test_a_large_shard_is_split_into_several_messages_under_the_size_cap() -> None:
    fleet = build_fleet(FleetConfig(meters=400, seed=23, shards=2))
    encoder = BatchEncoder(fleet, max_message_bytes=20_000)
    simulation = Simulation(fleet, START.timestamp())
    frame = simulation.step()
    messages = encoder.encode(frame)
    assert len(messages) > 2
    assert max(len(m) for _s, m in messages) <= 20_000
    readings = [r for _s, m in messages for r in INGEST.decode(m).readings]
    assert readings == simulation.readings(frame)


def test_out_of_range_values_are_refused_not_truncated() -> None:
    fleet = build_fleet(FleetConfig(meters=10, seed=24))
    simulation = Simulation(fleet, START.timestamp())
    encoder = BatchEncoder(fleet)
    frame = simulation.step()
    frame.drawn_va[:] = 1_000_000  # seven digits where the contract allows six
    with pytest.raises(ValueError, match="out of the encoder's range"):
        encoder.encode(frame)
