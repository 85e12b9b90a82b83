"""Issue 10's done-when, end to end over real HTTP, the real broker, InfluxDB, SMTP server, FCM
endpoint, stream worker and notifier, each its own process:

sign up, read the confirmation link from the mailbox, confirm, sign in, pair a meter with its code,
register a device and an email, set a power limit; the limit reaches ``alerts.rules``; the worker
raises an alert for that meter; the notifier delivers one push to that device and one email to that
address, found through the accounts projection.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from quartier import events, pairing, topics
from quartier.events import AlertRules
from quartier.kafka import ensure_topics, read_all
from quartier.settings import Settings
from quartier.stack.component import pick_port
from quartier.stack.fcm import fetch_messages
from quartier.stack.smtp import read_mailbox
from tests.accounts.test_service import confirmation_token
from tests.streams.worker_support import WorkerProcess, alerts_of, batches, readings, scrape, send

PASSWORD = "a long enough password"
METER, ZONE = "041848542645", "zone-0001"


def environment(settings: Settings) -> dict[str, str]:
    """The settings as QUARTIER_* variables for the API, worker and notifier processes."""
    from tests.support import settings_env

    return {
        **settings_env(settings),
        "QUARTIER_SMTP": settings.smtp.model_dump_json(),
        "QUARTIER_FCM": settings.fcm.model_dump_json(),
    }


def process(argv: list[str], settings: Settings, log_path: Path) -> WorkerProcess:
    return WorkerProcess(argv, settings, log_path, extra_env=environment(settings))


@pytest.mark.timeout(300)
async def test_sign_up_to_a_push_and_an_email_over_every_real_component(
    broker: dict[str, Any], influx: dict[str, Any], smtp: dict[str, Any], fcm: dict[str, Any],
    make_settings: Callable[..., Settings], tmp_path: Path,
) -> None:
    settings = make_settings(broker, influx, smtp, fcm, notifier={"group_window_s": 0.05})
    await ensure_topics(settings)
    run = uuid.uuid4().hex[:8]
    email, alert_email, phone = f"home-{run}@example.test", f"alerts-{run}@example.test", f"phone-{run}"
    port = pick_port(0)
    base = f"http://127.0.0.1:{port}"
    api = process(["-m", "quartier.cli", "api", "serve", "--surface", "accounts", "--port", str(port), "--no-access-log"],
                  settings, tmp_path / "api.log")
    notifier = process(["-m", "quartier.cli", "notifier", "run"], settings, tmp_path / "notifier.log")
    worker_port = pick_port(0)
    worker = process(["-m", "quartier.cli", "streams", "worker", "--app-id", settings.topic("worker"),
                      "--metrics-port", str(worker_port)], settings, tmp_path / "worker.log")
    with api, notifier, worker:
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:

            async def serving() -> bool:
                try:
                    return (await client.get("/v1/openapi.json")).status_code == 200
                except httpx.HTTPError:
                    return False

            await api.until(serving, 90, "the API to serve")
            signed_up = await client.post("/v1/accounts", json={"email": email, "name": "Home", "password": PASSWORD, "language": "en"})
            assert signed_up.status_code == 202, signed_up.text
            token = confirmation_token(settings, email)
            assert (await client.get("/v1/accounts/confirm", params={"token": token})).status_code == 200
            tokens = await client.post("/v1/tokens", json={"email": email, "password": PASSWORD})
            assert tokens.status_code == 200, tokens.text
            auth = {"Authorization": f"Bearer {tokens.json()['access_token']}"}
            assert (await client.post("/v1/households", json={"name": "Home"}, headers=auth)).status_code == 201
            paired = await client.put("/v1/me/meter", headers=auth,
                                      json={"meter": METER, "zone": ZONE, "code": pairing.pairing_code(METER, ZONE)})
            assert paired.status_code == 200, paired.text
            assert (await client.post("/v1/me/devices", json={"token": phone}, headers=auth)).status_code == 201
            prefs = await client.put("/v1/me/notifications", headers=auth,
                                     json={"alert_email": alert_email, "channels": ["push", "email"], "language": "en"})
            assert prefs.status_code == 200, prefs.text
            limit = await client.put("/v1/me/alerts", headers=auth, json={
                "power_max_w": 3000, "for_s": 2, "disconnect": False, "fuse_warning": False, "repeat_s": 0})
            assert limit.status_code == 200, limit.text

        # The limit is on alerts.rules, keyed by the meter, as the worker reads it.
        [rules] = await read_all(settings, settings.topic(topics.ALERTS_RULES.name), events.decoder(AlertRules).decode)
        assert (rules.meter, rules.power_max_w, rules.for_s) == (METER, 3000, 2.0)

        async def rules_applied() -> bool:
            return scrape(worker_port).get("quartier_alert_rules_applied_total", 0) >= 1

        await worker.until(rules_applied, 120, "the worker to apply the household's rules")
        start_ms = int(time.time() * 1000) - 30_000
        await send(settings, topics.METER_READINGS.name, batches(settings, readings(METER, start_ms, [4500] * 20)))

        async def raised() -> list[Any] | None:
            found = [a for a in await alerts_of(settings, METER) if a.kind == "power_above"]
            return found or None

        [alert] = await worker.until(raised, 120, "the worker to raise power_above")
        assert (alert.state, alert.threshold) == ("raised", 3000)

        async def delivered() -> tuple[list[Any], list[Any]] | None:
            pushes = [m for m in fetch_messages(settings, settings.fcm.project_id) if m["message"].get("token") == phone]
            mails = read_mailbox(settings.smtp.maildir, recipient=alert_email)
            return (pushes, mails) if pushes and mails else None

        pushes, mails = await notifier.until(delivered, 120, "one push and one email")
        await asyncio.sleep(2)  # anything sent twice would have arrived by now
        assert len([m for m in fetch_messages(settings, settings.fcm.project_id) if m["message"].get("token") == phone]) == 1
        assert len(read_mailbox(settings.smtp.maildir, recipient=alert_email)) == 1
        assert pushes[0]["message"]["notification"]["title"] == "Power above your limit"
        assert mails[0]["Subject"]
