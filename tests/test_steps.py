"""The learning path's steps (steps/*.py) run, and print what their docstrings say they show.

Each step runs as a learner runs it, with short arguments. Its figures are
checked for shape (which is larger, by a generous factor), never for timings.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEPS = ROOT / "steps"


def run_step(name: str, *args: str, cwd: Path) -> str:
    done = subprocess.run([sys.executable, str(STEPS / name), *args], capture_output=True,
                          text=True, timeout=120, cwd=cwd)
    assert done.returncode == 0, done.stderr
    return done.stdout


def figures(line: str) -> list[float]:
    return [float(number) for number in re.findall(r"(\d+(?:\.\d+)?) (?:ms|MiB|MB/s)", line)]


def row(output: str, label: str) -> list[float]:
    """The figures of the table row (or the line) that `label` begins, after the label."""
    found = [line for line in output.splitlines()
             if line.startswith(label) and line[len(label):][:2] in ("  ", ": ")]
    assert len(found) == 1, output
    return figures(found[0][len(label):])


def test_there_are_six_steps_each_with_what_to_run() -> None:
    steps = sorted(path.name for path in STEPS.glob("[0-9][0-9]_*.py"))
    assert len(steps) == 6
    for name in steps:
        assert f".venv/bin/python steps/{name}" in (STEPS / name).read_text()


def test_step2_streaming_holds_a_few_chunks_reading_whole_holds_the_upload(tmp_path: Path) -> None:
    streamed = run_step("02_stream_upload.py", "--mb", "8", cwd=tmp_path)
    whole = run_step("02_stream_upload.py", "--mb", "8", "--whole", cwd=tmp_path)
    for output in (streamed, whole):
        assert row(output, "file on disk") == [8.0]
    assert row(streamed, "memory held, peak") < [2.0]  # a few 64 KiB chunks, not 8 MiB
    assert row(whole, "memory held, peak") >= [8.0]  # the whole body at least once
    assert list(tmp_path.iterdir()) == []  # its temporary folder is gone


def test_step3_a_wait_on_the_loop_delays_everyone(tmp_path: Path) -> None:
    output = run_step("03_block.py", "--mb", "2", cwd=tmp_path)
    free_lag, _, free_ping, _ = row(output, "on the loop: write")
    blocked_lag, blocked_worst, blocked_ping, _ = row(output, "on the loop: write + 5 ms wait")
    assert blocked_worst >= 5  # at least one wait, whatever the machine
    assert blocked_lag > 3 * free_lag
    assert blocked_ping > 3 * free_ping


def test_step4_the_same_wait_in_a_thread_leaves_the_loop_free(tmp_path: Path) -> None:
    output = run_step("04_threads.py", "--mb", "2", cwd=tmp_path)
    blocked_lag, _, blocked_ping, blocked_rate = row(output, "on the loop: write + 5 ms wait")
    threaded_lag, _, threaded_ping, threaded_rate = row(output, "in a thread: write + 5 ms wait")
    assert blocked_lag > 3 * threaded_lag
    assert blocked_ping > 3 * threaded_ping
    # the upload itself is no faster: its chunks still wait one after another
    assert blocked_rate / 3 < threaded_rate < blocked_rate * 3


def worst_lag(output: str) -> float:
    found = re.search(r"loop lag while they ran: worst (\d+) ms", output)
    assert found, output
    return float(found.group(1))


def test_step5_a_piped_ffmpeg_leaves_the_loop_free_subprocess_run_does_not(tmp_path: Path) -> None:
    piped = run_step("05_ffmpeg_worker.py", "--jobs", "2", "--seconds", "1.5", cwd=tmp_path)
    blocking = run_step("05_ffmpeg_worker.py", "--jobs", "1", "--seconds", "1.5", "--blocking",
                        cwd=tmp_path)
    jobs = re.findall(r"job \d: picked up ([\d.]+) ms after its put; progress (.*?); (\d+) bytes",
                      piped)
    assert len(jobs) == 2
    for pickup, progress, size in jobs:
        assert float(pickup) < 500  # woken by the put (a 2 s poller would average 1,000)
        percents = [int(percent) for percent in re.findall(r"(\d+)%", progress)]
        assert percents == sorted(percents) and percents[-1] == 100
        assert int(size) > 0
    # -re holds ffmpeg to the video's pace: a second at least, all of it on the loop
    assert worst_lag(blocking) >= 500
    assert worst_lag(piped) < worst_lag(blocking) / 2


def test_step6_delete_stops_ffmpeg_and_a_hang_up_cancels_no_handler_by_default(tmp_path: Path) -> None:
    output = run_step("06_cancel.py", cwd=tmp_path)
    assert "task.cancelled(): True; cancelling() in the job: 1" in output
    assert "ffmpeg still running after the DELETE: False; output still on disk: False" in output
    assert "handler_cancellation=False: client hung up after 0.1 s; the handler ran to its end" in output
    assert ("handler_cancellation=True: client hung up after 0.1 s; the handler cancelled at "
            "its await") in output
    swallowed = run_step("06_cancel.py", "--swallow", cwd=tmp_path)
    assert "task.cancelled(): False" in swallowed
    assert "ffmpeg still running after the DELETE: True; output still on disk: True" in swallowed
