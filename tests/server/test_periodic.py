"""server/periodic.py: the monitors' task runs its check at once and after each pause,
logs a failed check once with its traceback and goes on, and ends on stop."""

from __future__ import annotations

import asyncio
import logging

import pytest

from server.periodic import Periodic

log = logging.getLogger("tests.periodic")


async def test_checks_log_failures_once_each_and_stop(caplog: pytest.LogCaptureFixture) -> None:
    runs: list[int] = []
    done = asyncio.Event()

    async def check() -> None:
        runs.append(len(runs))
        if len(runs) == 3:
            done.set()
        if len(runs) % 2:  # the 1st and 3rd checks fail
            raise RuntimeError(f"boom {len(runs)}")

    p = Periodic("test-periodic", check, lambda: 0.0, log, "test check failed")
    assert not p.running
    with caplog.at_level(logging.ERROR, logger="tests.periodic"):
        p.start()
        assert p.running
        await asyncio.wait_for(done.wait(), 5.0)
        await p.stop()
    assert not p.running
    n = len(runs)
    await asyncio.sleep(0.01)
    assert len(runs) == n >= 3  # stopped: no check after
    failed = [r for r in caplog.records if r.name == "tests.periodic"]
    # Checks 1 and 3 failed (and maybe 5, if it ran before the stop): one line each.
    assert [r.getMessage() for r in failed] == ["test check failed"] * ((n + 1) // 2)
    assert all(r.exc_info is not None for r in failed)
    assert str(failed[0].exc_info[1]) == "boom 1"
    await p.stop()  # a second stop is a no-op


async def test_a_plain_function_and_the_pause(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[str] = []
    p = Periodic("test-periodic", lambda: seen.append("x"), lambda: 3600.0, log, "unused")
    p.start()
    for _ in range(3):
        await asyncio.sleep(0)
    await p.stop()
    assert seen == ["x"]  # the first check at once, the next an hour later
