"""Erasure as a saga over the real broker, InfluxDB and SQLite files: sealed accounts events, every store
erased once even across a crash, nothing of the household left in its files, the meter paired again clean."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from sqlmodel import Session

from accounts import commands, readmodel
from accounts.operations import AccountOperations
from accounts.service import AccountsService, fold
from notifier.contacts import DeviceToken, MeterOwner, User
from notifier.database import notifier_engine
from privacy.erasure import STEPS, ErasureSaga, Stores, Target
from quartier import events as ev
from quartier.access_log import AccessLog
from quartier import pairing, topics
from quartier.influx import count_points, ensure_database
from quartier.kafka import ensure_topics, read_all, read_records
from quartier.settings import Settings

PASSWORD = "a long enough password"
METER, OTHER_METER, ZONE = "031800000077", "031800000078", "zone-canary"


def forms(value: str) -> list[bytes]:
    """A value as it could sit in a file: in clear, JSON-escaped, in base64."""
    raw = value.encode()
    return [raw, json.dumps(value).encode()[1:-1], base64.b64encode(raw), base64.urlsafe_b64encode(raw)]


def found_in(data: bytes, values: list[str]) -> list[str]:
    return [value for value in values for form in forms(value) if form in data]


def database_files(state_dir: Path, name: str) -> bytes:
    return b"".join(p.read_bytes() for p in state_dir.glob(f"{name}.db*"))


def influx_write(settings: Settings, lines: list[str]) -> None:
    answer = httpx.post(f"{settings.influx.url}/write",
                        params={"db": settings.influx.database, "rp": "raw", "precision": "ms"},
                        content="\n".join(lines), timeout=30)
    assert answer.status_code == 204, answer.text


async def every_broker_record(settings: Settings) -> bytes:
    """Every key and value of every topic of this test's deployment, read back in full."""
    from quartier.kafka import topic_partitions

    names = [n for n in await topic_partitions(settings) if n.startswith(settings.kafka.topic_prefix)]
    records = [r for n in names for r in await read_records(settings, n)]
    return b"".join((r.key or b"") + b"\x00" + (r.value or b"") for r in records)


def every_file(*roots: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for root in roots for p in root.rglob("*") if p.is_file()}


