"""``quartier privacy``: the access log's verification, anonymisation, and the privacy service."""

from __future__ import annotations

import json
import sys

import click

from quartier.settings import Settings


@click.group()
def privacy() -> None:
    """Personal data: access log, anonymisation after a year (docs/privacy.md)."""


@privacy.command("verify-log")
@click.option("--json", "as_json", is_flag=True, help="One JSON object: ok, entries, head, problem, seq.")
def verify_log(as_json: bool) -> None:
    """Recompute the access log's hash chain; exit status 1 if an entry was changed, removed or reordered."""
    from quartier.access_log import AccessLog

    verification = AccessLog.open(Settings()).verify()
    if as_json:
        click.echo(json.dumps(verification.as_dict()))
    elif verification.ok:
        click.echo(f"access log intact: {verification.entries} entries, head {verification.head}")
    else:
        click.echo(f"access log BROKEN: {verification.problem}", err=True)
    sys.exit(0 if verification.ok else 1)


@privacy.command("anonymise")
@click.option("--json", "as_json", is_flag=True)
def anonymise(as_json: bool) -> None:
    """Run the anonymisation once: detail older than privacy.anonymise_after_days becomes zone aggregates."""
    from privacy.anonymise import Anonymiser

    report = Anonymiser(Settings()).run()
    click.echo(json.dumps(report.as_dict()) if as_json else
               "\n".join(f"{key:<16} {value}" for key, value in report.as_dict().items()))


@privacy.command("consent")
@click.option("--meter", required=True, help="The meter (12 digits).")
@click.option("--resolution", required=True, type=click.Choice(["1hz", "30min", "daily"]),
              help="What is stored of its readings from now on.")
def consent(meter: str, resolution: str) -> None:
    """Record a household's choice of stored resolution for its meter (meter.resolution)."""
    import asyncio
    import time

    from aiokafka import AIOKafkaProducer

    from quartier import events, kafka, topics

    settings = Settings()
    try:
        choice = events.decoder(events.ResolutionChosen).decode(events.encode(events.ResolutionChosen(
            meter=meter, resolution=resolution, at_ms=int(time.time() * 1000))))  # type: ignore[arg-type]
    except events.ContractError as error:
        raise click.BadParameter(str(error), param_hint="--meter") from None

    async def send() -> None:
        await kafka.ensure_topics(settings, [topics.METER_RESOLUTION])
        producer = AIOKafkaProducer(**kafka.producer_config(settings))
        await producer.start()
        try:
            await producer.send_and_wait(settings.topic(topics.METER_RESOLUTION.name), events.encode(choice),  # type: ignore[arg-type]
                                         key=meter.encode())
        finally:
            await producer.stop()

    asyncio.run(send())
    click.echo(f"meter {meter}: {resolution} from now on")


@privacy.command("erase")
@click.option("--household", required=True, help="The household to forget (hh_...).")
@click.option("--json", "as_json", is_flag=True, help="The erasure_completed record as JSON.")
def erase(household: str, as_json: bool) -> None:
    """Erase a household from every store (the erasure saga); prints what each store did."""
    import asyncio
    import time

    import msgspec

    from privacy.erasure import ErasureSaga

    async def go() -> object:
        saga = ErasureSaga(Settings())
        return await saga.run(await saga.request(household))

    started = time.monotonic()
    completed = asyncio.run(go())
    elapsed = time.monotonic() - started
    if as_json:
        click.echo(json.dumps({**msgspec.to_builtins(completed), "elapsed_s": round(elapsed, 3)}))
    else:
        for store in completed.stores:  # type: ignore[attr-defined]
            click.echo(f"{store.store:<10} {store.erased}")
        click.echo(f"erasure_completed in {elapsed:.2f} s")


@privacy.command("export")
@click.option("--household", required=True)
@click.option("--to", "directory", required=True, type=click.Path(file_okay=False), help="Directory to write into.")
@click.option("--resolution", type=click.Choice(["1hz", "10min", "30min", "daily"]), default="30min", show_default=True)
@click.option("--days", type=float, default=365.0, show_default=True, help="Readings of the last DAYS days.")
def export(household: str, directory: str, resolution: str, days: float) -> None:
    """Export everything held about a household: readings.csv and household.json."""
    import asyncio
    import time
    from pathlib import Path

    from privacy.export import export_household

    end = int(time.time() * 1000)
    document = asyncio.run(export_household(Settings(), household, Path(directory), resolution=resolution,  # type: ignore[arg-type]
                                            start_ms=end - int(days * 86_400_000), end_ms=end))
    click.echo(f"{document['readings']['rows']} readings and household.json written to {directory}")


@privacy.command("run")
def run() -> None:
    """Run the privacy service: erasures left unfinished resumed at start, then the anonymisation job
    on its schedule (APScheduler), until stopped."""
    import asyncio
    import logging

    from privacy.anonymise import start_scheduler
    from quartier.sql import privacy_engine

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    async def serve() -> None:
        from privacy.erasure import ErasureSaga

        settings = Settings()
        for completed in await ErasureSaga(settings).run_pending():
            logging.getLogger("privacy").info("erasure %s of %s completed after a restart", completed.erasure,
                                              completed.household)
        scheduler = start_scheduler(settings, privacy_engine(settings, []))
        try:
            await asyncio.Event().wait()
        finally:
            scheduler.shutdown(wait=False)

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass
