"""A benchmark stopped by a signal stops every server and process it started (bench/lifetime.py).

Each test starts a real benchmark in a subprocess, waits until its servers are up, signals only the
benchmark's own process (as ``timeout`` does), and checks that none of the processes it had started
is still running afterwards.
"""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent


def start(module: str, *args: str, tmp: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", module, *args], cwd=ROOT, stdin=subprocess.DEVNULL,
        stdout=(tmp / "bench.out").open("wb"), stderr=(tmp / "bench.err").open("wb"),
        # Its own session, so nothing aimed at it reaches pytest, and TMPDIR so its state stays here.
        start_new_session=True, env={**os.environ, "TMPDIR": str(tmp)},
    )


def descendants(bench: subprocess.Popen[bytes]) -> list[psutil.Process]:
    try:
        return psutil.Process(bench.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def wait_for(bench: subprocess.Popen[bytes], names: set[str], tmp: Path, timeout_s: float = 120) -> list[psutil.Process]:
    """The benchmark's descendants once one whose command line contains each of ``names`` runs."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert bench.poll() is None, (tmp / "bench.err").read_text()
        found = descendants(bench)
        lines = []
        for process in found:
            try:
                lines.append(" ".join(process.cmdline()))
            except psutil.Error:
                continue
        if all(any(name in line for line in lines) for name in names):
            return found
        time.sleep(0.3)
    raise AssertionError(f"{names} not all started within {timeout_s}s:\n{(tmp / 'bench.err').read_text()}")


def running(processes: list[psutil.Process]) -> list[str]:
    alive = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(" ".join(process.cmdline())[:120])
        except psutil.NoSuchProcess:
            continue
    return alive


def stop(bench: subprocess.Popen[bytes], sig: int) -> int:
    bench.send_signal(sig)
    try:
        return bench.wait(timeout=60)
    finally:
        if bench.poll() is None:
            os.killpg(bench.pid, signal.SIGKILL)


def test_bench_market_stopped_by_sigterm_stops_its_broker_anvil_and_influxd(tmp_path: Path) -> None:
    bench = start("bench.market", "--participants", "300", "--zones", "3", "--buys", "200", tmp=tmp_path)
    started = wait_for(bench, {"tansu", "anvil", "influxd"}, tmp_path)
    assert stop(bench, signal.SIGTERM) == 128 + signal.SIGTERM
    assert running(started) == []
    assert "SIGTERM: stopping what the benchmark started" in (tmp_path / "bench.err").read_text()


def test_bench_pipeline_stopped_by_sigint_mid_run_stops_its_servers_workers_and_simulator(tmp_path: Path) -> None:
    bench = start("bench.pipeline", "--meters", "200", "--duration", "120", "--workers", "2", tmp=tmp_path)
    started = wait_for(bench, {"tansu", "influxd", "streams worker", "simulate"}, tmp_path)
    assert stop(bench, signal.SIGINT) == 128 + signal.SIGINT
    assert running(started) == []
    # Its temporary directory (InfluxDB's data) went too.
    assert not list(tmp_path.glob("quartier-bench-pipeline-*"))


def test_every_benchmark_runs_its_main_through_the_lifetime_guard() -> None:
    for path in sorted((ROOT / "bench").glob("*.py")):
        if path.name in ("__init__.py", "lifetime.py", "naive_faust.py"):  # not benchmarks: their parts
            continue
        tree = ast.parse(path.read_text())
        guarded = [
            node for node in ast.walk(tree)
            if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)
            and ast.unparse(node.body[0]).startswith("lifetime.run(")
        ]
        assert guarded, f"{path.name}: end with `if __name__ == \"__main__\": lifetime.run(main)`"
        imported = [node for node in tree.body if isinstance(node, ast.ImportFrom) and node.module == "bench"
                    and any(alias.name == "lifetime" for alias in node.names)]
        assert imported, f"{path.name}: `from bench import lifetime` at the top"
