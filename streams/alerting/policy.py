"""Engine-wide settings that are the operator's, not the household's (those are in AlertRules)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FleetPolicy:
    # Deadman: a meter is disconnected once silent for this many of its own reading intervals...
    deadman_cadences: float = 10.0
    # ...and never sooner than this (a Wi-Fi module reconnecting takes a few seconds).
    deadman_min_s: float = 30.0
    # The interval assumed for a meter seen only once, until it has shown its own.
    default_cadence_s: float = 1.0
    # Ingest down: no reading at all for this long. Shorter than deadman_min_s, so a stopped ingest
    # is recognised as one outage before any meter looks disconnected on its own.
    ingest_silence_s: float = 15.0
    # Ingest down also when at least this share of the known meters is silent at once...
    ingest_silent_share: float = 0.5
    # ...judged only with at least this many known meters (with three meters, one silent meter is
    # a third of the fleet and a whole fleet going quiet is indistinguishable from three outages).
    inhibit_min_meters: int = 10

    def __post_init__(self) -> None:
        if self.ingest_silence_s >= self.deadman_min_s:
            raise ValueError(
                "ingest_silence_s must be shorter than deadman_min_s, or a stopped ingest would first "
                f"look like every meter disconnecting (got {self.ingest_silence_s} >= {self.deadman_min_s})"
            )
        if not 0 < self.ingest_silent_share <= 1:
            raise ValueError(f"ingest_silent_share must be in (0, 1], got {self.ingest_silent_share}")
