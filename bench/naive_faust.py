"""The naive Faust design ``bench.pipeline --backlog-minutes`` compares the stream worker with.

One Faust agent over ``meter.readings`` that handles each reading on its own and updates a
changelog-backed table per reading (``last_seen[meter] = time_ms``, one changelog record each), the
way a Faust tutorial would write it; nothing else (no alert rules, no InfluxDB), so it does less
than the worker per reading, and the ratio it gives is a floor. It runs with the same Faust app
settings the worker gets (``streams.app.create_app``: the embedded broker's corrections, topics
created first), in its own consumer group, and writes how many readings it has handled, once a
second, to ``--count-file`` as ``<readings> <unix time>``.

    python -m bench.naive_faust --app-id GROUP --count-file PATH   (environment: the run's settings)
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from quartier import events, topics
from quartier.settings import Settings
from streams.app import create_app, run_worker


def build(app_id: str, count_file: Path):  # type: ignore[no-untyped-def]
    settings = Settings()
    app = create_app(settings, app_id)
    source = app.topic(settings.topic(topics.METER_READINGS.name), partitions=topics.METER_READINGS.partitions)
    last_seen = app.Table("naive_last_seen", partitions=topics.METER_READINGS.partitions, key_type=bytes, value_type=bytes)
    decoder = events.Decoder(events.IngestMessage)
    handled = 0

    @app.agent(source, name="naive")
    async def naive(stream):  # type: ignore[no-untyped-def]
        nonlocal handled
        async for value in stream:
            try:
                message = decoder.decode(value)
            except events.ContractError:
                handled += 1  # a malformed frame: counted once, as the worker counts it
                continue
            readings = message.readings if isinstance(message, events.ReadingBatch) else [message]
            for reading in readings:
                last_seen[reading.meter.encode()] = str(reading.time_ms).encode()
                handled += 1

    @app.timer(1.0)
    async def report() -> None:
        tmp = count_file.with_suffix(".tmp")
        tmp.write_text(f"{handled} {time.time()}")
        os.replace(tmp, count_file)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--app-id", required=True)
    parser.add_argument("--count-file", type=Path, required=True)
    args = parser.parse_args()
    run_worker(build(args.app_id, args.count_file), loglevel="warning")


if __name__ == "__main__":
    main()
