"""The runtime's teardown: every stop runs, newest first, and the historian is closed even
when a sink's stop fails; the failure is reported, naming the sink."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from model.errors import ConfigError, SinkError
from model.records import MinuteResult, SampleBlock
from server import runtime as rt
from server.config import PlantConfig, parse_plant
from tests.conftest import free_port
from tests.fixtures.plant import plant_dict


class BrokenStop:
    """A sink whose stop fails (a real sink's stop can: a socket error, a full disk)."""

    name = "broken"

    def __init__(self, order: list[str]) -> None:
        self.order = order

    async def start(self) -> None:
        """Nothing to open."""

    async def on_samples(self, block: SampleBlock) -> None:
        """Ignore samples."""

    async def on_minute(self, result: MinuteResult) -> None:
        """Ignore minutes."""

    async def stop(self) -> None:
        """Fail."""
        self.order.append("broken")
        raise OSError(28, "No space left on device")


async def test_historian_closes_although_a_sink_fails_to_stop(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    order: list[str] = []
    entry = rt.SinkEntry("broken", lambda c: True, lambda r, c, a: BrokenStop(order))
    monkeypatch.setattr(rt, "SINKS", (*rt.SINKS, entry))
    d = plant_dict(free_port(), var_dir=str(tmp_path / "var"))
    d["opcua"]["enabled"] = False
    d["web"]["enabled"] = False
    runtime = rt.Runtime(parse_plant(d, "test"))
    stop_historian = runtime.historian.stop

    async def historian_stop() -> None:
        order.append("historian")
        await stop_historian()
    monkeypatch.setattr(runtime.historian, "stop", historian_stop)
    await runtime.start()
    with pytest.raises(SinkError, match=r"sink broken: OSError: .*No space left on device"):
        await runtime.stop()
    assert order == ["broken", "historian"]  # newest first, the historian last
    assert runtime.historian._db is None  # checkpointed and closed
    db = sqlite3.connect(tmp_path / "var" / "historian.sqlite")  # and not left locked
    try:
        db.execute("BEGIN EXCLUSIVE")
    finally:
        db.close()
    await runtime.stop()  # a second stop has nothing left to do


def test_preflight_is_what_the_runtime_checks_first(tmp_path: Path) -> None:
    d = plant_dict(var_dir=str(tmp_path / "var"))
    d["web"] = {"tls_cert": str(tmp_path / "missing.pem"), "tls_key": str(tmp_path / "k.pem")}
    cfg = PlantConfig.model_validate(d)
    with pytest.raises(ConfigError, match=r"missing\.pem: web\.tls_cert"):
        rt.preflight(cfg)
    with pytest.raises(ConfigError, match=r"missing\.pem: web\.tls_cert"):
        rt.Runtime(parse_plant(d, "test"))
    assert not (tmp_path / "var").exists()


class MinuteTimes:
    """A sink noting when each minute result arrives (wall clock, epoch seconds)."""

    name = "minute-times"

    def __init__(self) -> None:
        self.arrived: list[tuple[float, float]] = []  # (minute end, arrival)
        self.minute_s = 0.0

    async def start(self) -> None:
        """Nothing to open."""

    async def on_samples(self, block: SampleBlock) -> None:
        """Ignore samples."""

    async def on_minute(self, result: MinuteResult) -> None:
        """Note the arrival."""
        import time
        self.arrived.append((result.t.timestamp() + self.minute_s, time.time()))

    async def stop(self) -> None:
        """Nothing to close."""


async def closed_minutes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                         extra_device: bool, minute_s: float) -> list[tuple[float, float]]:
    """Minute ends and result arrivals of a plant with a 10 s grace."""
    import asyncio
    sink = MinuteTimes()
    sink.minute_s = minute_s
    entry = rt.SinkEntry("minute-times", lambda c: True, lambda r, c, a: sink)
    monkeypatch.setattr(rt, "SINKS", (*rt.SINKS, entry))
    d = plant_dict(free_port(), var_dir=str(tmp_path / "var"), minute_seconds=minute_s)
    d["clock"]["close_grace_s"] = 10.0
    d["opcua"]["enabled"] = False
    d["web"]["enabled"] = False
    if extra_device:  # a device that never answers: nothing listens on its port
        d["devices"].append({"id": "mute", "protocol": "modbus_tcp", "host": "127.0.0.1",
                             "port": free_port(), "device_id": 1, "poll_interval_s": 20.0,
                             "tags": [{"id": "mute_x", "register": 0}]})
    runtime = rt.Runtime(parse_plant(d, "test"))
    await runtime.start()
    try:
        for _ in range(300):
            if sink.arrived:
                break
            await asyncio.sleep(0.1)
    finally:
        await runtime.stop()
    return sink.arrived


async def test_a_minute_closes_once_every_device_polled_past_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Devices polled every 0.1 s: the minute is out well before the 10 s grace; the fixed
    # wait after each boundary before made it 2 s late at least (issue 12).
    arrived = await closed_minutes(tmp_path, monkeypatch, extra_device=False, minute_s=10.0)
    end, at = arrived[0]
    assert 0 <= at - end < 1.5, arrived


async def test_a_device_not_polled_past_the_minute_holds_it_for_the_grace_at_most(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A device polled every 20 s (here: not at all, it is not there) has not polled past
    # the boundary: the minute waits the 10 s grace, then closes without it.
    arrived = await closed_minutes(tmp_path, monkeypatch, extra_device=True, minute_s=3.0)
    assert arrived
    end, at = arrived[0]
    assert 9.5 <= at - end < 14.0, arrived


def test_the_tag_store_keeps_a_minute_through_its_grace(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # 0.5-s minutes, polls every 0.1 s and a 10-s grace: a minute held for a slow device
    # is taken 10.5 s after it began, 105 polls later. The rings held three minutes' polls
    # (31): the minute's samples were overwritten while it waited, and nobody was told.
    d = plant_dict(free_port(), var_dir=str(tmp_path / "var"), minute_seconds=0.5)
    d["clock"]["close_grace_s"] = 10.0
    runtime = rt.Runtime(parse_plant(d, "test"))
    store, table = runtime.store, runtime.table
    rows = np.arange(len(table.ids), dtype=np.int32)
    t0 = 1_800_000_000.0
    for k in range(106):  # 10.5 s of polls
        store.append_block(SampleBlock.of_poll(table, t0 + 0.1 * k, rows,
                                               np.full(len(rows), float(k)),
                                               np.zeros(len(rows), np.uint8)))
    assert store.overflowed == 0
    window = store.take(t0, t0 + 0.5)
    assert window.counts.tolist() == [5] * len(rows)  # polls 0 … 4 of the first minute
    # A ring that does overflow is told once, with the total, then at most once an hour.
    store.overflowed = 7
    with caplog.at_level(logging.WARNING, logger="carbonscada"):
        runtime._tell_overflow()
        store.overflowed = 9
        runtime._tell_overflow()
    told = [r.getMessage() for r in caplog.records if "samples dropped" in r.getMessage()]
    assert told == ["7 samples dropped so far: the minute cycle fell behind the polls and "
                    "the tag store's rings overflowed"]
