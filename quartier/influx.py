"""InfluxDB's database layout every writer and reader relies on, and the InfluxQL /query API.

Production code owns this module (the stream worker creates the layout at start-up; the charts read it);
the local stack's ``quartier.stack.influx`` runs a server and prepares it with the same function.

The layout (``ensure_database``), for any InfluxDB that speaks InfluxQL (1.x; 2.x/3.x through their v1
compatibility API):

- database ``settings.influx.database``;
- retention policy ``raw`` (``settings.influx.raw_retention``, the default policy): 1 Hz readings and alerts;
- retention policy ``rollup`` (``settings.influx.rollup_retention``): measurement ``reading_10m``, one point
  per meter and 10 minutes, written by the continuous query ``reading_10m``:
  ``drawn_va`` (mean), ``drawn_va_max`` (max, so peaks survive the rollup), ``injected_va``, ``voltage_v``,
  ``current_a`` (means), ``withdrawn_wh`` and ``injected_wh`` (last index of the window, so energy over any
  range is a difference of two rolled-up points), and ``withdrawn_wh_r1`` .. ``withdrawn_wh_r6`` (last
  per-tariff index of the window, so euros are priced register by register over long ranges). Tags ``meter`` and ``zone`` are kept.
  The query re-computes the last 20 minutes every 10 minutes (``RESAMPLE FOR 20m``), so readings that
  arrive up to 10 minutes late (a writer catching up after an outage) still reach the rollup; after a longer
  outage, ``rollup_range`` recomputes any range with the same query.
"""

from __future__ import annotations

import functools
import re
from datetime import datetime
from typing import Any

import httpx

from quartier.settings import InfluxSettings, Settings

RAW_POLICY = "raw"
ROLLUP_POLICY = "rollup"
ROLLUP_MEASUREMENT = "reading_10m"
ROLLUP_INTERVAL_S = 600
#: How far back each run of the continuous query recomputes (see the module docstring).
ROLLUP_RESAMPLE_FOR = "20m"

#: The rolled-up fields: output name -> the InfluxQL aggregate over the raw ``reading`` measurement.
ROLLUP_FIELDS: dict[str, str] = {
    "drawn_va": 'mean("drawn_va")',
    "drawn_va_max": 'max("drawn_va")',
    "injected_va": 'mean("injected_va")',
    "voltage_v": 'mean("voltage_v")',
    "current_a": 'mean("current_a")',
    "withdrawn_wh": 'last("withdrawn_wh")',
    "injected_wh": 'last("injected_wh")',
    # Household app: the per-tariff withdrawn indexes (EASF01..06, enough for Tempo's six registers),
    # so euros over 7 days to 12 months are priced register by register from the rollup too.
    **{f"withdrawn_wh_r{i}": f'last("withdrawn_wh_r{i}")' for i in range(1, 7)},
}


class InfluxError(RuntimeError):
    """InfluxDB answered with an error (the message is InfluxDB's own, with the statement)."""


# --- durations --------------------------------------------------------------------------------

_DURATION_PART = re.compile(r"(\d+)(ns|u|µ|ms|s|m|h|d|w)")
_UNIT_S = {"ns": 1e-9, "u": 1e-6, "µ": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def duration_s(literal: str, field: str = "duration") -> float:
    """Seconds in an InfluxQL duration literal (``30d``, ``1h30m``, ``INF``); ValueError names ``field``."""
    text = literal.strip()
    if text.upper() == "INF":
        return float("inf")
    parts = _DURATION_PART.findall(text)
    if not text or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"{field}: {literal!r} is not an InfluxQL duration (examples: 30d, 12h, 1825d, INF)")
    return sum(int(n) * _UNIT_S[u] for n, u in parts)


# --- the /query API -------------------------------------------------------------------------------


def quote_ident(name: str) -> str:
    """An InfluxQL identifier, double-quoted (so any name is safe in a statement)."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_string(value: str) -> str:
    """An InfluxQL string literal, single-quoted."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def auth(influx: InfluxSettings) -> tuple[dict[str, str], dict[str, str]]:
    """(headers, query params) that authenticate to InfluxDB: a token (2.x/3.x) or v1 user/password."""
    if influx.token:
        return {"Authorization": f"Token {influx.token}"}, {}
    if influx.username:
        return {}, {"u": influx.username, "p": influx.password}
    return {}, {}


@functools.cache
def http_client() -> httpx.Client:
    """One connection pool per process: a new ``httpx.Client`` per query (what ``httpx.post`` makes)
    builds an SSL context each time, measured at 85 ms on a loaded 2-core machine, more than the
    query itself. The client is thread-safe (the API runs queries in worker threads)."""
    return httpx.Client()


