"""Every text a person reads on a task card, defined once.

The server renders the first paint with these and sends them with each task
as `display`, and app.js only copies them into the card: the page never
formats a size, a clock or a status line of its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .ffmpeg import output_size

if TYPE_CHECKING:
    from collections.abc import Iterable

    from .store import Task


def one_of(items: Iterable[object], last: str = "or") -> str:
    """(480, 720, 1080) -> "480, 720 or 1080"."""
    words = [str(item) for item in items]
    return f"{', '.join(words[:-1])} {last} {words[-1]}" if len(words) > 1 else "".join(words)


def human_size(size: float) -> str:
    """209715200 -> "200 MB" (binary units, as file managers count)."""
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            break
        size /= 1024
    text = f"{size:.0f}" if unit == "bytes" else f"{size:.1f}".removesuffix(".0")
    return f"{text} {unit}"


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
        if queue_position == 1:
            return "Waiting: next in line"
        return f"Waiting: number {queue_position} in the queue" if queue_position else "Waiting"
    if task.state == "PROCESSING":
        left = "" if task.eta_seconds is None else f", {time_left(task.eta_seconds)}"
        return f"Transcoding: {task.progress}%{left}"
    if task.state == "FAILED":
        reason = task.error or "Failed."
        if task.retries:
            times = {1: "once", 2: "twice"}.get(task.retries, f"{task.retries} times")
            return f"Retried {times}, failed again: {reason}"
        return reason
    return ""


def resolution(task: Task) -> str:
    """"720p", or "kept at 360p: the source is smaller" for a 360p clip asked for at 1080:
    named by what it is (or will be), since a video is never upscaled."""
    if task.output:
        short = task.output.short_side
    elif task.media:
        short = min(output_size(task.media, task.resolution))
    else:
        short = task.resolution
    if short < task.resolution:
        return f"kept at {short}p: the source is smaller"
    return f"{task.resolution}p"


def card_texts(task: Task, queue_position: int | None) -> dict[str, str]:
    duration = task.media.duration if task.media else None
    return {
        "label": task.state.label,
        "resolution": resolution(task),
        "size": human_size(task.size),
        "duration": clock(duration) if duration else "",
        "output": f"→ {human_size(task.output.size)}" if task.output else "",
        "status": status_line(task, queue_position),
        "detail": f"ffmpeg said: {task.error_detail}" if task.error_detail else "",
    }
