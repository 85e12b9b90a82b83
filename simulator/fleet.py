"""The fleet: who the homes are, where they are, what they subscribed to. Fixed for a run.

Everything is drawn from the seed in one order, so the same config gives the same fleet. Homes are
then kept in shard order (the ingest contract's stable hash of the meter id), so that each shard's
readings are one contiguous slice of every per-meter array and a batch is cut without sorting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from quartier.events import shard_of
from quartier.tariffs import REGISTER_COUNT, TariffOption
from simulator.config import FleetConfig

#: The subscribed powers a French household can choose (kVA).
SUBSCRIBED_KVA = np.array([3, 6, 9, 12, 15, 18, 24, 30, 36])
# Homes heated electrically subscribe more; most others have 6 or 9 kVA.
_KVA_SHARE_WITHOUT_HEATING = np.array([0.06, 0.52, 0.28, 0.09, 0.03, 0.01, 0.005, 0.003, 0.002])
_KVA_SHARE_WITH_HEATING = np.array([0.0, 0.12, 0.40, 0.27, 0.11, 0.05, 0.03, 0.01, 0.01])

#: Tariff options, indexed by the fleet's ``tariff`` codes.
TARIFFS: tuple[TariffOption, ...] = (TariffOption.BASE, TariffOption.PEAK_OFFPEAK, TariffOption.TEMPO)
_TARIFF_SHARE = np.array([0.55, 0.38, 0.07])

#: Mainland France, where the zones are placed (degrees).
_LATITUDES = (43.3, 50.9)
_LONGITUDES = (-1.5, 7.5)


@dataclass(frozen=True)
class Zone:
    id: str
    latitude: float
    longitude: float
    producer_share: float
    #: The transformer's voltage at no load (V); homes see it minus their own drop.
    nominal_voltage: float


@dataclass
class Fleet:
    config: FleetConfig
    meter_ids: list[str]
    zones: list[Zone]
    zone_index: np.ndarray
    shard: np.ndarray
    subscribed_kva: np.ndarray
    cutoff_kva: np.ndarray
    #: Index into TARIFFS.
    tariff: np.ndarray
    producer: np.ndarray
    #: Installed peak solar power (kWp); 0 for consumers.
    pv_kwp: np.ndarray
    electric_heating: np.ndarray
    water_heater: np.ndarray
    ev: np.ndarray

    @property
    def size(self) -> int:
        return len(self.meter_ids)

    @property
    def register_count(self) -> np.ndarray:
        """Registers each meter reports (1 base, 2 peak/off-peak, 6 Tempo)."""
        counts = np.array([REGISTER_COUNT[t] for t in TARIFFS])
        return counts[self.tariff]

    def describe(self) -> list[dict[str, Any]]:
        """One plain object per home: what the demo and a person need to pick meters."""
        return [
            {
                "meter": self.meter_ids[i],
                "zone": self.zones[self.zone_index[i]].id,
                "subscribed_kva": int(self.subscribed_kva[i]),
                "cutoff_kva": int(self.cutoff_kva[i]),
                "tariff": TARIFFS[self.tariff[i]].value,
                "producer": bool(self.producer[i]),
                "pv_kwp": round(float(self.pv_kwp[i]), 1),
                "electric_heating": bool(self.electric_heating[i]),
                "water_heater": bool(self.water_heater[i]),
                "ev": bool(self.ev[i]),
            }
            for i in range(self.size)
        ]


def build_fleet(config: FleetConfig) -> Fleet:
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 1]))
    n = config.meters
    zones = _zones(rng, config.zone_count, config.producer_share)
    zone_index = _zone_members(rng, n, len(zones))

    electric_heating = rng.random(n) < 0.35
    tariff = rng.choice(len(TARIFFS), size=n, p=_TARIFF_SHARE)
    # Tempo and peak/off-peak are chosen by homes that can shift load: heating, water heater.
    electric_heating |= (tariff == 2) & (rng.random(n) < 0.5)
    kva = np.where(
        electric_heating,
        rng.choice(SUBSCRIBED_KVA, size=n, p=_KVA_SHARE_WITH_HEATING),
        rng.choice(SUBSCRIBED_KVA, size=n, p=_KVA_SHARE_WITHOUT_HEATING),
    )
    water_heater = rng.random(n) < np.where(tariff == 0, 0.35, 0.85)
    ev = (rng.random(n) < 0.07) & (kva >= 6)

    shares = np.array([z.producer_share for z in zones])
    producer = rng.random(n) < shares[zone_index]
    pv_kwp = np.where(producer, np.clip(rng.lognormal(np.log(3.5), 0.35, n), 1.5, 9.0), 0.0)

    ids = _meter_ids(rng, n)
    shard = np.array([shard_of(m, config.shards) for m in ids], dtype=np.int32)
    order = np.argsort(shard, kind="stable")
    return Fleet(
        config=config,
        meter_ids=[ids[i] for i in order],
        zones=zones,
        zone_index=zone_index[order],
        shard=shard[order],
        subscribed_kva=kva[order].astype(np.int64),
        # A Linky cuts at its subscribed power: PCOUP equals PREF.
        cutoff_kva=kva[order].astype(np.int64),
        tariff=tariff[order].astype(np.int8),
        producer=producer[order],
        pv_kwp=pv_kwp[order],
        electric_heating=electric_heating[order],
        water_heater=water_heater[order],
        ev=ev[order],
    )


def _zones(rng: np.random.Generator, count: int, producer_share: tuple[float, float]) -> list[Zone]:
    return [
        Zone(
            id=f"zone-{i + 1:04d}",
            latitude=float(rng.uniform(*_LATITUDES)),
            longitude=float(rng.uniform(*_LONGITUDES)),
            producer_share=float(rng.uniform(*producer_share)),
            nominal_voltage=float(rng.uniform(229.0, 238.0)),
        )
        for i in range(count)
    ]


def _zone_members(rng: np.random.Generator, n: int, zones: int) -> np.ndarray:
    """Zone of each home: zones of uneven size (0.5x to 1.5x the mean), neighbours contiguous."""
    weights = rng.uniform(0.5, 1.5, zones)
    sizes = np.maximum(1, np.floor(weights / weights.sum() * n)).astype(np.int64)
    # Hand out (or take back) the rounding remainder one home at a time, largest zones first.
    by_size = np.argsort(-sizes, kind="stable")
    i = 0
    while sizes.sum() != n:
        z = by_size[i % zones]
        if sizes.sum() < n:
            sizes[z] += 1
        elif sizes[z] > 1:
            sizes[z] -= 1
        i += 1
    return np.repeat(np.arange(zones, dtype=np.int32), sizes)


def _meter_ids(rng: np.random.Generator, n: int) -> list[str]:
    """12-digit ADSC addresses: manufacturer code, year of manufacture, serial number; all distinct."""
    manufacturers = np.array([2, 3, 4])
    seen: set[str] = set()
    ids: list[str] = []
    while len(ids) < n:
        want = n - len(ids)
        maker = rng.choice(manufacturers, size=want)
        year = rng.integers(15, 24, size=want)
        serial = rng.integers(0, 100_000_000, size=want)
        for m, y, s in zip(maker.tolist(), year.tolist(), serial.tolist()):
            meter = f"{m:02d}{y:02d}{s:08d}"
            if meter not in seen:
                seen.add(meter)
                ids.append(meter)
    return ids
