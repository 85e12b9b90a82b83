"""bench.soak stopped by SIGTERM mid-run stops the durable broker, its store and retention, InfluxDB,
the workers, the notifier and the simulator (helpers from tests/test_bench_lifetime.py)."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.test_bench_lifetime import running, start, stop, wait_for


def test_bench_soak_stopped_by_sigterm_mid_run_stops_everything_it_started(tmp_path: Path) -> None:
    bench = start("bench.soak", "--meters", "200", "--hours", "0.05", "--workers", "2", "--contacts", "5",
                  "--sample-s", "5", tmp=tmp_path)
    started = wait_for(bench, {"s3rver_for_tansu", "tansu", "quartier.stack.retention", "influxd", "streams worker",
                               "notifier run", "simulate"}, tmp_path, timeout_s=300)
    assert stop(bench, signal.SIGTERM) == 128 + signal.SIGTERM
    assert running(started) == []
    assert not list(tmp_path.glob("bench-soak-*"))  # its directory went too (no --keep)
