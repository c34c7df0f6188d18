"""Register codec and read planner, against the worked vectors of protocol_vectors.md."""

from __future__ import annotations

import math
import struct
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.codec import Block, BlockDecoder, decode, encode, plan_reads, register_count
from drivers.config import ModbusTagConfig
from tests.fixtures.plant import plant_config

ORDERS = ["ABCD", "CDAB", "BADC", "DCBA"]
INT_RANGES = {
    "int16": (-32768, 32767),
    "uint16": (0, 65535),
    "int32": (-2147483648, 2147483647),
    "uint32": (0, 4294967295),
}

# ../shared/reference/protocol_vectors.md: 123.456 as float32 (IEEE bytes 42 F6 E9 79)
FLOAT32_123_456 = {
    "ABCD": [0x42F6, 0xE979],
    "CDAB": [0xE979, 0x42F6],
    "BADC": [0xF642, 0x79E9],
    "DCBA": [0x79E9, 0xF642],
}
# 123.456 rounded to float32, read from the vector's bytes rather than computed by the codec
F32_123_456 = struct.unpack(">f", bytes.fromhex("42F6E979"))[0]


@pytest.mark.parametrize("order", ORDERS)
def test_float32_reference_vector_encode(order: str) -> None:
    assert encode(123.456, "float32", order) == FLOAT32_123_456[order]


@pytest.mark.parametrize("order", ORDERS)
def test_float32_reference_vector_decode(order: str) -> None:
    value = decode(FLOAT32_123_456[order], "float32", order)
    assert value == F32_123_456
    assert value == pytest.approx(123.456, rel=1e-7)


@pytest.mark.parametrize(("registers", "type_", "order", "value"), [
    ([0xFFFF], "int16", "ABCD", -1),
    ([0xFFFF], "uint16", "ABCD", 65535),
    ([0x8000], "int16", "ABCD", -32768),
    ([0x1234], "int16", "CDAB", 0x1234),  # one word: nothing to swap
    ([0x3412], "int16", "BADC", 0x1234),
    ([0x3412], "uint16", "DCBA", 0x1234),
    ([0x1234, 0x5678], "uint32", "ABCD", 0x12345678),
    ([0x5678, 0x1234], "uint32", "CDAB", 0x12345678),
    ([0x3412, 0x7856], "uint32", "BADC", 0x12345678),
    ([0x7856, 0x3412], "uint32", "DCBA", 0x12345678),
    ([0xFFFF, 0xFFFE], "int32", "ABCD", -2),
    ([0xFFFE, 0xFFFF], "int32", "CDAB", -2),
    ([0x0001, 0x0000], "uint32", "CDAB", 1),
    ([0xC3FA, 0x0000], "float32", "ABCD", -500.0),
    ([0x3FF0, 0, 0, 0], "float64", "ABCD", 1.0),
    ([0, 0, 0, 0x3FF0], "float64", "CDAB", 1.0),
    ([0xF03F, 0, 0, 0], "float64", "BADC", 1.0),
    ([0, 0, 0, 0xF03F], "float64", "DCBA", 1.0),
])
def test_hand_written_vectors(registers: list[int], type_: str, order: str,
                              value: float) -> None:
    assert decode(registers, type_, order) == value
    assert encode(value, type_, order) == registers


@pytest.mark.parametrize(("type_", "count"), [
    ("int16", 1), ("uint16", 1), ("int32", 2), ("uint32", 2), ("float32", 2), ("float64", 4)])
def test_register_count(type_: str, count: int) -> None:
    assert register_count(type_) == count


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("type_", sorted(INT_RANGES))
@given(data=st.data())
def test_int_round_trip(type_: str, order: str, data: st.DataObject) -> None:
    lo, hi = INT_RANGES[type_]
    value = data.draw(st.integers(lo, hi))
    regs = encode(value, type_, order)
    assert len(regs) == register_count(type_)
    assert all(0 <= r <= 0xFFFF for r in regs)
    assert decode(regs, type_, order) == value


@pytest.mark.parametrize("order", ORDERS)
@given(value=st.floats(width=32))
def test_float32_round_trip(order: str, value: float) -> None:
    back = decode(encode(value, "float32", order), "float32", order)
    assert back == value or (math.isnan(back) and math.isnan(value))


