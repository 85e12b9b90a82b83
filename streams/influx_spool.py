"""Batches of line protocol spilled to disk while InfluxDB cannot keep up, written back oldest first.

Each batch is one file, named ``<time_ns>-<pid>-<seq>-<points>.lp`` so that files sort by age, two
processes never pick the same name, and the points a file holds are known without reading it. A file is
written to a temporary name, fsynced, renamed, and the directory fsynced, so a crash never leaves half a
batch and a batch ``put`` returned from survives kill -9 and a crash of the machine alike: the stream worker
commits a reading's offset once its batch is here (docs/pipeline.md, "Delivery"). The fsyncs cost about
2.5 ms a 1 MB batch here, about 10 batches a second while InfluxDB is away at the fleet's rate. It is deleted only once
InfluxDB acknowledged it, so a crash between the write and the delete sends it twice, which InfluxDB
absorbs (a point with the same series and timestamp overwrites itself).
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass
class Batch:
    """Line-protocol lines joined into one request body."""

    body: bytes
    points: int
    #: The spool file holding this batch, deleted once InfluxDB acknowledged it.
    spool_path: Path | None = None
    #: The writer's mark after this batch's last line (``InfluxWriter.durable_mark``); None when read
    #: back from the spool, or for the halves of a batch split on its way.
    end: int | None = None


class Spool:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self._seq = itertools.count()
        self._waiting: deque[tuple[Path, int]] = deque()
        #: Points in files on disk, whether waiting or being sent.
        self.points = 0
        for path in sorted(self.directory.glob("*.lp")):
            points = _points_in_name(path)
            self._waiting.append((path, points))
            self.points += points

    @property
    def waiting(self) -> int:
        """Files not yet handed out."""
        return len(self._waiting)

    def put(self, batch: Batch) -> None:
        self.enqueue(self.write_file(batch), batch.points)

    def write_file(self, batch: Batch) -> Path:
        """Writes the batch's file (durable when this returns), without handing it out yet.

        Only files and names: safe in another thread, while the event loop's ``take`` goes on."""
        name = f"{time.time_ns():020d}-{os.getpid()}-{next(self._seq):08d}-{batch.points}.lp"
        path = self.directory / name
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as file:
            file.write(batch.body)
            file.flush()
            os.fsync(file.fileno())
        tmp.replace(path)
        # The rename is durable once the directory is: without this a crash of the machine could
        # leave the file's bytes on disk under no name.
        directory = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        return path

    def enqueue(self, path: Path, points: int) -> None:
        """A written file joins the line, to be sent after those before it."""
        self._waiting.append((path, points))
        self.points += points

    def take(self) -> Batch | None:
        """The oldest waiting batch; it stays on disk until ``done``."""
        while self._waiting:
            path, points = self._waiting.popleft()
            try:
                return Batch(path.read_bytes(), points, path)
            except FileNotFoundError:
                # Another writer on the same state directory already sent and removed it.
                self.points -= points
        return None

    def give_back(self, batch: Batch) -> None:
        """A taken batch that was not acknowledged goes back to the head of the line."""
        assert batch.spool_path is not None
        self._waiting.appendleft((batch.spool_path, batch.points))

    def done(self, batch: Batch) -> None:
        assert batch.spool_path is not None
        batch.spool_path.unlink(missing_ok=True)
        self.points -= batch.points


def _points_in_name(path: Path) -> int:
    try:
        return int(path.stem.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        # Not a name this module writes; count its lines rather than guess.
        log.warning("spool file %s has an unexpected name; counting its lines", path)
        return path.read_bytes().count(b"\n") + 1
