"""docs/reference.md says what the program does: every flag with its variable and its
default, and every route, no more and no fewer."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .support.internals import Settings, build_parser, create_app

REFERENCE = Path(__file__).resolve().parents[1] / "docs" / "reference.md"

# A value each variable may take other than its default (and not one that makes up a
# random token: two Settings built from it must be equal).
SAMPLES = {
    "VIDEO_ASYNC_HOST": "::1",
    "VIDEO_ASYNC_PORT": "9000",
    "VIDEO_ASYNC_DATA_DIR": "elsewhere",
    "VIDEO_ASYNC_MAX_UPLOAD_MB": "50",
    "VIDEO_ASYNC_WORKERS": "3",
    "VIDEO_ASYNC_FFMPEG": "/opt/ffmpeg/bin/ffmpeg",
    "VIDEO_ASYNC_CORS_ORIGIN": "http://front.example",
    "VIDEO_ASYNC_JOB_TIMEOUT": "60",
    "VIDEO_ASYNC_STALL_TIMEOUT": "30",
    "VIDEO_ASYNC_MAX_DURATION": "600",
    "VIDEO_ASYNC_MAX_QUEUED": "5",
    "VIDEO_ASYNC_MAX_UPLOADS": "2",
    "VIDEO_ASYNC_DELETE_SOURCES_AFTER": "30",
    "VIDEO_ASYNC_DELETE_TASKS_AFTER": "365",
    "VIDEO_ASYNC_MIN_FREE_MB": "10",
    "VIDEO_ASYNC_UPLOAD_IDLE_TIMEOUT": "5",
    "VIDEO_ASYNC_UPLOAD_EXPIRY": "3600",
    "VIDEO_ASYNC_MAX_UNFINISHED": "5",
    "VIDEO_ASYNC_MAX_UNFINISHED_PER_CLIENT": "2",
    "VIDEO_ASYNC_MAX_RESERVED_MB": "100",
    "VIDEO_ASYNC_MAX_RESERVED_MB_PER_CLIENT": "50",
    "VIDEO_ASYNC_RESERVE_IDLE": "30",
    "VIDEO_ASYNC_HEADER_TIMEOUT": "5",
    "VIDEO_ASYNC_TRUSTED_PROXY": "127.0.0.2",
    "VIDEO_ASYNC_QUEUE": "redis://127.0.0.1:6379/0",
    "VIDEO_ASYNC_QUEUE_HEARTBEAT": "30",
    "VIDEO_ASYNC_MAX_PIXELS": "8294400",
    "VIDEO_ASYNC_FFMPEG_MEMORY_MB": "2048",
    "VIDEO_ASYNC_MAX_PROBES": "2",
    "VIDEO_ASYNC_LOG_LEVEL": "DEBUG",
    "VIDEO_ASYNC_ALLOW_HOST": "video.example",
    "VIDEO_ASYNC_TOKEN": "s3cret",
    "VIDEO_ASYNC_WORKER_TOKEN": "w0rker",
}


def table(section: str) -> list[list[str]]:
    """The rows of the first table under `## section`, each a list of its cells."""
    text = REFERENCE.read_text().split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    return [[cell.strip() for cell in row.strip().strip("|").split(" | ")] for row in rows]


def code(cell: str) -> str:
    """The first `quoted` word of a cell."""
    match = re.search(r"`([^`]+)`", cell)
    assert match, cell
    return match.group(1)


@pytest.mark.unit
def test_every_flag_is_listed() -> None:
    usage = build_parser({}).format_usage()
    flags = set(re.findall(r"\[(--[\w-]+)", usage))
    listed = [code(flag).split()[0] for flag, *_ in table("Settings")]
    assert sorted(listed) == sorted(flags)


@pytest.mark.unit
def test_each_variable_sets_its_flag() -> None:
    rows = table("Settings")
    for flag_cell, env_cell, _default, _meaning in rows:
        flag = code(flag_cell).split()[0]
        variable, _, value = code(env_cell).partition("=")
        if value:  # an on/off flag: the variable's value does what the flag does
            argv = [flag]
        else:
            value = SAMPLES[variable]
            argv = [flag, value]
        from_variable = Settings.from_args([], environ={variable: value})
        assert from_variable != Settings(), f"{variable}={value} changed nothing"
        assert from_variable == Settings.from_args(argv, environ={}), flag
    named = {code(env).partition("=")[0] for _, env, *_ in rows}
    assert set(SAMPLES) <= named, "a sample for a variable the table no longer lists"


@pytest.mark.unit
def test_each_default_is_the_programs() -> None:
    defaults = build_parser({}).parse_args([])
    for flag_cell, _env, default_cell, _meaning in table("Settings"):
        if not re.fullmatch(r"`[^`]+`", default_cell):
            continue  # said in words ("none", "random when ..."): the tests of its rule check it
        stated = default_cell.strip("`")
        actual = getattr(defaults, code(flag_cell).split()[0][2:].replace("-", "_"))
        if isinstance(actual, (int, float)):
            assert float(stated) == actual, flag_cell
        else:
            assert stated == str(actual), flag_cell


@pytest.mark.unit
def test_every_route_is_listed() -> None:
    served = set()
    for route in create_app(Settings()).router.routes():
        path = route.resource.canonical if route.resource else ""
        path = "/static/{}" if path == "/static" else re.sub(r"\{\w+\}", "{}", path)
        served.add((route.method, path))
    # aiohttp answers HEAD wherever it answers GET
    served -= {("HEAD", path) for method, path in served if method == "GET"}
    listed = set()
    for route_cell, *_ in table("HTTP API"):
        for route in re.findall(r"`([A-Z]+ /[^`]*)`", route_cell):  # a path may have two spellings
            method, path = route.split(" ", 1)
            listed.add((method, re.sub(r"\{\w+\}", "{}", path)))
    assert sorted(listed) == sorted(served)
