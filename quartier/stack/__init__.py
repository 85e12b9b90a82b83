"""The local stack: real servers on loopback, started, health-checked, recorded and stopped.

``Stack(state_dir).up()`` starts whatever is not already running, each on its default port or a free
one, logs each to ``<state_dir>/logs/<name>.log``, and records pids, ports, URLs and the settings that
point clients at them in ``<state_dir>/stack.json`` (which ``quartier.settings`` reads).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quartier.settings import STACK_FILE
from quartier.stack.component import Component, pick_port, pid_alive, spawn, stop, wait_until


class StackError(RuntimeError):
    pass


def default_components() -> list[Component]:
    from quartier.stack.chain import Chain
    from quartier.stack.fcm import FcmEndpoint
    from quartier.stack.influx import Influx
    from quartier.stack.smtp import SmtpServer

    return [*durable_broker(), Influx(), Chain(), SmtpServer(), FcmEndpoint()]


def durable_broker() -> list[Component]:
    """The embedded broker on its durable log: the object store, the broker, the log's retention.

    In that order: the broker needs the store, the retention needs both.
    """
    from quartier.stack.broker import Broker
    from quartier.stack.retention import Retention
    from quartier.stack.s3 import S3Store

    store = S3Store()
    return [store, Broker(store=store), Retention(store)]


@dataclass
class ComponentStatus:
    name: str
    healthy: bool
    running: bool
    pid: int | None
    port: int | None
    url: str | None
    log: str | None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Stack:
    def __init__(self, state_dir: Path, components: list[Component] | None = None) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.components = components if components is not None else default_components()

    # --- record ---------------------------------------------------------------------------

    @property
    def record_path(self) -> Path:
        return self.state_dir / STACK_FILE

    def _read(self) -> dict[str, Any]:
        try:
            return json.loads(self.record_path.read_text())
        except (OSError, ValueError):
            return {"components": {}, "settings": {}}

    def _write(self, record: dict[str, Any]) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.record_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True))
        tmp.replace(self.record_path)

    def workdir(self, component: Component) -> Path:
        path = self.state_dir / component.name
        path.mkdir(parents=True, exist_ok=True)
        return path

    # --- commands -------------------------------------------------------------------------

    def missing(self) -> list[str]:
        return [line for c in self.components if (line := c.missing())]

    def up(self) -> dict[str, Any]:
        """Starts every component that is not running and healthy; returns the settings overrides."""
        if problems := self.missing():
            raise StackError("\n".join(problems))
        record = self._read()
        taken = {entry["port"] for entry in record["components"].values() if entry.get("port")}
        for component in self.components:
            entry = record["components"].get(component.name)
            if entry and pid_alive(entry["pid"]) and component.healthy(entry["port"]):
                component.located(entry["port"], self.workdir(component))
                continue
            if entry and pid_alive(entry["pid"]):
                stop(entry["pid"])
            # A component that died comes back on its port if it is free: clients that knew it
            # (a stream worker riding out a broker restart) reconnect without being told.
            preferred = entry["port"] if entry else component.default_port
            port = pick_port(preferred, taken - {preferred} if entry else taken)
            taken.add(port)
            workdir = self.workdir(component)
            component.located(port, workdir)
            log = self.state_dir / "logs" / f"{component.name}.log"
            pid = spawn(component.command(port, workdir), log, component.environment(port, workdir), cwd=workdir)
            if not wait_until(lambda: component.healthy(port), component.start_timeout_s):
                alive = pid_alive(pid)
                stop(pid)
                tail = _tail(log)
                raise StackError(
                    f"{component.name} did not become healthy on port {port} within "
                    f"{component.start_timeout_s:.0f}s ({'running' if alive else 'exited'}); log {log}:\n{tail}"
                )
            component.prepare(port, workdir)
            record["components"][component.name] = {
                "pid": pid,
                "port": port,
                "url": component.url(port),
                "log": str(log),
            }
            _merge(record["settings"], component.settings(port, workdir))
            self._write(record)
        return record["settings"]

    def status(self) -> list[ComponentStatus]:
        record = self._read()
        out = []
        for component in self.components:
            entry = record["components"].get(component.name)
            if not entry:
                out.append(ComponentStatus(component.name, False, False, None, None, None, None))
                continue
            running = pid_alive(entry["pid"])
            healthy = running and _safe(lambda: component.healthy(entry["port"]))
            out.append(
                ComponentStatus(
                    component.name, healthy, running, entry["pid"], entry["port"], entry["url"], entry["log"]
                )
            )
        return out

    def settings_overrides(self) -> dict[str, Any]:
        return self._read()["settings"]

    def down(self) -> list[str]:
        """Stops every recorded component (its whole process group); returns the names stopped.

        In the reverse of the starting order, so nothing outlives what it depends on (the broker
        stops before its object store).
        """
        record = self._read()
        stopped = []
        # stack.json keeps its keys sorted: the order is the components'.
        known = [c.name for c in reversed(self.components) if c.name in record["components"]]
        order = known + sorted(set(record["components"]) - set(known))
        for name in order:
            entry = record["components"][name]
            if pid_alive(entry["pid"]):
                stop(entry["pid"])
                stopped.append(name)
        self.record_path.unlink(missing_ok=True)
        return stopped


def _merge(into: dict[str, Any], new: dict[str, Any]) -> None:
    for key, value in new.items():
        if isinstance(value, dict):
            _merge(into.setdefault(key, {}), value)
        else:
            into[key] = value


def _safe(check: Any) -> bool:
    try:
        return bool(check())
    except Exception:
        return False


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
