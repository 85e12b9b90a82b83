"""The event contracts: every record that travels on a Kafka topic.

Records are immutable, typed and versioned (``v``), encoded as JSON by msgspec, which validates
while it decodes and names the offending field (``at `$.readings[3].drawn_va```). Each record
carries a ``type`` tag so that one topic can carry several record kinds (a reading or a batch
of readings; the market's events) and a reader knows which one it holds without guessing.

Units are in the names: ``_ms`` epoch milliseconds UTC, ``_wh`` watt-hours, ``_va`` volt-amperes,
``_kva`` kilovolt-amperes, ``_w`` watts, ``_eur`` euros, ``_cents`` euro cents.
"""

from __future__ import annotations

import hashlib
import re
import string
import zlib
from typing import Annotated, Literal, Union

import msgspec
from msgspec import Meta

METER_ID_PATTERN = r"^[0-9]{12}$"
ZONE_ID_PATTERN = r"^[A-Za-z0-9_.-]+$"
MeterId = Annotated[str, Meta(pattern=METER_ID_PATTERN, description="Linky meter address (ADSC), 12 digits")]
ZoneId = Annotated[str, Meta(min_length=1, max_length=64, pattern=ZONE_ID_PATTERN)]
EpochMs = Annotated[int, Meta(ge=0, description="Unix time in milliseconds, UTC")]
NonNegInt = Annotated[int, Meta(ge=0)]
Wh = Annotated[int, Meta(ge=0, description="watt-hours")]
VA = Annotated[int, Meta(ge=0, le=100_000, description="volt-amperes")]


# The same contracts as MeterId and ZoneId (the JSON schema says so), their characters checked by
# MeterReading.__post_init__: the readings are the one record decoded 48,000 times a second.
_ReadingMeterId = Annotated[
    str, Meta(min_length=12, max_length=12, extra_json_schema={"pattern": METER_ID_PATTERN},
              description="Linky meter address (ADSC), 12 digits"),
]
_ReadingZoneId = Annotated[str, Meta(min_length=1, max_length=64, extra_json_schema={"pattern": ZONE_ID_PATTERN})]
_DIGITS = string.digits
_ZONE_CHARACTERS = string.ascii_letters + string.digits + "_.-"


