"""Simulated Modbus TCP instruments: one server per (host, port), one unit per device."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
from collections.abc import Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.codec import encode, register_count
from server.config import ModbusTagConfig, ModbusTcpDeviceConfig, SimConfig

log = logging.getLogger(__name__)

UPDATE_INTERVAL_S = 0.5
_FUNCTION_CODE = {"holding": 3, "input": 4}  # codes pymodbus maps to the hr / ir blocks

_INT_RANGE = {"int16": (-0x8000, 0x7FFF), "uint16": (0, 0xFFFF),
              "int32": (-0x8000_0000, 0x7FFF_FFFF), "uint32": (0, 0xFFFF_FFFF)}


def load_curve(hour: float) -> float:
    """Daily load in [0, 1] at plant-local `hour`: trough 0 at 04:00, plateau 1 over 10–20.

    Smoothstep ramps (continuous slope) up 04→10 and down 20→04 next day.
    """
    h = hour % 24.0
    if h < 4.0:
        h += 24.0
    if h <= 10.0:
        return _smoothstep((h - 4.0) / 6.0)
    if h <= 20.0:
        return 1.0
    return 1.0 - _smoothstep((h - 20.0) / 8.0)


def _smoothstep(x: float) -> float:
    x = min(max(x, 0.0), 1.0)
    return x * x * (3.0 - 2.0 * x)


class ModbusTcpSimulator:
    """Serves the configured devices' tags with simulated values over real Modbus TCP."""

    def __init__(self, devices: Sequence[ModbusTcpDeviceConfig], timezone: str,
                 *, seed: int | None = None) -> None:
        self._zone = ZoneInfo(timezone)
        self._rng = random.Random(seed)
        self._endpoints: dict[tuple[str, int], list[ModbusTcpDeviceConfig]] = {}
        for dev in devices:
            self._endpoints.setdefault((dev.host, dev.port), []).append(dev)
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
            for (host, port), devs in self._endpoints.items():
                server = ModbusTcpServer([self._sim_device(d) for d in devs],
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

    def value(self, sim: SimConfig, when: datetime | None = None) -> float:
        """Engineering value of one simulated tag at `when` (now by default)."""
        if sim.value is not None:
            return sim.value
        assert sim.min is not None and sim.max is not None
        local = (when or datetime.now(self._zone)).astimezone(self._zone)
        hour = local.hour + local.minute / 60 + local.second / 3600
        noise = self._rng.gauss(0.0, sim.noise) if sim.noise > 0 else 0.0
        return sim.min + (sim.max - sim.min) * load_curve(hour) + noise

    def registers(self, tag: ModbusTagConfig, value: float) -> list[int]:
        """Registers that make a driver reading `tag` reproduce `value`."""
        raw = (value - tag.offset) / tag.scale
        if tag.type in _INT_RANGE:
            lo, hi = _INT_RANGE[tag.type]
            raw = float(min(max(round(raw), lo), hi)) if math.isfinite(raw) else 0.0
        return encode(raw, tag.type, tag.order)

    @staticmethod
    def _sim_device(dev: ModbusTcpDeviceConfig) -> SimDevice:
        """Register map of one unit: holding and input tables spanning all its tags."""
        tables: dict[str, list[SimData]] = {}
        for function in ("holding", "input"):
            tags = [t for t in dev.tags if t.function == function]
            if tags:
                # One contiguous range, so that block reads across unused gaps succeed.
                start = min(t.address for t in tags)
                end = max(t.address + register_count(t.type) for t in tags)
                tables[function] = [SimData(start, count=end - start, values=0,
                                            datatype=DataType.REGISTERS)]
            else:
                tables[function] = [SimData(0, datatype=DataType.INVALID)]
        bits = [SimData(0, count=16, values=False, datatype=DataType.BITS)]
        return SimDevice(dev.device_id, simdata=(bits, list(bits), tables["holding"],
                                                 tables["input"]))

    async def _write_all(self) -> None:
        """Recompute every tag and store its registers in the servers."""
        for endpoint, server in self._servers.items():
            for dev in self._endpoints[endpoint]:
                for tag in dev.tags:
                    if tag.sim is None:
                        continue
                    regs = self.registers(tag, self.value(tag.sim))
                    await server.async_setValues(dev.device_id, _FUNCTION_CODE[tag.function],
                                                 tag.address, regs)

    async def _update_loop(self) -> None:
        while True:
            await asyncio.sleep(UPDATE_INTERVAL_S)
            try:
                await self._write_all()
            except Exception:  # keep serving the last values rather than dying silently
                log.exception("modbus simulator: updating registers failed")