def influx_query(
    influx: InfluxSettings, influxql: str, *, database: bool = True, timeout_s: float = 30.0
) -> list[dict[str, Any]]:
    """Runs InfluxQL statements; one dict per row: its columns, the series' tags, ``_measurement`` (the
    series name) and ``time`` in epoch ms."""
    headers, params = auth(influx)
    params = {**params, "q": influxql, "epoch": "ms"}
    if database:
        params["db"] = influx.database
    try:
        # POST: InfluxDB refuses CREATE/DROP/ALTER over GET; SELECT and SHOW work either way.
        answer = http_client().post(f"{influx.url}/query", data=params, headers=headers, timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise InfluxError(f"InfluxDB at {influx.url} did not answer: {exc}") from None
    try:
        body = answer.json()
    except ValueError:
        raise InfluxError(f"InfluxDB answered {answer.status_code}: {answer.text[:300]}") from None
    if "error" in body:
        raise InfluxError(f"{body['error']} (query: {influxql})")
    rows: list[dict[str, Any]] = []
    for result in body.get("results", []):
        if "error" in result:
            raise InfluxError(f"{result['error']} (query: {influxql})")
        for series in result.get("series", []):
            tags = series.get("tags", {})
            columns = series["columns"]
            for values in series.get("values", []):
                row = dict(zip(columns, values))
                row.update(tags)
                if "name" in series:
                    row.setdefault("_measurement", series["name"])
                rows.append(row)
    return rows


def database_shards(influx: InfluxSettings) -> list[dict[str, Any]]:
    """``SHOW SHARDS`` of ``influx.database`` (an admin's statement), each row with its ``start_ms``
    and ``end_ms`` besides InfluxDB's RFC 3339 ``start_time`` and ``end_time``."""
    return [
        {**row, "start_ms": _rfc3339_ms(row["start_time"]), "end_ms": _rfc3339_ms(row["end_time"])}
        for row in influx_query(influx, "SHOW SHARDS", database=False)
        if row.get("database") == influx.database
    ]


def _rfc3339_ms(value: str) -> int:
    return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)


def query(settings: Settings, influxql: str) -> list[dict[str, Any]]:
    """Runs InfluxQL against ``settings.influx.database``; one dict per row, times in epoch ms."""
    return influx_query(settings.influx, influxql)


def count_points(
    settings: Settings, measurement: str, where: str = "", *, retention_policy: str | None = None
) -> int:
    """How many points ``measurement`` holds (in the default policy unless one is named).

    ``where`` is an InfluxQL condition without the ``WHERE`` keyword (``"meter = '012345678901'"``).
    A point counts once however many fields it has: the largest per-field count is taken.
    """
    source = quote_ident(measurement)
    if retention_policy:
        source = f"{quote_ident(settings.influx.database)}.{quote_ident(retention_policy)}.{source}"
    statement = f"SELECT count(*) FROM {source}" + (f" WHERE {where}" if where else "")
    rows = query(settings, statement)
    return max((int(v) for row in rows for k, v in row.items() if k.startswith("count_") and v), default=0)


# --- the layout -------------------------------------------------------------------------------------


def ensure_database(settings: Settings) -> None:
    """Creates (or brings up to date) the database, its retention policies and the rollup query. Idempotent."""
    ensure_influx_database(settings.influx)


def ensure_influx_database(influx: InfluxSettings) -> None:
    raw_s = duration_s(influx.raw_retention, "influx.raw_retention")
    duration_s(influx.rollup_retention, "influx.rollup_retention")
    if raw_s < 3600:
        raise ValueError(f"influx.raw_retention: {influx.raw_retention!r} is shorter than InfluxDB's minimum (1h)")
    db = quote_ident(influx.database)
    influx_query(influx, f"CREATE DATABASE {db}", database=False)
    existing = {row["name"]: row for row in influx_query(influx, f"SHOW RETENTION POLICIES ON {db}")}
    for name, duration, default in (
        (RAW_POLICY, influx.raw_retention, True),
        (ROLLUP_POLICY, influx.rollup_retention, False),
    ):
        verb = "ALTER" if name in existing else "CREATE"
        influx_query(
            influx,
            f"{verb} RETENTION POLICY {quote_ident(name)} ON {db} DURATION {duration} REPLICATION 1"
            + (" DEFAULT" if default else ""),
        )
    create = rollup_continuous_query(influx.database)
    try:
        influx_query(influx, create)
    except InfluxError as exc:
        if "already exists" not in str(exc):
            raise
        # An older definition under the same name: replace it.
        influx_query(influx, f"DROP CONTINUOUS QUERY {quote_ident(ROLLUP_MEASUREMENT)} ON {db}")
        influx_query(influx, create)


def _rollup_select(database: str, where: str = "") -> str:
    db = quote_ident(database)
    fields = ", ".join(f"{aggregate} AS {quote_ident(name)}" for name, aggregate in ROLLUP_FIELDS.items())
    return (
        f"SELECT {fields} INTO {db}.{quote_ident(ROLLUP_POLICY)}.{quote_ident(ROLLUP_MEASUREMENT)} "
        f"FROM {db}.{quote_ident(RAW_POLICY)}.\"reading\"{where} GROUP BY time({ROLLUP_INTERVAL_S}s), *"
    )


def rollup_continuous_query(database: str) -> str:
    """The CREATE CONTINUOUS QUERY statement that fills ``rollup.reading_10m`` from ``raw.reading``."""
    return (
        f"CREATE CONTINUOUS QUERY {quote_ident(ROLLUP_MEASUREMENT)} ON {quote_ident(database)} "
        f"RESAMPLE FOR {ROLLUP_RESAMPLE_FOR} BEGIN {_rollup_select(database)} END"
    )


def rollup_range(settings: Settings, start_ms: int, end_ms: int) -> int:
    """Recomputes the 10-minute rollup over [start, end) (after a long outage or a raw backfill).

    Returns the number of rollup points written.
    """
    where = f" WHERE time >= {start_ms}ms AND time < {end_ms}ms"
    rows = query(settings, _rollup_select(settings.influx.database, where))
    return sum(int(row.get("written", 0)) for row in rows)
