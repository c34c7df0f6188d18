"""CJ/T 188-2004 master codec and a simulated meter (pure functions, no I/O).

Frame: [FE preamble…] 68 T A0..A6 C L DATA CS 16, CS = sum mod 256 of the bytes from 68
through the last data byte. Unlike DL/T 645 the data carry no +0x33. Multi-byte numbers
are BCD, low byte first. Addresses print as 14 hex digits A6..A0; an AA byte in a
request address is a wildcard ("AAAAAAAAAAAAAA" = any meter).

Units are converted to m³, kWh, kW and m³/h: Wh ÷1000, MWh ×1000, MWh×100 ×100000,
MJ ÷3.6, GJ ×1000÷3.6 (1 kWh = 3.6 MJ), W ÷1000, MW ×1000, L ÷1000, L/h ÷1000.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Literal

from model.errors import InvalidValueError, ProtocolError

DiOrder = Literal["low_first", "high_first"]
Kind = Literal["water", "heat", "gas", "electricity"]
Valve = Literal["open", "closed", "abnormal", "unknown"]

COLD_WATER = 0x10
HOT_WATER = 0x11
DRINKING_WATER = 0x12
RECLAIMED_WATER = 0x13
HEAT = 0x20  # heat meter, heating
HEAT_COOLING = 0x21  # heat meter, cooling
GAS = 0x30
ELECTRICITY = 0x40

METER_TYPES: dict[int, str] = {
    COLD_WATER: "cold water",
    HOT_WATER: "hot water",
    DRINKING_WATER: "drinking water",
    RECLAIMED_WATER: "reclaimed water",
    HEAT: "heat (heating)",
    HEAT_COOLING: "heat (cooling)",
    GAS: "gas",
    ELECTRICITY: "electricity",
}

READ_DATA = 0x01
REPLY = 0x80  # control bit: frame sent by a meter
ABNORMAL = 0x40  # control bit: the meter could not serve the request
DI_READ = 0x901F
WILDCARD = "AAAAAAAAAAAAAA"
MAX_DATA = 0x64  # the standard caps L at 100 data bytes
PLANT_TZ = timezone(timedelta(hours=8))  # meter clocks keep Beijing time

_START, _END, _PREAMBLE = 0x68, 0x16, 0xFE
_HEADER = 11  # 68 T A0..A6 C L

# unit code → (symbol, quantity, multiplier, divisor) towards m³, kWh, kW, m³/h
_UNITS: dict[int, tuple[str, str, float, float]] = {
    0x02: ("Wh", "energy", 1, 1000),
    0x05: ("kWh", "energy", 1, 1),
    0x08: ("MWh", "energy", 1000, 1),
    0x0A: ("MWh×100", "energy", 100000, 1),
    0x0E: ("MJ", "energy", 1, 3.6),
    0x11: ("GJ", "energy", 1000, 3.6),
    0x14: ("W", "power", 1, 1000),
    0x17: ("kW", "power", 1, 1),
    0x1A: ("MW", "power", 1000, 1),
    0x29: ("L", "volume", 1, 1000),
    0x2C: ("m³", "volume", 1, 1),
    0x32: ("L/h", "flow", 1, 1000),
    0x35: ("m³/h", "flow", 1, 1),
}
# unit code the simulated meter sends for each quantity
_SIM_UNITS = {"energy": 0x05, "power": 0x17, "volume": 0x2C, "flow": 0x35}
_QUANTITY_UNITS = {"energy": "kWh", "power": "kW", "volume": "m³", "flow": "m³/h"}


@dataclass(frozen=True, slots=True)
class _Field:
    name: str  # Reading attribute
    label: str  # for error messages
    size: int  # BCD bytes
    decimals: int
    quantity: str  # "energy" | "power" | "volume" | "flow" with a unit byte; else the unit itself


# Read-data 901F reply layouts after DI + SER; both end with a 7-byte clock and 2-byte status.
_WATER_GAS = (
    _Field("current_volume_m3", "current volume", 4, 2, "volume"),
    _Field("settlement_volume_m3", "settlement-day volume", 4, 2, "volume"),
)
_HEAT = (
    _Field("settlement_heat_kwh", "settlement-day heat", 4, 2, "energy"),
    _Field("current_heat_kwh", "current heat", 4, 2, "energy"),
    _Field("heat_power_kw", "heat power", 4, 2, "power"),
    _Field("flow_m3_h", "flow rate", 4, 4, "flow"),
    _Field("cumulative_volume_m3", "cumulative volume", 4, 2, "volume"),
    _Field("supply_temp_c", "supply temperature", 3, 2, "°C"),
    _Field("return_temp_c", "return temperature", 3, 2, "°C"),
    _Field("working_hours_h", "working hours", 3, 0, "h"),
)
_LAYOUTS: dict[str, tuple[_Field, ...]] = {"water": _WATER_GAS, "gas": _WATER_GAS, "heat": _HEAT}


def _width(f: _Field) -> int:
    return f.size + (1 if f.quantity in _SIM_UNITS else 0)


def _data_length(layout: tuple[_Field, ...]) -> int:
    return 3 + sum(_width(f) for f in layout) + 7 + 2


def meter_type_name(meter_type: int) -> str:
    """Readable name of a meter type byte, e.g. "0x10 (cold water)"."""
    name = METER_TYPES.get(meter_type, "unknown type")
    return f"0x{meter_type:02X} ({name})"


def meter_kind(meter_type: int) -> Kind:
    """What a meter of this type measures."""
    if meter_type not in METER_TYPES:
        raise InvalidValueError(f"unknown CJ/T 188 meter type 0x{meter_type:02X}")
    high = meter_type >> 4
    if high == 1:
        return "water"
    if high == 2:
        return "heat"
    if high == 3:
        return "gas"
    return "electricity"


def parse_address(text: str) -> bytes:
    """Wire bytes A0..A6 of an address printed as 14 hex digits A6..A0."""
    if len(text) != 14:
        raise InvalidValueError(f"meter address {text!r} must be 14 hex digits, got {len(text)}")
    bad = [c for c in text if c not in "0123456789abcdefABCDEF"]
    if bad:
        raise InvalidValueError(f"meter address {text!r} has a non-hex character {bad[0]!r}")
    return bytes.fromhex(text)[::-1]


def format_address(wire: bytes | bytearray) -> str:
    """14 hex digits A6..A0 of the 7 address bytes as sent (A0 first)."""
    if len(wire) != 7:
        raise InvalidValueError(f"a meter address has 7 bytes, got {len(wire)}")
    return bytes(wire[::-1]).hex().upper()


def address_matches(pattern: str, address: str) -> bool:
    """Whether `address` is addressed by `pattern`, whose AA bytes match any byte."""
    p, a = pattern.upper(), address.upper()
    return all(p[i:i + 2] in ("AA", a[i:i + 2]) for i in range(0, 14, 2))


def to_bcd(number: int, size: int) -> bytes:
    """`number` as `size` BCD bytes, low byte first."""
    if not 0 <= number < 100 ** size:
        raise InvalidValueError(f"{number} does not fit {size} BCD bytes")
    digits = f"{number:0{2 * size}d}"
    return bytes(int(digits[i:i + 2], 16) for i in range(0, 2 * size, 2))[::-1]


def from_bcd(data: bytes | bytearray, what: str = "value", offset: int = 0) -> int:
    """Number held by BCD bytes, low byte first; `what`/`offset` name them in errors."""
    number = 0
    for k in range(len(data) - 1, -1, -1):
        b = data[k]
        if b >> 4 > 9 or b & 0x0F > 9:
            raise ProtocolError(
                f"BCD digit 0x{b:02X} in byte {k + 1} of {what} (data byte {offset + k})")
        number = number * 100 + (b >> 4) * 10 + (b & 0x0F)
    return number


def _frame(meter_type: int, wire: bytes, control: int, data: bytes, preamble: int) -> bytes:
    body = bytes([_START, meter_type, *wire, control, len(data), *data])
    return bytes([_PREAMBLE] * preamble) + body + bytes([sum(body) & 0xFF, _END])


def _di_bytes(di: int, order: DiOrder) -> bytes:
    if not 0 <= di <= 0xFFFF:
        raise InvalidValueError(f"DI 0x{di:X} does not fit 2 bytes")
    if order == "low_first":
        return di.to_bytes(2, "little")
    if order == "high_first":
        return di.to_bytes(2, "big")
    raise InvalidValueError(f"di_order must be 'low_first' or 'high_first', got {order!r}")


def encode_read(meter_type: int, address: str, *, di: int = DI_READ, seq: int = 0,
                di_order: DiOrder = "low_first", preamble: int = 4) -> bytes:
    """Read-data request (control 0x01) for DI `di`, with `preamble` FE bytes in front."""
    meter_kind(meter_type)
    if not 0 <= seq <= 0xFF:
        raise InvalidValueError(f"sequence number must be 0..255, got {seq}")
    if preamble < 0:
        raise InvalidValueError(f"preamble must be ≥ 0 bytes, got {preamble}")
    data = _di_bytes(di, di_order) + bytes([seq])
    return _frame(meter_type, parse_address(address), READ_DATA, data, preamble)


def find_frame(buf: bytes | bytearray) -> tuple[int, int] | None:
    """(start, end) of the first complete valid frame in `buf`; None = need more bytes.

    Preamble and garbage are skipped: a 0x68 is taken as a frame start only when the
    length byte is ≤ 100, the byte after the checksum is 0x16 and the checksum holds.
    A start whose frame has not fully arrived does not stop the search, so a stray
    0x68 in front of a complete frame cannot hide it.
    """
    n = len(buf)
    i = buf.find(_START)
    while i != -1:
        if i + _HEADER <= n and buf[i + 10] <= MAX_DATA:
            end = i + _HEADER + buf[i + 10] + 2
            if (end <= n and buf[end - 1] == _END
                    and sum(buf[i:end - 2]) & 0xFF == buf[end - 2]):
                return i, end
        i = buf.find(_START, i + 1)
    return None


@dataclass(frozen=True, slots=True)
class Frame:
    """One checked frame: meter type, address (A6..A0 text), control byte and data."""

    meter_type: int
    address: str
    control: int
    data: bytes


def decode_frame(frame: bytes | bytearray) -> Frame:
    """Frame held by `frame` (leading FE preamble allowed); structure and checksum checked."""
    i = 0
    while i < len(frame) and frame[i] == _PREAMBLE:
        i += 1
    body = bytes(frame[i:])
    if len(body) < _HEADER + 2:
        raise ProtocolError(f"frame too short: {len(body)} bytes after the preamble, "
                            f"a frame has at least {_HEADER + 2}")
    if body[0] != _START:
        raise ProtocolError(f"frame starts with 0x{body[0]:02X}, expected 0x68")
    length = body[10]
    if len(body) != _HEADER + length + 2:
        raise ProtocolError(f"length byte says {length} data bytes, "
                            f"frame holds {len(body) - _HEADER - 2}")
    if body[-1] != _END:
        raise ProtocolError(f"frame ends with 0x{body[-1]:02X}, expected 0x16")
    computed = sum(body[:-2]) & 0xFF
    if body[-2] != computed:
        raise ProtocolError(f"bad checksum: got 0x{body[-2]:02X}, computed 0x{computed:02X}")
    return Frame(body[1], format_address(body[2:9]), body[9], body[_HEADER:-2])


def valve_state(status: int) -> Valve:
    """Valve state from status bits D0-D1 (00 open, 01 closed, 11 abnormal)."""
    states: tuple[Valve, ...] = ("open", "closed", "unknown", "abnormal")  # 10 is undefined
    return states[status & 0x03]


def battery_low(status: int) -> bool:
    """Whether status bit D2 reports a low battery."""
    return bool(status & 0x04)


def describe_status(status: int) -> str:
    """Status words as text, e.g. "status 0x0005: valve closed, battery low"."""
    battery = "low" if battery_low(status) else "ok"
    return f"status 0x{status:04X}: valve {valve_state(status)}, battery {battery}"


@dataclass(frozen=True, slots=True)
class Reading:
    """A decoded 901F reply; a field is None when the meter filled it with FF.

    Water and gas meters fill the volumes; heat meters the heat-meter fields.
    `clock` is the meter's naive local time (None when FF or all zero, i.e. unset);
    `status` is ST1 | ST2 << 8; `raw_units` holds the unit code of each supplied field.
    """

    meter_type: int
    address: str
    current_volume_m3: float | None = None
    settlement_volume_m3: float | None = None
    settlement_heat_kwh: float | None = None
    current_heat_kwh: float | None = None
    heat_power_kw: float | None = None
    flow_m3_h: float | None = None
    cumulative_volume_m3: float | None = None
    supply_temp_c: float | None = None
    return_temp_c: float | None = None
    working_hours_h: float | None = None
    clock: datetime | None = None
    status: int = 0
    raw_units: dict[str, int] = field(default_factory=dict)

    @property
    def valve(self) -> Valve:
        """Valve state reported in the status."""
        return valve_state(self.status)

    @property
    def battery_low(self) -> bool:
        """Whether the meter reports a low battery."""
        return battery_low(self.status)


_VALUE_UNITS: dict[str, str] = {
    f.name: _QUANTITY_UNITS.get(f.quantity, f.quantity) for f in (*_WATER_GAS, *_HEAT)
}


def reading_values(reading: Reading) -> dict[str, tuple[float, str]]:
    """Supplied measured values of `reading` by field name, as (value, unit)."""
    values: dict[str, tuple[float, str]] = {}
    for name, unit in _VALUE_UNITS.items():
        value = getattr(reading, name)
        if value is not None:
            values[name] = (value, unit)
    return values


def _layout(meter_type: int, di: int) -> tuple[_Field, ...]:
    kind = meter_kind(meter_type)
    if kind not in _LAYOUTS:
        raise InvalidValueError(f"no CJ/T 188 901F layout for {kind} meters")
    if di != DI_READ:
        raise InvalidValueError(f"only DI 0x{DI_READ:04X} can be decoded, got 0x{di:04X}")
    return _LAYOUTS[kind]


def decode_reply(frame: bytes | bytearray, *, meter_type: int, address: str,
                 di: int = DI_READ) -> Reading:
    """Reading in a read-data reply from the meter `address` (AA bytes match any)."""
    layout = _layout(meter_type, di)
    parse_address(address)
    f = decode_frame(frame)
    if not f.control & REPLY:
        raise ProtocolError(f"control 0x{f.control:02X} is a request, not a reply")
    if f.meter_type != meter_type:
        raise ProtocolError(f"reply from meter type {meter_type_name(f.meter_type)}, "
                            f"expected {meter_type_name(meter_type)}")
    if not address_matches(address, f.address):
        raise ProtocolError(f"reply from meter {f.address}, expected {address.upper()}")
    if f.control & ABNORMAL:
        # the abnormal reply ends with ST (after SER, or after DI + SER with some vendors)
        st = (f"{describe_status(f.data[-2] | f.data[-1] << 8)}" if len(f.data) >= 2
              else "no status")
        raise ProtocolError(f"meter {f.address} answered abnormally "
                            f"(control 0x{f.control:02X}): {st}")
    if f.control & 0x3F != READ_DATA:
        raise ProtocolError(f"control 0x{f.control:02X} is not a read-data reply (0x81)")
    data = f.data
    if len(data) < 2:
        raise ProtocolError(f"short data: {len(data)} bytes, no DI")
    if data[:2] not in (_di_bytes(di, "low_first"), _di_bytes(di, "high_first")):
        got = int.from_bytes(data[:2], "little")
        raise ProtocolError(f"reply carries DI 0x{got:04X} (bytes {data[:2].hex(' ').upper()}),"
                            f" expected 0x{di:04X}")
    need = _data_length(layout)
    if len(data) < need:
        raise ProtocolError(f"short data: {len(data)} bytes, a {meter_kind(meter_type)} "
                            f"meter 901F reply has {need}")
    values: dict[str, float | None] = {}
    units: dict[str, int] = {}
    pos = 3
    for spec in layout:
        values[spec.name] = _decode_field(spec, data, pos, units)
        pos += _width(spec)
    clock = _decode_clock(data[pos:pos + 7], pos)
    status = data[pos + 7] | data[pos + 8] << 8
    return Reading(meter_type=f.meter_type, address=f.address, clock=clock, status=status,
                   raw_units=units, **values)


def _decode_field(spec: _Field, data: bytes, pos: int, units: dict[str, int]) -> float | None:
    raw = data[pos:pos + spec.size]
    if all(b == 0xFF for b in raw):
        return None
    number = from_bcd(raw, spec.label, pos)
    scale: int = 10 ** spec.decimals
    if spec.quantity not in _SIM_UNITS:
        return number / scale
    code = data[pos + spec.size]
    if code not in _UNITS:
        raise ProtocolError(f"unknown unit code 0x{code:02X} for {spec.label}")
    symbol, quantity, mul, div = _UNITS[code]
    if quantity != spec.quantity:
        raise ProtocolError(f"unit code 0x{code:02X} ({symbol}) is not a {spec.quantity} "
                            f"unit, in {spec.label}")
    units[spec.name] = code
    return number * mul / (scale * div)


def _decode_clock(raw: bytes, pos: int) -> datetime | None:
    if all(b == 0xFF for b in raw) or not any(raw):
        return None
    from_bcd(raw, "clock", pos)  # names the bad byte within the clock
    ss, mm, hh, day, month = (from_bcd(raw[k:k + 1]) for k in range(5))
    year = from_bcd(raw[5:7])
    try:
        return datetime(year, month, day, hh, mm, ss)
    except ValueError:
        raise ProtocolError(f"clock {year:04d}-{month:02d}-{day:02d} "
                            f"{hh:02d}:{mm:02d}:{ss:02d} is not a valid date") from None


def _encode_clock(now: float) -> bytes:
    t = datetime.fromtimestamp(now, PLANT_TZ)
    parts = (t.second, t.minute, t.hour, t.day, t.month, t.year % 100, t.year // 100)
    return b"".join(to_bcd(p, 1) for p in parts)


class Meter:
    """A simulated CJ/T 188 meter answering read 901F with values computed at `now`."""

    def __init__(self, meter_type: int, address: str,
                 values: Mapping[str, Callable[[float], float]], *,
                 di_order: DiOrder = "low_first", status: int = 0) -> None:
        self.meter_type = meter_type
        self.address = address.upper()
        self._wire = parse_address(address)
        if "AA" in (self.address[i:i + 2] for i in range(0, 14, 2)):
            raise InvalidValueError(f"meter address {address!r} holds the AA wildcard")
        self._layout = _layout(meter_type, DI_READ)
        allowed = [f.name for f in self._layout]
        for name in values:
            if name not in allowed:
                raise InvalidValueError(f"{meter_type_name(meter_type)} meters have no value "
                                        f"{name!r}; known: {', '.join(allowed)}")
        self._di = _di_bytes(DI_READ, di_order)
        if not 0 <= status <= 0xFFFF:
            raise InvalidValueError(f"status must be 0..0xFFFF, got {status}")
        self.values = dict(values)
        self.status = status

    def handle(self, request: bytes, now: float) -> bytes | None:
        """Reply (FE preamble included) to `request`, or None when it is not for this meter."""
        span = find_frame(request)
        if span is None:
            return None
        f = decode_frame(request[span[0]:span[1]])
        if (f.control & REPLY or f.meter_type not in (self.meter_type, 0xAA)
                or not address_matches(f.address, self.address)):
            return None
        ser = f.data[2] if len(f.data) >= 3 else 0
        known = f.data[:2] in (_di_bytes(DI_READ, "low_first"), _di_bytes(DI_READ, "high_first"))
        if f.control != READ_DATA or not known:
            data = bytes([ser]) + self.status.to_bytes(2, "little")
            return _frame(self.meter_type, self._wire, REPLY | ABNORMAL | (f.control & 0x3F),
                          data, 4)
        out = bytearray(self._di + bytes([ser]))
        for spec in self._layout:
            func = self.values.get(spec.name)
            if func is None:
                out += b"\xff" * _width(spec)
                continue
            out += _encode_value(spec, func(now))
            if spec.quantity in _SIM_UNITS:
                out.append(_SIM_UNITS[spec.quantity])
        out += _encode_clock(now) + self.status.to_bytes(2, "little")
        return _frame(self.meter_type, self._wire, REPLY | READ_DATA, bytes(out), 4)


def _encode_value(spec: _Field, value: float) -> bytes:
    scale: int = 10 ** spec.decimals
    scaled = round(value * scale) if math.isfinite(value) else -1
    if not 0 <= scaled < 100 ** spec.size:
        top = (100 ** spec.size - 1) / scale
        raise InvalidValueError(f"simulated {spec.label} {value} is outside "
                                f"0..{top:.{spec.decimals}f}")
    return to_bcd(scaled, spec.size)
