"""Settings: every knob of the app, read once from CLI flags and VIDEO_ASYNC_* variables.

The app never reads the environment anywhere else, so tests build a Settings
directly and get exactly the app they describe.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

MIB = 1024 * 1024
RESOLUTIONS = ("480", "720", "1080")


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
    shutdown_grace: float = 3.0  # seconds ffmpeg gets to exit after SIGTERM before SIGKILL
    log_level: str = "INFO"
    # the remaining fields are not flags: tests shorten them
    upload_chunk: int = field(default=256 * 1024, repr=False)

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"

    @property
    def outputs_dir(self) -> Path:
        return self.data_dir / "outputs"

    @classmethod
    def from_args(
        cls, argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
    ) -> Settings:
        env = os.environ if environ is None else environ
        args = build_parser(env).parse_args(argv)
        if args.workers < 1:
            raise SystemExit("video-async: --workers must be at least 1")
        if args.max_upload_mb < 1:
            raise SystemExit("video-async: --max-upload-mb must be at least 1")
        return cls(
            host=args.host,
            port=args.port,
            data_dir=Path(args.data_dir),
            max_upload_bytes=args.max_upload_mb * MIB,
            workers=args.workers,
            ffmpeg=args.ffmpeg or None,
            cors_origins=tuple(args.cors_origin),
            job_timeout=args.job_timeout,
            log_level=args.log_level.upper(),
        )


def build_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    def default(name: str, fallback: str) -> str:
        return env.get(f"VIDEO_ASYNC_{name}", fallback)

    parser = argparse.ArgumentParser(
        prog="video-async",
        description=(
            "Upload videos, transcode them to web-ready MP4 (H.264 + AAC) in the "
            "background with ffmpeg, and watch each task live in the browser. "
            "Every flag can also be set as VIDEO_ASYNC_<NAME>, e.g. VIDEO_ASYNC_PORT=9000."
        ),
    )
    parser.add_argument("--host", default=default("HOST", "127.0.0.1"),
                        help="address to listen on (default: %(default)s, loopback only)")
    parser.add_argument("--port", type=int, default=int(default("PORT", "8080")),
                        help="TCP port (default: %(default)s)")
    parser.add_argument("--data-dir", default=default("DATA_DIR", "."),
                        help="folder holding uploads/ and outputs/ (default: the current folder)")
    parser.add_argument("--max-upload-mb", type=int, default=int(default("MAX_UPLOAD_MB", "200")),
                        help="largest accepted upload, in MiB (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=int(default("WORKERS", "1")),
                        help="how many ffmpeg jobs may run at once (default: %(default)s)")
    parser.add_argument("--ffmpeg", default=default("FFMPEG", ""),
                        help="path of the ffmpeg binary (default: the one shipped by imageio-ffmpeg)")
    cors = env.get("VIDEO_ASYNC_CORS_ORIGIN")
    parser.add_argument("--cors-origin", action="append", default=cors.split(",") if cors else [],
                        metavar="URL",
                        help="let a front end served from URL call the API; repeatable "
                             "(default: none, same-origin only)")
    parser.add_argument("--job-timeout", type=float, default=float(default("JOB_TIMEOUT", "3600")),
                        help="seconds a transcode may run before it is stopped and FAILED "
                             "(default: %(default)s)")
    parser.add_argument("--log-level", default=default("LOG_LEVEL", "INFO"),
                        choices=["DEBUG", "INFO", "WARNING", "ERROR", "debug", "info", "warning", "error"],
                        help="logging verbosity (default: %(default)s)")
    return parser