async def test_a_household_is_erased_from_every_store_once_even_across_a_crash_and_its_meter_starts_clean(
    broker: dict[str, Any], influx: dict[str, Any], smtp: dict[str, Any], make_settings: Callable[..., Settings],
    stack_root: Path,
) -> None:
    settings = make_settings(broker, influx, smtp)
    await ensure_topics(settings)
    ensure_database(settings)
    tag = secrets.token_hex(6)
    email, name, home, token = f"canary.{tag}@example.test", f"Canary {tag}", f"Chez Canary {tag}", f"canary-token-{tag}"
    alert_email = f"alerts.{tag}@example.test"
    personal = [email, name, home, token, alert_email]

    service = AccountsService(settings, follow_interval_s=0)
    await service.start()
    ops = AccountOperations(settings, service)
    try:
        await ops.sign_up(email=email, name=name, password=PASSWORD)
        account = service.state.account_by_email(email).account  # type: ignore[union-attr]
        household = await ops.create_household(account, home)
        await ops.pair(account, meter=METER, zone=ZONE, code=pairing.pairing_code(METER, ZONE))
        await service.execute(lambda state, now: commands.add_device(state, account, device_token=token, now_ms=now))
        await service.execute(lambda state, now: commands.set_notifications(
            state, account, alert_email=alert_email, channels=("push", "email"), quiet_hours_text=None,
            time_zone_name="Europe/Paris", language="fr", muted_kinds=(), now_ms=now))
    finally:
        await service.stop()

    # Sealed on the log from the start (version 2), and still read back in clear by the fold.
    log_bytes = b"".join(r.value for r in await read_records(settings, settings.topic(topics.ACCOUNTS_EVENTS.name)))
    assert found_in(log_bytes, personal) == []
    created = [e for e in await read_all(settings, settings.topic(topics.ACCOUNTS_EVENTS.name),
                                          ev.decoder(ev.AccountsEvent).decode) if isinstance(e, ev.AccountCreated)]
    assert created[0].v == 2 and isinstance(created[0].email, ev.SealedField)
    state = await fold(settings)
    assert (state.accounts[account].email, state.accounts[account].name, state.households[household].name) == (email, name, home)
    assert [d.device_token for d in state.devices.values()] == [token]

    # The notifier's contacts, readings in InfluxDB and a spooled batch: the household's and a neighbour's.
    engine = notifier_engine(settings)
    with Session(engine) as session:
        session.add(User(id=account, email=alert_email))
        session.add(MeterOwner(meter=METER, user_id=account))
        session.add(DeviceToken(token=token, user_id=account))
        session.add(User(id="neighbour", email="neighbour@example.test"))
        session.add(MeterOwner(meter=OTHER_METER, user_id="neighbour"))
        session.commit()
    engine.dispose()
    now_ms = int(time.time() * 1000)
    # An hour back: out of the rollup query's reach (it resamples the last 20 minutes every 10), so the
    # meter has its one raw series when the saga counts, not a reading_10m one too if a run lands between.
    influx_write(settings, [f"reading,meter={m},zone={ZONE} drawn_va=4321i,withdrawn_wh=98765i {now_ms - 3_600_000 - i * 1000}"
                            for m in (METER, OTHER_METER) for i in range(60)])
    spool = settings.state_dir / "influx-spool" / settings.influx.database
    spool.mkdir(parents=True)
    (spool / "1-1-0-2.lp").write_text(f"reading,meter={METER},zone={ZONE} drawn_va=4321i {now_ms}\n"
                                      f"reading,meter={OTHER_METER},zone={ZONE} drawn_va=1i {now_ms}")

    # It trades, gets an alert and its delivery.
    from tests.streams.worker_support import send

    await send(settings, topics.MARKET_EVENTS.name, [(ZONE.encode(), ev.encode(ev.OfferListed(
        offer_id=f"o-{tag}", producer=household, zone=ZONE, slot_start_ms=now_ms, energy_wh=500,
        price_cents_per_kwh=20, at_ms=now_ms)))])
    alert = ev.AlertEvent(id=f"a-{tag}", meter=METER, zone=ZONE, kind="power_above", state="raised", value=4321,
                          threshold=3000, at_ms=now_ms, episode_start_ms=now_ms)
    await send(settings, topics.ALERTS_EVENTS.name, [(METER.encode(), ev.encode(alert))])
    await send(settings, topics.NOTIFICATIONS_DELIVERIES.name, [(alert.id.encode(), ev.encode(ev.Delivery(
        alert_id=alert.id, alert_state="raised", channel="email", recipient="5e0f", status="sent", attempts=1,
        at_ms=now_ms)))])

    # The stream worker's alert_state changelog (as quartier streams worker names it) gets tombstones.
    changelog = f"{settings.kafka.topic_prefix}quartier-streams-alert_state-changelog"
    await ensure_topics(settings, [], extra={changelog: topics.METER_READINGS.partitions})

    saga = ErasureSaga(settings)
    erasure = await saga.request(household)
    started = time.monotonic()
    assert await saga.run(erasure, stop_after="influx") is None  # the saga process dies after three steps
    [completed] = await ErasureSaga(settings).run_pending()  # a new one resumes
    elapsed_s = time.monotonic() - started

    records = await read_all(settings, settings.topic(topics.PRIVACY_ERASURES.name), msgspec.json.Decoder(ev.PrivacyEvent).decode)
    steps = [r.step.store for r in records if isinstance(r, ev.ErasureStepDone)]
    assert steps == list(STEPS)  # each store once, none twice
    report = {s.store: s.erased for s in completed.stores}
    assert report["influx"] == {"series": 1}
    assert report["faust"] == {"tombstones": topics.METER_READINGS.partitions}
    tombstones = [r for r in await read_records(settings, changelog)]
    assert [(r.key, r.value) for r in tombstones] == [(METER.encode(), None)] * topics.METER_READINGS.partitions
    assert report["spool"] == {"lines": 1}
    assert report["keys"] == {"keys": 2}  # the household's and its member's
    assert report["notifier"]["notifier_user"] == 1 and report["notifier"]["notifier_device"] == 1
    assert {type(r).__name__ for r in records} >= {"ErasureRequested", "ErasureCompleted", "DataKeyErased"}
    assert elapsed_s < 60, elapsed_s

    # Nothing of the household in any store or file; the neighbour untouched.
    assert count_points(settings, "reading", f"meter = '{METER}'") == 0
    assert count_points(settings, "reading", f"meter = '{OTHER_METER}'") == 60
    assert [p.read_text() for p in spool.glob("*.lp")] == [f"reading,meter={OTHER_METER},zone={ZONE} drawn_va=1i {now_ms}"]
    for database in ("accounts", "notifier"):
        assert found_in(database_files(settings.state_dir, database), personal) == [], database
    assert b"neighbour@example.test" in database_files(settings.state_dir, "notifier")
    state = await fold(settings)
    assert household not in state.households and account not in state.accounts and METER not in state.pairings
    log_bytes = b"".join(r.value for r in await read_records(settings, settings.topic(topics.ACCOUNTS_EVENTS.name)))
    assert found_in(log_bytes, personal) == []
    # The byte canary: no personal value in any broker record, nor in any file of the deployment's
    # state (databases with -wal and -shm, key store, spool, Faust data) or of InfluxDB (data, wal, meta, log).
    assert found_in(await every_broker_record(settings), personal) == []
    files = every_file(settings.state_dir, stack_root / "influx")
    assert len(files) > 5
    assert {path: hits for path, data in files.items() if (hits := found_in(data, personal))} == {}
    assert {path for path, data in files.items() if b"drawn_va=4321i" in data and "influx-spool" in path} == set()

    # The meter is paired again by a new household, and starts clean.
    service = AccountsService(settings, follow_interval_s=0)
    await service.start()
    ops = AccountOperations(settings, service)
    try:
        assert readmodel.household(service.read_model, household) is None
        assert readmodel.account(service.read_model, account) is None
        await ops.sign_up(email=f"next.{tag}@example.test", name="Next", password=PASSWORD)
        newcomer = service.state.account_by_email(f"next.{tag}@example.test").account  # type: ignore[union-attr]
        second = await ops.create_household(newcomer, "Next home")
        await ops.pair(newcomer, meter=METER, zone=ZONE, code=pairing.pairing_code(METER, ZONE))
        assert readmodel.household_of_meter(service.read_model, METER).household == second  # type: ignore[union-attr]
        assert readmodel.devices(service.read_model, second) == []
    finally:
        await service.stop()
    access = AccessLog.open(settings)
    # Two runs of the saga read the household (the first, and the one that resumed it): one entry.
    assert [(e.actor, e.why, e.reference) for e in access.entries(household=household)] == [
        ("erasure", "erasure", erasure)]
    assert access.verify().ok


