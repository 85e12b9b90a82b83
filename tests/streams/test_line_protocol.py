"""Line protocol for readings and alerts: what InfluxDB stores from it, and what it refuses to build."""

from __future__ import annotations

import time
from typing import Any, Callable

import httpx
import msgspec
import pytest
from influxdb_client import Point, WritePrecision

from quartier.events import AlertEvent, MeterReading, alert_id
from quartier.settings import Settings
from quartier.stack.influx import ensure_database, query
from streams.line_protocol import alert_line, reading_line

NOW_MS = int(time.time() * 1000) // 1000 * 1000


def reading(**changes: Any) -> MeterReading:
    values: dict[str, Any] = dict(
        meter="012345678901", zone="rennes-01", time_ms=NOW_MS, seq=1, drawn_va=1_200, injected_va=0,
        withdrawn_wh=10_000, withdrawn_wh_by_register=(6_000, 4_000), injected_wh=0, tariff_register=2,
        subscribed_kva=6, cutoff_kva=6, voltage_v=231, current_a=5,
    )
    values.update(changes)
    return MeterReading(**values)


def unchecked(built: MeterReading, **ids: str) -> MeterReading:
    """The reading with IDs the contract refuses (MeterReading checks them when built or decoded): what
    the line protocol must still write correctly or refuse, should one ever get past the contract."""
    for field, value in ids.items():
        msgspec.structs.force_setattr(built, field, value)
    return built


def alert(**changes: Any) -> AlertEvent:
    values: dict[str, Any] = dict(
        id=alert_id("012345678901", "power_above", NOW_MS), meter="012345678901", zone="rennes-01",
        kind="power_above", state="raised", value=4_200.5, threshold=3_000, at_ms=NOW_MS,
        episode_start_ms=NOW_MS - 10_000, detail={"for_s": 10.0},
    )
    values.update(changes)
    return AlertEvent(**values)


def write(settings: Settings, lines: list[str]) -> None:
    answer = httpx.post(
        f"{settings.influx.url}/write",
        params={"db": settings.influx.database, "rp": "raw", "precision": "ms"},
        content="\n".join(lines),
    )
    assert answer.status_code == 204, answer.text


# No register, a common one (HP/HC), a Linky's most (10), and more than the templates hold.
@pytest.mark.parametrize("registers", [(), (6_000, 4_000), tuple(range(1_000, 11_000, 1_000)), tuple(range(1, 12))])
def test_a_reading_line_is_what_influxdb_client_would_build(registers: tuple[int, ...]) -> None:
    r = reading(withdrawn_wh_by_register=registers)
    point = (
        Point("reading").tag("meter", r.meter).tag("zone", r.zone)
        .field("drawn_va", r.drawn_va).field("injected_va", r.injected_va)
        .field("withdrawn_wh", r.withdrawn_wh).field("injected_wh", r.injected_wh)
    )
    for i, wh in enumerate(registers, 1):
        point = point.field(f"withdrawn_wh_r{i}", wh)
    point = (
        point.field("tariff_register", r.tariff_register).field("voltage_v", r.voltage_v)
        .field("current_a", r.current_a).time(r.time_ms, WritePrecision.MS)
    )
    ours, theirs = reading_line(r).split(" "), point.to_line_protocol().split(" ")
    # Same series key and timestamp; the same fields (order does not matter to InfluxDB).
    assert (ours[0], ours[2]) == (theirs[0], theirs[2])
    assert sorted(ours[1].split(",")) == sorted(theirs[1].split(","))


def test_influxdb_stores_every_field_of_a_reading_and_tags_with_separators_exactly(
    influx: dict[str, Any], make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(influx)
    ensure_database(settings)
    # Built directly (decoding would refuse this zone): the line must still be correct.
    odd = unchecked(reading(meter="000000000007", drawn_va=900), zone="Rennes Nord,quartier=2")
    write(settings, [reading_line(reading()), reading_line(odd)])
    rows = query(settings, "SELECT * FROM reading GROUP BY * ORDER BY time")
    assert {row["zone"] for row in rows} == {"rennes-01", "Rennes Nord,quartier=2"}
    plain = next(row for row in rows if row["zone"] == "rennes-01")
    assert plain == {
        "_measurement": "reading", "time": NOW_MS, "meter": "012345678901", "zone": "rennes-01", "drawn_va": 1_200, "injected_va": 0,
        "withdrawn_wh": 10_000, "injected_wh": 0, "withdrawn_wh_r1": 6_000, "withdrawn_wh_r2": 4_000,
        "tariff_register": 2, "voltage_v": 231, "current_a": 5,
    }


def test_alerts_are_stored_with_their_id_values_and_details_and_operator_alerts_have_no_meter(
    influx: dict[str, Any], make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(influx)
    ensure_database(settings)
    operator = alert(meter=None, zone=None, kind="ingest_down", id=alert_id(None, "ingest_down", NOW_MS), detail={})
    write(settings, [alert_line(alert()), alert_line(operator)])
    rows = {row["kind"]: row for row in query(settings, "SELECT * FROM alert GROUP BY *")}
    assert rows["power_above"] == {
        "_measurement": "alert", "time": NOW_MS, "id": alert().id, "kind": "power_above", "state": "raised", "meter": "012345678901",
        "zone": "rennes-01", "value": 4_200.5, "threshold": 3_000, "episode_start_ms": NOW_MS - 10_000,
        "detail_for_s": 10,
    }
    assert rows["ingest_down"]["meter"] == "" and rows["ingest_down"]["id"] == operator.id


@pytest.mark.parametrize(
    "build, field",
    [
        (lambda: reading_line(unchecked(reading(), zone="a\nb")), "zone"),
        (lambda: reading_line(unchecked(reading(), meter="")), "meter"),
        (lambda: reading_line(unchecked(reading(), zone="ends\\")), "zone"),
        (lambda: alert_line(alert(value=float("nan"))), "value"),
        (lambda: alert_line(alert(threshold=float("inf"))), "threshold"),
        (lambda: alert_line(alert(detail={"ratio": float("inf")})), "detail.ratio"),
    ],
)
def test_a_value_line_protocol_cannot_carry_is_refused_naming_the_field(build: Callable[[], str], field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}:"):
        build()
