"""The life of an alert episode, the same for every kind: pending → raised → (held) → resolved.

Semantics (docs/alerts.md has the household's view):

- **Trigger with hysteresis.** A kind reports, per reading, whether its condition is *on* (beyond the
  threshold) or *off* (back within the clear threshold). Between the two (the hysteresis band)
  nothing changes: a pending condition keeps pending, a raised episode stays raised.
- **For.** The condition must stay on (never off) for ``for_s`` before the episode is raised. A kind
  may raise sooner when waiting would be too late (the fuse warning, before the meter cuts).
- **Episode id.** The episode starts at the meter time its condition began holding; the id is
  ``alert_id(meter, kind, start)``. Replaying the same readings after a restart gives the same
  start, so the same id, and a raised episode is in the durable state, so it is not raised again.
- **Repeat interval.** A new episode of a kind is not raised until ``repeat_s`` after the previous
  one resolved. A condition that comes back sooner stays pending; if it still holds when the
  interval has passed it is raised then (its start, so its id, is still when it began holding);
  if it clears before, nothing is said.
- **Flapping.** When an episode is about to resolve and ``flap_max_episodes`` episodes of the kind
  were raised within ``flap_window_s`` (this one included), it is held instead: it stays raised,
  the condition coming back while held counts as a recurrence of the same episode (no new raise),
  and it resolves once the condition has stayed off for ``flap_hold_s``.

Durable state (:class:`KindState`) changes only at these transitions; the pending start and the
hold's clear clock are volatile and rebuilt from the readings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Protocol

from quartier.events import AlertEvent, AlertKind
from streams.alerting.state import Episode, KindState

if TYPE_CHECKING:
    from streams.alerting.rules import CompiledRules


class LifecycleRules(Protocol):
    for_ms: int
    repeat_ms: int
    flap_max: int
    flap_window_ms: int
    flap_hold_ms: int


class Owner(Protocol):
    """Who the episodes belong to: a meter, or the operator for fleet-level alerts."""

    rules: CompiledRules | LifecycleRules
    changed: bool

    def event(
        self, kind: AlertKind, state: str, start_ms: int, value: float, threshold: float, at_ms: int,
        detail: dict[str, float],
    ) -> AlertEvent: ...


class Lifecycle:
    """One alert kind's episodes for one owner. Subclasses are the kinds; they call :meth:`step`."""

    kind: ClassVar[AlertKind]
    __slots__ = ("state", "pending_since", "clear_since")

    def __init__(self, state: KindState) -> None:
        self.state = state
        self.pending_since: int | None = None  # volatile: when the condition began holding
        self.clear_since: int | None = None  # volatile: when a held episode's condition went off

    def detail(self, owner: Owner, resolving: bool) -> dict[str, float]:
        """Extra figures for the household, computed only when an event is emitted."""
        return {}

    # --- the per-reading path -------------------------------------------------------------

    def step(
        self, owner: Owner, t: int, on: bool, off: bool, value: float, threshold: float, urgent: bool = False
    ) -> AlertEvent | None:
        episode = self.state.open
        if on:
            if episode is None:
                since = self.pending_since
                if since is None:
                    since = self.pending_since = t
                if (urgent or t - since >= owner.rules.for_ms) and self._may_raise(owner, t):
                    return self._raise(owner, t, since, value, threshold)
            elif episode.held:
                self._recur(owner)
            return None
        if off:
            self.pending_since = None
            if episode is None:
                return None
            return self.clear(owner, t, value)
        if episode is not None and episode.held:
            self.clear_since = None  # in the band: not clear, the hold starts over
        return None

    # --- transitions kinds drive directly -------------------------------------------------

    def raise_at(self, owner: Owner, t: int, start: int, value: float, threshold: float) -> AlertEvent | None:
        """The condition holds now and began at ``start`` (kinds judged at a boundary or by a timer)."""
        episode = self.state.open
        if episode is not None:
            if episode.held:
                self._recur(owner)
            return None
        if not self._may_raise(owner, t):
            return None
        return self._raise(owner, t, start, value, threshold)

    def clear(self, owner: Owner, t: int, value: float) -> AlertEvent | None:
        """The condition is off at ``t``: resolve, or start or continue a flapping hold."""
        episode = self.state.open
        if episode is None or t <= episode.start_ms:
            return None  # a replayed reading from before the episode cannot end it
        rules = owner.rules
        if not episode.held:
            if not self._flapping(owner, t):
                return self.resolve(owner, t, value)
            episode.held = True
            owner.changed = True
            self.clear_since = t
        elif self.clear_since is None:
            self.clear_since = t
        if t - self.clear_since >= rules.flap_hold_ms:
            return self.resolve(owner, t, value)
        return None

    def resolve(
        self, owner: Owner, t: int, value: float, extra: dict[str, float] | None = None
    ) -> AlertEvent | None:
        """Resolve the open episode now, whatever the hold (also used when its rule is removed)."""
        state = self.state
        episode = state.open
        if episode is None:
            return None
        state.open = None
        state.last_resolved_ms = t
        self.pending_since = None
        self.clear_since = None
        owner.changed = True
        detail = self.detail(owner, True)
        detail["duration_s"] = max(0, t - episode.start_ms) / 1000
        if episode.held:
            detail["flapping"] = 1.0
            detail["recurrences"] = float(episode.recurrences)
        if extra:
            detail.update(extra)
        return owner.event(self.kind, "resolved", episode.start_ms, value, episode.threshold, t, detail)

    # --- internals ------------------------------------------------------------------------

    def _may_raise(self, owner: Owner, t: int) -> bool:
        last = self.state.last_resolved_ms
        # t > last: a replayed reading from before the last resolution cannot raise again.
        return last is None or (t > last and t - last >= owner.rules.repeat_ms)

    def _flapping(self, owner: Owner, t: int) -> bool:
        rules = owner.rules
        recent = [x for x in self.state.recent_raises_ms if t - x < rules.flap_window_ms]
        return len(recent) >= rules.flap_max

    def _raise(self, owner: Owner, t: int, start: int, value: float, threshold: float) -> AlertEvent:
        state = self.state
        rules = owner.rules
        recent = [x for x in state.recent_raises_ms if t - x < rules.flap_window_ms]
        recent.append(t)
        state.recent_raises_ms = recent[-rules.flap_max :]
        state.open = Episode(start_ms=start, raised_ms=t, value=value, threshold=threshold)
        self.pending_since = None
        self.clear_since = None
        owner.changed = True
        return owner.event(self.kind, "raised", start, value, threshold, t, self.detail(owner, False))

    def _recur(self, owner: Owner) -> None:
        """The condition is back while the episode is held for flapping: same episode, hold restarts."""
        if self.clear_since is not None:
            self.clear_since = None
            episode = self.state.open
            assert episode is not None
            episode.recurrences += 1
            owner.changed = True
