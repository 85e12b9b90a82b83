"""Portability: everything Quartier holds about a household, in open formats.

``export_household`` writes, into a directory:

- ``readings.csv``: the meter's readings over a range, at the resolution asked for: ``1hz`` (every stored
  reading, from ``reading``), ``10min`` (``reading_10m``), ``30min`` (``reading_30m`` for a meter that
  chose it, else 30-minute windows of the 10-minute rollup) or ``daily`` (``reading_1d``, else daily
  windows of the rollup). Read from InfluxDB a shard group at a time (a day or a week), as InfluxDB's own
  CSV, uncompressed (two queries at once, on one connection pool), and streamed to the file, so a year of
  1 Hz readings never sits in memory;
- ``household.json``: one object with a key per category of the data map (``privacy.datamap.CATEGORIES``):
  ``profile`` (the household, its members' accounts), ``contacts`` (delivery preferences), ``devices``,
  ``readings`` (the CSV's name, resolution, range and row count), ``alerts``, ``rules``, ``deliveries``,
  ``trades`` (offers, orders, trades, deliveries of the market), ``consent``, ``telemetry`` and
  ``access_log`` (who other than the members read the household's data).

The export is itself a read of the household's data: it is logged (actor ``export``, why ``export``).
"""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import httpx
import msgspec

from quartier import events as ev
from quartier import kafka, topics
from quartier.influx import (
    RAW_POLICY, ROLLUP_POLICY, InfluxError, auth, database_shards, influx_query, quote_ident, quote_string,
)
from quartier.settings import Settings

ExportResolution = Literal["1hz", "10min", "30min", "daily"]
DAY_MS = 24 * 3600 * 1000
READING_COLUMNS = ("time_ms", "drawn_va", "injected_va", "withdrawn_wh", "injected_wh")


def _rows(settings: Settings, statement: str) -> list[dict[str, Any]]:
    return influx_query(settings.influx, statement, timeout_s=300)


def _reading_query(resolution: str, meter: str, start: int, end: int, coarse_exists: bool) -> str:
    where = f'WHERE "meter" = {quote_string(meter)} AND time >= {start}ms AND time < {end}ms'
    fields = '"drawn_va", "injected_va", "withdrawn_wh", "injected_wh"'
    if resolution == "1hz":
        return f"SELECT {fields} FROM {quote_ident(RAW_POLICY)}.\"reading\" {where}"
    if resolution == "10min":
        return f"SELECT {fields} FROM {quote_ident(ROLLUP_POLICY)}.\"reading_10m\" {where}"
    measurement, window = ("reading_30m", "30m") if resolution == "30min" else ("reading_1d", "1d")
    if coarse_exists:
        return f"SELECT {fields} FROM {quote_ident(ROLLUP_POLICY)}.{quote_ident(measurement)} {where}"
    return (
        'SELECT mean("drawn_va") AS drawn_va, mean("injected_va") AS injected_va, last("withdrawn_wh") AS withdrawn_wh, '
        f'last("injected_wh") AS injected_wh FROM {quote_ident(ROLLUP_POLICY)}."reading_10m" {where} '
        f"GROUP BY time({window}) fill(none)"
    )


def _window_csv(client: httpx.Client, settings: Settings, statement: str) -> bytes:
    """One query's rows as CSV lines ``time,drawn_va,...`` (InfluxDB's own CSV, less its name and tags columns)."""
    headers, params = auth(settings.influx)
    # identity: InfluxDB gzips its answer for any client that accepts it, and that compression cost it
    # 40% of the export's CPU (measured, docs/privacy.md), for bytes that only cross the host or a LAN.
    answer = client.post(f"{settings.influx.url}/query", data={**params, "db": settings.influx.database, "q": statement,
                         "epoch": "ms"}, headers={**headers, "Accept": "application/csv", "Accept-Encoding": "identity"})
    if answer.status_code != 200:
        raise RuntimeError(f"InfluxDB answered {answer.status_code}: {answer.text[:300]} (query: {statement})")
    return strip_name_and_tags(answer.content)


