"""The teaching guide names real code: every (`file`, `function`) it points to exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "how-it-works.md"
REFERENCE = re.compile(r"\(`(video_async/[\w/]+\.py)`,\s*`([\w.]+)`\)")


def defined_names(source: Path) -> set[str]:
    """Functions and classes of a module, methods as Class.method."""
    names: set[str] = set()
    for node in ast.parse(source.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
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
    """Every line of every Python excerpt appears in the package ("..." marks a cut)."""
    source_lines = {line.strip() for path in (ROOT / "video_async").rglob("*.py")
                    for line in path.read_text().splitlines()}
    excerpts = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), re.S)
    assert excerpts
    stale = [line.strip() for block in excerpts for line in block.splitlines()
             if line.strip() and line.strip() != "..." and line.strip() not in source_lines]
    assert stale == []
