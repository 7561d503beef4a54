"""What runs on this machine, read from /proc: whose processes are still alive, and how big."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path


def _live() -> Iterator[tuple[int, list[bytes]]]:
    """Each process that is not a zombie, with its arguments. A zombie is dead already;
    the point of every check is that it is also reaped, which its parent's wait() does."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(") ", 1)[-1]  # the name may hold ") "
        except OSError:
            continue  # ended while we looked
        if not state.startswith("Z"):
            yield int(entry.name), argv


def ffmpeg_pids(folder: Path) -> list[int]:
    """Running ffmpeg processes whose command line mentions folder (i.e. ours)."""
    mark = str(folder).encode()
    return [pid for pid, argv in _live() if b"ffmpeg" in argv[0] and any(mark in arg for arg in argv)]


async def ffmpeg_gone(folder: Path) -> bool:
    """No ffmpeg of ours left running: a condition for wait_until."""
    return ffmpeg_pids(folder) == []


def probe_pids(server: int) -> list[int]:
    """The probe processes a server started, and any child one of them forked for a file."""
    mark = str(server).encode()
    return [pid for pid, argv in _live() if b"video_async.probe" in argv and mark in argv]


def pids_of(program: Path) -> list[int]:
    """Running processes of a program (such as a stand-in ffmpeg, run by its interpreter)."""
    mark = str(program).encode()
    return [pid for pid, argv in _live() if any(mark in arg for arg in argv)]


def rss_mib(pid: int) -> float:
    """Resident memory of a process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def proc_status(pid: int) -> dict[str, int]:
    """Threads and VmRSS (bytes) of a process, from /proc: counts that do not depend on
    how fast the machine is."""
    found: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key == "Threads":
                found[key] = int(value)
            elif key == "VmRSS":
                found[key] = int(value.split()[0]) * 1024
    return found


def threads_of(pid: int) -> int:
    """How many threads a process has now."""
    return len(list(Path(f"/proc/{pid}/task").iterdir()))
