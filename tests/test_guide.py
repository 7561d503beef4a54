"""The teaching guide names real code (every (`file`, `function`) it points to exists), and
what it claims the code does, the code does."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

from .support.clips import Clips, hanging_ffmpeg
from .support.servers import MakeClient
from .support.uploading import delete, upload_ok, wait_for_state

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "how-it-works.md"
REFERENCE = re.compile(r"\(`(video_async/[\w/]+\.py)`,\s*`([\w.]+)`\)")


def defined_names(source: Path) -> set[str]:
    """Functions and classes of a module, methods as Class.method, and a function's own
    inner functions as function.inner."""
    names: set[str] = set()
    for node in ast.parse(source.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
            names.update(f"{node.name}.{item.name}" for item in node.body
                         if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef))
        elif isinstance(node, ast.ClassDef):
            names.add(node.name)
            names.update(f"{node.name}.{item.name}" for item in node.body
                         if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef))
    return names


def test_every_named_function_exists() -> None:
    references = REFERENCE.findall(GUIDE.read_text())
    assert len(references) >= 20, "the guide should walk through the code"
    missing = [f"{path}: {name}" for path, name in references
               if name not in defined_names(ROOT / path)]
    assert missing == []


def test_the_guide_has_no_leftover_placeholders() -> None:
    assert "PLACEHOLDER" not in GUIDE.read_text()


def test_readme_links_the_guide() -> None:
    assert "docs/how-it-works.md" in (ROOT / "README.md").read_text().split("\n## ")[0]


def test_code_excerpts_are_the_real_code() -> None:
    """Every line of every Python excerpt appears in the package or in examples/ ("..."
    marks a cut)."""
    sources = [*(ROOT / "video_async").rglob("*.py"), *(ROOT / "examples").glob("*.py"),
               *(ROOT / "steps").glob("*.py")]
    source_lines = {line.strip() for path in sources for line in path.read_text().splitlines()}
    excerpts = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), re.S)
    assert excerpts
    stale = [line.strip() for block in excerpts for line in block.splitlines()
             if line.strip() and line.strip() != "..." and line.strip() not in source_lines]
    assert stale == []


def test_the_await_demo_prints_what_the_guide_shows() -> None:
    """steps/01_await.py's output is the one in the guide, and says what the guide's
    rule says: another coroutine runs during an await only if the await suspends."""
    shown = re.search(r"```\n\$ \.venv/bin/python steps/01_await\.py\n(.*?)```",
                      GUIDE.read_text(), re.S)
    assert shown, "the guide shows the demo's output"
    done = subprocess.run([sys.executable, str(ROOT / "steps" / "01_await.py")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == shown.group(1)
    verdicts = [line.rsplit(None, 1)[-1] for line in done.stdout.splitlines()[1:]]
    # done future, coroutine that returns at once, buffered read_chunk: no suspension;
    # unfinished future, read_chunk before the bytes arrive, sleep(0): the loop turns
    assert verdicts == ["no", "no", "no", "yes", "yes", "yes"]


async def test_the_201_of_an_idle_server_says_processing(make_client: MakeClient, clips: Clips,
                                                         tmp_path: Path) -> None:
    """The route awaits tasks.json's write after add(); the worker, woken by add(), was
    ready before that await suspended, so it claims the task before the 201 is encoded.
    Not a race: the route can resume only a loop turn after the writing thread is done.
    (The stand-in ffmpeg holds the job, so a fast machine cannot finish it meanwhile.)"""
    client = await make_client(ffmpeg=str(hanging_ffmpeg(tmp_path)))
    task = await upload_ok(client, clips.small())
    assert task["state"] == "PROCESSING"
    await delete(client, task["id"])


async def test_without_persistence_the_201_comes_before_the_claim(make_client: MakeClient,
                                                                  clips: Clips) -> None:
    """With nothing to write, durable() returns without suspending: the 201 is encoded
    before the worker has had a turn."""
    client = await make_client(persist=False)
    task = await upload_ok(client, clips.small())
    assert (task["state"], task["queue_position"]) == ("QUEUED", 1)
    await wait_for_state(client, task["id"], "COMPLETED")
