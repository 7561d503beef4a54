"""Settings from flags and VIDEO_ASYNC_* variables, for the server and for a queue worker:
what each gives, which wins, and the values refused with a line that names the flag."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from .support.internals import (MAX_PIXELS_CEILING, MIB, Settings, build_parser, build_worker_parser,
                                is_loopback)

pytestmark = pytest.mark.unit


def refusal(argv: list[str], environ: dict[str, str] | None = None, worker: bool = False) -> str:
    """The one line a refused start prints."""
    build = Settings.for_worker if worker else Settings.from_args
    with pytest.raises(SystemExit) as refused:
        build(argv, environ=environ or {})
    return str(refused.value.code)


def test_flags_set_what_they_name() -> None:
    settings = Settings.from_args(
        ["--host", "::1", "--port", "9000", "--data-dir", "media", "--max-upload-mb", "50",
         "--workers", "2", "--ffmpeg", "/opt/ffmpeg", "--cors-origin", "http://a.test",
         "--cors-origin", "http://b.test", "--allow-host", "video.example",
         "--trusted-proxy", "10.0.0.1", "--log-level", "debug", "--max-pixels", "100"],
        environ={})
    assert (settings.host, settings.port, settings.data_dir) == ("::1", 9000, Path("media"))
    assert (settings.max_upload_bytes, settings.workers, settings.ffmpeg) == (50 * MIB, 2, "/opt/ffmpeg")
    assert settings.cors_origins == ("http://a.test", "http://b.test")
    assert settings.allowed_hosts == ("video.example",)
    assert settings.trusted_proxies == ("10.0.0.1",)
    assert (settings.log_level, settings.max_pixels) == ("DEBUG", 100)
    assert settings.layout.uploads_dir == Path("media") / "uploads"


def test_a_flag_wins_over_its_variable() -> None:
    environ = {"VIDEO_ASYNC_PORT": "9001", "VIDEO_ASYNC_CORS_ORIGIN": "http://a.test, http://b.test,",
               "VIDEO_ASYNC_ALLOW_HOST": "one.example"}
    from_env = Settings.from_args([], environ=environ)
    assert from_env.port == 9001 and from_env.cors_origins == ("http://a.test", "http://b.test")
    from_both = Settings.from_args(["--port", "9002", "--cors-origin", "http://c.test",
                                    "--allow-host", "two.example"], environ=environ)
    # a list given on the command line replaces the variable's, it does not add to it
    assert from_both.port == 9002 and from_both.cors_origins == ("http://c.test",)
    assert from_both.allowed_hosts == ("two.example",)


@pytest.mark.parametrize(("value", "persist"), [
    ("0", False), ("false", False), ("No", False), ("off", False), ("1", True), ("yes", True)])
def test_persistence_is_on_unless_turned_off(value: str, persist: bool) -> None:
    assert Settings.from_args([], environ={"VIDEO_ASYNC_PERSIST": value}).persist is persist
    assert Settings.from_args(["--no-persist"], environ={"VIDEO_ASYNC_PERSIST": value}).persist is False


def test_a_server_others_can_reach_gets_a_token() -> None:
    assert Settings.from_args([], environ={}).token == ""  # loopback: none
    first = Settings.from_args(["--host", "0.0.0.0"], environ={}).token
    second = Settings.from_args(["--host", "0.0.0.0"], environ={}).token
    assert len(first) == 64 and int(first, 16) >= 0 and first != second  # new, random, hex
    assert Settings.from_args(["--host", "0.0.0.0", "--token", "s3cret"], environ={}).token == "s3cret"
    assert Settings.from_args(["--host", "0.0.0.0"], environ={"VIDEO_ASYNC_TOKEN": "t"}).token == "t"
    open_to_all = Settings.from_args(["--host", "0.0.0.0"], environ={"VIDEO_ASYNC_NO_TOKEN": "1"})
    assert (open_to_all.token, open_to_all.no_token) == ("", True)
    assert "s3cret" not in repr(Settings.from_args(["--token", "s3cret"], environ={}))


@pytest.mark.parametrize(("argv", "environ", "named"), [
    (["--workers", "0"], {}, "--workers"),
    (["--max-upload-mb", "0"], {}, "--max-upload-mb"),
    (["--job-timeout", "0"], {}, "--job-timeout"),
    (["--stall-timeout", "-1"], {}, "--stall-timeout"),
    ([], {"VIDEO_ASYNC_MAX_DURATION": "0"}, "--max-duration"),
    (["--upload-expiry", "0"], {}, "--upload-expiry"),
    (["--max-probes", "0"], {}, "--max-probes"),
    (["--header-timeout", "0"], {}, "--header-timeout"),
    (["--max-queued", "0"], {}, "--max-queued"),
    (["--min-free-mb", "-1"], {}, "--min-free-mb"),
    (["--ffmpeg-memory-mb", "-1"], {}, "--ffmpeg-memory-mb"),
    (["--max-pixels", str(MAX_PIXELS_CEILING + 1)], {}, "--max-pixels"),
    (["--queue", "http://q:6379"], {}, "--queue"),
    (["--queue-heartbeat", "0"], {}, "--queue-heartbeat"),
    (["--trusted-proxy", "proxy.example"], {}, "--trusted-proxy"),
    (["--token", "s3cret", "--no-token"], {}, "--no-token"),
    (["--token", "a b"], {}, "token"),
    ([], {"VIDEO_ASYNC_LOG_LEVEL": "chatty"}, "VIDEO_ASYNC_LOG_LEVEL"),
])
def test_a_bad_value_is_refused_with_a_line_naming_it(argv: list[str], environ: dict[str, str],
                                                      named: str) -> None:
    line = refusal(argv, environ)
    assert line.startswith("video-async: ") and named in line and "\n" not in line


@pytest.mark.parametrize("argv", [["--port", "eighty"], ["--workers", "1.5"],
                                  ["--log-level", "chatty"], ["--no-such-flag"]])
def test_a_malformed_flag_is_refused_by_the_parser(argv: list[str],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert refusal(argv) == "2"  # argparse's own exit status, with its usage line
    assert "usage: video-async" in capsys.readouterr().err


def test_a_worker_takes_the_servers_job_settings() -> None:
    worker = Settings.for_worker(["--queue", "redis://q:6379/0", "--data-dir", "/mnt/video",
                                  "--jobs", "3", "--stall-timeout", "30"],
                                 environ={"VIDEO_ASYNC_QUEUE_HEARTBEAT": "20"})
    assert (worker.queue, worker.data_dir, worker.workers) == ("redis://q:6379/0", Path("/mnt/video"), 3)
    assert (worker.stall_timeout, worker.queue_heartbeat) == (30, 20)
    assert worker.job_timeout == Settings().job_timeout
    from_env = Settings.for_worker([], environ={"VIDEO_ASYNC_QUEUE": "redis://q/1"})
    assert from_env.queue == "redis://q/1"


def test_the_flags_a_worker_shares_with_the_server_are_the_same_flags() -> None:
    """Defined once: same default, same help, so a worker is set up as its server is."""
    def flags(parser: argparse.ArgumentParser) -> dict[str, tuple[object, str | None]]:
        return {action.dest: (action.default, action.help) for action in parser._actions}
    server, worker = flags(build_parser({})), flags(build_worker_parser({}))
    shared = set(server) & set(worker)
    assert {"ffmpeg", "job_timeout", "stall_timeout", "max_pixels", "ffmpeg_memory_mb",
            "queue_heartbeat", "log_level"} <= shared
    for name in shared - {"queue", "data_dir", "help"}:  # these two say whose they are
        assert server[name] == worker[name], name


@pytest.mark.parametrize(("argv", "named"), [
    ([], "--queue"), (["--queue", "redis://q/0", "--jobs", "0"], "--jobs"),
    (["--queue", "redis://q/0", "--ffmpeg-memory-mb", "-1"], "--ffmpeg-memory-mb"),
    (["--queue", "redis://q/0", "--queue-heartbeat", "0"], "--queue-heartbeat"),
    (["--queue", "q:6379"], "--queue"),
    (["--queue", "redis://q/0", "--job-timeout", "0"], "--job-timeout"),
])
def test_a_worker_refuses_what_it_cannot_run_with(argv: list[str], named: str) -> None:
    line = refusal(argv, worker=True)
    assert line.startswith("video-async") and named in line


@pytest.mark.parametrize(("host", "loopback"), [
    ("localhost", True), ("LOCALHOST.", True), ("127.0.0.1", True), ("127.8.9.10", True),
    ("::1", True), ("0.0.0.0", False), ("::", False), ("192.168.1.2", False),
    ("localhost.example", False), ("", False)])
def test_loopback_is_this_machine_only(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
    assert Settings(host=host).on_loopback is loopback
