"""Writes line protocol to InfluxDB in large batches, concurrently, without ever blocking ingest.

``write(lines)`` only appends to a buffer. Lines are sealed into batches of ``batch_points`` (or whatever is
pending after ``linger_s``), and ``concurrency`` sender tasks POST them: to ``/write?rp=raw&precision=ms``
(``influx.api == "v1"``: InfluxDB 1.x, and 2.x/3.x through their v1 API) or through ``influxdb-client``'s
async write API to ``/api/v2/write`` (``"v2"``: InfluxDB 2.x/3.x, VictoriaMetrics), bucket = the database.

Failures:
- no answer, a timeout, 5xx, 401/403/404 (a server restarting, a database not created yet), 429: the batch is
  retried with exponential backoff (capped at ``retry_max_s``) until it is written: nothing is lost;
- 400 (InfluxDB refused some points, e.g. older than the retention policy, or unparsable lines): InfluxDB
  already wrote the others, so the batch is not retried; the reason is logged and the refused points are
  counted (``quartier_influx_points_rejected_total``);
- 413 (body too large): the batch is split in two and each half sent.

Bounded buffering: at most ``max_buffered_points`` wait in memory (pending, queued and in flight). Beyond
that, batches spill to files under ``<state_dir>/influx-spool/<database>/`` (``streams.influx_spool``),
so ingest keeps going and nothing is lost; the writer signals it (``buffer_full`` flag, a warning, and
``quartier_influx_buffer_full_total`` once per episode) and writes the spool back, oldest first, once the
memory queue has drained. New batches keep going to the spool while it has waiting files, so the order
stays first-in first-out. ``stop()`` flushes for up to ``stop_timeout_s``; what InfluxDB still has not
acknowledged then is spooled too, and the next writer started on the same state directory writes it. Lines
written after ``stop()`` (a timer's alert point during the process's shutdown) go straight to the spool.

Durability, for the stream worker's acknowledgements (docs/pipeline.md, "Delivery"): ``write()`` returns
the writer's *mark*, the count of lines it has taken so far, and ``durable_mark`` is the mark up to which
every line is durable: acknowledged (or refused, for good) by InfluxDB, or in a spool file, which is fsynced
before it counts (a batch in the spool survives kill -9 of the process and a crash of the machine).
``on_durable`` is called each time ``durable_mark`` moves on. Per batch, not per line: a batch's lines are
contiguous, so the mark moves when the oldest batch not yet durable becomes durable.

``await write_kept(lines)`` returns only once the lines are in a spool file (written and fsynced in a
thread, so the event loop goes on meanwhile), for rare points whose writer must not go on before they
are kept: the alert history, whose state is saved right after (streams/worker.py). Senders then write
them like any spooled batch. They take no part in the marks.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

import httpx
from prometheus_client import Counter, Gauge

from quartier.settings import Settings
from quartier.influx import RAW_POLICY, auth
from streams.influx_spool import Batch, Spool

log = logging.getLogger(__name__)

POINTS_WRITTEN = Counter("quartier_influx_points_written_total", "Points InfluxDB acknowledged.")
POINTS_REJECTED = Counter(
    "quartier_influx_points_rejected_total", "Points InfluxDB refused with a 400 answer (logged, not retried)."
)
WRITE_ERRORS = Counter(
    "quartier_influx_write_errors_total", "Write requests that failed, by reason.", ["reason"]
)
BUFFERED = Gauge(
    "quartier_influx_buffered_points", "Points accepted by write() and not yet acknowledged (memory and spool)."
)
SPOOLED = Gauge("quartier_influx_spooled_points", "Points waiting on disk because the memory buffer was full.")
BUFFER_FULL = Counter(
    "quartier_influx_buffer_full_total", "Times the memory buffer reached its bound and batches began to spill."
)

_DROPPED = re.compile(r"dropped=(\d+)")


class NoAnswer(Exception):
    """The server could not be reached or did not answer in time."""


class Transport(Protocol):
    async def post(self, body: bytes) -> tuple[int, str]:
        """Sends one body; (HTTP status, answer text), or NoAnswer."""

    async def close(self) -> None: ...


class V1Transport:
    """``POST /write?db=..&rp=raw&precision=ms`` with httpx."""

    def __init__(self, settings: Settings, connections: int, policy: str = RAW_POLICY) -> None:
        headers, params = auth(settings.influx)
        self._url = f"{settings.influx.url}/write"
        self._params = {**params, "db": settings.influx.database, "rp": policy, "precision": "ms"}
        self._client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(30.0, connect=5.0),
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        )

    async def post(self, body: bytes) -> tuple[int, str]:
        try:
            answer = await self._client.post(self._url, params=self._params, content=body)
        except httpx.HTTPError as exc:
            raise NoAnswer(f"{type(exc).__name__}: {exc}") from None
        return answer.status_code, answer.text

    async def close(self) -> None:
        await self._client.aclose()


class V2Transport:
    """``/api/v2/write`` through influxdb-client's async write API; the bucket is the database name."""

    def __init__(self, settings: Settings, connections: int) -> None:
        from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync

        influx = settings.influx
        self._bucket = influx.database
        self._org = influx.org
        self._client = InfluxDBClientAsync(
            url=influx.url, token=influx.token or None, org=influx.org, timeout=30_000,
            connection_pool_maxsize=connections,
        )
        self._write_api = self._client.write_api()

    async def post(self, body: bytes) -> tuple[int, str]:
        import aiohttp
        from influxdb_client.client.write_api import WritePrecision
        from influxdb_client.rest import ApiException

        try:
            await self._write_api.write(
                bucket=self._bucket, org=self._org, record=body, write_precision=WritePrecision.MS
            )
        except ApiException as exc:
            text = exc.body.decode(errors="replace") if isinstance(exc.body, bytes) else str(exc.body or exc.reason)
            return int(exc.status or 0), text
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise NoAnswer(f"{type(exc).__name__}: {exc}") from None
        return 204, ""

    async def close(self) -> None:
        await self._client.close()


