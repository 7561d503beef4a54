"""The teaching guide names real code (every (`file`, `function`) it points to exists), and
what it claims the code does, the code does."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

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


# -- every measured number is the bench's ---------------------------------------------------

RESULTS = ROOT / "bench" / "results.json"
NUMBER = r"\d[\d,]*(?:\.\d+)?"
# a number with a unit of measure (or a ratio, "1.4x"), alone or as a range "0.9-1.4x"
MEASURED = re.compile(rf"(?<![\w.\-/])({NUMBER})(?:-({NUMBER}))?(?: ?)(ms|MB/s|MiB|KiB|GB|MB|s|x)(?![\w/])")
# what follows a figure taken from bench/results.json: <!--bench ITEM | FIGURE--> gives its
# median, <!--bench range ITEM | FIGURE--> its min-max over the runs
BENCH_NOTE = re.compile(r"\s*<!--bench (?:(range|median) )?(.+?) \| (.+?)-->")
# Numbers with units that are not measurements: settings, constants of the code, the
# sizes the steps and the bench choose, and the original app's polling interval.
NOT_MEASURED = {
    "200 MB", "200 MiB", "200 MB/s", "20 GB", "10 ms", "20 ms", "5 ms", "100 ms", "2 s", "0.1 s", "0.5 s",
    "16 KiB", "64 KiB", "256 KiB", "1 MiB", "4 MiB", "8 MiB", "32 MiB", "100 MiB", "199 MiB",
    "200 KB/s", "25 MB/s", "5 MB", "5 s", "30 s", "1.5x", "2x", "3x", "1.25x", "20 MiB",
    "50 ms", "64 MiB", "15 s", "60 s",
    "12 s",  # the text of a card, as an example
    "2 MiB",  # an upload's buffers, in the first design
    "0.7x", "1.2x", "1.3x",  # the bench's bars, as results.json words them (checked below)
}


def prose(text: str) -> str:
    """The text a reader reads as claims: no code blocks, no inline code."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def bench_figure(results: dict[str, Any], item: str, figure: str) -> dict[str, Any]:
    found = [entry for entry in results["figures"]
             if entry["item"] == item and entry["figure"] == figure]
    assert len(found) == 1, f"bench/results.json has no figure {item!r} | {figure!r}"
    entry: dict[str, Any] = found[0]
    return entry


def written_as(written: str, value: float) -> bool:
    """True if `written` is `value` rounded to as many decimals as it shows."""
    decimals = len(written.split(".")[1]) if "." in written else 0
    return bool(abs(float(written.replace(",", "")) - value) <= 0.5 * 10**-decimals + 1e-9)


def unchecked_numbers(text: str, results: dict[str, Any]) -> list[str]:
    """Every measured number of `text` that is neither the bench's (as its note says)
    nor in NOT_MEASURED."""
    wrong: list[str] = []
    for match in MEASURED.finditer(text):
        low, high, unit = match.groups()
        note = BENCH_NOTE.match(text, match.end())
        shown = match.group(0)
        if note is None:
            if f"{low} {unit}" not in NOT_MEASURED and shown not in NOT_MEASURED:
                wrong.append(f"{shown}: no <!--bench ...--> note, and not a known constant")
            continue
        how, item, figure = note.groups()
        entry = bench_figure(results, item, figure)
        if how == "range" or high is not None:
            if not (high and written_as(low, entry["min"]) and written_as(high, entry["max"])):
                wrong.append(f"{shown}: the bench's range is {entry['min']:g}-{entry['max']:g}")
        elif not written_as(low, entry["median"]):
            wrong.append(f"{shown}: the bench's median is {entry['median']:g}")
    return wrong


@pytest.mark.parametrize("document", ["docs/how-it-works.md", "README.md"])
def test_every_measured_number_is_the_benchs(document: str) -> None:
    """A figure in the guide or the README is the one in bench/results.json, rounded as
    written; a new `make bench` that changes it makes this fail until the text follows."""
    results = json.loads(RESULTS.read_text())
    text = prose((ROOT / document).read_text())
    assert unchecked_numbers(text, results) == []


def test_the_number_check_catches_a_wrong_figure() -> None:
    results = {"figures": [{"item": "1 upload", "figure": "route MB/s", "median": 336.02,
                            "min": 210.6, "max": 540.8}]}
    assert unchecked_numbers("at 336 MB/s<!--bench 1 upload | route MB/s-->", results) == []
    assert unchecked_numbers("at 838 MB/s<!--bench 1 upload | route MB/s-->", results) != []
    assert unchecked_numbers("211-541 MB/s<!--bench range 1 upload | route MB/s-->", results) == []
    assert unchecked_numbers("at 838 MB/s, measured", results) != []


def test_the_guide_lists_the_bars_the_last_run_missed() -> None:
    results = json.loads(RESULTS.read_text())
    missed = {f"{bar['item']}: {bar['bar']}" for bar in results["bars"] if not bar["met"]}
    section = GUIDE.read_text().split("**The bars the last run missed.**", 1)[1].split("\n\n", 2)[1]
    listed = {line.removeprefix("- ") for line in section.splitlines()}
    assert listed == missed
