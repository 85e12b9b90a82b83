"""The data map: every place that can hold personal data, what it is for, how long, how it is erased.

This module is the map; ``docs/privacy.md`` shows it (``python -m privacy.datamap`` rewrites the table
between its markers, and a test fails when the two differ). Another test fails when a record type
(``quartier.events``, ``quartier.sealing``), a table (the SQLModel metadata of every package), an
InfluxDB measurement (a module-level constant whose name contains ``MEASUREMENT``) or a topic
(``quartier.topics.ALL``) appears that the map does not classify: a new place for personal data is
classified before it ships.

Each entry names what kinds of personal data the place can hold (``personal``; empty: none), the
category a household's export and access log file it under (``category``), its purpose, its retention
and its erasure.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

# What a household's data is filed under, in the export and the access log: the access log's list (the
# core's, since the console writes the log too); every place of the map is filed under one of them.
from quartier.access_log import CATEGORIES

Kind = Literal["topic", "record", "table", "measurement", "file", "log"]

#: What kinds of personal data there are.
PERSONAL = frozenset({
    "email", "name", "device_token", "phone", "free_text", "meter_address", "readings", "preferences",
    "orders", "household_id", "account_id", "location",
})

KAFKA_LOG = "Kafka: kept for replay (no retention on the embedded broker)"
NOT_PERSONAL = "nothing to erase (no personal data)"


@dataclass(frozen=True)
class Place:
    kind: Kind
    name: str
    personal: tuple[str, ...]
    category: str | None
    purpose: str
    retention: str
    erasure: str

    def __post_init__(self) -> None:
        unknown = set(self.personal) - PERSONAL
        if unknown:
            raise ValueError(f"{self.name}: personal: unknown kinds {sorted(unknown)}")
        if self.category is not None and self.category not in CATEGORIES:
            raise ValueError(f"{self.name}: category: unknown {self.category!r}")


R, T, TB, M, F, L = "record", "topic", "table", "measurement", "file", "log"
SEALED = "sealed from v2: unreadable once the key is erased"
READINGS_ERASE = "InfluxDB: DELETE of the meter's series in every policy; the topic keeps them (see erasure)"

MAP: tuple[Place, ...] = (
    # --- topics ---------------------------------------------------------------------------------
    Place(T, "meter.readings", ("meter_address", "readings"), "readings",
          "the ingest path: 1 Hz Linky frames", KAFKA_LOG, READINGS_ERASE),
    Place(T, "meter.readings.rejected", ("meter_address", "readings"), "readings",
          "what failed the contract, with its reason", KAFKA_LOG, READINGS_ERASE),
    Place(T, "meter.telemetry", ("meter_address",), "telemetry",
          "Wi-Fi module health for the operator console", KAFKA_LOG, "the meter's link to a household is erased"),
    Place(T, "meter.slots", ("meter_address", "readings"), "readings",
          "15-minute energy per meter for the market", KAFKA_LOG, "the meter's link to a household is erased"),
    Place(T, "alerts.rules", ("meter_address", "preferences"), "rules",
          "the household's alert preferences", KAFKA_LOG + "; compacted", "a tombstone for the meter"),
    Place(T, "alerts.events", ("meter_address",), "alerts",
          "alert episodes", KAFKA_LOG, "the meter's link to a household is erased"),
    Place(T, "notifications.deliveries", (), "deliveries",
          "delivery outcomes; recipients as hashes only", KAFKA_LOG, NOT_PERSONAL),
    Place(T, "market.events", ("meter_address", "orders"), "trades",
          "the market's log; participants are pseudonymous household ids", KAFKA_LOG + " (accounting)",
          "kept for accounting: the participant id's link to a person is erased with the household's key"),
    Place(T, "meter.resolution", ("meter_address", "preferences"), "consent",
          "the stored resolution each household chose", KAFKA_LOG + "; compacted", "a tombstone for the meter"),
    Place(T, "accounts.events", ("email", "name", "device_token", "household_id", "account_id", "meter_address",
                                  "preferences"), "profile",
          "people, households, pairings, roles, devices, delivery preferences", KAFKA_LOG,
          "personal fields sealed (accounts/sealed.py): the owners' keys destroyed; HouseholdErased drops the rest"),
    Place(T, "privacy.erasures", ("household_id",), None,
          "erasure records, replayed after any restore", "forever: it is what keeps a key erased", NOT_PERSONAL),
    Place(T, "<app>-alert_state-changelog", ("meter_address",), "alerts",
          "Faust changelog of the alert engine's per-meter state", KAFKA_LOG, "a tombstone for the meter's key"),
    # --- operator console (firmware roll-outs) and the household app's alert actions ---
    Place(T, "devices.events", ("meter_address", "account_id"), "telemetry",
          "firmware catalogue and roll-out campaigns: which modules were updated, by which operator", KAFKA_LOG,
          "the meter's link to a household is erased; operators are staff accounts"),
    Place(T, "devices.commands", ("meter_address",), "telemetry", "update requests to modules", KAFKA_LOG,
          "the meter's link to a household is erased"),
    Place(T, "households.alert_actions", ("meter_address", "household_id", "account_id"), "alerts",
          "members acknowledging or snoozing an alert episode (the app's history; the notifier's snoozes, in memory)", KAFKA_LOG,
          "the household id's link to a person is erased with the household's key"),
    # --- records (quartier.events, quartier.sealing) -----------------------------------------------
    Place(R, "MeterReading", ("meter_address", "readings"), "readings", "one Linky frame", "as its topic", "as its topic"),
    Place(R, "ReadingBatch", ("meter_address", "readings"), "readings", "a shard's readings", "as its topic", "as its topic"),
    Place(R, "DeviceTelemetry", ("meter_address",), "telemetry", "module health", "as its topic", "as its topic"),
    Place(R, "RejectedReading", ("meter_address", "readings"), "readings", "a refused message", "as its topic", "as its topic"),
    Place(R, "SlotEnergy", ("meter_address", "readings"), "readings", "energy per slot", "as its topic", "as its topic"),
    Place(R, "AlertRules", ("meter_address", "preferences"), "rules", "alert preferences", "as its topic", "as its topic"),
    Place(R, "AlertEvent", ("meter_address",), "alerts", "an alert transition", "as its topic", "as its topic"),
    Place(R, "Delivery", (), "deliveries", "a delivery outcome (hashed recipient)", "as its topic", NOT_PERSONAL),
    Place(R, "ZoneConfigured", (), None, "a zone's trading rules", "as its topic", NOT_PERSONAL),
    Place(R, "ParticipantRegistered", ("meter_address", "household_id"), "trades", "a household joins its zone's market",
          "as its topic", "as its topic"),
    Place(R, "ParticipantChanged", ("household_id",), "trades", "a participant's roles or capacity change",
          "as its topic", "as its topic"),
    Place(R, "ParticipantLeft", ("household_id",), "trades", "a participant leaves its zone's market (erasure too)",
          "as its topic", "as its topic"),
    Place(R, "OfferListed", ("household_id", "orders"), "trades", "an offer", "as its topic", "as its topic"),
    Place(R, "OfferAmended", ("orders",), "trades", "an offer's new terms", "as its topic", "as its topic"),
    Place(R, "OfferWithdrawn", (), "trades", "an offer leaves", "as its topic", NOT_PERSONAL),
    Place(R, "OrderPlaced", ("household_id", "orders"), "trades", "an order", "as its topic", "as its topic"),
    Place(R, "OrderCancelled", (), "trades", "a bid withdrawn", "as its topic", NOT_PERSONAL),
    Place(R, "Trade", ("orders",), "trades", "a match", "as its topic", "as its topic"),
    Place(R, "SlotClosed", ("orders",), "trades", "gate closure and clearing", "as its topic", "as its topic"),
    Place(R, "TradeDelivery", ("orders",), "trades", "what a trade delivered", "as its topic", "as its topic"),
    Place(R, "Allocated", ("meter_address", "orders"), "trades", "a slot's deliveries", "as its topic", "as its topic"),
    Place(R, "SettlementSubmitted", (), None, "a settlement transaction", "as its topic", NOT_PERSONAL),
    Place(R, "SettlementConfirmed", (), None, "a settlement's block", "as its topic", NOT_PERSONAL),
    Place(R, "ResolutionChosen", ("meter_address", "preferences"), "consent", "a consent choice", "as its topic", "as its topic"),
    Place(R, "DataKeyErased", ("household_id", "account_id"), None, "an erasure record", "as its topic", NOT_PERSONAL),
    # accounts.events (sealed fields: accounts/sealed.py)
    Place(R, "AccountCreated", ("email", "name", "account_id"), "profile", "a person signs up", "as its topic", SEALED),
    Place(R, "EmailConfirmationIssued", ("account_id",), "profile", "a confirmation link's digest", "as its topic", NOT_PERSONAL),
    Place(R, "EmailConfirmed", ("account_id",), "profile", "the address confirmed", "as its topic", NOT_PERSONAL),
    Place(R, "EmailChanged", ("email", "account_id"), "profile", "a new sign-in address", "as its topic", SEALED),
    Place(R, "PasswordChanged", ("account_id",), "profile", "a new argon2id hash", "as its topic", NOT_PERSONAL),
    Place(R, "SignedOutEverywhere", ("account_id",), "profile", "sessions revoked", "as its topic", NOT_PERSONAL),
    Place(R, "HouseholdCreated", ("name", "household_id", "account_id"), "profile", "a household", "as its topic", SEALED),
    Place(R, "InviteIssued", ("household_id", "account_id"), "profile", "an invitation's digest", "as its topic", NOT_PERSONAL),
    Place(R, "MemberJoined", ("household_id", "account_id"), "profile", "a member joins", "as its topic", NOT_PERSONAL),
    Place(R, "MemberLeft", ("household_id", "account_id"), "profile", "a member leaves", "as its topic", NOT_PERSONAL),
    Place(R, "MeterPaired", ("household_id", "meter_address", "location"), "profile", "a meter paired (zone)",
          "as its topic", "HouseholdErased unpairs it"),
    Place(R, "MeterUnpaired", ("household_id", "meter_address"), "profile", "a meter unpaired", "as its topic", NOT_PERSONAL),
    Place(R, "RoleGranted", ("account_id",), None, "a staff role", "as its topic", NOT_PERSONAL),
    Place(R, "RoleRevoked", ("account_id",), None, "a staff role removed", "as its topic", NOT_PERSONAL),
    Place(R, "MarketRoleGranted", ("household_id",), "trades", "market participation", "as its topic", NOT_PERSONAL),
    Place(R, "MarketRoleRevoked", ("household_id",), "trades", "market participation ends", "as its topic", NOT_PERSONAL),
    Place(R, "DeviceAdded", ("device_token", "household_id", "account_id"), "devices", "a phone's push token",
          "as its topic", SEALED),
    Place(R, "DeviceRemoved", ("household_id",), "devices", "a phone removed", "as its topic", NOT_PERSONAL),
    Place(R, "NotificationsSet", ("email", "preferences", "household_id", "account_id"), "contacts",
          "delivery preferences", "as its topic", SEALED + " (alert_email)"),
    Place(R, "HouseholdTariffSet", ("household_id", "preferences"), "profile", "the contract", "as its topic",
          "HouseholdErased drops it from the read models"),
    Place(R, "HouseholdErased", ("household_id",), None, "the accounts fold forgets the household", "as its topic",
          NOT_PERSONAL),
    Place(R, "ErasureRequested", ("household_id",), None, "the erasure saga starts", "as its topic", NOT_PERSONAL),
    Place(R, "ErasureStepDone", ("household_id",), None, "one store erased", "as its topic", NOT_PERSONAL),
    Place(R, "ErasureCompleted", ("household_id",), None, "every store erased", "as its topic", NOT_PERSONAL),
    Place(R, "StoreErasure", (), None, "what one store did (counts)", "as its record", NOT_PERSONAL),
    Place(R, "SealedField", ("household_id",), None,
          "a personal value encrypted under its household's key", "as the record holding it",
          "unreadable once the household's key is erased"),
    # devices.events, devices.commands (console/)
    Place(R, "FirmwareReleased", (), None, "a firmware in the catalogue", "as its topic", NOT_PERSONAL),
    Place(R, "ModuleGroup", ("meter_address",), "telemetry", "a campaign's target (may list meters)", "as its topic", "as its topic"),
    Place(R, "PhasePlan", (), None, "a campaign phase's plan", "as its topic", NOT_PERSONAL),
    Place(R, "HealthGuard", (), None, "a campaign's pause thresholds", "as its topic", NOT_PERSONAL),
    Place(R, "CampaignCreated", ("meter_address",), "telemetry", "a roll-out campaign", "as its topic", "as its topic"),
    Place(R, "PhaseStarted", (), None, "a phase starts", "as its topic", NOT_PERSONAL),
    Place(R, "ModulesAssigned", ("meter_address",), "telemetry", "the modules of a phase", "as its topic", "as its topic"),
    Place(R, "UpdateRequested", ("meter_address",), "telemetry", "a module asked to update", "as its topic", "as its topic"),
    Place(R, "ModuleUpdated", ("meter_address",), "telemetry", "a module reports the new firmware", "as its topic", "as its topic"),
    Place(R, "UpdateFailed", ("meter_address",), "telemetry", "an update that failed", "as its topic", "as its topic"),
    Place(R, "CampaignPaused", ("account_id",), None, "a pause, by an operator or the health guard", "as its topic", NOT_PERSONAL),
    Place(R, "CampaignResumed", ("account_id",), None, "a resume by an operator", "as its topic", NOT_PERSONAL),
    Place(R, "CampaignAborted", ("account_id",), None, "an abort by an operator", "as its topic", NOT_PERSONAL),
    Place(R, "CampaignRolledBack", ("account_id",), None, "a roll-back by an operator", "as its topic", NOT_PERSONAL),
    Place(R, "CampaignCompleted", (), None, "a campaign done", "as its topic", NOT_PERSONAL),
    Place(R, "FirmwareUpdateCommand", ("meter_address",), "telemetry", "the request a module obeys", "as its topic", "as its topic"),
    # households.alert_actions (households/)
    Place(R, "AlertAcknowledged", ("meter_address", "household_id", "account_id"), "alerts", "a member saw an alert",
          "as its topic", "the household id's link to a person is erased with its key"),
    Place(R, "AlertSnoozed", ("meter_address", "household_id", "account_id"), "alerts", "a member snoozed an alert",
          "as its topic", "the household id's link to a person is erased with its key"),
    # --- tables --------------------------------------------------------------------------------------
    Place(TB, "notifier_user", ("email", "preferences"), "contacts", "who hears of an alert, in which language, when",
          "while the household has the service", "rows of the household's users deleted (SQLite secure_delete)"),
    Place(TB, "notifier_meter", ("meter_address",), "contacts", "which user a meter's alerts go to",
          "while paired", "rows of the meter deleted"),
    Place(TB, "notifier_device", ("device_token",), "devices", "push tokens", "until unregistered",
          "rows of the household's users deleted"),
    Place(TB, "notifier_pending", ("email", "device_token", "meter_address"), "deliveries",
          "notifications held for quiet hours or a retry", "until sent or given up", "rows of the household deleted"),
    Place(TB, "notifier_sent", (), "deliveries", "the dedup log (hashed recipients)", "the dedup window",
          "rows of the household's alerts deleted"),
    Place(TB, "market_zone", (), None, "zones", "while the zone trades", NOT_PERSONAL),
    Place(TB, "market_participant", ("meter_address", "household_id"), "trades", "the market's participants",
          "rebuilt from market.events",
          "the meter column of the household's row blanked; then participant_left (the market's accounts feed) blanks it in every rebuild"),
    Place(TB, "market_slot", ("meter_address",), "trades", "slots; missing meters", "rebuilt from market.events",
          "the meter removed from missing_meters"),
    Place(TB, "market_offer", ("household_id", "orders"), "trades", "offers", "rebuilt from market.events", "kept (accounting, pseudonymous)"),
    Place(TB, "market_order", ("household_id", "orders"), "trades", "orders", "rebuilt from market.events", "kept (accounting, pseudonymous)"),
    Place(TB, "market_trade", ("household_id", "orders"), "trades", "trades", "rebuilt from market.events", "kept (accounting, pseudonymous)"),
    Place(TB, "market_position", (), None, "the read models' log offsets", "always", NOT_PERSONAL),
    Place(TB, "market_api_token", ("household_id",), None, "hashes of market bearer tokens", "until revoked",
          "rows of the household deleted"),
    Place(TB, "privacy_access_log", ("household_id", "account_id"), "access_log",
          "who read a household's data, when, what, why (hash-chained)", "forever (accountability)",
          "kept: pseudonymous ids only, the chain must verify after an erasure"),
    Place(TB, "privacy_access_log_head", (), None, "the access log's last entry", "always", NOT_PERSONAL),
    Place(TB, "privacy_scheduler_jobs", (), None, "APScheduler's privacy jobs", "always", NOT_PERSONAL),
    Place(TB, "data_keys", ("household_id", "account_id"), None, "household and account data keys, wrapped (quartier/sealing.py)",
          "until the household is erased", "row deleted with secure_delete, WAL truncated"),
    Place(TB, "erased_owners", ("household_id", "account_id"), None, "households and accounts that may never get a key again",
          "forever", NOT_PERSONAL),
    # --- accounts ---
    Place(TB, "accounts_account", ("email", "name", "account_id", "household_id"), "profile",
          "people: sign-in address, name, password hash, roles, household", "rebuilt from accounts.events",
          "the account's row deleted (SQLite secure_delete)"),
    Place(TB, "accounts_household", ("name", "meter_address", "location", "preferences", "household_id"), "profile",
          "households: meter, zone, market roles, contract", "rebuilt from accounts.events", "the household's row deleted"),
    Place(TB, "accounts_pairing", ("meter_address", "household_id"), "profile", "which household a meter belongs to",
          "while paired", "the meter's row deleted"),
    Place(TB, "accounts_device", ("device_token", "household_id", "account_id"), "devices", "members' phones",
          "until removed or unregistered", "the household's rows deleted"),
    Place(TB, "accounts_preferences", ("email", "preferences", "household_id", "account_id"), "contacts",
          "members' delivery preferences", "rebuilt from accounts.events", "the household's rows deleted"),
    Place(TB, "accounts_email_token", ("account_id",), "profile", "digests of confirmation tokens", "until used or expired",
          "the account's rows deleted"),
    Place(TB, "accounts_invite", ("household_id", "account_id"), "profile", "digests of invitation codes",
          "until used or expired", "the household's rows deleted"),
    Place(TB, "accounts_position", (), None, "the read models' log offset", "always", NOT_PERSONAL),
    Place(TB, "accounts_follower", (), None, "the log offset each API process has applied (erasure waits on it)",
          "while the process runs", NOT_PERSONAL),
    Place(TB, "accounts_credential", ("account_id",), "profile", "digests of sessions and refresh tokens",
          "until expired or revoked", "the account's rows deleted"),
    # --- InfluxDB measurements -----------------------------------------------------------------------
    Place(M, "reading", ("meter_address", "readings"), "readings", "1 Hz readings (only meters that chose 1 Hz)",
          "raw policy (30 days)", "DELETE FROM reading WHERE meter = the meter"),
    Place(M, "reading_10m", ("meter_address", "readings"), "readings", "10-minute rollup of 1 Hz readings",
          "365 days, then zone aggregates (privacy/anonymise.py)", "DELETE WHERE meter = the meter"),
    Place(M, "reading_30m", ("meter_address", "readings"), "readings", "30-minute points of meters that chose them",
          "365 days, then zone aggregates", "DELETE WHERE meter = the meter"),
    Place(M, "reading_1d", ("meter_address", "readings"), "readings", "daily points of meters that chose them",
          "365 days, then zone aggregates", "DELETE WHERE meter = the meter"),
    Place(M, "alert", ("meter_address",), "alerts", "alert history for charts", "raw policy (30 days)",
          "DELETE WHERE meter = the meter"),
    Place(M, "market_slot", (), None, "prices and volumes per zone and slot", "rollup policy", NOT_PERSONAL),
    Place(M, "zone_reading_30m", (), None,
          "anonymised aggregates: per zone and 30 minutes, count, sum and sum of squares over at least 50 homes",
          "rollup policy", NOT_PERSONAL),
    # --- files and logs ------------------------------------------------------------------------------
    Place(F, "<state_dir>/*.db, -wal, -shm, -journal", ("email", "device_token", "meter_address"), None,
          "the SQLite databases of the tables above", "as their tables",
          "secure_delete on; a checkpoint(TRUNCATE) after an erasure empties the WAL"),
    Place(F, "<state_dir>/console/<prefix>projection.npz", ("meter_address",), "telemetry",
          "the console's fleet projection, snapshotted with the offsets it reflects", "rewritten every minute",
          "the meter's link to a household is erased (the projection holds modules, not people)"),
    Place(F, "<state_dir>/privacy/kek", (), None, "the key wrapping data keys at rest", "always", NOT_PERSONAL),
    Place(F, "<state_dir>/influx-spool/", ("meter_address", "readings"), "readings",
          "line protocol waiting while InfluxDB is slow", "until InfluxDB takes it", "spooled lines of the meter removed"),
    Place(F, "<state_dir>/faust/", ("meter_address",), "alerts", "Faust's data directory", "as the changelog",
          "rebuilt from the changelog after its tombstone"),
    Place(F, "notifier sent journal", (), "deliveries", "the dedup journal (hashed recipients)", "rotated at 4 MB",
          NOT_PERSONAL),
    Place(F, "InfluxDB data, wal, meta", ("meter_address", "readings"), "readings", "InfluxDB's own files",
          "as the measurements", "the series deleted; compaction rewrites the TSM files"),
    Place(F, "anvil chain state", (), "trades", "settlement transactions: pseudonymous custodial addresses",
          "forever", NOT_PERSONAL),
    Place(F, "local SMTP Maildir, FCM endpoint store", ("email", "device_token"), "deliveries",
          "the development stack's inboxes (not production)", "until the stack is reset", "the household's files deleted"),
    Place(L, "worker and service logs", ("meter_address",), None,
          "operations: warnings name a meter id, never an email, name or token", "rotated by the host",
          "meter ids only; no personal value is ever logged"),
)


def classified(kind: Kind) -> set[str]:
    return {place.name for place in MAP if place.kind == kind}


def place(name: str) -> Place:
    return next(p for p in MAP if p.name == name)


# --- the document ---------------------------------------------------------------------------------

DOC = Path(__file__).resolve().parent.parent / "docs" / "privacy.md"
BEGIN, END = "<!-- datamap:begin (python -m privacy.datamap) -->", "<!-- datamap:end -->"


def table() -> str:
    rows = ["| kind | name | personal data | category | purpose | kept | erasure |", "|---|---|---|---|---|---|---|"]
    for p in MAP:
        rows.append(
            f"| {p.kind} | `{p.name}` | {', '.join(p.personal) or 'none'} | {p.category or '-'} | {p.purpose} "
            f"| {p.retention} | {p.erasure} |"
        )
    return "\n".join(rows)


def render(document: str) -> str:
    """``document`` with the table between the markers replaced by the map."""
    head, rest = document.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{table()}\n{END}{tail}"


if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else DOC
    path.write_text(render(path.read_text()))
    print(path)
