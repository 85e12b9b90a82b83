"""What a simulated run is made of: the fleet's parameters, checked once with errors that name the field."""

from __future__ import annotations

from dataclasses import dataclass

#: Homes per neighbourhood the automatic zone count aims at (neighbourhoods hold 50-500 homes).
HOMES_PER_ZONE = 200


class ConfigError(ValueError):
    """A simulation parameter out of range; the message names the parameter."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class FirmwareFault:
    """A bad firmware, for roll-out tests: modules running it reboot every ``reboot_every_s`` (give or
    take 20%; ``None``: never) and lose ``frame_loss_share`` of their frames."""

    version: str
    reboot_every_s: float | None = None
    frame_loss_share: float = 0.0

    def __post_init__(self) -> None:
        if self.reboot_every_s is not None and self.reboot_every_s < 30:
            raise ConfigError("firmware_faults", f"{self.version}: reboot_every_s must be at least 30, got {self.reboot_every_s!r}")
        if not 0.0 <= self.frame_loss_share < 1.0:
            raise ConfigError("firmware_faults", f"{self.version}: frame_loss_share must be in [0, 1), got {self.frame_loss_share!r}")


@dataclass(frozen=True)
class FleetConfig:
    """The fleet and its behaviour. The same config and seed always give the same fleet and readings."""

    meters: int
    #: Neighbourhoods; ``None`` picks about one per 200 homes.
    zones: int | None = None
    seed: int = 0
    #: Each zone's share of rooftop-solar producers is drawn uniformly from this range.
    producer_share: tuple[float, float] = (0.10, 0.25)
    #: Share of frames sent malformed (truncated, wrong types, impossible values).
    malformed_fraction: float = 0.001
    disconnects: bool = True
    #: Wi-Fi module outages (drop-outs, reboots, long losses) started per meter and day.
    disconnects_per_meter_day: float = 0.3
    #: Fixed cloud cover for every zone, 0 (clear) to 1 (overcast); ``None`` lets the weather vary.
    cloud_cover: float | None = None
    #: Shards of the ingest contract (settings.kafka.reading_shards).
    shards: int = 32
    #: Seconds between two readings of a meter (1 in real time; more for a coarse backfill).
    interval_s: int = 1
    #: Firmware updates (devices.commands): share of downloads that fail silently (the console
    #: times the attempt out and retries), download time range (s), reboot time range (s).
    update_failure_share: float = 0.02
    update_download_s: tuple[float, float] = (20.0, 60.0)
    update_reboot_s: tuple[float, float] = (15.0, 30.0)
    #: Firmware versions that misbehave once installed.
    firmware_faults: tuple[FirmwareFault, ...] = ()

    def __post_init__(self) -> None:
        def fail(name: str, message: str) -> None:
            raise ConfigError(name, message)

        if not isinstance(self.meters, int) or self.meters < 1:
            fail("meters", f"must be a whole number of at least 1, got {self.meters!r}")
        if self.zones is not None and (not isinstance(self.zones, int) or not 1 <= self.zones <= self.meters):
            fail("zones", f"must be between 1 and the number of meters ({self.meters}), got {self.zones!r}")
        low, high = self.producer_share
        if not 0.0 <= low <= high <= 1.0:
            fail("producer_share", f"must be 0 <= min <= max <= 1, got {self.producer_share!r}")
        if not 0.0 <= self.malformed_fraction <= 0.5:
            fail("malformed_fraction", f"must be between 0 and 0.5, got {self.malformed_fraction!r}")
        if self.disconnects_per_meter_day < 0:
            fail("disconnects_per_meter_day", f"must be 0 or more, got {self.disconnects_per_meter_day!r}")
        if self.cloud_cover is not None and not 0.0 <= self.cloud_cover <= 1.0:
            fail("cloud_cover", f"must be between 0 (clear) and 1 (overcast), got {self.cloud_cover!r}")
        if not isinstance(self.shards, int) or self.shards < 1:
            fail("shards", f"must be a whole number of at least 1, got {self.shards!r}")
        if not isinstance(self.interval_s, int) or self.interval_s < 1:
            fail("interval_s", f"must be a whole number of seconds, at least 1, got {self.interval_s!r}")
        if self.seed < 0:
            fail("seed", f"must be 0 or more, got {self.seed!r}")
        if not 0.0 <= self.update_failure_share <= 1.0:
            fail("update_failure_share", f"must be between 0 and 1, got {self.update_failure_share!r}")
        for name in ("update_download_s", "update_reboot_s"):
            low, high = getattr(self, name)
            if not 0.0 < low <= high:
                fail(name, f"must be 0 < min <= max, got {getattr(self, name)!r}")

    @property
    def zone_count(self) -> int:
        if self.zones is not None:
            return self.zones
        return max(1, min(self.meters, round(self.meters / HOMES_PER_ZONE)))
