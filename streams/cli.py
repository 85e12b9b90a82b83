"""``quartier streams``: the stream worker (Faust agents)."""

from __future__ import annotations

import click

from quartier.settings import Settings


@click.group()
def streams() -> None:
    """The stream worker (Faust agents)."""


@streams.command("worker")
@click.option("--app-id", default=None, help="Faust app id (the consumer group). Default: <topic prefix>quartier-streams.")
@click.option("--metrics-port", type=int, default=None, help="Serve Prometheus metrics here (0: off). Default: settings.metrics_port.")
@click.option(
    "--deadman-interval", type=float, default=5.0, show_default=True,
    help="Seconds between disconnect checks, in each partition's meter time as readings are consumed and in "
    "wall time when none come (0: off).",
)
@click.option(
    "--gc-freeze/--no-gc-freeze", default=True, show_default=True,
    help="Keep the alert state out of the garbage collector's full passes (shorter pauses; docs/pipeline.md).",
)
@click.option("--loglevel", default="info", show_default=True, type=click.Choice(["debug", "info", "warning", "error"]))
def worker(app_id: str | None, metrics_port: int | None, deadman_interval: float, gc_freeze: bool, loglevel: str) -> None:
    """Run the stream worker in the foreground; SIGTERM or Ctrl-C stops it cleanly (InfluxDB flushed)."""
    import logging

    from streams.app import run_worker
    from streams.metrics import serve_metrics, watch_gc
    from streams.worker import build_worker, prepare_influx

    settings = Settings()
    if metrics_port is not None:
        settings = settings.model_copy(update={"metrics_port": metrics_port})
    stream_worker = build_worker(
        settings, app_id or f"{settings.kafka.topic_prefix}quartier-streams", deadman_interval_s=deadman_interval,
        freeze_gc=gc_freeze,
    )
    # httpx logs every InfluxDB write at INFO; the writer logs what matters itself.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    prepare_influx(settings)
    serve_metrics(settings.metrics_port)
    watch_gc()
    run_worker(stream_worker.app, loglevel=loglevel)
