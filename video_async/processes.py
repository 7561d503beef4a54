"""Starting child processes cheaply, and never leaving one behind.

Each child starts from an argument list, never a shell string, with a lower priority
and an address-space cap of its own, set by util-linux tools that then exec the command
(no code of ours runs between fork and exec, so Python can vfork). Children are reaped
from the loop (a pidfd each, no thread per child), and `stop` ends one whatever it is
doing: terminate, then kill after a grace period, then reap.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import resource
import shutil
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any, TypeVarTuple

log = logging.getLogger(__name__)

NICENESS = 10

_death_signal: list[str] = []  # the launcher die_with_parent() puts before each command


@functools.cache
def _tool(name: str) -> str | None:
    """A util-linux program (setpriv, prlimit), looked up once."""
    return shutil.which(name)


def die_with_parent() -> None:
    """From now on, every ffmpeg this process starts is killed when it dies (Linux).

    A queue worker calls this at start: a worker killed with SIGKILL then leaves no
    ffmpeg writing into the shared data dir while its job runs again on another worker.
    The single server keeps its ffmpeg instead: recovery at its next start finds and
    stops them.

    util-linux's `setpriv --pdeathsig KILL` asks for the signal and then execs the
    command, which keeps it: no code of ours runs between fork and exec, so Python can
    start children with vfork instead of copying the whole process. (A worker killed
    in the microseconds between the vfork and setpriv's prctl would miss it.)
    """
    setpriv = _tool("setpriv")
    if setpriv is None:
        log.warning("setpriv (util-linux) not found: an ffmpeg may outlive a killed worker")
        return
    _death_signal[:] = [setpriv, "--pdeathsig", "KILL", "--"]


def _launcher(memory_bytes: int) -> list[str]:
    """What runs before the command: the death signal, then the memory cap, each of
    which execs the next, so the cap is in force before ffmpeg's first instruction."""
    launcher = list(_death_signal)
    if memory_bytes and (prlimit := _tool("prlimit")):
        launcher += [prlimit, f"--as={memory_bytes}", "--"]
    return launcher


_Ts = TypeVarTuple("_Ts")


class _PidfdWatcher(asyncio.AbstractChildWatcher):
    """Python 3.12's child watcher, for 3.11: each child's exit is read from a pidfd on
    the loop that started it. 3.11's default starts a thread per child, and its own
    PidfdChildWatcher is tied to one loop."""

    def add_child_handler(self, pid: int, callback: Callable[[int, int, *_Ts], object],
                          *args: *_Ts) -> None:
        loop = asyncio.get_running_loop()
        pidfd = os.pidfd_open(pid)
        loop.add_reader(pidfd, self._reap, loop, pid, pidfd, callback, args)

    @staticmethod
    def _reap(loop: asyncio.AbstractEventLoop, pid: int, pidfd: int,
              callback: Callable[..., object], args: tuple[Any, ...]) -> None:
        loop.remove_reader(pidfd)
        os.close(pidfd)
        try:
            _, status = os.waitpid(pid, 0)
            code = os.waitstatus_to_exitcode(status)
        except ChildProcessError:  # reaped by someone else
            code = 255
        callback(pid, code, *args)

    def remove_child_handler(self, pid: int) -> bool:
        return True  # asyncio never calls it

    def attach_loop(self, loop: asyncio.AbstractEventLoop | None) -> None:
        pass

    def close(self) -> None:
        pass

    def is_active(self) -> bool:
        return True

    def __enter__(self) -> _PidfdWatcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass


def watch_children() -> None:
    """Reap children without a thread each (on 3.12 and later, asyncio already does)."""
    if sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"):
        return
    with warnings.catch_warnings():  # get_child_watcher is deprecated from 3.12 on
        warnings.simplefilter("ignore", DeprecationWarning)
        if not isinstance(asyncio.get_child_watcher(), _PidfdWatcher):
            asyncio.set_child_watcher(_PidfdWatcher())


async def start(args: Sequence[str], memory: int, stdin: int = asyncio.subprocess.DEVNULL,
                 stderr: int | None = asyncio.subprocess.PIPE) -> asyncio.subprocess.Process:
    """A child under the launcher (death signal, memory cap), at a lower priority."""
    # start_new_session: a Ctrl-C in the terminal reaches the server only; the
    # server then stops ffmpeg itself, in order, instead of ffmpeg racing it.
    proc = await asyncio.create_subprocess_exec(
        *_launcher(memory), *args, stdin=stdin,
        stdout=asyncio.subprocess.PIPE, stderr=stderr, start_new_session=True)
    if memory and _tool("prlimit") is None:
        # no prlimit to launch through: capped a moment after the start, before the
        # child has read much of anything
        with contextlib.suppress(OSError):
            resource.prlimit(proc.pid, resource.RLIMIT_AS, (memory, memory))
    # ffmpeg would happily take every core; at a lower priority it still does, but
    # the event loop gets the CPU at once when a request comes in.
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, proc.pid, NICENESS)
    return proc


async def stop(proc: asyncio.subprocess.Process, grace: float) -> None:
    """terminate, wait up to grace seconds, kill, and always reap, even when cancelled."""
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        await asyncio.wait_for(asyncio.shield(proc.wait()), grace)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await asyncio.shield(proc.wait())
    except asyncio.CancelledError:
        # cancelled again while stopping: still make sure nothing is left running
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await asyncio.shield(proc.wait())
        raise
    log.debug("stopped child pid %s", proc.pid)
