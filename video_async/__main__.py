"""python -m video_async (or `video-async`): flags -> Settings -> run the app."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from aiohttp import web

from .app import create_app
from .config import Settings
from .ffmpeg import FFmpegError
from .recovery import DataDirInUse


def main(argv: Sequence[str] | None = None) -> None:
    settings = Settings.from_args(argv)
    logging.basicConfig(level=settings.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        app = create_app(settings)
        # run_app stops on SIGINT and SIGTERM, then runs the cleanup contexts, which
        # stop ffmpeg; shutdown_timeout bounds the wait for open connections.
        web.run_app(app, host=settings.host, port=settings.port, shutdown_timeout=2.0,
                    print=lambda text: print(text.replace("======== ", "").replace(" ========", ""),
                                             flush=True))
    except (FFmpegError, DataDirInUse) as exc:
        sys.exit(f"video-async: {exc}")
    except OSError as exc:  # the port is taken, the data dir is not writable, ...
        where = f" ({exc.filename})" if exc.filename else f" on {settings.host}:{settings.port}"
        sys.exit(f"video-async: cannot start{where}: {exc.strerror or exc}")


if __name__ == "__main__":
    main()
