"""The stream worker's Prometheus metrics, served on ``settings.metrics_port`` when it is not 0.

They live in prometheus_client's default registry, next to the InfluxDB writer's
(``quartier_influx_points_written_total`` and friends, in :mod:`streams.influx_writer`).
"""

from __future__ import annotations

import gc
import time
from typing import Any

from prometheus_client import Counter, Gauge, start_http_server

READINGS_CONSUMED = Counter(
    "quartier_readings_consumed_total",
    "Readings taken from meter.readings, valid or not (a batch counts its readings; an undecodable message 1).",
)
READINGS_REJECTED = Counter(
    "quartier_readings_rejected_total", "Readings (or undecodable messages) sent to meter.readings.rejected."
)
SLOTS_PUBLISHED = Counter("quartier_meter_slots_total", "Metered 15-minute slots published on meter.slots.")
ALERT_EVENTS = Counter("quartier_alert_events_total", "Alert transitions published.", ["kind", "state"])
CONSUMER_LAG = Gauge(
    "quartier_consumer_lag_messages",
    "Messages of meter.readings not handled yet, per assigned partition (the highwater of the last fetch less "
    "the offset after the last message handled); updated at each deadman run.",
    ["partition"],
)
MESSAGES_UNACKED = Gauge(
    "quartier_messages_unacked",
    "meter.readings messages handled and not yet acknowledged: their points are not all in InfluxDB or the "
    "spool yet, or a record they sent is not acknowledged by the broker (streams/acks.py).",
)
RULES_APPLIED = Counter("quartier_alert_rules_applied_total", "AlertRules records read from alerts.rules and applied.")
RULES_REJECTED = Counter(
    "quartier_alert_rules_rejected_total", "AlertRules records that could not be decoded or applied (logged)."
)


GC_PAUSE = Counter(
    "quartier_gc_pause_seconds_total",
    "CPU time the interpreter's garbage collector took from the worker's event loop, by generation.",
    ["generation"],
)
GC_PAUSE_MAX = Gauge(
    "quartier_gc_pause_max_seconds", "The longest single garbage collection so far (CPU time), by generation.",
    ["generation"],
)


def watch_gc() -> None:
    """Counts every garbage collection's pause (``gc.callbacks``): a full collection walks every live
    container object, and a pause of the event loop delays every reading queued behind it.

    In CPU time of the collecting thread, not wall time: on a shared machine a descheduled process
    would stretch a pause's wall time many times over, and the figure is for comparing runs."""
    started = [0.0]
    longest: dict[int, float] = {}

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.thread_time()
            return
        pause = time.thread_time() - started[0]
        generation = info["generation"]
        GC_PAUSE.labels(str(generation)).inc(pause)
        if pause > longest.get(generation, 0.0):
            longest[generation] = pause
            GC_PAUSE_MAX.labels(str(generation)).set(pause)

    gc.callbacks.append(on_gc)


def serve_metrics(port: int) -> None:
    """Serves /metrics in a daemon thread; 0 means no server.

    On every interface (prometheus_client's default): in a container, Prometheus scrapes from outside.
    """
    if port:
        start_http_server(port)
