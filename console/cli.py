"""``quartier console run``: the fleet projection and the campaign runner as one process."""

from __future__ import annotations

import asyncio
import signal

import click


@click.group()
def console() -> None:
    """The operator console."""


@console.command("run")
def run_console() -> None:
    """Follow the fleet into the projection and run the firmware campaigns until stopped."""
    from console.service import build
    from quartier.settings import Settings

    async def main() -> None:
        service = build(Settings())
        await service.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await service.run(stop)
        finally:
            await service.stop()

    asyncio.run(main())