class Record(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", forbid_unknown_fields=True):
    """Base of every event: immutable, keyword-only, tagged with its type name, versioned."""

    v: int = 1


# --- meter.readings -------------------------------------------------------------------------


class MeterReading(Record, tag="reading", kw_only=True, gc=False):
    """One Linky frame in TIC standard mode (Enedis-NOI-CPT_54E), as the Wi-Fi module sends it.

    Energy is never integrated from power: consumers take differences of the indexes.
    """

    # gc=False: the collector never tracks a reading (its fields are strings, ints and a tuple of ints,
    # so it can be in no reference cycle); the worker decodes 48,000 a second (docs/pipeline.md).

    meter: _ReadingMeterId  # ADSC
    zone: _ReadingZoneId  # added by the ingest gateway: the neighbourhood the meter belongs to
    time_ms: EpochMs  # DATE, the meter's clock
    seq: NonNegInt  # frame sequence number from the module, to spot gaps and replays
    drawn_va: VA  # SINSTS: apparent power drawn
    injected_va: VA = 0  # SINSTI: apparent power injected (producers)
    withdrawn_wh: Wh  # EAST: total withdrawn energy index
    withdrawn_wh_by_register: tuple[Wh, ...] = ()  # EASF01..EASF10: per-tariff withdrawn indexes
    injected_wh: Wh = 0  # EAIT: injected energy index
    tariff_register: Annotated[int, Meta(ge=1, le=10)] = 1  # NTARF: active tariff register (1-based)
    subscribed_kva: Annotated[int, Meta(ge=1, le=36)]  # PREF
    cutoff_kva: Annotated[int, Meta(ge=1, le=36)]  # PCOUP
    voltage_v: Annotated[int, Meta(ge=0, le=500)] = 230  # URMS1
    current_a: Annotated[int, Meta(ge=0, le=200)] = 0  # IRMS1

    def __post_init__(self) -> None:
        # MeterId's and ZoneId's character sets, checked here rather than by msgspec's `pattern`,
        # which calls Python's re for each field of each reading: 0.4 µs a reading of the worker's
        # ~10 (docs/pipeline.md). The lengths are checked by msgspec; a string that strips to nothing
        # is made of the allowed characters only. On decoding, msgspec adds the reading's path.
        if self.meter.strip(_DIGITS):
            raise ValueError(f"Expected `str` matching regex {METER_ID_PATTERN!r} in `meter`")
        if self.zone.strip(_ZONE_CHARACTERS):
            raise ValueError(f"Expected `str` matching regex {ZONE_ID_PATTERN!r} in `zone`")


class ReadingBatch(Record, tag="batch", kw_only=True):
    """Readings of one shard, in meter-time order per meter, as an ingest gateway batches them."""

    shard: NonNegInt
    readings: Annotated[list[MeterReading], Meta(min_length=1)]


IngestMessage = Union[MeterReading, ReadingBatch]


class DeviceTelemetry(Record, tag="device", kw_only=True):
    """Wi-Fi module health, on its own lower-rate topic."""

    meter: MeterId
    time_ms: EpochMs
    rssi_dbm: Annotated[int, Meta(ge=-120, le=0)]
    firmware: str
    uptime_s: NonNegInt
    hardware: str = ""  # the module's hardware version (added for the console; empty when unknown)


class RejectedReading(Record, tag="rejected", kw_only=True):
    """A message from ``meter.readings`` that failed the contract or physics, kept with its reason."""

    raw: bytes  # the message value exactly as received (base64 in JSON)
    reason: str
    meter: str | None = None
    source_topic: str
    source_partition: NonNegInt
    source_offset: NonNegInt
    rejected_at_ms: EpochMs


# --- meter.slots ----------------------------------------------------------------------------


class SlotEnergy(Record, tag="slot_energy", kw_only=True):
    """Energy a meter imported and exported in one 15-minute slot, from index differences."""

    meter: MeterId
    zone: ZoneId
    slot_start_ms: EpochMs
    imported_wh: Wh
    exported_wh: Wh
    completeness: Annotated[float, Meta(ge=0.0, le=1.0)]  # share of the slot's seconds covered by readings


# --- alerts ---------------------------------------------------------------------------------

AlertKind = Literal[
    "power_above",
    "power_below",
    "energy_day_above",
    "energy_day_below",
    "spending_day_above",
    "spending_day_below",
    "spending_month_above",
    "spending_month_below",
    "disconnected",
    "fuse_limit",
    "ingest_down",
]
Channel = Literal["push", "email"]


class AlertRules(Record, tag="alert_rules", kw_only=True):
    """A household's alert preferences for one meter (compacted topic: the latest wins).

    A limit left as ``None`` is off. Durations are how long a condition must hold before it raises.
    """

    meter: MeterId
    power_max_w: Annotated[int, Meta(gt=0)] | None = None
    power_min_w: Annotated[int, Meta(ge=0)] | None = None
    energy_day_max_wh: Annotated[int, Meta(gt=0)] | None = None
    energy_day_min_wh: Annotated[int, Meta(ge=0)] | None = None
    spending_day_max_eur: Annotated[float, Meta(gt=0)] | None = None
    spending_day_min_eur: Annotated[float, Meta(ge=0)] | None = None
    spending_month_max_eur: Annotated[float, Meta(gt=0)] | None = None
    spending_month_min_eur: Annotated[float, Meta(ge=0)] | None = None
    disconnect: bool = True
    fuse_warning: bool = True
    for_s: Annotated[float, Meta(ge=0)] = 10.0
    repeat_s: Annotated[float, Meta(ge=0)] = 3600.0
    # A raised alert clears at its threshold moved back by this share (hysteresis): a power alert
    # over 6,000 W clears at or below 5,700 W, so a value hovering at the threshold does not flap.
    hysteresis: Annotated[float, Meta(ge=0, lt=1)] = 0.05
    # Flapping: this many episodes of one kind within the window hold the last one raised until its
    # condition has stayed clear for the hold time (docs/alerts.md).
    flap_max_episodes: Annotated[int, Meta(ge=2)] = 3
    flap_window_s: Annotated[float, Meta(gt=0)] = 21600.0
    flap_hold_s: Annotated[float, Meta(ge=0)] = 1800.0
    # Spending limits also warn when the day or month is on pace to exceed them.
    spending_pace: bool = True
    time_zone: Annotated[str, Meta(min_length=1, max_length=64)] = "Europe/Paris"  # day and month boundaries
    tariff: Literal["base", "peak_offpeak", "tempo"] = "base"
    # Not read by the notifier: delivery preferences (channels, language, quiet hours) live in its
    # store, one place each (docs/notifier.md). Kept so existing records stay valid.
    channels: tuple[Channel, ...] = ("push", "email")
    language: Literal["fr", "en"] = "fr"
    expert: bool = False
    updated_ms: EpochMs = 0


class AlertEvent(Record, tag="alert", kw_only=True):
    """One transition of an alert episode: ``raised`` once, then ``resolved`` once.

    ``id`` is deterministic (meter, kind, episode start), so a replayed episode is the same episode.
    """

    id: str
    meter: MeterId | None  # None for operator-level alerts (ingest_down)
    zone: str | None = None
    kind: AlertKind
    state: Literal["raised", "resolved"]
    value: float
    threshold: float
    at_ms: EpochMs  # meter time of the reading that caused the transition
    episode_start_ms: EpochMs
    produced_ms: EpochMs = 0  # wall clock when the engine produced it (for latency)
    detail: dict[str, float] = {}


def alert_id(meter: str | None, kind: str, episode_start_ms: int) -> str:
    """The deterministic id of an alert episode."""
    digest = hashlib.blake2b(f"{meter}|{kind}|{episode_start_ms}".encode(), digest_size=12)
    return digest.hexdigest()


class Delivery(Record, tag="delivery", kw_only=True):
    """The outcome of one attempt to deliver one alert transition on one channel."""

    alert_id: str
    alert_state: Literal["raised", "resolved"]
    channel: Channel
    recipient: str  # device token hash or email address hash, never the address itself
    status: Literal["sent", "failed", "retrying", "deduplicated", "suppressed", "grouped"]
    attempts: NonNegInt
    provider_id: str | None = None
    reason: str | None = None
    at_ms: EpochMs


# --- market.events --------------------------------------------------------------------------
# The market's log, keyed by zone: every participant, offer, order and slot belongs to one zone,
# so one partition holds everything a zone's state depends on, in order. Replaying the log with
# the marketplace's projection gives back the market exactly (no wall clock, no randomness).
# Money is exact integers: Wh x cents/kWh = millicents (1/1000 of a cent).

MarketId = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
PositiveWh = Annotated[int, Meta(gt=0, le=1_000_000_000, description="watt-hours")]
CentsPerKwh = Annotated[int, Meta(ge=0, le=100_000, description="euro cents per kWh")]
Millicents = Annotated[int, Meta(ge=0, description="thousandths of a euro cent (Wh x cents/kWh)")]
MarketRole = Literal["producer", "consumer"]
Mechanism = Literal["bilateral", "pay_as_bid", "pay_as_clear"]


class ZoneConfigured(Record, tag="zone_configured", kw_only=True):
    """An operator set how a zone trades; applies to slots that have no offer or order yet."""

    zone: ZoneId
    mechanism: Mechanism
    gate_closure_s: Annotated[int, Meta(ge=0, le=86_400)]  # trading on a slot stops this long before it
    min_lot_wh: Annotated[int, Meta(ge=1, le=1_000_000)]
    at_ms: EpochMs


class ParticipantRegistered(Record, tag="participant_registered", kw_only=True):
    """A participant joins a zone's market: registered by the operator (POST /v1/participants), or a
    household whose accounts hold a market role and a meter paired in this zone (the market's
    accounts follower, marketplace/membership.py). A participant that left may join again."""

    participant: MarketId
    zone: ZoneId
    meter: MeterId  # the meter whose meter.slots decide what this participant delivered or took
    roles: tuple[MarketRole, ...]
    capacity_w: Annotated[int, Meta(ge=0, le=1_000_000)]  # peak output of a producer's installation
    at_ms: EpochMs


class ParticipantChanged(Record, tag="participant_changed", kw_only=True):
    """A registered participant's roles or producer capacity changed (its household's market roles, on
    accounts.events); it keeps its zone and meter. Its open offers (producer role gone) and open bids
    (consumer role gone) are withdrawn and cancelled by events before this one, in the same batch."""

    participant: MarketId
    zone: ZoneId
    roles: Annotated[tuple[MarketRole, ...], Meta(min_length=1)]
    capacity_w: Annotated[int, Meta(ge=0, le=1_000_000)]
    at_ms: EpochMs


#: Why a participant left its zone's market (what its household's accounts say now).
LeftReason = Literal["roles_revoked", "meter_unpaired", "meter_changed", "household_erased"]


class ParticipantLeft(Record, tag="participant_left", kw_only=True):
    """A participant leaves a zone's market: it may no longer trade there. Its open offers and bids of
    slots still before their gate are withdrawn and cancelled by events before this one, in the same
    batch; what it sold or bought stays sold and bought, and settles as any trade."""

    participant: MarketId
    zone: ZoneId
    reason: LeftReason
    at_ms: EpochMs


class OfferListed(Record, tag="offer_listed", kw_only=True):
    """A producer's offer of energy in one 15-minute slot (a listed window is one offer per slot)."""

    offer_id: MarketId
    producer: MarketId
    zone: ZoneId
    slot_start_ms: EpochMs
    energy_wh: PositiveWh
    price_cents_per_kwh: CentsPerKwh
    at_ms: EpochMs


class OfferAmended(Record, tag="offer_amended", kw_only=True):
    """New energy and price of an open offer; it loses its time priority, as on an exchange."""

    offer_id: MarketId
    zone: ZoneId
    energy_wh: PositiveWh
    price_cents_per_kwh: CentsPerKwh
    at_ms: EpochMs


class OfferWithdrawn(Record, tag="offer_withdrawn", kw_only=True):
    """The unsold part of an offer leaves the market; what was already sold stays sold."""

    offer_id: MarketId
    zone: ZoneId
    at_ms: EpochMs


class OrderPlaced(Record, tag="order_placed", kw_only=True):
    """A consumer's order: a purchase from one offer (bilateral, filled at once), or an auction bid."""

    order_id: MarketId
    consumer: MarketId
    zone: ZoneId
    offer_id: MarketId | None  # None for an auction bid
    slot_start_ms: EpochMs
    energy_wh: PositiveWh
    price_cents_per_kwh: CentsPerKwh  # the offer's price for a purchase, the limit price for a bid
    at_ms: EpochMs


class OrderCancelled(Record, tag="order_cancelled", kw_only=True):
    """An open auction bid withdrawn before gate closure (a purchase is final)."""

    order_id: MarketId
    zone: ZoneId
    at_ms: EpochMs


class Trade(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Energy matched between one offer and one order at one price."""

    trade_id: MarketId
    offer_id: MarketId
    order_id: MarketId
    energy_wh: PositiveWh
    price_cents_per_kwh: CentsPerKwh


class SlotClosed(Record, tag="slot_closed", kw_only=True):
    """Gate closure of a zone's slot and the result of its clearing.

    Bilateral zones traded before the gate (``trades`` is empty); auction zones list every match.
    """

    zone: ZoneId
    slot_start_ms: EpochMs
    mechanism: Mechanism
    clearing_price_cents_per_kwh: CentsPerKwh | None  # the uniform price of pay-as-clear, else None
    trades: list[Trade] = []
    at_ms: EpochMs


class TradeDelivery(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    trade_id: MarketId
    delivered_wh: Wh
    amount_millicents: Millicents


class Allocated(Record, tag="allocated", kw_only=True):
    """What each trade of a slot delivered, decided by the meters, and what it costs."""

    zone: ZoneId
    slot_start_ms: EpochMs
    deliveries: list[TradeDelivery]
    complete: bool  # False when settled after the deadline with partial meter data
    missing_meters: tuple[MeterId, ...] = ()  # meters without (complete) data at the deadline
    at_ms: EpochMs


class SettlementSubmitted(Record, tag="settlement_submitted", kw_only=True):
    zone: ZoneId
    slot_start_ms: EpochMs
    tx_hash: str
    at_ms: EpochMs


class SettlementConfirmed(Record, tag="settlement_confirmed", kw_only=True):
    zone: ZoneId
    slot_start_ms: EpochMs
    tx_hash: str
    block: NonNegInt
    at_ms: EpochMs


MarketEvent = Union[
    ZoneConfigured,
    ParticipantRegistered,
    ParticipantChanged,
    ParticipantLeft,
    OfferListed,
    OfferAmended,
    OfferWithdrawn,
    OrderPlaced,
    OrderCancelled,
    SlotClosed,
    Allocated,
    SettlementSubmitted,
    SettlementConfirmed,
]


# --- devices.events and devices.commands (operator console: firmware roll-outs) ---------------
# The roll-outs' log, keyed by campaign id (firmware catalogue entries by version): a campaign's
# events sit in one partition, in order, so folding the log with console.campaigns gives back every
# campaign exactly. Decisions that need a clock or the fleet's health (advance a phase, pause on
# worse health, retry a module) are taken by the campaign runner and written here with their
# figures, so the fold itself reads neither.

FirmwareVersion = Annotated[str, Meta(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_.+-]+$")]
HardwareVersion = Annotated[str, Meta(min_length=1, max_length=16, pattern=r"^[A-Za-z0-9_.-]+$")]
CampaignId = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
Share = Annotated[float, Meta(ge=0.0, le=1.0)]
RssiBand = Literal["excellent", "good", "fair", "poor"]


class FirmwareReleased(Record, tag="firmware_released", kw_only=True):
    """A firmware entered the catalogue: what it is for and which hardware versions may run it."""

    version: FirmwareVersion
    notes: Annotated[str, Meta(max_length=2000)] = ""
    hardware: Annotated[tuple[HardwareVersion, ...], Meta(min_length=1)]
    operator: Annotated[str, Meta(max_length=128)] = ""  # who released it (account id; older records: unknown)
    at_ms: EpochMs


class ModuleGroup(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Which modules a campaign targets: every non-empty criterion must match (empty: any)."""

    firmware: tuple[FirmwareVersion, ...] = ()
    hardware: tuple[HardwareVersion, ...] = ()
    zones: tuple[ZoneId, ...] = ()
    rssi_bands: tuple[RssiBand, ...] = ()
    meters: tuple[MeterId, ...] = ()


class PhasePlan(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One phase: the share of the targets updated once it is done (cumulative), and the share of
    its modules that must report the new firmware before the next phase starts."""

    name: Annotated[str, Meta(min_length=1, max_length=32)]
    cumulative_share: Annotated[float, Meta(gt=0.0, le=1.0)]
    min_modules: Annotated[int, Meta(ge=0)] = 0
    success_share: Annotated[float, Meta(gt=0.0, le=1.0)] = 0.95


class HealthGuard(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """When updated modules count as worse than the control group of modules not yet updated.

    Judged once ``min_sample`` updated modules have run the new firmware for ``observe_s``; the
    campaign pauses itself when any margin is passed."""

    min_sample: Annotated[int, Meta(ge=1)] = 20
    observe_s: Annotated[float, Meta(ge=0)] = 600.0
    offline_share_margin: Share = 0.10  # updated offline share minus control offline share
    frame_gap_p95_ratio: Annotated[float, Meta(ge=1.0)] = 1.5  # updated p95 gap over control p95 gap
    reboots_per_hour_margin: Annotated[float, Meta(ge=0)] = 1.0  # per module, updated minus control


class CampaignCreated(Record, tag="campaign_created", kw_only=True):
    campaign: CampaignId
    firmware: FirmwareVersion
    group: ModuleGroup
    phases: Annotated[tuple[PhasePlan, ...], Meta(min_length=1)]
    guard: HealthGuard
    rate_per_min: Annotated[int, Meta(ge=1, le=1_000_000)]  # update requests sent per minute at most
    window_start_hour: Annotated[int, Meta(ge=0, le=23)]  # requests go out only inside this window
    window_end_hour: Annotated[int, Meta(ge=0, le=24)]  # (local time; start > end spans midnight)
    time_zone: Annotated[str, Meta(min_length=1, max_length=64)] = "Europe/Paris"
    attempt_timeout_s: Annotated[float, Meta(gt=0)] = 900.0  # a module silent on its update this long failed
    max_attempts: Annotated[int, Meta(ge=1, le=20)] = 3
    retry_base_s: Annotated[float, Meta(gt=0)] = 300.0  # retry n waits base x 2^(n-1)
    operator: Annotated[str, Meta(max_length=128)] = ""
    at_ms: EpochMs


class PhaseStarted(Record, tag="phase_started", kw_only=True):
    """A phase begins; its modules follow in one or more ``ModulesAssigned`` (a message stays small)."""

    campaign: CampaignId
    phase: NonNegInt  # index into the campaign's phases
    modules: NonNegInt  # how many modules the phase's ModulesAssigned events carry in all
    at_ms: EpochMs


class ModulesAssigned(Record, tag="modules_assigned", kw_only=True):
    campaign: CampaignId
    phase: NonNegInt
    meters: Annotated[tuple[MeterId, ...], Meta(min_length=1)]
    previous_firmware: tuple[str, ...]  # what each of ``meters`` ran when assigned (for a roll-back)
    at_ms: EpochMs


class UpdateRequested(Record, tag="update_requested", kw_only=True):
    """The runner asked a module to update (the command itself goes to devices.commands).

    ``firmware`` is the campaign's, or after a roll-back the version the module ran before."""

    campaign: CampaignId
    meter: MeterId
    firmware: FirmwareVersion
    attempt: Annotated[int, Meta(ge=1)]
    at_ms: EpochMs


class ModuleUpdated(Record, tag="module_updated", kw_only=True):
    """The module reported the firmware it was asked for on meter.telemetry."""

    campaign: CampaignId
    meter: MeterId
    firmware: FirmwareVersion
    attempt: Annotated[int, Meta(ge=1)]
    reported_ms: EpochMs  # the telemetry report's time
    at_ms: EpochMs


class UpdateFailed(Record, tag="update_failed", kw_only=True):
    """An attempt timed out; ``retry_at_ms`` is None when the module has no attempt left."""

    campaign: CampaignId
    meter: MeterId
    attempt: Annotated[int, Meta(ge=1)]
    reason: Annotated[str, Meta(max_length=256)]
    retry_at_ms: EpochMs | None
    at_ms: EpochMs


class CampaignPaused(Record, tag="campaign_paused", kw_only=True):
    """Paused by an operator, or by the campaign itself with the figures that made it stop."""

    campaign: CampaignId
    by: Literal["operator", "health_guard"]
    reason: Annotated[str, Meta(max_length=512)]
    figures: dict[str, float] = {}
    operator: Annotated[str, Meta(max_length=128)] = ""
    at_ms: EpochMs


class CampaignResumed(Record, tag="campaign_resumed", kw_only=True):
    campaign: CampaignId
    operator: Annotated[str, Meta(max_length=128)] = ""
    at_ms: EpochMs


class CampaignAborted(Record, tag="campaign_aborted", kw_only=True):
    """No more requests; updated modules keep the new firmware."""

    campaign: CampaignId
    reason: Annotated[str, Meta(max_length=512)] = ""
    operator: Annotated[str, Meta(max_length=128)] = ""
    at_ms: EpochMs


class CampaignRolledBack(Record, tag="campaign_rolled_back", kw_only=True):
    """Stopped, and every updated module is asked back to the firmware it ran before."""

    campaign: CampaignId
    reason: Annotated[str, Meta(max_length=512)] = ""
    operator: Annotated[str, Meta(max_length=128)] = ""
    at_ms: EpochMs


class CampaignCompleted(Record, tag="campaign_completed", kw_only=True):
    campaign: CampaignId
    updated: NonNegInt
    failed: NonNegInt
    at_ms: EpochMs


DeviceEvent = Union[
    FirmwareReleased,
    CampaignCreated,
    PhaseStarted,
    ModulesAssigned,
    UpdateRequested,
    ModuleUpdated,
    UpdateFailed,
    CampaignPaused,
    CampaignResumed,
    CampaignAborted,
    CampaignRolledBack,
    CampaignCompleted,
]


class FirmwareUpdateCommand(Record, tag="firmware_update", kw_only=True):
    """Asks one module (keyed by meter) to download and install a firmware, then reboot."""

    meter: MeterId
    campaign: CampaignId
    firmware: FirmwareVersion
    attempt: Annotated[int, Meta(ge=1)]
    at_ms: EpochMs


DeviceCommand = FirmwareUpdateCommand


# --- sealed personal fields (privacy; quartier/sealing.py seals and opens them) ---------------


class SealedField(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A personal value encrypted (AES-256-GCM) under its owner's data key, erased with that key.

    ``owner`` names the key (a household id, or an account id for an account's own fields before it
    has a household): a pseudonymous id, nothing personal. The topic, the owner and the field name are
    the associated data, so the value opens only where it was written. ``nonce`` and ``ciphertext``
    (GCM's tag at its end) are base64 in JSON.
    """

    alg: Literal["A256GCM"] = "A256GCM"
    owner: Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
    nonce: Annotated[bytes, Meta(min_length=12, max_length=12)]
    ciphertext: Annotated[bytes, Meta(min_length=16, max_length=16_384)]


# --- accounts.events ------------------------------------------------------------------------
# People, households, pairings, roles and delivery preferences (the accounts package folds them).
# Keyed by household; an account's events before it has a household are keyed by its account id.
# Personal fields are few and named for what they hold: ``email``, ``alert_email``, ``name``,
# ``device_token``; issue 13 seals exactly those under a per-household key. Secrets never travel
# in clear: passwords as argon2id hashes, confirmation and invite codes as SHA-256 digests.

AccountId = Annotated[str, Meta(pattern=r"^acct_[0-9a-f]{16}$", description="an account id")]
HouseholdId = Annotated[str, Meta(pattern=r"^hh_[0-9a-f]{16}$", description="a household id")]
EmailAddress = Annotated[str, Meta(min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]
PersonName = Annotated[str, Meta(min_length=1, max_length=120)]
Sha256Hex = Annotated[str, Meta(pattern=r"^[0-9a-f]{64}$", description="SHA-256 digest, hex")]
PasswordHash = Annotated[str, Meta(pattern=r"^\$argon2id\$", max_length=512, description="argon2id PHC string")]
DeviceId = Annotated[str, Meta(pattern=r"^dev_[0-9a-f]{16}$", description="a device id (digest of its token)")]
Language = Literal["fr", "en"]
GlobalRole = Literal["operator", "support"]
HouseholdRole = Literal["owner", "member"]
QuietHours = Annotated[str, Meta(pattern=r"^[0-2][0-9]:[0-5][0-9]-[0-2][0-9]:[0-5][0-9]$", description="HH:MM-HH:MM local")]
#: Who did it: an account id, or "cli" for a command run on the server (the first operator).
Actor = Annotated[str, Meta(pattern=r"^(acct_[0-9a-f]{16}|cli)$")]


class AccountCreated(Record, tag="account_created", kw_only=True):
    account: AccountId
    email: EmailAddress | SealedField  # personal (sealed from v2)
    name: PersonName | SealedField  # personal (sealed from v2)
    password_hash: PasswordHash
    language: Language = "fr"
    at_ms: EpochMs


class EmailConfirmationIssued(Record, tag="email_confirmation_issued", kw_only=True):
    """A confirmation link was sent; only the digest of its single-use token is kept."""

    account: AccountId
    token_sha256: Sha256Hex
    expires_ms: EpochMs
    at_ms: EpochMs


class EmailConfirmed(Record, tag="email_confirmed", kw_only=True):
    account: AccountId
    token_sha256: Sha256Hex  # the token used, spent from now on
    at_ms: EpochMs


class EmailChanged(Record, tag="email_changed", kw_only=True):
    """A new sign-in address; unconfirmed until its own link is followed."""

    account: AccountId
    email: EmailAddress | SealedField  # personal (sealed from v2)
    at_ms: EpochMs


class PasswordChanged(Record, tag="password_changed", kw_only=True):
    """A new password hash. ``rehash``: the same password under newer argon2 parameters, which
    revokes nothing; otherwise every session and token of the account issued before is revoked."""

    account: AccountId
    password_hash: PasswordHash
    rehash: bool = False
    at_ms: EpochMs


class SignedOutEverywhere(Record, tag="signed_out_everywhere", kw_only=True):
    """Every session and token of the account issued before ``at_ms`` is revoked."""

    account: AccountId
    at_ms: EpochMs


class HouseholdCreated(Record, tag="household_created", kw_only=True):
    household: HouseholdId
    owner: AccountId
    name: PersonName | SealedField  # personal ("Chez Dupont"; sealed from v2)
    at_ms: EpochMs


class InviteIssued(Record, tag="invite_issued", kw_only=True):
    """An owner's single-use invitation code (only its digest is kept)."""

    household: HouseholdId
    by: AccountId
    code_sha256: Sha256Hex
    expires_ms: EpochMs
    at_ms: EpochMs


class MemberJoined(Record, tag="member_joined", kw_only=True):
    household: HouseholdId
    account: AccountId
    role: HouseholdRole
    invite_sha256: Sha256Hex | None = None  # the invitation spent, None for the founding owner
    at_ms: EpochMs


class MemberLeft(Record, tag="member_left", kw_only=True):
    household: HouseholdId
    account: AccountId
    by: Actor
    at_ms: EpochMs


class MeterPaired(Record, tag="meter_paired", kw_only=True):
    """The household proved possession of the meter (its pairing code); the zone came with it."""

    household: HouseholdId
    meter: MeterId
    zone: ZoneId
    by: AccountId
    at_ms: EpochMs


class MeterUnpaired(Record, tag="meter_unpaired", kw_only=True):
    household: HouseholdId
    meter: MeterId
    by: Actor
    at_ms: EpochMs


class RoleGranted(Record, tag="role_granted", kw_only=True):
    """A global role (operator, support), granted by an operator or on the server's command line."""

    account: AccountId
    role: GlobalRole
    by: Actor
    at_ms: EpochMs


class RoleRevoked(Record, tag="role_revoked", kw_only=True):
    account: AccountId
    role: GlobalRole
    by: Actor
    at_ms: EpochMs


#: The peak output a producer grant of version 1 (written before ``capacity_w`` existed) stands for:
#: 3 kW, the most common rooftop installation of a French home (3 kWc). What a producer may offer in a
#: slot is capped by it (``capacity_w x 0.25 h``); what it delivered is still decided by its meter.
V1_PRODUCER_CAPACITY_W = 3_000


class MarketRoleGranted(Record, tag="market_role_granted", kw_only=True):
    """The household takes part in its zone's market as a producer or a consumer.

    v2 added ``capacity_w``: the peak output (W) of the household's installation, which the owner gives
    when opting in as a producer (required then, above 0; None for a consumer). Granting the producer
    role again with another capacity restates it. A v1 producer grant (``capacity_w`` None) counts as
    :data:`V1_PRODUCER_CAPACITY_W`."""

    v: int = 2
    household: HouseholdId
    role: MarketRole
    capacity_w: Annotated[int, Meta(gt=0, le=1_000_000)] | None = None
    by: Actor
    at_ms: EpochMs


class MarketRoleRevoked(Record, tag="market_role_revoked", kw_only=True):
    household: HouseholdId
    role: MarketRole
    by: Actor
    at_ms: EpochMs


class DeviceAdded(Record, tag="device_added", kw_only=True):
    """A member's phone (its FCM registration token); a token added again elsewhere moves."""

    household: HouseholdId
    account: AccountId
    device: DeviceId
    device_token: Annotated[str, Meta(min_length=1, max_length=4096, pattern=r"^\S+$")] | SealedField  # personal (sealed from v2)
    at_ms: EpochMs


class DeviceRemoved(Record, tag="device_removed", kw_only=True):
    household: HouseholdId
    device: DeviceId
    reason: Literal["member", "unregistered"] = "member"  # unregistered: FCM said the token is gone
    at_ms: EpochMs


class NotificationsSet(Record, tag="notifications_set", kw_only=True):
    """One member's delivery preferences: where alerts go, when not, in which language."""

    household: HouseholdId
    account: AccountId
    alert_email: EmailAddress | SealedField | None = None  # personal (sealed from v2); None: no email alerts to this member
    channels: tuple[Channel, ...] = ("push", "email")
    quiet_hours: QuietHours | None = None
    time_zone: Annotated[str, Meta(min_length=1, max_length=64)] = "Europe/Paris"
    language: Language = "fr"
    muted_kinds: tuple[AlertKind, ...] = ()
    at_ms: EpochMs


class HouseholdTariffSet(Record, tag="household_tariff_set", kw_only=True):
    """The household's contract: tariff option, subscribed power and the day its billing period starts."""

    household: HouseholdId
    tariff: Literal["base", "peak_offpeak", "tempo"]
    subscribed_kva: Annotated[int, Meta(ge=1, le=36)]
    billing_day: Annotated[int, Meta(ge=1, le=28)] = 1  # the period starts on this day of each month
    heating: Literal["electric", "other"] = "electric"  # how the home is heated (the app compares like with like)
    at_ms: EpochMs


AccountsEvent = Union[
    AccountCreated,
    EmailConfirmationIssued,
    EmailConfirmed,
    EmailChanged,
    PasswordChanged,
    SignedOutEverywhere,
    HouseholdCreated,
    InviteIssued,
    MemberJoined,
    MemberLeft,
    MeterPaired,
    MeterUnpaired,
    RoleGranted,
    RoleRevoked,
    MarketRoleGranted,
    MarketRoleRevoked,
    DeviceAdded,
    DeviceRemoved,
    NotificationsSet,
    HouseholdTariffSet,
]
# --- privacy: consent and erasure (docs/privacy.md) ---------------------------------------------
# Nothing personal in these records: a meter address is already the key of every meter topic, and a
# household id is a pseudonymous identifier whose link to a person lives only in the accounts' sealed
# fields, erased with the household's data key.

#: What is stored of a meter's readings: every reading (1 Hz), or one point per 30 minutes or per day.
Resolution = Literal["1hz", "30min", "daily"]


class HouseholdErased(Record, tag="household_erased", kw_only=True):
    """The erasure saga's last step on ``accounts.events``: the household, its members' accounts, its
    pairing (the meter can be paired again), devices, preferences and invitations leave the fold."""

    household: HouseholdId
    accounts: tuple[AccountId, ...]
    at_ms: EpochMs


#: The accounts' events and the erasure's last step, which the accounts fold applies too.
AccountsEvent = Union[AccountsEvent, HouseholdErased]  # type: ignore[misc]


class ResolutionChosen(Record, tag="resolution_chosen", kw_only=True):
    """The resolution a household chose for its meter's stored readings (compacted: the latest wins).

    The stream worker folds these: no 1 Hz point is stored for a meter whose household did not choose
    ``1hz``; alerts still run on the live stream, which is not stored.
    """

    meter: MeterId
    resolution: Resolution
    at_ms: EpochMs


class DataKeyErased(Record, tag="data_key_erased", kw_only=True):
    """A data key was destroyed (a household's, or one of its members' accounts'): replayed after any
    restore so the key never comes back."""

    owner: Annotated[str, Meta(pattern=r"^(hh|acct)_[0-9a-f]{16}$", description="a household or account id")]
    erased_ms: EpochMs


ErasureId = Annotated[str, Meta(pattern=r"^er_[0-9a-f]{16}$", description="an erasure id")]
StoreName = Literal["notifier", "market", "influx", "spool", "faust", "topics", "keys", "accounts"]


class StoreErasure(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What one store did for an erasure: counts of what it removed, by kind (rows, series, files...)."""

    store: StoreName
    erased: dict[str, int] = {}


class ErasureRequested(Record, tag="erasure_requested", kw_only=True):
    """A household asked to be forgotten (or an operator did for it): the erasure saga starts."""

    erasure: ErasureId
    household: HouseholdId
    by: Annotated[str, Meta(pattern=r"^(acct_[0-9a-f]{16}|cli)$")]
    at_ms: EpochMs


class ErasureStepDone(Record, tag="erasure_step_done", kw_only=True):
    """One store erased the household (a saga resumed after a crash skips the steps done)."""

    erasure: ErasureId
    household: HouseholdId
    step: StoreErasure
    at_ms: EpochMs


class ErasureCompleted(Record, tag="erasure_completed", kw_only=True):
    erasure: ErasureId
    household: HouseholdId
    stores: list[StoreErasure]
    requested_ms: EpochMs
    at_ms: EpochMs


PrivacyEvent = Union[DataKeyErased, ErasureRequested, ErasureStepDone, ErasureCompleted]


# --- households.alert_actions (the household app) -------------------------------------------
# What a household's members do with an alert episode in the app, keyed by meter: acknowledged
# ("seen, I am on it") and snoozed (no new episode of its kind notified, on any channel, until a
# time). Any member may.

AlertEpisodeId = Annotated[str, Meta(pattern=r"^[0-9a-f]{24}$", description="quartier.events.alert_id")]


class AlertAcknowledged(Record, tag="alert_acknowledged", kw_only=True):
    alert_id: AlertEpisodeId
    meter: MeterId
    household: HouseholdId
    by: AccountId  # the member's account id
    at_ms: EpochMs


class AlertSnoozed(Record, tag="alert_snoozed", kw_only=True):
    """No new episode of this kind on this meter is notified before ``until_ms`` (the notifier's
    ``Snooze`` stage); the episode's own resolution still is. v2 added ``kind``: a v1 record
    (``kind`` None) snoozes the notifications of its own episode only."""

    v: int = 2
    alert_id: AlertEpisodeId
    meter: MeterId
    household: HouseholdId
    kind: AlertKind | None = None
    by: AccountId
    until_ms: EpochMs  # no repeat of this episode's kind before then
    at_ms: EpochMs


AlertAction = Union[AlertAcknowledged, AlertSnoozed]


# --- encoding -------------------------------------------------------------------------------

_encoder = msgspec.json.Encoder()


def encode(record: msgspec.Struct) -> bytes:
    return _encoder.encode(record)


class ContractError(ValueError):
    """A message that does not satisfy its topic's contract; the message names the field."""


def decoder(record_type: object) -> "Decoder":
    return Decoder(record_type)


class Decoder:
    """Decodes one topic's messages, raising ContractError with msgspec's field path."""

    def __init__(self, record_type: object) -> None:
        self._decoder = msgspec.json.Decoder(record_type)

    def decode(self, data: bytes) -> object:
        try:
            return self._decoder.decode(data)
        except msgspec.ValidationError as exc:
            raise ContractError(_one_path(str(exc))) from None
        except msgspec.DecodeError as exc:
            raise ContractError(f"malformed JSON: {exc}") from None


_IN_FIELD = re.compile(r"(?P<what>.*) in `(?P<field>\w+)`(?: - at `(?P<at>\$[^`]*)`)?", re.DOTALL)


def _one_path(message: str) -> str:
    """A record's own check names its field (``... in `meter```) and msgspec adds the record's path
    (`` - at `$.readings[3]```): one path, the form of msgspec's own errors (``at `$.readings[3].meter```)."""
    found = _IN_FIELD.fullmatch(message)
    if found is None:
        return message
    return f"{found['what']} - at `{found['at'] or '$'}.{found['field']}`"


def shard_of(meter: str, shards: int) -> int:
    """A meter's shard: stable across processes and versions (crc32), so its readings stay ordered."""
    return zlib.crc32(meter.encode()) % shards
