"""Readings that satisfy the contract but not physics: a meter's energy indexes never go down.

A withdrawn (EAST) or injected (EAIT) index lower than the same meter's previous reading is a bad
frame (DESIGN.md: energy comes from index differences, so one such frame would be a negative
consumption). Only the meter's history shows it, so the check keeps each meter's last indexes in
memory; after a restart the first reading of each meter is taken as it is. A reading older than the
last one seen (a replay after a restart, or a late frame) is not judged here: the alert engine
already ignores it, and InfluxDB overwrites a point with the same series and time.
"""

from __future__ import annotations

from quartier.events import MeterReading


class IndexGuard:
    def __init__(self) -> None:
        # meter → [time_ms, withdrawn_wh, injected_wh] of its latest accepted reading (mutated in place).
        self._last: dict[str, list[int]] = {}

    def check(self, readings: list[MeterReading]) -> tuple[list[MeterReading], list[tuple[MeterReading, str]]]:
        """The readings that pass, and those that do not with the reason naming the field."""
        last_of = self._last
        rejected: list[tuple[MeterReading, str]] = []
        for r in readings:
            last = last_of.get(r.meter)
            if last is None:
                last_of[r.meter] = [r.time_ms, r.withdrawn_wh, r.injected_wh]
            elif r.time_ms > last[0]:
                if r.withdrawn_wh < last[1] or r.injected_wh < last[2]:
                    rejected.append((r, self._reason(r, last)))
                    continue
                last[0], last[1], last[2] = r.time_ms, r.withdrawn_wh, r.injected_wh
        if not rejected:
            return readings, rejected
        bad = {id(r) for r, _ in rejected}
        return [r for r in readings if id(r) not in bad], rejected

    @staticmethod
    def _reason(r: MeterReading, last: list[int]) -> str:
        field, value, before = (
            ("withdrawn_wh", r.withdrawn_wh, last[1]) if r.withdrawn_wh < last[1] else ("injected_wh", r.injected_wh, last[2])
        )
        return (
            f"{field}: index {value} Wh is below this meter's previous {before} Wh "
            f"(reading at time_ms {last[0]}); an energy index never goes down"
        )
