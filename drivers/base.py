"""The driver interface and the protocol registry (config `protocol:` name → factory)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from server.records import Sample

Emit = Callable[[Sequence[Sample]], None]


@dataclass(slots=True)
class DeviceStats:
    """Counters of one device, exposed to the rest of the server."""

    device: str
    requests: int = 0
    errors: int = 0
    last_error: str = ""
    last_latency_s: float = 0.0
    online: bool = False


class Driver(Protocol):
    """Polls one field device at its configured rate and emits samples."""

    device_id: str

    async def run(self, emit: Emit) -> None:
        """Poll until cancelled; never raises for device faults (flags samples B/D instead)."""
        ...

    def stats(self) -> DeviceStats:
        """Current request / error counters of the device."""
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
    "modbus_tcp": "drivers.modbus:ModbusTcpDriver",
}
_SIMULATORS: dict[str, str] = {
    "modbus_tcp": "drivers.modbus_sim:ModbusTcpSimulator",
}


def protocols() -> list[str]:
    """Names of the protocols a device may use."""
    return sorted(_DRIVERS)


def _load(table: dict[str, str], protocol: str) -> Any:
    module, name = table[protocol].split(":")
    return getattr(importlib.import_module(module), name)


def create_driver(device: Any) -> Driver:
    """Build the driver for one configured device."""
    factory: Callable[[Any], Driver] = _load(_DRIVERS, device.protocol)
    return factory(device)


def create_simulators(devices: Sequence[Any], timezone: str) -> list[Simulator]:
    """Build simulators for the devices marked `simulate: true`, one per protocol."""
    by_protocol: dict[str, list[Any]] = {}
    for dev in devices:
        if dev.simulate:
            by_protocol.setdefault(dev.protocol, []).append(dev)
    sims: list[Simulator] = []
    for protocol, devs in by_protocol.items():
        factory: Callable[[Sequence[Any], str], Simulator] = _load(_SIMULATORS, protocol)
        sims.append(factory(devs, timezone))
    return sims
