"""DL/T 645 codec and simulated meter, against the frames of protocol_vectors.md."""

from __future__ import annotations

import contextlib
import math
import random
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.dlt645 import (
    BLOCKS_2007,
    Meter,
    Version,
    decode_address_reply,
    decode_frame,
    decode_reply,
    decode_value,
    decode_values,
    describe_error,
    encode_read,
    encode_read_address,
    encode_read_next,
    encode_value,
    find_frame,
    format_address,
    parse_address,
    parse_di,
)
from model.errors import ProtocolError


def h(text: str) -> bytes:
    return bytes.fromhex(text)


PRE = h("FE FE FE FE")
ADDR = "000000000161"

# ../shared/reference/protocol_vectors.md, DL/T 645 section
REQ_ENERGY = h("68 61 01 00 00 00 00 68 11 04 33 33 34 33 14 16")
REP_ENERGY = h("68 61 01 00 00 00 00 68 91 08 33 33 34 33 59 33 33 33 8A 16")  # 0.26 kWh
REQ_VOLTAGE = h("68 61 01 00 00 00 00 68 11 04 33 34 34 35 17 16")
REP_VOLTAGE = h("68 61 01 00 00 00 00 68 91 06 33 34 34 35 34 43 10 16")  # 100.1 V
REQ_ADDRESS = h("FE FE FE FE 68 AA AA AA AA AA AA 68 13 00 DF 16")
REP_ABNORMAL = h("68 61 01 00 00 00 00 68 D1 01 35 39 16")  # ERR 0x02
REQ_1997 = h("68 03 00 00 00 00 00 68 01 02 44 E9 03 16")
REP_1997 = h("68 03 00 00 00 00 00 68 81 04 44 E9 33 34 EC 16")  # 100 V

ENERGY, VOLTAGE_A = 0x00010000, 0x02010100
VOLTAGES = 0x0201FF00


def build(address: bytes, control: int, data: bytes) -> bytes:
    """A frame with a correct checksum, built independently of the module under test."""
    body = bytes([0x68, *address, 0x68, control, len(data), *((b + 0x33) & 0xFF for b in data)])
    return body + bytes([sum(body) % 256, 0x16])


WIRE_161 = h("61 01 00 00 00 00")


def vector_meter() -> Meter:
    return Meter(ADDR, "2007", {ENERGY: lambda t: 0.26, VOLTAGE_A: lambda t: 100.1})


# --- requests ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("address", "di", "version", "vector"), [
    (ADDR, ENERGY, "2007", REQ_ENERGY),
    (ADDR, VOLTAGE_A, "2007", REQ_VOLTAGE),
    ("000000000003", 0xB611, "1997", REQ_1997),
])
def test_encode_read_matches_vectors(address: str, di: int, version: Version,
                                     vector: bytes) -> None:
    assert encode_read(address, di, version, preamble=0) == vector
    assert encode_read(address, di, version) == PRE + vector


def test_encode_read_address_matches_vector() -> None:
    assert encode_read_address() == REQ_ADDRESS
    assert encode_read_address(preamble=0) == REQ_ADDRESS[4:]


def test_encode_read_next_carries_di_and_seq() -> None:
    f = decode_frame(encode_read_next(ADDR, VOLTAGES, 3))
    assert (f.address, f.control, f.data) == (ADDR, 0x12, h("00 FF 01 02 03"))
    with pytest.raises(ValueError, match="sequence number 256"):
        encode_read_next(ADDR, VOLTAGES, 256)


def test_encode_read_rejects_di_too_wide() -> None:
    with pytest.raises(ValueError, match="DI 0x10000 does not fit the 2 bytes"):
        encode_read(ADDR, 0x10000, "1997")


# --- addresses and DIs ------------------------------------------------------------------------

def test_parse_and_format_address() -> None:
    assert parse_address(ADDR) == WIRE_161
    assert parse_address("AAAAAAAAAAAA") == b"\xaa" * 6
    assert parse_address("aaaaaaaa0161") == h("61 01 AA AA AA AA")
    assert format_address(h("61 01 AA AA AA AA")) == "AAAAAAAA0161"
    assert format_address(h("1F 00 00 00 00 00")) == "00000000001F"  # not BCD: shown as hex


