"""HJ 212-2017 codec: the official example, CRC, errors, split / join, times, stream reader."""

from __future__ import annotations

import contextlib
import random
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model.errors import CarbonScadaError
from server.hj212.codec import (
    CN_MINUTE,
    FLAG_ACK,
    FLAG_SPLIT,
    MAX_SEGMENT,
    VERSION_2017,
    FrameReader,
    Hj212Error,
    Packet,
    crc16,
    decode,
    encode,
    format_cp,
    hj_qn,
    hj_time,
    join,
    parse_cp,
    parse_hj_time,
    segment,
    split,
)

# protocol_vectors.md "HJ 212-2017", official example
EXAMPLE = (b"##0101QN=20160801085857223;ST=32;CN=1062;PW=100000;MN=010000A8900016F000169DC0;"
           b"Flag=5;CP=&&RtdInterval=30&&1C80\r\n")
EXAMPLE_SEGMENT = EXAMPLE[6:-6]
EXAMPLE_PACKET = Packet(qn="20160801085857223", st="32", cn="1062", pw="100000",
                        mn="010000A8900016F000169DC0", flag=5, cp="RtdInterval=30")


def _modbus_crc(data: bytes) -> int:
    # CRC-16/MODBUS: the byte goes into the LOW half of the register
    reg = 0xFFFF
    for byte in data:
        reg ^= byte
        for _ in range(8):
            reg = (reg >> 1) ^ 0xA001 if reg & 1 else reg >> 1
    return reg


def test_official_example_crc_is_1c80() -> None:
    assert len(EXAMPLE_SEGMENT) == 101
    assert crc16(EXAMPLE_SEGMENT) == 0x1C80


def test_hj212_crc_is_not_modbus_crc() -> None:
    # the two differ on the official example: a MODBUS CRC would be refused by a platform
    assert _modbus_crc(b"123456789") == 0x4B37      # the MODBUS check value
    assert _modbus_crc(EXAMPLE_SEGMENT) != 0x1C80
    assert crc16(b"123456789") != 0x4B37
    frame = EXAMPLE[:-6] + b"%04X\r\n" % _modbus_crc(EXAMPLE_SEGMENT)
    with pytest.raises(Hj212Error, match="CRC"):
        decode(frame)


def test_official_example_round_trips() -> None:
    p = decode(EXAMPLE)
    assert p == EXAMPLE_PACKET
    assert p.flag == VERSION_2017 | FLAG_ACK
    assert parse_cp(p.cp) == [{"RtdInterval": "30"}]
    assert encode(p) == EXAMPLE
    assert segment(p).encode() == EXAMPLE_SEGMENT


def test_length_digits_and_crlf() -> None:
    p = Packet(qn="", st="91", cn="9014", pw="", mn="MN1", flag=4, cp="")
    frame = encode(p)
    assert frame == b"##0035ST=91;CN=9014;MN=MN1;Flag=4;CP=&&&&" + b"%04X" % crc16(
        b"ST=91;CN=9014;MN=MN1;Flag=4;CP=&&&&") + b"\r\n"
    assert frame[2:6] == b"0035" and len(frame) == 35 + 12
    assert decode(frame) == p


def test_split_flag_fields_round_trip() -> None:
    p = Packet(qn="20240101000000000", st="31", cn=CN_MINUTE, pw="123456", mn="MN",
               flag=VERSION_2017 | FLAG_SPLIT, cp="a=1", pnum=3, pno=2)
    assert b";Flag=6;PNUM=3;PNO=2;CP=&&a=1&&" in encode(p)
    assert decode(encode(p)) == p


@pytest.mark.parametrize(("frame", "problem"), [
    (EXAMPLE[:-6] + b"1C81\r\n", "CRC at byte 107: frame says 1C81, the data segment gives 1C80"),
    (b"##0102" + EXAMPLE[6:], "says 102 but the data segment is 101 bytes"),
    (b"##01a1" + EXAMPLE[6:], "length at byte 2"),
    (EXAMPLE[:-2] + b"\n\n", "CRLF"),
    (b"#!" + EXAMPLE[2:], "does not start with '##'"),
    (EXAMPLE[:-6] + b"1CX0\r\n", "not 4 hex digits"),
])
def test_bad_frames_name_the_problem(frame: bytes, problem: str) -> None:
    with pytest.raises(Hj212Error) as err:
        decode(frame)
    assert problem in str(err.value)
    assert isinstance(err.value, CarbonScadaError)


def _frame(seg: bytes) -> bytes:
    return b"##%04d%s%04X\r\n" % (len(seg), seg, crc16(seg))


