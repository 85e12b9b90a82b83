"""A small Faust worker with a changelog-backed table, for the restart-recovery test.

Each record on the source topic is ``key → seq`` (per key, seq counts up from 0). The table keeps
``[last seq, count]`` per key and ignores a seq it has already counted, so at-least-once replays
do not count twice: once every record is processed, each key's count equals the number of records
produced for it, unless table recovery lost updates (the counts then go on from a stale value).

    python -m tests.streams.counting_worker --app-id ID --source TOPIC --partitions N
"""

from __future__ import annotations

import click

from quartier.settings import Settings
from streams.app import create_app, run_worker


@click.command()
@click.option("--app-id", required=True)
@click.option("--source", required=True)
@click.option("--partitions", type=int, required=True)
def main(app_id: str, source: str, partitions: int) -> None:
    app = create_app(Settings(), app_id, extra_topics={source: partitions})
    counts = app.Table("counts", partitions=partitions, key_type=bytes)

    @app.agent(app.topic(source, partitions=partitions))
    async def count(stream):  # type: ignore[no-untyped-def]
        async for event in stream.events():
            key, seq = event.key, int(event.value)
            last, seen = counts.get(key) or (-1, 0)
            if seq > last:
                counts[key] = [seq, seen + 1]

    run_worker(app, loglevel="info")


if __name__ == "__main__":
    main()
