"""The market's state: a fold of ``market.events``, and nothing else.

``MarketState.apply`` is the one place that says what an event does. The command layer validates
against this state; the SQL read models are snapshots of its entities; a rebuild folds the whole log
again. Nothing here reads a clock or draws a random number, so the same log always gives the same
state. Time priority (``seq``) is the order in which a zone's events reached the log.

``apply`` trusts the log's validity (the command layer checked each command before appending it)
but not blindly: an event that refers to something the log never created raises
:class:`ProjectionError` with its partition and offset, instead of being skipped.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from quartier import events as ev

SLOT_MS = 15 * 60 * 1000

EntityKind = Literal["zone", "participant", "slot", "offer", "order", "trade"]
EntityRef = tuple[EntityKind, Any]


def doc(text: str) -> Any:
    """A field's description: the read model's column and the API's view of the entity say it too."""
    return field(metadata={"doc": text})


class ProjectionError(RuntimeError):
    """An event that does not fit the state the log built so far."""


@dataclass(slots=True)
class Zone:
    zone: str
    mechanism: str
    gate_closure_s: int
    min_lot_wh: int
    configured_ms: int


@dataclass(slots=True)
class Participant:
    participant: str
    zone: str
    meter: str = doc("the meter its trades settle on; blank once it left (the meter may be paired elsewhere)")
    roles: str = doc("comma-separated, sorted: consumer, producer or consumer,producer; empty once it left")
    capacity_w: int
    registered_ms: int
    status: str = doc("active, or left (it may no longer trade; its trades settle as any)")
    updated_ms: int

    def has_role(self, role: str) -> bool:
        return self.status == "active" and role in self.roles.split(",")


@dataclass(slots=True)
class Slot:
    """A zone's 15-minute slot; it keeps the zone's rules in force when it opened."""

    zone: str
    slot_start_ms: int
    mechanism: str
    gate_ms: int = doc("gate closure: no command on this slot at or after this time")
    min_lot_wh: int
    status: str = doc("open, closed, allocated, submitted or confirmed")
    clearing_price_cents_per_kwh: int | None
    traded_wh: int
    closed_ms: int | None
    allocation_complete: bool | None
    missing_meters: str = doc("meters without (complete) data at settlement")
    tx_hash: str | None
    block: int | None
    updated_ms: int


@dataclass(slots=True)
class Offer:
    offer_id: str
    producer: str
    zone: str
    slot_start_ms: int
    energy_wh: int
    sold_wh: int
    price_cents_per_kwh: int
    status: str = doc("open, withdrawn or closed")
    seq: int
    listed_ms: int
    updated_ms: int

    @property
    def remaining_wh(self) -> int:
        return self.energy_wh - self.sold_wh if self.status == "open" else 0


@dataclass(slots=True)
class Order:
    order_id: str
    consumer: str
    zone: str
    kind: str = doc("purchase (of one offer, filled at once) or bid (auction)")
    offer_id: str | None
    slot_start_ms: int
    energy_wh: int
    filled_wh: int
    price_cents_per_kwh: int = doc("the offer's price for a purchase, the limit for a bid")
    status: str = doc("open, filled, partially_filled, unfilled or cancelled")
    seq: int
    placed_ms: int
    updated_ms: int


@dataclass(slots=True)
class Trade:
    trade_id: str
    zone: str
    slot_start_ms: int
    offer_id: str
    order_id: str
    producer: str
    consumer: str
    energy_wh: int
    price_cents_per_kwh: int
    amount_millicents: int = doc("contracted: energy_wh x price")
    delivered_wh: int | None = doc("decided by the meters after the slot; null until then")
    delivered_amount_millicents: int | None
    status: str = doc("contracted, allocated, submitted or confirmed (paid on chain)")
    tx_hash: str | None
    block: int | None
    traded_ms: int
    updated_ms: int


