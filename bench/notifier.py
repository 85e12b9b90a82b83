"""Notifier throughput and latency: alert events through the whole pipeline to the local FCM
endpoint and SMTP server (STARTTLS + AUTH), on the real broker.

``python -m bench.notifier [--users 5000] [--events 10000] [--json]``

1. **Throughput**: ``--events`` alert transitions (each user's power alert raised, then resolved)
   are on ``alerts.events`` before the notifier starts; every user has one phone and one email,
   and wants pushes only, then emails only (each channel's capacity, one notifier in this
   process, with its push worker processes), then both at once (``quartier notifier run --channel push`` and ``--channel email``
   as two processes, so each channel has its own interpreter lock; all share the two cores with
   the broker, the SMTP server and the FCM endpoint).
   Rates come from the providers' own clocks: the FCM endpoint's receive time of each push and the
   Maildir delivery time of each email, first to last.
2. **Latency**: with the notifier running and caught up, transitions are produced at a steady
   rate below capacity (``--paced-rate`` per second), each stamped with its production time;
   latency is the provider's acceptance time minus that (p50, p99 per channel).
   CPU per message, from the processes' own counters (psutil) over the backlog: the notifier (this
   process or its ``--channel`` processes, with their push worker processes) and the local FCM
   endpoint and SMTP server, which run on the same two cores: so a run says which side was the limit.
3. **Baseline**, in the same run: the libraries used plainly, as the notifier's first version did:
   ``send_each_async`` in batches of 500 for pushes, and one aiosmtplib connection sending an
   ``EmailMessage`` per mail. The ratios compare the pipeline with it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import ssl
import sys
import tempfile
import time
import uuid
import warnings
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiosmtplib
import msgspec
import psutil
from aiokafka import AIOKafkaProducer

from bench import lifetime
from quartier import events, topics
from quartier.events import AlertEvent, alert_id
from quartier.kafka import ensure_topics, producer_config
from quartier.settings import Settings
from quartier.stack import Stack
from quartier.stack.broker import Broker
from quartier.stack.fcm import FcmEndpoint, count_messages, fetch_messages
from quartier.stack.smtp import SmtpServer

START_MS = 1_790_000_000_000


def meter_of(i: int) -> str:
    return f"{700_000_000_000 + i:012d}"


def transition(i: int, state: str, produced_ms: int = 0, start_ms: int = START_MS) -> AlertEvent:
    meter = meter_of(i)
    return AlertEvent(
        id=alert_id(meter, "power_above", start_ms), meter=meter, kind="power_above", state=state,  # type: ignore[arg-type]
        value=3_100.0 if state == "raised" else 900.0, threshold=1_500.0,
        at_ms=start_ms + (0 if state == "raised" else 60_000), episode_start_ms=start_ms, produced_ms=produced_ms,
    )


def maildir_times_ms(maildir: str) -> list[float]:
    """Delivery times of the Maildir's messages, from their keys (``<s>.M<us>P<pid>...``)."""
    out = []
    for sub in ("new", "cur"):
        path = Path(maildir) / sub
        if not path.is_dir():
            continue
        for name in os.listdir(path):
            if match := re.match(r"(\d+)\.M(\d+)", name):
                out.append(int(match[1]) * 1000 + int(match[2]) / 1000)
    return sorted(out)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def produce(settings: Settings, alerts: list[AlertEvent], rate_per_s: float | None = None) -> None:
    producer = AIOKafkaProducer(**producer_config(settings))
    await producer.start()
    topic = settings.topic(topics.ALERTS_EVENTS.name)
    try:
        started = time.monotonic()
        for n, alert in enumerate(alerts):
            if rate_per_s:
                wait = started + n / rate_per_s - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                alert = msgspec.structs.replace(alert, produced_ms=int(time.time() * 1000))
            await producer.send(topic, events.encode(alert), key=(alert.meter or "").encode())
        await producer.flush()
    finally:
        await producer.stop()


def register(settings: Settings, users: int, domain: str, channels: tuple[str, ...]) -> None:
    from notifier.contacts import ContactStore, validate
    from notifier.database import notifier_engine

    ContactStore(notifier_engine(settings)).register([
        validate({"meter": meter_of(i), "tokens": [f"bench-{i}"], "email": f"home-{i}@{domain}",
                  "language": "en" if i % 2 else "fr", "channels": list(channels)})
        for i in range(users)
    ])


async def wait_for(settings: Settings, pushes: int, emails: int, timeout_s: float) -> tuple[list[dict[str, Any]], list[float]]:
    deadline = time.monotonic() + timeout_s
    while True:
        done = count_messages(settings, settings.fcm.project_id) >= pushes and maildir_count(settings.smtp.maildir) >= emails
        if done or time.monotonic() > deadline:
            return fetch_messages(settings, settings.fcm.project_id), maildir_times_ms(settings.smtp.maildir)
        await asyncio.sleep(0.5)


