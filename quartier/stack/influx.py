"""InfluxDB in the local stack: a private ``influxd`` prepared with production's layout.

The local server is Debian's ``influxd`` 1.6.7, run with a private config file: data, meta and WAL under
the component's workdir, only the HTTP API on 127.0.0.1, every other listener and usage reporting off,
and the RPC service (backup/restore) moved to a free port so two instances never collide.

The database layout (policies, rollup query) and the /query API are production's:
``quartier.influx``. Its names are re-exported here for the stack's callers.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import httpx

from quartier.influx import (  # noqa: F401  (re-exported for the stack's callers)
    RAW_POLICY,
    ROLLUP_FIELDS,
    ROLLUP_INTERVAL_S,
    ROLLUP_MEASUREMENT,
    ROLLUP_POLICY,
    ROLLUP_RESAMPLE_FOR,
    InfluxError,
    auth,
    count_points,
    duration_s,
    ensure_database,
    ensure_influx_database,
    influx_query,
    query,
    quote_ident,
    quote_string,
    rollup_continuous_query,
    rollup_range,
)
from quartier.settings import InfluxSettings
from quartier.stack.component import Component, pick_port

_INSTALL_HINT = "influx: influxd not found — install it with: sudo apt-get install influxdb (or ./dev setup)"


class Influx(Component):
    name = "influx"
    default_port = 8086
    start_timeout_s = 30.0

    def __init__(self, default_port: int | None = None, binary: str = "influxd", nice: int = 10) -> None:
        if default_port is not None:
            self.default_port = default_port
        self.binary = binary
        # Below the stream workers' priority: on one box, when both want the cores (a catch-up, a burst
        # during a compaction), the alert path gets them and the points wait in the writers' spools, which
        # InfluxDB works off once the cores are free (docs/pipeline.md, "2026-12-06, catching up").
        self.nice = nice

    def missing(self) -> str | None:
        return None if shutil.which(self.binary) else _INSTALL_HINT

    def command(self, port: int, workdir: Path) -> list[str]:
        config = workdir / "influxdb.conf"
        # A fresh RPC port at each start: 8088 is the default of every influxd on the machine.
        config.write_text(influxd_config(workdir, http_port=port, rpc_port=pick_port(0, {port})))
        return [*(["nice", "-n", str(self.nice)] if self.nice else []), self.binary, "-config", str(config)]

    def environment(self, port: int, workdir: Path) -> dict[str, str]:
        # influxd reads INFLUXDB_* variables over its config file; make sure ours wins where it matters.
        return {"INFLUXDB_HTTP_BIND_ADDRESS": f"127.0.0.1:{port}", "INFLUXDB_REPORTING_DISABLED": "true"}

    def healthy(self, port: int) -> bool:
        return httpx.get(f"{self.url(port)}/ping", timeout=1.0).status_code == 204

    def prepare(self, port: int, workdir: Path) -> None:
        ensure_influx_database(InfluxSettings(url=self.url(port)))

    def settings(self, port: int, workdir: Path) -> dict[str, Any]:
        return {"influx": {"url": self.url(port), "api": "v1"}}

    def url(self, port: int) -> str:
        return f"http://127.0.0.1:{port}"


def influxd_config(workdir: Path, *, http_port: int, rpc_port: int) -> str:
    """influxd's TOML config with everything under ``workdir`` and only loopback HTTP listening."""
    data = workdir / "data"
    return f"""\
reporting-enabled = false
bind-address = "127.0.0.1:{rpc_port}"

[meta]
  dir = "{workdir / 'meta'}"
  # ensure_database creates the policies; no infinite "autogen" policy to write into by mistake.
  retention-autocreate = false
  logging-enabled = true

[data]
  dir = "{data}"
  wal-dir = "{workdir / 'wal'}"
  index-version = "inmem"
  # With the whole fleet's 48,000 series (11 fields each) the default 25 MB cache snapshot holds a
  # few seconds of points and is written out as a TSM file with every series key in it, over and
  # over. `python -m bench.influx --points 1440000 --meters 48000 [--stock-cache]`, one after the
  # other on a busy machine: 21,107 points/s with the defaults, 51,404 with these. The cache may
  # then grow past the 1 GB default before a snapshot lands, and a full cache refuses writes.
  cache-snapshot-memory-size = "256m"
  cache-max-memory-size = "4g"
  # A shard that takes no write for 30 s (yesterday's raw shard, a backfill's) is written out to TSM
  # rather than after the default 10 min. A query reads each field's whole cache entry, whatever its
  # time range: with a day of one meter held in the cache (a backfill) the 24-hour euro chart took
  # 75 ms at p50, and 24 ms once the points were in TSM (`python -m bench.app --consumption-only`,
  # docs/households.md).
  cache-snapshot-write-cold-duration = "30s"
  # One log line per query would drown the log at chart rates.
  query-log-enabled = false

[retention]
  enabled = true
  check-interval = "30m"

[monitor]
  # No _internal database filling the disk with self-statistics.
  store-enabled = false

[subscriber]
  enabled = false

[http]
  enabled = true
  bind-address = "127.0.0.1:{http_port}"
  auth-enabled = false
  # An access-log line per write request (hundreds a second) is noise; errors are still logged.
  log-enabled = false
  pprof-enabled = false
  unix-socket-enabled = false
  max-body-size = 25000000

[ifql]
  enabled = false

[[graphite]]
  enabled = false
[[collectd]]
  enabled = false
[[opentsdb]]
  enabled = false
[[udp]]
  enabled = false

[continuous_queries]
  enabled = true
  log-enabled = true
  run-interval = "1s"

[logging]
  level = "info"
  suppress-logo = true
"""
