"""InfluxDB line protocol for readings and alerts, built with f-strings.

An escaping f-string is about 8x faster than ``influxdb_client.Point`` (DESIGN.md), and a reading's line is
on the ingest hot path (48,000 a second for the reference fleet). The escaped series key of a (meter, zone)
pair is cached, since a fleet has a bounded set of them.

Timestamps are the meter's clock in epoch milliseconds: write with ``precision=ms``.

With ``settings.influx.reading_points = "changed"`` the worker writes readings through
:class:`ReadingLines`, which leaves out what did not change since the
meter's previous point (the per-register indexes, the tariff register) and the injection fields of a meter
that has never injected, with a full point per meter every 10 minutes: InfluxDB's cost is per field value, and at the fleet's 48,000 series it was the
machine's largest CPU user (docs/pipeline.md). ``reading_line`` is the full point, every field.

Escaping (``quartier.line_protocol``) follows InfluxDB 1.x's parser; a value line protocol cannot carry
raises ValueError naming the field.
"""

from __future__ import annotations

from functools import lru_cache

from quartier.events import AlertEvent, MeterReading
from quartier.influx import ROLLUP_INTERVAL_S
from quartier.line_protocol import escape_tag, float_field, string_field

READING_MEASUREMENT = "reading"
ALERT_MEASUREMENT = "alert"


@lru_cache(maxsize=1 << 17)
def _reading_series(meter: str, zone: str) -> str:
    return f"{READING_MEASUREMENT},meter={escape_tag(meter, 'meter')},zone={escape_tag(zone, 'zone')}"


#: The per-register fields of a reading with N registers (a Linky has at most 10), as %-templates: one
#: ``%`` of the tuple costs less than half of a join over the fields (docs/pipeline.md, "2026-12-06").
_REGISTER_FIELDS = tuple("".join(f",withdrawn_wh_r{i}=%di" for i in range(1, n + 1)) for n in range(11))


def _register_fields(registers: tuple[int, ...]) -> str:
    if len(registers) < len(_REGISTER_FIELDS):
        return _REGISTER_FIELDS[len(registers)] % registers
    # The contract does not bound the count; more than a Linky has still makes a valid point.
    return "".join([f",withdrawn_wh_r{i}={wh}i" for i, wh in enumerate(registers, 1)])


def reading_line(reading: MeterReading) -> str:
    """One reading as a ``reading`` point: tags meter and zone; power, indexes, voltage, current, tariff fields.

    Per-tariff withdrawn indexes (EASF01..10) become ``withdrawn_wh_r1`` .. ``withdrawn_wh_r10``.
    """
    registers = reading.withdrawn_wh_by_register
    return (
        f"{_reading_series(reading.meter, reading.zone)} "
        f"drawn_va={reading.drawn_va}i,injected_va={reading.injected_va}i,"
        f"withdrawn_wh={reading.withdrawn_wh}i,injected_wh={reading.injected_wh}i{_register_fields(registers)},"
        f"tariff_register={reading.tariff_register}i,voltage_v={reading.voltage_v}i,current_a={reading.current_a}i"
        f" {reading.time_ms}"
    )


#: Fields every point of ``ReadingLines`` carries: what the charts and the rollup read, and the
#: instantaneous values, whose means would be skewed if repeated values were left out.
ALWAYS_WRITTEN = ("drawn_va", "withdrawn_wh", "voltage_v", "current_a")


class ReadingLines:
    """Reading points with only what changed, per meter (one instance per worker, in its event loop).

    A meter's first point in each 10-minute window of the rollup (``ROLLUP_INTERVAL_S``, by meter time)
    is the full one (``reading_line``). After it, a point carries ``ALWAYS_WRITTEN``; ``injected_va``
    and ``injected_wh`` when the meter injects or has ever injected (its injection index is above 0: a
    consumer's stay at the 0s of the window's full point); ``tariff_register`` when it differs from the
    meter's previous point; and ``withdrawn_wh_rN`` for each register whose index moved.

    Nothing is lost: indexes and the tariff register are step values, so the latest point carrying a
    field holds its value at any later time (``last()`` over a range, at most 10 minutes back), and
    every 10-minute window has a full point, so the rollup's means and last values are the ones full
    points give (tests/streams/test_reading_points.py).

    "Previous" is this worker's memory: :meth:`forget` it whenever the worker's partitions change
    (another worker may have written a meter's points in between); a restarted worker starts empty.
    """

    def __init__(self, window_ms: int = ROLLUP_INTERVAL_S * 1000) -> None:
        self.window_ms = window_ms
        #: meter → (window, tariff register, per-register indexes) of its last point written.
        self._last: dict[str, tuple[int, int, tuple[int, ...]]] = {}

    def forget(self) -> None:
        self._last.clear()

    def lines(self, readings: list[MeterReading]) -> list[str]:
        last = self._last
        window_ms = self.window_ms
        out = []
        for r in readings:
            meter = r.meter
            registers = r.withdrawn_wh_by_register
            tariff = r.tariff_register
            window = r.time_ms // window_ms
            previous = last.get(meter)
            if previous is None or previous[0] != window:
                out.append(reading_line(r))
                last[meter] = (window, tariff, registers)
                continue
            extra = f",injected_va={r.injected_va}i,injected_wh={r.injected_wh}i" if r.injected_wh or r.injected_va else ""
            _, was_tariff, was_registers = previous
            if tariff != was_tariff or registers != was_registers:
                if tariff != was_tariff:
                    extra += f",tariff_register={tariff}i"
                if len(registers) == len(was_registers):
                    extra += "".join([
                        f",withdrawn_wh_r{i}={wh}i" for i, (wh, was) in enumerate(zip(registers, was_registers), 1) if wh != was
                    ])
                else:
                    extra += _register_fields(registers)
                last[meter] = (window, tariff, registers)
            out.append(
                f"{_reading_series(meter, r.zone)} drawn_va={r.drawn_va}i,withdrawn_wh={r.withdrawn_wh}i,"
                f"voltage_v={r.voltage_v}i,current_a={r.current_a}i{extra} {r.time_ms}"
            )
        return out


def alert_line(event: AlertEvent) -> str:
    """One alert transition as an ``alert`` point.

    Tags: kind, state, and meter and zone when the alert has them (operator alerts have no meter).
    Fields: id (string), value, threshold, episode_start_ms, and each ``detail`` entry as ``detail_<key>``.
    Time: the meter time of the reading that caused the transition.
    """
    tags = f",kind={escape_tag(event.kind, 'kind')}"
    if event.meter is not None:
        tags += f",meter={escape_tag(event.meter, 'meter')}"
    tags += f",state={escape_tag(event.state, 'state')}"
    if event.zone is not None:
        tags += f",zone={escape_tag(event.zone, 'zone')}"
    details = "".join(
        [
            f",{escape_tag('detail_' + key, 'detail')}={float_field(value, f'detail.{key}')}"
            for key, value in event.detail.items()
        ]
    )
    return (
        f"{ALERT_MEASUREMENT}{tags} id={string_field(event.id)},value={float_field(event.value, 'value')},"
        f"threshold={float_field(event.threshold, 'threshold')},episode_start_ms={event.episode_start_ms}i{details}"
        f" {event.at_ms}"
    )
