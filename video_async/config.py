"""Settings: every knob of the app, read once from CLI flags and VIDEO_ASYNC_* variables.

The app never reads the environment anywhere else, so tests build a Settings
directly and get exactly the app they describe.
"""

from __future__ import annotations

import argparse
import functools
import ipaddress
import math
import os
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .layout import DataLayout

MIB = 1024 * 1024
RESOLUTIONS = (480, 720, 1080)  # the short side of the output, in pixels
DEFAULT_RESOLUTION = 720
# "all sizes": an HLS ladder of every size up to the source's (ffmpeg.ladder_sizes), and an
# MP4 of its top rung to download
ALL_SIZES: Literal["all"] = "all"
Resolution = int | Literal["all"]  # what an order asks for: one of RESOLUTIONS, or ALL_SIZES
MAX_PIXELS_CEILING = 2**31 - 1  # FFmpeg's max_pixels is a C int
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
TOKEN_CHARACTERS = re.compile(r"[A-Za-z0-9._~-]+")  # URL- and cookie-safe as they are
PACKAGE_DIR = Path(__file__).parent


@functools.lru_cache(maxsize=64)  # asked on every request, of the few names a server is called by
def is_loopback(host: str) -> bool:
    """True for a name or address of this machine only: localhost, 127.x.x.x, ::1."""
    if host.rstrip(".").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def asset_dir(name: str) -> Path:
    """templates/ or static/: inside the installed package (a wheel puts them there),
    else beside the package, at the top of a checkout."""
    installed = PACKAGE_DIR / name
    return installed if installed.is_dir() else PACKAGE_DIR.parent / name


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Path(".")
    max_upload_bytes: int = 200 * MIB
    workers: int = 1
    ffmpeg: str | None = None  # None: the binary bundled with imageio-ffmpeg
    cors_origins: tuple[str, ...] = ()
    job_timeout: float = 3600.0  # seconds one transcode may take before it is killed
    stall_timeout: float = 120.0  # seconds without ffmpeg progress before a job is killed
    max_duration: float = 3 * 3600.0  # seconds: longer videos are refused at upload (422)
    max_queued: int = 100  # queued tasks (plus uploads in progress) before uploads get 503
    max_uploads: int = 1000  # uploads streaming at once before the next one gets 503 (as measured)
    min_free_bytes: int = 1024 * MIB  # disk space uploads may never eat into (507)
    upload_idle_timeout: float = 60.0  # seconds an upload may send nothing before it is dropped
    upload_expiry: float = 24 * 3600.0  # seconds an unfinished resumable upload is kept after its last byte
    # Unfinished resumable uploads that hold room on the disk for their missing bytes:
    # at most this many, and this much room, per client (else 429) and in all (else 503).
    max_unfinished: int = 100
    max_unfinished_per_client: int = 10
    max_reserved_bytes: int = 4096 * MIB  # never less than one upload of max_upload_bytes
    max_reserved_per_client_bytes: int = 1024 * MIB  # never less than one upload either
    reserve_idle: float = 300.0  # seconds without a byte before an upload holds only what it has
    header_timeout: float = 10.0  # seconds a connection has to send a request's headers
    trusted_proxies: tuple[str, ...] = ()  # addresses whose X-Forwarded-Proto/-For are believed
    persist: bool = True  # keep tasks.json in the data dir so tasks survive a restart
    log_level: str = "INFO"
    allowed_hosts: tuple[str, ...] = ()  # Host names served besides this machine's own
    token: str = field(default="", repr=False)  # "": none asked for; never shown in logs
    no_token: bool = False  # reachable by others, and deliberately without a token
    queue: str = ""  # "": transcode in this process; redis://...: on queue workers
    queue_heartbeat: int = 10  # seconds a queue job may go unheard of before it runs elsewhere
    # the token queue workers bring to the worker routes, good for nothing else; "": the
    # server has no worker routes, and its workers must share its data dir
    worker_token: str = field(default="", repr=False)
    server_url: str = ""  # a worker's: the web process it fetches sources from; "": shared folder
    max_pixels: int = 7680 * 4320  # pixels in one frame: 8K fits, anything larger is refused (422)
    # address space of each ffmpeg (and probe): a 1080p transcode peaks near 1.4 GiB on 2 cores
    ffmpeg_memory_mb: int = 4096
    max_probes: int = 4  # uploads probed at once; the next ones wait their turn
    # days after a task finished (COMPLETED or FAILED) that its upload, or the whole task,
    # is deleted; 0: kept until a person deletes it
    delete_sources_after: float = 0.0
    delete_tasks_after: float = 0.0
    teach: bool = False  # the page offers a switch that blocks the loop on purpose (loopback only)
    # the remaining fields are not flags: tests shorten them
    upload_chunk: int = field(default=256 * 1024, repr=False)
    snapshot_interval: float = field(default=0.5, repr=False)  # at most one write per interval
    retention_sweep: float = field(default=600.0, repr=False)  # seconds between retention's looks

    @property
    def layout(self) -> DataLayout:
        """Every path in the data dir."""
        return DataLayout(self.data_dir)

    @property
    def on_loopback(self) -> bool:
        return is_loopback(self.host)

    @classmethod
    def from_args(
        cls, argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
    ) -> Settings:
        env, args = _parsed(build_parser, argv, environ)
        transcoding = _transcode_settings(args, "video-async")
        if args.workers < 1:
            raise SystemExit("video-async: --workers must be at least 1")
        if args.max_upload_mb < 1:
            raise SystemExit("video-async: --max-upload-mb must be at least 1")
        _require_positive(args, "video-async", "max_duration",
                          "upload_idle_timeout", "upload_expiry", "max_unfinished",
                          "max_unfinished_per_client", "max_reserved_mb",
                          "max_reserved_mb_per_client", "reserve_idle", "header_timeout",
                          "max_probes")
        if not all(0 <= days < math.inf for days in (args.delete_sources_after,
                                                    args.delete_tasks_after)):
            raise SystemExit("video-async: --delete-sources-after and --delete-tasks-after "
                             "must be 0 (keep) or a number of days")
        if args.max_queued < 1 or args.max_uploads < 1 or args.min_free_mb < 0:
            raise SystemExit("video-async: --max-queued and --max-uploads must be at least 1, "
                             "--min-free-mb at least 0")
        if args.token and args.no_token:
            raise SystemExit("video-async: --token (or VIDEO_ASYNC_TOKEN) and --no-token "
                             "contradict each other")
        if args.token and not TOKEN_CHARACTERS.fullmatch(args.token):
            raise SystemExit("video-async: a token may contain only letters, digits and . _ ~ -")
        # A server others can reach gets a token unless told otherwise, as Jupyter does.
        # Hex, so that it never begins with '-' and can be pasted after --token as it is.
        if args.teach and not is_loopback(args.host):
            raise SystemExit("video-async: --teach slows the server down for everyone: it is "
                             "for a server on loopback only (--host 127.0.0.1)")
        token = args.token or ("" if args.no_token or is_loopback(args.host)
                               else secrets.token_hex(32))
        return cls(
            **transcoding,
            host=args.host,
            port=args.port,
            data_dir=Path(args.data_dir),
            max_upload_bytes=args.max_upload_mb * MIB,
            workers=args.workers,
            cors_origins=tuple(args.cors_origin if args.cors_origin is not None
                               else _split(env.get("VIDEO_ASYNC_CORS_ORIGIN", ""))),
            max_duration=args.max_duration,
            max_queued=args.max_queued,
            max_uploads=args.max_uploads,
            min_free_bytes=args.min_free_mb * MIB,
            upload_idle_timeout=args.upload_idle_timeout,
            upload_expiry=args.upload_expiry,
            max_unfinished=args.max_unfinished,
            max_unfinished_per_client=args.max_unfinished_per_client,
            max_reserved_bytes=args.max_reserved_mb * MIB,
            max_reserved_per_client_bytes=args.max_reserved_mb_per_client * MIB,
            reserve_idle=args.reserve_idle,
            header_timeout=args.header_timeout,
            trusted_proxies=_addresses(args.trusted_proxy if args.trusted_proxy is not None
                                       else _split(env.get("VIDEO_ASYNC_TRUSTED_PROXY", ""))),
            persist=args.persist,
            allowed_hosts=tuple(args.allow_host if args.allow_host is not None
                                else _split(env.get("VIDEO_ASYNC_ALLOW_HOST", ""))),
            token=token,
            no_token=args.no_token,
            queue=_queue_url(args.queue),
            worker_token=args.worker_token,
            max_probes=args.max_probes,
            delete_sources_after=args.delete_sources_after,
            delete_tasks_after=args.delete_tasks_after,
            teach=args.teach,
        )

    @classmethod
    def for_worker(
        cls, argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
    ) -> Settings:
        """`video-async worker ...`: the settings a queue worker runs its jobs with."""
        _, args = _parsed(build_worker_parser, argv, environ)
        transcoding = _transcode_settings(args, "video-async worker")
        if not args.queue:
            raise SystemExit("video-async worker: give the queue: --queue redis://HOST:PORT/DB "
                             "(or VIDEO_ASYNC_QUEUE)")
        if args.jobs < 1:
            raise SystemExit("video-async worker: --jobs must be at least 1")
        if args.server and not args.server.startswith(("http://", "https://")):
            raise SystemExit("video-async worker: --server must be the web process's URL, such "
                             "as http://HOST:8000")
        if args.server and not args.worker_token:
            raise SystemExit("video-async worker: --server needs the server's worker token: "
                             "--worker-token (or VIDEO_ASYNC_WORKER_TOKEN)")
        return cls(**transcoding, data_dir=Path(args.data_dir), workers=args.jobs,
                   queue=_queue_url(args.queue), server_url=args.server.rstrip("/"),
                   worker_token=args.worker_token)


