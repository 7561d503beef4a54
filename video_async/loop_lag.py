"""The event loop measuring itself: how late does a timer fire?

A coroutine asks to sleep a fixed interval and records how much longer it
really took. If anything blocked the loop (a synchronous file write, a
time.sleep, a CPU-heavy handler) that overshoot grows, so a lag near zero
during a 200 MB upload and an ffmpeg run is the proof that nothing blocks.
The interval is short (10 ms) so that a stall of a few milliseconds cannot
fall between two samples; a wake-up costs the loop a few microseconds.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque


class LagMonitor:
    def __init__(self, interval: float = 0.01, window: float = 60.0) -> None:
        self.interval = interval
        self.window = window
        self.last = 0.0  # seconds
        # the worst lag of each whole second: a minute of samples in 60 numbers
        self._seconds: deque[tuple[int, float]] = deque()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(self.interval)
            now = loop.time()
            self.record(now, max(0.0, now - before - self.interval))

    def record(self, now: float, lag: float) -> None:
        self.last = lag
        second = math.floor(now)
        if self._seconds and self._seconds[-1][0] == second:
            if lag > self._seconds[-1][1]:
                self._seconds[-1] = (second, lag)
        else:
            self._seconds.append((second, lag))
        while self._seconds and self._seconds[0][0] <= now - self.window - 1:
            self._seconds.popleft()

    @property
    def max(self) -> float:
        """The worst lag over the last `window` seconds."""
        return max((lag for _, lag in self._seconds), default=0.0)

    @property
    def recent(self) -> float:
        """The worst lag of this second and the one before: read once a second or more
        often, it misses no sample."""
        since = math.floor(asyncio.get_running_loop().time()) - 1
        return max((lag for second, lag in self._seconds if second >= since), default=0.0)