class CrashingStores(Stores):
    """The real stores; ``hang_after`` erases its store and then never returns (the process is killed
    there, before the step's ``erasure_step_done``), ``fail`` raises as a store that is down does."""

    def __init__(self, settings: Settings, *, hang_after: str | None = None, fail: str | None = None) -> None:
        super().__init__(settings)
        self.hang_after, self.fail = hang_after, fail

    async def run(self, step: str, target: Target) -> dict[str, int]:
        if step == self.fail:
            raise ConnectionError(f"{step}: store down")
        erased = await super().run(step, target)
        if step == self.hang_after:
            await asyncio.Event().wait()
        return erased


async def test_a_saga_killed_in_a_step_resumed_and_retried_logs_its_read_of_the_household_once(
    broker: dict[str, Any], influx: dict[str, Any], smtp: dict[str, Any], make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(broker, influx, smtp)
    await ensure_topics(settings)
    ensure_database(settings)
    service = AccountsService(settings, follow_interval_s=0)
    await service.start()
    ops = AccountOperations(settings, service)
    try:
        await ops.sign_up(email="once@example.test", name="Once", password=PASSWORD)
        account = service.state.account_by_email("once@example.test").account  # type: ignore[union-attr]
        household = await ops.create_household(account, "Chez Once")
        await ops.pair(account, meter=METER, zone=ZONE, code=pairing.pairing_code(METER, ZONE))
    finally:
        await service.stop()
    erasure = await ErasureSaga(settings).request(household)

    # The first run logs its read, erases the notifier's rows and is killed before the step is recorded.
    first = asyncio.create_task(ErasureSaga(settings, CrashingStores(settings, hang_after="notifier")).run(erasure))
    while not (entries := AccessLog.open(settings).entries(household=household)):
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    # The process that resumes it fails at the market's step (the API's background task retries it) ...
    with pytest.raises(ConnectionError):
        await ErasureSaga(settings, CrashingStores(settings, fail="market")).run(erasure)
    # ... and the retry completes it.
    [completed] = await ErasureSaga(settings).run_pending()

    assert completed.erasure == erasure and [s.store for s in completed.stores] == list(STEPS)
    records = await read_all(settings, settings.topic(topics.PRIVACY_ERASURES.name), msgspec.json.Decoder(ev.PrivacyEvent).decode)
    assert [r.step.store for r in records if isinstance(r, ev.ErasureStepDone)] == list(STEPS)
    access = AccessLog.open(settings)
    assert [(e.seq, e.actor, e.actor_role, e.what, e.why, e.reference) for e in access.entries(household=household)] == [
        (entries[0].seq, "erasure", "system", "profile", "erasure", erasure)]
    assert access.verify().ok and access.verify().entries == 1
    # Three runs of the saga, one read logged; a second erasure of the household is its own read.
    again = await ErasureSaga(settings).request(household)
    await ErasureSaga(settings).run(again)
    assert [e.reference for e in access.entries(household=household)] == [erasure, again]


async def test_the_export_has_every_category_of_the_data_map_and_as_many_readings_as_influxdb(
    broker: dict[str, Any], influx: dict[str, Any], smtp: dict[str, Any], make_settings: Callable[..., Settings],
    tmp_path: Path,
) -> None:
    from privacy.datamap import CATEGORIES
    from privacy.export import export_household
    from tests.streams.worker_support import send

    settings = make_settings(broker, influx, smtp)
    await ensure_topics(settings)
    ensure_database(settings)
    tag = secrets.token_hex(6)
    service = AccountsService(settings, follow_interval_s=0)
    await service.start()
    ops = AccountOperations(settings, service)
    try:
        await ops.sign_up(email=f"export.{tag}@example.test", name=f"Export {tag}", password=PASSWORD)
        account = service.state.account_by_email(f"export.{tag}@example.test").account  # type: ignore[union-attr]
        household = await ops.create_household(account, "Chez Export")
        await ops.pair(account, meter=METER, zone=ZONE, code=pairing.pairing_code(METER, ZONE))
        await service.execute(lambda state, now: commands.add_device(state, account, device_token=f"tok-{tag}", now_ms=now))
    finally:
        await service.stop()
    now_ms = int(time.time() * 1000)
    start = now_ms - now_ms % 3600_000 - 3 * 3600_000
    # Two hours and a half of 1 Hz readings, plus one outside the range asked for.
    influx_write(settings, [f"reading,meter={METER},zone={ZONE} drawn_va={i % 997}i,withdrawn_wh={10_000 + i}i "
                            f"{start + i * 1000}" for i in range(9000)] +
                 [f"reading,meter={METER},zone={ZONE} drawn_va=1i {start + 3 * 3600_000 + 5}"])
    alert = ev.AlertEvent(id="a1", meter=METER, zone=ZONE, kind="power_above", state="raised", value=7000,
                          threshold=6000, at_ms=start, episode_start_ms=start)
    await send(settings, topics.ALERTS_EVENTS.name, [(METER.encode(), ev.encode(alert))])
    await send(settings, topics.NOTIFICATIONS_DELIVERIES.name, [(b"a1", ev.encode(ev.Delivery(
        alert_id="a1", alert_state="raised", channel="push", recipient="h", status="sent", attempts=1, at_ms=start)))])
    await send(settings, topics.ALERTS_RULES.name, [(METER.encode(), ev.encode(ev.AlertRules(meter=METER, power_max_w=6000)))])
    await send(settings, topics.METER_RESOLUTION.name, [(METER.encode(), ev.encode(
        ev.ResolutionChosen(meter=METER, resolution="1hz", at_ms=start)))])
    await send(settings, topics.MARKET_EVENTS.name, [(ZONE.encode(), ev.encode(ev.OfferListed(
        offer_id="o1", producer=household, zone=ZONE, slot_start_ms=start, energy_wh=500, price_cents_per_kwh=20,
        at_ms=start)))])

    document = await export_household(settings, household, tmp_path / "export", resolution="1hz",
                                      start_ms=start, end_ms=start + 3 * 3600_000)

    lines = (tmp_path / "export" / "readings.csv").read_text().splitlines()
    in_influx = count_points(settings, "reading", f"meter = '{METER}' AND time >= {start}ms AND time < {start + 3 * 3600_000}ms")
    assert len(lines) - 1 == in_influx == document["readings"]["rows"] == 9000
    assert lines[:2] == ["time_ms,drawn_va,injected_va,withdrawn_wh,injected_wh", f"{start},0,,10000,"]
    saved = json.loads((tmp_path / "export" / "household.json").read_text())
    assert set(saved) >= CATEGORIES
    assert saved["profile"]["members"][0]["email"] == f"export.{tag}@example.test"
    assert "password_hash" not in saved["profile"]["members"][0]
    assert [d["device_token"] for d in saved["devices"]] == [f"tok-{tag}"]
    assert [a["id"] for a in saved["alerts"]] == ["a1"] and [d["alert_id"] for d in saved["deliveries"]] == ["a1"]
    assert saved["rules"]["power_max_w"] == 6000 and saved["consent"]["resolution"] == "1hz"
    assert [o["offer_id"] for o in saved["trades"]["offers"]] == ["o1"]
    assert [(e["actor"], e["why"]) for e in saved["access_log"]] == [("export", "export")]
