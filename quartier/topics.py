"""Topic declarations: the one place that names every Kafka topic, its key, record and partitions.

The embedded broker auto-creates an unknown topic with 4 partitions that can never change, so every
topic here (and every Faust changelog, declared by the streams package) is created with its declared
partition count before any client touches it.
"""

from __future__ import annotations

from dataclasses import dataclass

from quartier import events


@dataclass(frozen=True)
class Topic:
    name: str
    partitions: int
    key: str
    record: object
    compacted: bool = False
    description: str = ""


METER_READINGS = Topic(
    "meter.readings", 8, "shard", events.IngestMessage,
    description="One reading or a batch of one shard's readings; 1 Hz per meter.",
)
METER_READINGS_REJECTED = Topic(
    "meter.readings.rejected", 2, "meter id or none", events.RejectedReading,
    description="Messages that failed the contract or physics, with the reason and source offset.",
)
METER_TELEMETRY = Topic(
    "meter.telemetry", 2, "meter id", events.DeviceTelemetry,
    description="Wi-Fi module health (RSSI, firmware, uptime), at a lower rate than readings.",
)
METER_SLOTS = Topic(
    "meter.slots", 8, "meter id", events.SlotEnergy,
    description="Imported and exported Wh per meter and 15-minute slot, from index differences.",
)
ALERTS_RULES = Topic(
    "alerts.rules", 8, "meter id", events.AlertRules, compacted=True,
    description="Each household's alert preferences; the latest record per meter wins.",
)
ALERTS_EVENTS = Topic(
    "alerts.events", 8, "meter id", events.AlertEvent,
    description="Alert episodes: one raised and one resolved event each, deterministic ids.",
)
NOTIFICATIONS_DELIVERIES = Topic(
    "notifications.deliveries", 4, "alert id", events.Delivery,
    description="Every delivery attempt's outcome, per channel.",
)
MARKET_EVENTS = Topic(
    "market.events", 4, "zone", events.MarketEvent,
    description="The market's log: offers, orders, slot closing, allocation, settlement.",
)
# --- operator console (firmware roll-outs) ---
DEVICES_EVENTS = Topic(
    "devices.events", 4, "campaign id (firmware entries: version)", events.DeviceEvent,
    description="Firmware catalogue and roll-out campaigns: phases, requests, outcomes, pauses.",
)
DEVICES_COMMANDS = Topic(
    "devices.commands", 4, "meter id", events.DeviceCommand,
    description="Update requests to Wi-Fi modules, from the campaign runner.",
)
# --- accounts.events ---
# One partition: uniqueness spans households (an email, a meter), so the one writer checks every
# command against one total order; sign-ups and pairings come at a human rate.
ACCOUNTS_EVENTS = Topic(
    "accounts.events", 1, "household id (an account id before the account has a household)", events.AccountsEvent,
    description="People, households, pairings, roles, devices and delivery preferences.",
)

# --- privacy (docs/privacy.md) ---
METER_RESOLUTION = Topic(
    "meter.resolution", 2, "meter id", events.ResolutionChosen, compacted=True,
    description="The stored resolution each household chose for its meter (1 Hz, 30 minutes, daily); the latest wins.",
)
PRIVACY_ERASURES = Topic(
    "privacy.erasures", 2, "household id", events.PrivacyEvent,
    description="Erasure records (a household id and a time, nothing personal), replayed after any restore.",
)

# --- the household app ----------------------------------------------------------------------
HOUSEHOLDS_ALERT_ACTIONS = Topic(
    "households.alert_actions", 4, "meter id", events.AlertAction,
    description="What household members did with an alert episode in the app: acknowledged, snoozed.",
)

ALL: tuple[Topic, ...] = (
    METER_READINGS,
    METER_READINGS_REJECTED,
    METER_TELEMETRY,
    METER_SLOTS,
    ALERTS_RULES,
    ALERTS_EVENTS,
    NOTIFICATIONS_DELIVERIES,
    MARKET_EVENTS,
    # operator console
    DEVICES_EVENTS,
    DEVICES_COMMANDS,
    ACCOUNTS_EVENTS,  # accounts.events
    # privacy
    METER_RESOLUTION,
    PRIVACY_ERASURES,
    HOUSEHOLDS_ALERT_ACTIONS,
)

# --- durable log and bounded memory (issue 12) ------------------------------------------------------

#: Time retention (ms) of the bulky streams. InfluxDB holds every reading, so the log only has to
#: keep them long enough for a stopped worker to catch up. Apache Kafka applies it as the topic's
#: ``retention.ms``; on the embedded broker, which applies no retention, the local stack's
#: :mod:`quartier.stack.retention` drops their record batches once older and consumed. Every other
#: topic is a record of truth (the market's and the accounts' events, alert rules, changelogs) and
#: is kept for ever.
RETAINED_MS: dict[str, int] = {
    METER_READINGS.name: 2 * 3600 * 1000,
    METER_TELEMETRY.name: 2 * 3600 * 1000,
}
