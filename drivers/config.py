"""Configuration schema of the field drivers: devices, their tags, links and simulators.

Each protocol's device model is one branch of the `DeviceConfig` union, tagged by
`protocol:`; the driver registry (drivers/base.py) maps the same names to drivers.
"""

from __future__ import annotations

import ipaddress
from datetime import date
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field

from model.schema import ConfigModel, Identifier, Problems

WordOrder = Literal["ABCD", "CDAB", "BADC", "DCBA"]
RegisterType = Literal["int16", "uint16", "int32", "uint32", "float32", "float64"]


class SimConfig(ConfigModel):
    """How a simulated instrument produces a value.

    Either a constant `value`, or a value following the daily load curve between
    `min` (night trough) and `max` (day peak) plus gaussian `noise` (absolute, 1σ).
    All in the tag's engineering unit, after scale and offset: the simulator writes
    (value − offset) / scale to the registers. With `counter_start` the tag is a
    cumulative register (an energy or volume meter): it starts at that reading and
    grows by the value above per hour.
    """

    value: float | None = None
    min: float | None = None
    max: float | None = None
    noise: float = Field(0.0, ge=0)
    counter_start: float | None = Field(None, ge=0)

    def model_post_init(self, _ctx: Any) -> None:
        """Require exactly one way of producing the value."""
        constant = self.value is not None
        curve = self.min is not None and self.max is not None
        if constant == curve:
            raise ValueError("give either 'value' or both 'min' and 'max'")


class InstrumentConfig(ConfigModel):
    """The instrument behind a tag, for the instrument register (GB 17167, seed 004 §10.5).

    `accuracy_pct`: the accuracy class as a relative bound, % of reading (e.g. 1.0 for a
    class-1 analyser, 0.5 for a 0.5S energy meter). `calibrated_on`: plant-local date of the
    last calibration or verification; the next is due `calibration_interval_days` later.
    `verified_by` (the laboratory or body) and `certificate` (its reference) are for audits.
    Ranges are checked in `device_problems`, whose messages name the device and the tag.
    """

    serial: str = Field(min_length=1)
    model: str = ""
    accuracy_pct: float
    calibrated_on: date
    calibration_interval_days: int
    verified_by: str = ""
    certificate: str = ""


ACCURACY_PCT_MAX = 20.0  # a bigger "accuracy class" is a typo (a range, a unit), not a class


def instrument_problems(path: str, dev_id: str, tag_id: str,
                        inst: InstrumentConfig) -> Problems:
    """Range checks of one tag's instrument block; messages name the device and the tag."""
    who = f"instrument of tag {tag_id!r} (device {dev_id!r})"
    out: Problems = []
    if not 0.0 < inst.accuracy_pct <= ACCURACY_PCT_MAX:
        out.append((f"{path}.accuracy_pct", f"{who}: accuracy_pct is % of reading, more than "
                    f"0 and at most {ACCURACY_PCT_MAX:g}, not {inst.accuracy_pct:g}"))
    if inst.calibration_interval_days <= 0:
        out.append((f"{path}.calibration_interval_days", f"{who}: calibration_interval_days "
                    f"must be more than 0, not {inst.calibration_interval_days}"))
    return out


class _TagBase(ConfigModel):
    """What every field value has, whatever the protocol."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    id: Identifier
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""
    description: str = ""
    description_zh: str = ""
    sim: SimConfig | None = None
    instrument: InstrumentConfig | None = None  # the instrument register's fields


class ModbusTagConfig(_TagBase):
    """One value read from Modbus registers or bits.

    `function`: holding (FC 3), input (FC 4), coil (FC 1), discrete (FC 2). Bit tables
    give 0 or 1; `bit` takes one bit (0 = least significant) of a 16-bit register.
    """

    address: int = Field(alias="register", ge=0, le=65535)
    type: RegisterType = "float32"
    order: WordOrder = "ABCD"
    function: Literal["holding", "input", "coil", "discrete"] = "holding"
    bit: int | None = Field(None, ge=0, le=15)

    def model_post_init(self, _ctx: Any) -> None:
        """A bit field is one bit of one 16-bit register."""
        if self.bit is not None and (self.function in ("coil", "discrete")
                                     or self.type not in ("int16", "uint16")):
            raise ValueError("'bit' needs a holding or input register of type uint16 or int16")


class Dlt645TagConfig(_TagBase):
    """One data item of a DL/T 645 meter; `scale` is the CT × PT ratio where one applies."""

    di: str = Field(pattern=r"^([0-9A-Fa-f]{4}|[0-9A-Fa-f]{8})$")


Cjt188Field = Literal[
    "current_volume_m3", "settlement_volume_m3", "settlement_heat_kwh", "current_heat_kwh",
    "heat_power_kw", "flow_m3_h", "cumulative_volume_m3", "supply_temp_c", "return_temp_c",
    "working_hours_h", "status"]


class Cjt188TagConfig(_TagBase):
    """One field of a CJ/T 188 meter's 901F reply (volumes m³, heat kWh, status bits)."""

    field: Cjt188Field


