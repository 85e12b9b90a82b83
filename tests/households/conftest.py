"""One run of the stream worker over every scripted home, shared by the household tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.households.scenarios import Told, tell


@pytest.fixture(scope="package")
async def told(
    broker: dict[str, Any], influx: dict[str, Any], smtp: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Told]:
    async for run in tell(broker, influx, smtp, tmp_path_factory.mktemp("household-homes")):
        yield run
