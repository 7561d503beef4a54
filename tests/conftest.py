"""Fixtures only; the helpers they build on, and the tests use, are in tests/support/."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser

from .support.browser import chromium
from .support.clips import Clips
from .support.internals import Settings, create_app
from .support.queue import Redis
from .support.servers import MakeClient, Serve
from .support.unit import MARKER, forbid_sockets_and_processes
from .support.uploading import AppClient


@pytest.fixture(autouse=True)
def unit_tier(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests marked `unit` may open no socket and start no process (support/unit.py)."""
    if request.node.get_closest_marker(MARKER) is not None:
        forbid_sockets_and_processes(monkeypatch)


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Clips:
    """Clips made on first use, once per test session."""
    return Clips(tmp_path_factory.mktemp("clips"))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", port=0)


@pytest.fixture
def serve(aiohttp_server: Any, settings: Settings) -> Serve:
    """create_app(settings) listening on loopback, with any settings overridden."""
    async def make(**overrides: Any) -> TestServer:
        server: TestServer = await aiohttp_server(create_app(replace(settings, **overrides)))
        return server
    return make


@pytest.fixture
def make_client(aiohttp_client: Any, serve: Serve) -> MakeClient:
    """A test client of serve(), with any settings overridden."""
    async def make(**overrides: Any) -> AppClient:
        client: AppClient = await aiohttp_client(await serve(**overrides))
        return client
    return make


@pytest.fixture
async def client(make_client: MakeClient) -> AppClient:
    return await make_client()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """A headless Chromium of its own for each test."""
    async with chromium() as launched:
        yield launched


@pytest.fixture
async def redis(tmp_path: Path) -> AsyncIterator[Redis]:
    """A redis-server of this test's own on a free loopback port, persistence off."""
    server = Redis(tmp_path / "redis")
    await server.start()
    yield server
    await server.kill()
