"""DL/T 645, CJ/T 188 and Modbus RTU buses end to end against the simulators.

Serial buses run over pseudo-terminals (the real pyserial path; ptys accept parity N
only), gateways over loopback TCP. Faults are injected in the simulator per device.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter

from drivers import dlt645
from drivers.base import Driver, create_drivers, create_simulators
from drivers.config import DeviceConfig, Dlt645DeviceConfig, SerialLinkConfig
from drivers.meters import Dlt645Poller, meter_link
from drivers.stream_sim import Fault, SimBus, StreamSimulator
from model.flags import DataFlag
from model.records import DeviceEvent, Sample

POLL = 0.1
TIMEOUT = 0.15

_adapter: TypeAdapter[DeviceConfig] = TypeAdapter(DeviceConfig)


def dev(**kw: Any) -> DeviceConfig:
    return _adapter.validate_python({"poll_interval_s": POLL, "timeout_s": TIMEOUT,
                                     "simulate": True, **kw})


def serial_link(tmp_path: Path, name: str = "ttyRS485") -> dict[str, Any]:
    return {"serial": str(tmp_path / name), "baudrate": 9600, "parity": "N"}


def link_of(kind: str, tmp_path: Path, port: int) -> dict[str, Any]:
    return serial_link(tmp_path) if kind == "pty" else {"host": "127.0.0.1", "port": port}


class Run:
    """Simulators and drivers of some devices, collecting samples and events."""

    def __init__(self, drivers: list[Driver]) -> None:
        self.drivers = drivers
        self.samples: list[Sample] = []
        self.events: list[DeviceEvent] = []

    def of(self, tag: str) -> list[Sample]:
        return [s for s in self.samples if s.tag == tag]

    async def until(self, done: Callable[[], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not done():
                await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def running(devices: list[DeviceConfig]) -> AsyncIterator[tuple[Run, StreamSimulator]]:
    [sim] = create_simulators(devices, "Asia/Shanghai")
    assert isinstance(sim, StreamSimulator)
    await sim.start()
    run = Run([])
    run.drivers = create_drivers(devices, run.events.append)
    tasks = [asyncio.create_task(d.run(lambda b: run.samples.extend(b.samples())))
             for d in run.drivers]
    try:
        yield run, sim
    finally:
        for t in tasks:
            assert not t.done(), "a bus stopped polling"
            t.cancel()
        for t in tasks:
            with pytest.raises(asyncio.CancelledError):
                await t
        await sim.stop()


def last_good(run: Run, tag: str) -> float:
    good = [s for s in run.of(tag) if s.flag is DataFlag.N]
    assert good, f"no good sample of {tag}: {run.of(tag)[-3:]}"
    return good[-1].value


# --- DL/T 645 -------------------------------------------------------------------------

def meter645(link: dict[str, Any], address: str, tags: list[dict[str, Any]],
             id_: str, version: str = "2007") -> DeviceConfig:
    return dev(id=id_, protocol="dlt645", link=link, address=address, version=version,
               tags=tags)


@pytest.mark.parametrize("kind", ["pty", "tcp"])
async def test_dlt645_two_meters_share_a_bus(kind: str, tmp_path: Path, port: int) -> None:
    link = link_of(kind, tmp_path, port)
    g1 = meter645(link, "000000000161", [
        # the meter counts secondary kWh; CT 1000/5 × PT 10 kV/100 V = 20 000
        {"id": "g1_kwh", "di": "00010000", "scale": 20000.0,
         "sim": {"value": 0.0, "counter_start": 0.26 * 20000}},
        {"id": "g1_ua", "di": "02010100", "sim": {"value": 100.1}},
        {"id": "g1_ia", "di": "02020100", "sim": {"value": -1.234}},
        {"id": "g1_p", "di": "02030000", "sim": {"value": 0.7512}},
        {"id": "g1_pf", "di": "02060000", "sim": {"value": 0.985}},
        {"id": "g1_hz", "di": "02800002", "sim": {"value": 49.98}},
    ], "g1")
    old = meter645(link, "000000000003", [{"id": "aux_ua", "di": "B611",
                                           "sim": {"value": 100.0}}], "aux", version="1997")
    async with running([g1, old]) as (run, _sim):
        assert len(run.drivers) == 1  # one port, one bus
        await run.until(lambda: len(run.of("aux_ua")) >= 3 and len(run.of("g1_hz")) >= 3)
        [stats_g1, _stats_aux] = run.drivers[0].stats()
    assert last_good(run, "g1_kwh") == pytest.approx(0.26 * 20000)  # 0.26 kWh × 20 000
    assert last_good(run, "g1_ua") == pytest.approx(100.1)
    assert last_good(run, "g1_ia") == pytest.approx(-1.234)
    assert last_good(run, "g1_p") == pytest.approx(0.7512)
    assert last_good(run, "g1_pf") == pytest.approx(0.985)
    assert last_good(run, "g1_hz") == pytest.approx(49.98)
    assert last_good(run, "aux_ua") == 100.0
    assert all(s.flag is DataFlag.N for s in run.samples)
    assert run.events == []
    assert stats_g1.online and stats_g1.errors == 0 and stats_g1.requests >= 18
    assert stats_g1.bus == link.get("serial", f"127.0.0.1:{port}")


async def test_dlt645_counter_advances_with_load(tmp_path: Path) -> None:
    m = meter645(serial_link(tmp_path), "000000000161", [
        {"id": "kwh", "di": "00010000", "sim": {"value": 36000.0, "counter_start": 1000.0}}],
        "m")  # 36 000 kW: 10 kWh a second, so the 0.01 kWh resolution shows every poll
    async with running([m]) as (run, _sim):
        await run.until(lambda: len(run.of("kwh")) >= 6)
    values = [s.value for s in run.of("kwh")]
    assert all(b > a for a, b in itertools.pairwise(values))
    elapsed = (run.of("kwh")[-1].t - run.of("kwh")[0].t).total_seconds()
    assert values[-1] - values[0] == pytest.approx(10.0 * elapsed, abs=2.0)


# --- CJ/T 188 -------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["pty", "tcp"])
async def test_cjt188_water_gas_and_heat_meters(kind: str, tmp_path: Path, port: int) -> None:
    link = link_of(kind, tmp_path, port)
    water = dev(id="water", protocol="cjt188", link=link, meter_type=0x10,
                address="78330011223344", tags=[
                    {"id": "w_m3", "field": "current_volume_m3",
                     "sim": {"value": 0.0, "counter_start": 556677.0}}])
    gas = dev(id="gas", protocol="cjt188", link=link, meter_type=0x30,
              address="00000000000012", di_order="high_first", tags=[
                  {"id": "gas_m3", "field": "current_volume_m3",
                   "sim": {"value": 0.0, "counter_start": 1000.10}},
                  {"id": "gas_status", "field": "status"}])
    heat = dev(id="heat", protocol="cjt188", link=link, meter_type=0x20,
               address="00000000000099", tags=[
                   {"id": "h_kwh", "field": "current_heat_kwh",
                    "sim": {"value": 0.0, "counter_start": 12345.0}},
                   {"id": "h_supply", "field": "supply_temp_c", "sim": {"value": 85.25}},
                   {"id": "h_return", "field": "return_temp_c", "sim": {"value": 55.5}},
                   {"id": "h_flow", "field": "flow_m3_h", "sim": {"value": 12.3456}}])
    async with running([water, gas, heat]) as (run, _sim):
        await run.until(lambda: all(len(run.of(t)) >= 3 for t in ("w_m3", "gas_m3", "h_flow")))
    assert last_good(run, "w_m3") == pytest.approx(556677.00)
    assert last_good(run, "gas_m3") == pytest.approx(1000.10)
    assert last_good(run, "gas_status") == 0.0
    assert last_good(run, "h_kwh") == pytest.approx(12345.0)
    assert last_good(run, "h_supply") == pytest.approx(85.25)
    assert last_good(run, "h_return") == pytest.approx(55.5)
    assert last_good(run, "h_flow") == pytest.approx(12.3456)
    assert all(s.flag is DataFlag.N for s in run.samples)


async def test_cjt188_field_the_meter_does_not_supply_is_b(tmp_path: Path) -> None:
    water = dev(id="water", protocol="cjt188", link=serial_link(tmp_path), meter_type=0x10,
                address="78330011223344", simulate=True, tags=[
                    {"id": "w_m3", "field": "current_volume_m3", "sim": {"value": 5.0}},
                    {"id": "w_settle", "field": "settlement_volume_m3"}])
    # the simulator sends FF ("not supplied") for a field without a value
    async with running([water]) as (run, _sim):
        await run.until(lambda: len(run.of("w_settle")) >= 2)
    assert all(s.flag is DataFlag.B and math.isnan(s.value) for s in run.of("w_settle"))
    assert last_good(run, "w_m3") == 5.0


# --- Modbus RTU -----------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["pty", "tcp"])
async def test_modbus_rtu_units_share_a_bus(kind: str, tmp_path: Path, port: int) -> None:
    link = link_of(kind, tmp_path, port)
    one = dev(id="rtu1", protocol="modbus_rtu", link=link, device_id=1, tags=[
        {"id": "flow", "register": 0, "order": "CDAB", "sim": {"value": 123.456}},
        {"id": "temp", "register": 2, "type": "int16", "scale": 0.1, "function": "input",
         "sim": {"value": -12.3}},
        {"id": "running", "register": 5, "function": "coil", "sim": {"value": 1}},
        {"id": "trip", "register": 6, "function": "discrete", "sim": {"value": 0}},
        {"id": "alarm_bit3", "register": 10, "type": "uint16", "bit": 3, "sim": {"value": 1}},
        {"id": "alarm_bit4", "register": 10, "type": "uint16", "bit": 4, "sim": {"value": 0}},
    ])
    two = dev(id="rtu2", protocol="modbus_rtu", link=link, device_id=7, tags=[
        {"id": "co2", "register": 100, "type": "float64", "sim": {"value": 12.5}}])
    async with running([one, two]) as (run, _sim):
        assert len(run.drivers) == 1
        await run.until(lambda: len(run.of("co2")) >= 3 and len(run.of("alarm_bit4")) >= 3)
    assert last_good(run, "flow") == pytest.approx(123.456, rel=1e-7)  # float32
    assert last_good(run, "temp") == pytest.approx(-12.3)
    assert last_good(run, "running") == 1.0
    assert last_good(run, "trip") == 0.0
    assert last_good(run, "alarm_bit3") == 1.0
    assert last_good(run, "alarm_bit4") == 0.0
    assert last_good(run, "co2") == 12.5
    assert all(s.flag is DataFlag.N for s in run.samples)


# --- faults ---------------------------------------------------------------------------

def pair(protocol: str, link: dict[str, Any]) -> list[DeviceConfig]:
    """A good and a faulty device of `protocol` on one bus; tags good_v / bad_v."""
    if protocol == "dlt645":
        return [meter645(link, "000000000161", [{"id": "good_v", "di": "02010100",
                                                 "sim": {"value": 230.0}}], "good"),
                meter645(link, "000000000162", [{"id": "bad_v", "di": "02010100",
                                                 "sim": {"value": 231.0}}], "bad")]
    if protocol == "cjt188":
        return [dev(id="good", protocol="cjt188", link=link, meter_type=0x10,
                    address="00000000000001",
                    tags=[{"id": "good_v", "field": "current_volume_m3",
                           "sim": {"value": 10.0}}]),
                dev(id="bad", protocol="cjt188", link=link, meter_type=0x10,
                    address="00000000000002",
                    tags=[{"id": "bad_v", "field": "current_volume_m3",
                           "sim": {"value": 20.0}}])]
    return [dev(id="good", protocol="modbus_rtu", link=link, device_id=1,
                tags=[{"id": "good_v", "register": 0, "sim": {"value": 1.5}}]),
            dev(id="bad", protocol="modbus_rtu", link=link, device_id=2,
                tags=[{"id": "bad_v", "register": 0, "sim": {"value": 2.5}}])]


FAULTS: list[Fault] = ["silent", "garbage", "bad_checksum", "truncated", "wrong_address",
                       "disconnect"]


@pytest.mark.parametrize("protocol", ["dlt645", "cjt188", "modbus_rtu"])
@pytest.mark.parametrize("fault", FAULTS)
async def test_faulty_device_is_flagged_and_the_other_keeps_its_rate(
        protocol: str, fault: Fault, tmp_path: Path, port: int) -> None:
    # "disconnect" drops the TCP connection of a gateway mid-frame; on a serial line
    # the same fault is a reply cut off (there is no connection to drop).
    link = {"host": "127.0.0.1", "port": port} if fault == "disconnect" else (
        serial_link(tmp_path))
    devices = pair(protocol, link)
    window = 1.5
    async with running(devices) as (run, sim):
        sim.set_fault("bad", fault)
        await run.until(lambda: len(run.of("good_v")) >= 1)
        start = len(run.of("good_v"))
        t0 = asyncio.get_running_loop().time()
        await asyncio.sleep(window)
        good_polls = len(run.of("good_v")) - start
        elapsed = asyncio.get_running_loop().time() - t0
        sim.set_fault("bad", "none")  # the device recovers: its values come back
        await run.until(lambda: run.of("bad_v")[-1].flag is DataFlag.N, timeout=15.0)
        stats = {s.device: s for d in run.drivers for s in d.stats()}
    expected = elapsed / POLL
    assert good_polls >= 0.8 * expected, (good_polls, expected)
    assert all(s.flag is DataFlag.N for s in run.of("good_v"))
    bad = run.of("bad_v")
    first_n = next(i for i, s in enumerate(bad) if s.flag is DataFlag.N)
    assert first_n > 0 and all(s.flag is DataFlag.B and math.isnan(s.value)
                               for s in bad[:first_n])
    faults = [e for e in run.events if e.fault]
    assert [e.device for e in faults] == ["bad"]
    assert [e.device for e in run.events if not e.fault] == ["bad"]  # restored once
    assert stats["good"].online and stats["good"].errors == 0
    assert stats["bad"].online and stats["bad"].errors >= 1
    message = faults[0].message
    if protocol == "modbus_rtu" and fault != "disconnect":
        # pymodbus discards what is not a valid reply from the unit asked
        expect = "no reply reading holding 0..1 within 0.15 s"
    elif fault == "disconnect":
        expect = f"connection to 127.0.0.1:{port} lost"
    elif fault == "silent":
        expect = "no reply within 0.15 s"
    elif fault == "garbage":
        expect = "no complete frame within 0.15 s; received 32 bytes: 20 21 22"
    elif fault == "truncated" or (fault == "bad_checksum" and protocol == "cjt188"):
        expect = "no complete frame within 0.15 s; received"  # CJ/T 188 skips bad sums
    elif fault == "bad_checksum":
        expect = "bad checksum"
    elif protocol == "dlt645":
        expect = "reply from meter 000000000163, expected 000000000162"
    else:
        expect = "reply from meter 00000000000003, expected 00000000000002"
    assert expect in message, message


@pytest.mark.parametrize("protocol", ["dlt645", "cjt188", "modbus_rtu"])
async def test_one_lost_reply_is_retried_not_flagged(protocol: str, tmp_path: Path) -> None:
    devices = pair(protocol, serial_link(tmp_path))
    async with running(devices) as (run, sim):
        await run.until(lambda: len(run.of("good_v")) >= 2)
        n = len(run.of("good_v"))
        sim.set_fault("good", "drop_one")
        await run.until(lambda: len(run.of("good_v")) >= n + 3)
        stats = {s.device: s for d in run.drivers for s in d.stats()}
    assert all(s.flag is DataFlag.N for s in run.of("good_v"))
    assert stats["good"].errors == 1  # the lost reply, then the repeat was answered
    assert run.events == []


class _SplittingMeter:
    """A DL/T 645-2007 meter that sends at most 8 data bytes a frame (follow-ups 0x12)."""

    device_id = "split"

    def __init__(self) -> None:
        volts = {0x02010100: 220.1, 0x02010200: 220.2, 0x02010300: 220.3}
        self.meter = dlt645.Meter("000000000161", "2007",
                                  {di: (lambda _t, v=v: v) for di, v in volts.items()},
                                  max_data_per_frame=8)

    def handle(self, request: bytes, now: float) -> bytes | None:
        return self.meter.handle(request, now)

    def readdress(self, reply: bytes) -> bytes:
        return reply


async def test_dlt645_follow_up_frames_are_joined(tmp_path: Path) -> None:
    link = serial_link(tmp_path)
    cfg = meter645(link, "000000000161", [{"id": "u_abc", "di": "0201FF00"}], "split")
    assert isinstance(cfg, Dlt645DeviceConfig)
    sim = StreamSimulator([SimBus("split", SerialLinkConfig.model_validate(link),
                                  [_SplittingMeter()], dlt645.find_frame)])
    await sim.start()
    poller = Dlt645Poller(cfg, meter_link(cfg.link))
    try:
        reading = await poller.read(0x0201FF00)
    finally:
        await poller.link.close()
        await sim.stop()
    # 3 voltages × 2 bytes = 6 value bytes; 8 data bytes a frame hold the 4-byte DI and
    # 4 value bytes, so the last 2 come in one follow-up (DI + 2 bytes + SEQ)
    assert reading.values == pytest.approx((220.1, 220.2, 220.3))
    assert reading.unit == "V"
    assert poller.stats.requests == 2
