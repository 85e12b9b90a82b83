"""Per-route Prometheus metrics, in the registry the composing entry point passes in."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram

# Up to 10 s: an operation waits at most for the broker's confirmation of its command.
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True)
class ApiMetrics:
    requests: Counter
    latency: Histogram

    @classmethod
    def create(cls, registry: CollectorRegistry) -> ApiMetrics:
        return cls(
            requests=Counter("quartier_api_requests", "HTTP requests answered, by route template, method and status",
                             ["route", "method", "status"], registry=registry),
            latency=Histogram("quartier_api_request_duration_seconds",
                              "Time from the request's arrival to its answer, by route template and method",
                              ["route", "method"], buckets=LATENCY_BUCKETS_S, registry=registry),
        )

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route, method).observe(seconds)
