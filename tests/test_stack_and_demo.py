"""The user's first ten minutes: ``quartier stack up``, ``status --json``, ``demo``, ``stack down``.

Runs the real CLI in a state directory of its own, so the whole local stack starts on free ports,
the demo runs every component as a separate process, and ``stack down`` must leave nothing behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from quartier.stack.component import pid_alive, tcp_open

COMPONENTS = {"s3", "broker", "retention", "influx", "chain", "smtp", "fcm"}


def quartier(state_dir: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "quartier.cli", *args],
        env={**os.environ, "QUARTIER_STATE_DIR": str(state_dir)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def running_stack(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    state_dir = tmp_path_factory.mktemp("cli-state")
    up = quartier(state_dir, "stack", "up")
    assert up.returncode == 0, up.stderr
    try:
        yield state_dir
    finally:
        quartier(state_dir, "stack", "down")


def test_status_reports_every_component_healthy_with_its_url(running_stack: Path) -> None:
    status = quartier(running_stack, "stack", "status", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    report = json.loads(status.stdout)
    assert report["healthy"] is True
    assert set(report["components"]) == COMPONENTS
    for name, component in report["components"].items():
        assert component["healthy"] is True, name
        assert str(component["port"]) in component["url"], name
        assert Path(component["log"]).exists(), name


def test_a_second_stack_up_reuses_the_running_servers(running_stack: Path) -> None:
    before = json.loads(quartier(running_stack, "stack", "status", "--json").stdout)
    again = quartier(running_stack, "stack", "up")
    assert again.returncode == 0, again.stderr
    after = json.loads(quartier(running_stack, "stack", "status", "--json").stdout)
    assert {n: c["pid"] for n, c in after["components"].items()} == {
        n: c["pid"] for n, c in before["components"].items()
    }


def test_a_reading_travels_the_whole_way(running_stack: Path) -> None:
    demo = quartier(running_stack, "demo", "--meters", "60", "--duration", "25", "--json", timeout=400)
    assert demo.returncode == 0, demo.stderr[-3000:]
    summary = json.loads(demo.stdout.strip().splitlines()[-1])
    # --- household app --- announced while the fleet runs, one JSON line before the summary
    app = json.loads(demo.stdout.strip().splitlines()[-2])
    assert app["app_url"].startswith("http://127.0.0.1:") and app["app_url"].endswith("/app")
    assert set(app["household_login"]) == {"email", "password"}
    assert summary["app_url"] == app["app_url"]
    assert summary["readings_produced"] == 60 * 25
    assert summary["readings_consumed"] == summary["readings_produced"]
    assert summary["points_written"] == summary["readings_produced"]
    transitions = summary["alerts_raised"] + summary["alerts_resolved"]
    assert summary["alerts_raised"] > 0, "the demo's low power limits should raise alerts"
    # The operator console was served for the run, and its operator could sign in and see the fleet.
    assert summary["console_url"].startswith("http://127.0.0.1:") and summary["console_url"].endswith("/console")
    assert summary["operator_login"]["email"].startswith("operator@")
    assert summary["console_modules"] == 60, summary.get("console_error")
    announced = json.loads(demo.stdout.strip().splitlines()[-2])  # the line announcing the app and the console
    assert announced["console_url"] == summary["console_url"] and "app_url" in announced
    assert summary["pushes_delivered"] == transitions
    assert summary["emails_delivered"] == transitions


def test_stack_down_leaves_no_process_behind(tmp_path: Path) -> None:
    assert quartier(tmp_path, "stack", "up").returncode == 0
    record = json.loads((tmp_path / "stack.json").read_text())["components"]
    assert set(record) == COMPONENTS
    down = quartier(tmp_path, "stack", "down")
    assert down.returncode == 0
    for name, entry in record.items():
        assert not pid_alive(entry["pid"]), f"{name} (pid {entry['pid']}) still runs"
        assert not tcp_open(entry["port"]), f"{name} still listens on {entry['port']}"
    status = quartier(tmp_path, "stack", "status", "--json")
    assert status.returncode == 1
    assert json.loads(status.stdout)["healthy"] is False


def test_a_taken_port_is_not_collided_with(tmp_path: Path) -> None:
    import socket

    from quartier.stack import Stack
    from quartier.stack.smtp import SmtpServer

    component = SmtpServer()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        component.default_port = squatter.getsockname()[1]
        stack = Stack(tmp_path, [component])
        try:
            stack.up()
            (status,) = stack.status()
            assert status.healthy
            assert status.port != component.default_port
        finally:
            stack.down()


def test_a_missing_component_names_itself_and_its_install_command(tmp_path: Path) -> None:
    from quartier.stack import Stack, StackError
    from quartier.stack.influx import Influx

    with pytest.raises(StackError, match=r"^influx: .*not found.*apt-get install influxdb"):
        Stack(tmp_path, [Influx(binary="influxd-not-installed-here")]).up()
