"""VictoriaMetrics as an ``/api/v2/write`` target, for testing the writer's v2 (influxdb-client) path.

Not part of the default local stack: Debian's InfluxDB 1.6.7 has no v2 API, and Debian's
``victoria-metrics`` accepts ``/api/v2/write`` from influxdb-client. It stores a line
``reading,meter=M,zone=Z drawn_va=5i`` as the series ``reading_drawn_va{meter="M",zone="Z"}``, queried
with its export API (``export_samples``) or PromQL.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import httpx

from quartier.stack.component import Component


class VictoriaMetrics(Component):
    name = "victoria"
    default_port = 8428
    start_timeout_s = 30.0

    def missing(self) -> str | None:
        if shutil.which("victoria-metrics"):
            return None
        return "victoria: victoria-metrics not found — install it with: sudo apt-get install victoria-metrics"

    def command(self, port: int, workdir: Path) -> list[str]:
        return [
            "victoria-metrics",
            f"-httpListenAddr=127.0.0.1:{port}",
            f"-storageDataPath={workdir / 'data'}",
            "-retentionPeriod=100y",
            # Tests backfill and read back at once; no need to hide the newest samples from queries.
            "-search.latencyOffset=0s",
            "-loggerLevel=WARN",
        ]

    def healthy(self, port: int) -> bool:
        answer = httpx.get(f"{self.url(port)}/health", timeout=1.0)
        return answer.status_code == 200 and answer.text.strip() == "OK"

    def settings(self, port: int, workdir: Path) -> dict[str, Any]:
        return {"influx": {"url": self.url(port), "api": "v2"}}

    def url(self, port: int) -> str:
        return f"http://127.0.0.1:{port}"


def export_samples(url: str, match: str) -> list[dict[str, Any]]:
    """Every series matching the PromQL selector ``match``: ``{"metric": labels, "values", "timestamps"}``.

    Flushes VictoriaMetrics' in-memory buffers first, so what was just written is visible.
    """
    httpx.get(f"{url}/internal/force_flush", timeout=10.0).raise_for_status()
    # The export's default end is "now", which hides a sample stamped this very second.
    params = {"match[]": match, "start": "0", "end": str(int(time.time()) + 86_400)}
    answer = httpx.get(f"{url}/api/v1/export", params=params, timeout=30.0)
    answer.raise_for_status()
    return [json.loads(line) for line in answer.text.splitlines() if line.strip()]
