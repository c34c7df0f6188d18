"""Modbus register codec, block-read planner and block decoder (pure functions, no I/O).

Word orders name where the big-endian bytes A B C D … of the value go in the
registers: ABCD as is, CDAB words swapped, BADC bytes swapped within each word,
DCBA fully reversed. 64-bit values extend the same pattern over four words.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from drivers.config import ModbusTagConfig
from model.errors import InvalidValueError

Function = Literal["holding", "input", "coil", "discrete"]

MAX_READ = 125  # registers per read request (Modbus application protocol limit)
MAX_READ_BITS = 2000  # coils / discrete inputs per read request

# type → (struct format, register count, is integer)
_FORMATS: dict[str, tuple[str, int, bool]] = {
    "int16": ("h", 1, True),
    "uint16": ("H", 1, True),
    "int32": ("i", 2, True),
    "uint32": ("I", 2, True),
    "float32": ("f", 2, False),
    "float64": ("d", 4, False),
}
_ORDERS = ("ABCD", "CDAB", "BADC", "DCBA")
_FUNCTIONS: tuple[Function, ...] = ("holding", "input", "coil", "discrete")
BIT_FUNCTIONS = ("coil", "discrete")


# How each word order maps registers to the value's bytes, as the byte orders of two
# struct conversions: registers → bytes (">" each word big-endian as on the wire, "<"
# each word's bytes swapped), then bytes → value (">" big-endian, "<" little-endian,
# which reverses the whole byte string). Swapping bytes within words and then reversing
# everything reverses the word order: CDAB.
_BYTE_ORDERS: dict[str, tuple[str, str]] = {
    "ABCD": (">", ">"),
    "CDAB": ("<", "<"),
    "BADC": ("<", ">"),
    "DCBA": (">", "<"),
}
# (type, order) → (registers struct, value struct, register count, is integer)
_CODECS: dict[tuple[str, str], tuple[struct.Struct, struct.Struct, int, bool]] = {
    (type_, order): (struct.Struct(f"{regs}{count}H"), struct.Struct(f"{value}{fmt}"),
                     count, integer)
    for type_, (fmt, count, integer) in _FORMATS.items()
    for order, (regs, value) in _BYTE_ORDERS.items()
}
_COUNTS = {type_: count for type_, (_, count, _) in _FORMATS.items()}


def register_count(type: str) -> int:
    """Number of 16-bit registers a value of `type` occupies."""
    try:
        return _COUNTS[type]
    except KeyError:
        raise InvalidValueError(f"unknown register type {type!r}") from None


def _format(type: str) -> tuple[str, int, bool]:
    try:
        return _FORMATS[type]
    except KeyError:
        raise InvalidValueError(f"unknown register type {type!r}") from None


def _check_order(order: str) -> None:
    if order not in _ORDERS:
        raise InvalidValueError(f"unknown word order {order!r}")


def _codec(type: str, order: str) -> tuple[struct.Struct, struct.Struct, int, bool]:
    try:
        return _CODECS[type, order]
    except KeyError:
        _format(type)
        _check_order(order)
        raise


def decode(registers: Sequence[int], type: str, order: str) -> float:
    """Value held by `registers` (exactly `register_count(type)` of them)."""
    regs, value, count, _ = _codec(type, order)
    if len(registers) != count:
        raise InvalidValueError(f"{type} needs {count} registers, got {len(registers)}")
    try:
        data = regs.pack(*registers)
    except struct.error:
        raise InvalidValueError(f"registers out of range 0..0xFFFF: {list(registers)}") from None
    return float(value.unpack(data)[0])


def encode(value: float, type: str, order: str) -> list[int]:
    """Registers holding `value`; integer types round to nearest and reject out-of-range."""
    regs, fmt, _, integer = _codec(type, order)
    number: int | float = value
    if integer:
        if not math.isfinite(value):
            raise InvalidValueError(f"cannot encode {value} as {type}")
        number = round(value)
    try:
        data = fmt.pack(number)
    except (struct.error, OverflowError):
        raise InvalidValueError(f"{value} out of range for {type}") from None
    return list(regs.unpack(data))


@dataclass(frozen=True, slots=True)
class Block:
    """One read request: `count` registers (or bits) from `start`, and the tags at their offsets."""

    function: Function
    start: int
    count: int
    tags: tuple[tuple[ModbusTagConfig, int], ...]  # (tag, offset of its first register)

    @property
    def label(self) -> str:
        """Human-readable range for logs, e.g. "holding 0..9"."""
        return f"{self.function} {self.start}..{self.start + self.count - 1}"


def plan_reads(tags: Sequence[ModbusTagConfig], max_gap: int,
               max_count: int = MAX_READ) -> list[Block]:
    """Group tags into contiguous reads ≤ `max_count` registers, per function.

    Two neighbouring tags share a read when at most `max_gap` unused registers lie
    between them. Blocks come holding, input, coil, discrete, each by start address.
    Bit tables take up to MAX_READ_BITS a read and ignore `max_count`.
    """
    if not 1 <= max_count <= MAX_READ:
        raise InvalidValueError(f"max_count must be 1..{MAX_READ}, got {max_count}")
    if max_gap < 0:
        raise InvalidValueError(f"max_gap must be ≥ 0, got {max_gap}")
    blocks: list[Block] = []
    for function in _FUNCTIONS:
        bits = function in BIT_FUNCTIONS
        limit = MAX_READ_BITS if bits else max_count
        mine = sorted((t for t in tags if t.function == function),
                      key=lambda t: (t.address, t.id))
        group: list[ModbusTagConfig] = []
        start = end = 0  # end is exclusive
        for tag in mine:
            tag_end = tag.address + (1 if bits else register_count(tag.type))
            if tag_end > 0x10000:
                raise InvalidValueError(f"tag {tag.id!r} runs past register 65535")
            if group and (tag.address - end <= max_gap
                          and max(end, tag_end) - start <= limit):
                group.append(tag)
                end = max(end, tag_end)
                continue
            if group:
                blocks.append(_block(function, start, end, group))
            group, start, end = [tag], tag.address, tag_end
        if group:
            blocks.append(_block(function, start, end, group))
    return blocks


def _block(function: Function, start: int, end: int, group: list[ModbusTagConfig]) -> Block:
    return Block(function, start, end - start, tuple((t, t.address - start) for t in group))


class BlockDecoder:
    """Decodes every tag of one Block from one reply at once; build once, call per read.

    The registers become bytes once per byte order they are needed in (one `struct.pack`)
    and the tags come out of one precompiled `struct` per word order, with pad bytes
    over unused registers (more than one when tags overlap), instead of a conversion
    per tag. Returns the raw values (before scale and offset) in `block.tags` order, equal
    to what `decode` gives tag by tag; bit tags (coil and discrete tables, or `bit` of a
    register) give 0.0 or 1.0.
    """

    __slots__ = ("_bits", "_direct", "_floats", "_n", "_packs", "count")

    def __init__(self, block: Block) -> None:
        self.count = block.count
        self._n = len(block.tags)
        self._bits: list[tuple[int, int, int]] = []  # (position, offset, bit; -1: a bit table)
        # byte orders (registers, value) → [(offset, registers, struct code, position)]
        fields: dict[tuple[str, str], list[tuple[int, int, str, int]]] = {}
        for pos, (tag, off) in enumerate(block.tags):
            if block.function in BIT_FUNCTIONS or tag.bit is not None:
                if not 0 <= off < block.count:
                    raise InvalidValueError(f"tag {tag.id!r} lies outside {block.label}")
                self._bits.append((pos, off, -1 if tag.bit is None else tag.bit))
                continue
            code, count, _ = _format(tag.type)
            _check_order(tag.order)
            if off < 0 or off + count > block.count:
                raise InvalidValueError(f"tag {tag.id!r} lies outside {block.label}")
            fields.setdefault(_BYTE_ORDERS[tag.order], []).append((off, count, code, pos))
        # registers struct → [(value struct, positions of its values, all of them floats)]
        self._packs: list[tuple[struct.Struct, list[tuple[struct.Struct, list[int], bool]]]] = []
        packs: dict[str, list[tuple[struct.Struct, list[int], bool]]] = {}
        for (regs, value), items in sorted(fields.items()):
            items.sort()
            for layer in _layers(items):
                fmt, end = [value], 0
                for off, count, code, _ in layer:
                    fmt.append(f"{2 * (off - end)}x{code}" if off > end else code)
                    end = off + count
                floats = all(code in "fd" for _, _, code, _ in layer)
                packs.setdefault(regs, []).append(
                    (struct.Struct("".join(fmt)), [p for *_, p in layer], floats))
        for regs, layers in packs.items():
            self._packs.append((struct.Struct(f"{regs}{block.count}H"), layers))
        # One struct holding every tag in block order: the usual case, and the fastest.
        self._direct: tuple[struct.Struct, struct.Struct] | None = None
        self._floats = False
        if not self._bits and len(self._packs) == 1 and len(self._packs[0][1]) == 1:
            regs_struct, [(value_struct, positions, floats)] = self._packs[0]
            if positions == list(range(self._n)):
                self._direct = (regs_struct, value_struct)
                self._floats = floats

    def __call__(self, values: Sequence[int]) -> list[float]:
        """Raw value of each tag of the block, from the block's registers (or bits)."""
        if len(values) != self.count:
            if len(values) < self.count:
                raise InvalidValueError(f"block of {self.count} registers, got {len(values)}")
            values = values[:self.count]
        try:
            if self._direct is not None:
                regs, value = self._direct
                raw = value.unpack_from(regs.pack(*values))
                return list(raw) if self._floats else [float(v) for v in raw]
            out = [0.0] * self._n
            for regs, layers in self._packs:
                data = regs.pack(*values)
                for value, positions, _ in layers:
                    for pos, v in zip(positions, value.unpack_from(data), strict=True):
                        out[pos] = float(v)
        except struct.error:
            raise InvalidValueError(f"registers out of range 0..0xFFFF: {list(values)}") from None
        for pos, off, bit in self._bits:
            out[pos] = float(values[off] if bit < 0 else (values[off] >> bit) & 1)
        return out


