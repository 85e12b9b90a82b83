"""CSV of a home's readings for any period, streamed one InfluxDB page at a time, one row per point.

Resolutions: ``raw`` (every reading, as long as the raw policy keeps them), ``10m`` (the rollup's
points), ``1h`` and ``1d`` (the rollup grouped on the home's local hours and days). The header gives
each column's unit; times are UTC (ISO 8601), so a spreadsheet anywhere reads them the same.
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timezone

from households.home import Home
from quartier.settings import Settings
from quartier.influx import RAW_POLICY, ROLLUP_MEASUREMENT, ROLLUP_POLICY, influx_query, quote_ident, quote_string

RESOLUTIONS = ("raw", "10m", "1h", "1d")
#: Rows fetched per InfluxDB query: memory stays flat whatever the period.
PAGE_ROWS = 10_000
MAX_SPAN_DAYS = 5 * 366

RAW_COLUMNS = (
    ("time_utc", "time"), ("power_va", "drawn_va"), ("injected_power_va", "injected_va"),
    ("withdrawn_index_wh", "withdrawn_wh"), ("injected_index_wh", "injected_wh"), ("voltage_v", "voltage_v"),
    ("current_a", "current_a"), ("tariff_register", "tariff_register"),
)
ROLLUP_COLUMNS = (
    ("time_utc", "time"), ("power_mean_va", "power_mean_va"), ("power_max_va", "power_max_va"),
    ("withdrawn_index_wh", "withdrawn_wh"), ("injected_index_wh", "injected_wh"),
)


def validate(resolution: str, from_ms: int, to_ms: int) -> None:
    if resolution not in RESOLUTIONS:
        raise ValueError(f"resolution: {resolution!r} is not one of {', '.join(RESOLUTIONS)}")
    if to_ms <= from_ms:
        raise ValueError("to: must be after from")
    if to_ms - from_ms > MAX_SPAN_DAYS * 86_400_000:
        raise ValueError(f"to: a period of at most {MAX_SPAN_DAYS} days")


def _statement(settings: Settings, home: Home, resolution: str, start_ms: int, end_ms: int) -> str:
    db = quote_ident(settings.influx.database)
    meter = f"\"meter\" = {quote_string(home.meter)}"
    where = f"WHERE {meter} AND time >= {start_ms}ms AND time < {end_ms}ms"
    if resolution == "raw":
        fields = ", ".join(quote_ident(source) for _, source in RAW_COLUMNS[1:])
        return f"SELECT {fields} FROM {db}.{quote_ident(RAW_POLICY)}.\"reading\" {where} LIMIT {PAGE_ROWS}"
    source = f"{db}.{quote_ident(ROLLUP_POLICY)}.{quote_ident(ROLLUP_MEASUREMENT)}"
    if resolution == "10m":
        return (
            f"SELECT \"drawn_va\" AS power_mean_va, \"drawn_va_max\" AS power_max_va, \"withdrawn_wh\", "
            f"\"injected_wh\" FROM {source} {where} LIMIT {PAGE_ROWS}"
        )
    return (
        f"SELECT mean(\"drawn_va\") AS power_mean_va, max(\"drawn_va_max\") AS power_max_va, "
        f"last(\"withdrawn_wh\") AS withdrawn_wh, last(\"injected_wh\") AS injected_wh FROM {source} {where} "
        f"GROUP BY time({resolution}) fill(none) LIMIT {PAGE_ROWS} tz({quote_string(home.time_zone)})"
    )


def _line(values: list[object]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(values)
    return out.getvalue()


def _iso(t_ms: int) -> str:
    return datetime.fromtimestamp(t_ms / 1000, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def pages(settings: Settings, home: Home, resolution: str, from_ms: int, to_ms: int) -> Iterator[list[str]]:
    """CSV lines, a page at a time (the header first), paging on time."""
    validate(resolution, from_ms, to_ms)
    columns = RAW_COLUMNS if resolution == "raw" else ROLLUP_COLUMNS
    yield [_line([name for name, _ in columns])]
    cursor = from_ms
    while cursor < to_ms:
        rows = influx_query(settings.influx, _statement(settings, home, resolution, cursor, to_ms))
        if not rows:
            return
        yield [
            _line([_iso(int(row["time"])), *(row.get(source) for _, source in columns[1:])]) for row in rows
        ]
        if len(rows) < PAGE_ROWS:
            return
        cursor = int(rows[-1]["time"]) + 1


async def stream(settings: Settings, home: Home, resolution: str, from_ms: int, to_ms: int) -> AsyncIterator[str]:
    """The CSV as text chunks, each InfluxDB page fetched off the event loop."""
    iterator = pages(settings, home, resolution, from_ms, to_ms)
    while True:
        page = await asyncio.to_thread(next, iterator, None)
        if page is None:
            return
        yield "".join(page)
