"""Quartier's settings: environment variables, an optional TOML file, then the running local stack.

Precedence, highest first:
1. arguments passed to ``Settings(...)`` (tests, CLI flags);
2. environment variables, ``QUARTIER_`` prefix, ``__`` between section and field
   (``QUARTIER_KAFKA__BOOTSTRAP=broker:9092``);
3. the TOML file named by ``QUARTIER_CONFIG`` (default ``quartier.toml`` in the working directory, if present);
4. the addresses the local stack recorded when it started (``<state_dir>/stack.json``), so that every
   command finds the broker, InfluxDB, SMTP, FCM endpoint and chain on whatever free ports they got;
5. the defaults below, which work for a local run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

STACK_FILE = "stack.json"


def default_state_dir() -> Path:
    return Path(os.environ.get("QUARTIER_STATE_DIR", Path.cwd() / ".state"))


class KafkaSettings(BaseModel):
    bootstrap: str = "127.0.0.1:9092"
    # "tansu" turns on the corrections the embedded broker needs (see docs/operations.md);
    # "kafka" is any Apache Kafka compatible cluster that answers ListOffsets correctly.
    flavour: Literal["tansu", "kafka"] = "tansu"
    # Prefix for every topic name, so tests and demo runs get their own topics on one broker.
    topic_prefix: str = ""
    # Tansu completes the first group join after half the session timeout: keep it short locally.
    session_timeout_s: float = 6.0
    # Tansu answers a Fetch that found records only after sleeping half the request's remaining
    # max wait (all of it below 250 ms; tansu-storage 0.6.0, service/fetch.rs), so the max wait is a
    # delay on every fetch there, not a bound for an idle one as on Kafka: Faust's 1,500 ms made each
    # fetch of the stream workers take 750 ms. Applied to every consumer when the flavour is "tansu".
    fetch_max_wait_ms: int = 200
    reading_shards: int = 32


class InfluxSettings(BaseModel):
    url: str = "http://127.0.0.1:8086"
    # "v1": line protocol on /write and InfluxQL on /query (InfluxDB 1.x, 2.x, 3.x).
    # "v2": influxdb-client's /api/v2/write (InfluxDB 2.x, 3.x, VictoriaMetrics).
    api: Literal["v1", "v2"] = "v1"
    database: str = "quartier"
    username: str = ""
    password: str = ""
    token: str = ""
    org: str = "quartier"
    raw_retention: str = "30d"
    rollup_retention: str = "1825d"
    # --- clients (headroom): what a reading point carries. "full": every field of every reading.
    # "changed": per-register indexes and the tariff register only when they change, injection fields
    # only for meters that inject, a full point per meter every 10 minutes (1.8 times fewer field
    # values, half influxd's CPU per point: docs/pipeline.md). Not the default while readers take a
    # raw point's fields at its own time (households/indexes.py's latest and raw bucket starts,
    # households/export.py's raw rows): they must read the latest value at or before it first.
    reading_points: Literal["changed", "full"] = "full"
    # The stream worker's writer of readings: points per request, and how many may wait in memory
    # (while InfluxDB is slow or away) before batches spill to the spool on disk (streams/influx_writer.py).
    batch_points: int = 5000
    max_buffered_points: int = 2_000_000


class SmtpSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8025
    username: str = ""
    password: str = ""
    starttls: bool = False
    sender: str = "Quartier <alerts@quartier.local>"
    # CA bundle (PEM) that signs the server's certificate; empty means the system's trust store.
    # The local stack writes its self-signed certificate here so clients verify it, not skip it.
    ca_file: str = ""
    # Where the local SMTP server stores what it receives (a Maildir), so the demo can read it.
    maildir: str = ""


class FcmSettings(BaseModel):
    # The HTTP v1 send URL with the project id as {0}; the real service is
    # https://fcm.googleapis.com/v1/projects/{0}/messages:send
    endpoint: str = "http://127.0.0.1:8099/v1/projects/{0}/messages:send"
    project_id: str = "quartier-local"
    credentials_file: str = ""


class NotifierSettings(BaseModel):
    # Alerts of one user within this window become one message once there are group_min_alerts
    # distinct episodes among them (a storm); fewer go out one by one.
    group_window_s: float = Field(0.25, ge=0, le=60)
    group_min_alerts: int = Field(3, ge=2)
    # Flood guard per user and channel: raised notifications per hour (resolutions always pass).
    user_raised_per_hour: int = Field(30, ge=1)
    # Provider quotas, paced globally (FCM's default project quota is 600,000 a minute).
    push_per_s: float = Field(10_000, gt=0)
    email_per_s: float = Field(2_000, gt=0)
    # Transient failures are tried again after base * 2^(attempt-1) s (with jitter, at least the
    # Retry-After announced), up to max_attempts attempts in all.
    retry_base_s: float = Field(2.0, gt=0)
    retry_max_s: float = Field(300.0, gt=0)
    max_attempts: int = Field(6, ge=1)
    # Processes sending pushes, each with push_threads threads and its own interpreter lock (one
    # process tops out near 1,000 pushes/s here: docs/notifier.md); 1 sends from the notifier itself.
    # processes x threads is also how many pushes may be in flight at a kill (sent twice at worst).
    push_processes: int = Field(2, ge=1, le=32)
    push_threads: int = Field(16, ge=1, le=500)
    # SMTP connections sending at once: each mail is four round trips, so more connections keep the
    # server busy while each waits (8 -> 16: about 5-15% more mails/s here, docs/notifier.md).
    email_connections: int = Field(16, ge=1, le=64)


class ChainSettings(BaseModel):
    rpc_url: str = "http://127.0.0.1:8545"
    chain_id: int = 31337
    # Hex private keys of the market's admin (deploys, mints on test chains, pauses) and of the
    # settlement oracle. Empty: the public dev accounts 0 and 1, accepted on dev chains only.
    admin_key: str = ""
    oracle_key: str = ""


class MarketSettings(BaseModel):
    # A closed slot is allocated this long after its end once every meter of its trades reported
    # the whole slot, or at the deadline with what arrived.
    settlement_grace_s: int = Field(60, ge=0)
    settlement_deadline_s: int = Field(3600, ge=0)
    # `quartier market api` takes slots to the chain (chain.*, the deployment `quartier chain deploy`
    # recorded under state_dir); when the chain or the deployment is missing it retries, allocating meanwhile.
    settle_on_chain: bool = True
    # Each participant's custodial chain account is derived from this secret and its id. Empty: a
    # public dev secret, accepted on dev chains only.
    custody_secret: str = ""
    # On a dev chain, euro cents minted to a custodial account whose balance is short of an order
    # (and gas given to it on anvil).
    dev_mint_cents: int = Field(1_000_000, ge=0)
    # Drills and replayed days only: the market's "now" is the integer (ms since the epoch) this file
    # holds, moved by whoever writes it (marketplace.clock.FileClock). Unset: the system clock.
    clock_file: Path | None = None

    @model_validator(mode="after")
    def _deadline_after_grace(self) -> "MarketSettings":
        if self.settlement_deadline_s < self.settlement_grace_s:
            raise ValueError(
                f"market.settlement_deadline_s ({self.settlement_deadline_s}) must not be before "
                f"market.settlement_grace_s ({self.settlement_grace_s})"
            )
        return self


# --- operator console ---
class ConsoleSettings(BaseModel):
    # The campaign runner's clock: "wall" (real time), or "fleet": the newest meter time seen on
    # meter.readings, so a simulator running faster than real time runs roll-outs as fast (tests).
    clock: Literal["wall", "fleet"] = "wall"
    # How often (wall seconds) the projection judges connectivity and percentiles, and the runner ticks.
    refresh_s: float = Field(2.0, gt=0)
    tick_s: float = Field(1.0, gt=0)
    # Local time of the fleet: daily energy and the roll-out window.
    time_zone: str = "Europe/Paris"
    # Where the projection starts on meter.readings when it has no snapshot: "earliest" rebuilds
    # history from the log, "latest" follows from now.
    readings_from: Literal["earliest", "latest"] = "earliest"
    # How often (wall seconds) the projection is written to <state_dir>/console/ with the offsets it
    # reflects; a restart resumes from it (readings are retained only 2 hours on the log).
    snapshot_s: float = Field(60.0, gt=0)


# --- accounts settings ----------------------------------------------------------------------


class AccountsSettings(BaseModel):
    # The fleet secret each Wi-Fi module's pairing code is derived from (quartier/pairing.py).
    # Empty: a public dev secret, fine for the simulator's fleets only.
    pairing_secret: str = ""
    # Signs access tokens (HS256). Empty: a random secret per state directory (accounts/keys.py).
    token_secret: str = ""
    # Where people open the web app; the confirmation link starts with it.
    public_url: str = "http://127.0.0.1:8000"
    confirmation_ttl_s: int = Field(48 * 3600, ge=60)
    invite_ttl_s: int = Field(7 * 24 * 3600, ge=60)
    session_ttl_s: int = Field(30 * 24 * 3600, ge=60)
    access_token_ttl_s: int = Field(900, ge=10, le=86_400)
    refresh_token_ttl_s: int = Field(30 * 24 * 3600, ge=60)
    # Sign-in attempts allowed per window, per account and per client address (the `limits`
    # package's moving window); beyond them a 429 with Retry-After, whatever the password.
    sign_in_per_account: int = Field(10, ge=1)
    sign_in_per_address: int = Field(50, ge=1)
    sign_in_window_s: int = Field(300, ge=1)
    # Cookies get the Secure flag when the app is served over TLS (or this forces it).
    secure_cookies: bool = False
# --- privacy (docs/privacy.md) ---
class PrivacySettings(BaseModel):
    # The household data keys (quartier.sealing); empty: <state_dir>/privacy/keys.db.
    key_store: str = ""
    # 64 hex digits wrapping every data key at rest; empty: a random one in <state_dir>/privacy/kek.
    key_encryption_key: str = ""
    # Stored resolution of a meter whose household has not chosen one yet. "1hz" keeps today's
    # behaviour for meters paired before consent existed; a deployment asking consent first sets "daily".
    default_resolution: Literal["1hz", "30min", "daily"] = "1hz"
    # Detailed readings older than this become zone aggregates of at least min_group_homes homes.
    anonymise_after_days: int = Field(365, ge=1)
    min_group_homes: int = Field(50, ge=2)
    anonymise_interval_s: float = Field(86_400.0, gt=0)
    # The stream worker's Faust app id, whose alert_state changelog gets the erased meter's tombstones;
    # empty: the default of quartier streams worker (<topic prefix>quartier-streams).
    streams_app_id: str = ""


# --- API layer (api/): the one HTTP process serving every surface ---
class ApiSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    # Largest request body an operation takes unless it declares its own (413 beyond, before reading).
    max_body_bytes: int = Field(1_048_576, ge=1)
    # Longest query string (414 beyond).
    max_query_bytes: int = Field(4096, ge=1)
    # Requests per minute per signed-in principal, and per client address for anonymous requests (429 beyond).
    requests_per_minute: int = Field(1200, ge=1)
    anonymous_requests_per_minute: int = Field(300, ge=1)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="QUARTIER_",
        env_nested_delimiter="__",
        toml_file=os.environ.get("QUARTIER_CONFIG", "quartier.toml"),
        extra="ignore",
    )

    state_dir: Path = Field(default_factory=default_state_dir)
    database_url: str = ""
    metrics_port: int = 0
    kafka: KafkaSettings = KafkaSettings()
    influx: InfluxSettings = InfluxSettings()
    smtp: SmtpSettings = SmtpSettings()
    fcm: FcmSettings = FcmSettings()
    chain: ChainSettings = ChainSettings()
    notifier: NotifierSettings = NotifierSettings()
    market: MarketSettings = MarketSettings()
    console: ConsoleSettings = ConsoleSettings()
    accounts: AccountsSettings = AccountsSettings()  # accounts settings
    privacy: PrivacySettings = PrivacySettings()
    api: ApiSettings = ApiSettings()  # API layer (api/)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls),
            LocalStackSource(settings_cls),
        )

    def topic(self, base: str) -> str:
        """The full name of a declared topic, with this deployment's prefix."""
        return f"{self.kafka.topic_prefix}{base}"

    def sqlite_url(self, name: str) -> str:
        """A default SQLite database under the state directory, used when no database URL is set."""
        if self.database_url:
            return self.database_url
        self.state_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{self.state_dir / f'{name}.db'}"


class LocalStackSource(PydanticBaseSettingsSource):
    """Reads the addresses the running local stack recorded, so clients follow its ports."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = default_state_dir() / STACK_FILE
        try:
            recorded = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}
        return recorded.get("settings", {})
