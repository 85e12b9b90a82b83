"""The batched InfluxDB writer against real servers: influxd 1.6.7 (v1) and VictoriaMetrics (v2 path).

Outage tests run their own influxd (so stopping it disturbs no other test) and restart it on the same port.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from prometheus_client import REGISTRY

from quartier.events import MeterReading
from quartier.settings import Settings
from quartier.stack import Stack
from quartier.stack.component import pid_alive, pick_port
from quartier.stack.influx import Influx, count_points, ensure_database
from quartier.stack.victoria import export_samples
from streams.influx_writer import InfluxWriter
from streams.line_protocol import reading_line

NOW_MS = int(time.time() * 1000) // 1000 * 1000


def readings(count: int, *, meters: int = 10, start_ms: int = NOW_MS - 3_600_000) -> list[str]:
    """``count`` distinct reading lines: ``meters`` meters at 1 Hz from ``start_ms``."""
    return [
        reading_line(
            MeterReading(
                meter=f"{i % meters:012d}", zone="rennes-01", time_ms=start_ms + (i // meters) * 1000, seq=i,
                drawn_va=500 + i % 1000, withdrawn_wh=1_000 + i, subscribed_kva=6, cutoff_kva=6,
            )
        )
        for i in range(count)
    ]


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def eventually(check: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


class OwnInflux:
    """An influxd for one test, which the test may stop and start again on the same port."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # A port the kernel hands out, not 8086: another stack on this machine may take the well-known
        # port while this one is down, and the restart must come back where the writer points.
        self.stack = Stack(root, [Influx(default_port=pick_port(0))])
        self.url = self.stack.up()["influx"]["url"]
        self.port = int(self.url.rsplit(":", 1)[1])

    def kill(self) -> None:
        pid = self.stack.status()[0].pid
        assert self.stack.down() == ["influx"]
        assert pid is not None and not pid_alive(pid)

    def restart(self) -> None:
        self.stack = Stack(self.root, [Influx(default_port=self.port)])
        assert self.stack.up()["influx"]["url"] == self.url

    def down(self) -> None:
        self.stack.down()


@pytest.fixture
def own_influx(tmp_path: Path) -> Iterator[OwnInflux]:
    server = OwnInflux(tmp_path / "own-influx")
    try:
        yield server
    finally:
        server.down()


def fast_retries(writer: InfluxWriter) -> InfluxWriter:
    writer.retry_max_s = 0.3
    return writer


