"""The installed program: a wheel built from the checkout carries templates/ and static/,
and `python -m video_async` serves the page from a folder that knows nothing of the checkout."""

from __future__ import annotations

import asyncio
import shutil
import sys
import sysconfig
from pathlib import Path

from .support.servers import start_server
from .support.uploading import get_json

ROOT = Path(__file__).resolve().parents[1]
# Not part of the package: left behind, so the build sees only what a fresh clone has
# to build from, and nothing the checkout's own runs wrote.
LEFT_BEHIND = shutil.ignore_patterns(".*", "build", "dist", "*.egg-info", "__pycache__", "tests", "bench",
                                     "docs", "examples", "uploads", "outputs", "test-artifacts")


async def run(*args: str | Path, cwd: Path) -> str:
    """A command's output; it must succeed."""
    proc = await asyncio.create_subprocess_exec(*map(str, args), cwd=cwd, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    async with asyncio.timeout(120):
        out, _ = await proc.communicate()
    assert proc.returncode == 0, f"{args} exited with {proc.returncode}:\n{out.decode(errors='replace')}"
    return out.decode()


async def test_the_wheel_serves_the_page_from_outside_the_checkout(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    source = tmp_path / "video_async-source"
    shutil.copytree(ROOT, source, ignore=LEFT_BEHIND)
    # the build as any user's pip does it: the backend pyproject.toml asks for, in isolation
    await run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", tmp_path / "dist", source,
              cwd=elsewhere)
    [wheel] = (tmp_path / "dist").glob("video_async-*.whl")

    venv = tmp_path / "venv"
    await run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=elsewhere)
    python = venv / "bin" / "python"
    await run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", wheel,
              cwd=elsewhere)
    # The runtime dependencies are this test's own, reached through a .pth line added after
    # the install. Such a line puts a folder on the path but runs none of the .pth files in
    # it, so this test's editable install (a .pth hook into the checkout) stays inert, and
    # the venv's own site-packages, holding the wheel's copy, comes first.
    where = await run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=elsewhere)
    purelib = Path(where.strip())
    (purelib / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    imported = await run(python, "-c", "import video_async; print(video_async.__file__)", cwd=elsewhere)
    assert Path(imported.strip()).is_relative_to(purelib), imported

    server = await start_server(tmp_path / "data", python=str(python), cwd=elsewhere)
    try:
        async with server.session() as session:
            async with session.get("/") as page:
                assert page.status == 200
                html = await page.text()
            assert "<form" in html and "/static/app.js" in html
            async with session.get("/static/app.js") as script:
                assert script.status == 200
                assert await script.read() == (ROOT / "static" / "app.js").read_bytes()
            assert (await get_json(session, "/healthz"))["status"] == "ok"
    finally:
        assert await server.stop() == 0
    assert "Traceback" not in server.output()
