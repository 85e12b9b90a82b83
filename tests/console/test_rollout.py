"""Firmware roll-outs end to end: 2,000 simulated modules obey devices.commands on the real broker.

The simulator runs 20 times faster than real time and the console's runner follows the fleet's
clock (the newest meter time), so a campaign of four phases with 90-s observation periods runs in
about a minute of wall time.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable

from console import campaigns as cs
from console.campaigns import rebuild
from quartier import events as ev
from quartier import topics
from quartier.kafka import read_all
from quartier.settings import Settings
from simulator.config import FirmwareFault, FleetConfig
from simulator.run import RunPlan

from .support import fleet_and_console, tonight_at

METERS = 2_000
GUARD = ev.HealthGuard(min_sample=15, observe_s=90)
OPTIONS: dict[str, Any] = dict(rate_per_min=2_000, window_start_hour=0, window_end_hour=6,
                               attempt_timeout_s=120, retry_base_s=30, max_attempts=2)


def _config(**extra: Any) -> FleetConfig:
    return FleetConfig(meters=METERS, seed=11, malformed_fraction=0.0, update_failure_share=0.01,
                       update_download_s=(10.0, 30.0), update_reboot_s=(10.0, 20.0), **extra)


def _settings(make_settings: Callable[..., Settings], broker: dict[str, Any]) -> Settings:
    return make_settings(broker, console={"clock": "fleet", "refresh_s": 0.5, "tick_s": 0.5})


async def _device_log(settings: Settings) -> list[ev.Record]:
    return await read_all(settings, settings.topic(topics.DEVICES_EVENTS.name), ev.decoder(ev.DeviceEvent).decode)  # type: ignore[arg-type]


async def test_a_good_firmware_goes_through_every_phase_to_every_module(
    broker: dict[str, Any], make_settings: Callable[..., Settings]
) -> None:
    settings = _settings(make_settings, broker)
    plan = RunPlan(duration_s=6 * 3600, speed=20, start_t=tonight_at(1))
    async with fleet_and_console(settings, _config(), plan) as running:
        console = running.console
        fleet = console.fleet
        await running.until(lambda: (fleet.hardware[: fleet.size] >= 0).sum() == METERS, 60, "every module's first report")
        await console.command(lambda s, now: cs.release_firmware(s, "3.3.0", ("4", "5"), "Wi-Fi reconnect fix", now))
        await console.command(lambda s, now: cs.create_campaign(
            s, campaign="wifi-fix", firmware="3.3.0", group=ev.ModuleGroup(), now_ms=now, guard=GUARD, **OPTIONS))
        campaign = console.state.campaigns["wifi-fix"]
        await running.until(lambda: campaign.status == cs.COMPLETED, 240, "the campaign to complete")
        # The modules' last reports reach the projection within a tick or two.
        updated = [m.meter for m in campaign.modules.values() if m.status == cs.UPDATED]
        fleet.refresh()
        versions = Counter(fleet.module(m)["firmware"] for m in updated)  # type: ignore[index]

    assert [p.name for p in campaign.phases] == ["canary", "10%", "50%", "100%"]
    assert len(campaign.modules) == METERS  # no module of the fleet ran 3.3.0 before
    assert len(updated) >= 0.95 * METERS
    assert versions == {"3.3.0": len(updated)}
    log = await _device_log(settings)
    kinds = Counter(type(e).__name__ for e in log)
    assert kinds["PhaseStarted"] == 4 and kinds["CampaignCompleted"] == 1 and kinds["CampaignPaused"] == 0
    assert kinds["ModuleUpdated"] == len(updated)
    # Phases grow as planned: the canary 1% (20 modules), then up to 10%, 50%, all.
    sizes = [e.modules for e in log if isinstance(e, ev.PhaseStarted)]
    assert sizes == [20, 180, 800, 1000]
    # Canary balanced across hardware versions: in proportion to the fleet's (within one module).
    canary = [e for e in log if isinstance(e, ev.ModulesAssigned) and e.phase == 0][0].meters
    fleet_hw = Counter(fleet.hardware_names[fleet.hardware[fleet.rows[m]]] for m in fleet.meters)
    canary_hw = Counter(fleet.hardware_names[fleet.hardware[fleet.rows[m]]] for m in canary)
    for hw, count in fleet_hw.items():
        assert abs(canary_hw[hw] - 20 * count / METERS) <= 1
    completed = [e for e in log if isinstance(e, ev.CampaignCompleted)][0]
    assert completed.updated == len(updated) and completed.updated + completed.failed == METERS
    # Rebuildable: folding the log again gives the same campaign.
    again = rebuild(log).campaigns["wifi-fix"]
    assert again.summary() == campaign.summary()
    assert {m: (u.status, u.attempts) for m, u in again.modules.items()} == {
        m: (u.status, u.attempts) for m, u in campaign.modules.items()
    }


async def test_a_bad_firmware_pauses_itself_in_the_canary_with_its_figures(
    broker: dict[str, Any], make_settings: Callable[..., Settings]
) -> None:
    settings = _settings(make_settings, broker)
    plan = RunPlan(duration_s=6 * 3600, speed=20, start_t=tonight_at(1))
    faults = (FirmwareFault("3.4.0-rc1", reboot_every_s=60, frame_loss_share=0.3),)
    async with fleet_and_console(settings, _config(firmware_faults=faults), plan) as running:
        console = running.console
        fleet = console.fleet
        await running.until(lambda: (fleet.hardware[: fleet.size] >= 0).sum() == METERS, 60, "every module's first report")
        await console.command(lambda s, now: cs.release_firmware(s, "3.4.0-rc1", ("4", "5"), "new radio driver", now))
        await console.command(lambda s, now: cs.create_campaign(
            s, campaign="radio", firmware="3.4.0-rc1", group=ev.ModuleGroup(), now_ms=now, guard=GUARD, **OPTIONS))
        campaign = console.state.campaigns["radio"]
        await running.until(lambda: campaign.status == cs.PAUSED, 180, "the campaign to pause itself")
        running_bad = fleet.fleet().firmware.get("3.4.0-rc1", 0)
        updated = {m.meter: m.previous_firmware for m in campaign.modules.values() if m.status == cs.UPDATED}
        # The operator rolls it back: every updated module is asked for the firmware it ran before.
        await console.command(lambda s, now: cs.roll_back(s, "radio", "reboot loop in the canary", "acct_operator", now))
        await running.until(lambda: campaign.count(cs.ROLLED_BACK) == len(updated), 120, "every updated module rolled back")
        back = {m: fleet.firmware_of(m)[0] for m in updated}

    log = await _device_log(settings)
    pauses = [e for e in log if isinstance(e, ev.CampaignPaused)]
    assert len(pauses) == 1 and pauses[0].by == "health_guard"
    pause = pauses[0]
    assert "phase canary" in pause.reason and "reboots/h" in pause.reason
    figures = pause.figures
    assert figures["phase"] == 0.0 and figures["updated_modules"] >= 15
    assert figures["updated_reboots_per_hour"] > figures["control_reboots_per_hour"] + GUARD.reboots_per_hour_margin
    assert figures["updated_frame_gap_p95_ms"] > GUARD.frame_gap_p95_ratio * figures["control_frame_gap_p95_ms"]
    # Never beyond the canary: far from 10% of the fleet.
    assert sum(1 for e in log if isinstance(e, ev.PhaseStarted)) == 1
    assert len(campaign.modules) == 20 and running_bad <= 20 < 0.10 * METERS
    assert updated and back == updated  # each module runs its own previous firmware again
    rolled = [e for e in log if isinstance(e, ev.CampaignRolledBack)]
    assert len(rolled) == 1 and rolled[0].operator == "acct_operator"
    again = rebuild(log).campaigns["radio"]
    assert again.summary() == campaign.summary() and again.count(cs.ROLLED_BACK) == len(updated)
