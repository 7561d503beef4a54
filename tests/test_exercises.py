"""The guide's exercises are honest: each reference solution still applies to the code,
and the exercise's hints name every file that solution had to change.

A reference solution is a diff in tests/exercises/, made on a branch of its own
(`git diff <base> <branch>`), whose first line names the exercise as the guide
titles it ("Exercise: A second output format."). When the code moves on and a
solution no longer applies, redo it on that branch over the new code and save
the diff again: the failure means the exercise, and maybe its hints, went stale.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "how-it-works.md"
SOLUTIONS = sorted((ROOT / "tests" / "exercises").glob("*.patch"))


def exercise_text(title: str) -> str:
    """The numbered item of the guide's Exercises section whose bold title is `title`."""
    section = GUIDE.read_text().split("\n## Exercises\n", 1)[1].split("\n## ", 1)[0]
    items = re.split(r"\n(?=\d+\. \*\*)", "\n" + section)
    found = [item for item in items if item.lstrip().split("**")[1:2] == [title]]
    assert len(found) == 1, f"the guide has no exercise titled {title!r}"
    return found[0]


def title_of(solution: Path) -> str:
    first = solution.read_text().splitlines()[0]
    assert first.startswith("Exercise: "), f"{solution.name} does not say which exercise it solves"
    return first.removeprefix("Exercise: ")


def touched_files(solution: Path) -> list[str]:
    return re.findall(r"^diff --git a/(\S+) b/", solution.read_text(), re.MULTILINE)


def test_there_is_a_reference_solution() -> None:
    assert [path.name for path in SOLUTIONS] == ["server_sent_events.patch", "step5_workers.patch",
                                                 "uploads_per_client.patch", "webm_output.patch"]


@pytest.mark.parametrize("solution", SOLUTIONS, ids=lambda path: path.stem)
def test_the_hints_name_every_file_the_solution_touches(solution: Path) -> None:
    hints = exercise_text(title_of(solution))
    touched = touched_files(solution)
    assert touched
    assert [name for name in touched if name not in hints] == []


@pytest.mark.parametrize("solution", SOLUTIONS, ids=lambda path: path.stem)
def test_the_solution_still_applies(solution: Path) -> None:
    # --check only: nothing in the tree changes
    done = subprocess.run(["git", "apply", "--check", str(solution)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_two_workers_take_a_burst_at_once(tmp_path: Path) -> None:
    """Exercise 1's reference, applied to a copy of the steps and run: with --burst, one
    worker leaves the second job waiting for the first (a second or more, at ffmpeg's
    real pace); two workers pick both up at once."""
    shutil.copytree(ROOT / "steps", tmp_path / "steps")
    patch = ROOT / "tests" / "exercises" / "step5_workers.patch"
    applied = subprocess.run(["git", "apply", str(patch)], cwd=tmp_path, capture_output=True,
                             text=True, timeout=60)
    assert applied.returncode == 0, applied.stderr

    def waits(*args: str) -> list[float]:
        done = subprocess.run([sys.executable, str(tmp_path / "steps" / "05_ffmpeg_worker.py"),
                               "--burst", "--jobs", "2", "--seconds", "2", *args],
                              capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        found = re.findall(r"job \d: picked up ([\d.]+) ms after its put", done.stdout)
        assert len(found) == 2, done.stdout
        return sorted(float(ms) for ms in found)

    assert waits()[1] >= 500  # one worker: the second job waited for the whole first
    assert waits("--workers", "2")[1] < 500  # two: nobody waited for a job to end


def passes_its_own_test(tmp_path: Path, patch_name: str, test_file: str) -> None:
    """A reference solution, applied to a copy of the checkout: the test it adds passes
    against the code it changes (the copy's package comes first on the path)."""
    copy = tmp_path / "checkout"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(
        ".git", ".venv", "*.egg-info", "uploads", "outputs", "test-artifacts", "__pycache__"))
    patch = ROOT / "tests" / "exercises" / patch_name
    applied = subprocess.run(["git", "apply", str(patch)], cwd=copy, capture_output=True,
                             text=True, timeout=60)
    assert applied.returncode == 0, applied.stderr
    ran = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          test_file], cwd=copy, capture_output=True, text=True, timeout=170)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "1 passed" in ran.stdout


def test_the_per_client_limit_passes_its_own_test(tmp_path: Path) -> None:
    """Exercise 3's reference."""
    passes_its_own_test(tmp_path, "uploads_per_client.patch", "tests/test_uploads_per_client.py")


def test_the_event_stream_passes_its_own_test(tmp_path: Path) -> None:
    """Exercise 2's reference."""
    passes_its_own_test(tmp_path, "server_sent_events.patch", "tests/test_events.py")