def _layers(items: list[tuple[int, int, str, int]]) -> list[list[tuple[int, int, str, int]]]:
    """Split fields sorted by offset into runs in which none overlaps the next."""
    layers: list[list[tuple[int, int, str, int]]] = []
    ends: list[int] = []
    for item in items:
        off, count, _, _ = item
        for i, end in enumerate(ends):
            if off >= end:
                layers[i].append(item)
                ends[i] = off + count
                break
        else:
            layers.append([item])
            ends.append(off + count)
    return layers


# --- numpy decoding of whole replies (the Modbus TCP fast path) ---------------------------

# type → numpy dtype of the value's bytes, most significant first
_NUMPY_TYPES: dict[str, str] = {"int16": ">i2", "uint16": ">u2", "int32": ">i4",
                                "uint32": ">u4", "float32": ">f4", "float64": ">f8"}


def value_byte_positions(type: str, order: str) -> list[int]:
    """Where each byte of a value (most significant first) lies in its registers' wire bytes.

    Derived from the same two byte orders as `decode`: swap the bytes of each word for
    a "<" register struct, then reverse all for a "<" value struct.
    """
    _, count, _ = _format(type)
    _check_order(order)
    regs, value = _BYTE_ORDERS[order]
    at = [i ^ 1 if regs == "<" else i for i in range(2 * count)]
    return at[::-1] if value == "<" else at


