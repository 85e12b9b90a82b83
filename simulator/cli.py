"""``quartier simulate``: a fleet of Linky meters into Kafka, in real time or as backfilled history."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import datetime, timezone
from typing import Any

import click

from quartier.settings import Settings
from simulator.config import ConfigError, FleetConfig

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class Duration(click.ParamType):
    """Seconds, or a number with a unit: 90, 90s, 15m, 6h, 2d."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, (int, float)):
            return float(value)
        match = _DURATION.match(str(value))
        if not match:
            self.fail(f"{value!r} is not a duration: use seconds or a number with s, m, h or d (6h, 2d)", param, ctx)
        return float(match.group(1)) * _UNIT_S[match.group(2)]


class Instant(click.ParamType):
    """An ISO 8601 date or date-time; UTC when it names no offset."""

    name = "iso-time"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            parsed = datetime.fromisoformat(str(value))
        except ValueError:
            self.fail(f"{value!r} is not an ISO 8601 date or time (2025-01-15T06:00:00Z)", param, ctx)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        return parsed.timestamp()


@click.command()
@click.option("--meters", type=int, default=48_000, show_default=True, help="Homes in the fleet.")
@click.option("--zones", type=int, default=None, help="Neighbourhoods (default: one per 200 homes).")
@click.option("--duration", type=Duration(), default="60", show_default=True, help="Simulated time: 90, 15m, 6h, 2d.")
@click.option("--speed", type=float, default=1.0, show_default=True,
              help="Simulated seconds per wall-clock second; 0 = as fast as possible (backfill).")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same fleet, same readings.")
@click.option("--interval", "interval_s", type=int, default=1, show_default=True,
              help="Seconds between a meter's readings (more than 1 for a coarse backfill).")
@click.option("--start", "start_t", type=Instant(), default=None,
              help="First reading's time (ISO 8601). Default: now in real time, else DURATION before now.")
@click.option("--malformed-fraction", type=float, default=0.001, show_default=True,
              help="Share of frames sent malformed (truncated, wrong types, impossible values).")
@click.option("--disconnects/--no-disconnects", default=True, show_default=True, help="Wi-Fi modules drop off and come back.")
@click.option("--disconnects-per-meter-day", type=float, default=0.3, show_default=True,
              help="Module outages started per meter and day.")
@click.option("--producer-share", type=(float, float), default=(0.10, 0.25), show_default=True,
              help="Range each zone's share of solar producers is drawn from.")
@click.option("--cloud-cover", type=float, default=None, help="Fix every zone's cloud cover, 0 clear to 1 overcast.")
@click.option("--compression", type=click.Choice(["zstd", "snappy", "none"]), default="zstd",
              show_default=True, help="Kafka compression of the produced batches.")
@click.option("--describe", is_flag=True, help="Print the fleet (one object per home) and exit without producing.")
@click.option("--codes", is_flag=True,
              help="Print each home's meter, zone and pairing code (what its Wi-Fi module shows; the fleet "
              "secret is accounts.pairing_secret) and exit without producing.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary (or the fleet) as the last line.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress lines on stderr.")
def simulate(
    meters: int,
    zones: int | None,
    duration: float,
    speed: float,
    seed: int,
    interval_s: int,
    start_t: float | None,
    malformed_fraction: float,
    disconnects: bool,
    disconnects_per_meter_day: float,
    producer_share: tuple[float, float],
    cloud_cover: float | None,
    compression: str,
    describe: bool,
    codes: bool,
    as_json: bool,
    progress: bool,
) -> None:
    """Generate a simulated fleet of Linky meters into Kafka (meter.readings, meter.telemetry)."""
    from simulator.fleet import build_fleet
    from simulator.run import RunPlan, run, stderr_progress

    settings = Settings()
    try:
        config = FleetConfig(
            meters=meters,
            zones=zones,
            seed=seed,
            producer_share=producer_share,
            malformed_fraction=malformed_fraction,
            disconnects=disconnects,
            disconnects_per_meter_day=disconnects_per_meter_day,
            cloud_cover=cloud_cover,
            shards=settings.kafka.reading_shards,
            interval_s=interval_s,
        )
    except ConfigError as exc:
        raise click.UsageError(f"--{exc.field.replace('_', '-')}: {str(exc).split(': ', 1)[1]}") from None
    if codes:
        from quartier.pairing import pairing_code

        homes = [
            {"meter": home["meter"], "zone": home["zone"],
             "pairing_code": pairing_code(home["meter"], home["zone"], settings.accounts.pairing_secret)}
            for home in build_fleet(config).describe()
        ]
        if as_json:
            click.echo(json.dumps(homes))
        else:
            for home in homes:
                click.echo(f"{home['meter']}  {home['zone']}  {home['pairing_code']}")
        return
    if describe:
        fleet = build_fleet(config).describe()
        if as_json:
            click.echo(json.dumps(fleet))
        else:
            for home in fleet:
                click.echo("  ".join(f"{key}={value}" for key, value in home.items()))
        return
    try:
        plan = RunPlan(duration_s=duration, speed=speed, start_t=start_t, compression=compression)  # type: ignore[arg-type]
    except ValueError as exc:
        raise click.UsageError(f"--{exc}") from None
    summary = asyncio.run(run(config, plan, settings, stderr_progress if progress else None))
    if as_json:
        click.echo(json.dumps(summary.as_dict()))
    else:
        for key, value in summary.as_dict().items():
            click.echo(f"{key:<20} {value}")
