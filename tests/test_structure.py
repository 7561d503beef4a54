"""The package's shape: what a process loads, and which module may import which."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

# A queue worker's whole start: the command's entry, the worker module, the SAQ pieces its
# serve() imports, and the job function built from its settings (files over HTTP).
WORKER_START = """
import json, logging, sys
import video_async.__main__
from video_async.config import Settings
from video_async.remote_worker import make_job
from video_async.jobs import RedisWatch
from video_async.job_files import FromServer
from saq import Worker
from saq.queue.redis import RedisQueue
settings = Settings.for_worker(["--queue", "redis://127.0.0.1:1/0", "--data-dir", ".",
                                "--server", "http://127.0.0.1:1", "--worker-token", "t"])
make_job(settings, "ffmpeg", RedisWatch(settings.queue, logging.getLogger()),
         FromServer(settings.server_url, settings.worker_token, settings.layout))
print(json.dumps(sorted(sys.modules)))
"""


def test_a_queue_worker_loads_no_web_server_and_no_templates() -> None:
    done = subprocess.run([sys.executable, "-c", WORKER_START], capture_output=True, text=True,
                          timeout=60, check=True)
    loaded = json.loads(done.stdout)
    assert "video_async.remote_worker" in loaded and "video_async.worker" in loaded
    web = [name for name in loaded
           if name.startswith(("aiohttp.web", "jinja2", "video_async.routes", "video_async.app",
                               "video_async.keys", "video_async.access", "video_async.errors"))]
    assert web == []


PACKAGE = Path(__file__).resolve().parents[1] / "video_async"
# What mirrors the original (server.js: app; tasksStore.js: store; worker.js: worker; its
# two route files) and the services it stands on: an app of these alone takes an upload,
# transcodes it and serves the result.
CORE = {"app", "store", "worker", "routes.uploads", "routes.tasks",
        "routes.intake", "receive", "durable", "multipart", "snapshot", "display", "layout", "config",
        "ffmpeg", "probing", "probe", "processes", "mp4", "errors", "keys", "loop_lag"}
# Each plugs in through one setup(app) (features.py lists them), or serves one that does.
WINGS = {"access", "recovery", "retention", "tus.__init__", "tus.protocol", "tus.handlers", "tus.uploads",
         "tus.wing", "routes.limits",
         "queue", "jobs", "remote_worker", "teach", "job_files",
         "routes.workers"}
# The command, the list of wings, and the page (which shows what every wing is doing).
OTHERS = {"__init__", "__main__", "features", "routes.__init__", "routes.pages"}


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE).with_suffix("").parts)


def imported(path: Path) -> set[str]:
    """The package's modules that `path` imports, wherever in it: a function's lazy import,
    and one for the type checker alone (a circle a reader must follow is one all the same)."""
    tree = ast.parse(path.read_text())
    here = module_name(path).split(".")[:-1]  # the package the module is in
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = here[:len(here) - node.level + 1]
            stem = [*base, *(node.module.split(".") if node.module else [])]
            for alias in node.names:
                found.add(".".join([*stem, alias.name]))
                found.add(".".join(stem))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) \
                else [node.module or ""]
            found |= {name.removeprefix("video_async.") for name in names
                      if name.startswith("video_async.")}
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    return {name for name in found if name in modules} - {module_name(path)}


def import_graph() -> dict[str, set[str]]:
    return {module_name(path): imported(path) for path in PACKAGE.rglob("*.py")}


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for name in graph[todo.pop()] - seen:
            seen.add(name)
            todo.append(name)
    return seen


@pytest.mark.unit
def test_every_module_is_core_a_wing_or_named() -> None:
    assert set(import_graph()) == CORE | WINGS | OTHERS


@pytest.mark.unit
def test_no_import_circle() -> None:
    graph = import_graph()
    circles = sorted(name for name in graph if name in reachable(graph, name))
    assert circles == []


@pytest.mark.unit
def test_no_core_module_imports_a_wing() -> None:
    graph = import_graph()
    assert {name: sorted(graph[name] & WINGS) for name in CORE if graph[name] & WINGS} == {}
    # nor through another module: only the app factory reaches the wings, through their list
    assert {name: sorted(reachable(graph, name) & WINGS)
            for name in CORE - {"app"} if reachable(graph, name) & WINGS} == {}
    assert graph["app"] & (WINGS | OTHERS) == {"features", "routes.pages"}
    graph["features"] = set()  # the list of wings: a reader of the core stops there
    assert reachable(graph, "app") & WINGS == set()
