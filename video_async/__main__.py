"""python -m video_async (or `video-async`): flags -> Settings -> run the app.

`video-async worker` runs a queue worker instead, which imports none of the web server.
"""

from __future__ import annotations

import logging
import os
import resource
import sys
from collections.abc import Sequence

from .config import QUEUE_EXTRA_INSTALL, Settings
from .ffmpeg import FFmpegError
from .layout import PRIVATE_UMASK


def raise_open_file_limit() -> int:
    """The soft limit on open files, raised to the hard one: each upload in flight holds
    a socket and a file, and the usual soft limit of 1024 would refuse connections
    long before the loop is busy (Node raises it at start the same way)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):  # some systems cap it below an infinite hard limit
            return soft
    return hard


def main(argv: Sequence[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else list(argv)
    open_files = raise_open_file_limit()
    # Whatever umask it was started with: what the server, a worker and their ffmpeg
    # write is for this user only (uploads, outputs, tasks.json, sidecars, the lock).
    os.umask(PRIVATE_UMASK)
    if args[:1] == ["worker"]:
        _need_queue_extra("video-async worker")
        from .remote_worker import main as run_worker
        run_worker(args[1:])
        return
    serve(Settings.from_args(args), open_files)


def serve(settings: Settings, open_files: int) -> None:
    """Run the web server until SIGINT or SIGTERM."""
    # imported here, not above: a queue worker loads none of the web server
    from aiohttp import web

    from . import access
    from .app import create_app
    from .recovery import DataDirInUse

    if settings.queue:
        _need_queue_extra("video-async --queue")
    logging.basicConfig(level=settings.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("video_async").info("open files: up to %d (the hard limit)", open_files)
    if open_files < 2 * settings.max_uploads + 64:
        logging.getLogger("video_async").warning(
            "open files are limited to %d: fewer than --max-uploads %d need (two each); raise "
            "the hard limit (ulimit -Hn, or LimitNOFILE= in a service file)", open_files,
            settings.max_uploads)
    if settings.no_token and not settings.on_loopback:
        logging.getLogger("video_async").warning(
            "NO TOKEN (--no-token): anyone who can reach %s:%s can list, download and delete "
            "every video. Do this only on a network where you trust everyone.",
            settings.host, settings.port)

    def announce(text: str) -> None:
        print(text.replace("======== ", "").replace(" ========", ""), flush=True)
        if settings.token and text.startswith("======== Running"):
            # printed, never logged: the link is the key
            print("Open the page with its token:", *access.page_links(settings), sep="\n    ",
                  flush=True)

    try:
        app = create_app(settings)
        # run_app stops on SIGINT and SIGTERM, then runs the cleanup contexts, which
        # stop ffmpeg; shutdown_timeout bounds the wait for open connections.
        web.run_app(app, host=settings.host, port=settings.port, shutdown_timeout=2.0,
                    print=announce, access_log_class=access.AccessLog)
    except (FFmpegError, DataDirInUse) as exc:
        sys.exit(f"video-async: {exc}")
    except OSError as exc:  # the port is taken, the data dir is not writable, ...
        where = f" ({exc.filename})" if exc.filename else f" on {settings.host}:{settings.port}"
        sys.exit(f"video-async: cannot start{where}: {exc.strerror or exc}")


def _need_queue_extra(what: str) -> None:
    """The queue's packages are an optional extra: say so in one line if they are missing."""
    try:
        import redis  # noqa: F401
        import saq  # noqa: F401
    except ImportError as exc:
        sys.exit(f"{what}: the queue needs the 'queue' extra ({exc.name} is missing); "
                 f"install it with: {QUEUE_EXTRA_INSTALL}")


if __name__ == "__main__":
    main()
