"""Where everything lives in the data dir: the one place that names a file on disk.

Every file the server writes is named after its task id, so no uploader's name
ever becomes a path:

    uploads/<id>.partial        an upload still streaming in
    uploads/<id><ext>           the stored upload (its own extension: .mp4, .mkv, .mts...)
    uploads/<id>.tus            a resumable upload's bytes so far (its offset is their length)
    uploads/<id>.tus.json       its length, file name, resolution (expiry: the two files' mtimes)
    uploads/<id>.tus.json.partial   that sidecar while it is being written
    outputs/<id>.partial<ext>   a transcode still running (<ext>: the order's, see OUTPUT_TYPES)
    outputs/<id><ext>           the finished video
    outputs/<id>.jpg            its thumbnail
    outputs/<id>.hls/           an HLS ladder ("all sizes"): master.m3u8, and for each rung n
                                vn.m3u8, vn.init.mp4 and its segments vn.00000.m4s, ...
    outputs/<id>.hls.partial/   a ladder still being made
    tasks.json                  the snapshot of the task store (and tasks.json.lock)
    resumable-ended.json        resumable uploads that ended (terminated, expired), for 410s
"""

from __future__ import annotations

import re
from pathlib import Path

# The accepted upload extensions and the container each must hold (checked by
# its first bytes, and read with that container's own demuxer). The page and the
# snapshot's path check read this too. ISO BMFF: MP4, QuickTime, iTunes' M4V and
# phones' 3GP; EBML: WebM and Matroska (OBS records .mkv); RIFF: AVI; MPEG-TS:
# AVCHD cameras' .mts and Blu-ray's .m2ts (packets of 192 bytes), or plain .ts ones.
SOURCE_EXTENSIONS = {".mp4": "bmff", ".mov": "bmff", ".m4v": "bmff", ".3gp": "bmff",
                     ".webm": "ebml", ".mkv": "ebml", ".avi": "riff",
                     ".mts": "mpegts", ".m2ts": "mpegts"}
# Each output's media type, by its extension: what a download is served as.
OUTPUT_TYPES = {".mp4": "video/mp4"}

# Only the server's own user may read the data: the program runs under this umask, so
# every file it or its ffmpeg makes is 0600 and every folder 0700.
PRIVATE_UMASK = 0o077
PRIVATE_FOLDER = 0o700
PRIVATE_FILE = 0o600
# What new_task_id makes: the only thing a file name in the data dir is built from.
# \Z, not $: a $ also matches before a final line break, which no id of ours has.
TASK_ID = re.compile(r"^[0-9a-f]{32}\Z")
_PARTIAL = re.compile(r"^[0-9a-f]{32}\.(partial(\.[a-z0-9]+)?|hls\.partial|tus\.json\.partial)\Z")
# The files of a ladder's folder, as ffmpeg names them (ffmpeg.ladder_args): the only names
# a request for one may give.
LADDER_FILE = re.compile(r"^(master|v[0-9]{1,2})\.m3u8\Z|^v[0-9]{1,2}\.(init\.mp4|[0-9]{5}\.m4s)\Z")
# Each ladder file's media type, by its extension
LADDER_TYPES = {".m3u8": "application/vnd.apple.mpegurl", ".mp4": "video/mp4",
                ".m4s": "video/iso.segment"}
_RESUMABLE = re.compile(r"^([0-9a-f]{32})\.tus(\.json)?\Z")
_GENERATED = re.compile(r"^[0-9a-f]{32}\.")  # <task id>.<something>


def checked_id(task_id: str) -> str:
    """The id itself, if it is one new_task_id could have made; ValueError otherwise.

    Ids also arrive from outside the web process (a queue job read from Redis, a
    hand-edited tasks.json): checked here, where a path is built from one, no id
    can ever name a file outside the data dir.
    """
    if not isinstance(task_id, str) or not TASK_ID.match(task_id):
        raise ValueError(f"not a task id: {task_id!r}")
    return task_id


def _output_type(extension: str) -> str:
    if extension not in OUTPUT_TYPES:
        raise ValueError(f"not an output type: {extension!r}")
    return extension