async def test_every_reading_written_is_counted_in_influxdb(
    influx: dict[str, Any], make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(influx)
    ensure_database(settings)
    written_before = metric("quartier_influx_points_written_total")
    writer = InfluxWriter(settings, batch_points=1_000)
    await writer.start()
    lines = readings(12_345)
    for start in range(0, len(lines), 700):  # in chunks, as a stream worker hands them over
        writer.write(lines[start : start + 700])
    await writer.flush()
    assert writer.points_written == 12_345 and writer.buffered == 0
    assert count_points(settings, "reading") == 12_345
    assert metric("quartier_influx_points_written_total") - written_before == 12_345
    await writer.stop()


async def test_a_partial_batch_is_written_without_a_flush(
    influx: dict[str, Any], make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(influx)
    ensure_database(settings)
    writer = InfluxWriter(settings)
    await writer.start()
    writer.write(readings(7))
    await eventually(lambda: writer.points_written == 7)
    assert count_points(settings, "reading") == 7
    await writer.stop()


async def test_points_influxdb_refuses_are_reported_and_not_retried_and_the_rest_are_written(
    influx: dict[str, Any], make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(influx)
    ensure_database(settings)
    rejected_before = metric("quartier_influx_points_rejected_total")
    writer = InfluxWriter(settings)
    await writer.start()
    too_old = readings(1, start_ms=946_684_800_000)  # 2000-01-01, far beyond the raw policy's 30 days
    writer.write(readings(5) + too_old)
    await asyncio.wait_for(writer.flush(), 30)
    assert (writer.points_written, writer.points_rejected) == (5, 1)
    assert "beyond retention policy" in (writer.last_rejection or "")
    writer.write(["reading,meter=000000000001 drawn_va=oops"])
    await asyncio.wait_for(writer.flush(), 30)
    assert writer.points_rejected == 2 and "unable to parse" in (writer.last_rejection or "")
    assert metric("quartier_influx_points_rejected_total") - rejected_before == 2
    assert count_points(settings, "reading") == 5
    await writer.stop()


async def test_nothing_is_lost_while_influxdb_is_down_and_the_backlog_spills_to_disk_past_the_bound(
    own_influx: OwnInflux, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings({"influx": {"url": own_influx.url}})
    ensure_database(settings)
    full_before = metric("quartier_influx_buffer_full_total")
    writer = fast_retries(InfluxWriter(settings, batch_points=500, max_buffered_points=2_000))
    await writer.start()
    lines = readings(13_000)
    writer.write(lines[:1_500])  # within the bound: no spilling while InfluxDB is up
    await writer.flush()
    assert not writer.buffer_full and writer.spooled == 0

    await asyncio.to_thread(own_influx.kill)
    for start in range(1_500, 13_000, 1_000):  # ingest keeps going: write() neither blocks nor fails
        writer.write(lines[start : start + 1_000])
        await asyncio.sleep(0.05)
    assert writer.buffered == 11_500
    assert writer.buffer_full and writer.spooled >= 9_500
    assert metric("quartier_influx_buffer_full_total") - full_before == 1
    assert any(writer.spool_dir.glob("*.lp"))
    assert metric("quartier_influx_write_errors_total", reason="no_answer") > 0

    await asyncio.to_thread(own_influx.restart)
    await asyncio.wait_for(writer.flush(), 120)
    assert writer.points_written == 13_000 and writer.buffered == 0
    assert not writer.buffer_full and not any(writer.spool_dir.glob("*.lp"))
    assert count_points(settings, "reading") == 13_000
    await writer.stop()


async def test_points_influxdb_has_not_taken_at_stop_are_written_by_the_next_writer(
    own_influx: OwnInflux, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings({"influx": {"url": own_influx.url}})
    ensure_database(settings)
    await asyncio.to_thread(own_influx.kill)
    writer = fast_retries(InfluxWriter(settings, batch_points=1_000))
    writer.stop_timeout_s = 1.0
    await writer.start()
    lines = readings(4_501)
    writer.write(lines[:4_500])
    await writer.stop()
    assert writer.points_written == 0 and writer.spooled == 4_500
    # A point written after stop() (a timer's alert point while the process shuts down) is spooled too.
    assert writer.write(lines[4_500:]) == 4_501 == writer.durable_mark
    assert writer.spooled == 4_501

    await asyncio.to_thread(own_influx.restart)
    successor = InfluxWriter(settings)
    assert successor.buffered == 4_501
    await successor.start()
    await asyncio.wait_for(successor.flush(), 60)
    assert successor.points_written == 4_501
    assert count_points(settings, "reading") == 4_501
    await successor.stop()
    assert successor.spooled == 0


async def test_the_durable_mark_follows_influxdb_acknowledgements_and_the_spool_in_order(
    own_influx: OwnInflux, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings({"influx": {"url": own_influx.url}})
    ensure_database(settings)
    moves: list[int] = []
    writer = fast_retries(InfluxWriter(settings, batch_points=500, max_buffered_points=1_000))
    writer.on_durable = lambda: moves.append(writer.durable_mark)
    writer.stop_timeout_s = 1.0
    await writer.start()
    lines = readings(2_703)
    assert writer.write(lines[:700]) == 700  # a batch of 500 and 200 pending
    await asyncio.wait_for(writer.flush(), 30)
    assert writer.durable_mark == 700 and moves[-1] == 700

    await asyncio.to_thread(own_influx.kill)
    assert writer.write(lines[700:1_700]) == 1_700  # two batches in memory, within the bound
    # Past the bound: two batches spooled, durable, but behind the two in memory.
    assert writer.write(lines[1_700:2_700]) == 2_700
    await eventually(lambda: metric("quartier_influx_write_errors_total", reason="no_answer") > 0)
    assert writer.spooled == 1_000
    assert writer.durable_mark == 700

    await writer.stop()  # InfluxDB is still away: the two batches in memory are spooled
    assert writer.durable_mark == 2_700 and writer.spooled == 2_000
    assert writer.write(lines[2_700:]) == 2_703 == writer.durable_mark
    assert moves == sorted(moves) and moves[-1] == 2_703

    await asyncio.to_thread(own_influx.restart)
    successor = InfluxWriter(settings)
    assert successor.buffered == 2_003
    await successor.start()
    await asyncio.wait_for(successor.flush(), 60)
    await successor.stop()
    assert count_points(settings, "reading") == 2_703


async def test_lines_written_kept_are_on_disk_when_the_write_returns_then_sent(
    influx: dict[str, Any], make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(influx)
    ensure_database(settings)
    writer = InfluxWriter(settings, concurrency=1, name="alerts")
    lines = readings(3)
    await writer.write_kept(lines[:1])  # before start: no sender could have taken it yet
    assert [path.read_text() for path in writer.spool_dir.glob("*.lp")] == lines[:1]
    await writer.start()
    await writer.write_kept(lines[1:])
    assert writer.spool_dir.name == f"{settings.influx.database}.alerts"
    await asyncio.wait_for(writer.flush(), 30)
    assert writer.points_written == 3 and not any(writer.spool_dir.glob("*.lp"))
    assert count_points(settings, "reading") == 3
    await writer.stop()


async def test_the_v2_path_writes_through_influxdb_client_to_victoriametrics(
    victoria: dict[str, Any], make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(victoria)
    assert settings.influx.api == "v2"
    zone = f"zone-{settings.influx.database}"  # this test's own series
    lines = [line.replace("zone=rennes-01", f"zone={zone}") for line in readings(3_000, meters=3)]
    writer = InfluxWriter(settings, batch_points=700, concurrency=2)
    await writer.start()
    writer.write(lines)
    await writer.flush()
    assert writer.points_written == 3_000
    await writer.stop()
    series = await asyncio.to_thread(export_samples, settings.influx.url, f'reading_drawn_va{{zone="{zone}"}}')
    assert sorted(s["metric"]["meter"] for s in series) == ["000000000000", "000000000001", "000000000002"]
    assert sum(len(s["values"]) for s in series) == 3_000
    first = next(s for s in series if s["metric"]["meter"] == "000000000001")
    assert (first["timestamps"][0], first["values"][0]) == (NOW_MS - 3_600_000, 501)


@pytest.mark.parametrize(
    "options, field",
    [
        ({"batch_points": 0}, "batch_points"),
        ({"concurrency": 0}, "concurrency"),
        ({"batch_points": 5_000, "max_buffered_points": 100}, "max_buffered_points"),
    ],
)
def test_bad_writer_options_are_refused_naming_the_option(
    make_settings: Callable[..., Settings], options: dict[str, int], field: str
) -> None:
    with pytest.raises(ValueError, match=f"^{field}:"):
        InfluxWriter(make_settings(), **options)

