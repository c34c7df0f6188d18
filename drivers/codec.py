"""Modbus register codec and block-read planner (pure functions, no I/O).

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

from server.config import ModbusTagConfig

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


def register_count(type: str) -> int:
    """Number of 16-bit registers a value of `type` occupies."""
    return _format(type)[1]


def _format(type: str) -> tuple[str, int, bool]:
    try:
        return _FORMATS[type]
    except KeyError:
        raise ValueError(f"unknown register type {type!r}") from None


def _check_order(order: str) -> None:
    if order not in _ORDERS:
        raise ValueError(f"unknown word order {order!r}")


def _reorder(data: bytes, order: str) -> bytes:
    """Map big-endian bytes to wire order; each order is its own inverse."""
    words = [data[i:i + 2] for i in range(0, len(data), 2)]
    if order in ("CDAB", "DCBA"):
        words.reverse()
    if order in ("BADC", "DCBA"):
        words = [w[::-1] for w in words]
    return b"".join(words)


def decode(registers: Sequence[int], type: str, order: str) -> float:
    """Value held by `registers` (exactly `register_count(type)` of them)."""
    fmt, count, _ = _format(type)
    _check_order(order)
    if len(registers) != count:
        raise ValueError(f"{type} needs {count} registers, got {len(registers)}")
    try:
        wire = struct.pack(f">{count}H", *registers)
    except struct.error:
        raise ValueError(f"registers out of range 0..0xFFFF: {list(registers)}") from None
    return float(struct.unpack(f">{fmt}", _reorder(wire, order))[0])


def encode(value: float, type: str, order: str) -> list[int]:
    """Registers holding `value`; integer types round to nearest and reject out-of-range."""
    fmt, count, integer = _format(type)
    _check_order(order)
    number: int | float = value
    if integer:
        if not math.isfinite(value):
            raise ValueError(f"cannot encode {value} as {type}")
        number = round(value)
    try:
        data = struct.pack(f">{fmt}", number)
    except (struct.error, OverflowError):
        raise ValueError(f"{value} out of range for {type}") from None
    return list(struct.unpack(f">{count}H", _reorder(data, order)))


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
        raise ValueError(f"max_count must be 1..{MAX_READ}, got {max_count}")
    if max_gap < 0:
        raise ValueError(f"max_gap must be ≥ 0, got {max_gap}")
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
                raise ValueError(f"tag {tag.id!r} runs past register 65535")
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
