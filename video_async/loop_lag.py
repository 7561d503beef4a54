"""The event loop measuring itself: how late does a timer fire?

A coroutine asks to sleep a fixed interval and records how much longer it
really took. If anything blocked the loop (a synchronous file write, a
time.sleep, a CPU-heavy handler) that overshoot grows, so a lag near zero
during a 200 MB upload and an ffmpeg run is the proof that nothing blocks.
"""

from __future__ import annotations

import asyncio
from collections import deque


class LagMonitor:
    def __init__(self, interval: float = 0.1, window: float = 60.0) -> None:
        self.interval = interval
        self.window = window
        self.last = 0.0  # seconds
        self._samples: deque[tuple[float, float]] = deque()  # (loop time, lag)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(self.interval)
            now = loop.time()
            self.record(now, max(0.0, now - before - self.interval))

    def record(self, now: float, lag: float) -> None:
        self.last = lag
        self._samples.append((now, lag))
        while self._samples and self._samples[0][0] < now - self.window:
            self._samples.popleft()

    @property
    def max(self) -> float:
        """The worst lag over the last `window` seconds."""
        return max((lag for _, lag in self._samples), default=0.0)