@pytest.mark.parametrize(("text", "message"), [
    ("00000000161", "must have 12 characters, has 11"),
    ("0000000001610", "must have 12 characters, has 13"),
    ("00000000016A", "pair '6A' is neither two decimal digits nor the wildcard AA"),
    ("0000000001٦1", "pair '٦1' is neither"),
    ("A00000000161", "pair 'A0'"),
])
def test_parse_address_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_address(text)


@given(st.lists(st.one_of(st.integers(0, 99).map(lambda n: f"{n:02d}"), st.just("AA")),
                min_size=6, max_size=6))
def test_address_round_trip(pairs: list[str]) -> None:
    text = "".join(pairs)
    assert format_address(parse_address(text)) == text


def test_parse_di() -> None:
    assert parse_di("00010000", "2007") == ENERGY
    assert parse_di("0201ff00", "2007") == VOLTAGES
    assert parse_di("B611", "1997") == 0xB611
    with pytest.raises(ValueError, match="must be 8 hex digits for DL/T 645-2007"):
        parse_di("B611", "2007")
    with pytest.raises(ValueError, match="must be 4 hex digits for DL/T 645-1997"):
        parse_di("00010000", "1997")
    with pytest.raises(ValueError, match="must be 4 hex digits"):
        parse_di("B61G", "1997")
    with pytest.raises(ValueError, match="unknown DL/T 645 version '2009'"):
        parse_di("B611", "2009")  # type: ignore[arg-type]


# --- replies ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("vector", "address", "di", "version", "value", "unit", "data"), [
    (REP_ENERGY, ADDR, ENERGY, "2007", 0.26, "kWh", h("26 00 00 00")),
    (REP_VOLTAGE, ADDR, VOLTAGE_A, "2007", 100.1, "V", h("01 10")),
    (REP_1997, "000000000003", 0xB611, "1997", 100.0, "V", h("00 01")),
])
def test_decode_reply_vectors(vector: bytes, address: str, di: int, version: Version,
                              value: float, unit: str, data: bytes) -> None:
    for frame in (vector, PRE + vector):
        r = decode_reply(frame, address=address, di=di, version=version)
        assert (r.value, r.unit, r.data, r.more, r.seq, r.values) == (
            value, unit, data, False, None, (value,))


def test_decode_abnormal_vector() -> None:
    with pytest.raises(ProtocolError, match=r"^abnormal reply: ERR 0x02 no requested data$"):
        decode_reply(REP_ABNORMAL, address=ADDR, di=ENERGY, version="2007")


def test_describe_error_words() -> None:
    assert describe_error(0x02, "2007") == "ERR 0x02 no requested data"
    assert describe_error(0x45, "2007") == (
        "ERR 0x45 other error, password error / unauthorised, tariffs exceeded")
    assert describe_error(0x0C, "2007") == (
        "ERR 0x0C password error / unauthorised, baud rate cannot be changed")
    assert describe_error(0x30, "2007") == (
        "ERR 0x30 annual time zones exceeded, daily time slots exceeded")
    assert describe_error(0x03, "1997") == "ERR 0x03 illegal data, data identifier error"
    assert describe_error(0x04, "1997") == "ERR 0x04 password error"
    assert describe_error(0x00, "2007") == "ERR 0x00 (no error bit set)"


def test_decode_abnormal_1997() -> None:
    frame = build(h("03 00 00 00 00 00"), 0xC1, b"\x02")
    with pytest.raises(ProtocolError, match="abnormal reply: ERR 0x02 data identifier error"):
        decode_reply(frame, address="000000000003", di=0xB611, version="1997")


def test_reply_wildcard_request_address_matches() -> None:
    for pattern in ("AAAAAAAAAAAA", "AAAAAAAAAA61", "00000000AA61"):
        r = decode_reply(REP_ENERGY, address=pattern, di=ENERGY, version="2007")
        assert r.value == 0.26


