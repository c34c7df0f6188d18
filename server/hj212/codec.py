"""HJ 212-2017 frames: encode, decode, split / join, an incremental stream reader, CP text and
times. Pure (no I/O); `Hj212Error` is the only error it raises.

Frame: ``##`` + 4-digit decimal length of the data segment + data segment + 4 upper-case hex
CRC of the data segment + CRLF. Data segment:
``QN=…;ST=…;CN=…;PW=…;MN=…;Flag=…;[PNUM=…;PNO=…;]CP=&&…&&``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from model.errors import CarbonScadaError

__all__ = [
    "CN_ACK_DATA", "CN_DAY", "CN_EXEC_REPLY", "CN_GET_MIN_INTERVAL", "CN_GET_RTD_INTERVAL",
    "CN_GET_TIME", "CN_HOUR", "CN_MINUTE", "CN_REQUEST_REPLY", "CN_RTD", "CN_SET_MIN_INTERVAL",
    "CN_SET_RTD_INTERVAL", "CN_SET_TIME", "CN_TIMEOUT", "FLAG_ACK", "FLAG_SPLIT", "MAX_FRAME",
    "MAX_SEGMENT", "ST_AIR", "ST_SYSTEM", "VERSION_2017", "FrameReader", "Hj212Error",
    "Packet", "crc16", "decode", "encode", "format_cp", "hj_qn", "hj_time", "join",
    "parse_cp", "parse_hj_time", "segment", "split",
]


class Hj212Error(CarbonScadaError):
    """An HJ 212 frame or field is wrong; the message names what and where."""


# Flag: bit 0 = A (acknowledgement requested), bit 1 = D (split packet), bits 2..7 = protocol
# version (1 = HJ 212-2017), so "Flag=5" of the official example is 2017 + ack requested.
FLAG_ACK = 0x01
FLAG_SPLIT = 0x02
VERSION_2017 = 0x04

ST_AIR = "31"       # air-pollution source
ST_SYSTEM = "91"    # system interaction (platform replies, 9014)

CN_RTD = "2011"
CN_MINUTE = "2051"
CN_HOUR = "2061"
CN_DAY = "2031"
CN_ACK_DATA = "9014"
CN_REQUEST_REPLY = "9011"
CN_EXEC_REPLY = "9012"
CN_TIMEOUT = "1000"
CN_GET_TIME = "1011"
CN_SET_TIME = "1012"
CN_GET_RTD_INTERVAL = "1061"
CN_SET_RTD_INTERVAL = "1062"
CN_GET_MIN_INTERVAL = "1063"
CN_SET_MIN_INTERVAL = "1064"

MAX_SEGMENT = 1024                  # HJ 212-2017: the data segment is 0..1024 bytes
MAX_FRAME = MAX_SEGMENT + 12        # "##" + 4 digits + segment + 4 hex + CRLF

_HEADER_KEYS = ("QN", "ST", "CN", "PW", "MN", "Flag", "PNUM", "PNO")
_REQUIRED = ("ST", "CN", "MN")


def crc16(data: bytes) -> int:
    """The HJ 212 CRC of `data` (reg 0xFFFF, reg = (reg >> 8) ^ byte, 8 shifts with 0xA001).

    It differs from CRC-16/MODBUS, which XORs the byte into the low half of the register.
    """
    reg = 0xFFFF
    for byte in data:
        reg = (reg >> 8) ^ byte
        for _ in range(8):
            lsb = reg & 1
            reg >>= 1
            if lsb:
                reg ^= 0xA001
    return reg


@dataclass(frozen=True, slots=True)
class Packet:
    """One HJ 212 packet; `cp` is the text between ``CP=&&`` and ``&&``; empty qn / pw left out."""

    qn: str
    st: str
    cn: str
    pw: str
    mn: str
    flag: int
    cp: str
    pnum: int | None = None
    pno: int | None = None


def _is_ascii_text(text: str) -> bool:
    return text.isascii() and all(" " <= c <= "~" for c in text)


def _check_value(key: str, value: str) -> None:
    if not _is_ascii_text(value):
        raise Hj212Error(f"HJ 212 field {key}: {value!r} is not printable ASCII")
    for bad in (";", "&&"):
        if bad in value:
            raise Hj212Error(f"HJ 212 field {key}: {value!r} contains {bad!r}")
    if key == "QN" and value and not (value.isdigit() and len(value) == 17):
        raise Hj212Error(f"HJ 212 field QN: {value!r} is not 17 digits yyyyMMddHHmmssSSS")
    if key == "ST" and not (value.isdigit() and len(value) == 2):
        raise Hj212Error(f"HJ 212 field ST: {value!r} is not 2 digits")
    if key == "CN" and not (value.isdigit() and len(value) == 4):
        raise Hj212Error(f"HJ 212 field CN: {value!r} is not 4 digits")
    if (key == "MN" and not 0 < len(value) <= 24) or (key == "PW" and len(value) > 6):
        raise Hj212Error(f"HJ 212 field {key}: {value!r} has a wrong length")
    if key in ("MN", "PW") and "=" in value:
        raise Hj212Error(f"HJ 212 field {key}: {value!r} contains '='")


def _check_packet(p: Packet) -> None:
    for key, value in (("QN", p.qn), ("ST", p.st), ("CN", p.cn), ("PW", p.pw), ("MN", p.mn)):
        _check_value(key, value)
    if not 0 <= p.flag <= 255:
        raise Hj212Error(f"HJ 212 field Flag: {p.flag} is outside 0..255")
    if (p.pnum is None) != (p.pno is None):
        raise Hj212Error("HJ 212 fields PNUM / PNO: one given without the other")
    if p.pnum is not None and p.pno is not None and not 1 <= p.pno <= p.pnum <= 9999:
        raise Hj212Error(f"HJ 212 fields PNUM / PNO: PNO={p.pno} PNUM={p.pnum} out of range")
    if not _is_ascii_text(p.cp):
        raise Hj212Error(f"HJ 212 CP: {p.cp[:40]!r} is not printable ASCII")
    if "&&" in p.cp or p.cp.endswith("&"):
        raise Hj212Error(f"HJ 212 CP: {p.cp[:40]!r} contains the delimiter '&&'")


def segment(p: Packet) -> str:
    """The data segment of `p` (QN / PW left out when empty, PNUM / PNO only when split)."""
    _check_packet(p)
    parts = []
    if p.qn:
        parts.append(f"QN={p.qn}")
    parts += [f"ST={p.st}", f"CN={p.cn}"]
    if p.pw:
        parts.append(f"PW={p.pw}")
    parts += [f"MN={p.mn}", f"Flag={p.flag}"]
    if p.pnum is not None:
        parts += [f"PNUM={p.pnum}", f"PNO={p.pno}"]
    parts.append(f"CP=&&{p.cp}&&")
    return ";".join(parts)


def encode(p: Packet) -> bytes:
    """The whole frame of `p`; refuses non-ASCII and a data segment over 1024 bytes (use split)."""
    seg = segment(p).encode("ascii")
    if len(seg) > MAX_SEGMENT:
        raise Hj212Error(f"HJ 212 data segment of CN={p.cn} is {len(seg)} bytes, over "
                         f"{MAX_SEGMENT}: split the packet")
    return b"##%04d%s%04X\r\n" % (len(seg), seg, crc16(seg))


def _int_field(key: str, value: str) -> int:
    if not value.isdigit() or not value.isascii() or len(value) > 4:
        raise Hj212Error(f"HJ 212 field {key}: {value!r} is not a number")
    return int(value)


def decode(frame: bytes) -> Packet:
    """The packet of one whole frame (with CRLF); Hj212Error names the first problem found."""
    if len(frame) < 12:
        raise Hj212Error(f"HJ 212 frame of {len(frame)} bytes is too short")
    if frame[:2] != b"##":
        raise Hj212Error(f"HJ 212 frame does not start with '##' (starts {frame[:2]!r})")
    digits = frame[2:6]
    if not (digits.isdigit() and digits.isascii()):
        raise Hj212Error(f"HJ 212 length at byte 2: {digits!r} is not 4 decimal digits")
    if frame[-2:] != b"\r\n":
        raise Hj212Error(f"HJ 212 frame does not end with CRLF (ends {frame[-2:]!r})")
    length = int(digits)
    actual = len(frame) - 12
    if length != actual:
        raise Hj212Error(f"HJ 212 length at byte 2: says {length} but the data segment is "
                         f"{actual} bytes")
    if length > MAX_SEGMENT:
        raise Hj212Error(f"HJ 212 length at byte 2: {length} is over {MAX_SEGMENT}")
    seg = frame[6:6 + length]
    crc_text = frame[6 + length:10 + length]
    if not all(c in b"0123456789ABCDEFabcdef" for c in crc_text):
        raise Hj212Error(f"HJ 212 CRC at byte {6 + length}: {crc_text!r} is not 4 hex digits")
    crc = crc16(seg)
    if int(crc_text, 16) != crc:
        raise Hj212Error(f"HJ 212 CRC at byte {6 + length}: frame says {crc_text.decode()}, "
                         f"the data segment gives {crc:04X}")
    try:
        text = seg.decode("ascii")
    except UnicodeDecodeError as exc:
        raise Hj212Error(f"HJ 212 data segment: non-ASCII byte at byte {6 + exc.start}") from None
    return _parse_segment(text)


def _parse_segment(text: str) -> Packet:
    if text.startswith("CP=&&"):
        head, cp_at = "", 0
    else:
        cp_at = text.find(";CP=&&")
        if cp_at < 0:
            raise Hj212Error("HJ 212 data segment: no 'CP=&&' field")
        head, cp_at = text[:cp_at], cp_at + 1
    if not text.endswith("&&") or len(text) < cp_at + 7:
        raise Hj212Error("HJ 212 CP: does not end with '&&'")
    cp = text[cp_at + 5:-2]
    fields: dict[str, str] = {}
    for item in head.split(";") if head else []:
        key, eq, value = item.partition("=")
        if not eq:
            raise Hj212Error(f"HJ 212 field {item[:30]!r}: not key=value")
        if key not in _HEADER_KEYS:
            raise Hj212Error(f"HJ 212 field {key[:30]!r}: unknown field")
        if key in fields:
            raise Hj212Error(f"HJ 212 field {key}: given twice")
        fields[key] = value
    for key in _REQUIRED:
        if key not in fields:
            raise Hj212Error(f"HJ 212 field {key}: missing")
    pnum = _int_field("PNUM", fields["PNUM"]) if "PNUM" in fields else None
    pno = _int_field("PNO", fields["PNO"]) if "PNO" in fields else None
    flag = _int_field("Flag", fields["Flag"]) if "Flag" in fields else 0
    p = Packet(qn=fields.get("QN", ""), st=fields["ST"], cn=fields["CN"], pw=fields.get("PW", ""),
               mn=fields["MN"], flag=flag, cp=cp, pnum=pnum, pno=pno)
    _check_packet(p)
    return p


class FrameReader:
    """Incremental decoder of a TCP byte stream: `feed` returns the packets and errors found.

    It resyncs on the next ``##`` after garbage or a bad frame; a frame that has no CRLF
    within MAX_FRAME bytes is an error, so the buffer stays bounded.
    """

    def __init__(self) -> None:
        """An empty reader."""
        self._buf = bytearray()
        self._offset = 0    # stream offset of _buf[0], for the messages
        self._garbage = 0   # bytes skipped before the next "##", reported there as one error
        self._garbage_at = 0

    def feed(self, data: bytes) -> list[Packet | Hj212Error]:
        """Append `data`; return what the stream now completes, in order."""
        self._buf += data
        out: list[Packet | Hj212Error] = []
        buf = self._buf
        while True:
            start = buf.find(b"##")
            if start < 0:
                # keep a trailing '#' that may start the next frame
                keep = 1 if buf.endswith(b"#") else 0
                self._drop(len(buf) - keep)
                break
            if start > 0:
                self._drop(start)
            if self._garbage:
                out.append(Hj212Error(f"HJ 212 stream: {self._garbage} bytes of garbage at "
                                      f"stream byte {self._garbage_at} skipped"))
                self._garbage = 0
            # reject a bad length at once rather than wait for a CRLF that may never come
            if len(buf) < 6:
                break
            digits = bytes(buf[2:6])
            if not (digits.isdigit() and int(digits) <= MAX_SEGMENT):
                out.append(Hj212Error(f"HJ 212 length at stream byte {self._offset + 2}: "
                                      f"{digits!r} is not a length 0000..{MAX_SEGMENT}"))
                self._resync()
                continue
            end = buf.find(b"\r\n", 2, MAX_FRAME)
            if end < 0:
                if len(buf) >= MAX_FRAME:
                    out.append(Hj212Error(f"HJ 212 frame at stream byte {self._offset}: no CRLF "
                                          f"within {MAX_FRAME} bytes"))
                    self._resync()
                    continue
                break
            frame = bytes(buf[:end + 2])
            try:
                out.append(decode(frame))
            except Hj212Error as exc:
                out.append(Hj212Error(f"{exc} (frame at stream byte {self._offset})"))
                # a bad frame may hide the start of a good one: resume at its next "##"
                inner = frame.find(b"##", 1)
                if inner > 0:
                    self._consume(inner)
                    continue
            self._consume(len(frame))
        return out

    def _consume(self, n: int) -> None:
        del self._buf[:n]
        self._offset += n

    def _resync(self) -> None:
        # step over the first '#' only: the loop then finds the next "##" (which may be the
        # second '#' of this one, as in "###0101…") and counts what lies between as garbage,
        # the same however the stream was cut into reads
        self._consume(1)

    def _drop(self, n: int) -> None:
        if n > 0:
            if not self._garbage:
                self._garbage_at = self._offset
            self._garbage += n
            self._consume(n)


def parse_cp(cp: str) -> list[dict[str, str]]:
    """CP text as groups (split at ';') of items (split at ',') ``key=value``."""
    groups: list[dict[str, str]] = []
    if not cp:
        return groups
    for n, group_text in enumerate(cp.split(";")):
        group: dict[str, str] = {}
        for item in group_text.split(","):
            key, eq, value = item.partition("=")
            if not eq or not key:
                raise Hj212Error(f"HJ 212 CP group {n + 1}: {item[:30]!r} is not key=value")
            if key in group:
                raise Hj212Error(f"HJ 212 CP group {n + 1}: {key!r} given twice")
            group[key] = value
        groups.append(group)
    return groups


def format_cp(groups: Sequence[Mapping[str, str]]) -> str:
    """The CP text of `groups` (inverse of parse_cp); refuses separators inside keys / values."""
    parts = []
    for n, group in enumerate(groups):
        if not group:
            raise Hj212Error(f"HJ 212 CP group {n + 1}: empty")
        items = []
        for key, value in group.items():
            for text in (key, value):
                if any(c in text for c in ";,=&") or not _is_ascii_text(text):
                    raise Hj212Error(f"HJ 212 CP group {n + 1}: {key}={value!r} holds a "
                                     "separator or non-ASCII text")
            if not key:
                raise Hj212Error(f"HJ 212 CP group {n + 1}: empty key")
            items.append(f"{key}={value}")
        parts.append(",".join(items))
    return ";".join(parts)


def split(p: Packet, max_segment: int = MAX_SEGMENT) -> list[Packet]:
    """`p` cut between CP groups into packets whose data segments fit `max_segment` bytes.

    A packet that fits comes back alone and unchanged; pieces carry PNUM / PNO and FLAG_SPLIT
    and the same QN.
    """
    if len(segment(p)) <= max_segment:
        return [p]
    groups = p.cp.split(";")
    base = replace(p, flag=p.flag | FLAG_SPLIT, cp="")
    # the overhead depends on the digits of PNUM / PNO: retry with a wider bound if needed
    for width in (1, 2, 3, 4):
        room = max_segment - len(segment(replace(base, pnum=10 ** width - 1,
                                                 pno=10 ** width - 1)))
        pieces: list[str] = []
        current = ""
        for g in groups:
            if len(g) > room:
                raise Hj212Error(f"HJ 212 CP group {g[:30]!r}… of {len(g)} bytes does not fit a "
                                 f"{max_segment}-byte data segment")
            candidate = f"{current};{g}" if current else g
            if current and len(candidate) > room:
                pieces.append(current)
                current = g
            else:
                current = candidate
        pieces.append(current)
        if len(pieces) < 10 ** width:
            n = len(pieces)
            return [replace(base, cp=c, pnum=n, pno=i + 1) for i, c in enumerate(pieces)]
    raise Hj212Error(f"HJ 212 packet CN={p.cn} needs more than 9999 pieces")


def join(packets: Iterable[Packet]) -> Packet:
    """The packet that `split` cut into `packets` (any order); checks all pieces are there."""
    parts = sorted(packets, key=lambda q: q.pno or 0)
    if not parts:
        raise Hj212Error("HJ 212 join: no packets")
    first = parts[0]
    if first.pnum is None:
        if len(parts) == 1:
            return first
        raise Hj212Error("HJ 212 join: packets without PNUM / PNO")
    for q in parts:
        if (q.qn, q.cn, q.mn, q.st, q.pnum) != (first.qn, first.cn, first.mn, first.st,
                                                first.pnum):
            raise Hj212Error(f"HJ 212 join: piece PNO={q.pno} belongs to another packet "
                             f"(QN={q.qn} CN={q.cn} PNUM={q.pnum})")
    pnos = [q.pno for q in parts]
    if pnos != list(range(1, first.pnum + 1)):
        raise Hj212Error(f"HJ 212 join: QN={first.qn} has pieces {pnos} of PNUM={first.pnum}")
    cp = ";".join(q.cp for q in parts if q.cp)
    return replace(first, flag=first.flag & ~FLAG_SPLIT, cp=cp, pnum=None, pno=None)


def _zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise Hj212Error(f"HJ 212 time zone {tz!r}: unknown ({exc})") from None


def _local(t: datetime, tz: str) -> datetime:
    if t.tzinfo is None:
        raise Hj212Error(f"HJ 212 time {t.isoformat()}: naive datetime, give a time zone")
    return t.astimezone(_zone(tz))


def hj_time(t: datetime, tz: str) -> str:
    """`t` as yyyyMMddHHmmss in the plant's local time zone `tz` (HJ 212 times are local)."""
    return _local(t, tz).strftime("%Y%m%d%H%M%S")


def hj_qn(t: datetime, tz: str) -> str:
    """`t` as a QN, yyyyMMddHHmmssSSS in the plant's local time zone `tz`."""
    local = _local(t, tz)
    return local.strftime("%Y%m%d%H%M%S") + f"{local.microsecond // 1000:03d}"


def parse_hj_time(text: str, tz: str) -> datetime:
    """A local yyyyMMddHHmmss (or 17-digit QN) time of zone `tz` as an aware UTC datetime."""
    if not (text.isascii() and text.isdigit() and len(text) in (14, 17)):
        raise Hj212Error(f"HJ 212 time {text[:30]!r}: not yyyyMMddHHmmss")
    try:
        # fixed-width fields: strptime would accept one-digit months and the like
        local = datetime(int(text[0:4]), int(text[4:6]), int(text[6:8]), int(text[8:10]),
                         int(text[10:12]), int(text[12:14]))
    except ValueError as exc:
        raise Hj212Error(f"HJ 212 time {text!r}: {exc}") from None
    if len(text) == 17:
        local = local.replace(microsecond=int(text[14:]) * 1000)
    return local.replace(tzinfo=_zone(tz)).astimezone(UTC)