@pytest.mark.parametrize(("seg", "problem"), [
    (b"QN=20160801085857223;CN=1062;MN=X;Flag=5;CP=&&&&", "field ST: missing"),
    (b"ST=32;MN=X;CP=&&&&", "field CN: missing"),
    (b"ST=32;CN=1062;CP=&&&&", "field MN: missing"),
    (b"ST=32;CN=1062;MN=X;Flag=5", "no 'CP=&&'"),
    (b"ST=32;CN=1062;MN=X;CP=&&a=1", "does not end with '&&'"),
    (b"ST=32;CN=1062;MN=X;XX=1;CP=&&&&", "'XX': unknown field"),
    (b"ST=32;CN=1062;CN=1062;MN=X;CP=&&&&", "CN: given twice"),
    (b"ST=32;CN=10x2;MN=X;CP=&&&&", "CN: '10x2' is not 4 digits"),
    (b"ST=32;CN=1062;MN=X;Flag=q;CP=&&&&", "Flag: 'q' is not a number"),
    (b"ST=32;CN=1062;MN=X;PNUM=2;CP=&&&&", "one given without the other"),
    (b"ST=32;CN=1062;MN=X;PNUM=2;PNO=3;CP=&&&&", "PNO=3 PNUM=2"),
    (b"ST=32;CN=1062;MN=X;junk;CP=&&&&", "'junk': not key=value"),
    ("ST=32;CN=1062;MN=\u00e9;CP=&&&&".encode("latin-1"), "non-ASCII byte at byte 23"),
])
def test_bad_segments_name_the_problem(seg: bytes, problem: str) -> None:
    with pytest.raises(Hj212Error) as err:
        decode(_frame(seg))
    assert problem in str(err.value)


def test_encode_refuses_non_ascii_and_long_segments() -> None:
    with pytest.raises(Hj212Error, match=r"CP.*not printable ASCII"):
        encode(Packet(qn="", st="31", cn="2011", pw="", mn="M", flag=4, cp="a=\u4e8c\u6c27"))
    with pytest.raises(Hj212Error, match="field MN"):
        encode(Packet(qn="", st="31", cn="2011", pw="", mn="M;N", flag=4, cp=""))
    long = Packet(qn="", st="31", cn="2011", pw="", mn="M", flag=4, cp="a=" + "1" * 1024)
    with pytest.raises(Hj212Error, match="over 1024: split"):
        encode(long)


def test_cp_parse_and_format() -> None:
    cp = "DataTime=20160801085857;a05001-Avg=12.5,a05001-Flag=N;a00000-Avg=3.0,a00000-Flag=N"
    groups = parse_cp(cp)
    assert groups == [{"DataTime": "20160801085857"},
                      {"a05001-Avg": "12.5", "a05001-Flag": "N"},
                      {"a00000-Avg": "3.0", "a00000-Flag": "N"}]
    assert format_cp(groups) == cp
    assert parse_cp("") == []
    with pytest.raises(Hj212Error, match="group 2: 'x' is not key=value"):
        parse_cp("a=1;x")
    with pytest.raises(Hj212Error, match="separator"):
        format_cp([{"a": "1;2"}])


def _long_packet(n_groups: int) -> Packet:
    groups = [{"DataTime": "20240101080000"}] + [
        {f"a{i:05d}-Avg": f"{i * 1.25:.3f}", f"a{i:05d}-Max": f"{i * 2.5:.3f}",
         f"a{i:05d}-Flag": "N"} for i in range(n_groups)]
    return Packet(qn="20240101080000123", st="31", cn=CN_MINUTE, pw="123456",
                  mn="010000A8900016F000169DC0", flag=VERSION_2017 | FLAG_ACK, cp=format_cp(groups))


def test_split_long_cp_and_join() -> None:
    p = _long_packet(60)
    assert len(segment(p)) > 3 * MAX_SEGMENT
    pieces = split(p)
    assert len(pieces) >= 4
    n = len(pieces)
    for i, q in enumerate(pieces):
        frame = encode(q)                     # each piece is a valid frame
        assert len(frame) - 12 <= MAX_SEGMENT
        assert (q.pnum, q.pno) == (n, i + 1)
        assert q.flag == VERSION_2017 | FLAG_ACK | FLAG_SPLIT
        assert q.qn == p.qn
        assert f";PNUM={n};PNO={i + 1};CP=&&".encode() in frame
        parse_cp(q.cp)                       # cut between groups, never inside one
        assert decode(frame) == q
    assert ";".join(q.cp for q in pieces) == p.cp
    shuffled = list(reversed(pieces))
    assert join(shuffled) == p
    with pytest.raises(Hj212Error, match="has pieces"):
        join(pieces[:-1])
    # a packet that fits comes back as it is
    assert split(EXAMPLE_PACKET) == [EXAMPLE_PACKET]


def test_split_small_limit_and_oversized_group() -> None:
    p = _long_packet(5)
    pieces = split(p, max_segment=200)
    assert all(len(segment(q)) <= 200 for q in pieces) and join(pieces) == p
    with pytest.raises(Hj212Error, match="does not fit"):
        split(Packet(qn="", st="31", cn="2011", pw="", mn="M", flag=4, cp="a=" + "1" * 300),
              max_segment=200)


