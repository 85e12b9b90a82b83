"""Session fixtures: each real server of the local stack, started once on free loopback ports.

Each component runs under its own state directory (so a test can stop one without the others).
A fixture yields the settings overrides that point clients at that server; ``make_settings``
merges the ones a test needs and gives the test its own topic prefix and InfluxDB database,
so tests never see each other's data.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

# Subprocesses started by tests must not find a developer's running stack through .state/stack.json.
os.environ["QUARTIER_STATE_DIR"] = tempfile.mkdtemp(prefix="quartier-test-state-")

from quartier.settings import Settings  # noqa: E402
from quartier.stack import Stack  # noqa: E402
from quartier.stack.component import Component  # noqa: E402
from tests.support import isolated_settings  # noqa: E402


def _run_component(root: Path, component: Component) -> Iterator[tuple[Stack, dict[str, Any]]]:
    stack = Stack(root / component.name, [component])
    overrides = stack.up()
    try:
        yield stack, overrides
    finally:
        stack.down()


@pytest.fixture(scope="session")
def stack_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stack")


@pytest.fixture(scope="session")
def broker_stack(stack_root: Path) -> Iterator[tuple[Stack, dict[str, Any]]]:
    from quartier.stack.broker import Broker

    yield from _run_component(stack_root, Broker())


@pytest.fixture(scope="session")
def broker(broker_stack: tuple[Stack, dict[str, Any]]) -> dict[str, Any]:
    return broker_stack[1]


@pytest.fixture(scope="session")
def influx_stack(stack_root: Path) -> Iterator[tuple[Stack, dict[str, Any]]]:
    from quartier.stack.influx import Influx

    yield from _run_component(stack_root, Influx())


@pytest.fixture(scope="session")
def influx(influx_stack: tuple[Stack, dict[str, Any]]) -> dict[str, Any]:
    return influx_stack[1]


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """A PostgreSQL server's database URL, for the read models' PostgreSQL runs.

    Its cluster lives under a directory of its own in /tmp, not under pytest's (mode 0700): as root,
    the server runs as the ``postgres`` user, which must reach its data directory.
    """
    from quartier.stack.postgres import Postgres

    root = Path(tempfile.mkdtemp(prefix="quartier-test-pg-"))
    root.chmod(0o755)
    yield from (overrides["database_url"] for _, overrides in _run_component(root, Postgres()))


@pytest.fixture(scope="session")
def smtp_stack(stack_root: Path) -> Iterator[tuple[Stack, dict[str, Any]]]:
    from quartier.stack.smtp import SmtpServer

    yield from _run_component(stack_root, SmtpServer())


@pytest.fixture(scope="session")
def smtp(smtp_stack: tuple[Stack, dict[str, Any]]) -> dict[str, Any]:
    return smtp_stack[1]


@pytest.fixture(scope="session")
def fcm_stack(stack_root: Path) -> Iterator[tuple[Stack, dict[str, Any]]]:
    from quartier.stack.fcm import FcmEndpoint

    yield from _run_component(stack_root, FcmEndpoint())


@pytest.fixture(scope="session")
def fcm(fcm_stack: tuple[Stack, dict[str, Any]]) -> dict[str, Any]:
    return fcm_stack[1]


@pytest.fixture(scope="session")
def chain_stack(stack_root: Path) -> Iterator[tuple[Stack, dict[str, Any]]]:
    from quartier.stack.chain import Chain

    yield from _run_component(stack_root, Chain())


@pytest.fixture(scope="session")
def chain(chain_stack: tuple[Stack, dict[str, Any]]) -> dict[str, Any]:
    return chain_stack[1]


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """``make_settings(broker, influx, ...)``: settings for this test alone.

    Its own topic prefix, InfluxDB database, FCM project and state directory, merged with the
    overrides of the components passed in.
    """

    def build(*overrides: dict[str, Any], **extra: Any) -> Settings:
        return isolated_settings(tmp_path / "state", *overrides, **extra)

    return build


@pytest.fixture(scope="session")
def victoria(stack_root: Path) -> Iterator[dict[str, Any]]:
    """VictoriaMetrics (not in the default stack): the /api/v2/write target for the writer's v2 path."""
    from quartier.stack.victoria import VictoriaMetrics

    for _, overrides in _run_component(stack_root, VictoriaMetrics()):
        yield overrides
