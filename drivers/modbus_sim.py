"""Simulated Modbus instruments: register maps served over Modbus TCP (pymodbus) or RTU frames."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import struct
import time
from collections.abc import Sequence
from zoneinfo import ZoneInfo

from pymodbus.framer.rtu import FramerRTU
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.codec import BIT_FUNCTIONS, encode, register_count
from drivers.config import ModbusRtuDeviceConfig, ModbusTagConfig, ModbusTcpDeviceConfig
from drivers.sim import SimValue

log = logging.getLogger(__name__)

UPDATE_INTERVAL_S = 0.5
_FUNCTION_CODE = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}
_TABLE = {code: name for name, code in _FUNCTION_CODE.items()}
_INT_RANGE = {"int16": (-0x8000, 0x7FFF), "uint16": (0, 0xFFFF),
              "int32": (-0x8000_0000, 0x7FFF_FFFF), "uint32": (0, 0xFFFF_FFFF)}
ILLEGAL_FUNCTION, ILLEGAL_ADDRESS = 1, 2

ModbusDevice = ModbusTcpDeviceConfig | ModbusRtuDeviceConfig


def registers(tag: ModbusTagConfig, value: float) -> list[int]:
    """Registers (or one bit, for bit tables) that make a driver reading `tag` see `value`."""
    raw = (value - tag.offset) / tag.scale
    if tag.function in BIT_FUNCTIONS or tag.bit is not None:
        return [1 if raw >= 0.5 else 0]
    if tag.type in _INT_RANGE:
        lo, hi = _INT_RANGE[tag.type]
        raw = float(min(max(round(raw), lo), hi)) if math.isfinite(raw) else 0.0
    return encode(raw, tag.type, tag.order)


class RegisterMap:
    """The four tables of one simulated unit, spanning all its tags contiguously."""

    def __init__(self, device: ModbusDevice, zone: ZoneInfo, rng: random.Random) -> None:
        self.device = device
        self.tables: dict[str, tuple[int, list[int]]] = {}  # name → (start, values)
        for name in _FUNCTION_CODE:
            tags = [t for t in device.tags if t.function == name]
            if tags:
                # One contiguous range, so that block reads across unused gaps succeed.
                start = min(t.address for t in tags)
                end = max(t.address + (1 if name in BIT_FUNCTIONS else register_count(t.type))
                          for t in tags)
                self.tables[name] = (start, [0] * (end - start))
        self._values = [(t, SimValue(t.sim, zone, rng)) for t in device.tags if t.sim]

    def update(self, now: float | None = None) -> None:
        """Recompute every simulated tag at `now` (epoch seconds)."""
        t = time.time() if now is None else now
        for tag, sim in self._values:
            start, table = self.tables[tag.function]
            off = tag.address - start
            regs = registers(tag, sim.at(t))
            if tag.bit is not None:
                mask = 1 << tag.bit
                table[off] = (table[off] | mask) if regs[0] else (table[off] & ~mask)
            else:
                table[off:off + len(regs)] = regs

    def read(self, function_code: int, address: int, count: int) -> list[int] | int:
        """Values of a read request, or the Modbus exception code to answer with."""
        name = _TABLE.get(function_code)
        if name is None:
            return ILLEGAL_FUNCTION
        start, table = self.tables.get(name, (0, []))
        if count < 1 or address < start or address + count > start + len(table):
            return ILLEGAL_ADDRESS
        return table[address - start:address - start + count]


class ModbusRtuResponder:
    """Answers Modbus RTU request frames for the units on one simulated bus."""

    def __init__(self, maps: Sequence[RegisterMap]) -> None:
        self.maps = {m.device.device_id: m for m in maps}

    def update(self, now: float) -> None:
        """Recompute the register maps."""
        for m in self.maps.values():
            m.update(now)

    @staticmethod
    def find_frame(buf: bytes | bytearray) -> tuple[int, int] | None:
        """A read request is always 8 bytes: unit, function, address, count, CRC."""
        return (0, 8) if len(buf) >= 8 else None

    def handle(self, request: bytes, now: float) -> bytes | None:
        """The reply frame to one request; None for another unit or a corrupt frame."""
        if len(request) != 8 or not FramerRTU.check_CRC(request[:6],
                                                         int.from_bytes(request[6:], "big")):
            return None
        unit, fc, address, count = struct.unpack(">BBHH", request[:6])
        dev = self.maps.get(unit)
        if dev is None:
            return None
        values = dev.read(fc, address, count)
        if isinstance(values, int):
            pdu = bytes([unit, fc | 0x80, values])
        elif fc in (1, 2):
            packed = bytearray((count + 7) // 8)
            for i, bit in enumerate(values):
                packed[i // 8] |= bit << (i % 8)
            pdu = bytes([unit, fc, len(packed)]) + bytes(packed)
        else:
            pdu = bytes([unit, fc, 2 * count]) + struct.pack(f">{count}H", *values)
        return pdu + FramerRTU.compute_CRC(pdu).to_bytes(2, "big")


class ModbusTcpSimulator:
    """Serves the configured devices' tags with simulated values over real Modbus TCP."""

    def __init__(self, devices: Sequence[ModbusTcpDeviceConfig], timezone: str,
                 *, seed: int | None = None) -> None:
        zone = ZoneInfo(timezone)
        rng = random.Random(seed)
        self._endpoints: dict[tuple[str, int], list[RegisterMap]] = {}
        for dev in devices:
            self._endpoints.setdefault((dev.host, dev.port), []).append(
                RegisterMap(dev, zone, rng))
        self._servers: dict[tuple[str, int], ModbusTcpServer] = {}
        self._updater: asyncio.Task[None] | None = None

    @property
    def endpoints(self) -> list[tuple[str, int]]:
        """The (host, port) pairs this simulator listens on."""
        return list(self._endpoints)

    async def start(self) -> None:
        """Listen on every endpoint; returns once all of them accept connections."""
        if self._servers:
            return
        try:
            for (host, port), maps in self._endpoints.items():
                server = ModbusTcpServer([self._sim_device(m) for m in maps],
                                         address=(host, port))
                try:
                    await server.serve_forever(background=True)
                except RuntimeError as exc:  # pymodbus logs the OSError and raises this
                    raise OSError(f"Modbus simulator cannot listen on {host}:{port}") from exc
                self._servers[(host, port)] = server
            await self._write_all()
        except BaseException:
            await self.stop()
            raise
        self._updater = asyncio.create_task(self._update_loop(), name="modbus simulator")

    async def stop(self) -> None:
        """Stop serving, drop client connections and release the ports."""
        if self._updater is not None:
            self._updater.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._updater
            self._updater = None
        servers, self._servers = self._servers, {}
        for server in servers.values():
            await server.shutdown()  # type: ignore[no-untyped-call]
        await asyncio.sleep(0)  # let the transports' close callbacks run

    @staticmethod
    def _sim_device(m: RegisterMap) -> SimDevice:
        """pymodbus device with the same four tables as the register map."""
        simdata: list[list[SimData]] = []
        for name in _FUNCTION_CODE:
            bits = name in BIT_FUNCTIONS
            if name in m.tables:
                start, values = m.tables[name]
                kind = DataType.BITS if bits else DataType.REGISTERS
                simdata.append([SimData(start, count=len(values), values=0, datatype=kind)])
            elif bits:  # pymodbus wants a bit table; unused ones hold 16 zero bits
                simdata.append([SimData(0, count=16, values=False, datatype=DataType.BITS)])
            else:
                simdata.append([SimData(0, datatype=DataType.INVALID)])
        coils, discrete, holding, inputs = simdata
        return SimDevice(m.device.device_id, simdata=(coils, discrete, holding, inputs))

    async def _write_all(self) -> None:
        """Recompute every tag and store the tables in the servers."""
        now = time.time()
        for endpoint, server in self._servers.items():
            for m in self._endpoints[endpoint]:
                m.update(now)
                for name, (start, values) in m.tables.items():
                    data: list[int] | list[bool] = (
                        [bool(v) for v in values] if name in BIT_FUNCTIONS else values)
                    await server.async_setValues(m.device.device_id, _FUNCTION_CODE[name],
                                                 start, data)

    async def _update_loop(self) -> None:
        while True:
            await asyncio.sleep(UPDATE_INTERVAL_S)
            try:
                await self._write_all()
            except Exception:  # keep serving the last values rather than dying silently
                log.exception("modbus simulator: updating registers failed")
