"""InfluxDB in the local stack (a real influxd 1.6.7) and the database layout ``ensure_database`` makes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import httpx
import psutil
import pytest

from quartier.settings import Settings
from quartier.stack import Stack
from quartier.stack.component import port_is_free
from quartier.stack.influx import (
    Influx,
    InfluxError,
    count_points,
    ensure_database,
    query,
    rollup_range,
)

MINUTE_MS = 60_000
# A recent 10-minute boundary (raw keeps 30 days: the test's points must be younger).
NOW_MS = int(time.time() * 1000) // (10 * MINUTE_MS) * (10 * MINUTE_MS)


def write(settings: Settings, lines: list[str], rp: str = "raw") -> httpx.Response:
    return httpx.post(
        f"{settings.influx.url}/write",
        params={"db": settings.influx.database, "rp": rp, "precision": "ms"},
        content="\n".join(lines),
    )


def test_influx_answers_its_ping_and_points_clients_at_itself(influx: dict[str, Any]) -> None:
    url = influx["influx"]["url"]
    assert influx["influx"]["api"] == "v1"
    answer = httpx.get(f"{url}/ping")
    assert answer.status_code == 204
    assert answer.headers["X-Influxdb-Version"].startswith("1.6")


def test_a_missing_influxd_names_the_install_command() -> None:
    assert Influx(binary="no-such-influxd").missing() == (
        "influx: influxd not found — install it with: sudo apt-get install influxdb (or ./dev setup)"
    )
    assert Influx().missing() is None


def test_a_second_instance_runs_beside_the_first_stops_cleanly_and_keeps_its_data(
    influx: dict[str, Any], tmp_path: Path
) -> None:
    stack = Stack(tmp_path / "own", [Influx()])
    overrides = stack.up()
    try:
        url = overrides["influx"]["url"]
        port = int(url.rsplit(":", 1)[1])
        assert url != influx["influx"]["url"]
        # Both answer: the second did not collide with the first on any port (HTTP or RPC).
        assert httpx.get(f"{influx['influx']['url']}/ping").status_code == 204
        assert httpx.get(f"{url}/ping").status_code == 204
        settings = Settings(influx={"url": url, "database": "kept"})
        ensure_database(settings)
        assert write(settings, [f"reading,meter=000000000001,zone=z drawn_va=5i {NOW_MS}"]).status_code == 204
        pid = stack.status()[0].pid
        # At a lower CPU priority than the stream workers (10 more nice than who started it, at most
        # 19): the alert path wins the cores.
        assert pid is not None and psutil.Process(pid).nice() == min(19, psutil.Process().nice() + 10)
        assert psutil.Process(pid).name() == "influxd"
        assert stack.down() == ["influx"]
        assert pid is not None and not Path(f"/proc/{pid}").exists()
        assert port_is_free(port)
        # Its data lives in the workdir: a restart on the same port finds it.
        restarted = Stack(tmp_path / "own", [Influx(default_port=port)]).up()
        assert restarted["influx"]["url"] == url
        assert count_points(settings, "reading") == 1
        log = (tmp_path / "own" / "logs" / "influx.log").read_text()
        assert "panic" not in log.lower()
    finally:
        stack.down()


def test_ensure_database_makes_both_policies_and_the_rollup_query_idempotently(
    influx: dict[str, Any], make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(influx)
    ensure_database(settings)
    ensure_database(settings)
    policies = {row["name"]: row for row in query(settings, "SHOW RETENTION POLICIES")}
    assert policies["raw"]["duration"] == "720h0m0s" and policies["raw"]["default"] is True
    assert policies["rollup"]["duration"] == "43800h0m0s" and policies["rollup"]["default"] is False
    queries = [row for row in query(settings, "SHOW CONTINUOUS QUERIES") if row["_measurement"] == settings.influx.database]
    assert [row["name"] for row in queries] == ["reading_10m"]
    assert f"INTO {settings.influx.database}.rollup.reading_10m" in queries[0]["query"]
    assert "GROUP BY time(10m)" in queries[0]["query"]


def test_a_changed_retention_is_applied_to_an_existing_database(
    influx: dict[str, Any], make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(influx)
    ensure_database(settings)
    shorter = settings.model_copy(update={"influx": settings.influx.model_copy(update={"raw_retention": "7d"})})
    ensure_database(shorter)
    policies = {row["name"]: row for row in query(settings, "SHOW RETENTION POLICIES")}
    assert policies["raw"]["duration"] == "168h0m0s"


def test_a_bad_retention_is_refused_naming_the_setting(influx: dict[str, Any], make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(ValueError, match="influx.rollup_retention: 'five years'"):
        ensure_database(make_settings(influx, influx={"rollup_retention": "five years"}))


def test_the_rollup_keeps_means_peaks_and_the_last_index_per_meter_and_10_minutes(
    influx: dict[str, Any], make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(influx)
    ensure_database(settings)
    start = NOW_MS - 60 * MINUTE_MS
    lines = []
    for second in range(1200):  # 20 minutes at 1 Hz
        power = 3000 if second == 700 else (1000 if second < 600 else 2000)
        lines.append(
            f"reading,meter=000000000001,zone=z drawn_va={power}i,injected_va=0i,withdrawn_wh={10_000 + second}i,"
            f"injected_wh=0i,voltage_v=230i,current_a=4i {start + second * 1000}"
        )
    assert write(settings, lines).status_code == 204
    assert rollup_range(settings, start, start + 20 * MINUTE_MS) == 2
    rows = query(settings, 'SELECT * FROM "rollup"."reading_10m" ORDER BY time')
    assert [row["time"] for row in rows] == [start, start + 10 * MINUTE_MS]
    assert [row["drawn_va"] for row in rows] == [1000, pytest.approx(2000 + 1000 / 600)]
    assert [row["drawn_va_max"] for row in rows] == [1000, 3000]
    assert [row["withdrawn_wh"] for row in rows] == [10_599, 11_199]
    assert {(row["meter"], row["zone"]) for row in rows} == {("000000000001", "z")}


def test_count_points_counts_points_not_fields_and_honours_a_condition(
    influx: dict[str, Any], make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(influx)
    ensure_database(settings)
    lines = [f"reading,meter=00000000000{i % 2},zone=z drawn_va=1i,withdrawn_wh=2i {NOW_MS - i * 1000}" for i in range(9)]
    assert write(settings, lines).status_code == 204
    assert count_points(settings, "reading") == 9
    assert count_points(settings, "reading", "meter = '000000000001'") == 4
    assert count_points(settings, "nothing_here") == 0


def test_a_query_error_carries_influxdbs_reason_and_the_statement(
    influx: dict[str, Any], make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(influx)
    with pytest.raises(InfluxError, match="SELEKT"):
        query(settings, "SELEKT 1")


def test_an_unreachable_influxdb_is_a_clear_error(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(influx={"url": "http://127.0.0.1:9"})
    with pytest.raises(InfluxError, match="did not answer"):
        ensure_database(settings)
