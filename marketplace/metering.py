"""The metered energy settlement reads: each meter's import and export per slot, from ``meter.slots``.

The streams worker may emit a slot again (after a restart, or as late readings arrive); the store
keeps, per (meter, slot), the most complete record, so a re-emitted partial record never replaces a
complete one. The table lives in the market's database next to the read models; it is an input of
settlement, not a projection of ``market.events``.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import BigInteger, Column, Engine, Float, MetaData, String, Table, select
from sqlalchemy.dialects import postgresql, sqlite

from quartier import events as ev

from marketplace.settlement import MeteredSlot

_metadata = MetaData()
metered_slot = Table(
    "market_metered_slot",
    _metadata,
    Column("meter", String, primary_key=True),
    Column("slot_start_ms", BigInteger, primary_key=True),
    Column("imported_wh", BigInteger, nullable=False),
    Column("exported_wh", BigInteger, nullable=False),
    Column("completeness", Float, nullable=False),
)


class MeterStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        _metadata.create_all(engine)

    def record(self, records: Iterable[ev.SlotEnergy]) -> None:
        """Stores slot records; per (meter, slot) the most complete one wins (ties: the later)."""
        best: dict[tuple[str, int], ev.SlotEnergy] = {}
        for r in records:
            key = (r.meter, r.slot_start_ms)
            if key not in best or r.completeness >= best[key].completeness:
                best[key] = r
        if not best:
            return
        rows = [
            {"meter": r.meter, "slot_start_ms": r.slot_start_ms, "imported_wh": r.imported_wh,
             "exported_wh": r.exported_wh, "completeness": r.completeness}
            for r in best.values()
        ]
        insert = (postgresql.insert if self.engine.dialect.name == "postgresql" else sqlite.insert)(metered_slot)
        statement = insert.values(rows)
        statement = statement.on_conflict_do_update(
            index_elements=["meter", "slot_start_ms"],
            set_={name: statement.excluded[name] for name in ("imported_wh", "exported_wh", "completeness")},
            where=statement.excluded.completeness >= metered_slot.c.completeness,
        )
        with self.engine.begin() as connection:
            connection.execute(statement)

    def slot(self, slot_start_ms: int, meters: Iterable[str]) -> dict[str, MeteredSlot]:
        """What the given meters reported for one slot, keyed by meter (absent: nothing arrived)."""
        wanted = list(meters)
        if not wanted:
            return {}
        query = select(metered_slot).where(
            metered_slot.c.slot_start_ms == slot_start_ms, metered_slot.c.meter.in_(wanted))
        with self.engine.connect() as connection:
            return {row.meter: MeteredSlot(row.meter, row.slot_start_ms, row.imported_wh, row.exported_wh,
                                           row.completeness)
                    for row in connection.execute(query)}