def test_times_in_plant_local_time() -> None:
    t = datetime(2016, 8, 1, 0, 58, 57, 223000, tzinfo=UTC)   # 08:58:57 in Shanghai (UTC+8)
    assert hj_time(t, "Asia/Shanghai") == "20160801085857"
    assert hj_qn(t, "Asia/Shanghai") == "20160801085857223"
    assert parse_hj_time("20160801085857", "Asia/Shanghai") == t.replace(microsecond=0)
    assert parse_hj_time("20160801085857223", "Asia/Shanghai") == t
    # the day boundary moves: 16:30 UTC is the next day in Shanghai
    assert hj_time(datetime(2024, 12, 31, 16, 30, tzinfo=UTC), "Asia/Shanghai") == "20250101003000"
    with pytest.raises(Hj212Error, match="naive"):
        hj_time(datetime(2024, 1, 1), "Asia/Shanghai")
    with pytest.raises(Hj212Error, match="not yyyyMMddHHmmss"):
        parse_hj_time("2016080108585", "Asia/Shanghai")
    with pytest.raises(Hj212Error, match=r"20161301085857.*month must be in 1\.\.12"):
        parse_hj_time("20161301085857", "Asia/Shanghai")
    with pytest.raises(Hj212Error, match="time zone"):
        hj_time(t, "Mars/Olympus")


def _packets(items: list[Packet | Hj212Error]) -> list[Packet]:
    return [x for x in items if isinstance(x, Packet)]


def test_reader_fragmented_and_concatenated_with_garbage() -> None:
    other = Packet(qn="", st="91", cn="9014", pw="", mn="MN", flag=4, cp="")
    stream = (b"\x00\xffjunk##" + EXAMPLE + b"#garbage##12" + encode(other) + b"\r\n"
              + EXAMPLE[:-6] + b"0000\r\n" + EXAMPLE)
    whole = FrameReader().feed(stream)
    assert _packets(whole) == [EXAMPLE_PACKET, other, EXAMPLE_PACKET]
    errors = [str(x) for x in whole if isinstance(x, Hj212Error)]
    assert any("CRC" in e for e in errors) and any("garbage" in e for e in errors)
    assert [str(e) for e in whole if isinstance(e, Hj212Error)][:1] == [
        "HJ 212 stream: 6 bytes of garbage at stream byte 0 skipped"]
    for size in (1, 2, 7, 50):
        reader = FrameReader()
        got: list[Packet | Hj212Error] = []
        for i in range(0, len(stream), size):
            got += reader.feed(stream[i:i + size])
        assert _packets(got) == [EXAMPLE_PACKET, other, EXAMPLE_PACKET]
        assert [str(x) for x in got] == [str(x) for x in whole]   # chunking changes nothing


def test_reader_bounds_a_frame_without_crlf() -> None:
    reader = FrameReader()
    got = reader.feed(b"##0100" + b"x" * 2000)
    assert any("no CRLF within 1036 bytes" in str(e) for e in got)
    assert len(reader._buf) < 1036
    assert _packets(reader.feed(EXAMPLE)) == [EXAMPLE_PACKET]


# --- fuzz: only Hj212Error escapes, and a good frame after garbage is always recovered ---

def _mutate(data: bytes, rnd: random.Random) -> bytes:
    b = bytearray(data)
    for _ in range(rnd.randint(1, 4)):
        op = rnd.randint(0, 2)
        i = rnd.randrange(len(b) + 1)
        if op == 0 and b:
            b[min(i, len(b) - 1)] = rnd.randrange(256)
        elif op == 1:
            b[i:i] = bytes([rnd.randrange(256)])
        elif b:
            del b[min(i, len(b) - 1)]
    return bytes(b)


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=1200))
def test_fuzz_decode_random_bytes(data: bytes) -> None:
    for frame in (data, b"##" + data, b"##%04d" % max(len(data) - 6, 0) + data):
        with contextlib.suppress(Hj212Error):
            decode(frame)
    assert all(isinstance(x, Packet | Hj212Error) for x in FrameReader().feed(data))


@FUZZ
@given(st.integers(0, 2**32))
def test_fuzz_decode_mutated_frames(seed: int) -> None:
    rnd = random.Random(seed)
    base = rnd.choice([EXAMPLE, encode(_long_packet(3)), *map(encode, split(_long_packet(40)))])
    frame = _mutate(base, rnd)
    try:
        p = decode(frame)
    except Hj212Error:
        return
    assert decode(encode(p)) == p


@FUZZ
@given(st.binary(max_size=1500), st.integers(0, 2**32))
def test_fuzz_reader_recovers_after_garbage(garbage: bytes, seed: int) -> None:
    rnd = random.Random(seed)
    garbage = garbage + _mutate(EXAMPLE, rnd)
    stream = garbage + EXAMPLE
    reader = FrameReader()
    got: list[Packet | Hj212Error] = []
    i = 0
    while i < len(stream):
        n = rnd.randint(1, 300)
        got += reader.feed(stream[i:i + n])
        i += n
    assert all(isinstance(x, Packet | Hj212Error) for x in got)
    assert got and got[-1] == EXAMPLE_PACKET
    assert [str(x) for x in got] == [str(x) for x in FrameReader().feed(stream)]
    assert len(reader._buf) <= 1036
