"""A check run on a task of its own at start and then after each pause, until stopped.

The monitors of the server's system alarms (server/calibration.py, server/backup.py,
server/conformity.py) share it: a check that raises is logged, with its traceback, under
the monitor's own logger and message, and the next check still runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Callable


class Periodic:
    """Runs `check` (a function, or a coroutine function) at once and again `pause_s()`
    seconds after each run ends, until `stop`; a check's exception is logged as `failed`
    on `log`, once per failed check."""

    def __init__(self, name: str, check: Callable[[], object], pause_s: Callable[[], float],
                 log: logging.Logger, failed: str) -> None:
        self.name = name
        self._check = check
        self._pause_s = pause_s
        self._log = log
        self._failed = failed
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        """Whether the task was started and not stopped."""
        return self._task is not None

    def start(self) -> None:
        """Start the task (the first check runs at once)."""
        self._task = asyncio.create_task(self._loop(), name=self.name)

    async def stop(self) -> None:
        """Cancel the task and wait until it ended (a no-op when not started)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                result = self._check()
                if inspect.isawaitable(result):
                    await result
            except Exception:  # the monitor goes on whatever one check does
                # (CancelledError is no Exception: a stop ends the loop here too)
                self._log.exception(self._failed)
            await asyncio.sleep(self._pause_s())
