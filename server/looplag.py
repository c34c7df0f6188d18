"""Event-loop lag probe: how long the loop was kept from running its callbacks.

A task sleeps a short interval again and again; how much later than asked it wakes is
the time some callback held the loop (a blocking call, a long computation). The probe
keeps the largest stall of the current and of the last full minute, and a histogram of
every measurement, for /metrics. A stall is seen at most one interval too short: the
loop may have been blocked since shortly after the probe fell asleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

# Upper bounds (s) of the histogram's buckets, as Prometheus' `le`; +Inf is implied.
LAG_BUCKETS_S: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                                    5.0, 10.0)
WARN_STALL_S = 1.0  # a stall this long is logged (once a window, with the window's largest)


class LoopLagProbe:
    """Measures the loop's oversleep every `interval_s`; max stall per `window_s` window."""

    def __init__(self, interval_s: float = 0.025, window_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self.window_s = window_s
        self._clock = clock
        self._window_start = clock()
        self.current_max_s = 0.0  # largest stall of the window running now
        self.last_window_max_s = 0.0  # largest stall of the last full window
        self.bucket_counts = [0] * (len(LAG_BUCKETS_S) + 1)  # not cumulative; last is +Inf
        self.count = 0
        self.sum_s = 0.0
        self._warned_in_window = False
        self._task: asyncio.Task[None] | None = None

    @property
    def max_stall_s(self) -> float:
        """The largest stall of the last full window or the one running now.

        So that a stall is visible at once and for at least one whole window after.
        """
        self._roll(self._clock())
        return max(self.current_max_s, self.last_window_max_s)

    @property
    def running(self) -> bool:
        """Whether the probe's task is alive (and so the loop that runs it)."""
        return self._task is not None and not self._task.done()

    def observe(self, lag_s: float) -> None:
        """Take one measurement of the loop's lag."""
        lag_s = max(0.0, lag_s)
        now = self._clock()
        self._roll(now)
        self.count += 1
        self.sum_s += lag_s
        i = next((i for i, le in enumerate(LAG_BUCKETS_S) if lag_s <= le), len(LAG_BUCKETS_S))
        self.bucket_counts[i] += 1
        if lag_s > self.current_max_s:
            self.current_max_s = lag_s
        if lag_s >= WARN_STALL_S and not self._warned_in_window:
            self._warned_in_window = True
            log.warning("event loop stalled for %.2f s (something blocked it)", lag_s)

    def _roll(self, now: float) -> None:
        """Close the windows that ended before `now`."""
        if now - self._window_start < self.window_s:
            return
        elapsed = math.floor((now - self._window_start) / self.window_s)
        # A window with no measurement at all (the loop was blocked the whole time) shows
        # up as a stall in the window the probe woke in, which is the one that counts.
        self.last_window_max_s = self.current_max_s if elapsed == 1 else 0.0
        self.current_max_s = 0.0
        self._warned_in_window = False
        self._window_start += elapsed * self.window_s

    async def run(self) -> None:
        """Probe until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time()
            await asyncio.sleep(self.interval_s)
            self.observe(loop.time() - asked - self.interval_s)

    def start(self) -> None:
        """Start the probe's task on the running loop."""
        if not self.running:
            self._task = asyncio.create_task(self.run(), name="loop-lag-probe")

    async def stop(self) -> None:
        """Cancel the probe's task and wait for it."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
