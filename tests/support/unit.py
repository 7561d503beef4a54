"""The unit tier (`make test-fast`): tests marked `unit` run with no socket to anything
and no process started, so the tier stays fast and needs no ffmpeg, Redis or browser.

A test that tries either fails at once, naming what it tried, instead of quietly
making the fast tier slow. (The event loop's own wake-up pipe is a socketpair, made
without bind or connect, so asynchronous unit tests are fine.)
"""

from __future__ import annotations

import socket
import subprocess
from typing import Any, NoReturn

import pytest

MARKER = "unit"


class NotAUnitTest(AssertionError):
    """A test of the unit tier reached for a socket or a process."""


def forbid_sockets_and_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(what: str) -> Any:
        def refused(*args: object, **kwargs: object) -> NoReturn:
            raise NotAUnitTest(f"a unit test may not {what}: mark it as a test of the "
                               "full suite instead")
        return refused

    for method in ("bind", "connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, method, refuse(f"{method} a socket"))
    # every way of starting a program, asyncio's included, ends here
    monkeypatch.setattr(subprocess.Popen, "_execute_child", refuse("start a process"))
