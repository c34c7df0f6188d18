"""DL/T 645-2007 and -1997 meter protocol: frame codec and a simulated meter (no I/O).

Frame: 68 A0..A5 68 C L DATA CS 16, optionally preceded by FE wake-up bytes. The address
goes lowest pair first, every data byte carries +0x33, CS is the byte sum mod 256 from
the first 0x68. Control byte: bit 7 reply, bit 6 abnormal reply, bit 5 more frames follow,
bits 0-4 the function. Values are BCD, low byte first; signed formats keep the sign in
bit 7 of the last (most significant) byte.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from model.errors import InvalidValueError, ProtocolError

Version = Literal["2007", "1997"]

PREAMBLE_BYTE = 0xFE
START = 0x68
END = 0x16
BROADCAST = "AAAAAAAAAAAA"

_REPLY = 0x80
_ABNORMAL = 0x40
_MORE = 0x20
_FUNCTION = 0x1F

_READ = {"2007": 0x11, "1997": 0x01}
_READ_NEXT = 0x12  # 2007 only
_READ_ADDRESS = 0x13  # 2007 only
_BROADCAST_TIME = 0x08
_DI_SIZE = {"2007": 4, "1997": 2}

_ERR_2007 = ("other error", "no requested data", "password error / unauthorised",
             "baud rate cannot be changed", "annual time zones exceeded",
             "daily time slots exceeded", "tariffs exceeded", "reserved bit 7")
_ERR_1997 = ("illegal data", "data identifier error", "password error", "reserved bit 3",
             "annual time zones exceeded", "daily time slots exceeded", "tariffs exceeded",
             "reserved bit 7")
ERR_OTHER = 0x01
ERR_NO_DATA = 0x02  # 2007 "no requested data", 1997 "data identifier error"


@dataclass(frozen=True)
class Frame:
    """One structurally valid frame: address as printed, control byte, data without +0x33."""

    address: str
    control: int
    data: bytes


@dataclass(frozen=True)
class Reading:
    """A decoded read reply; `value` is None for unknown DIs, blocks and partial frames."""

    value: float | None
    unit: str
    data: bytes
    more: bool
    seq: int | None
    values: tuple[float, ...] = ()


@dataclass(frozen=True)
class _Format:
    size: int  # bytes on the wire
    decimals: int
    signed: bool
    unit: str
    digits: int  # significant digits of the picture (1997 voltage XXX uses 3 of 4)

    @property
    def picture(self) -> str:
        whole = "X" * (self.digits - self.decimals)
        return whole + ("." + "X" * self.decimals if self.decimals else "")

    @property
    def limit(self) -> int:
        """Largest encodable magnitude in units of the last decimal."""
        if self.signed:
            return int(8 * 10 ** (self.digits - 1) - 1)  # top digit shares a byte with the sign
        return int(10 ** self.digits - 1)


def _fmt(size: int, decimals: int, unit: str, *, signed: bool = False,
         digits: int | None = None) -> _Format:
    return _Format(size, decimals, signed, unit, 2 * size if digits is None else digits)


_ENERGY_2007 = {0x00: _fmt(4, 2, "kWh", signed=True), 0x01: _fmt(4, 2, "kWh"),
                0x02: _fmt(4, 2, "kWh"),
                # the standard also signs combined reactive 1 and 2 (DI2 0x03/0x04)
                0x03: _fmt(4, 2, "kvarh", signed=True), 0x04: _fmt(4, 2, "kvarh", signed=True),
                0x05: _fmt(4, 2, "kvarh"), 0x06: _fmt(4, 2, "kvarh"),
                0x07: _fmt(4, 2, "kvarh"), 0x08: _fmt(4, 2, "kvarh"),
                0x09: _fmt(4, 2, "kVAh"), 0x0A: _fmt(4, 2, "kVAh")}
# DI2 → (format, first phase DI1): 0 = total, 1..3 = phases A..C
_INSTANT_2007 = {0x01: (_fmt(2, 1, "V"), 1), 0x02: (_fmt(3, 3, "A", signed=True), 1),
                 0x03: (_fmt(3, 4, "kW", signed=True), 0),
                 0x04: (_fmt(3, 4, "kvar", signed=True), 0),
                 0x05: (_fmt(3, 4, "kVA", signed=True), 0),
                 0x06: (_fmt(2, 3, "", signed=True), 0)}
_FREQUENCY_2007 = 0x02800002
_FREQUENCY = _fmt(2, 2, "Hz")
# block DI 0x02xxFF00 → its member DIs, in wire order
BLOCKS_2007: dict[int, tuple[int, ...]] = {
    0x02000000 | di2 << 16 | 0xFF00: tuple(0x02000000 | di2 << 16 | p << 8
                                           for p in range(first, 4))
    for di2, (_, first) in _INSTANT_2007.items()
}
# DI >> 4 → (format, lowest and highest last nibble)
_TABLE_1997 = {0x901: (_fmt(4, 2, "kWh"), 0, 0xE), 0x902: (_fmt(4, 2, "kWh"), 0, 0xE),
               0xB61: (_fmt(2, 0, "V", digits=3), 1, 3), 0xB62: (_fmt(2, 2, "A"), 1, 3),
               0xB63: (_fmt(3, 4, "kW"), 0, 3), 0xB65: (_fmt(2, 3, ""), 0, 3)}


def _check_version(version: str) -> None:
    if version not in _DI_SIZE:
        raise InvalidValueError(f"unknown DL/T 645 version {version!r} (expected '2007' or '1997')")


def format_di(di: int, version: Version) -> str:
    """DI as printed, DI3..DI0 hex (8 digits for 2007, 4 for 1997)."""
    return f"{di:0{2 * _DI_SIZE[version]}X}"


def _check_di(di: int, version: Version) -> None:
    _check_version(version)
    if not 0 <= di < 1 << (8 * _DI_SIZE[version]):
        raise InvalidValueError(f"DI 0x{di:X} does not fit the {_DI_SIZE[version]} bytes of a "
                                f"DL/T 645-{version} DI")


def _single_format(di: int, version: Version) -> _Format | None:
    if version == "1997":
        entry = _TABLE_1997.get(di >> 4)
        if entry is not None and entry[1] <= di & 0xF <= entry[2]:
            return entry[0]
        return None
    di3, di2, di1, di0 = di >> 24 & 0xFF, di >> 16 & 0xFF, di >> 8 & 0xFF, di & 0xFF
    if di3 == 0x00 and di2 in _ENERGY_2007 and di1 <= 0x3F and di0 <= 0x0C:
        return _ENERGY_2007[di2]
    if di3 == 0x02 and di0 == 0x00 and di2 in _INSTANT_2007:
        fmt, first = _INSTANT_2007[di2]
        return fmt if first <= di1 <= 3 else None
    return _FREQUENCY if di == _FREQUENCY_2007 else None


def _lookup(di: int, version: Version) -> tuple[_Format, int] | None:
    """Format of one item and the number of items the DI reads."""
    fmt = _single_format(di, version)
    if fmt is not None:
        return fmt, 1
    if version == "2007" and di in BLOCKS_2007:
        members = BLOCKS_2007[di]
        item = _single_format(members[0], version)
        assert item is not None
        return item, len(members)
    return None


def parse_address(text: str) -> bytes:
    """Meter address as printed (12 characters, pairs of digits or AA) → 6 wire bytes."""
    t = text.strip().upper()
    if len(t) != 12:
        raise InvalidValueError(f"meter address {text!r} must have 12 characters, has {len(t)}")
    wire = bytearray()
    for i in range(0, 12, 2):
        pair = t[i:i + 2]
        if pair == "AA":
            wire.append(0xAA)
        elif pair.isascii() and pair.isdigit():
            wire.append(int(pair, 16))
        else:
            raise InvalidValueError(f"meter address {text!r}: pair {pair!r} is neither two decimal "
                                    "digits nor the wildcard AA")
    return bytes(reversed(wire))


def format_address(wire: bytes) -> str:
    """6 wire bytes → address as printed; non-BCD bytes show as hex so nothing is lost."""
    if len(wire) != 6:
        raise InvalidValueError(f"a meter address has 6 bytes, got {len(wire)}")
    return "".join(f"{b:02X}" for b in reversed(wire))


def _address_matches(pattern: str, actual: str) -> bool:
    return all(pattern[i:i + 2] in ("AA", actual[i:i + 2]) for i in range(0, 12, 2))


def parse_di(text: str, version: Version) -> int:
    """DI as printed DI3..DI0 hex (8 digits for 2007, 4 for 1997) → int."""
    _check_version(version)
    t = text.strip()
    width = 2 * _DI_SIZE[version]
    if len(t) != width or not all(c in "0123456789abcdefABCDEF" for c in t):
        raise InvalidValueError(f"DI {text!r} must be {width} hex digits for DL/T 645-{version}")
    return int(t, 16)


def _build(address: bytes, control: int, data: bytes, preamble: int) -> bytes:
    if len(data) > 255:
        raise InvalidValueError(f"data field of {len(data)} bytes exceeds the 255 a frame "
                                "can carry")
    if preamble < 0:
        raise InvalidValueError(f"preamble must be >= 0, got {preamble}")
    body = bytes((START, *address, START, control, len(data), *((b + 0x33) & 0xFF for b in data)))
    return bytes([PREAMBLE_BYTE] * preamble) + body + bytes((sum(body) & 0xFF, END))


def _di_bytes(di: int, version: Version) -> bytes:
    return di.to_bytes(_DI_SIZE[version], "little")


def encode_read(address: str, di: int, version: Version, *, preamble: int = 4) -> bytes:
    """Read request for one DI (2007 control 0x11, 1997 control 0x01)."""
    _check_di(di, version)
    return _build(parse_address(address), _READ[version], _di_bytes(di, version), preamble)


def encode_read_next(address: str, di: int, seq: int, *, preamble: int = 4) -> bytes:
    """2007 follow-up read (control 0x12) for frame `seq` (1, 2, …) of a multi-frame reply."""
    _check_di(di, "2007")
    if not 0 <= seq <= 255:
        raise InvalidValueError(f"sequence number {seq} does not fit one byte")
    data = _di_bytes(di, "2007") + bytes((seq,))
    return _build(parse_address(address), _READ_NEXT, data, preamble)


def encode_read_address(*, preamble: int = 4) -> bytes:
    """2007 read-address request (control 0x13) to the wildcard address AAAAAAAAAAAA."""
    return _build(parse_address(BROADCAST), _READ_ADDRESS, b"", preamble)


def find_frame(buf: bytes | bytearray) -> tuple[int, int] | None:
    """(start, end) of the first complete frame in `buf`, or None while more bytes are needed.

    Checks structure only (0x68, 0x68 at +7, length, 0x16); decode_frame checks the sum.
    """
    n = len(buf)
    start = buf.find(START)
    while start != -1:
        if n <= start + 7:
            return None
        if buf[start + 7] == START:
            if n <= start + 9:
                return None
            end = start + 12 + buf[start + 9]
            if end > n:
                return None
            if buf[end - 1] == END:
                return start, end
        start = buf.find(START, start + 1)
    return None


def decode_frame(frame: bytes) -> Frame:
    """Check structure and checksum of one frame (leading FE bytes allowed) and decode it."""
    raw = bytes(frame).lstrip(bytes((PREAMBLE_BYTE,)))
    if len(raw) < 12:
        raise ProtocolError(f"frame too short: {len(raw)} bytes, a DL/T 645 frame has at "
                            "least 12")
    if raw[0] != START:
        raise ProtocolError(f"frame does not start with 0x68 (got 0x{raw[0]:02X})")
    if raw[7] != START:
        raise ProtocolError(f"no second 0x68 after the address (got 0x{raw[7]:02X})")
    if len(raw) != 12 + raw[9]:
        raise ProtocolError(f"length byte says {raw[9]} data bytes, frame carries "
                            f"{len(raw) - 12}")
    if raw[-1] != END:
        raise ProtocolError(f"frame does not end with 0x16 (got 0x{raw[-1]:02X})")
    computed = sum(raw[:-2]) & 0xFF
    if raw[-2] != computed:
        raise ProtocolError(f"bad checksum: got 0x{raw[-2]:02X}, computed 0x{computed:02X}")
    data = bytes((b - 0x33) & 0xFF for b in raw[10:-2])
    return Frame(format_address(raw[1:7]), raw[8], data)


def describe_error(err: int, version: Version) -> str:
    """Words for the ERR byte of an abnormal reply, e.g. 'ERR 0x02 no requested data'."""
    names = _ERR_2007 if version == "2007" else _ERR_1997
    words = ", ".join(names[bit] for bit in range(8) if err >> bit & 1)
    return f"ERR 0x{err:02X} {words or '(no error bit set)'}"


def decode_address_reply(frame: bytes) -> str:
    """Address reported by a 2007 read-address reply (control 0x93)."""
    f = decode_frame(frame)
    if not f.control & _REPLY:
        raise ProtocolError(f"not a reply: control 0x{f.control:02X} is a request "
                            "(own echo on the bus?)")
    if f.control & _FUNCTION != _READ_ADDRESS:
        raise ProtocolError(f"reply to another function: control 0x{f.control:02X}, "
                            f"expected function 0x{_READ_ADDRESS:02X}")
    if f.control & _ABNORMAL:
        if not f.data:
            raise ProtocolError("abnormal reply without an error byte")
        raise ProtocolError(f"abnormal reply: {describe_error(f.data[0], '2007')}")
    if len(f.data) != 6:
        raise ProtocolError(f"read-address reply carries {len(f.data)} data bytes, expected 6")
    return format_address(f.data)


def decode_reply(frame: bytes, *, address: str, di: int, version: Version,
                 seq: int | None = None) -> Reading:
    """Check a reply to encode_read (or, with `seq`, encode_read_next) and decode its value."""
    _check_di(di, version)
    if seq is not None and version != "2007":
        raise InvalidValueError("follow-up reads with a sequence number are DL/T 645-2007 only")
    expected = parse_address(address)
    f = decode_frame(frame)
    if not f.control & _REPLY:
        raise ProtocolError(f"not a reply: control 0x{f.control:02X} is a request "
                            "(own echo on the bus?)")
    if not _address_matches(format_address(expected), f.address):
        raise ProtocolError(f"reply from meter {f.address}, expected {format_address(expected)}")
    function = _READ[version] if seq is None else _READ_NEXT
    if f.control & _FUNCTION != function:
        raise ProtocolError(f"reply to another function: control 0x{f.control:02X}, "
                            f"expected function 0x{function:02X}")
    if f.control & _ABNORMAL:
        if not f.data:
            raise ProtocolError("abnormal reply without an error byte")
        raise ProtocolError(f"abnormal reply: {describe_error(f.data[0], version)}")
    size = _DI_SIZE[version]
    if len(f.data) < size + (seq is not None):
        also = " and a sequence number" if seq is not None else ""
        raise ProtocolError(f"reply too short: {len(f.data)} data bytes, expected the "
                            f"{size}-byte DI{also}")
    got = int.from_bytes(f.data[:size], "little")
    if got != di:
        raise ProtocolError(f"reply for DI {format_di(got, version)}, expected DI "
                            f"{format_di(di, version)}")
    more = bool(f.control & _MORE)
    if seq is not None:
        if f.data[-1] != seq:
            raise ProtocolError(f"follow-up reply carries sequence {f.data[-1]}, expected {seq}")
        payload = f.data[size:-1]
    else:
        payload = f.data[size:]
    lookup = _lookup(di, version)
    unit = lookup[0].unit if lookup else ""
    if more or seq is not None:
        # one piece of a multi-frame reply: join the pieces, then call decode_values
        return Reading(None, unit, payload, more, seq)
    decoded = decode_values(di, payload, version)
    if decoded is None:
        return Reading(None, "", payload, more, seq)
    values, unit = decoded
    return Reading(values[0] if len(values) == 1 else None, unit, payload, more, seq, values)


def _bcd_to_int(data: bytes, fmt: _Format, where: str) -> int:
    n = 0
    negative = False
    for i in reversed(range(fmt.size)):
        b = data[i]
        if fmt.signed and i == fmt.size - 1:
            negative, b = bool(b & 0x80), b & 0x7F
        if b >> 4 > 9 or b & 0xF > 9:
            raise ProtocolError(f"invalid BCD digit in value byte {i} (0x{data[i]:02X}) "
                                f"of {where}")
        n = n * 100 + (b >> 4) * 10 + (b & 0xF)
    return -n if negative else n


def decode_values(di: int, data: bytes, version: Version
                  ) -> tuple[tuple[float, ...], str] | None:
    """All values of a DI (one, or each member of a block DI) and their unit; None if unknown."""
    _check_di(di, version)
    lookup = _lookup(di, version)
    if lookup is None:
        return None
    fmt, count = lookup
    need = fmt.size * count
    where = f"DI {format_di(di, version)}"
    if len(data) < need:
        raise ProtocolError(f"data too short for {where}: {len(data)} bytes, its format "
                            f"needs {need}")
    scale = 10 ** fmt.decimals
    values = tuple(
        _bcd_to_int(data[k * fmt.size:(k + 1) * fmt.size], fmt,
                    where if count == 1 else f"item {k} of {where}") / scale
        for k in range(count))
    return values, fmt.unit


def decode_value(di: int, data: bytes, version: Version) -> tuple[float, str] | None:
    """Value and unit of a single-value DI; None if the DI is not in the table or a block."""
    _check_di(di, version)
    if _single_format(di, version) is None:
        return None
    decoded = decode_values(di, data, version)
    assert decoded is not None
    return decoded[0][0], decoded[1]


def encode_value(di: int, value: float, version: Version) -> bytes:
    """BCD bytes of `value` in the format of a single-value DI (rounded to its decimals)."""
    _check_di(di, version)
    fmt = _single_format(di, version)
    if fmt is None:
        raise InvalidValueError(f"no value format for DI {format_di(di, version)} "
                                f"(DL/T 645-{version})")
    if not math.isfinite(value):
        raise InvalidValueError(f"cannot encode {value} for DI {format_di(di, version)}")
    scale = 10 ** fmt.decimals
    n = round(value * scale)
    low = -fmt.limit if fmt.signed else 0
    if not low <= n <= fmt.limit:
        label = f"{fmt.picture} {fmt.unit}".strip()
        raise InvalidValueError(f"value {value} out of range for DI {format_di(di, version)} "
                                f"({label}: {low / scale:g} to {fmt.limit / scale:g})")
    digits = f"{abs(n):0{2 * fmt.size}d}"
    out = bytearray(int(digits[i:i + 2], 16) for i in range(0, len(digits), 2))
    out.reverse()
    if n < 0:
        out[-1] |= 0x80
    return bytes(out)


class Meter:
    """A simulated DL/T 645 meter answering reads of the DIs in `values` (functions of time)."""

    def __init__(self, address: str, version: Version,
                 values: Mapping[int, Callable[[float], float]], *,
                 max_data_per_frame: int = 200) -> None:
        _check_version(version)
        wire = parse_address(address)
        if 0xAA in wire:
            raise InvalidValueError(f"a meter needs a concrete address, not the wildcard "
                                    f"{address!r}")
        # data field = DI + value bytes (+ SEQ in follow-ups); room for one byte of value
        if not _DI_SIZE[version] + 2 <= max_data_per_frame <= 255:
            raise InvalidValueError(f"max_data_per_frame must be {_DI_SIZE[version] + 2}..255, "
                                    f"got {max_data_per_frame}")
        for di in values:
            if _single_format(di, version) is None:
                raise InvalidValueError(f"no value format for DI {format_di(di, version)} "
                                        f"(DL/T 645-{version})")
        self.address = format_address(wire)
        self.version: Version = version
        self._wire = wire
        self._values = dict(values)
        self._max = max_data_per_frame
        self._pending: tuple[int, list[bytes]] | None = None  # last multi-frame reply

    def handle(self, request: bytes, now: float) -> bytes | None:
        """Reply to one request frame at epoch `now`; None when the meter stays silent.

        Silent for garbage, other meters' frames, broadcasts and unsupported functions.
        Raises ValueError if a value function returns a value its DI format cannot hold.
        """
        try:
            f = decode_frame(request)
        except ProtocolError:
            return None
        if f.control & _REPLY or not _address_matches(f.address, self.address):
            return None
        function = f.control & _FUNCTION
        if function == _BROADCAST_TIME:
            return None
        if self.version == "1997":
            return self._read(f.data, now) if function == _READ["1997"] else None
        if function == _READ["2007"]:
            return self._read(f.data, now)
        if function == _READ_NEXT:
            return self._read_next(f.data)
        if function == _READ_ADDRESS:
            return self._reply(0x80 | _READ_ADDRESS, self._wire)
        return None

    def _reply(self, control: int, data: bytes) -> bytes:
        return _build(self._wire, control, data, 4)

    def _abnormal(self, function: int, err: int) -> bytes:
        return self._reply(0x80 | _ABNORMAL | function, bytes((err,)))

    def _read(self, data: bytes, now: float) -> bytes:
        function = _READ[self.version]
        size = _DI_SIZE[self.version]
        if len(data) < size:
            return self._abnormal(function, ERR_OTHER)
        di = int.from_bytes(data[:size], "little")
        if di in self._values:
            members: tuple[int, ...] = (di,)
        else:
            members = BLOCKS_2007.get(di, ()) if self.version == "2007" else ()
        if not members or any(m not in self._values for m in members):
            return self._abnormal(function, ERR_NO_DATA)
        value = b"".join(encode_value(m, self._values[m](now), self.version) for m in members)
        head = data[:size]
        room = self._max - size
        if len(value) <= room or self.version == "1997":
            return self._reply(0x80 | function, head + value)
        # first piece without SEQ, follow-ups carry one SEQ byte each
        pieces = [value[:room]] + [value[i:i + room - 1]
                                   for i in range(room, len(value), room - 1)]
        self._pending = (di, pieces)
        return self._reply(0x80 | _MORE | function, head + pieces[0])

    def _read_next(self, data: bytes) -> bytes:
        if len(data) < 5:
            return self._abnormal(_READ_NEXT, ERR_OTHER)
        di, seq = int.from_bytes(data[:4], "little"), data[4]
        if self._pending is None or self._pending[0] != di or not 1 <= seq < len(
                self._pending[1]):
            return self._abnormal(_READ_NEXT, ERR_NO_DATA)
        pieces = self._pending[1]
        more = _MORE if seq < len(pieces) - 1 else 0
        return self._reply(0x80 | more | _READ_NEXT, data[:4] + pieces[seq] + bytes((seq,)))