ENTITY_TYPES: dict[EntityKind, type] = {
    "zone": Zone,
    "participant": Participant,
    "slot": Slot,
    "offer": Offer,
    "order": Order,
    "trade": Trade,
}
FIELD_NAMES: dict[EntityKind, tuple[str, ...]] = {
    kind: tuple(f.name for f in fields(cls)) for kind, cls in ENTITY_TYPES.items()
}


def row(kind: EntityKind, entity: object) -> dict[str, Any]:
    """A snapshot of an entity as a flat dict (what a read-model row holds)."""
    return {name: getattr(entity, name) for name in FIELD_NAMES[kind]}


class MarketState:
    def __init__(self) -> None:
        self.zones: dict[str, Zone] = {}
        self.participants: dict[str, Participant] = {}
        #: Each zone's own record of a participant (zone, participant) -> Participant; ``participants``
        #: holds the one in force. A household that moved leaves one zone (an event on that zone's
        #: partition) and joins another (on the other's); a replay may fold the two partitions in
        #: either order, so which record is in force is decided by the records, not by that order.
        self.memberships: dict[str, dict[str, Participant]] = defaultdict(dict)  # participant -> zone -> record
        self.meters: dict[str, str] = {}  # meter -> active participant
        #: offer or order -> the meter of its participant when it was placed; a trade settles on those
        #: (``trade_meters``), so a participant that left or moved since settles its trades on the right meter.
        self.placed_meters: dict[str, str] = {}
        self.slots: dict[tuple[str, int], Slot] = {}
        self.offers: dict[str, Offer] = {}
        self.orders: dict[str, Order] = {}
        self.trades: dict[str, Trade] = {}
        self.slot_offers: dict[tuple[str, int], list[str]] = defaultdict(list)
        self.slot_orders: dict[tuple[str, int], list[str]] = defaultdict(list)
        self.slot_trades: dict[tuple[str, int], list[str]] = defaultdict(list)
        self.producer_slot_offers: dict[tuple[str, int], list[str]] = defaultdict(list)
        self.open_slots: dict[str, set[int]] = defaultdict(set)
        #: Slots closed and not yet confirmed on chain: all that settlement has to look at.
        self.unsettled: set[tuple[str, int]] = set()
        self.seq: dict[str, int] = defaultdict(int)
        #: Next offset to apply, per partition of market.events.
        self.positions: dict[int, int] = {}
        self._where = ""

    # --- reading -------------------------------------------------------------------------------

    def entity(self, ref: EntityRef) -> object:
        kind, key = ref
        table: dict[Any, Any] = getattr(self, {"zone": "zones", "participant": "participants", "slot": "slots",
                                              "offer": "offers", "order": "orders", "trade": "trades"}[kind])
        return table[key]

    def all_entities(self) -> Iterator[EntityRef]:
        for zone in self.zones:
            yield ("zone", zone)
        for participant in self.participants:
            yield ("participant", participant)
        for slot in self.slots:
            yield ("slot", slot)
        for offer in self.offers:
            yield ("offer", offer)
        for order in self.orders:
            yield ("order", order)
        for trade in self.trades:
            yield ("trade", trade)

    def committed_wh(self, producer: str, slot_start_ms: int, *, excluding: str | None = None) -> int:
        """Energy a producer has offered for a slot and not withdrawn (withdrawn offers keep what sold)."""
        total = 0
        for offer_id in self.producer_slot_offers.get((producer, slot_start_ms), ()):
            if offer_id == excluding:
                continue
            offer = self.offers[offer_id]
            total += offer.energy_wh if offer.status == "open" else offer.sold_wh
        return total

    def due_slots(self, now_ms: int) -> list[tuple[str, int]]:
        """Open slots whose gate has closed, oldest first."""
        due = [
            (zone, start)
            for zone, starts in self.open_slots.items()
            for start in starts
            if self.slots[(zone, start)].gate_ms <= now_ms
        ]
        return sorted(due, key=lambda key: (key[1], key[0]))

    # --- folding -------------------------------------------------------------------------------

    def apply(self, event: object, partition: int | None = None, offset: int | None = None) -> list[EntityRef]:
        """Applies one event; returns the entities it changed."""
        self._where = f"{type(event).__name__} at partition {partition} offset {offset}"
        handler = _HANDLERS.get(type(event))
        if handler is None:
            raise ProjectionError(f"{self._where}: not a market event")
        touched = handler(self, event)
        if partition is not None and offset is not None:
            self.positions[partition] = offset + 1
        return touched

    def _fail(self, reason: str) -> ProjectionError:
        return ProjectionError(f"{self._where}: {reason}")

    def _next_seq(self, zone: str) -> int:
        self.seq[zone] += 1
        return self.seq[zone]

    def _zone(self, zone: str) -> Zone:
        try:
            return self.zones[zone]
        except KeyError:
            raise self._fail(f"zone {zone!r} was never configured") from None

    def _slot(self, zone: str, slot_start_ms: int, at_ms: int, touched: list[EntityRef]) -> Slot:
        key = (zone, slot_start_ms)
        slot = self.slots.get(key)
        if slot is None:
            config = self._zone(zone)
            slot = Slot(
                zone=zone,
                slot_start_ms=slot_start_ms,
                mechanism=config.mechanism,
                gate_ms=slot_start_ms - config.gate_closure_s * 1000,
                min_lot_wh=config.min_lot_wh,
                status="open",
                clearing_price_cents_per_kwh=None,
                traded_wh=0,
                closed_ms=None,
                allocation_complete=None,
                missing_meters="",
                tx_hash=None,
                block=None,
                updated_ms=at_ms,
            )
            self.slots[key] = slot
            self.open_slots[zone].add(slot_start_ms)
            touched.append(("slot", key))
        elif slot.status != "open":
            raise self._fail(f"slot {slot_start_ms} of zone {zone!r} is already {slot.status}")
        return slot

    def _existing_slot(self, zone: str, slot_start_ms: int) -> Slot:
        try:
            return self.slots[(zone, slot_start_ms)]
        except KeyError:
            raise self._fail(f"zone {zone!r} has no slot {slot_start_ms}") from None

    def _offer(self, offer_id: str) -> Offer:
        try:
            return self.offers[offer_id]
        except KeyError:
            raise self._fail(f"unknown offer {offer_id!r}") from None

    def _order(self, order_id: str) -> Order:
        try:
            return self.orders[order_id]
        except KeyError:
            raise self._fail(f"unknown order {order_id!r}") from None

    def _on_zone_configured(self, e: ev.ZoneConfigured) -> list[EntityRef]:
        self.zones[e.zone] = Zone(e.zone, e.mechanism, e.gate_closure_s, e.min_lot_wh, e.at_ms)
        return [("zone", e.zone)]

    def _on_participant_registered(self, e: ev.ParticipantRegistered) -> list[EntityRef]:
        self._zone(e.zone)
        known = self.memberships[e.participant].get(e.zone)
        if known is not None and known.status == "active":
            raise self._fail(f"participant {e.participant!r} is already registered in zone {e.zone!r}")
        joined = Participant(e.participant, e.zone, e.meter, ",".join(sorted(set(e.roles))), e.capacity_w, e.at_ms,
                             "active", e.at_ms)
        self.memberships[e.participant][e.zone] = joined
        self._in_force(e.participant)
        return [("participant", e.participant)]

    def _on_participant_changed(self, e: ev.ParticipantChanged) -> list[EntityRef]:
        known = self._membership(e.zone, e.participant)
        known.roles = ",".join(sorted(set(e.roles)))
        known.capacity_w = e.capacity_w
        known.updated_ms = e.at_ms
        return [("participant", e.participant)]

    def _on_participant_left(self, e: ev.ParticipantLeft) -> list[EntityRef]:
        known = self._membership(e.zone, e.participant)
        if self.meters.get(known.meter) == e.participant:
            del self.meters[known.meter]
        known.status, known.roles, known.meter, known.updated_ms = "left", "", "", e.at_ms
        self._in_force(e.participant)
        return [("participant", e.participant)]

    def _membership(self, zone: str, participant: str) -> Participant:
        known = self.memberships[participant].get(zone) if participant in self.memberships else None
        if known is None or known.status != "active":
            raise self._fail(f"participant {participant!r} is not registered in zone {zone!r}")
        return known

    def _in_force(self, participant: str) -> None:
        """Which of a participant's records is in force: the active one registered last (ties by zone),
        else the one updated last. Decided from the records alone, so folding the partitions of a move
        in either order ends the same."""
        records = list(self.memberships[participant].values())
        active = [m for m in records if m.status == "active"]
        chosen = (max(active, key=lambda m: (m.registered_ms, m.zone)) if active
                  else max(records, key=lambda m: (m.updated_ms, m.zone)))
        self.participants[participant] = chosen
        for m in records:
            if m is not chosen and m.meter and self.meters.get(m.meter) == participant:
                del self.meters[m.meter]
        if chosen.status == "active":
            self.meters[chosen.meter] = participant

    def _on_offer_listed(self, e: ev.OfferListed) -> list[EntityRef]:
        touched: list[EntityRef] = []
        self._slot(e.zone, e.slot_start_ms, e.at_ms, touched)
        if e.offer_id in self.offers:
            raise self._fail(f"offer {e.offer_id!r} already exists")
        self.offers[e.offer_id] = Offer(
            offer_id=e.offer_id,
            producer=e.producer,
            zone=e.zone,
            slot_start_ms=e.slot_start_ms,
            energy_wh=e.energy_wh,
            sold_wh=0,
            price_cents_per_kwh=e.price_cents_per_kwh,
            status="open",
            seq=self._next_seq(e.zone),
            listed_ms=e.at_ms,
            updated_ms=e.at_ms,
        )
        self.slot_offers[(e.zone, e.slot_start_ms)].append(e.offer_id)
        self._placed_by(e.offer_id, e.zone, e.producer)
        self.producer_slot_offers[(e.producer, e.slot_start_ms)].append(e.offer_id)
        touched.append(("offer", e.offer_id))
        return touched

    def _on_offer_amended(self, e: ev.OfferAmended) -> list[EntityRef]:
        offer = self._offer(e.offer_id)
        if offer.status != "open" or e.energy_wh < offer.sold_wh:
            raise self._fail(f"offer {e.offer_id!r} cannot be amended ({offer.status}, {offer.sold_wh} Wh sold)")
        offer.energy_wh = e.energy_wh
        offer.price_cents_per_kwh = e.price_cents_per_kwh
        offer.seq = self._next_seq(e.zone)
        offer.updated_ms = e.at_ms
        return [("offer", e.offer_id)]

    def _on_offer_withdrawn(self, e: ev.OfferWithdrawn) -> list[EntityRef]:
        offer = self._offer(e.offer_id)
        if offer.status != "open":
            raise self._fail(f"offer {e.offer_id!r} is {offer.status}")
        offer.status = "withdrawn"
        offer.updated_ms = e.at_ms
        return [("offer", e.offer_id)]

    def _on_order_placed(self, e: ev.OrderPlaced) -> list[EntityRef]:
        touched: list[EntityRef] = []
        slot = self._slot(e.zone, e.slot_start_ms, e.at_ms, touched)
        if e.order_id in self.orders:
            raise self._fail(f"order {e.order_id!r} already exists")
        order = Order(
            order_id=e.order_id,
            consumer=e.consumer,
            zone=e.zone,
            kind="bid" if e.offer_id is None else "purchase",
            offer_id=e.offer_id,
            slot_start_ms=e.slot_start_ms,
            energy_wh=e.energy_wh,
            filled_wh=0,
            price_cents_per_kwh=e.price_cents_per_kwh,
            status="open",
            seq=self._next_seq(e.zone),
            placed_ms=e.at_ms,
            updated_ms=e.at_ms,
        )
        self.orders[e.order_id] = order
        self.slot_orders[(e.zone, e.slot_start_ms)].append(e.order_id)
        self._placed_by(e.order_id, e.zone, e.consumer)
        touched.append(("order", e.order_id))
        if e.offer_id is not None:
            offer = self._offer(e.offer_id)
            if offer.remaining_wh < e.energy_wh:
                raise self._fail(f"offer {e.offer_id!r} has {offer.remaining_wh} Wh left, not {e.energy_wh}")
            offer.sold_wh += e.energy_wh
            offer.updated_ms = e.at_ms
            order.filled_wh = e.energy_wh
            order.status = "filled"
            touched.append(("offer", offer.offer_id))
            touched.extend(self._add_trade(slot, offer, order, e.order_id, e.energy_wh, e.price_cents_per_kwh, e.at_ms))
        return touched

    def _add_trade(
        self, slot: Slot, offer: Offer, order: Order, trade_id: str, energy_wh: int, price: int, at_ms: int
    ) -> list[EntityRef]:
        if trade_id in self.trades:
            raise self._fail(f"trade {trade_id!r} already exists")
        self.trades[trade_id] = Trade(
            trade_id=trade_id,
            zone=slot.zone,
            slot_start_ms=slot.slot_start_ms,
            offer_id=offer.offer_id,
            order_id=order.order_id,
            producer=offer.producer,
            consumer=order.consumer,
            energy_wh=energy_wh,
            price_cents_per_kwh=price,
            amount_millicents=energy_wh * price,
            delivered_wh=None,
            delivered_amount_millicents=None,
            status="contracted",
            tx_hash=None,
            block=None,
            traded_ms=at_ms,
            updated_ms=at_ms,
        )
        self.slot_trades[(slot.zone, slot.slot_start_ms)].append(trade_id)
        slot.traded_wh += energy_wh
        slot.updated_ms = at_ms
        return [("trade", trade_id), ("slot", (slot.zone, slot.slot_start_ms))]

    def _placed_by(self, key: str, zone: str, participant: str) -> None:
        # The zone's own record (a record of another zone may be folded before or after this partition).
        # A log from before participants could leave has offers of participants it never registered
        # (the fold never required it): they have no meter to settle on, as before.
        known = self.memberships.get(participant, {}).get(zone)
        if known is not None and known.meter:
            self.placed_meters[key] = known.meter

    def trade_meters(self, trade: Trade) -> tuple[str | None, str | None]:
        """The producer's and the consumer's meters a trade settles on (None: the log never said)."""
        return self.placed_meters.get(trade.offer_id), self.placed_meters.get(trade.order_id)

    def _on_order_cancelled(self, e: ev.OrderCancelled) -> list[EntityRef]:
        order = self._order(e.order_id)
        if order.kind != "bid" or order.status != "open":
            raise self._fail(f"order {e.order_id!r} is a {order.status} {order.kind}, not an open bid")
        order.status = "cancelled"
        order.updated_ms = e.at_ms
        return [("order", e.order_id)]

    def _on_slot_closed(self, e: ev.SlotClosed) -> list[EntityRef]:
        key = (e.zone, e.slot_start_ms)
        slot = self._existing_slot(*key)
        if slot.status != "open":
            raise self._fail(f"slot {e.slot_start_ms} of zone {e.zone!r} is already {slot.status}")
        if slot.mechanism != e.mechanism:
            raise self._fail(f"slot clears by {slot.mechanism}, the event says {e.mechanism}")
        touched: list[EntityRef] = [("slot", key)]
        for trade in e.trades:
            offer, order = self._offer(trade.offer_id), self._order(trade.order_id)
            if offer.remaining_wh < trade.energy_wh or order.energy_wh - order.filled_wh < trade.energy_wh:
                raise self._fail(f"trade {trade.trade_id!r} exceeds its offer or order")
            offer.sold_wh += trade.energy_wh
            order.filled_wh += trade.energy_wh
            touched.extend(
                self._add_trade(slot, offer, order, trade.trade_id, trade.energy_wh, trade.price_cents_per_kwh, e.at_ms)
            )
        for offer_id in self.slot_offers.get(key, ()):
            offer = self.offers[offer_id]
            if offer.status == "open":
                offer.status = "closed"
                offer.updated_ms = e.at_ms
                touched.append(("offer", offer_id))
        for order_id in self.slot_orders.get(key, ()):
            order = self.orders[order_id]
            if order.status == "open":
                order.status = (
                    "filled" if order.filled_wh == order.energy_wh
                    else "partially_filled" if order.filled_wh else "unfilled"
                )
                order.updated_ms = e.at_ms
                touched.append(("order", order_id))
        slot.status = "closed"
        slot.clearing_price_cents_per_kwh = e.clearing_price_cents_per_kwh
        slot.closed_ms = e.at_ms
        slot.updated_ms = e.at_ms
        self.open_slots[e.zone].discard(e.slot_start_ms)
        self.unsettled.add(key)
        return touched

    def _on_allocated(self, e: ev.Allocated) -> list[EntityRef]:
        key = (e.zone, e.slot_start_ms)
        slot = self._existing_slot(*key)
        if slot.status != "closed":
            raise self._fail(f"slot {e.slot_start_ms} of zone {e.zone!r} is {slot.status}, not closed")
        touched: list[EntityRef] = [("slot", key)]
        for delivery in e.deliveries:
            trade = self.trades.get(delivery.trade_id)
            if trade is None or (trade.zone, trade.slot_start_ms) != key:
                raise self._fail(f"trade {delivery.trade_id!r} is not a trade of this slot")
            trade.delivered_wh = delivery.delivered_wh
            trade.delivered_amount_millicents = delivery.amount_millicents
            trade.status = "allocated"
            trade.updated_ms = e.at_ms
            touched.append(("trade", trade.trade_id))
        slot.status = "allocated"
        slot.allocation_complete = e.complete
        slot.missing_meters = ",".join(e.missing_meters)
        slot.updated_ms = e.at_ms
        return touched

    def _settlement(self, zone: str, slot_start_ms: int, status: str, tx_hash: str, block: int | None,
                    at_ms: int) -> list[EntityRef]:
        key = (zone, slot_start_ms)
        slot = self._existing_slot(*key)
        slot.status, slot.tx_hash, slot.block, slot.updated_ms = status, tx_hash, block, at_ms
        touched: list[EntityRef] = [("slot", key)]
        for trade_id in self.slot_trades.get(key, ()):
            trade = self.trades[trade_id]
            trade.status, trade.tx_hash, trade.block, trade.updated_ms = status, tx_hash, block, at_ms
            touched.append(("trade", trade_id))
        return touched

    def _on_settlement_submitted(self, e: ev.SettlementSubmitted) -> list[EntityRef]:
        return self._settlement(e.zone, e.slot_start_ms, "submitted", e.tx_hash, None, e.at_ms)

    def _on_settlement_confirmed(self, e: ev.SettlementConfirmed) -> list[EntityRef]:
        self.unsettled.discard((e.zone, e.slot_start_ms))
        return self._settlement(e.zone, e.slot_start_ms, "confirmed", e.tx_hash, e.block, e.at_ms)


_HANDLERS: dict[type, Any] = {
    ev.ZoneConfigured: MarketState._on_zone_configured,
    ev.ParticipantRegistered: MarketState._on_participant_registered,
    ev.ParticipantChanged: MarketState._on_participant_changed,
    ev.ParticipantLeft: MarketState._on_participant_left,
    ev.OfferListed: MarketState._on_offer_listed,
    ev.OfferAmended: MarketState._on_offer_amended,
    ev.OfferWithdrawn: MarketState._on_offer_withdrawn,
    ev.OrderPlaced: MarketState._on_order_placed,
    ev.OrderCancelled: MarketState._on_order_cancelled,
    ev.SlotClosed: MarketState._on_slot_closed,
    ev.Allocated: MarketState._on_allocated,
    ev.SettlementSubmitted: MarketState._on_settlement_submitted,
    ev.SettlementConfirmed: MarketState._on_settlement_confirmed,
}
