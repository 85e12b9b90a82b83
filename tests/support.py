"""Settings for one test (or one module's worker) alone, and the environment giving a subprocess the same."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from quartier.settings import Settings


def merge(into: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    for key, value in new.items():
        if isinstance(value, dict):
            merge(into.setdefault(key, {}), value)
        else:
            into[key] = value
    return into


def isolated_settings(state_dir: Path, *overrides: dict[str, Any], **extra: Any) -> Settings:
    """Settings with their own topic prefix, InfluxDB database, FCM project and state directory,
    merged with the overrides of the components passed in (the session fixtures' dicts)."""
    run = uuid.uuid4().hex[:10]
    values: dict[str, Any] = {
        "state_dir": state_dir,
        "kafka": {"topic_prefix": f"t{run}."},
        "influx": {"database": f"t{run}"},
        "fcm": {"project_id": f"t{run}"},
    }
    for override in overrides:
        merge(values, override)
    merge(values, extra)
    return Settings(**values)


def settings_env(settings: Settings) -> dict[str, str]:
    """Environment variables that give a subprocess exactly these settings (state, broker, InfluxDB,
    chain, database)."""
    env = {
        "QUARTIER_STATE_DIR": str(settings.state_dir),
        "QUARTIER_KAFKA__BOOTSTRAP": settings.kafka.bootstrap,
        "QUARTIER_KAFKA__FLAVOUR": settings.kafka.flavour,
        "QUARTIER_KAFKA__TOPIC_PREFIX": settings.kafka.topic_prefix,
        "QUARTIER_KAFKA__SESSION_TIMEOUT_S": str(settings.kafka.session_timeout_s),
        "QUARTIER_INFLUX__URL": settings.influx.url,
        "QUARTIER_INFLUX__API": settings.influx.api,
        "QUARTIER_INFLUX__DATABASE": settings.influx.database,
        "QUARTIER_CHAIN__RPC_URL": settings.chain.rpc_url,
    }
    if settings.database_url:
        env["QUARTIER_DATABASE_URL"] = settings.database_url
    return env