def _parsed(build: Callable[[Mapping[str, str]], argparse.ArgumentParser],
            argv: Sequence[str] | None,
            environ: Mapping[str, str] | None) -> tuple[Mapping[str, str], argparse.Namespace]:
    env = os.environ if environ is None else environ
    return env, build(env).parse_args(argv)


def _require_positive(args: argparse.Namespace, command: str, *names: str) -> None:
    for name in names:
        if getattr(args, name) <= 0:
            raise SystemExit(f"{command}: --{name.replace('_', '-')} must be positive")


def _queue_url(url: str) -> str:
    if url and not url.startswith(("redis://", "rediss://", "unix://")):
        raise SystemExit("video-async: --queue must be a Redis URL, such as redis://HOST:6379/0")
    return url


def _addresses(listed: Sequence[str]) -> tuple[str, ...]:
    for address in listed:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise SystemExit(f"video-async: --trusted-proxy takes an IP address, such as "
                             f"127.0.0.1, not {address!r}") from None
    return tuple(listed)


def _split(listed: str) -> list[str]:
    return [item.strip() for item in listed.split(",") if item.strip()]


def add_flag(parser: argparse.ArgumentParser, env: Mapping[str, str], name: str,
             fallback: object, kind: type, text: str) -> None:
    """--name, defaulting to VIDEO_ASYNC_NAME, else to fallback."""
    variable = "VIDEO_ASYNC_" + name.replace("-", "_").upper()
    shown = f"{fallback:g}" if isinstance(fallback, float) else str(fallback)
    parser.add_argument(f"--{name}", type=kind, default=env.get(variable, shown), help=text)


