"""Waiting for a condition: re-checked under a timeout, never a fixed sleep."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
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


async def in_snapshot(data_dir: Path, task_id: str, state: str) -> None:
    """Wait until tasks.json says so: what a crash a moment later must keep."""
    async def written() -> bool:
        try:
            tasks = json.loads((data_dir / "tasks.json").read_text())["tasks"]
        except (OSError, ValueError):
            return False
        return any(t["id"] == task_id and t["state"] == state for t in tasks)
    await wait_until(written, 10, f"tasks.json to show {task_id} {state}")