def strip_name_and_tags(content: bytes) -> bytes:
    """InfluxDB's CSV less its header line and the two first columns of every row (the measurement's name
    and its tags, empty here: no GROUP BY tag), each row ending in a newline."""
    header_end = content.find(b"\n")
    if header_end < 0:
        return b""
    rows = content[header_end + 1 :].rstrip(b"\n")
    if not rows:
        return b""
    prefix = rows[: rows.index(b",", rows.index(b",") + 1) + 1]  # "reading,," on the first row
    # One C pass instead of a split per row; if a row did not carry the first row's prefix, the slow way.
    if rows.count(b"\n" + prefix) == rows.count(b"\n"):
        return rows.replace(b"\n" + prefix, b"\n")[len(prefix) :] + b"\n"
    return b"".join(line.split(b",", 2)[2] + b"\n" for line in rows.split(b"\n") if line)


WEEK_MS = 7 * DAY_MS


def query_windows(settings: Settings, policy: str, start_ms: int, end_ms: int) -> list[tuple[int, int]]:
    """``[start_ms, end_ms)`` cut where the policy's shard groups begin (:func:`windows_between`), so no
    shard is split between two queries: InfluxDB 1.6 answers a query on a shard whose points are still
    in its cache (every point written in the last ``cache-snapshot-write-cold-duration``, a whole
    backfilled year) by copying the series' whole cached entry of that shard, so a day per query on
    7-day shards (a policy over six months) copied each week seven times (docs/privacy.md, Export).
    Without the shards' list (``SHOW SHARDS`` refused: InfluxDB 2.x, 3.x, no admin right), a day per
    query."""
    try:
        cuts = sorted({row["start_ms"] for row in database_shards(settings.influx) if row.get("retention_policy") == policy})
    except (InfluxError, KeyError, ValueError):
        cuts = list(range(start_ms, end_ms, DAY_MS))
    return windows_between(cuts, start_ms, end_ms)


def windows_between(cuts: list[int], start_ms: int, end_ms: int) -> list[tuple[int, int]]:
    """``[start_ms, end_ms)`` cut at the sorted ``cuts`` (where shard groups begin). A cut closer than
    a day to the last one joins the two windows (1-hour shards are read a day per query), unless the
    joined window would be longer than a week; a window longer than a week (a custom shard duration)
    is cut at a week, which bounds one answer (a week of 1 Hz readings: about 30 MB of CSV)."""
    inner = [cut for cut in cuts if start_ms < cut < end_ms]
    edges = [start_ms]
    for cut, following in zip(inner, [*inner[1:], end_ms]):
        # Joined past a week, the week's cap instead of the shard's start would split a shard.
        if cut - edges[-1] >= DAY_MS or following - edges[-1] > WEEK_MS:
            edges.append(cut)
    windows: list[tuple[int, int]] = []
    for a, b in zip(edges, [*edges[1:], end_ms]):
        windows += [(w, min(w + WEEK_MS, b)) for w in range(a, b, WEEK_MS)]
    return windows


def write_readings_csv(
    settings: Settings, meter: str, path: Path, *, resolution: ExportResolution, start_ms: int, end_ms: int,
    concurrency: int = 2,
) -> int:
    """Streams the meter's readings to ``path``, a shard group per query (:func:`query_windows`),
    ``concurrency`` queries at once (in order); returns the number of rows written. Two in flight: the
    cost is ``influxd``'s CPU, and two queries keep both cores of the reference machine busy."""
    coarse = {"30min": "reading_30m", "daily": "reading_1d"}.get(resolution)
    coarse_exists = bool(coarse) and bool(_rows(settings, (
        f'SELECT count("withdrawn_wh") FROM {quote_ident(ROLLUP_POLICY)}.{quote_ident(coarse or "")} '
        f'WHERE "meter" = {quote_string(meter)}'
    )))
    policy = RAW_POLICY if resolution == "1hz" else ROLLUP_POLICY
    windows = query_windows(settings, policy, start_ms, end_ms)
    statements = [_reading_query(resolution, meter, a, b, coarse_exists) for a, b in windows]
    rows = 0
    with (path.open("wb") as file, ThreadPoolExecutor(max_workers=concurrency) as pool,
          httpx.Client(timeout=300) as client):  # one connection pool for every window's query
        file.write((",".join(READING_COLUMNS) + "\n").encode())
        for chunk in pool.map(lambda statement: _window_csv(client, settings, statement), statements):
            file.write(chunk)
            rows += chunk.count(b"\n")
    return rows


async def _topic(settings: Settings, declared: topics.Topic) -> list[Any]:
    name = settings.topic(declared.name)
    if name not in await kafka.topic_partitions(settings):
        return []
    decoder = msgspec.json.Decoder(declared.record)
    return await kafka.read_all(settings, name, decoder.decode)


