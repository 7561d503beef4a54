"""Every text a person reads on a task card, defined once.

The server renders the first paint with these and sends them with each task
as `display` (api_json), and app.js only copies them into the card: the page never
formats a size, a clock or a status line of its own. The store knows nothing of them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .ffmpeg import output_size
from .store import Task


def api_json(task: Task, queue_position: int | None) -> dict[str, Any]:
    """A task as the API sends it: its fields, and every text of its card."""
    return {**task.to_json(queue_position), "display": card_texts(task, queue_position)}


def one_of(items: Iterable[object], last: str = "or") -> str:
    """(480, 720, 1080) -> "480, 720 or 1080"."""
    words = [str(item) for item in items]
    return f"{', '.join(words[:-1])} {last} {words[-1]}" if len(words) > 1 else "".join(words)


def human_size(size: float) -> str:
    """209715200 -> "200 MiB": binary units, named so, as the limits are enforced in them
    (a 210 MB file is over a limit of 200 MiB, and says so)."""
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            break
        size /= 1024
    text = f"{size:.0f}" if unit == "bytes" else f"{size:.1f}".removesuffix(".0")
    return f"{text} {unit}"


def uploaded(task: Task) -> str:
    """When the upload came in, on the server's clock (as the retry note and the log
    read it): "7 Dec 2026, 14:05"."""
    at = task.created_at.astimezone()
    return f"{at.day} {at:%b %Y, %H:%M}"


def clock(seconds: float) -> str:
    """62.5 -> "1:02"."""
    whole = int(seconds)
    hours, minutes, secs = whole // 3600, whole // 60 % 60, whole % 60
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def time_left(seconds: float) -> str:
    """12.3 -> "about 12 s left"; 130 -> "about 2 min left"."""
    if seconds < 60:
        return f"about {max(1, round(seconds))} s left"
    return f"about {round(seconds / 60)} min left"


def status_line(task: Task, queue_position: int | None) -> str:
    """The one line under a card's title that says what is happening to it."""
    if task.state == "QUEUED":
        if task.requeued_because:
            return task.requeued_because
        if queue_position == 1:
            return "Waiting: next in line"
        return f"Waiting: number {queue_position} in the queue" if queue_position else "Waiting"
    if task.state == "PROCESSING":
        left = "" if task.eta_seconds is None else f", {time_left(task.eta_seconds)}"
        return f"Transcoding: {task.progress}%{left}"
    if task.state == "FAILED":
        reason = task.error or "Failed."
        if task.retries:
            # the server's own clock: what a person at its desk, or its log, would read
            at = f" at {task.retried_at.astimezone():%H:%M}" if task.retried_at else ""
            return f"Retried{at} ({ordinal(task.retries)} retry), failed again: {reason}"
        return reason
    if task.state == "COMPLETED":
        return cut_short(task)
    return ""


def ordinal(number: int) -> str:
    """1 -> "1st", 2 -> "2nd", 11 -> "11th", 23 -> "23rd"."""
    suffix = "th" if 10 <= number % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
    return f"{number}{suffix}"


def cut_short(task: Task) -> str:
    """A note for an output clearly shorter than its source: ffmpeg keeps what it can
    decode of a file cut short or damaged part way, and exits as if all went well."""
    made = task.output.duration if task.output else None
    source = task.media.duration if task.media else None
    if not made or not source:
        return ""
    missing = source - made
    # half a second and a tenth at least: an encode may well drop a last frame or two
    if missing <= 0.5 or missing <= source / 10:
        return ""
    return (f"Only {made:.1f} s of {source:.1f} s could be read: the rest of the file is "
            "missing or damaged.")


def detail(task: Task) -> str:
    """ffmpeg's own line under the plain sentence: why a task failed, or why its output is short."""
    if task.state == "FAILED" and task.error_detail:
        return f"ffmpeg said: {task.error_detail}"
    if task.output and task.output.source_warning and cut_short(task):
        return f"ffmpeg said: {task.output.source_warning}"
    return ""


def resolution(task: Task) -> str:
    """"720p", or "kept at 360p: the source is smaller" for a 360p clip asked for at 1080:
    named by what it is (or will be), since a video is never upscaled. A FAILED task
    has no output and will have none, so it shows what was asked. All sizes: "all sizes,
    up to 1080p", the largest being the source's own for a smaller one."""
    if task.state == "FAILED":
        return "all sizes" if task.ladder else f"{task.resolution}p"
    short = made_at(task)
    if task.ladder:
        return f"all sizes, up to {short}p"
    if short < task.top_size:
        return f"kept at {short}p: the source is smaller"
    return f"{task.resolution}p"


def made_at(task: Task) -> int:
    """The short side of its output, as made or as it will be made: what was asked,
    or less for a smaller source."""
    if task.output:
        return task.output.short_side
    if task.media:
        return min(output_size(task.media, task.top_size))
    return task.top_size


def card_texts(task: Task, queue_position: int | None) -> dict[str, str]:
    duration = task.media.duration if task.media else None
    return {
        "label": task.state.label,
        "resolution": resolution(task),
        "size": human_size(task.size),
        "uploaded": uploaded(task),
        "duration": clock(duration) if duration else "",
        "output": f"→ {human_size(task.output.size)}" if task.output else "",
        "status": status_line(task, queue_position),
        "detail": detail(task),
    }