class DataLayout:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.uploads_dir = data_dir / "uploads"
        self.outputs_dir = data_dir / "outputs"
        self.snapshot_path = data_dir / "tasks.json"
        self.lock_path = data_dir / "tasks.json.lock"
        self.ended_uploads_path = data_dir / "resumable-ended.json"

    def make_private(self) -> bool:
        """Blocking: the data dir and its folders, made if missing, and made private
        (the folders 0700, the files of the data dir's own 0600) if an older version or
        another umask made them open. True if the data dir itself was made.

        A data dir that existed keeps its own mode (it may be the folder the server was
        started in); what it holds is private all the same.
        """
        created = not self.data_dir.is_dir()
        if created:
            self.data_dir.mkdir(mode=PRIVATE_FOLDER, parents=True)
            self.data_dir.chmod(PRIVATE_FOLDER)
        for folder in (self.uploads_dir, self.outputs_dir):
            folder.mkdir(mode=PRIVATE_FOLDER, exist_ok=True)
            folder.chmod(PRIVATE_FOLDER)
        for path in (self.snapshot_path, self.lock_path, self.ended_uploads_path):
            if path.exists():
                path.chmod(PRIVATE_FILE)
        return created

    def partial_upload(self, task_id: str) -> Path:
        return self.uploads_dir / f"{checked_id(task_id)}.partial"

    def source(self, task_id: str, extension: str) -> Path:
        if extension not in SOURCE_EXTENSIONS:
            raise ValueError(f"not an accepted extension: {extension!r}")
        return self.uploads_dir / f"{checked_id(task_id)}{extension}"

    def resumable(self, upload_id: str) -> Path:
        """A resumable upload's bytes; its id becomes its task's id."""
        return self.uploads_dir / f"{checked_id(upload_id)}.tus"

    def resumable_info(self, upload_id: str) -> Path:
        return self.uploads_dir / f"{checked_id(upload_id)}.tus.json"

    def partial_resumable_info(self, upload_id: str) -> Path:
        return self.uploads_dir / f"{checked_id(upload_id)}.tus.json.partial"

    def partial_output(self, task_id: str, extension: str) -> Path:
        return self.outputs_dir / f"{checked_id(task_id)}.partial{_output_type(extension)}"

    def output(self, task_id: str, extension: str) -> Path:
        """The finished video; extension: the order's output_extension."""
        return self.outputs_dir / f"{checked_id(task_id)}{_output_type(extension)}"

    def thumbnail(self, task_id: str) -> Path:
        return self.outputs_dir / f"{checked_id(task_id)}.jpg"

    def ladder(self, task_id: str) -> Path:
        return self.outputs_dir / f"{checked_id(task_id)}.hls"

    def partial_ladder(self, task_id: str) -> Path:
        return self.outputs_dir / f"{checked_id(task_id)}.hls.partial"

    def ladder_file(self, task_id: str, name: str) -> Path:
        """One file of a task's ladder, by the name its playlists give it; ValueError for a
        name ffmpeg never writes there, so a request can name no other file."""
        if not isinstance(name, str) or not LADDER_FILE.match(name):
            raise ValueError(f"not a ladder file: {name[:100]!r}")
        return self.ladder(task_id) / name

    # -- reading names back ------------------------------------------------------

    def relative(self, path: Path) -> str:
        """How tasks.json stores a path: relative to the data dir, with slashes."""
        return path.relative_to(self.data_dir).as_posix()

    def ours(self, stored: object, task_id: str, kind: str) -> Path:
        """The path a tasks.json entry names, if it is the generated name of that kind
        ("source", "output", "thumbnail" or "ladder") for that task; ValueError otherwise, so a
        hand-edited snapshot can never point the server outside the data dir."""
        allowed = {
            "source": [self.source(task_id, ext) for ext in SOURCE_EXTENSIONS],
            "output": [self.output(task_id, ext) for ext in OUTPUT_TYPES],
            "thumbnail": [self.thumbnail(task_id)],
            "ladder": [self.ladder(task_id)],
        }[kind]
        for path in allowed:
            if stored == self.relative(path):
                return path
        raise ValueError(f"unexpected {kind} path {stored!r}")

    @staticmethod
    def is_partial(path: Path) -> bool:
        """A file an interrupted run left half written."""
        return _PARTIAL.match(path.name) is not None

    @staticmethod
    def resumable_id(path: Path) -> str | None:
        """The upload id of a resumable upload's bytes or sidecar, None for any other file."""
        match = _RESUMABLE.match(path.name)
        return match.group(1) if match else None

    def is_generated(self, path: Path) -> bool:
        """A name we make, in uploads/ or outputs/ (path may be relative to anything)."""
        try:
            folder = path.parent.resolve()
        except (OSError, RuntimeError):  # RuntimeError: a symlink loop
            return False
        return (_GENERATED.match(path.name) is not None
                and folder in (self.uploads_dir.resolve(), self.outputs_dir.resolve()))