# The package is on no index: its queue extra is installed from the checkout.
QUEUE_EXTRA_INSTALL = ("make queue-extra, in the checkout (or pip install -e '.[queue]' there, "
                       "into another environment)")
QUEUE_HELP = ("Redis URL of the job queue, e.g. redis://HOST:6379/0: the server then transcodes "
              "nothing itself, and `video-async worker` processes on any machine that shares "
              f"the data dir do (needs the queue extra: {QUEUE_EXTRA_INSTALL})")
WORKER_TOKEN_HELP = ("the token queue workers and this server share, good only for the worker "
                     "routes (/worker/...); set it on both, e.g. from VIDEO_ASYNC_WORKER_TOKEN")


def build_worker_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    """`video-async worker`: the flags of a queue worker, defaults as for the server."""
    base = Settings()
    parser = argparse.ArgumentParser(
        prog="video-async worker",
        description="Run transcode jobs from the queue that a `video-async --queue` server "
                    "fills. The data dir must be the server's own, shared (NFS, CephFS, a "
                    "mounted volume).")

    def flag(name: str, fallback: object, kind: type, text: str) -> None:
        add_flag(parser, env, name, fallback, kind, text)

    flag("queue", base.queue, str, "Redis URL of the server's job queue, e.g. redis://HOST:6379/0")
    flag("server", base.server_url, str, "the web process's URL, e.g. http://HOST:8000: sources "
         "are fetched from it and outputs sent back over HTTP, so nothing is shared but Redis "
         "(needs --worker-token). Without it, the data dir must be the server's own")
    flag("worker-token", "", str, WORKER_TOKEN_HELP)
    flag("data-dir", base.data_dir, str, "with --server, a folder of this worker's own for the "
         "files of its running jobs; without, the server's data dir as this machine sees it "
         "(default: the current folder)")
    flag("jobs", base.workers, int, "how many ffmpeg jobs this worker runs at once "
         "(default: %(default)s)")
    _add_transcode_flags(parser, env, base)
    return parser


