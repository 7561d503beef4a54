"""docs/deploy.md's service files, checked as far as a machine without a real install
allows: systemd itself reads each unit (with the checkout in place of the install
folder), and the command each one starts takes its flags and environment file."""

from __future__ import annotations

import asyncio
import shlex
import shutil
from pathlib import Path

import pytest

from .support.internals import Settings

CHECKOUT = Path(__file__).resolve().parents[1]
UNITS = CHECKOUT / "examples" / "systemd"
INSTALL = "/opt/video_async"  # where docs/deploy.md clones it


def unit_line(unit: str, key: str) -> str:
    lines = [line for line in unit.splitlines() if line.startswith(key + "=")]
    assert len(lines) == 1, (key, lines)
    return lines[0].partition("=")[2]


def environment(path: Path) -> dict[str, str]:
    pairs = [line.partition("=") for line in path.read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    return {name: value for name, _, value in pairs}


@pytest.mark.parametrize(("unit_name", "env_name"), [
    ("video-async-web.service", "web.env.example"),
    ("video-async-worker.service", "worker.env.example"),
])
async def test_a_service_file_is_one_systemd_accepts(tmp_path: Path, unit_name: str,
                                                      env_name: str) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze not found: install Debian's systemd package (make test does)")
    unit = (UNITS / unit_name).read_text()
    here = unit.replace(INSTALL, str(CHECKOUT))
    here = here.replace(unit_line(unit, "EnvironmentFile"), str(UNITS / env_name))
    # the service's user exists only on a real install
    here = "\n".join(line for line in here.splitlines() if not line.startswith(("User=", "Group=")))
    copy = tmp_path / unit_name
    copy.write_text(here)
    proc = await asyncio.create_subprocess_exec(analyze, "verify", str(copy),
                                                stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode == 0, (out + err).decode()

    argv = shlex.split(unit_line(unit, "ExecStart"))
    assert argv[:3] == [f"{INSTALL}/.venv/bin/python", "-m", "video_async"]
    env = environment(UNITS / env_name)
    if argv[3:4] == ["worker"]:  # what `make worker ARGS=...` runs
        settings = Settings.for_worker(argv[4:], env)
        assert settings.server_url and settings.worker_token and settings.queue
        assert settings.queue.startswith("rediss://")  # Redis over TLS, with a password
    else:
        settings = Settings.from_args(argv[3:], env)
        assert settings.queue.startswith("rediss://") and settings.worker_token
        assert settings.token  # a stable token, not a new one at each start
    assert str(settings.data_dir).startswith("/var/lib/")
