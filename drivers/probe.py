"""Read a device once and describe the result: the field engineer's first tool."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Literal

from pydantic import ValidationError

from drivers import cjt188, dlt645
from drivers.codec import BIT_FUNCTIONS, Block, decode, register_count
from drivers.config import (
    Cjt188DeviceConfig,
    Dlt645DeviceConfig,
    LinkConfig,
    ModbusRtuDeviceConfig,
    ModbusTcpDeviceConfig,
    SerialLinkConfig,
    TcpLinkConfig,
)
from drivers.meters import Cjt188Poller, Dlt645Poller, meter_link
from drivers.modbus import ModbusLink
from model.errors import CarbonScadaError

_HOST_PORT = re.compile(r"^(?P<host>[^/\s]+):(?P<port>\d{1,5})$")


def parse_target(text: str, *, baudrate: int | None, parity: str, bytesize: int,
                 stopbits: int) -> LinkConfig:
    """HOST:PORT names a TCP gateway; anything else a serial port."""
    try:
        m = _HOST_PORT.match(text)
        if m:
            return TcpLinkConfig(host=m["host"], port=int(m["port"]))
        return SerialLinkConfig.model_validate({"serial": text, "baudrate": baudrate,
                                                "parity": parity, "bytesize": bytesize,
                                                "stopbits": stopbits})
    except ValidationError as exc:
        raise CarbonScadaError(f"target {text!r}: {_first(exc)}") from None


def _first(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    return f"{where}: {err['msg']}" if where else str(err["msg"])


def _device(model: type[Any], option_names: dict[str, str], **fields: Any) -> Any:
    """A one-off device configuration; a bad option is named as on the command line."""
    try:
        return model.model_validate({"id": "probe", **fields})
    except ValidationError as exc:
        err = exc.errors()[0]
        key = str(err["loc"][0]) if err["loc"] else ""
        option = option_names.get(key, key)
        raise CarbonScadaError(f"{option}: {err['msg']}") from None


async def probe_dlt645(link: LinkConfig, *, address: str, di: str, version: Literal[
        "2007", "1997"], timeout_s: float) -> list[str]:
    """Read one DI of a DL/T 645 meter; raises DriverError with the decoded problem."""
    dev: Dlt645DeviceConfig = _device(
        Dlt645DeviceConfig, {"address": "--address", "tags": "--di", "version": "--version"},
        protocol="dlt645", link=link, address=address, version=version, timeout_s=timeout_s,
        tags=[{"id": "probe", "di": di}])
    try:
        code = dlt645.parse_di(di, version)
    except ValueError as exc:
        raise CarbonScadaError(f"--di: {exc}") from None
    poller = Dlt645Poller(dev, meter_link(link))
    try:
        reading = await poller.read(code)
    finally:
        await poller.link.close()
    head = f"meter {address} DI {dlt645.format_di(code, version)} (DL/T 645-{version})"
    if reading.value is not None:
        return [f"{head}: {reading.value:g} {reading.unit}".rstrip()]
    if reading.values:
        return [f"{head}: " + ", ".join(f"{v:g} {reading.unit}".rstrip()
                                        for v in reading.values)]
    return [f"{head}: no format known for this DI; data {reading.data.hex(' ').upper()}"]


async def probe_cjt188(link: LinkConfig, *, meter_type: int, address: str, di: str,
                       di_order: Literal["low_first", "high_first"],
                       timeout_s: float) -> list[str]:
    """Read 901F of a CJ/T 188 meter; raises DriverError with the decoded problem."""
    if di.upper() != "901F":
        raise CarbonScadaError(f"--di: only 901F (read current data) is supported, not {di!r}")
    dev: Cjt188DeviceConfig = _device(
        Cjt188DeviceConfig, {"address": "--address", "meter_type": "--type"},
        protocol="cjt188", link=link, meter_type=meter_type, address=address,
        di_order=di_order, timeout_s=timeout_s, tags=[{"id": "probe", "field": "status"}])
    poller = Cjt188Poller(dev, meter_link(link))
    try:
        reading = await poller.read()
    finally:
        await poller.link.close()
    lines = [f"meter {reading.address} type {cjt188.meter_type_name(reading.meter_type)} "
             f"DI 901F (CJ/T 188-2004)"]
    lines += [f"  {name}: {value:g} {unit}"
              for name, (value, unit) in cjt188.reading_values(reading).items()]
    clock = reading.clock.isoformat(sep=" ") if reading.clock else "not set"
    lines += [f"  clock: {clock}", f"  {cjt188.describe_status(reading.status)}"]
    return lines


async def probe_modbus(link: LinkConfig, *, rtu: bool, unit: int, register: int, count: int,
                       type_: str, order: str, function: str,
                       timeout_s: float) -> list[str]:
    """Read registers (or bits) of a Modbus unit and decode them as `type_` / `order`."""
    common = {"device_id": unit, "timeout_s": timeout_s,
              "tags": [{"id": "probe", "register": register, "type": type_, "order": order,
                        "function": function}]}
    names = {"device_id": "--unit", "tags": "--register/--type/--order/--function"}
    dev: ModbusTcpDeviceConfig | ModbusRtuDeviceConfig
    if isinstance(link, TcpLinkConfig) and not rtu:
        dev = _device(ModbusTcpDeviceConfig, names, protocol="modbus_tcp", host=link.host,
                      port=link.port, **common)
    else:
        dev = _device(ModbusRtuDeviceConfig, names, protocol="modbus_rtu",
                      link=link.model_dump(), **common)
    bits = function in BIT_FUNCTIONS
    width = 1 if bits else register_count(type_)
    if count < width or count % width:
        raise CarbonScadaError(f"--count: {type_} takes {width} registers a value; "
                               f"give a multiple of {width}, not {count}")
    if register + count > 0x10000:
        raise CarbonScadaError(f"--count: {register} + {count} runs past register 65535")
    link_ = ModbusLink([dev])
    block = Block(function, register, count, ())  # type: ignore[arg-type]
    try:
        await link_.open()
        values = await link_.read(block, unit)
    finally:
        await link_.close()
    head = f"unit {unit} {block.label} via {link_.name}"
    if bits:
        return [f"{head}: " + " ".join(str(v) for v in values)]
    show: Callable[[int], str] = "0x{:04X}".format
    lines = [f"{head}: registers " + " ".join(show(v) for v in values)]
    decoded = [decode(values[i:i + width], type_, order) for i in range(0, count, width)]
    lines.append(f"  as {type_} {order}: " + ", ".join(f"{v:g}" for v in decoded))
    return lines
