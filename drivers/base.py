"""The driver interface and the protocol registry (config `protocol:` name → bus factory)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from drivers.bus import DeviceStats, Emit, OnEvent
from drivers.config import DeviceConfig, bus_key
from drivers.link import BusStats
from model.records import TagTable


class Driver(Protocol):
    """Polls the devices of one bus (serial port or TCP endpoint) and emits sample blocks."""

    name: str

    async def run(self, emit: Emit) -> None:
        """Poll until cancelled; never raises for device faults (flags samples B/D instead)."""
        ...

    def stats(self) -> list[DeviceStats]:
        """Current request / error counters of each device on the bus."""
        ...

    def bus_stats(self) -> BusStats:
        """Current counters of the bus itself (connects, requests, bytes)."""
        ...


class Simulator(Protocol):
    """A simulated instrument endpoint speaking its real protocol on loopback."""

    async def start(self) -> None:
        """Bind and start serving."""
        ...

    async def stop(self) -> None:
        """Stop serving and release the port."""
        ...


# protocol name → "module:factory"; imported lazily so that checking a config stays fast.
_DRIVERS: dict[str, str] = {
    "modbus_tcp": "drivers.modbus:make_bus",
    "modbus_rtu": "drivers.modbus:make_bus",
    "dlt645": "drivers.meters:make_dlt645_bus",
    "cjt188": "drivers.meters:make_cjt188_bus",
}
_SIMULATORS: dict[str, str] = {
    "modbus_tcp": "drivers.modbus_sim:ModbusTcpSimulator",
    "modbus_rtu": "drivers.stream_sim:modbus_rtu_simulator",
    "dlt645": "drivers.stream_sim:dlt645_simulator",
    "cjt188": "drivers.stream_sim:cjt188_simulator",
}


def protocols() -> list[str]:
    """Names of the protocols a device may use."""
    return sorted(_DRIVERS)


def _load(table: dict[str, str], protocol: str) -> Any:
    module, name = table[protocol].split(":")
    return getattr(importlib.import_module(module), name)


def create_drivers(devices: Sequence[DeviceConfig], on_event: OnEvent | None = None,
                   table: TagTable | None = None) -> list[Driver]:
    """One driver per bus: devices naming the same serial port or endpoint share it; their
    blocks name tags by row of `table` (by default the devices' tags in order)."""
    if table is None:
        table = TagTable(tuple(t.id for d in devices for t in d.tags))
    buses: dict[str, list[DeviceConfig]] = {}
    for dev in devices:
        buses.setdefault(bus_key(dev), []).append(dev)
    drivers: list[Driver] = []
    for devs in buses.values():
        factory: Callable[[Sequence[DeviceConfig], OnEvent | None, TagTable], Driver] = _load(
            _DRIVERS, devs[0].protocol)
        drivers.append(factory(devs, on_event, table))
    return drivers


def create_simulators(devices: Sequence[DeviceConfig], timezone: str) -> list[Simulator]:
    """Build simulators for the devices marked `simulate: true`, one per protocol."""
    by_protocol: dict[str, list[DeviceConfig]] = {}
    for dev in devices:
        if dev.simulate:
            by_protocol.setdefault(dev.protocol, []).append(dev)
    sims: list[Simulator] = []
    for protocol, devs in by_protocol.items():
        factory: Callable[[Sequence[DeviceConfig], str], Simulator] = _load(
            _SIMULATORS, protocol)
        sims.append(factory(devs, timezone))
    return sims