class InfluxWriter:
    #: A partial batch is sent once its oldest line has waited this long.
    linger_s: float = 0.2
    #: How long ``stop()`` waits for InfluxDB before spooling what is left.
    stop_timeout_s: float = 30.0
    retry_initial_s: float = 0.1
    retry_max_s: float = 5.0

    def __init__(
        self,
        settings: Settings,
        *,
        batch_points: int = 5000,
        max_buffered_points: int = 2_000_000,
        concurrency: int = 2,
        policy: str = RAW_POLICY,
        on_durable: Callable[[], None] | None = None,
        name: str = "",
    ) -> None:
        # policy: the retention policy written to (v1 API; "raw" by default). The privacy gate's
        # 30-minute and daily points go to the rollup policy through a writer of their own.
        if batch_points < 1:
            raise ValueError(f"batch_points: must be at least 1, got {batch_points}")
        if concurrency < 1:
            raise ValueError(f"concurrency: must be at least 1, got {concurrency}")
        if max_buffered_points < batch_points:
            raise ValueError(
                f"max_buffered_points: must be at least batch_points ({batch_points}), got {max_buffered_points}"
            )
        self.settings = settings
        self.batch_points = batch_points
        self.max_buffered_points = max_buffered_points
        self.concurrency = concurrency
        self.policy = policy
        # name: a writer of its own on the same database and policy gets a spool of its own.
        spool_name = settings.influx.database if policy == RAW_POLICY else f"{settings.influx.database}.{policy}"
        if name:
            spool_name = f"{spool_name}.{name}"
        self.spool_dir = settings.state_dir / "influx-spool" / spool_name
        #: Points InfluxDB acknowledged.
        self.points_written = 0
        #: Points InfluxDB refused with a 400 answer; ``last_rejection`` holds its reason.
        self.points_rejected = 0
        self.last_rejection: str | None = None
        #: True while batches spill to disk because the memory bound was reached.
        self.buffer_full = False
        #: Lines taken by ``write`` so far: the mark of the last one.
        self.mark = 0
        #: Every line up to this mark is acknowledged or refused by InfluxDB, or in the spool.
        self.durable_mark = 0
        self.on_durable = on_durable
        # The end marks of sealed batches not yet durable, in the order they were sealed, and those
        # that became durable while an older one was still on its way (concurrent senders, the spool).
        self._undurable: deque[int] = deque()
        self._durable_ahead: set[int] = set()
        self._pending: list[str] = []
        self._pending_since = 0.0
        self._queue: deque[Batch] = deque()
        self._queued_points = 0
        self._in_flight_points = 0
        self._spool = self._open_spool()
        self._transport: Transport | None = None
        self._senders: list[asyncio.Task[None]] = []
        self._work = asyncio.Event()
        self._idle = asyncio.Event()
        if not self.buffered:
            self._idle.set()
        self._stopping = False

    # --- accounting -------------------------------------------------------------------------------

    @property
    def buffered(self) -> int:
        """Points accepted by ``write`` and not yet acknowledged or refused (memory and spool)."""
        return len(self._pending) + self._queued_points + self._in_flight_points + self._spool.points

    @property
    def spooled(self) -> int:
        """Points on disk in the spool (after ``stop()``: what the next writer will write)."""
        return self._spool.points

    def _in_memory(self) -> int:
        return len(self._pending) + self._queued_points + self._in_flight_points

    def _settled(self, points: int) -> None:
        BUFFERED.dec(points)
        if self.buffered == 0:
            self._idle.set()

    # --- the producer side ------------------------------------------------------------------------

    def write(self, lines: list[str]) -> int:
        """Enqueues line-protocol lines; never blocks and never drops (see the module docstring).

        Returns the writer's mark after them: they are durable once ``durable_mark`` reaches it.
        """
        if not lines:
            return self.mark
        if self._stopping:
            return self._spool_after_stop(lines)
        if not self._pending:
            self._pending_since = time.monotonic()
            # Wake a sender so that it times the linger of this new partial batch.
            self._work.set()
        self._pending.extend(lines)
        self.mark += len(lines)
        BUFFERED.inc(len(lines))
        self._idle.clear()
        if len(self._pending) >= self.batch_points:
            while len(self._pending) >= self.batch_points:
                chunk = self._pending[: self.batch_points]
                del self._pending[: self.batch_points]
                self._seal(chunk, self.mark - len(self._pending))
            # What remains came with this call.
            self._pending_since = time.monotonic()
        return self.mark

    async def write_kept(self, lines: list[str]) -> None:
        """Puts the lines in the spool and returns once they are on disk (see the module docstring)."""
        if not lines:
            return
        batch = Batch("\n".join(lines).encode(), len(lines))
        path = await asyncio.to_thread(self._spool.write_file, batch)
        self._spool.enqueue(path, batch.points)
        if self._stopping:
            return  # for the next writer, as what stop() spooled (not counted in this one's gauges)
        BUFFERED.inc(batch.points)
        SPOOLED.inc(batch.points)
        self._idle.clear()
        self._work.set()

    def _seal_pending(self) -> None:
        if self._pending:
            chunk, self._pending = self._pending, []
            self._seal(chunk, self.mark)

    def _seal(self, lines: list[str], end: int) -> None:
        batch = Batch("\n".join(lines).encode(), len(lines), end=end)
        self._undurable.append(end)
        # Lines still pending are not counted: a single write() larger than the bound is sealed batch by
        # batch, and after it returns at most batch_points - 1 of them stay pending.
        over = self._queued_points + self._in_flight_points + batch.points > self.max_buffered_points
        # While the spool has waiting batches, new ones join it, so batches leave in the order they came.
        if over or self._spool.waiting:
            self._spill(batch, over)
        else:
            self._queue.append(batch)
            self._queued_points += batch.points
        self._work.set()

    def _spill(self, batch: Batch, over: bool) -> None:
        spool = self._spool
        if over and not self.buffer_full:
            self.buffer_full = True
            BUFFER_FULL.inc()
            log.warning(
                "InfluxDB write buffer full (%d points in memory, bound %d): spilling batches to %s until "
                "InfluxDB catches up",
                self._in_memory(), self.max_buffered_points, spool.directory,
            )
        try:
            spool.put(batch)
        except OSError as exc:
            # Keeping the batch in memory past the bound beats losing it.
            log.error("cannot spool to %s (%s); keeping the batch in memory past the bound", spool.directory, exc)
            self._queue.append(batch)
            self._queued_points += batch.points
            return
        SPOOLED.inc(batch.points)
        self._became_durable(batch.end)

    def _spool_after_stop(self, lines: list[str]) -> int:
        """Lines written after ``stop()``: straight to the spool, for the next writer (not counted
        in this writer's gauges, as what ``stop()`` spooled is not)."""
        self.mark += len(lines)
        self._undurable.append(self.mark)
        self._spool.put(Batch("\n".join(lines).encode(), len(lines)))
        self._became_durable(self.mark)
        return self.mark

    def _became_durable(self, end: int | None) -> None:
        """A sealed batch is acknowledged, refused or spooled: moves ``durable_mark`` as far as it can."""
        if end is None:  # read back from the spool: durable since it was written there
            return
        undurable = self._undurable
        if not undurable or undurable[0] != end:
            self._durable_ahead.add(end)
            return
        undurable.popleft()
        ahead = self._durable_ahead
        while undurable and undurable[0] in ahead:
            ahead.discard(end := undurable.popleft())
        self.durable_mark = end
        if self.on_durable is not None:
            self.on_durable()

    def _open_spool(self) -> Spool:
        """The spool directory, with what an earlier writer left there counted as this one's buffer."""
        spool = Spool(self.spool_dir)
        if spool.points:
            log.info("%d points left in %s by an earlier writer will be written first", spool.points, spool.directory)
            BUFFERED.inc(spool.points)
            SPOOLED.inc(spool.points)
        return spool

    # --- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._senders:
            return
        if self._stopping:  # started again after stop(): pick up what that stop spooled
            self._spool = self._open_spool()
            self._stopping = False
        if self.buffered:
            self._idle.clear()
        if self.settings.influx.api == "v2":
            self._transport = V2Transport(self.settings, self.concurrency)
        else:
            self._transport = V1Transport(self.settings, self.concurrency, self.policy)
        self._senders = [
            asyncio.create_task(self._send_loop(), name=f"influx-writer-{i}") for i in range(self.concurrency)
        ]
        self._work.set()

    async def flush(self) -> None:
        """Returns once every point written so far is acknowledged (or refused) by InfluxDB."""
        if not self._senders:
            raise RuntimeError("InfluxWriter.flush before start()")
        self._seal_pending()
        self._work.set()
        await self._idle.wait()

    async def stop(self) -> None:
        """Flushes what is buffered (for up to ``stop_timeout_s``), spools the rest, then stops."""
        if self._stopping:
            return
        if self._senders:
            try:
                await asyncio.wait_for(self.flush(), self.stop_timeout_s)
            except TimeoutError:
                log.warning(
                    "InfluxDB did not take the last %d points within %.0fs", self.buffered, self.stop_timeout_s
                )
        self._stopping = True
        for task in self._senders:
            task.cancel()
        await asyncio.gather(*self._senders, return_exceptions=True)
        self._senders = []
        spool = self._spool
        leftovers = list(self._queue)
        self._queue.clear()
        self._queued_points = 0
        if self._pending:
            self._undurable.append(self.mark)
            leftovers.append(Batch("\n".join(self._pending).encode(), len(self._pending), end=self.mark))
            self._pending = []
        for batch in leftovers:
            spool.put(batch)
            SPOOLED.inc(batch.points)
            self._became_durable(batch.end)
        if spool.points:
            log.warning(
                "%d points InfluxDB has not acknowledged are kept in %s; the next writer on this state "
                "directory writes them", spool.points, spool.directory,
            )
        # They are no longer this writer's buffer: the next writer counts them again.
        BUFFERED.dec(spool.points)
        SPOOLED.dec(spool.points)
        if self._transport is not None:
            await self._transport.close()
            self._transport = None

    # --- the sender side --------------------------------------------------------------------------

    def _take(self) -> Batch | None:
        """The oldest batch: memory first (it is older than anything spilled after it), then the spool."""
        if self._queue:
            batch = self._queue.popleft()
            self._queued_points -= batch.points
            self._in_flight_points += batch.points
            return batch
        # A spooled batch stays counted in the spool until it is acknowledged.
        return self._spool.take()

    async def _send_loop(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                waited = time.monotonic() - self._pending_since
                if self._pending and waited >= self.linger_s:
                    self._seal_pending()
                    continue
                self._work.clear()
                try:
                    await asyncio.wait_for(self._work.wait(), self.linger_s - waited if self._pending else None)
                except TimeoutError:
                    pass
                continue
            try:
                await self._deliver(batch)
            except asyncio.CancelledError:
                self._give_back(batch)
                raise
            finally:
                if batch.spool_path is None:
                    self._in_flight_points -= batch.points
            self._finished(batch)

    def _give_back(self, batch: Batch) -> None:
        if batch.spool_path is not None:
            self._spool.give_back(batch)
        else:
            self._queue.appendleft(batch)
            self._queued_points += batch.points

    def _finished(self, batch: Batch) -> None:
        if batch.spool_path is not None:
            self._spool.done(batch)
            SPOOLED.dec(batch.points)
            if self.buffer_full and not self._spool.points:
                self.buffer_full = False
                log.info("InfluxDB caught up: the spool in %s is empty", self._spool.directory)
        else:
            self._became_durable(batch.end)
        self._settled(batch.points)

    async def _deliver(self, batch: Batch) -> None:
        """Sends one batch until InfluxDB acknowledges or refuses it (see the module docstring)."""
        assert self._transport is not None
        delay = self.retry_initial_s
        attempt = 0
        while True:
            attempt += 1
            try:
                status, text = await self._transport.post(batch.body)
            except NoAnswer as exc:
                status, text, reason = 0, str(exc), "no_answer"
            else:
                if status < 300:
                    self._acknowledged(batch.points)
                    return
                if status == 400:
                    self._refused(batch, text)
                    return
                if status == 413 and batch.points > 1:
                    await self._deliver_halves(batch)
                    return
                reason = f"http_{status}"
            WRITE_ERRORS.labels(reason).inc()
            if attempt == 1 or attempt % 20 == 0:
                log.warning(
                    "InfluxDB write of %d points failed (%s, attempt %d): %s; retrying with backoff",
                    batch.points, reason, attempt, text[:300],
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.retry_max_s)

    async def _deliver_halves(self, batch: Batch) -> None:
        lines = batch.body.split(b"\n")
        middle = len(lines) // 2
        for half in (lines[:middle], lines[middle:]):
            await self._deliver(Batch(b"\n".join(half), len(half)))

    def _acknowledged(self, points: int) -> None:
        self.points_written += points
        POINTS_WRITTEN.inc(points)

    def _refused(self, batch: Batch, text: str) -> None:
        WRITE_ERRORS.labels("refused").inc()
        # InfluxDB writes the valid points of a batch and names how many it dropped, or which lines it
        # could not parse; only those are lost, and they could never be written as they are.
        dropped = sum(int(n) for n in _DROPPED.findall(text)) + text.count("unable to parse")
        dropped = min(dropped or batch.points, batch.points)
        self.points_rejected += dropped
        self.last_rejection = text.strip()[:1000]
        POINTS_REJECTED.inc(dropped)
        self._acknowledged(batch.points - dropped)
        log.warning("InfluxDB refused %d of %d points (not retried): %s", dropped, batch.points, text[:500])