@pytest.mark.parametrize(("frame", "address", "di", "message"), [
    (REP_ENERGY, "000000000162", ENERGY,
     "reply from meter 000000000161, expected 000000000162"),
    (build(h("62 01 00 00 00 00"), 0x91, h("00 00 01 00 26 00 00 00")), ADDR, ENERGY,
     "reply from meter 000000000162, expected 000000000161"),
    (REP_ENERGY, "AAAAAAAAAA62", ENERGY, "reply from meter 000000000161, expected AAAAAAAAAA62"),
    (REP_VOLTAGE, ADDR, ENERGY, "reply for DI 02010100, expected DI 00010000"),
    (REQ_ENERGY, ADDR, ENERGY, "not a reply: control 0x11 is a request"),
    (build(WIRE_161, 0x93, WIRE_161), ADDR, ENERGY,
     "reply to another function: control 0x93, expected function 0x11"),
    (build(WIRE_161, 0x91, h("00 00 01 00 26 00 3A 00")), ADDR, ENERGY,
     r"invalid BCD digit in value byte 2 \(0x3A\) of DI 00010000"),
    (build(WIRE_161, 0x91, h("00 01 01 02 0F 10")), ADDR, VOLTAGE_A,
     r"invalid BCD digit in value byte 0 \(0x0F\) of DI 02010100"),
    (build(WIRE_161, 0x91, h("00 00 01 00 26 00 00")), ADDR, ENERGY,
     "data too short for DI 00010000: 3 bytes, its format needs 4"),
    (build(WIRE_161, 0x91, h("00 00")), ADDR, ENERGY,
     "reply too short: 2 data bytes, expected the 4-byte DI"),
    (REP_ENERGY[:-2] + b"\x8b\x16", ADDR, ENERGY, "^bad checksum: got 0x8B, computed 0x8A$"),
    (build(WIRE_161, 0xD1, b""), ADDR, ENERGY, "abnormal reply without an error byte"),
])
def test_decode_reply_errors_name_the_problem(frame: bytes, address: str, di: int,
                                              message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        decode_reply(frame, address=address, di=di, version="2007")


def test_decode_reply_unknown_di_gives_raw_data() -> None:
    frame = build(WIRE_161, 0x91, h("01 00 00 04 AB CD"))
    r = decode_reply(frame, address=ADDR, di=0x04000001, version="2007")
    assert (r.value, r.unit, r.data, r.values) == (None, "", h("AB CD"), ())


def test_decode_reply_follow_up_checks_seq() -> None:
    frame = build(WIRE_161, 0x92, h("00 FF 01 02 01 22 02"))
    r = decode_reply(frame, address=ADDR, di=VOLTAGES, version="2007", seq=2)
    assert (r.value, r.unit, r.data, r.more, r.seq) == (None, "V", h("01 22"), False, 2)
    with pytest.raises(ProtocolError, match="follow-up reply carries sequence 2, expected 1"):
        decode_reply(frame, address=ADDR, di=VOLTAGES, version="2007", seq=1)
    with pytest.raises(ProtocolError, match="control 0x92, expected function 0x11"):
        decode_reply(frame, address=ADDR, di=VOLTAGES, version="2007")


# --- frames -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("frame", "message"), [
    (h("68 61 01 00 00"), "frame too short: 5 bytes"),
    (h("FE FE 69") + REP_ENERGY[1:], r"frame does not start with 0x68 \(got 0x69\)"),
    (REP_ENERGY[:7] + b"\x00" + REP_ENERGY[8:], r"no second 0x68 after the address \(got 0x00\)"),
    (REP_ENERGY + b"\x16", "length byte says 8 data bytes, frame carries 9"),
    (REP_ENERGY[:-1] + b"\x17", r"frame does not end with 0x16 \(got 0x17\)"),
    (REP_ENERGY[:-2] + b"\x8b\x16", "bad checksum: got 0x8B, computed 0x8A"),
])
def test_decode_frame_errors(frame: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        decode_frame(frame)


def test_decode_frame_removes_offset() -> None:
    f = decode_frame(PRE + REP_VOLTAGE)
    assert (f.address, f.control, f.data) == (ADDR, 0x91, h("00 01 01 02 01 10"))


def test_find_frame_skips_preamble_and_garbage() -> None:
    assert find_frame(PRE + REP_ENERGY) == (4, 4 + len(REP_ENERGY))
    # garbage with false starts: a lone 0x68, 0x68 without a second 0x68, wrong end byte
    garbage = h("00 68 12 FF 68 01 02 03 04 05 06 68 91 00 00 00 68 00")
    assert garbage.count(0x68) == 4
    buf = garbage + PRE + REP_ENERGY
    start = len(garbage) + 4
    assert find_frame(buf) == (start, start + len(REP_ENERGY))
    assert find_frame(bytearray(buf)) == (start, start + len(REP_ENERGY))


def test_find_frame_back_to_back() -> None:
    buf = PRE + REP_ENERGY + REP_VOLTAGE + PRE + REP_ABNORMAL
    frames = []
    while (span := find_frame(buf)) is not None:
        frames.append(buf[span[0]:span[1]])
        buf = buf[span[1]:]
    assert frames == [REP_ENERGY, REP_VOLTAGE, REP_ABNORMAL]
    assert buf == b""


@pytest.mark.parametrize("stream", [PRE + REP_ENERGY, b"\x00\x68" + REP_VOLTAGE, REQ_ADDRESS])
def test_find_frame_every_split_point(stream: bytes) -> None:
    start = len(stream) - stream[::-1].index(0x68) - 8  # first 0x68 of the real frame
    for cut in range(len(stream)):
        assert find_frame(stream[:cut]) is None, cut
        assert find_frame(stream[:cut] + stream[cut:]) == (start, len(stream))


def test_find_frame_byte_by_byte() -> None:
    buf = bytearray()
    found = []
    for b in b"\x55" + PRE + REP_ENERGY + PRE + REP_1997:
        buf.append(b)
        if (span := find_frame(buf)) is not None:
            found.append(bytes(buf[span[0]:span[1]]))
            del buf[:span[1]]
    assert found == [REP_ENERGY, REP_1997]


def test_find_frame_bad_checksum_found_then_rejected() -> None:
    bad = REP_ENERGY[:-2] + b"\x8b\x16"
    span = find_frame(PRE + bad)
    assert span == (4, 4 + len(bad))
    with pytest.raises(ProtocolError, match="bad checksum: got 0x8B, computed 0x8A"):
        decode_frame((PRE + bad)[span[0]:span[1]])


def test_find_frame_linear_on_long_garbage() -> None:
    rng = random.Random(645)
    noise = bytes(rng.randrange(256) for _ in range(200_000)).replace(b"\x16", b"\x00")
    worst = b"\x68" * 200_000  # every byte a candidate whose end byte is wrong
    t0 = time.perf_counter()
    assert find_frame(noise + PRE + REP_ENERGY) == (len(noise) + 4,
                                                    len(noise) + 4 + len(REP_ENERGY))
    assert find_frame(worst) is None
    assert find_frame(worst + b"\x00" * 120 + REP_ENERGY) is not None
    assert time.perf_counter() - t0 < 2.0


# --- values -----------------------------------------------------------------------------------

# (di, version, smallest, largest, decimals, unit)
FORMATS: list[tuple[int, Version, float, float, int, str]] = [
    (0x00000000, "2007", -799999.99, 799999.99, 2, "kWh"),
    (0x00010000, "2007", 0, 999999.99, 2, "kWh"),
    (0x00020103, "2007", 0, 999999.99, 2, "kWh"),
    (0x00030000, "2007", -799999.99, 799999.99, 2, "kvarh"),
    (0x00080000, "2007", 0, 999999.99, 2, "kvarh"),
    (0x000A0000, "2007", 0, 999999.99, 2, "kVAh"),
    (0x02010300, "2007", 0, 999.9, 1, "V"),
    (0x02020100, "2007", -799.999, 799.999, 3, "A"),
    (0x02030000, "2007", -79.9999, 79.9999, 4, "kW"),
    (0x02040200, "2007", -79.9999, 79.9999, 4, "kvar"),
    (0x02050300, "2007", -79.9999, 79.9999, 4, "kVA"),
    (0x02060000, "2007", -7.999, 7.999, 3, ""),
    (0x02800002, "2007", 0, 99.99, 2, "Hz"),
    (0x9010, "1997", 0, 999999.99, 2, "kWh"),
    (0x9024, "1997", 0, 999999.99, 2, "kWh"),
    (0xB611, "1997", 0, 999, 0, "V"),
    (0xB623, "1997", 0, 99.99, 2, "A"),
    (0xB630, "1997", 0, 99.9999, 4, "kW"),
    (0xB650, "1997", 0, 9.999, 3, ""),
]


@pytest.mark.parametrize(("di", "version", "data", "value", "unit"), [
    (0x00000000, "2007", h("26 00 00 80"), -0.26, "kWh"),
    (0x02020100, "2007", h("00 50 80"), -5.0, "A"),
    (0x02020100, "2007", h("56 34 12"), 123.456, "A"),
    (0x02030000, "2007", h("34 12 00"), 0.1234, "kW"),
    (0x02060000, "2007", h("00 90"), -1.0, ""),
    (0x02800002, "2007", h("00 50"), 50.0, "Hz"),
    (0xB621, "1997", h("50 12"), 12.5, "A"),
    (0x00010000, "2007", h("99 99 99 99"), 999999.99, "kWh"),
])
def test_decode_value_table(di: int, version: Version, data: bytes, value: float,
                            unit: str) -> None:
    assert decode_value(di, data, version) == (value, unit)
    assert encode_value(di, value, version) == data


def test_decode_value_unknown_di() -> None:
    assert decode_value(0x04000401, h("12 34"), "2007") is None
    assert decode_value(VOLTAGES, h("00 22 00 22 00 22"), "2007") is None  # block
    assert decode_value(0xC032, h("12 34"), "1997") is None
    assert decode_value(0x02010000, h("00 22"), "2007") is None  # no phase 0 voltage


def test_decode_values_block() -> None:
    assert decode_values(VOLTAGES, h("01 22 12 22 99 21"), "2007") == ((220.1, 221.2, 219.9),
                                                                        "V")
    assert decode_values(0x0203FF00, h("00 00 00 00 00 80 00 00 00 00 01 00"), "2007") == (
        (0.0, -0.0, 0.0, 0.01), "kW")
    with pytest.raises(ProtocolError, match="data too short for DI 0201FF00: 4 bytes, its "
                                            "format needs 6"):
        decode_values(VOLTAGES, h("01 22 12 22"), "2007")
    with pytest.raises(ProtocolError, match=r"invalid BCD digit in value byte 1 \(0xA2\) of "
                                            "item 2 of DI 0201FF00"):
        decode_values(VOLTAGES, h("01 22 12 22 99 A2"), "2007")
    assert set(BLOCKS_2007) == {0x0201FF00, 0x0202FF00, 0x0203FF00, 0x0204FF00, 0x0205FF00,
                                0x0206FF00}


@pytest.mark.parametrize(("di", "version", "value", "message"), [
    (0x02010100, "2007", 1000.0, r"value 1000.0 out of range for DI 02010100 \(XXX.X V: 0 to "
                                 r"999.9\)"),
    (0x02010100, "2007", -1.0, "out of range"),
    (0x02060000, "2007", 8.0, r"\(X.XXX: -7.999 to 7.999\)"),
    (0xB611, "1997", 1000, r"\(XXX V: 0 to 999\)"),
    (0x02010100, "2007", math.nan, "cannot encode nan"),
    (0x04000401, "2007", 1.0, "no value format for DI 04000401"),
    (VOLTAGES, "2007", 220.0, "no value format for DI 0201FF00"),
])
def test_encode_value_rejects(di: int, version: Version, value: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encode_value(di, value, version)


@pytest.mark.parametrize(("di", "version", "lo", "hi", "decimals", "unit"), FORMATS)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_value_round_trip(di: int, version: Version, lo: float, hi: float, decimals: int,
                          unit: str, data: st.DataObject) -> None:
    scale = 10 ** decimals
    n = data.draw(st.integers(round(lo * scale), round(hi * scale)))
    exact = n / scale
    assert decode_value(di, encode_value(di, exact, version), version) == (exact, unit)
    v = data.draw(st.floats(lo, hi))
    got = decode_value(di, encode_value(di, v, version), version)
    assert got is not None
    assert abs(got[0] - v) <= 0.5 / scale + 1e-9 * max(1.0, abs(v))
    with pytest.raises(ValueError, match="out of range"):
        encode_value(di, hi + 1 / scale, version)
    with pytest.raises(ValueError, match="out of range"):
        encode_value(di, lo - 1 / scale, version)


# --- simulated meter --------------------------------------------------------------------------

def test_meter_reproduces_vectors() -> None:
    meter = vector_meter()
    assert meter.handle(REQ_ENERGY, 0.0) == PRE + REP_ENERGY
    assert meter.handle(PRE + REQ_VOLTAGE, 0.0) == PRE + REP_VOLTAGE
    unknown = encode_read(ADDR, 0x02800002, "2007")
    assert meter.handle(unknown, 0.0) == PRE + REP_ABNORMAL
    m1997 = Meter("000000000003", "1997", {0xB611: lambda t: 100})
    assert m1997.handle(REQ_1997, 0.0) == PRE + REP_1997


def test_meter_read_address() -> None:
    reply = vector_meter().handle(REQ_ADDRESS, 0.0)
    assert reply == PRE + build(WIRE_161, 0x93, WIRE_161)
    assert decode_address_reply(reply) == ADDR
    with pytest.raises(ProtocolError, match="control 0x91, expected function 0x13"):
        decode_address_reply(REP_ENERGY)


def test_meter_value_follows_time() -> None:
    meter = Meter(ADDR, "2007", {VOLTAGE_A: lambda t: 220 + t % 10})
    r = decode_reply(meter.handle(encode_read(ADDR, VOLTAGE_A, "2007"), 1_700_000_003.0) or b"",
                     address=ADDR, di=VOLTAGE_A, version="2007")
    assert r.value == 223.0


def test_meter_addressing() -> None:
    meter = vector_meter()
    for other in ("000000000162", "999999999999", "AAAAAAAAAA62"):
        assert meter.handle(encode_read(other, ENERGY, "2007"), 0.0) is None
    for wildcard in ("AAAAAAAAAAAA", "AAAAAAAA0161", "0000000001AA"):
        reply = meter.handle(encode_read(wildcard, ENERGY, "2007"), 0.0)
        assert reply == PRE + REP_ENERGY
    assert meter.handle(REP_ENERGY, 0.0) is None  # another meter's reply on the bus
    assert meter.handle(REQ_ENERGY[:-2] + b"\x15\x16", 0.0) is None  # bad checksum
    assert meter.handle(REQ_1997, 0.0) is None
    assert meter.handle(build(WIRE_161, 0x08, h("00 00 00 01 01 24")), 0.0) is None


def test_meter_follow_up_frames() -> None:
    volts = {0x02010100: 220.1, 0x02010200: 221.2, 0x02010300: 219.9}
    meter = Meter(ADDR, "2007", {di: (lambda t, v=v: v) for di, v in volts.items()},
                  max_data_per_frame=6)
    reply = meter.handle(encode_read(ADDR, VOLTAGES, "2007"), 0.0)
    assert reply is not None
    r = decode_reply(reply, address=ADDR, di=VOLTAGES, version="2007")
    assert (r.more, r.seq, r.value, r.unit) == (True, None, None, "V")
    data, seq = r.data, 0
    while r.more:
        seq += 1
        reply = meter.handle(encode_read_next(ADDR, VOLTAGES, seq), 0.0)
        assert reply is not None and len(decode_frame(reply).data) <= 6
        r = decode_reply(reply, address=ADDR, di=VOLTAGES, version="2007", seq=seq)
        data += r.data
    assert seq == 4  # 2 value bytes in the first frame, then 1 per follow-up
    assert decode_values(VOLTAGES, data, "2007") == ((220.1, 221.2, 219.9), "V")
    with pytest.raises(ProtocolError, match="ERR 0x02 no requested data"):
        decode_reply(meter.handle(encode_read_next(ADDR, VOLTAGES, 5), 0.0) or b"",
                     address=ADDR, di=VOLTAGES, version="2007", seq=5)


def test_meter_block_in_one_frame() -> None:
    meter = Meter(ADDR, "2007", {0x02060000 + p * 0x100: (lambda t, p=p: -0.25 * p)
                                 for p in range(4)})
    reply = meter.handle(encode_read(ADDR, 0x0206FF00, "2007"), 0.0)
    r = decode_reply(reply or b"", address=ADDR, di=0x0206FF00, version="2007")
    assert (r.value, r.values, r.more, r.unit) == (None, (0.0, -0.25, -0.5, -0.75), False, "")
    # a block whose members the meter does not all have
    with pytest.raises(ProtocolError, match="ERR 0x02 no requested data"):
        decode_reply(meter.handle(encode_read(ADDR, VOLTAGES, "2007"), 0.0) or b"",
                     address=ADDR, di=VOLTAGES, version="2007")


def test_meter_rejects_bad_setup() -> None:
    with pytest.raises(ValueError, match="concrete address"):
        Meter("AAAAAAAA0161", "2007", {})
    with pytest.raises(ValueError, match="no value format for DI 04000401"):
        Meter(ADDR, "2007", {0x04000401: lambda t: 1.0})
    with pytest.raises(ValueError, match=r"max_data_per_frame must be 6\.\.255, got 5"):
        Meter(ADDR, "2007", {}, max_data_per_frame=5)
    with pytest.raises(ValueError, match="out of range for DI 02010100"):
        Meter(ADDR, "2007", {VOLTAGE_A: lambda t: 1e6}).handle(REQ_VOLTAGE, 0.0)


# --- fuzzing ----------------------------------------------------------------------------------

@settings(max_examples=400)
@given(st.binary(max_size=300))
def test_fuzz_find_frame(buf: bytes) -> None:
    span = find_frame(buf)
    if span is not None:
        start, end = span
        assert buf[start] == 0x68 and buf[start + 7] == 0x68 and buf[end - 1] == 0x16
        assert end - start == 12 + buf[start + 9]
    # a valid frame after arbitrary bytes without 0x68 is always found
    clean = buf.replace(b"\x68", b"")
    assert find_frame(clean + REP_ENERGY) == (len(clean), len(clean) + len(REP_ENERGY))


def _decode_everything(frame: bytes) -> None:
    for call in (
        lambda: decode_frame(frame),
        lambda: decode_address_reply(frame),
        lambda: decode_reply(frame, address=ADDR, di=ENERGY, version="2007"),
        lambda: decode_reply(frame, address="AAAAAAAAAAAA", di=VOLTAGES, version="2007"),
        lambda: decode_reply(frame, address="AAAAAAAAAAAA", di=VOLTAGES, version="2007", seq=1),
        lambda: decode_reply(frame, address="AAAAAAAAAAAA", di=0xB611, version="1997"),
    ):
        with contextlib.suppress(ProtocolError):
            call()


@settings(max_examples=400)
@given(st.binary(max_size=80))
def test_fuzz_decode_arbitrary_bytes(buf: bytes) -> None:
    _decode_everything(buf)
    _decode_everything(b"\x68" + buf)


@settings(max_examples=400)
@given(st.sampled_from([WIRE_161, b"\xaa" * 6, h("03 00 00 00 00 00"), h("1F FF 00 00 00 00")]),
       st.integers(0, 255),
       st.one_of(st.binary(max_size=12),
                 st.sampled_from([h("00 00 01 00"), h("00 FF 01 02"), h("11 B6")]).flatmap(
                     lambda di: st.binary(max_size=10).map(lambda rest: di + rest))))
def test_fuzz_decode_valid_frames(address: bytes, control: int, data: bytes) -> None:
    frame = build(address, control, data)
    _decode_everything(frame)
    for meter in (vector_meter(), Meter("000000000003", "1997", {0xB611: lambda t: 230})):
        reply = meter.handle(frame, 0.0)
        if reply is not None:
            assert find_frame(reply) == (4, len(reply))
            decode_frame(reply)
