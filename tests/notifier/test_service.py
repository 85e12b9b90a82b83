"""The notifier end to end: alerts.events on the real broker → pushes, emails, delivery records."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from notifier.contacts import ContactStore, validate
from notifier.database import notifier_engine
from notifier.service import Notifier, NotifierStats
from quartier import events, topics
from quartier.events import AlertEvent, Delivery, alert_id
from quartier.kafka import ensure_topics, producer_config, read_all
from quartier.settings import Settings
from quartier.stack.fcm import fetch_messages
from quartier.stack.smtp import read_mailbox

METER_A, METER_B, METER_C = "111111111111", "222222222222", "333333333333"


def _alert(meter: str, state: str, start_ms: int = 1_790_000_000_000) -> AlertEvent:
    return AlertEvent(
        id=alert_id(meter, "power_above", start_ms), meter=meter, kind="power_above", state=state,  # type: ignore[arg-type]
        value=3_100.0 if state == "raised" else 900.0, threshold=1_500.0,
        at_ms=start_ms + (0 if state == "raised" else 60_000), episode_start_ms=start_ms,
    )


async def _produce(settings: Settings, alerts: list[AlertEvent]) -> None:
    producer = AIOKafkaProducer(**producer_config(settings))
    await producer.start()
    try:
        for alert in alerts:
            await producer.send_and_wait(
                settings.topic(topics.ALERTS_EVENTS.name), events.encode(alert), key=(alert.meter or "").encode()
            )
    finally:
        await producer.stop()


async def _deliveries(settings: Settings) -> list[Delivery]:
    return await read_all(
        settings, settings.topic(topics.NOTIFICATIONS_DELIVERIES.name), events.decoder(Delivery).decode  # type: ignore[arg-type]
    )


class RunningNotifier:
    def __init__(self, settings: Settings) -> None:
        self.stop = asyncio.Event()
        ready = asyncio.Event()
        self.task = asyncio.create_task(Notifier.from_settings(settings).run(self.stop, ready))
        self.ready = ready

    async def started(self) -> "RunningNotifier":
        ready = asyncio.create_task(self.ready.wait())
        await asyncio.wait([ready, self.task], return_when=asyncio.FIRST_COMPLETED, timeout=60)
        if self.task.done():
            self.task.result()  # raises what stopped it
        return self

    async def until(self, check: Callable[[], Awaitable[bool]], timeout_s: float = 90.0) -> None:
        """Waits for a condition while the notifier runs; the timeout only bounds a failing test."""
        async with asyncio.timeout(timeout_s):
            while not await check():
                if self.task.done():
                    self.task.result()  # raises what stopped it
                    raise AssertionError("the notifier stopped before the condition held")
                await asyncio.sleep(0.3)

    async def stopped(self) -> NotifierStats:
        self.stop.set()
        return await asyncio.wait_for(self.task, 60)


@pytest.mark.timeout(240)
async def test_alerts_become_pushes_and_emails_once_even_when_replayed_or_restarted(
    broker: dict[str, Any], smtp: dict[str, Any], fcm: dict[str, Any], make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(broker, smtp, fcm)
    domain = f"{uuid.uuid4().hex[:8]}.example.test"
    await ensure_topics(settings, [topics.ALERTS_EVENTS, topics.NOTIFICATIONS_DELIVERIES])
    contacts = ContactStore(notifier_engine(settings))
    contacts.register([
        validate({"meter": METER_A, "tokens": ["a-phone", "a-tablet"], "email": f"a@{domain}", "language": "fr"}),
        validate({"meter": METER_B, "tokens": ["b-phone", "unregistered-b-old"], "email": f"b@{domain}", "language": "en"}),
    ])
    first_batch = [_alert(METER_A, "raised"), _alert(METER_B, "raised"), _alert(METER_C, "raised"),
                   _alert(METER_A, "resolved")]
    await _produce(settings, first_batch)

    def pushes() -> Counter[str]:
        return Counter(m["message"]["token"] for m in fetch_messages(settings, settings.fcm.project_id))

    def emails() -> Counter[str]:
        return Counter(m["To"] for m in read_mailbox(settings.smtp.maildir, recipient_domain=domain))

    notifier = await RunningNotifier(settings).started()
    try:
        # A: 2 devices + 1 email, twice; B: 2 devices (one gone) + 1 email; C: no one, per channel.
        await notifier.until(lambda: _count_at_least(settings, 3 + 3 + 3 + 2))
        assert pushes() == {"a-phone": 2, "a-tablet": 2, "b-phone": 1}
        assert emails() == {f"a@{domain}": 2, f"b@{domain}": 1}
        assert contacts.recipients([METER_B])[METER_B].tokens == ("b-phone",)

        deliveries = await _deliveries(settings)
        statuses = Counter((d.channel, d.status) for d in deliveries)
        assert statuses == {("push", "sent"): 5, ("push", "failed"): 1, ("email", "sent"): 3,
                            ("push", "suppressed"): 1, ("email", "suppressed"): 1}
        [gone] = [d for d in deliveries if d.status == "failed"]
        assert gone.alert_id == _alert(METER_B, "raised").id and "unregistered" in (gone.reason or "")
        assert all("@" not in d.recipient and "phone" not in d.recipient for d in deliveries)
        assert all(d.provider_id for d in deliveries if d.status == "sent")

        # The same transitions again (a replay): nothing is sent twice; each is logged as such.
        await _produce(settings, first_batch)
        await notifier.until(lambda: _count_at_least(settings, 11 + 3 + 3 + 2 + 2))
        statuses = Counter((d.channel, d.status) for d in await _deliveries(settings))
        assert statuses[("push", "deduplicated")] == 5 and statuses[("email", "deduplicated")] == 3
        assert statuses[("push", "sent")] == 5 and statuses[("email", "sent")] == 3
    finally:
        first_stats = await notifier.stopped()
    assert first_stats.alerts == 8

    # A restarted notifier resumes after the committed offsets and still never sends twice.
    await _produce(settings, [_alert(METER_B, "resolved"), _alert(METER_A, "raised")])
    notifier = await RunningNotifier(settings).started()
    try:
        await notifier.until(lambda: _count_at_least(settings, 21 + 2 + 3))
    finally:
        second_stats = await notifier.stopped()
    assert second_stats.alerts == 2
    assert pushes() == {"a-phone": 2, "a-tablet": 2, "b-phone": 2}
    assert emails() == {f"a@{domain}": 2, f"b@{domain}": 2}
    assert len(await _deliveries(settings)) == 26


async def _count_at_least(settings: Settings, expected: int) -> bool:
    return len(await _deliveries(settings)) >= expected


def _environment(settings: Settings) -> dict[str, str]:
    """The settings as QUARTIER_* variables, for a notifier run as its own process."""
    return {
        "QUARTIER_STATE_DIR": str(settings.state_dir),
        "QUARTIER_DATABASE_URL": settings.sqlite_url("notifier"),
        "QUARTIER_KAFKA": settings.kafka.model_dump_json(),
        "QUARTIER_SMTP": settings.smtp.model_dump_json(),
        "QUARTIER_FCM": settings.fcm.model_dump_json(),
    }


@pytest.mark.timeout(180)
async def test_cli_registers_runs_and_stops_cleanly_on_sigterm(
    broker: dict[str, Any], smtp: dict[str, Any], fcm: dict[str, Any], make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(broker, smtp, fcm)
    env = {**os.environ, **_environment(settings)}
    quartier = [sys.executable, "-m", "quartier.cli"]
    registered = subprocess.run(
        [*quartier, "notifier", "register", "--meter", METER_A, "--token", "cli-phone", "--language", "en"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert registered.returncode == 0, registered.stderr
    await ensure_topics(settings, [topics.ALERTS_EVENTS, topics.NOTIFICATIONS_DELIVERIES])
    await _produce(settings, [_alert(METER_A, "raised")])

    process = await asyncio.create_subprocess_exec(
        *quartier, "notifier", "run", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(90):
            while not fetch_messages(settings, settings.fcm.project_id):
                assert process.returncode is None, "the notifier exited early"
                await asyncio.sleep(0.3)
        process.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(process.communicate(), 60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, output.decode()
    assert "stopped: 1 alert events, deliveries {'sent': 1}" in output.decode()
    [pushed] = fetch_messages(settings, settings.fcm.project_id)
    assert pushed["message"]["notification"]["title"] == "Power above your limit"
