"""The stream worker's Prometheus metrics, served on ``settings.metrics_port`` when it is not 0.

They live in prometheus_client's default registry, next to the InfluxDB writer's
(``quartier_influx_points_written_total`` and friends, in :mod:`streams.influx_writer`).
"""

from __future__ import annotations

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
RULES_APPLIED = Counter("quartier_alert_rules_applied_total", "AlertRules records read from alerts.rules and applied.")
RULES_REJECTED = Counter(
    "quartier_alert_rules_rejected_total", "AlertRules records that could not be decoded or applied (logged)."
)


def serve_metrics(port: int) -> None:
    """Serves /metrics in a daemon thread; 0 means no server.

    On every interface (prometheus_client's default): in a container, Prometheus scrapes from outside.
    """
    if port:
        start_http_server(port)