def _add_transcode_flags(parser: argparse.ArgumentParser, env: Mapping[str, str],
                         base: Settings) -> None:
    """The flags of whatever runs ffmpeg, the server and a queue worker alike."""
    def flag(name: str, fallback: object, kind: type, text: str) -> None:
        add_flag(parser, env, name, fallback, kind, text)

    flag("ffmpeg", "", str, "path of the ffmpeg binary (default: the one shipped by imageio-ffmpeg)")
    flag("job-timeout", base.job_timeout, float, "seconds a transcode may run before it is "
         "stopped and FAILED (default: %(default)s)")
    flag("stall-timeout", base.stall_timeout, float, "seconds a transcode may go without "
         "progress before it is stopped and FAILED (default: %(default)s)")
    flag("max-pixels", base.max_pixels, int, "largest frame accepted, in pixels (width x "
         "height); larger ones are refused with 422 before anything decodes them, and no "
         "decoder may allocate one (default: %(default)s, 7680x4320)")
    flag("ffmpeg-memory-mb", base.ffmpeg_memory_mb, int, "address space each ffmpeg (and each "
         "probe) may use, in MiB; one that needs more is stopped and its task FAILED. A 1080p "
         "transcode reserves about 1.4 GiB on 2 cores, more with more cores. 0: no cap "
         "(default: %(default)s)")
    flag("queue-heartbeat", base.queue_heartbeat, int, "seconds a queue job may go without a "
         "sign of life from its worker before it is run again on another (default: %(default)s)")
    parser.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS,
                        default=env.get("VIDEO_ASYNC_LOG_LEVEL", base.log_level),
                        help="logging verbosity (default: %(default)s)")


