"""The console's domain without a broker: commands refuse with the field, the fold rebuilds, the
runner retries with backoff inside its window, the projection turns telemetry and readings into state."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from console import campaigns as cs
from console.projection import FleetProjection
from console.runner import CampaignRunner, in_window
from quartier import events as ev

PARIS = ZoneInfo("Europe/Paris")
NIGHT_MS = int(datetime(2026, 12, 2, 2, 0, tzinfo=PARIS).timestamp() * 1000)
METERS = [f"0216{i:08d}" for i in range(30)]


def _reading(meter: str, t_ms: int, wh: int = 1000, va: int = 500) -> bytes:
    return ev.encode(ev.MeterReading(meter=meter, zone="z1", time_ms=t_ms, seq=t_ms // 1000, drawn_va=va,
                                     withdrawn_wh=wh, subscribed_kva=6, cutoff_kva=6))


def _telemetry(meter: str, t_ms: int, uptime_s: int, firmware: str = "3.2.1", rssi: int = -60) -> ev.DeviceTelemetry:
    return ev.DeviceTelemetry(meter=meter, time_ms=t_ms, rssi_dbm=rssi, firmware=firmware, uptime_s=uptime_s, hardware="5")


def _fleet(t0: int = NIGHT_MS) -> FleetProjection:
    fleet = FleetProjection()
    for m in METERS:
        fleet.on_telemetry(_telemetry(m, t0, 3600))
        for s in range(5):
            fleet.on_readings_message(_reading(m, t0 + s * 1000))
    fleet.refresh()
    return fleet


def _apply(state: cs.DeviceState, new: list[ev.Record]) -> list[ev.Record]:
    for e in new:
        state.apply(e)
    return new


def test_commands_refuse_with_the_field_and_the_reason() -> None:
    state = cs.DeviceState()
    with pytest.raises(cs.CommandError) as refused:
        cs.create_campaign(state, campaign="c", firmware="9.9.9", group=ev.ModuleGroup(), now_ms=1)
    assert refused.value.field == "firmware" and "catalogue" in refused.value.reason
    _apply(state, cs.release_firmware(state, "3.3.0", ("5",), "", 1))
    with pytest.raises(cs.CommandError) as twice:
        cs.release_firmware(state, "3.3.0", ("5",), "", 2)
    assert (twice.value.field, twice.value.status) == ("version", 409)
    with pytest.raises(cs.CommandError) as phases:
        cs.create_campaign(state, campaign="c", firmware="3.3.0", group=ev.ModuleGroup(), now_ms=1,
                           phases=(ev.PhasePlan(name="half", cumulative_share=0.5),))
    assert phases.value.field == "phases"
    with pytest.raises(cs.CommandError) as hardware:
        cs.create_campaign(state, campaign="c", firmware="3.3.0", group=ev.ModuleGroup(hardware=("4",)), now_ms=1)
    assert hardware.value.field == "group.hardware"
    _apply(state, cs.create_campaign(state, campaign="c", firmware="3.3.0", group=ev.ModuleGroup(), now_ms=1))
    with pytest.raises(cs.CommandError) as resume:
        cs.resume(state, "c", "op", 2)
    assert resume.value.status == 409
    _apply(state, cs.pause(state, "c", "look", "op", 3))
    with pytest.raises(cs.CommandError):
        cs.pause(state, "c", "again", "op", 4)
    _apply(state, cs.abort(state, "c", "enough", "op", 5))
    with pytest.raises(cs.CommandError) as final:
        cs.resume(state, "c", "op", 6)
    assert final.value.status == 409 and "aborted" in final.value.reason
    with pytest.raises(cs.CommandError) as missing:
        cs.pause(state, "nope", "", "op", 7)
    assert missing.value.status == 404


def test_the_fold_refuses_an_event_the_log_never_led_to() -> None:
    with pytest.raises(cs.ProjectionError, match="unknown campaign 'ghost'.*partition 2 offset 9"):
        cs.DeviceState().apply(ev.CampaignResumed(campaign="ghost", at_ms=1), partition=2, offset=9)


def test_requests_go_at_the_rate_inside_the_window_and_retry_with_backoff() -> None:
    fleet = _fleet()
    runner = CampaignRunner(fleet)
    state = cs.DeviceState()
    log: list[ev.Record] = []
    log += _apply(state, cs.release_firmware(state, "3.3.0", ("5",), "", NIGHT_MS))
    log += _apply(state, cs.create_campaign(
        state, campaign="c", firmware="3.3.0", group=ev.ModuleGroup(), now_ms=NIGHT_MS, rate_per_min=4,
        window_start_hour=1, window_end_hour=5, attempt_timeout_s=60, retry_base_s=30, max_attempts=2,
        phases=(ev.PhasePlan(name="canary", cumulative_share=0.2), ev.PhasePlan(name="all", cumulative_share=1.0))))
    new, commands = runner.tick(state, NIGHT_MS)
    log += _apply(state, new)
    assert [type(e).__name__ for e in new] == ["PhaseStarted", "ModulesAssigned"] and not commands
    assert len(state.campaigns["c"].modules) == 6  # 20% of 30
    new, commands = runner.tick(state, NIGHT_MS + 1000)
    log += _apply(state, new)
    assert len(commands) == 4  # the rate: 4 a minute
    assert {c.firmware for c in commands} == {"3.3.0"} and all(c.attempt == 1 for c in commands)
    new, commands = runner.tick(state, NIGHT_MS + 30_000)
    assert not commands  # still 4 in the last minute
    # Nobody answers: after the timeout each attempt fails, retried 30 s later; the second is the last.
    new, commands = runner.tick(state, NIGHT_MS + 61_000)
    log += _apply(state, new)
    failed = [e for e in new if isinstance(e, ev.UpdateFailed)]
    assert len(failed) == 4 and {e.retry_at_ms for e in failed} == {NIGHT_MS + 61_000 + 30_000}
    assert len(commands) == 2  # the two modules not asked yet
    new, commands = runner.tick(state, NIGHT_MS + 125_000)
    log += _apply(state, new)
    assert sorted(c.attempt for c in commands) == [2, 2, 2, 2]
    new, _ = runner.tick(state, NIGHT_MS + 200_000)
    log += _apply(state, new)
    last = [e for e in new if isinstance(e, ev.UpdateFailed) and e.attempt == 2]
    assert len(last) == 4 and {e.retry_at_ms for e in last} == {None}
    assert state.campaigns["c"].count(cs.FAILED) == 4
    # Outside the window (09:00) nothing is asked.
    assert not in_window(state.campaigns["c"], NIGHT_MS + 7 * 3_600_000)
    assert cs.rebuild(log).campaigns["c"].summary() == state.campaigns["c"].summary()


def test_a_window_across_midnight() -> None:
    state = cs.DeviceState()
    _apply(state, cs.release_firmware(state, "3.3.0", ("5",), "", 1))
    _apply(state, cs.create_campaign(state, campaign="c", firmware="3.3.0", group=ev.ModuleGroup(), now_ms=1,
                                     window_start_hour=22, window_end_hour=5))
    c = state.campaigns["c"]
    at = lambda h: int(datetime(2026, 12, 2, h, 30, tzinfo=PARIS).timestamp() * 1000)  # noqa: E731
    assert [h for h in range(24) if in_window(c, at(h))] == [0, 1, 2, 3, 4, 22, 23]


def test_telemetry_and_readings_become_module_state() -> None:
    fleet = _fleet()
    meter = METERS[0]
    t = NIGHT_MS + 5000
    # A report whose boot time moved forward is a reboot; firmware changes are dated.
    fleet.on_telemetry(_telemetry(meter, t + 60_000, 30, firmware="3.3.0", rssi=-80))
    m = fleet.module(meter)
    assert m is not None and (m["reboots"], m["firmware"], m["firmware_since_ms"]) == (1, "3.3.0", t + 60_000)
    assert m["rssi_band"] == "poor" and m["rssi_trend_db"] == -3.7  # short average -64, long -60.3
    # The others go on reading; this one is silent past its deadman limit (30 s at 1 s cadence).
    for s in range(5, 45):
        for other in METERS[1:]:
            fleet.on_readings_message(_reading(other, NIGHT_MS + s * 1000))
    fleet.refresh()
    m = fleet.module(meter)
    assert m is not None and not m["connected"] and m["since_ms"] == NIGHT_MS + 4000 + 30_000
    assert fleet.fleet().disconnected == 1
    fleet.on_readings_message(_reading(meter, NIGHT_MS + 50_000))
    m = fleet.module(meter)
    assert m is not None and m["connected"] and m["disconnections"] == [
        {"from_ms": NIGHT_MS + 34_000, "to_ms": NIGHT_MS + 50_000, "source": "deadman"}]
    assert m["frame_gap_p95_ms"] is not None and m["frame_gap_p95_ms"] >= 1000


def test_ingest_down_holds_the_deadman_and_alerts_mark_disconnects() -> None:
    fleet = _fleet()
    down = ev.AlertEvent(id="x", meter=None, kind="ingest_down", state="raised", value=20, threshold=15,
                         at_ms=NIGHT_MS + 20_000, episode_start_ms=NIGHT_MS + 19_000)
    fleet.on_alert(down)
    fleet.refresh(NIGHT_MS + 600_000)
    figures = fleet.fleet()
    assert figures.disconnected == 0 and figures.open_alerts[0] == {"kind": "ingest_down", "since_ms": NIGHT_MS + 19_000}
    raised = ev.AlertEvent(id="y", meter=METERS[3], kind="disconnected", state="raised", value=40, threshold=30,
                           at_ms=NIGHT_MS + 40_000, episode_start_ms=NIGHT_MS + 34_000)
    fleet.on_alert(raised)
    m = fleet.module(METERS[3])
    assert m is not None and not m["connected"] and m["disconnections"][0]["source"] == "stream worker"


def test_a_local_day_closes_with_the_first_index_of_the_next() -> None:
    fleet = FleetProjection()
    midnight = int(datetime(2026, 12, 2, 0, 0, tzinfo=PARIS).timestamp() * 1000)
    fleet.on_readings_message(_reading(METERS[0], midnight - 86_400_000 + 5_000, wh=10_000))
    fleet.on_readings_message(_reading(METERS[0], midnight - 3_600_000, wh=16_000))
    fleet.on_readings_message(_reading(METERS[0], midnight + 2_000, wh=16_500))
    assert fleet.fleet().yesterday_wh == 6_500 and fleet.fleet().yesterday_modules == 1
