"""Batches of readings as JSON, built for the whole fleet at once with numpy.

Encoding is the simulator's hot path (48,000 readings a second). Building one msgspec Struct per
reading costs more than computing the reading, so each meter has a fixed-width byte row: the JSON
of its reading with every number right-aligned in a field as wide as the largest value it can take,
padded with spaces. All rows live in one uint8 matrix. The meter address, zone and subscribed
power are written once; each step writes, digit position by digit position across the fleet, the
numbers that changed (indexes and registers only for the meters whose whole-Wh value moved), then
each shard's rows are joined and the padding spaces deleted (no string value in a reading contains
a space). That leaves exactly the bytes msgspec writes for the same ``ReadingBatch``: the tests and
the benchmark check they are byte-identical.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulator.engine import MAX_REGISTERS, Frame
from simulator.fleet import Fleet

SPACE = ord(" ")
ZERO = ord("0")

# Digits of each number: the largest value the contract or the physics allows.
_WIDTHS = {
    "time_ms": 13,  # epoch ms until the year 2286
    "seq": 12,
    "drawn_va": 6,  # contract: at most 100,000 VA
    "injected_va": 6,
    "withdrawn_wh": 12,
    "register": 12,
    "injected_wh": 12,
    "tariff_register": 2,
    "voltage_v": 3,
    "current_a": 3,
}
#: Default cap on a message's size; Kafka's default max.request.size is 1 MiB.
MAX_MESSAGE_BYTES = 512 * 1024


@dataclass(frozen=True)
class Column:
    start: int
    width: int


class BatchEncoder:
    """Encodes a frame's good readings as ``ReadingBatch`` JSON messages, one or more per shard."""

    def __init__(self, fleet: Fleet, max_message_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self.fleet = fleet
        self.shards = fleet.config.shards
        zone_ids = [z.id for z in fleet.zones]
        zone_width = max(len(z) for z in zone_ids)
        pieces: list[str | tuple[str, int]] = [
            '{"type":"reading","v":1,"meter":"',
            ("meter", 12),
            '","zone":',
            ("zone", zone_width + 2),
            ',"time_ms":',
            ("time_ms", _WIDTHS["time_ms"]),
            ',"seq":',
            ("seq", _WIDTHS["seq"]),
            ',"drawn_va":',
            ("drawn_va", _WIDTHS["drawn_va"]),
            ',"injected_va":',
            ("injected_va", _WIDTHS["injected_va"]),
            ',"withdrawn_wh":',
            ("withdrawn_wh", _WIDTHS["withdrawn_wh"]),
            ',"withdrawn_wh_by_register":[',
            # Each register: its digits and the separator after it (",", "]" or a space when unused).
            ("registers", MAX_REGISTERS * (_WIDTHS["register"] + 1)),
            ',"injected_wh":',
            ("injected_wh", _WIDTHS["injected_wh"]),
            ',"tariff_register":',
            ("tariff_register", _WIDTHS["tariff_register"]),
            ',"subscribed_kva":',
            ("subscribed_kva", 2),
            ',"cutoff_kva":',
            ("cutoff_kva", 2),
            ',"voltage_v":',
            ("voltage_v", _WIDTHS["voltage_v"]),
            ',"current_a":',
            ("current_a", _WIDTHS["current_a"]),
            "},",
        ]
        self.columns: dict[str, Column] = {}
        template = bytearray()
        for piece in pieces:
            if isinstance(piece, str):
                template += piece.encode()
            else:
                name, width = piece
                self.columns[name] = Column(len(template), width)
                template += b" " * width
        self.row_width = len(template)
        n = fleet.size
        base = np.tile(np.frombuffer(bytes(template), dtype=np.uint8), (n, 1))

        # The parts that never change: meter address, zone, subscribed and cut-off power.
        self._put_text(base, "meter", [m.encode() for m in fleet.meter_ids])
        self._put_text(base, "zone", [f'"{zone_ids[z]}"'.encode().ljust(zone_width + 2) for z in fleet.zone_index])
        _put_digits(base, self.columns["subscribed_kva"], fleet.subscribed_kva)
        _put_digits(base, self.columns["cutoff_kva"], fleet.cutoff_kva)
        # Register separators: "," between used registers, "]" after the last one, spaces after.
        registers = self._registers_view(base)
        count = fleet.register_count
        slot = np.arange(MAX_REGISTERS)
        registers[:, :, -1] = np.where(
            slot[None, :] < count[:, None] - 1, ord(","), np.where(slot[None, :] == count[:, None] - 1, ord("]"), SPACE)
        )
        self._register_used = slot[None, :] < count[:, None]
        #: Every meter's row as of the last frame encoded; numbers are rewritten when they change.
        self._matrix = base
        self._written_registers = np.full((n, MAX_REGISTERS), -1, dtype=np.int64)
        self._written: dict[str, np.ndarray] = {}
        #: Digits in use per growing column: every value of a field that only grows (indexes,
        #: sequence numbers, clocks) fits in this many, so the columns left of them stay spaces.
        self._digits_in_use: dict[str, int] = {}
        self.max_readings_per_message = max(1, (max_message_bytes - 64) // self.row_width)

    # --- encoding ------------------------------------------------------------------------------

    def update(self, frame: Frame) -> None:
        """Writes ``frame``'s numbers into every meter's row."""
        # Numbers that change at (almost) every step: rewrite them for every meter.
        self._write("time_ms", frame.time_ms, grows=True)
        self._write("seq", frame.seq, grows=True)
        self._write("drawn_va", frame.drawn_va)
        self._write("injected_va", frame.injected_va)
        self._write("voltage_v", frame.voltage_v)
        self._write("current_a", frame.current_a)
        # Numbers that change now and then: rewrite only the meters where they changed.
        self._write_changed("withdrawn_wh", frame.withdrawn_wh)
        self._write_changed("injected_wh", frame.injected_wh)
        self._write_changed("tariff_register", frame.tariff_register, grows=False)
        changed = (frame.registers_wh != self._written_registers) & self._register_used
        rows, slots = np.nonzero(changed)
        if len(rows):
            values = frame.registers_wh[rows, slots]
            width = self._grow("register", values)
            column = self.columns["registers"]
            register_width = _WIDTHS["register"]
            first = column.start + slots * (register_width + 1) + (register_width - width)
            self._matrix[rows[:, None], first[:, None] + np.arange(width)] = _digit_columns(values, width).T
            self._written_registers[rows, slots] = values

    def encode(self, frame: Frame) -> list[tuple[int, bytes]]:
        """``(shard, message)`` for every shard with readings in ``frame``; large shards in several messages.

        Frames must be encoded in order: each one's rows start from the previous one's.
        """
        self.update(frame)
        sent = frame.sent
        if not len(sent):
            return []
        matrix = self._matrix[sent]
        shard = self.fleet.shard[sent]
        bounds = np.searchsorted(shard, np.arange(self.shards + 1))
        step = self.max_readings_per_message
        messages: list[tuple[int, bytes]] = []
        for s in range(self.shards):
            for a in range(int(bounds[s]), int(bounds[s + 1]), step):
                b = min(a + step, int(bounds[s + 1]))
                # bytes.translate deletes the padding at about 1 ns a byte, 2-3x numpy's boolean mask.
                body = matrix[a:b].tobytes().translate(None, b" ")
                # The last reading's "," closes the list instead.
                messages.append((s, b'{"type":"batch","v":1,"shard":%d,"readings":[%b]}' % (s, body[:-1])))
        return messages

    # --- helpers -------------------------------------------------------------------------------

    def _grow(self, name: str, values: np.ndarray) -> int:
        width = max(self._digits_in_use.get(name, 1), _digit_count(int(values.max())))
        self._digits_in_use[name] = width
        return width

    def _write(self, name: str, values: np.ndarray, grows: bool = False) -> None:
        column = self.columns[name]
        width = self._grow(name, values) if grows else column.width
        if width > column.width:
            raise ValueError(f"{name}: {int(values.max())} does not fit the encoder's {column.width} digits")
        end = column.start + column.width
        self._matrix[:, end - width : end] = _digit_columns(values, width).T

    def _write_changed(self, name: str, values: np.ndarray, grows: bool = True) -> None:
        written = self._written.get(name)
        if written is None:
            self._write(name, values, grows)
        else:
            rows = np.flatnonzero(values != written)
            if len(rows):
                column = self.columns[name]
                width = self._grow(name, values[rows]) if grows else column.width
                end = column.start + column.width
                self._matrix[rows, end - width : end] = _digit_columns(values[rows], width).T
        self._written[name] = values.copy()

    def _registers_view(self, matrix: np.ndarray) -> np.ndarray:
        column = self.columns["registers"]
        block = matrix[:, column.start : column.start + column.width]
        return block.reshape(len(matrix), MAX_REGISTERS, _WIDTHS["register"] + 1)

    def _put_text(self, matrix: np.ndarray, name: str, values: list[bytes]) -> None:
        column = self.columns[name]
        text = np.frombuffer(b"".join(values), dtype=np.uint8).reshape(len(values), column.width)
        matrix[:, column.start : column.start + column.width] = text


def _digit_count(value: int) -> int:
    if value < 0:
        raise ValueError(f"negative value {value} in a reading")
    return len(str(value))


def _digit_columns(values: np.ndarray, width: int) -> np.ndarray:
    """ASCII digits of non-negative integers as ``(width, n)``: one row per digit position, most
    significant first, right-aligned, leading zeros as spaces.

    Digit by digit over the whole fleet (long 1-D loops) rather than an (n, width) broadcast,
    whose short inner loops cost several times more.
    """
    values = np.asarray(values, dtype=np.int64)
    if values.size and (values.min() < 0 or values.max() >= 10**width):
        raise ValueError(f"value out of the encoder's range [0, 10**{width}): {values.min()}..{values.max()}")
    out = np.empty((width, len(values)), dtype=np.uint8)
    quotient = values
    for position in range(width - 1, -1, -1):
        # Before taking its digit off, the quotient is 0 exactly when this position is a leading zero.
        leading = quotient == 0
        quotient, digit = np.divmod(quotient, 10)
        row = out[position]
        row[:] = digit
        row += ZERO
        if position < width - 1:
            row -= leading.view(np.uint8) << 4  # "0" (0x30) becomes " " (0x20)
    return out


def _put_digits(matrix: np.ndarray, column: Column, values: np.ndarray) -> None:
    matrix[:, column.start : column.start + column.width] = _digit_columns(values, column.width).T
