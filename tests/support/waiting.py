"""Waiting for a condition: re-checked under a timeout, never a fixed sleep."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest


async def wait_until(condition: Callable[[], Awaitable[Any]], timeout: float = 60,
                     what: str = "condition") -> Any:
    """Re-check an async condition until it returns something truthy, or fail after timeout."""
    try:
        async with asyncio.timeout(timeout):
            while not (result := await condition()):
                await asyncio.sleep(0.02)
            return result
    except TimeoutError:
        pytest.fail(f"timed out after {timeout} s waiting for {what}")