def _transcode_settings(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """The settings from the flags _add_transcode_flags defines, checked."""
    if args.log_level not in LOG_LEVELS:  # argparse checks choices of flags, not of defaults
        raise SystemExit(f"{command}: VIDEO_ASYNC_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}")
    _require_positive(args, command, "job_timeout", "stall_timeout", "max_pixels")
    if args.ffmpeg_memory_mb < 0:
        raise SystemExit(f"{command}: --ffmpeg-memory-mb must be at least 0 (0: no cap)")
    if args.max_pixels > MAX_PIXELS_CEILING:
        raise SystemExit(f"{command}: --max-pixels can be at most {MAX_PIXELS_CEILING} (FFmpeg's own)")
    if args.queue_heartbeat < 1:
        raise SystemExit(f"{command}: --queue-heartbeat must be at least 1")
    return {"ffmpeg": args.ffmpeg or None, "job_timeout": args.job_timeout,
            "stall_timeout": args.stall_timeout, "max_pixels": args.max_pixels,
            "ffmpeg_memory_mb": args.ffmpeg_memory_mb, "queue_heartbeat": args.queue_heartbeat,
            "log_level": args.log_level}


def build_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    """The flags; each default is its variable's value if set, else Settings' own default."""
    base = Settings()
    parser = argparse.ArgumentParser(
        prog="video-async",
        description=(
            "Upload videos, transcode them to web-ready MP4 (H.264 + AAC) in the "
            "background with ffmpeg, and watch each task live in the browser. "
            "Every flag can also be set as VIDEO_ASYNC_<NAME>, e.g. VIDEO_ASYNC_PORT=9000. "
            "At start the process raises its limit on open files to the hard limit "
            "(`ulimit -Hn` shows it; LimitNOFILE= in a systemd unit sets it): each upload "
            "in flight holds a socket and a file."
        ),
    )

    def flag(name: str, fallback: object, kind: type, text: str) -> None:
        add_flag(parser, env, name, fallback, kind, text)

    flag("host", base.host, str, "address to listen on (default: %(default)s, loopback only)")
    flag("port", base.port, int, "TCP port (default: %(default)s)")
    flag("data-dir", base.data_dir, str, "folder holding uploads/, outputs/ and tasks.json, "
         "created if missing (default: the current folder)")
    flag("max-upload-mb", base.max_upload_bytes // MIB, int,
         "largest accepted upload, in MiB (default: %(default)s)")
    flag("workers", base.workers, int, "how many ffmpeg jobs may run at once (default: %(default)s)")
    # None, not []: flags given on the command line replace the variable's list
    parser.add_argument("--cors-origin", action="append", default=None, metavar="URL",
                        help="let a front end served from URL call the API; repeatable "
                             "(env: comma-separated; default: none, same-origin only)")
    flag("max-duration", base.max_duration, float, "longest accepted video, in seconds; longer "
         "ones are refused with 422 (default: %(default)s, 3 hours)")
    flag("max-queued", base.max_queued, int, "queued tasks (counting uploads in progress) beyond "
         "which uploads get 503 with Retry-After (default: %(default)s)")
    flag("max-uploads", base.max_uploads, int, "uploads streaming at once; one more gets 503 at "
         "once. An upload in flight costs a socket, a file and some KiB, no thread; the "
         "default is what one process was measured to hold. --max-queued counts uploads in "
         "progress too (default: %(default)s)")
    flag("min-free-mb", base.min_free_bytes // MIB, int, "free disk space, in MiB, that uploads "
         "may never eat into; they get 507 instead (default: %(default)s)")
    flag("upload-idle-timeout", base.upload_idle_timeout, float, "seconds an upload may send "
         "nothing before it is dropped and its file removed (default: %(default)s)")
    flag("upload-expiry", base.upload_expiry, float, "seconds an unfinished resumable upload "
         "(/files/) is kept after the last byte it received; then it is removed "
         "(default: %(default)s, 24 hours)")
    flag("max-unfinished", base.max_unfinished, int, "unfinished resumable uploads that may "
         "hold disk room for their missing bytes at once, from all clients; one more gets 503 "
         "(default: %(default)s)")
    flag("max-unfinished-per-client", base.max_unfinished_per_client, int, "the same, from one "
         "client (one address); one more gets 429 (default: %(default)s)")
    flag("max-reserved-mb", base.max_reserved_bytes // MIB, int, "disk room, in MiB, that the "
         "unfinished resumable uploads may hold for their missing bytes, in all; never less than "
         "--max-upload-mb (default: %(default)s)")
    flag("max-reserved-mb-per-client", base.max_reserved_per_client_bytes // MIB, int, "the "
         "same, for one client; never less than --max-upload-mb (default: %(default)s)")
    flag("reserve-idle", base.reserve_idle, float, "seconds an unfinished resumable upload may "
         "send nothing before it stops holding room for its missing bytes (it keeps what it "
         "has, and must find room again to go on) (default: %(default)s)")
    flag("header-timeout", base.header_timeout, float, "seconds a connection has to send a "
         "request's headers, from when it opens or its last answer went out; then it is "
         "closed (default: %(default)s)")
    parser.add_argument("--trusted-proxy", action="append", default=None, metavar="ADDR",
                        help="the address of a reverse proxy whose X-Forwarded-Proto and "
                             "X-Forwarded-For are believed (the cookie is Secure when it says "
                             "https; limits per client go by the address it names); repeatable "
                             "(env: comma-separated; default: none)")
    flag("max-probes", base.max_probes, int, "uploads whose files are probed at once; the "
         "others wait their turn (default: %(default)s)")
    flag("delete-sources-after", base.delete_sources_after, float, "days after a task "
         "finished (COMPLETED or FAILED) that its uploaded file is deleted; the task, its "
         "video and thumbnail stay, and it can no longer be retried. 0: kept (default: "
         "%(default)s)")
    flag("delete-tasks-after", base.delete_tasks_after, float, "days after a task finished "
         "that the whole task is deleted, as Delete does: its card, upload, video and "
         "thumbnail. 0: kept (default: %(default)s)")
    flag("queue", base.queue, str, QUEUE_HELP)
    flag("worker-token", "", str, WORKER_TOKEN_HELP)
    _add_transcode_flags(parser, env, base)
    persist = env.get("VIDEO_ASYNC_PERSIST", "1").lower() not in ("0", "false", "no", "off")
    parser.add_argument("--no-persist", dest="persist", action="store_false", default=persist,
                        help="keep tasks in memory only: no tasks.json snapshot, nothing "
                             "survives a restart (env: VIDEO_ASYNC_PERSIST=0)")
    parser.add_argument("--allow-host", action="append", default=None, metavar="NAME",
                        help="also answer requests addressed to NAME (a reverse proxy's name); "
                             "repeatable (env: comma-separated). A loopback server otherwise "
                             "answers only to localhost, 127.0.0.1 and [::1]")
    # No %(default)s here: --help must never print a token taken from the environment.
    parser.add_argument("--token", default=env.get("VIDEO_ASYNC_TOKEN", ""),
                        help="require this token from every client (the page link printed at "
                             "start-up carries it; API clients send 'Authorization: Bearer "
                             "TOKEN'; write --token=TOKEN if it begins with '-'). Default: a "
                             "new random one when --host is not loopback, none on loopback")
    teach = env.get("VIDEO_ASYNC_TEACH", "0").lower() in ("1", "true", "yes", "on")
    parser.add_argument("--teach", action="store_true", default=teach,
                        help="offer a switch on the page that blocks the event loop on purpose "
                             "(every upload then writes on the loop, with an fsync and a wait "
                             "per chunk), to watch the heartbeat show the cost; loopback only "
                             "(env: VIDEO_ASYNC_TEACH=1)")
    no_token = env.get("VIDEO_ASYNC_NO_TOKEN", "0").lower() in ("1", "true", "yes", "on")
    parser.add_argument("--no-token", action="store_true", default=no_token,
                        help="no token even when --host is not loopback: anyone who can reach "
                             "the port can see, download and delete every video "
                             "(env: VIDEO_ASYNC_NO_TOKEN=1)")
    return parser
