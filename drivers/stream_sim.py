"""Simulated serial buses: meters and RTU units answering real frames over TCP or a pty.

One simulator serves every simulated bus of one protocol. A bus on a TCP link listens
on that loopback endpoint (a transparent gateway); a bus on a serial link gets a
pseudo-terminal whose slave end is linked at the configured path, so the driver opens
it like a real port. Faults can be injected per device for tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
import time
import tty
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, TypeVar
from zoneinfo import ZoneInfo

from pymodbus.framer.rtu import FramerRTU

from drivers import cjt188, dlt645
from drivers.config import (
    Cjt188DeviceConfig,
    Dlt645DeviceConfig,
    ModbusRtuDeviceConfig,
    SerialLinkConfig,
    TcpLinkConfig,
    bus_key,
)
from drivers.modbus_sim import ModbusDevice, ModbusRtuResponder, RegisterMap
from drivers.sim import SimValue

log = logging.getLogger(__name__)

Fault = Literal["none", "silent", "garbage", "bad_checksum", "truncated", "wrong_address",
                "disconnect", "drop_one"]  # drop_one: ignore the next request only
GARBAGE = bytes(range(0x20, 0x40))  # no 0x68 / 0xFE: cannot be taken for a frame start


class Unit(Protocol):
    """One simulated device on a bus."""

    device_id: str

    def handle(self, request: bytes, now: float) -> bytes | None:
        """The reply to `request`, or None when it is not addressed to this device."""
        ...

    def readdress(self, reply: bytes) -> bytes:
        """The same reply as if sent by another device (valid checksum)."""
        ...


class _MeterUnit:
    """A DL/T 645 or CJ/T 188 meter; both put the address right after the first 0x68."""

    def __init__(self, device_id: str, meter: dlt645.Meter | cjt188.Meter,
                 address_at: int) -> None:
        self.device_id = device_id
        self.meter = meter
        self._address_at = address_at  # offset of the lowest address byte from the 0x68

    def handle(self, request: bytes, now: float) -> bytes | None:
        return self.meter.handle(request, now)

    def readdress(self, reply: bytes) -> bytes:
        frame = bytearray(reply)
        start = frame.index(0x68)
        frame[start + self._address_at] ^= 0x01  # the lowest address digit changes
        frame[-2] = sum(frame[start:-2]) & 0xFF  # the sum checksum, second-last byte
        return bytes(frame)


class _RtuUnit:
    def __init__(self, dev: ModbusDevice, zone: ZoneInfo, rng: random.Random) -> None:
        self.device_id = dev.id
        self.responder = ModbusRtuResponder([RegisterMap(dev, zone, rng)])
        self.unit = dev.device_id

    def handle(self, request: bytes, now: float) -> bytes | None:
        if len(request) < 1 or request[0] != self.unit:
            return None
        self.responder.update(now)
        return self.responder.handle(request, now)

    def readdress(self, reply: bytes) -> bytes:
        pdu = bytes([(reply[0] % 247) + 1]) + reply[1:-2]
        return pdu + FramerRTU.compute_CRC(pdu).to_bytes(2, "big")


@dataclass
class SimBus:
    """One simulated bus: where it is served, its devices and how requests are framed."""

    name: str
    link: SerialLinkConfig | TcpLinkConfig
    units: list[Unit]
    find_frame: Callable[[bytearray], tuple[int, int] | None]


class StreamSimulator:
    """Serves simulated buses of one protocol; see the module docstring."""

    def __init__(self, buses: Sequence[SimBus]) -> None:
        self._buses = list(buses)
        self.faults: dict[str, Fault] = {}
        self._servers: list[asyncio.Server] = []
        self._ptys: list[tuple[int, int, Path]] = []  # master, slave, linked path
        self._writers: set[asyncio.StreamWriter] = set()

    def set_fault(self, device_id: str, fault: Fault) -> None:
        """Make one simulated device misbehave (or behave again with "none")."""
        self.faults[device_id] = fault

    async def start(self) -> None:
        """Listen on every TCP endpoint and open a pty for every serial bus."""
        loop = asyncio.get_running_loop()
        try:
            for bus in self._buses:
                if isinstance(bus.link, TcpLinkConfig):
                    server = await asyncio.start_server(
                        functools.partial(self._serve_tcp, bus), bus.link.host, bus.link.port)
                    self._servers.append(server)
                elif isinstance(bus.link, SerialLinkConfig):
                    master, slave = os.openpty()
                    tty.setraw(slave)  # no echo, no line editing: bytes pass unchanged
                    path = Path(bus.link.serial)
                    if path.is_symlink():
                        path.unlink()
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.symlink_to(os.ttyname(slave))
                    os.set_blocking(master, False)
                    self._ptys.append((master, slave, path))
                    loop.add_reader(master, self._on_pty, bus, master, bytearray())
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Close every endpoint and pty, remove the pty links."""
        loop = asyncio.get_running_loop()
        for server in self._servers:
            server.close()
        for writer in list(self._writers):
            writer.close()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self._servers.clear()
        for master, slave, path in self._ptys:
            loop.remove_reader(master)
            os.close(master)
            os.close(slave)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        self._ptys.clear()
        await asyncio.sleep(0)

    def _answer(self, bus: SimBus, request: bytes) -> tuple[Fault, bytes | None]:
        """The reply of the device the request is for, with its fault applied."""
        now = time.time()
        for unit in bus.units:
            try:
                reply = unit.handle(request, now)
            except ValueError:
                log.exception("simulated device %s cannot encode its value", unit.device_id)
                return "none", None
            if reply is None:
                continue
            fault = self.faults.get(unit.device_id, "none")
            if fault == "drop_one":
                self.faults[unit.device_id] = "none"
                return fault, None
            if fault == "silent":
                return fault, None
            if fault == "garbage":
                return fault, GARBAGE
            if fault == "bad_checksum":
                corrupt = bytearray(reply)
                corrupt[-3] ^= 0x5A  # the last data byte: framing intact, checksum wrong
                return fault, bytes(corrupt)
            if fault in ("truncated", "disconnect"):
                return fault, reply[:len(reply) // 2]
            if fault == "wrong_address":
                return fault, unit.readdress(reply)
            return fault, reply
        return "none", None

    async def _serve_tcp(self, bus: SimBus, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        buf = bytearray()
        try:
            while True:
                data = await reader.read(4096)
                if not data:
                    return
                buf += data
                for request in _requests(bus, buf):
                    fault, reply = self._answer(bus, request)
                    if reply is not None:
                        writer.write(reply)
                        await writer.drain()
                    if fault == "disconnect":
                        return
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()

    def _on_pty(self, bus: SimBus, master: int, buf: bytearray) -> None:
        try:
            buf += os.read(master, 4096)
        except OSError:  # nothing to read, or EIO while no one holds the slave open
            return
        for request in _requests(bus, buf):
            _fault, reply = self._answer(bus, request)
            if reply is not None:
                with contextlib.suppress(OSError):
                    os.write(master, reply)


def _requests(bus: SimBus, buf: bytearray) -> Iterator[bytes]:
    """Take every complete request frame off the front of `buf`."""
    while (span := bus.find_frame(buf)) is not None:
        request = bytes(buf[span[0]:span[1]])
        del buf[:span[1]]
        yield request


_Dev = TypeVar("_Dev", Dlt645DeviceConfig, Cjt188DeviceConfig, ModbusRtuDeviceConfig)


def _group(devices: Sequence[_Dev]) -> dict[str, list[_Dev]]:
    buses: dict[str, list[_Dev]] = {}
    for dev in devices:
        buses.setdefault(bus_key(dev), []).append(dev)
    return buses


def _raw(sim: SimValue, scale: float, offset: float) -> Callable[[float], float]:
    """The value a meter holds for a tag whose engineering value is raw × scale + offset."""
    return lambda now: (sim.at(now) - offset) / scale


def _simulator(devices: Sequence[_Dev], timezone: str, seed: int | None,
               unit: Callable[[_Dev, ZoneInfo, random.Random], Unit],
               find_frame: Callable[[bytearray], tuple[int, int] | None]) -> StreamSimulator:
    """One simulated bus per configured link, one `unit(device)` per device on it."""
    zone, rng = ZoneInfo(timezone), random.Random(seed)
    return StreamSimulator([SimBus(name, devs[0].link, [unit(d, zone, rng) for d in devs],
                                   find_frame)
                            for name, devs in _group(devices).items()])


def _dlt645_unit(dev: Dlt645DeviceConfig, zone: ZoneInfo, rng: random.Random) -> Unit:
    values = {int(t.di, 16): _raw(SimValue(t.sim, zone, rng), t.scale, t.offset)
              for t in dev.tags if t.sim is not None}
    return _MeterUnit(dev.id, dlt645.Meter(dev.address, dev.version, values), 1)


def _cjt188_unit(dev: Cjt188DeviceConfig, zone: ZoneInfo, rng: random.Random) -> Unit:
    values: dict[str, Callable[[float], float]] = {
        t.field: _raw(SimValue(t.sim, zone, rng), t.scale, t.offset)
        for t in dev.tags if t.sim is not None and t.field != "status"}
    meter = cjt188.Meter(dev.meter_type, dev.address, values, di_order=dev.di_order)
    return _MeterUnit(dev.id, meter, 2)


def dlt645_simulator(devices: Sequence[Dlt645DeviceConfig], timezone: str,
                     *, seed: int | None = None) -> StreamSimulator:
    """Simulated DL/T 645 meters, one bus per configured link."""
    return _simulator(devices, timezone, seed, _dlt645_unit, dlt645.find_frame)


def cjt188_simulator(devices: Sequence[Cjt188DeviceConfig], timezone: str,
                     *, seed: int | None = None) -> StreamSimulator:
    """Simulated CJ/T 188 meters, one bus per configured link."""
    return _simulator(devices, timezone, seed, _cjt188_unit, cjt188.find_frame)


def modbus_rtu_simulator(devices: Sequence[ModbusRtuDeviceConfig], timezone: str,
                         *, seed: int | None = None) -> StreamSimulator:
    """Simulated Modbus RTU units, one bus per configured link."""
    return _simulator(devices, timezone, seed, _RtuUnit, ModbusRtuResponder.find_frame)
