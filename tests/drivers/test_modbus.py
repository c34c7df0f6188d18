"""Modbus TCP driver against the simulator over real loopback sockets."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import socket
import struct
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pymodbus.client import AsyncModbusTcpClient

from drivers.base import Driver, create_drivers, create_simulators
from drivers.bus import Bus
from drivers.config import ModbusTcpDeviceConfig, SimConfig
from drivers.modbus_sim import ModbusTcpSimulator
from drivers.sim import SimValue, load_curve
from model.flags import DataFlag
from model.records import Sample
from tests.fixtures.plant import VECTOR, plant_config

POLL = 0.05
# ../shared/reference/protocol_vectors.md: 123.456 as float32 is bytes 42 F6 E9 79
F32_123_456 = struct.unpack(">f", bytes.fromhex("42F6E979"))[0]
VECTOR_REGS = {"ABCD": [0x42F6, 0xE979], "CDAB": [0xE979, 0x42F6],
               "BADC": [0xF642, 0x79E9], "DCBA": [0x79E9, 0xF642]}

Polls = list[list[Sample]]


def device(port: int, tags: list[dict[str, Any]], *, id_: str = "cems1", unit: int = 1,
           **kw: Any) -> ModbusTcpDeviceConfig:
    return ModbusTcpDeviceConfig.model_validate({
        "id": id_, "protocol": "modbus_tcp", "host": "127.0.0.1", "port": port,
        "device_id": unit, "poll_interval_s": POLL, "timeout_s": 0.3, "simulate": True,
        "tags": tags, **kw})


@contextlib.asynccontextmanager
async def running(sim: ModbusTcpSimulator) -> Any:
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


class Polling:
    """A driver running in a task, collecting what it emits."""

    def __init__(self, driver: Driver) -> None:
        self.driver = driver
        self.polls: Polls = []
        self.task = asyncio.create_task(driver.run(lambda b: self.polls.append(b.samples())))

    async def until(self, done: Callable[[Polls], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not done(self.polls):
                assert not self.task.done(), "run() returned or raised"
                await asyncio.sleep(0.01)

    async def stop(self) -> None:
        assert not self.task.done(), "run() returned or raised"
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task


def one_bus(dev: Any) -> Driver:
    [driver] = create_drivers([dev])
    return driver


def by_tag(poll: list[Sample]) -> dict[str, Sample]:
    return {s.tag: s for s in poll}


def all_flag(flag: DataFlag) -> Callable[[list[Sample]], bool]:
    return lambda poll: bool(poll) and all(s.flag is flag for s in poll)


async def test_word_orders_and_scaled_int_round_trip(port: int) -> None:
    tags = [{"id": f"f_{o}", "register": 2 * i, "order": o, "sim": {"value": 123.456}}
            for i, o in enumerate(VECTOR_REGS)]
    tags += [
        {"id": "i16", "register": 10, "type": "int16", "scale": 0.1, "offset": -20.0,
         "sim": {"value": 35.7}},
        {"id": "neg", "register": 11, "type": "int16", "scale": 0.1, "sim": {"value": -12.3}},
        {"id": "in64", "register": 0, "type": "float64", "function": "input", "order": "CDAB",
         "sim": {"value": 600.25}},
    ]
    dev = device(port, tags)
    async with running(ModbusTcpSimulator([dev], "Asia/Shanghai")):
        # the wire holds the reference vector registers
        client = AsyncModbusTcpClient("127.0.0.1", port=port)
        assert await client.connect()
        rr = await client.read_holding_registers(0, count=12, device_id=1)
        client.close()
        assert not rr.isError()
        for i, order in enumerate(VECTOR_REGS):
            assert list(rr.registers[2 * i:2 * i + 2]) == VECTOR_REGS[order]
        assert list(rr.registers[10:12]) == [557, 0x10000 - 123]  # (35.7+20)/0.1, -12.3/0.1

        before = datetime.now(UTC)
        polling = Polling(one_bus(dev))
        await polling.until(lambda p: len(p) >= 10)
        stats = polling.driver.stats()[0]
        await polling.stop()
        after = datetime.now(UTC)

    for poll in polling.polls:
        s = by_tag(poll)
        assert set(s) == {t["id"] for t in tags}
        assert all(x.flag is DataFlag.N for x in poll)
        assert all(before <= x.t <= after and x.t.tzinfo is UTC for x in poll)
        for order in VECTOR_REGS:
            assert s[f"f_{order}"].value == F32_123_456
        assert s["i16"].value == pytest.approx(35.7, abs=1e-9)
        assert s["neg"].value == pytest.approx(-12.3, abs=1e-9)
        assert s["in64"].value == 600.25
    assert stats.online and stats.errors == 0 and stats.requests >= 20  # 2 blocks a poll
    assert 0 < stats.last_latency_s < 0.3
    assert not polling.driver.stats()[0].online  # not polling any more
    # paced on a fixed schedule: n polls span (n-1) intervals, not (n-1)·(interval + work)
    first = polling.polls[0][0].t
    last = polling.polls[-1][0].t
    span = (last - first).total_seconds()
    assert span == pytest.approx((len(polling.polls) - 1) * POLL, abs=0.5 * POLL)


async def test_fixture_plant_serves_worked_example_inputs(port: int) -> None:
    cfg = plant_config(modbus_port=port)
    [sim] = create_simulators(cfg.devices, cfg.site.timezone)
    await sim.start()
    try:
        polling = Polling(one_bus(cfg.devices[0]))
        await polling.until(lambda p: len(p) >= 2)
        await polling.stop()
    finally:
        await sim.stop()
    s = by_tag(polling.polls[-1])
    expected = {"s1_velocity": VECTOR["velocity"], "s1_temp": VECTOR["temp"],
                "s1_static": VECTOR["static"], "s1_moisture": VECTOR["moisture_pct"],
                "s1_co2": VECTOR["co2"], "u1_power": 600.0}
    assert {k: (v.value, v.flag) for k, v in s.items()} == {
        k: (v, DataFlag.N) for k, v in expected.items()}


async def test_nan_from_instrument_is_flag_d(port: int) -> None:
    dev = device(port, [{"id": "bad", "register": 0, "sim": {"value": math.nan}},
                        {"id": "good", "register": 2, "sim": {"value": 8.0}}])
    async with running(ModbusTcpSimulator([dev], "UTC")):
        polling = Polling(one_bus(dev))
        await polling.until(lambda p: len(p) >= 2)
        await polling.stop()
    s = by_tag(polling.polls[-1])
    assert s["bad"].flag is DataFlag.D and math.isnan(s["bad"].value)
    assert s["good"].flag is DataFlag.N and s["good"].value == 8.0


async def test_nothing_listening_emits_b_at_poll_rate(port: int,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="drivers")
    dev = device(port, [{"id": "a", "register": 0}, {"id": "b", "register": 40}],
                 simulate=False)
    polling = Polling(one_bus(dev))
    await asyncio.sleep(0.6)
    await polling.stop()

    assert 9 <= len(polling.polls) <= 14  # 0.6 s at 0.05 s
    for poll in polling.polls:
        assert {s.tag for s in poll} == {"a", "b"}
        assert all(s.flag is DataFlag.B and math.isnan(s.value) for s in poll)
    mine = [r.getMessage() for r in caplog.records if r.name == "drivers"]
    assert mine == [f"device cems1 (127.0.0.1:{port} unit 1): cannot connect to "
                    f"127.0.0.1:{port}"]
    stats = polling.driver.stats()[0]
    assert not stats.online
    assert stats.last_error == f"cannot connect to 127.0.0.1:{port}"
    # backoff 0.5 s doubling: attempts at about 0, 0.5 s (and not one per poll)
    assert 1 <= polling.driver.bus_stats().errors <= 3


async def test_simulator_stop_and_restart_reconnects(port: int,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="drivers")
    dev = device(port, [{"id": "co2", "register": 8, "sim": {"value": 12.0}}])
    sim = ModbusTcpSimulator([dev], "Asia/Shanghai")
    await sim.start()
    polling = Polling(one_bus(dev))
    try:
        await polling.until(lambda p: len(p) >= 3)
        await sim.stop()
        n = len(polling.polls)
        # down for 0.8 s: longer than the 0.5 s first backoff, so a reconnect attempt fails
        await polling.until(lambda p: len(p) > n + 16 and all_flag(DataFlag.B)(p[-1]))
        await sim.start()
        n = len(polling.polls)
        await polling.until(lambda p: len(p) > n and all_flag(DataFlag.N)(p[-1]), timeout=5.0)
        assert polling.driver.stats()[0].online
        await polling.stop()
    finally:
        await sim.stop()

    flags = [p[0].flag for p in polling.polls]
    assert flags[0] is DataFlag.N
    first_b = flags.index(DataFlag.B)
    assert DataFlag.N in flags[first_b:]
    assert all(p[0].value == 12.0 for p in polling.polls if p[0].flag is DataFlag.N)
    assert all(math.isnan(p[0].value) for p in polling.polls if p[0].flag is DataFlag.B)
    mine = [r.getMessage() for r in caplog.records if r.name == "drivers"]
    assert mine[-1] == f"device cems1 (127.0.0.1:{port} unit 1) back online"
    # one message per distinct error, not one per failed poll
    where = f"device cems1 (127.0.0.1:{port} unit 1): "
    assert mine[:-1] == [where + f"connection to 127.0.0.1:{port} lost; cannot reconnect",
                         where + f"cannot connect to 127.0.0.1:{port}"]


async def test_two_units_on_one_endpoint(port: int) -> None:
    one = device(port, [{"id": "u1_co2", "register": 0, "sim": {"value": 11.5}}],
                 id_="dev1", unit=1)
    two = device(port, [{"id": "u2_co2", "register": 0, "sim": {"value": 22.5}},
                        {"id": "u2_flow", "register": 0, "function": "input",
                         "type": "uint32", "order": "CDAB", "sim": {"value": 70000}}],
                 id_="dev2", unit=2)
    sims = create_simulators([one, two], "Asia/Shanghai")
    assert len(sims) == 1 and isinstance(sims[0], ModbusTcpSimulator)
    assert sims[0].endpoints == [("127.0.0.1", port)]
    async with running(sims[0]):
        drivers = create_drivers([one, two])
        # one endpoint, one connection: both units are polled by one bus
        assert len(drivers) == 1 and isinstance(drivers[0], Bus)
        assert drivers[0].device_ids == ["dev1", "dev2"]
        polling = Polling(drivers[0])
        await polling.until(lambda polls: len(polls) >= 6)
        await polling.stop()
    s1 = by_tag(next(p for p in reversed(polling.polls) if p[0].tag == "u1_co2"))
    s2 = by_tag(next(p for p in reversed(polling.polls) if p[0].tag == "u2_co2"))
    assert (s1["u1_co2"].value, s1["u1_co2"].flag) == (11.5, DataFlag.N)
    assert (s2["u2_co2"].value, s2["u2_co2"].flag) == (22.5, DataFlag.N)
    assert (s2["u2_flow"].value, s2["u2_flow"].flag) == (70000.0, DataFlag.N)


async def test_exception_reply_flags_only_that_block(port: int,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="drivers")
    served = device(port, [{"id": "ok", "register": 0, "sim": {"value": 50.0}}])
    polled = device(port, [{"id": "ok", "register": 0},
                           {"id": "missing", "register": 500}], simulate=False)
    async with running(ModbusTcpSimulator([served], "UTC")):
        polling = Polling(one_bus(polled))
        await polling.until(lambda p: len(p) >= 4)
        await polling.stop()
    for poll in polling.polls:
        s = by_tag(poll)
        assert (s["ok"].value, s["ok"].flag) == (50.0, DataFlag.N)
        assert s["missing"].flag is DataFlag.B and math.isnan(s["missing"].value)
    mine = [r.getMessage() for r in caplog.records if r.name == "drivers"]
    assert mine == [f"device cems1 (127.0.0.1:{port} unit 1): exception reply reading "
                    "holding 500..501: ILLEGAL_ADDRESS (2)"]


async def test_client_connects_right_after_start_and_stop_releases_port(port: int) -> None:
    dev = device(port, [{"id": "a", "register": 0, "sim": {"value": 1.0}}])
    sim = ModbusTcpSimulator([dev], "UTC")
    for _ in range(2):  # a stopped simulator starts again
        await sim.start()
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()
        await writer.wait_closed()
        await asyncio.sleep(0.05)
        await sim.stop()
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
            s.listen()


async def test_start_fails_clearly_when_port_taken(port: int) -> None:
    dev = device(port, [{"id": "a", "register": 0, "sim": {"value": 1.0}}])
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        with pytest.raises(OSError, match=f"127.0.0.1:{port}"):
            await ModbusTcpSimulator([dev], "UTC").start()


def test_load_curve_shape() -> None:
    assert load_curve(4.0) == 0.0
    assert all(load_curve(h) == 1.0 for h in (10.0, 12.5, 15.0, 20.0))
    hours = [i / 60 for i in range(24 * 60)]
    values = [load_curve(h) for h in hours]
    assert all(0.0 <= v <= 1.0 for v in values)
    assert min(values) == 0.0 and hours[values.index(0.0)] == 4.0
    # smooth: no jump larger than a minute's worth of the steepest ramp (1.5/6 per hour)
    steps = [abs(b - a) for a, b in zip(values, [*values[1:], values[0]], strict=True)]
    assert max(steps) < 1.5 / 6 / 60 * 1.01
    assert load_curve(2.0) > load_curve(3.0) > load_curve(4.0) < load_curve(5.0)


def test_simulated_curve_value_uses_plant_local_hour() -> None:
    shanghai = ZoneInfo("Asia/Shanghai")
    rng = random.Random(1)
    curve = SimValue(SimConfig(min=100.0, max=200.0), shanghai, rng)
    assert curve.at(datetime(2024, 6, 1, 4, 0, tzinfo=shanghai).timestamp()) == 100.0
    assert curve.at(datetime(2024, 6, 1, 15, 0, tzinfo=shanghai).timestamp()) == 200.0
    # 20:00 UTC is 04:00 next day in Shanghai: the trough
    assert curve.at(datetime(2024, 6, 1, 20, 0, tzinfo=UTC).timestamp()) == 100.0
    constant = SimValue(SimConfig(value=42.125, noise=5.0), shanghai, rng)
    assert constant.at() == 42.125  # constants get no noise
    noisy = SimValue(SimConfig(min=10.0, max=10.0, noise=1.0), ZoneInfo("UTC"), rng)
    draws = [noisy.at() for _ in range(2000)]
    mean = sum(draws) / len(draws)
    sd = math.sqrt(sum((d - mean) ** 2 for d in draws) / len(draws))
    assert mean == pytest.approx(10.0, abs=0.1) and sd == pytest.approx(1.0, abs=0.1)
