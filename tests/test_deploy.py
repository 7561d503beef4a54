"""docs/deploy.md, checked as far as a machine without a real install allows: systemd
itself reads each unit (with the checkout in place of the install folder), the command
each one starts takes its flags and environment file, and the document is followed from
a clone: a web process and two workers started as the units start them, an upload, its
download."""

from __future__ import annotations

import asyncio
import os
import secrets
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from .support.clips import Clips, assert_web_ready
from .support.internals import Settings
from .support.queue import Redis, Worker, workers_ready
from .support.servers import Program, free_port, stopping
from .support.uploading import download, get_json, upload_ok, wait_for_state
from .support.waiting import wait_until

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


async def output_of(*argv: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    proc = await asyncio.create_subprocess_exec(*argv, cwd=cwd, env=env,
                                                stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    async with asyncio.timeout(60):
        out, _ = await proc.communicate()
    assert proc.returncode == 0, (argv, out.decode(errors="replace"))
    return out.decode()


def filled(example: str, values: dict[str, str]) -> str:
    """An example environment file with its placeholders filled in, as the reader does."""
    for placeholder, value in values.items():
        example = example.replace(placeholder, value)
    return example


@dataclass
class Service:
    """What systemd would start for a unit: its command, its environment, its folder."""
    argv: list[str]
    env: dict[str, str]
    folder: Path

    def flag(self, name: str) -> str:
        return self.argv[self.argv.index(name) + 1]

    async def start(self, log: Path) -> Program:
        with log.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(*self.argv, env=self.env, cwd=self.folder,
                                                        stdout=out, stderr=subprocess.STDOUT)
        return Program(proc, log)


def service(root: Path, unit_name: str, port: int, data_dir: Path | None = None) -> Service:
    """A unit of the install under root (a folder standing for the machine's /), as this
    machine can start it: on this test's interpreter with the install first on its path,
    on a free port, and in data_dir if given."""
    def here(path: str) -> Path:
        return root / path.lstrip("/")
    unit = (here(INSTALL) / "examples" / "systemd" / unit_name).read_text()
    argv = shlex.split(unit_line(unit, "ExecStart"))
    assert argv[0] == f"{INSTALL}/.venv/bin/python", argv
    argv[0] = sys.executable
    if "--port" in argv:  # this machine may have something on the document's port
        argv[argv.index("--port") + 1] = str(port)
    at = argv.index("--data-dir") + 1
    argv[at] = str(data_dir or here(argv[at]))
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(here(INSTALL)),
           **environment(here(unit_line(unit, "EnvironmentFile")))}
    return Service(argv, env, here(unit_line(unit, "WorkingDirectory")))


async def test_the_document_followed_from_a_clone(tmp_path: Path, clips: Clips) -> None:
    """docs/deploy.md on one machine, in a folder standing for its root: a clone of this
    checkout's commit as the install folder, Redis with a password, the example
    environment files filled in (mode 600), the web process and two workers started by
    their units' ExecStart lines, as written, with each unit's EnvironmentFile as their
    whole environment and its WorkingDirectory as their folder; each worker in a folder of
    its own (nothing shared but Redis and the server's URL). Then an upload, its transcode
    on a worker, and its download, as a user with the token.

    Not done here, as this machine does not allow it: apt, `make queue-extra` (pip needs the
    network: the clone runs on this test's own interpreter, which has the queue extra, with
    the clone first on its path), useradd and sudo, systemd itself (the units are checked by
    `systemd-analyze verify` above), Redis over TLS (`redis://` here, not `rediss://`) and
    the HTTPS proxy. Uncommitted edits are not in a clone: commit, then run this."""
    root = tmp_path / "root"
    install = root / INSTALL.lstrip("/")
    commit = (await output_of("git", "-C", str(CHECKOUT), "rev-parse", "HEAD")).strip()
    await output_of("git", "clone", "--quiet", str(CHECKOUT), str(install))
    await output_of("git", "-C", str(install), "checkout", "--quiet", "--detach", commit)
    units = install / "examples" / "systemd"

    redis = Redis(tmp_path / "redis", password=secrets.token_urlsafe(16))
    await redis.start()
    try:
        # the secrets made as the document says, and this machine's addresses
        user_token, worker_token = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        port = free_port()
        web_url = f"http://127.0.0.1:{port}"
        values = {"rediss://": "redis://", "REDIS-PASSWORD": redis.password,
                  "redis.internal:6380": f"127.0.0.1:{redis.port}", "USER-TOKEN": user_token,
                  "WORKER-TOKEN": worker_token, "https://video.example.org": web_url}
        (root / "etc" / "video-async").mkdir(parents=True, mode=0o700)  # install -d -m 700
        for unit_name, example in [("video-async-web.service", "web.env.example"),
                                   ("video-async-worker.service", "worker.env.example")]:
            env_file = root / unit_line((units / unit_name).read_text(),
                                        "EnvironmentFile").lstrip("/")
            env_file.write_text(filled((units / example).read_text(), values))
            env_file.chmod(0o600)

        web = service(root, "video-async-web.service", port)
        assert web.folder == install
        assert (web.env["VIDEO_ASYNC_QUEUE"], web.env["VIDEO_ASYNC_TOKEN"],
                web.env["VIDEO_ASYNC_WORKER_TOKEN"]) == (redis.url, user_token, worker_token)
        # the clone's code, not this checkout's, is what runs
        imported = await output_of(sys.executable, "-c",
                                   "import video_async; print(video_async.__file__)",
                                   cwd=web.folder, env=web.env)
        assert Path(imported.strip()).is_relative_to(install), imported
        data_dir = Path(web.flag("--data-dir"))
        data_dir.mkdir(parents=True, mode=0o700)
        web_process = await web.start(tmp_path / "web.log")
        workers: list[Worker] = []
        user_headers = {"Authorization": f"Bearer {user_token}"}
        async with aiohttp.ClientSession(base_url=web_url) as anyone, \
                aiohttp.ClientSession(base_url=web_url, headers=user_headers) as user:
            async def listening() -> bool:
                if web_process.proc.returncode is not None:
                    pytest.fail(f"the web process exited with {web_process.proc.returncode}:\n"
                                + web_process.output())
                try:
                    async with anyone.get("/healthz") as response:
                        return response.status == 200
                except aiohttp.ClientConnectionError:
                    return False
            async with stopping(web_process):
                await wait_until(listening, 30, "the web process to listen")
                for number in (1, 2):  # as on two machines: each its own folder
                    own = root / "var" / "lib" / f"video-async-worker-{number}"
                    own.mkdir(parents=True, mode=0o700)
                    worker = service(root, "video-async-worker.service", port, own)
                    assert (worker.env["VIDEO_ASYNC_QUEUE"], worker.env["VIDEO_ASYNC_SERVER"],
                            worker.env["VIDEO_ASYNC_WORKER_TOKEN"]) == (redis.url, web_url,
                                                                        worker_token)
                    started = await worker.start(tmp_path / f"worker-{number}.log")
                    workers.append(Worker(started.proc, started.log))
                async with stopping(*workers):
                    listed = await workers_ready(user, 2)
                    assert {w["pid"] for w in listed} == {w.proc.pid for w in workers}, listed
                    health = await get_json(user, "/healthz")
                    assert health["queue"]["url"] == f"redis://:***@127.0.0.1:{redis.port}/0"
                    # off loopback, the token from the environment file is asked of everyone
                    assert (await anyone.get("/tasks")).status == 401

                    task = await upload_ok(user, clips.small(), "480")
                    done = await wait_for_state(user, task["id"], "COMPLETED", "FAILED",
                                                timeout=90)
                    assert done["state"] == "COMPLETED", done
                    video = data_dir / "outputs" / f"{task['id']}.mp4"
                    assert await download(user, task["id"]) == video.read_bytes()
                    assert_web_ready(video)
                    assert sum(w.completed(task["id"]) for w in workers) == 1
        for program in (web_process, *workers):  # the password is in no log
            assert redis.password not in program.output(), program.output()
    finally:
        await redis.kill()
