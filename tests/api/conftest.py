"""The API layer under test: the notes surface composed by the same function as `quartier api serve`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from api.compose import compose
from quartier.settings import Settings
from tests.api.surface import surface


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def notes_client(tmp_path: Any, registry: CollectorRegistry) -> Callable[..., Any]:
    """``async with notes_client(api={...}) as client``: an HTTP client of a freshly composed app."""

    def open_client(**settings: Any) -> httpx.AsyncClient:
        app = compose(Settings(state_dir=tmp_path, **settings), registry, [("notes", surface)])
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://notes.test")

    return open_client


@pytest.fixture
async def client(notes_client: Callable[..., httpx.AsyncClient]) -> AsyncIterator[httpx.AsyncClient]:
    async with notes_client() as c:
        yield c