def reply_bytes(block: Block) -> int:
    """Data bytes a reply to `block` carries after its byte count."""
    return (block.count + 7) // 8 if block.function in BIT_FUNCTIONS else 2 * block.count


class ArrayDecoder:
    """Decodes the replies to several blocks (one poll) into one float64 array with numpy.

    The data bytes of the replies are joined into one buffer; every tag of a type is
    one row of a precomputed byte-index matrix that gathers its bytes most significant
    first, so that a whole type comes out as one `view` of the gathered bytes (one fancy
    index and one conversion per type per poll, whatever the offsets and word orders).
    Bit tags (coil and discrete tables, `bit` of a register) are one gather and shift.
    `positions[i]` are the output positions of block i's tags, in `block.tags` order;
    raw values (before scale and offset), equal to `BlockDecoder` / `decode`.
    """

    __slots__ = ("_bits", "_groups", "_n", "_zeros", "sizes")

    def __init__(self, blocks: Sequence[Block],
                 positions: Sequence[Sequence[int] | npt.NDArray[np.intp]], n_out: int) -> None:
        self._n = n_out
        self.sizes = [reply_bytes(b) for b in blocks]
        self._zeros = [bytes(s) for s in self.sizes]
        rows: dict[str, tuple[list[list[int]], list[int]]] = {}
        bit_at: list[int] = []
        bit_shift: list[int] = []
        bit_pos: list[int] = []
        base = 0
        for block, size, where in zip(blocks, self.sizes, positions, strict=True):
            if len(where) != len(block.tags):
                raise InvalidValueError(f"{len(where)} positions for {len(block.tags)} tags")
            for (tag, off), pos in zip(block.tags, where, strict=True):
                if block.function in BIT_FUNCTIONS:  # packed 8 a byte, first bit lowest
                    if not 0 <= off < block.count:
                        raise InvalidValueError(f"tag {tag.id!r} lies outside {block.label}")
                    bit_at.append(base + off // 8)
                    bit_shift.append(off % 8)
                    bit_pos.append(pos)
                    continue
                if tag.bit is not None:  # bit b of a big-endian register
                    if not 0 <= off < block.count:
                        raise InvalidValueError(f"tag {tag.id!r} lies outside {block.label}")
                    bit_at.append(base + 2 * off + (0 if tag.bit >= 8 else 1))
                    bit_shift.append(tag.bit % 8)
                    bit_pos.append(pos)
                    continue
                count = register_count(tag.type)
                if off < 0 or off + count > block.count:
                    raise InvalidValueError(f"tag {tag.id!r} lies outside {block.label}")
                idx, out = rows.setdefault(tag.type, ([], []))
                idx.append([base + 2 * off + b for b in value_byte_positions(tag.type, tag.order)])
                out.append(pos)
            base += size
        self._groups = [(np.dtype(_NUMPY_TYPES[t]), np.array(idx, np.intp),
                         np.array(out, np.intp)) for t, (idx, out) in rows.items()]
        self._bits = (np.array(bit_at, np.intp), np.array(bit_shift, np.uint8),
                      np.array(bit_pos, np.intp)) if bit_pos else None

    def __call__(self, replies: Sequence[bytes | None]) -> npt.NDArray[np.float64]:
        """Raw values (float64 array of `n_out`) from each block's reply data bytes; a
        None reply (block not read) decodes as zeros, for the caller to flag."""
        parts = []
        for data, size, zero in zip(replies, self.sizes, self._zeros, strict=True):
            if data is None:
                parts.append(zero)
            elif len(data) != size:
                raise InvalidValueError(f"reply of {len(data)} bytes, expected {size}")
            else:
                parts.append(data)
        buf = np.frombuffer(b"".join(parts), np.uint8)
        out = np.zeros(self._n)
        with np.errstate(invalid="ignore"):  # signalling NaNs from a device are NaN
            for dtype, idx, pos in self._groups:
                out[pos] = buf[idx].view(dtype)[:, 0]
        if self._bits is not None:
            at, shift, pos = self._bits
            out[pos] = (buf[at] >> shift) & 1
        return out
