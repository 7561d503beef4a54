"""Names on disk are built from task ids alone, and an id is checked wherever a path is
built from one; ffmpeg is told what to read, and its failures are put in plain words."""

from __future__ import annotations

from pathlib import Path

import pytest

from .support.internals import DataLayout, Limits, checked_id, explain, input_args, new_task_id

pytestmark = pytest.mark.unit

NOT_IDS = ["", "0" * 31, "0" * 33, "A" * 32, "g" * 32, "../" + "0" * 29, "0" * 32 + "\n",
           "0" * 16 + "/" + "0" * 15, " " + "0" * 31]


def test_a_new_id_is_an_id() -> None:
    ids = {new_task_id() for _ in range(100)}
    assert len(ids) == 100 and all(checked_id(task_id) == task_id for task_id in ids)


@pytest.mark.parametrize("not_an_id", [*NOT_IDS, None, 7])
def test_anything_else_is_refused_wherever_a_path_is_built(tmp_path: Path,
                                                           not_an_id: object) -> None:
    layout = DataLayout(tmp_path)
    with pytest.raises(ValueError):
        checked_id(not_an_id)  # type: ignore[arg-type]
    for build in (layout.partial_upload, layout.resumable, layout.resumable_info,
                  layout.partial_resumable_info, lambda task_id: layout.partial_output(task_id, ".mp4"),
                  lambda task_id: layout.output(task_id, ".mp4"), layout.thumbnail,
                  lambda task_id: layout.source(task_id, ".mp4")):
        with pytest.raises(ValueError):
            build(not_an_id)


def test_a_source_keeps_only_an_accepted_extension(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path)
    task_id = new_task_id()
    assert layout.source(task_id, ".webm") == tmp_path / "uploads" / f"{task_id}.webm"
    for extension in (".MP4", ".flv", "", ".mp4/../x", "mp4"):
        with pytest.raises(ValueError):
            layout.source(task_id, extension)


def test_an_output_keeps_only_an_output_type(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path)
    task_id = new_task_id()
    assert layout.output(task_id, ".mp4") == tmp_path / "outputs" / f"{task_id}.mp4"
    for extension in (".mov", ".jpg", "", ".mp4/../x", "mp4"):
        with pytest.raises(ValueError):
            layout.output(task_id, extension)
        with pytest.raises(ValueError):
            layout.partial_output(task_id, extension)


def test_resumable_files_are_known_by_name(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path)
    upload_id = new_task_id()
    assert layout.resumable_id(layout.resumable(upload_id)) == upload_id
    assert layout.resumable_id(layout.resumable_info(upload_id)) == upload_id
    for other in (layout.partial_resumable_info(upload_id), layout.output(upload_id, ".mp4"),
                  layout.resumable(upload_id).with_name(f"{upload_id}.tus\n"),
                  layout.source(upload_id, ".mp4"), tmp_path / "uploads" / "x.tus"):
        assert layout.resumable_id(other) is None
    assert layout.is_partial(layout.partial_resumable_info(upload_id))


def test_generated_names_are_those_in_our_folders(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path)
    layout.make_private()
    task_id = new_task_id()
    assert layout.is_generated(layout.output(task_id, ".mp4"))
    assert layout.is_generated(layout.source(task_id, ".mov"))
    assert not layout.is_generated(tmp_path / f"{task_id}.mp4")  # the data dir itself
    assert not layout.is_generated(tmp_path / "uploads" / ".gitkeep")
    assert not layout.is_generated(tmp_path / "elsewhere" / f"{task_id}.mp4")


def test_made_private_folders_and_files(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path / "data")
    assert layout.make_private() is True  # made, and said so
    layout.snapshot_path.write_text("{}")
    layout.snapshot_path.chmod(0o644)
    assert layout.make_private() is False
    for folder in (layout.data_dir, layout.uploads_dir, layout.outputs_dir):
        assert folder.stat().st_mode & 0o777 == 0o700
    assert layout.snapshot_path.stat().st_mode & 0o777 == 0o600


def test_ffmpeg_reads_an_upload_only_as_what_it_was_accepted_as(tmp_path: Path) -> None:
    limits = Limits(max_pixels=1000)
    mov = input_args(Path("clip.mov"), "bmff", limits)
    assert mov[:2] == ["-f", "mov"] and ["-enable_drefs", "0"] == mov[6:8]
    assert ["-protocol_whitelist", "file"] == mov[2:4] and ["-max_pixels", "1000"] == mov[4:6]
    # an absolute path behind file:, so no name is ever read as an option or a protocol
    assert mov[-2:] == ["-i", "file:" + str(Path("clip.mov").absolute())]
    webm = input_args(tmp_path / "-x:y.webm", "ebml", limits)
    assert webm[:2] == ["-f", "matroska"] and "-enable_drefs" not in webm
    assert webm[-1] == f"file:{tmp_path}/-x:y.webm"


@pytest.mark.parametrize(("stderr", "reason", "line"), [
    ("[mov,mp4,m4a] moov atom not found\n/data/uploads/abc.mp4: Invalid data found when "
     "processing input\nConversion failed!\n",
     "The file is cut short", "[mov,mp4,m4a] moov atom not found"),
    ("Error while opening encoder\nav_interleaved_write_frame(): No space left on device\n",
     "The server's disk is full", "av_interleaved_write_frame(): No space left on device"),
    ("Something new and strange\nthe last word\n", "Fallback.", "the last word"),
    ("", "Fallback.", ""),
])
def test_ffmpegs_failures_in_plain_words(stderr: str, reason: str, line: str) -> None:
    said, detail = explain(stderr, "Fallback.")
    assert said.startswith(reason) and detail == line


def test_our_paths_are_not_in_what_ffmpeg_is_quoted_as_saying() -> None:
    _, detail = explain("/srv/video/uploads/0123.mp4: Invalid data found when processing input",
                        "Fallback.")
    assert detail == "0123.mp4: Invalid data found when processing input"
    _, detail = explain("time base 1/1000 is odd", "Fallback.")
    assert detail == "time base 1/1000 is odd"  # a fraction is not a path