def _plain(record: Any) -> Any:
    return msgspec.to_builtins(record)


async def household_data(settings: Settings, household: str, *, readings: dict[str, Any]) -> dict[str, Any]:
    """The JSON document: one key per category of the data map."""
    from accounts.service import fold
    from accounts.state import row
    from quartier.access_log import AccessLog

    state = await fold(settings)
    found = state.households.get(household)
    if found is None:
        raise LookupError(f"household: no household {household!r}")
    meter = found.meter
    members = state.members(household)
    rules = [r for r in await _topic(settings, topics.ALERTS_RULES) if r.meter == meter]
    alerts = [a for a in await _topic(settings, topics.ALERTS_EVENTS) if a.meter == meter]
    alert_ids = {a.id for a in alerts}
    deliveries = [d for d in await _topic(settings, topics.NOTIFICATIONS_DELIVERIES) if d.alert_id in alert_ids]
    market = await _topic(settings, topics.MARKET_EVENTS)
    offers = [e for e in market if isinstance(e, ev.OfferListed) and e.producer == household]
    orders = [e for e in market if isinstance(e, ev.OrderPlaced) and e.consumer == household]
    mine = {o.offer_id for o in offers} | {o.order_id for o in orders}
    trades = [t for e in market if isinstance(e, ev.SlotClosed) for t in e.trades if t.offer_id in mine or t.order_id in mine]
    trade_ids = {t.trade_id for t in trades} | {o.order_id for o in orders if o.offer_id is not None}
    delivered = [d for e in market if isinstance(e, ev.Allocated) for d in e.deliveries if d.trade_id in trade_ids]
    consent = [c for c in await _topic(settings, topics.METER_RESOLUTION) if c.meter == meter]
    telemetry = [t for t in await _topic(settings, topics.METER_TELEMETRY) if t.meter == meter]
    access = AccessLog.open(settings)
    try:
        access_entries = [
            {k: v for k, v in e.model_dump().items() if k not in ("prev_hash",)} for e in access.entries(household=household)
        ]
    finally:
        access.engine.dispose()
    return {
        "household": household,
        "profile": {"household": row(found), "members": [
            {k: v for k, v in row(a).items() if k != "password_hash"} for a in members
        ]},
        "contacts": [row(p) for p in state.preferences.values() if p.household == household],
        "devices": [row(d) for d in state.devices.values() if d.household == household],
        "readings": readings,
        "alerts": [_plain(a) for a in alerts],
        "rules": _plain(rules[-1]) if rules else None,
        "deliveries": [_plain(d) for d in deliveries],
        "trades": {"offers": [_plain(o) for o in offers], "orders": [_plain(o) for o in orders],
                   "trades": [_plain(t) for t in trades], "deliveries": [_plain(d) for d in delivered]},
        "consent": _plain(consent[-1]) if consent else {"resolution": settings.privacy.default_resolution, "chosen": False},
        "telemetry": [_plain(t) for t in telemetry],
        "access_log": access_entries,
    }


async def export_household(
    settings: Settings, household: str, directory: Path, *, resolution: ExportResolution = "30min",
    start_ms: int, end_ms: int, reader: str = "export",
) -> dict[str, Any]:
    """Writes ``readings.csv`` and ``household.json`` into ``directory``; returns the JSON document."""
    from accounts.service import fold
    from quartier.access_log import AccessLog

    if end_ms <= start_ms:
        raise ValueError("end_ms: must be after start_ms")
    directory.mkdir(parents=True, exist_ok=True)
    access = AccessLog.open(settings)
    try:
        access.append(actor=reader, actor_role="export", household=household, what="profile", why="export")
    finally:
        access.engine.dispose()
    state = await fold(settings)
    found = state.households.get(household)
    if found is None:
        raise LookupError(f"household: no household {household!r}")
    csv_path = directory / "readings.csv"
    count = 0
    if found.meter:
        count = await asyncio.to_thread(write_readings_csv, settings, found.meter, csv_path,
                                        resolution=resolution, start_ms=start_ms, end_ms=end_ms)
    else:
        csv_path.write_text(",".join(READING_COLUMNS) + "\n")
    readings = {"file": csv_path.name, "meter": found.meter, "resolution": resolution, "start_ms": start_ms,
                "end_ms": end_ms, "rows": count}
    document = await household_data(settings, household, readings=readings)
    (directory / "household.json").write_text(json.dumps(document, indent=2, sort_keys=True, default=str))
    return document
