"""``quartier demo``: a reading travels the whole way, and every count comes from the component that did it.

The demo runs each part as its own process, as a deployment would: the simulator (``quartier
simulate``), the stream worker (``quartier streams worker``) and the notifier (``quartier notifier
run``), against the local stack. It gives the run its own topics, InfluxDB database, FCM project and
email domain, so that runs never count each other's data, and then asks each component what it did:
the simulator's summary for readings produced, the worker's metrics for readings consumed, InfluxDB
for points written, the broker for alert events, the FCM endpoint's store for pushes and the SMTP
server's mailbox for emails.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from collections.abc import Callable
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from quartier import events, topics
from quartier.kafka import ensure_topics, producer_config, read_all
from quartier.settings import Settings
from quartier.stack import Stack
from quartier.stack.component import pick_port, wait_until
from quartier.stack.fcm import fetch_messages
from quartier.stack.influx import count_points, ensure_database
from quartier.stack.smtp import read_mailbox

#: The share of homes whose household set a low power limit, so that the demo raises alerts.
ALERTED_SHARE = 0.15
#: Low enough that a home's ordinary draw crosses it within seconds at any hour: the simulated homes'
#: power follows the time of day and the weather, and at 1,500 W a 25-second demo started at the
#: wrong minute raised no alert at all (twice in full CI runs, 2026-12-02).
LOW_POWER_LIMIT_W = 400
ALERT_FOR_S = 5.0
SEED = 7


class DemoRun:
    def __init__(
        self, base: Settings, meters: int, duration_s: float, progress: bool,
        announce: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.announce = announce
        self.fleet: list[dict[str, Any]] = []
        self.meters = meters
        self.duration_s = duration_s
        self.progress = progress
        run = uuid.uuid4().hex[:8]
        self.run_id = run
        self.email_domain = f"{run}.demo.quartier.test"
        self.workdir = base.state_dir / "demo" / run
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.env = {
            "QUARTIER_KAFKA__TOPIC_PREFIX": f"demo-{run}.",
            "QUARTIER_INFLUX__DATABASE": f"demo_{run}",
            "QUARTIER_FCM__PROJECT_ID": f"demo-{run}",
            "QUARTIER_DATABASE_URL": f"sqlite:///{self.workdir / 'quartier.db'}",
            "QUARTIER_STATE_DIR": str(base.state_dir),
        }
        self.metrics_port = pick_port(0)
        self.processes: list[subprocess.Popen[bytes]] = []

    # --- processes ---------------------------------------------------------------------------

    def settings(self) -> Settings:
        saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        try:
            return Settings()
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def quartier(self, *args: str, capture: bool = False) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "quartier.cli", *args],
            env={**os.environ, **self.env},
            check=True,
            text=True,
            stdout=subprocess.PIPE if capture else (None if self.progress else subprocess.DEVNULL),
            stderr=None if self.progress else subprocess.DEVNULL,
        )

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{name}.log", "wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "quartier.cli", *args],
            env={**os.environ, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.processes:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def say(self, text: str) -> None:
        if self.progress:
            print(text, file=sys.stderr, flush=True)

    # --- counts, each from the component that did the work -----------------------------------

    def worker_total(self, family_name: str) -> int:
        """A counter of the stream worker, from its own metrics (0 while it does not answer)."""
        try:
            text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2).text
        except httpx.HTTPError:
            return 0
        for family in text_string_to_metric_families(text):
            if family.name == family_name:
                return int(sum(sample.value for sample in family.samples if sample.name.endswith("_total")))
        return 0

    def readings_consumed(self) -> int:
        return self.worker_total("quartier_readings_consumed")

    def counts(self, settings: Settings) -> dict[str, int]:
        decoder = events.Decoder(events.AlertEvent)
        alerts = asyncio.run(read_all(settings, settings.topic(topics.ALERTS_EVENTS.name), decoder.decode))
        pushes = fetch_messages(settings, settings.fcm.project_id)
        emails = read_mailbox(Path(settings.smtp.maildir), recipient_domain=self.email_domain)
        return {
            "readings_consumed": self.readings_consumed(),
            "points_written": count_points(settings, "reading"),
            "alerts_raised": sum(1 for a in alerts if a.state == "raised"),
            "alerts_resolved": sum(1 for a in alerts if a.state == "resolved"),
            "pushes_delivered": len(pushes),
            "emails_delivered": len(emails),
        }

    # --- the run ---------------------------------------------------------------------------------

    def configure_households(self, settings: Settings) -> int:
        """Sets a low power limit for a share of the fleet and registers each one's phone and email."""
        described = self.quartier(
            "simulate", "--describe", "--meters", str(self.meters), "--seed", str(SEED), "--json", capture=True
        )
        fleet = json.loads(described.stdout.strip().splitlines()[-1])
        self.fleet = fleet
        alerted = [home for i, home in enumerate(fleet) if i % round(1 / ALERTED_SHARE) == 0]
        rules = [
            events.AlertRules(
                meter=home["meter"],
                power_max_w=LOW_POWER_LIMIT_W,
                for_s=ALERT_FOR_S,
                language="en" if i % 2 else "fr",
                updated_ms=int(time.time() * 1000),
            )
            for i, home in enumerate(alerted)
        ]
        asyncio.run(_produce(settings, settings.topic(topics.ALERTS_RULES.name), [(r.meter, r) for r in rules]))
        contacts = self.workdir / "contacts.csv"
        with contacts.open("w", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(["meter", "token", "email", "language"])
            for rule in rules:
                writer.writerow(
                    [rule.meter, f"demo-device-{rule.meter}", f"home-{rule.meter}@{self.email_domain}", rule.language]
                )
        self.quartier("notifier", "register", "--from-file", str(contacts))
        return len(rules)

    def run(self) -> dict[str, Any]:
        settings = self.settings()
        asyncio.run(ensure_topics(settings))
        ensure_database(settings)
        households = self.configure_households(settings)
        self.say(f"demo {self.run_id}: {self.meters} meters, {households} with a {LOW_POWER_LIMIT_W} W limit")
        try:
            worker = self.start(
                "worker", "streams", "worker", "--app-id", f"demo-{self.run_id}", "--metrics-port", str(self.metrics_port)
            )
            self.start("notifier", "notifier", "run")
            if not wait_until(lambda: worker.poll() is None and self._metrics_up(), 60):
                raise RuntimeError(f"the stream worker did not start; see {self.workdir / 'worker.log'}")
            # The rules and the readings come on different topics: a fleet started before the worker
            # has applied the low limits would be judged without them (a loaded machine met that).
            if not wait_until(lambda: self.worker_total("quartier_alert_rules_applied") >= households, 90):
                raise RuntimeError(f"the stream worker did not apply the {households} alert rules; "
                                   f"see {self.workdir / 'worker.log'}")
            app = self.open_app()
            simulator = subprocess.Popen(
                [
                    sys.executable, "-m", "quartier.cli", "simulate",
                    "--meters", str(self.meters), "--duration", str(self.duration_s),
                    "--seed", str(SEED), "--malformed-fraction", "0", "--json",
                ],
                env={**os.environ, **self.env},
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            while simulator.poll() is None:
                time.sleep(5)
                if simulator.poll() is None:
                    self._report_progress(settings)
            out, _ = simulator.communicate()
            if simulator.returncode:
                raise RuntimeError(f"the simulator failed with exit code {simulator.returncode}")
            produced = json.loads(out.strip().splitlines()[-1])
            summary = self._settle(settings, produced["readings_produced"])
            app.update(self.console_figures(app))
        finally:
            self.stop_all()
        return {"run": self.run_id, "meters": self.meters, "readings_produced": produced["readings_produced"], **summary,
                "maildir": settings.smtp.maildir, "influx_database": settings.influx.database, **app}

    # --- operator console: served for the run, with an operator to sign in as -------------------

    def serve_console(self, api_url: str) -> dict[str, Any]:
        """The console's pages on the API process ``open_app`` started, and an operator to sign in as."""
        email = f"operator@{self.email_domain}"
        password = f"demo-{secrets.token_urlsafe(12)}"
        self.quartier("console", "operator", "--email", email, "--password", password)
        url = f"{api_url}/console"
        return {"console_url": url, "operator_login": {"email": email, "password": password}}

    def console_figures(self, console: dict[str, Any]) -> dict[str, Any]:
        """Signs in as the operator and reads the console's own count of the fleet."""
        base = console["console_url"].removesuffix("/console")
        try:
            token = httpx.post(f"{base}/v1/tokens", json=console["operator_login"], timeout=30).json()["access_token"]
            figures = httpx.get(f"{base}/v1/fleet/overview", headers={"Authorization": f"Bearer {token}"}, timeout=30).json()
            return {"console_modules": figures["modules"], "console_connected": figures["connected"]}
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            return {"console_error": f"{type(exc).__name__}: {exc}"}

    # --- the household app ---------------------------------------------------------------------

    def open_app(self) -> dict[str, Any]:
        """Serves the API process (``quartier api serve``: every surface, the household app's pages
        among them) and signs up a demo household owning the fleet's first meter; announces both."""
        port = pick_port(0)
        api = self.start("api", "api", "serve", "--port", str(port), "--no-access-log")
        url = f"http://127.0.0.1:{port}"

        def serving() -> bool:
            try:
                return api.poll() is None and httpx.get(f"{url}/v1/openapi.json", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        if not wait_until(serving, 60):
            raise RuntimeError(f"the API process did not start; see {self.workdir / 'api.log'}")
        # A home without the demo's low limit: those are registered for the notifier's counts already.
        every = max(1, round(1 / ALERTED_SHARE))
        home = next((h for i, h in enumerate(self.fleet) if i % every), self.fleet[0])
        made = self.quartier("households", "demo-household", "--meter", home["meter"], "--zone", home["zone"],
                             "--tariff", home["tariff"], "--kva", str(home["subscribed_kva"]),
                             "--email", f"household-{self.run_id}@app.quartier.test", "--json", capture=True)
        login = json.loads(made.stdout.strip().splitlines()[-1])
        app = {"app_url": f"{url}/app", "household_login": {"email": login["email"], "password": login["password"]}}
        app.update(self.serve_console(url))  # the operator console, in the same announcement
        if self.announce is not None:
            self.announce(app)
        return app

    def _metrics_up(self) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def _report_progress(self, settings: Settings) -> None:
        if self.progress:
            c = self.counts(settings)
            self.say(
                f"  consumed {c['readings_consumed']:>8}  written {c['points_written']:>8}  "
                f"alerts {c['alerts_raised']:>4} raised {c['alerts_resolved']:>4} resolved  "
                f"pushes {c['pushes_delivered']:>4}  emails {c['emails_delivered']:>4}"
            )

    def _settle(self, settings: Settings, produced: int, timeout_s: float = 120) -> dict[str, int]:
        """Waits until every reading is consumed and written and every alert transition delivered."""
        deadline = time.monotonic() + timeout_s
        previous: dict[str, int] = {}
        while True:
            counts = self.counts(settings)
            transitions = counts["alerts_raised"] + counts["alerts_resolved"]
            done = (
                counts["readings_consumed"] >= produced
                and counts["points_written"] >= produced
                and counts["pushes_delivered"] >= transitions
                and counts["emails_delivered"] >= transitions
            )
            if (done and counts == previous) or time.monotonic() > deadline:
                return counts
            previous = counts
            time.sleep(2)


async def _produce(settings: Settings, topic: str, records: list[tuple[str, events.Record]]) -> None:
    producer = AIOKafkaProducer(**producer_config(settings))
    await producer.start()
    try:
        for key, record in records:
            await producer.send(topic, events.encode(record), key=key.encode())
        await producer.flush()
    finally:
        await producer.stop()


def run_demo(
    settings: Settings, meters: int, duration_s: float, progress: bool = True,
    announce: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """``announce`` is called once the household app is served, with its address and a demo sign-in."""
    Stack(settings.state_dir).up()
    return DemoRun(Settings(), meters, duration_s, progress, announce).run()
