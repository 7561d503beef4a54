"""The queue's fault words and log lines, without Redis or ffmpeg: how a signal is named,
how often a lost Redis is said, and how a worker's last sign of life is read."""

from __future__ import annotations

import logging
import signal

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from .support.internals import (CannotRunHere, Interrupted, QuietWhileRedisIsAway, RedisWatch,
                                worker_json)

pytestmark = pytest.mark.unit


def test_sigkill_is_named_with_who_may_have_sent_it() -> None:
    stopped = Interrupted.by(signal.SIGKILL)
    assert str(stopped).startswith("Stopped: the transcode was ended by SIGKILL, sent by the "
                                   "system's out-of-memory killer or an operator")
    assert "could not transcode" not in str(stopped)
    assert stopped.detail == "ffmpeg was killed by SIGKILL (9)"


def test_another_signal_is_named_too() -> None:
    assert str(Interrupted.by(signal.SIGTERM)).startswith(
        "Stopped: the transcode was ended by SIGTERM, sent by an operator or the system")
    assert "signal 99" in str(Interrupted.by(99))  # no name: its number


def test_redis_going_and_coming_back_is_one_line_each(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test.redis")
    watch = RedisWatch("redis://:secret@q:6379/0", log)
    with caplog.at_level(logging.INFO, "test.redis"):
        watch.answered()  # the first answer is no news
        for _ in range(50):
            watch.lost(RedisConnectionError("refused"))
        for _ in range(50):
            watch.answered()
        watch.lost(RedisConnectionError("refused"))
    said = [record.getMessage() for record in caplog.records]
    assert said == [
        "Redis at redis://:***@q:6379/0 does not answer (ConnectionError: refused); waiting for it",
        "Redis at redis://:***@q:6379/0 answers again",
        "Redis at redis://:***@q:6379/0 does not answer (ConnectionError: refused); waiting for it",
    ]


def test_a_library_s_redis_tracebacks_are_dropped_and_said_once() -> None:
    log = logging.getLogger("test.quiet")
    watch = RedisWatch("redis://q:6379/0", log)
    quiet = QuietWhileRedisIsAway(watch)

    def record(exc: BaseException | None) -> logging.LogRecord:
        info = (type(exc), exc, None) if exc else None
        return logging.LogRecord("saq", logging.ERROR, __file__, 1, "Upkeep task failed",
                                 None, info)
    assert quiet.filter(record(RedisConnectionError("gone"))) is False
    assert watch.reachable is False
    assert quiet.filter(record(CannotRunHere("wrong data dir"))) is False  # said as it stops
    assert quiet.filter(record(ValueError("a bug"))) is True  # anything else is kept
    assert quiet.filter(record(None)) is True


def test_a_worker_shows_its_last_sign_of_life() -> None:
    info = {"metadata": {"host": "h", "pid": 7, "jobs": 1, "started_ms": 1_700_000_000_000},
            "stats": {"uptime": 2_500}}
    assert worker_json("w1", info) == {"id": "w1", "host": "h", "pid": 7, "jobs": 1,
                                       "last_seen": "2023-11-14T22:13:22.500Z"}
    # an older worker that does not say when it started: listed, without the time
    assert worker_json("w2", {"metadata": {"host": "h"}}) == {"id": "w2", "host": "h"}