TagConfig = ModbusTagConfig | Dlt645TagConfig | Cjt188TagConfig


class SerialLinkConfig(ConfigModel):
    """A serial port (RS-485 / RS-232); every device that names it shares it."""

    serial: str = Field(min_length=1)
    baudrate: int | None = Field(None, gt=0)  # None: 9600 for Modbus RTU, 2400 for meters
    parity: Literal["N", "E", "O"] = "E"
    bytesize: Literal[7, 8] = 8
    stopbits: Literal[1, 2] = 1


class TcpLinkConfig(ConfigModel):
    """A TCP endpoint: a transparent serial-to-Ethernet gateway."""

    host: str
    port: int = Field(ge=1, le=65535)


LinkConfig = SerialLinkConfig | TcpLinkConfig


class _DeviceBase(ConfigModel):
    id: Identifier
    poll_interval_s: float = Field(1.0, gt=0)
    timeout_s: float = Field(1.0, gt=0)
    # Repeats of a request that got no reply, while the device is online: line noise on
    # RS-485 loses the odd frame. A device already known silent gets none.
    retries: int = Field(1, ge=0, le=5)
    simulate: bool = False


class ModbusTcpDeviceConfig(_DeviceBase):
    """A Modbus TCP device (or a gateway's unit id)."""

    protocol: Literal["modbus_tcp"]
    host: str = "127.0.0.1"
    port: int = Field(502, ge=1, le=65535)
    device_id: int = Field(1, ge=0, le=255)
    max_gap: int = Field(8, ge=0, le=125)
    # Requests sent on the endpoint's connection before the first reply comes back
    # (matched by MBAP transaction id). Gateways and PLCs queue only a few (often 4-16,
    # some 1); devices sharing an endpoint use the smallest of their values.
    requests_in_flight: int = Field(8, ge=1, le=32)
    tags: list[ModbusTagConfig] = Field(min_length=1)


class ModbusRtuDeviceConfig(_DeviceBase):
    """A Modbus RTU device on a serial bus or behind a transparent TCP gateway."""

    protocol: Literal["modbus_rtu"]
    link: LinkConfig
    device_id: int = Field(1, ge=1, le=247)
    max_gap: int = Field(8, ge=0, le=125)
    tags: list[ModbusTagConfig] = Field(min_length=1)


class Dlt645DeviceConfig(_DeviceBase):
    """A DL/T 645 electricity meter; `address` as printed on the meter (12 digits)."""

    protocol: Literal["dlt645"]
    link: LinkConfig
    address: str = Field(pattern=r"^([0-9]{2}|AA){6}$")
    version: Literal["2007", "1997"] = "2007"
    tags: list[Dlt645TagConfig] = Field(min_length=1)


class Cjt188DeviceConfig(_DeviceBase):
    """A CJ/T 188 water, heat or gas meter; `address` as printed (14 hex digits, A6..A0)."""

    protocol: Literal["cjt188"]
    link: LinkConfig
    meter_type: int = Field(ge=0, le=0xFF)
    address: str = Field(pattern=r"^[0-9A-Fa-f]{14}$")
    di_order: Literal["low_first", "high_first"] = "low_first"
    tags: list[Cjt188TagConfig] = Field(min_length=1)


