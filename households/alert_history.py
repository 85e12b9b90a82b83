"""A home's alert episodes, from InfluxDB's alert history, with what its members did about them.

The stream worker writes every transition to the ``alert`` measurement (``streams.line_protocol``):
one ``raised`` point and one ``resolved`` point per episode, both carrying the deterministic episode
id. An episode is listed by its raise, newest first, one page at a time (``before_ms`` is the page's
cursor: the raise time of the last episode of the previous page).

Acknowledging and snoozing are commands: they check the episode is this home's and return the events
to append to ``households.alert_actions``; ``AlertActions`` folds that log back into each episode's
state (a pure fold, no clock: replaying the log gives the same answer).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from households.home import Home
from quartier.events import AlertAcknowledged, AlertAction, AlertSnoozed
from quartier.settings import Settings
from quartier.influx import influx_query, quote_string

PAGE_MAX = 100
#: A snooze lasts at least five minutes and at most a week.
SNOOZE_MIN_S = 300
SNOOZE_MAX_S = 7 * 86_400


@dataclass(frozen=True)
class Episode:
    id: str
    kind: str
    raised_ms: int
    episode_start_ms: int
    value: float
    threshold: float
    resolved_ms: int | None
    resolved_value: float | None
    detail: dict[str, float]


@dataclass
class EpisodeActions:
    acknowledged_by: str | None = None
    acknowledged_ms: int | None = None
    snoozed_until_ms: int | None = None
    snoozed_by: str | None = None


@dataclass
class AlertActions:
    """The fold of ``households.alert_actions``: episode id -> what members did."""

    episodes: dict[str, EpisodeActions] = field(default_factory=dict)

    def apply(self, event: AlertAction) -> None:
        state = self.episodes.setdefault(event.alert_id, EpisodeActions())
        if isinstance(event, AlertAcknowledged):
            if state.acknowledged_ms is None:  # the first acknowledgement is the one shown
                state.acknowledged_by, state.acknowledged_ms = event.by, event.at_ms
        else:
            state.snoozed_until_ms, state.snoozed_by = event.until_ms, event.by

    def of(self, alert_id: str) -> EpisodeActions:
        return self.episodes.get(alert_id, EpisodeActions())


class NotFound(LookupError):
    """No such episode for this home (another home's episode is not found either)."""


def _episode_rows(settings: Settings, where: str, limit: int) -> list[dict[str, Any]]:
    return influx_query(
        settings.influx,
        f'SELECT * FROM "alert" WHERE {where} ORDER BY time DESC LIMIT {int(limit)}',
    )


def history(settings: Settings, home: Home, *, before_ms: int | None = None, limit: int = 20) -> list[Episode]:
    """A page of the home's episodes, newest raise first."""
    if not 1 <= limit <= PAGE_MAX:
        raise ValueError(f"limit: must be 1..{PAGE_MAX}, got {limit}")
    meter = f"\"meter\" = {quote_string(home.meter)}"
    cursor = f" AND time < {int(before_ms)}ms" if before_ms is not None else ""
    raised = _episode_rows(settings, f"{meter} AND \"state\" = 'raised'{cursor}", limit)
    if not raised:
        return []
    oldest = min(int(r["time"]) for r in raised)
    resolved = {
        r["id"]: r
        for r in influx_query(
            settings.influx,
            f"SELECT * FROM \"alert\" WHERE {meter} AND \"state\" = 'resolved' AND time >= {oldest}ms",
        )
    }
    episodes = []
    for r in raised:
        end = resolved.get(r["id"])
        episodes.append(
            Episode(
                id=r["id"], kind=r["kind"], raised_ms=int(r["time"]), episode_start_ms=int(r["episode_start_ms"]),
                value=float(r["value"]), threshold=float(r["threshold"]),
                resolved_ms=None if end is None else int(end["time"]),
                resolved_value=None if end is None else float(end["value"]),
                detail={k[len("detail_"):]: float(v) for k, v in r.items() if k.startswith("detail_") and v is not None},
            )
        )
    return episodes


def find(settings: Settings, home: Home, alert_id: str) -> Episode:
    rows = influx_query(
        settings.influx,
        f"SELECT * FROM \"alert\" WHERE \"meter\" = {quote_string(home.meter)} AND \"id\" = {quote_string(alert_id)} "
        f"AND \"state\" = 'raised' LIMIT 1",
    )
    if not rows:
        raise NotFound(f"alert_id: no alert {alert_id!r} for this home")
    return history(settings, home, before_ms=int(rows[0]["time"]) + 1, limit=1)[0]


def acknowledge(actions: AlertActions, home: Home, episode: Episode, by: str, at_ms: int) -> list[AlertAcknowledged]:
    """The event acknowledging ``episode``; none if it already was (acknowledging twice is harmless)."""
    if actions.of(episode.id).acknowledged_ms is not None:
        return []
    return [AlertAcknowledged(alert_id=episode.id, meter=home.meter, household=home.household, by=by, at_ms=at_ms)]


def snooze(
    actions: AlertActions, home: Home, episode: Episode, by: str, at_ms: int, minutes: int
) -> list[AlertSnoozed]:
    if not SNOOZE_MIN_S <= minutes * 60 <= SNOOZE_MAX_S:
        raise ValueError(f"minutes: a snooze lasts {SNOOZE_MIN_S // 60} to {SNOOZE_MAX_S // 60} minutes, got {minutes}")
    return [
        AlertSnoozed(
            alert_id=episode.id, meter=home.meter, household=home.household, kind=episode.kind, by=by,  # type: ignore[arg-type]
            until_ms=at_ms + minutes * 60_000, at_ms=at_ms,
        )
    ]


#: The minutes shown around an episode: from before its start to after its end (or its raise).
AROUND_MS = 10 * 60_000
SPARK_POINTS = 60


def minutes_around(settings: Settings, home: Home, episode: Episode) -> list[tuple[int, float]]:
    """The power (mean VA per bucket, about 60 buckets) from 10 minutes before the episode began to
    10 minutes after it ended (or was raised, while it is open): the small chart of each episode."""
    start = episode.episode_start_ms - AROUND_MS
    end = (episode.resolved_ms or episode.raised_ms) + AROUND_MS
    bucket_s = max(1, (end - start) // 1000 // SPARK_POINTS)
    rows = influx_query(
        settings.influx,
        f"SELECT mean(\"drawn_va\") AS va FROM \"reading\" WHERE \"meter\" = {quote_string(home.meter)} "
        f"AND time >= {start}ms AND time < {end}ms GROUP BY time({bucket_s}s) fill(none)",
    )
    return [(int(r["time"]), float(r["va"])) for r in rows if r.get("va") is not None]


def sparkline(points: list[tuple[int, float]], threshold: float | None, width: int = 240, height: int = 48) -> str:
    """An inline SVG polyline of ``points`` (and the threshold as a dashed line): drawn by the server,
    so the history's small charts need no script."""
    if len(points) < 2:
        return ""
    t0, t1 = points[0][0], points[-1][0]
    values = [v for _, v in points] + ([threshold] if threshold else [])
    low, high = min(values), max(values)
    span_v = (high - low) or 1.0
    span_t = (t1 - t0) or 1

    def y(v: float) -> float:
        return round(height - 2 - (v - low) / span_v * (height - 4), 1)

    line = " ".join(f"{round((t - t0) / span_t * width, 1)},{y(v)}" for t, v in points)
    limit = (f'<line x1="0" x2="{width}" y1="{y(threshold)}" y2="{y(threshold)}" stroke="#a00000" '
             f'stroke-dasharray="4 3"/>' if threshold else "")
    return (f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="power around the episode">{limit}<polyline fill="none" stroke="#0b5394" stroke-width="1.5" '
            f'points="{line}"/></svg>')
