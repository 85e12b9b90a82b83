"""What household members snoozed, folded from ``households.alert_actions``.

A member snoozes an episode in the app (``AlertSnoozed``): no new episode of that kind on that meter
is notified before the snooze ends, on any channel, to any member. The fold keeps, per (meter,
kind), the latest end any member asked for; a v1 record, which does not say its kind, snoozes its
own episode's id only. It lives in memory and is rebuilt from the topic's start when the notifier
starts (``quartier.kafka.follow_topic``): snoozes last a week at most, so the fold stays small.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from quartier.events import AlertAction, AlertSnoozed


@dataclass
class Snoozes:
    by_kind: dict[tuple[str, str], int] = field(default_factory=dict)  # (meter, kind) -> until ms
    by_episode: dict[str, int] = field(default_factory=dict)  # alert id -> until ms (v1 records)

    def apply(self, event: AlertAction) -> None:
        if not isinstance(event, AlertSnoozed):
            return  # an acknowledgement changes nothing the notifier sends
        if event.kind is None:
            self.by_episode[event.alert_id] = max(event.until_ms, self.by_episode.get(event.alert_id, 0))
            return
        key = (event.meter, event.kind)
        self.by_kind[key] = max(event.until_ms, self.by_kind.get(key, 0))

    def reset(self) -> None:
        self.by_kind.clear()
        self.by_episode.clear()

    def until_ms(self, alert_id: str, meter: str | None, kind: str, now_ms: int) -> int | None:
        """The end of the snooze covering this alert at ``now_ms``, or None."""
        until = max(self.by_episode.get(alert_id, 0), self.by_kind.get((meter, kind), 0) if meter else 0)
        return until if until > now_ms else None
