"""Metered energy per meter and 15-minute slot, from index differences: what the market settles on.

For each meter, a slot's imported (withdrawn, EAST) and exported (injected, EAIT) energy is the
difference of the indexes at the slot's two boundaries. A boundary rarely falls on a reading, so its
index is interpolated linearly between the readings on either side of it (for a meter reporting
every second, at most a second's energy is split by estimate). Each boundary is rounded to whole Wh
once and used as the end of one slot and the start of the next, so consecutive slots add up exactly
to the index difference: no energy is lost or counted twice, whatever readings are missing.

``completeness`` is the share of the slot's time covered by readings: an interval between two
consecutive readings counts when they are at most ``max_gap_s`` apart (a minute by default: within
that, how the energy spreads inside the interval hardly matters). A slot the meter was silent through
gets its share of the gap's energy by the same interpolation, with completeness 0.

A slot is closed, and its :class:`SlotEnergy` emitted, by the first reading after its end; or by
:meth:`SlotTracker.close_due`, run by a timer, once ``grace_s`` has passed after its end without
one. Then the boundary index is the last reading's (nothing is extrapolated) and the energy after
that reading goes to the slots after it. The first slot a meter is seen in starts at its first reading
(the energy before is unknown), so its completeness says how much of it was seen.

State is in memory: after a restart the slot in progress is rebuilt from the replayed readings, with
the completeness that replay supports; records are keyed by (meter, slot start), so a consumer keeps
the most complete one.
"""

from __future__ import annotations

from dataclasses import dataclass

from quartier.events import MeterReading, SlotEnergy

SLOT_MS = 15 * 60 * 1000


def slot_start(t_ms: int) -> int:
    """The slot containing ``t_ms``: slots are aligned on the quarter hour (UTC, so local too)."""
    return t_ms - t_ms % SLOT_MS


@dataclass(frozen=True, slots=True)
class SlotPolicy:
    max_gap_s: float = 60.0
    grace_s: float = 60.0


class _MeterSlot:
    """One meter's slot in progress."""

    __slots__ = (
        "meter", "zone", "start", "end", "start_in", "start_out", "covered", "cursor_t", "cursor_in",
        "cursor_out", "last_t", "last_in", "last_out",
    )

    def __init__(self, r: MeterReading) -> None:
        t = r.time_ms
        self.meter = r.meter
        self.zone = r.zone
        self.start = slot_start(t)
        self.end = self.start + SLOT_MS
        self.start_in = r.withdrawn_wh
        self.start_out = r.injected_wh
        self.covered = 0
        # The point up to which energy has been attributed to slots (a reading or a boundary).
        self.cursor_t, self.cursor_in, self.cursor_out = t, float(r.withdrawn_wh), float(r.injected_wh)
        self.last_t, self.last_in, self.last_out = t, r.withdrawn_wh, r.injected_wh

    def close(self, boundary_in: int, boundary_out: int) -> SlotEnergy:
        record = SlotEnergy(
            meter=self.meter, zone=self.zone, slot_start_ms=self.start,
            imported_wh=max(0, boundary_in - self.start_in), exported_wh=max(0, boundary_out - self.start_out),
            completeness=min(1.0, self.covered / SLOT_MS),
        )
        self.start = self.end
        self.end += SLOT_MS
        self.start_in = boundary_in
        self.start_out = boundary_out
        self.covered = 0
        return record


class SlotTracker:
    def __init__(self, policy: SlotPolicy | None = None) -> None:
        self.policy = policy or SlotPolicy()
        self._max_gap_ms = round(self.policy.max_gap_s * 1000)
        self._grace_ms = round(self.policy.grace_s * 1000)
        self._meters: dict[str, _MeterSlot] = {}
        self.stale_readings = 0  # duplicates or out of order: already accounted for
        self.late_readings = 0  # after their slot was closed by the timer: counted in the next slot

    def on_reading(self, r: MeterReading) -> list[SlotEnergy]:
        """Slots this reading closes (usually none)."""
        slot = self._meters.get(r.meter)
        if slot is None:
            self._meters[r.meter] = _MeterSlot(r)
            return []
        t = r.time_ms
        last_t = slot.last_t
        if t <= last_t:
            self.stale_readings += 1
            return []
        slot.zone = r.zone
        gap_covered = t - last_t <= self._max_gap_ms
        w, x = r.withdrawn_wh, r.injected_wh
        slot.last_t, slot.last_in, slot.last_out = t, w, x
        if t <= slot.cursor_t:
            self.late_readings += 1  # its slot is closed; the index difference lands in this one
            return []
        closed: list[SlotEnergy] = []
        while t >= slot.end:
            boundary = slot.end
            # Linear interpolation between the attributed point and this reading.
            share = (boundary - slot.cursor_t) / (t - slot.cursor_t)
            at_in = slot.cursor_in + (w - slot.cursor_in) * share
            at_out = slot.cursor_out + (x - slot.cursor_out) * share
            if gap_covered:
                slot.covered += boundary - slot.cursor_t
            slot.cursor_t, slot.cursor_in, slot.cursor_out = boundary, at_in, at_out
            closed.append(slot.close(round(at_in), round(at_out)))
        if gap_covered:
            slot.covered += t - slot.cursor_t
        slot.cursor_t, slot.cursor_in, slot.cursor_out = t, float(w), float(x)
        return closed

    def close_due(self, now_ms: int) -> list[SlotEnergy]:
        """Close each meter's slot that has its last reading and ended more than ``grace_s`` ago.

        Only that slot: the slots a meter is silent through are closed when it reports again, with
        their share of the gap's energy (completeness 0), rather than now as empty and the whole gap's
        energy later in one slot.
        """
        closed = []
        deadline = now_ms - self._grace_ms
        for slot in self._meters.values():
            if slot.end <= deadline and slot.start <= slot.last_t < slot.end:
                boundary = slot.end
                closed.append(slot.close(slot.last_in, slot.last_out))
                # What comes after the last reading is attributed to the slots after this one.
                slot.cursor_t, slot.cursor_in, slot.cursor_out = boundary, float(slot.last_in), float(slot.last_out)
        return closed
