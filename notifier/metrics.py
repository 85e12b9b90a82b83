"""The notifier's Prometheus metrics: what happened to each notification, and how long it took.

Served on ``settings.metrics_port`` when it is set (``quartier notifier run --metrics-port``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from prometheus_client import REGISTRY, CollectorRegistry, Counter as PromCounter, Histogram


class NotifierMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.notifications = PromCounter(
            "quartier_notifier_notifications",
            "Notification outcomes per channel: sent, grouped, failed, retrying (retried), deduplicated, "
            "suppressed; cause says why (quiet_hours, rate_limit, muted, no_recipient, dedup, permanent).",
            ["channel", "status", "cause"],
            registry=registry,
        )
        self.latency = Histogram(
            "quartier_notifier_latency_seconds",
            "From the alert event's production to the provider's acceptance.",
            ["channel"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600),
            registry=registry,
        )

    def observe(self, counts: Counter[tuple[str, str, str]], latencies: Iterable[tuple[str, float]]) -> None:
        for (channel, status, cause), n in counts.items():
            self.notifications.labels(channel, status, cause).inc(n)
        for channel, seconds in latencies:
            self.latency.labels(channel).observe(seconds)