DeviceConfig = Annotated[
    ModbusTcpDeviceConfig | ModbusRtuDeviceConfig | Dlt645DeviceConfig | Cjt188DeviceConfig,
    Field(discriminator="protocol")]


def bus_key(dev: DeviceConfig) -> str:
    """Name of the bus (serial port or TCP endpoint) a device is reached through."""
    if isinstance(dev, ModbusTcpDeviceConfig):
        return f"{dev.host}:{dev.port}"
    if isinstance(dev.link, SerialLinkConfig):
        return dev.link.serial
    return f"{dev.link.host}:{dev.link.port}"


def device_address(dev: DeviceConfig) -> str:
    """The device's address on its bus, as its protocol prints it."""
    if isinstance(dev, ModbusTcpDeviceConfig | ModbusRtuDeviceConfig):
        return f"unit {dev.device_id}"
    return f"address {dev.address}"


class DevicesConfig(ConfigModel):
    """The drivers' part of a plant file: every field device, with its tags."""

    devices: list[DeviceConfig] = Field(default_factory=list)

    def tag_index(self) -> dict[str, tuple[DeviceConfig, TagConfig]]:
        """Map every tag id to its device and tag configuration."""
        return {t.id: (d, t) for d in self.devices for t in d.tags}

    def tag_ids(self) -> tuple[str, ...]:
        """Every tag id in configuration order: the order of the tag store's rows."""
        return tuple(t.id for d in self.devices for t in d.tags)


def device_problems(devices: list[DeviceConfig], problems: Problems) -> dict[str, str]:
    """Checks between devices and buses; returns tag id → key path of every tag."""
    seen_tags: dict[str, str] = {}
    seen_devices: dict[str, int] = {}
    buses: dict[str, tuple[int, DeviceConfig]] = {}  # bus → first device on it
    addresses: dict[tuple[str, str], str] = {}
    for i, dev in enumerate(devices):
        path = f"devices[{i}]"
        if dev.id in seen_devices:
            problems.append((f"{path}.id", f"duplicate device id {dev.id!r} "
                             f"(also devices[{seen_devices[dev.id]}])"))
        seen_devices.setdefault(dev.id, i)
        bus = bus_key(dev)
        first_i, first = buses.setdefault(bus, (i, dev))
        link = getattr(dev, "link", None)
        where = f"{path}.link" if link is not None else path
        if first.protocol != dev.protocol:
            problems.append((f"{path}.protocol", f"bus {bus} already speaks {first.protocol} "
                             f"(device {first.id!r}, devices[{first_i}]); one protocol a bus"))
        elif isinstance(link, SerialLinkConfig) and link != getattr(first, "link", None):
            problems.append((where, f"serial settings differ from device {first.id!r} "
                             f"(devices[{first_i}]) on the same port {bus}"))
        key = (bus, device_address(dev))
        if key in addresses:
            problems.append((path, f"same bus {bus} and {key[1]} as device {addresses[key]!r}"))
        addresses.setdefault(key, dev.id)
        if dev.simulate:
            host = link.host if isinstance(link, TcpLinkConfig) else getattr(dev, "host", None)
            if host is not None and not _is_loopback(host):
                problems.append((f"{where}.host",
                                 f"simulated device must be on loopback, not {host!r}"))
        if isinstance(dev, Dlt645DeviceConfig):
            width = 8 if dev.version == "2007" else 4
            for j, meter_tag in enumerate(dev.tags):
                if len(meter_tag.di) != width:
                    problems.append((f"{path}.tags[{j}].di", f"DL/T 645-{dev.version} DI has "
                                     f"{width} hex digits (DI3..DI0), not {meter_tag.di!r}"))
        for j, tag in enumerate(dev.tags):
            tpath = f"{path}.tags[{j}]"
            if tag.id in seen_tags:
                problems.append((f"{tpath}.id",
                                 f"duplicate tag id {tag.id!r} (first at {seen_tags[tag.id]})"))
            else:
                seen_tags[tag.id] = tpath
            if dev.simulate and tag.sim is None:
                problems.append((f"{tpath}.sim", "simulated device needs 'sim' on every tag"))
            if tag.instrument is not None:
                problems.extend(instrument_problems(f"{tpath}.instrument", dev.id, tag.id,
                                                    tag.instrument))
    return seen_tags


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