def maildir_count(maildir: str) -> int:
    return sum(len(os.listdir(Path(maildir) / sub)) for sub in ("new", "cur") if (Path(maildir) / sub).is_dir())


def environment(settings: Settings) -> dict[str, str]:
    """The settings as QUARTIER_* variables, for a notifier run as its own process."""
    return {
        "QUARTIER_STATE_DIR": str(settings.state_dir),
        "QUARTIER_DATABASE_URL": settings.database_url,
        "QUARTIER_KAFKA": settings.kafka.model_dump_json(),
        "QUARTIER_SMTP": settings.smtp.model_dump_json(),
        "QUARTIER_FCM": settings.fcm.model_dump_json(),
        "QUARTIER_NOTIFIER": settings.notifier.model_dump_json(),
    }


def cpu_seconds(pids: set[int] | None = None) -> dict[int, float]:
    """CPU seconds so far of ``pids``, or of this process and its children other than the servers'."""
    me = psutil.Process()
    processes = [psutil.Process(p) for p in pids] if pids is not None else [me, *me.children(recursive=True)]
    out = {}
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        out[process.pid] = times.user + times.system
    return out


def cpu_used(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(t - before.get(pid, 0.0) for pid, t in after.items())


async def pipeline_run(settings: Settings, users: int, events_n: int, paced_rate: float, paced_events: int,
                       domain: str, channels: tuple[str, ...], servers: dict[str, int],
                       separate_processes: bool = False) -> dict[str, Any]:
    from notifier.service import Notifier

    await ensure_topics(settings, [topics.ALERTS_EVENTS, topics.NOTIFICATIONS_DELIVERIES])
    register(settings, users, domain, channels)
    pushes_expected = len(range(events_n)) if "push" in channels else 0
    emails_expected = len(range(events_n)) if "email" in channels else 0
    backlog = [transition(i, "raised") for i in range(min(users, events_n))]
    backlog += [transition(i, "resolved") for i in range(events_n - len(backlog))]
    await produce(settings, backlog)
    mail_before = len(maildir_times_ms(settings.smtp.maildir))

    stop = asyncio.Event()
    started = time.time() * 1000
    server_pids = set(servers.values())
    cpu_before = {name: cpu_seconds({pid}) for name, pid in servers.items()}
    notifier_before = cpu_seconds()
    if separate_processes:
        # One notifier process per channel, as a deployment that wants both channels' full rate runs it.
        env = {**os.environ, **environment(settings)}
        processes = [
            await asyncio.create_subprocess_exec(sys.executable, "-m", "quartier.cli", "notifier", "run", "--channel", c,
                                                 env=env, stdout=asyncio.subprocess.DEVNULL,
                                                 stderr=asyncio.subprocess.DEVNULL)
            for c in channels
        ]

        async def stopped() -> None:
            await stop.wait()
            for process in processes:
                process.terminate()
            for process in processes:
                await process.wait()

        task = asyncio.create_task(stopped())
    else:
        task = asyncio.create_task(Notifier.from_settings(settings).run(stop))
    try:
        pushed, mailed = await wait_for(settings, pushes_expected, mail_before + emails_expected, 600)
        cpu = {name: cpu_used(cpu_before[name], cpu_seconds({pid})) for name, pid in servers.items()}
        notifier_cpu = cpu_used(notifier_before, {p: t for p, t in cpu_seconds().items() if p not in server_pids})
        mailed = [t for t in mailed if t >= started]
        push_times = sorted(m["received_ms"] for m in pushed)
        result: dict[str, Any] = {
            "pushes": len(pushed),
            "emails": len(mailed),
            "pushes_per_s": len(push_times) / max(1e-3, (push_times[-1] - push_times[0]) / 1000) if push_times else 0.0,
            "emails_per_s": len(mailed) / max(1e-3, (mailed[-1] - mailed[0]) / 1000) if mailed else 0.0,
            "backlog_wall_s": (max(push_times[-1] if push_times else 0, mailed[-1] if mailed else 0) - started) / 1000,
            # Milliseconds of CPU per message sent, over the backlog (the notifier's includes its
            # polling of the broker, and both channels' work when both run).
            "notifier_cpu_ms_per_message": 1000 * notifier_cpu / max(1, len(pushed) + len(mailed)),
            "fcm_endpoint_cpu_ms_per_push": 1000 * cpu.get("fcm", 0.0) / len(pushed) if pushed else 0.0,
            "smtp_server_cpu_ms_per_email": 1000 * cpu.get("smtp", 0.0) / len(mailed) if mailed else 0.0,
        }
        if not paced_events:
            return result
        # Latency: a second episode per user, produced at a steady rate while the notifier runs.
        paced = [transition(i % users, "raised" if (i // users) % 2 == 0 else "resolved", start_ms=START_MS + 3_600_000)
                 for i in range(paced_events)]
        produced_at = time.time() * 1000
        await produce(settings, paced, paced_rate)
        pushed2, _ = await wait_for(settings, pushes_expected + len(paced), mail_before + emails_expected + len(paced), 300)
        ids = {a.id for a in paced}
        sent_ms = {}
        for m in pushed2:
            data = m["message"].get("data", {})
            if data.get("alert_id") in ids:
                sent_ms[(data["alert_id"], data["state"], m["message"]["token"])] = m["received_ms"]
        produced = await produced_times(settings, ids)
        push_lat = [(t - produced[(a, s)]) / 1000 for (a, s, _), t in sent_ms.items() if (a, s) in produced]
        mail_lat = await email_latencies(settings, produced, produced_at)
        result.update({
            "latency_push_p50_s": percentile(push_lat, 0.5), "latency_push_p99_s": percentile(push_lat, 0.99),
            "latency_email_p50_s": percentile(mail_lat, 0.5), "latency_email_p99_s": percentile(mail_lat, 0.99),
            "latency_samples": len(push_lat) + len(mail_lat),
        })
        result["latency_p50_s"] = percentile(push_lat + mail_lat, 0.5)
        result["latency_p99_s"] = percentile(push_lat + mail_lat, 0.99)
    finally:
        stop.set()
        await asyncio.wait_for(task, 120)
    return result


async def produced_times(settings: Settings, ids: set[str]) -> dict[tuple[str, str], int]:
    from quartier.kafka import read_all

    alerts = await read_all(settings, settings.topic(topics.ALERTS_EVENTS.name), events.decoder(AlertEvent).decode)  # type: ignore[arg-type]
    return {(a.id, a.state): a.produced_ms for a in alerts if a.id in ids and a.produced_ms}  # type: ignore[attr-defined]


async def email_latencies(settings: Settings, produced: dict[tuple[str, str], int], since_ms: float) -> list[float]:
    from email import message_from_binary_file, policy

    out = []
    new = Path(settings.smtp.maildir) / "new"
    for name in os.listdir(new):
        match = re.match(r"(\d+)\.M(\d+)", name)
        if not match:
            continue
        delivered = int(match[1]) * 1000 + int(match[2]) / 1000
        if delivered < since_ms:
            continue
        with open(new / name, "rb") as raw:
            headers = message_from_binary_file(raw, policy=policy.compat32)
        key = (headers.get("X-Quartier-Alert-Id", ""), headers.get("X-Quartier-Alert-State", ""))
        if key in produced:
            out.append((delivered - produced[key]) / 1000)
    return out


async def baseline(settings: Settings, n: int, domain: str) -> dict[str, float]:
    """The libraries used plainly: send_each_async in batches of 500; one SMTP connection, EmailMessage per mail."""
    from firebase_admin import messaging

    from notifier.firebase import firebase_app

    fcm = settings.fcm.model_copy(update={"project_id": settings.fcm.project_id + "-base"})
    app = firebase_app(fcm)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        messages = [messaging.Message(token=f"base-{i}", notification=messaging.Notification(title="Power above your limit", body="3,100 W"),
                                      data={"alert_id": f"{i:024x}"}) for i in range(n)]
    started = time.perf_counter()
    for i in range(0, n, 500):
        await messaging.send_each_async(messages[i : i + 500], app=app)
    push_rate = n / (time.perf_counter() - started)

    smtp = settings.smtp
    client = aiosmtplib.SMTP(hostname=smtp.host, port=smtp.port, start_tls=smtp.starttls,
                             tls_context=ssl.create_default_context(cafile=smtp.ca_file or None),
                             username=smtp.username or None, password=smtp.password or None)
    await client.connect()
    started = time.perf_counter()
    for i in range(n):
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = smtp.sender, f"base-{i}@{domain}", "Puissance au-dessus de votre limite"
        message.set_content("3 100 W relevés le 21/09/2026 16:13, pour un seuil de 1 500 W.\n" * 4)
        message.add_alternative("<p>3 100 W relevés le 21/09/2026 16:13, pour un seuil de 1 500 W.</p>" * 4, subtype="html")
        await client.send_message(message)
    email_rate = n / (time.perf_counter() - started)
    await client.quit()
    return {"baseline_pushes_per_s": push_rate, "baseline_emails_per_s": email_rate}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="quartier-bench-notifier-"))
    stacks = [Stack(root / c.name, [c]) for c in (Broker(), SmtpServer(), FcmEndpoint())]
    overrides: dict[str, Any] = {}
    try:
        for stack in stacks:
            overrides.update(stack.up())
        servers = {name: stack.status()[0].pid for name, stack in zip(("broker", "smtp", "fcm"), stacks)}
        servers = {name: pid for name, pid in servers.items() if pid is not None}
        run = uuid.uuid4().hex[:8]
        settings = Settings(
            **{**overrides, "state_dir": root / "state", "database_url": f"sqlite:///{root / 'notifier.db'}",
               "kafka": {**overrides["kafka"], "topic_prefix": f"bench{run}."},
               "fcm": {**overrides["fcm"], "project_id": f"bench{run}"}}
        )
        domain = f"{run}.bench.test"
        result: dict[str, Any] = await baseline(settings, args.baseline_events, domain)
        phases = {"push": (("push",), 0), "email": (("email",), 0), "both": (("push", "email"), args.paced_events)}
        for phase, (channels, paced) in phases.items():
            own = settings.model_copy(update={
                "kafka": settings.kafka.model_copy(update={"topic_prefix": f"bench{run}{phase}."}),
                "fcm": settings.fcm.model_copy(update={"project_id": f"bench{run}{phase}"}),
                "database_url": f"sqlite:///{root / f'notifier-{phase}.db'}",
                "state_dir": root / f"state-{phase}",
            })
            found = await pipeline_run(own, args.users, args.events, args.paced_rate, paced, f"{phase}.{domain}", channels,
                                       servers, separate_processes=phase == "both")
            if phase == "both":
                result.update({k: v for k, v in found.items() if k.startswith("latency")})
                result["both_pushes_per_s"], result["both_emails_per_s"] = found["pushes_per_s"], found["emails_per_s"]
                result["both_wall_s"] = found["backlog_wall_s"]
            else:
                result[f"{phase}{'es' if phase == 'push' else 's'}_per_s"] = found[f"{phase}{'es' if phase == 'push' else 's'}_per_s"]
                result[f"{phase}_wall_s"] = found["backlog_wall_s"]
                result[f"notifier_cpu_ms_per_{phase}"] = found["notifier_cpu_ms_per_message"]
                server = "fcm_endpoint_cpu_ms_per_push" if phase == "push" else "smtp_server_cpu_ms_per_email"
                result[server] = found[server]
        result["push_ratio_to_baseline"] = result["pushes_per_s"] / result["baseline_pushes_per_s"]
        result["email_ratio_to_baseline"] = result["emails_per_s"] / result["baseline_emails_per_s"]
        result.update({"users": args.users, "events": args.events, "paced_rate_per_s": args.paced_rate,
                       "cpus": os.cpu_count(), "load_average_1m": os.getloadavg()[0]})
        return result
    finally:
        for stack in stacks:
            stack.down()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--paced-rate", type=float, default=200.0, help="alert events/s in the latency phase")
    parser.add_argument("--paced-events", type=int, default=2000)
    parser.add_argument("--baseline-events", type=int, default=1000)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--debug", action="store_true", help="log each pipeline stage's time")
    args = parser.parse_args()
    if args.debug:
        import logging

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
        logging.getLogger("notifier.pipeline").setLevel(logging.DEBUG)
    result = asyncio.run(main_async(args))
    print(
        f"notifier: {result['events']} alert events for {result['users']} users, one channel at a time, then both\n"
        f"  pushes {result['pushes_per_s']:7.0f}/s  (both channels at once, a process each: {result['both_pushes_per_s']:5.0f}/s)"
        f"   baseline send_each_async {result['baseline_pushes_per_s']:5.0f}/s  ratio {result['push_ratio_to_baseline']:.1f}x\n"
        f"  emails {result['emails_per_s']:7.0f}/s  (both channels at once, a process each: {result['both_emails_per_s']:5.0f}/s)"
        f"   baseline 1 connection + EmailMessage {result['baseline_emails_per_s']:5.0f}/s  ratio {result['email_ratio_to_baseline']:.1f}x\n"
        f"  latency at {result['paced_rate_per_s']:.0f} events/s (both channels): push p50 {result['latency_push_p50_s']:.3f} s "
        f"p99 {result['latency_push_p99_s']:.3f} s; email p50 {result['latency_email_p50_s']:.3f} s "
        f"p99 {result['latency_email_p99_s']:.3f} s; all p99 {result['latency_p99_s']:.3f} s\n"
        f"  CPU per message: push {result['notifier_cpu_ms_per_push']:.2f} ms in the notifier, "
        f"{result['fcm_endpoint_cpu_ms_per_push']:.2f} ms in the local FCM endpoint; email "
        f"{result['notifier_cpu_ms_per_email']:.2f} ms in the notifier, {result['smtp_server_cpu_ms_per_email']:.2f} ms "
        f"in the local SMTP server\n"
        f"  (load average {result['load_average_1m']:.1f} on {result['cpus']} cores)",
        file=sys.stderr if args.json else sys.stdout,
    )
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    lifetime.run(main)
