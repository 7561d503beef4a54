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
import subprocess
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
    assert [path.name for path in SOLUTIONS] == ["webm_output.patch"]


@pytest.mark.parametrize("solution", SOLUTIONS, ids=lambda path: path.stem)
def test_the_hints_name_every_file_the_solution_touches(solution: Path) -> None:
    hints = exercise_text(title_of(solution))
    touched = touched_files(solution)
    assert len(touched) >= 2
    assert [name for name in touched if name not in hints] == []


@pytest.mark.parametrize("solution", SOLUTIONS, ids=lambda path: path.stem)
def test_the_solution_still_applies(solution: Path) -> None:
    # --check only: nothing in the tree changes
    done = subprocess.run(["git", "apply", "--check", str(solution)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