@pytest.mark.parametrize("order", ORDERS)
@given(value=st.floats())
def test_float64_round_trip(order: str, value: float) -> None:
    back = decode(encode(value, "float64", order), "float64", order)
    assert back == value or (math.isnan(back) and math.isnan(value))


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("type_", ["int16", "uint16", "int32", "uint32", "float32", "float64"])
@given(data=st.data())
def test_registers_round_trip(type_: str, order: str, data: st.DataObject) -> None:
    regs = data.draw(st.lists(st.integers(0, 0xFFFF), min_size=register_count(type_),
                              max_size=register_count(type_)))
    value = decode(regs, type_, order)
    if math.isnan(value):
        return  # NaN payloads need not survive; NaN itself is checked above
    assert encode(value, type_, order) == regs


def test_integer_encode_rounds() -> None:
    assert encode(1233.9999999, "int16", "ABCD") == [1234]
    assert encode(-0.6, "int16", "ABCD") == [0xFFFF]


@pytest.mark.parametrize(("call", "match"), [
    (lambda: decode([1], "float32", "ABCD"), "needs 2 registers"),
    (lambda: decode([0x10000], "uint16", "ABCD"), "out of range"),
    (lambda: decode([1, 2], "float16", "ABCD"), "unknown register type"),
    (lambda: decode([1, 2], "float32", "DABC"), "unknown word order"),
    (lambda: encode(70000, "uint16", "ABCD"), "out of range"),
    (lambda: encode(-1, "uint32", "ABCD"), "out of range"),
    (lambda: encode(math.nan, "int32", "ABCD"), "cannot encode"),
    (lambda: encode(1e39, "float32", "ABCD"), "out of range"),
])
def test_rejects_bad_input(call: Callable[[], object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


# --- read planner ------------------------------------------------------------------------

def tag(id_: str, register: int, type_: str = "float32",
        function: str = "holding") -> ModbusTagConfig:
    return ModbusTagConfig.model_validate(
        {"id": id_, "register": register, "type": type_, "function": function})


def layout(blocks: list[Block]) -> list[tuple[str, int, int, list[tuple[str, int]]]]:
    return [(b.function, b.start, b.count, [(t.id, off) for t, off in b.tags]) for b in blocks]


def test_plan_merges_contiguous_tags() -> None:
    tags = [tag("c", 4), tag("a", 0), tag("b", 2, "int32")]
    assert layout(plan_reads(tags, max_gap=0)) == [
        ("holding", 0, 6, [("a", 0), ("b", 2), ("c", 4)])]


def test_plan_merges_within_gap_and_splits_beyond() -> None:
    tags = [tag("a", 0), tag("b", 10)]  # 8 unused registers (2..9) between them
    assert layout(plan_reads(tags, max_gap=8)) == [
        ("holding", 0, 12, [("a", 0), ("b", 10)])]
    assert layout(plan_reads(tags, max_gap=7)) == [
        ("holding", 0, 2, [("a", 0)]), ("holding", 10, 2, [("b", 0)])]


def test_plan_respects_125_register_limit() -> None:
    exactly = [tag(f"t{i}", i, "uint16") for i in range(125)]
    blocks = plan_reads(exactly, max_gap=0)
    assert [(b.start, b.count) for b in blocks] == [(0, 125)]
    one_more = [*exactly, tag("t125", 125, "uint16")]
    assert [(b.start, b.count) for b in plan_reads(one_more, max_gap=0)] == [(0, 125), (125, 1)]
    # float32 pairs: 62 fit in 124 registers, the 63rd would need 126
    floats = [tag(f"f{i}", 2 * i) for i in range(125)]
    assert [(b.start, b.count) for b in plan_reads(floats, max_gap=0)] == [
        (0, 124), (124, 124), (248, 2)]
    assert all(b.count <= 125 for b in plan_reads(floats, max_gap=125))


def test_plan_honours_smaller_max_count() -> None:
    tags = [tag("a", 0), tag("b", 2), tag("c", 4)]
    assert [(b.start, b.count) for b in plan_reads(tags, max_gap=0, max_count=4)] == [
        (0, 4), (4, 2)]


def test_plan_splits_by_function() -> None:
    tags = [tag("in", 0, function="input"), tag("hold", 0), tag("hold2", 2)]
    assert layout(plan_reads(tags, max_gap=8)) == [
        ("holding", 0, 4, [("hold", 0), ("hold2", 2)]),
        ("input", 0, 2, [("in", 0)])]


def test_plan_overlapping_tags_share_registers() -> None:
    tags = [tag("whole", 0, "uint32"), tag("high", 0, "uint16"), tag("low", 1, "uint16")]
    assert layout(plan_reads(tags, max_gap=0)) == [
        ("holding", 0, 2, [("high", 0), ("whole", 0), ("low", 1)])]


def test_plan_of_fixture_plant() -> None:
    dev = plant_config().devices[0]
    blocks = plan_reads(dev.tags, dev.max_gap)  # max_gap 8; 10..19 unused is 10 registers
    assert [b.label for b in blocks] == ["holding 0..9", "holding 20..21"]


def test_plan_rejects_tag_past_address_space() -> None:
    with pytest.raises(ValueError, match="past register 65535"):
        plan_reads([tag("x", 65535)], max_gap=0)


# --- block decoder -----------------------------------------------------------------------

TYPES = ["int16", "uint16", "int32", "uint32", "float32", "float64"]


def same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def tag_by_tag(block: Block, values: list[int]) -> list[float]:
    """What BlockDecoder must give: `decode` (or the bit) of each tag on its own."""
    out = []
    for t, off in block.tags:
        if block.function in ("coil", "discrete"):
            out.append(float(values[off]))
        elif t.bit is not None:
            out.append(float((values[off] >> t.bit) & 1))
        else:
            out.append(decode(values[off:off + register_count(t.type)], t.type, t.order))
    return out


@st.composite
def tag_sets(draw: st.DrawFn) -> list[ModbusTagConfig]:
    tags = []
    for i in range(draw(st.integers(1, 30))):
        spec: dict[str, object] = {
            "id": f"t{i}", "register": draw(st.integers(0, 60)),
            "function": draw(st.sampled_from(["holding", "input", "coil"])),
            "type": draw(st.sampled_from(TYPES)), "order": draw(st.sampled_from(ORDERS))}
        if spec["function"] != "coil" and draw(st.integers(0, 5)) == 0:
            spec["type"], spec["bit"] = "uint16", draw(st.integers(0, 15))
        tags.append(ModbusTagConfig.model_validate(spec))
    return tags


@given(tags=tag_sets(), max_gap=st.integers(0, 10), data=st.data())
def test_block_decoder_equals_decode_tag_by_tag(tags: list[ModbusTagConfig], max_gap: int,
                                                data: st.DataObject) -> None:
    for block in plan_reads(tags, max_gap):
        top = 1 if block.function == "coil" else 0xFFFF
        values = data.draw(st.lists(st.integers(0, top), min_size=block.count,
                                    max_size=block.count))
        got = BlockDecoder(block)(values)
        want = tag_by_tag(block, values)
        assert len(got) == len(want)
        assert all(type(g) is float and same(g, w) for g, w in zip(got, want, strict=True))


@pytest.mark.parametrize("order", ORDERS)
def test_block_decoder_reference_vector_in_a_block(order: str) -> None:
    # float32 pairs with unused registers between them, and an int16 scaled tag
    tags = [tag("a", 0), tag("b", 4), tag("c", 7, "int16")]
    tags = [t.model_copy(update={"order": order}) for t in tags]
    [block] = plan_reads(tags, max_gap=8)
    values = [*FLOAT32_123_456[order], 0, 0, *FLOAT32_123_456[order], 0, 0xFFFF]
    assert BlockDecoder(block)(values) == [F32_123_456, F32_123_456, -1.0]


def test_block_decoder_overlapping_tags_and_bits() -> None:
    tags = [tag("whole", 0, "uint32"), tag("high", 0, "uint16"), tag("low", 1, "uint16"),
            ModbusTagConfig.model_validate({"id": "b3", "register": 1, "type": "uint16",
                                            "bit": 3})]
    [block] = plan_reads(tags, max_gap=0)
    assert [t.id for t, _ in block.tags] == ["high", "whole", "b3", "low"]
    assert BlockDecoder(block)([0x1234, 0x5678]) == [
        float(0x1234), float(0x12345678), 1.0, float(0x5678)]
    coils = [tag("c0", 0, function="coil"), tag("c9", 9, function="coil")]
    [bits] = plan_reads(coils, max_gap=8)
    assert BlockDecoder(bits)([1, 0, 0, 0, 0, 0, 0, 0, 0, 0]) == [1.0, 0.0]


def test_block_decoder_ignores_extra_values_and_rejects_bad_ones() -> None:
    [block] = plan_reads([tag("a", 0), tag("b", 2)], max_gap=0)
    decoder = BlockDecoder(block)
    assert decoder([0x3FC0, 0, 0xC000, 0, 99]) == [1.5, -2.0]
    with pytest.raises(ValueError, match="block of 4 registers, got 3"):
        decoder([0x3FC0, 0, 0xC000])
    with pytest.raises(ValueError, match="out of range"):
        decoder([0x10000, 0, 0, 0])
    with pytest.raises(ValueError, match="outside"):
        BlockDecoder(Block("holding", 0, 1, ((tag("x", 0), 0),)))
