"""CJ/T 188-2004 codec and simulated meter, against the vectors of protocol_vectors.md."""

from __future__ import annotations

import contextlib
import time
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.cjt188 import (
    COLD_WATER,
    ELECTRICITY,
    GAS,
    HEAT,
    HEAT_COOLING,
    HOT_WATER,
    Meter,
    Reading,
    decode_frame,
    decode_reply,
    encode_read,
    find_frame,
    format_address,
    from_bcd,
    meter_kind,
    parse_address,
    reading_values,
    to_bcd,
)
from model.errors import ProtocolError

# ../shared/reference/protocol_vectors.md, CJ/T 188-2004
V1_REQ = bytes.fromhex("FE FE FE FE 68 10 44 33 22 11 00 33 78 01 03 1F 90 00 80 16")
V1_REPLY = bytes.fromhex(
    "FE FE FE FE 68 10 44 33 22 11 00 33 78 81 16 1F 90 00 00 77 66 55 2C 00 77 66 55 2C"
    " 31 01 22 11 05 15 20 21 84 13 16")
V2_REQ = bytes.fromhex("68 10 12 00 00 00 00 00 00 01 03 90 1F 00 3D 16")
V2_REPLY = bytes.fromhex(
    "FE FE FE 68 10 12 00 00 00 00 00 00 81 16 90 1F 00 10 00 10 00 2C 10 00 10 00 2C"
    " 00 00 00 00 00 00 00 00 FF 67 16")
V1_ADDR = "78330011223344"
V2_ADDR = "00000000000012"
V1 = V1_REPLY[4:]  # the reply frame from its 0x68
V2 = V2_REPLY[3:]

# A heat-meter (T 0x20) 901F reply written by hand from the standard's layout; the
# checksum 0xF6 is the byte sum from 68 through the status, mod 256.
HEAT_ADDR = "12345678901234"
HEAT_REPLY = bytes.fromhex(
    "68 20 34 12 90 78 56 34 12 81 2E"  # header, address sent A0 first, L = 46
    " 1F 90 05"  # DI 901F low byte first, SER 5
    " 56 34 12 00 08"  # settlement-day heat 1234.56 MWh
    " 00 00 36 00 0E"  # current heat 3600.00 MJ
    " 50 12 00 00 17"  # heat power 12.50 kW
    " 45 23 01 00 35"  # flow rate 1.2345 m³/h (XXXX.XXXX)
    " 89 67 45 00 2C"  # cumulative volume 4567.89 m³
    " 30 75 00"  # supply temperature 75.30 °C
    " 12 45 00"  # return temperature 45.12 °C
    " 60 87 00"  # working hours 8760 h
    " 45 30 08 15 03 24 20"  # clock ss mm hh DD MM YY YY: 2024-03-15 08:30:45
    " 05 00"  # ST1 0x05: D0-D1 = 01 valve closed, D2 = 1 battery low
    " F6 16")

UTC8 = timezone(timedelta(hours=8))
V1_NOW = datetime(2015, 5, 11, 22, 1, 31, tzinfo=UTC8).timestamp()
NOW = datetime(2024, 3, 15, 8, 30, 45, tzinfo=UTC8).timestamp()


def rebuild(frame: bytes, index: int, value: int) -> bytes:
    """`frame` (from its 0x68) with one byte replaced and the checksum recomputed."""
    body = bytearray(frame[:-2])
    body[index] = value
    return bytes(body) + bytes([sum(body) & 0xFF, 0x16])


def with_checksum(body: bytes) -> bytes:
    return body + bytes([sum(body) & 0xFF, 0x16])


# --- reference vectors --------------------------------------------------------------------

def test_vector1_request() -> None:
    assert encode_read(COLD_WATER, V1_ADDR) == V1_REQ


def test_vector2_request_high_first_without_preamble() -> None:
    assert encode_read(COLD_WATER, V2_ADDR, di_order="high_first", preamble=0) == V2_REQ


def test_vector1_reply() -> None:
    r = decode_reply(V1_REPLY, meter_type=COLD_WATER, address=V1_ADDR)
    assert r.meter_type == COLD_WATER
    assert r.address == V1_ADDR
    assert r.current_volume_m3 == 556677.0
    assert r.settlement_volume_m3 == 556677.0
    assert r.clock == datetime(2015, 5, 11, 22, 1, 31)
    assert r.raw_units == {"current_volume_m3": 0x2C, "settlement_volume_m3": 0x2C}
    # ST 21 84 (low byte first): ST1 0x21 has D0-D1 = 01 (valve closed), D2 = 0 (battery
    # ok) and vendor bit D5; ST2 0x84 is manufacturer-defined.
    assert r.status == 0x8421
    assert r.valve == "closed"
    assert not r.battery_low
    assert r.current_heat_kwh is None and r.supply_temp_c is None


def test_vector2_reply() -> None:
    # The vector leaves the last 9 data bytes open. Worked out by hand: 00 ×7 is the clock
    # field, but month 0 / day 0 is no date, so the meter has no (set) clock → None;
    # 00 FF is ST: ST1 0x00 = valve open, battery ok; ST2 0xFF is manufacturer-defined.
    r = decode_reply(V2_REPLY, meter_type=COLD_WATER, address=V2_ADDR)
    assert r.current_volume_m3 == 1000.1
    assert r.settlement_volume_m3 == 1000.1
    assert r.clock is None
    assert r.status == 0xFF00
    assert r.valve == "open"
    assert not r.battery_low


def test_wildcard_address_accepts_any_meter() -> None:
    r = decode_reply(V1_REPLY, meter_type=COLD_WATER, address="AAAAAAAAAAAAAA")
    assert r.address == V1_ADDR
    r = decode_reply(V1_REPLY, meter_type=COLD_WATER, address="AAAAAAAAAA3344")
    assert r.address == V1_ADDR


def test_reading_values_of_vector1() -> None:
    r = decode_reply(V1_REPLY, meter_type=COLD_WATER, address=V1_ADDR)
    assert reading_values(r) == {
        "current_volume_m3": (556677.0, "m³"),
        "settlement_volume_m3": (556677.0, "m³"),
    }


# --- heat meter ---------------------------------------------------------------------------

def test_heat_reply_checksum_written_by_hand() -> None:
    assert sum(HEAT_REPLY[:-2]) & 0xFF == HEAT_REPLY[-2]


def test_heat_reply() -> None:
    r = decode_reply(HEAT_REPLY, meter_type=HEAT, address=HEAT_ADDR)
    assert r.address == HEAT_ADDR
    assert r.settlement_heat_kwh == pytest.approx(1234560.0)  # 1234.56 MWh
    assert r.current_heat_kwh == pytest.approx(1000.0)  # 3600 MJ / 3.6
    assert r.heat_power_kw == 12.5
    assert r.flow_m3_h == 1.2345
    assert r.cumulative_volume_m3 == 4567.89
    assert r.supply_temp_c == 75.3
    assert r.return_temp_c == 45.12
    assert r.working_hours_h == 8760
    assert r.clock == datetime(2024, 3, 15, 8, 30, 45)
    assert r.status == 0x0005
    assert r.valve == "closed"
    assert r.battery_low
    assert r.raw_units == {
        "settlement_heat_kwh": 0x08, "current_heat_kwh": 0x0E, "heat_power_kw": 0x17,
        "flow_m3_h": 0x35, "cumulative_volume_m3": 0x2C,
    }
    assert r.current_volume_m3 is None and r.settlement_volume_m3 is None
    values = reading_values(r)
    assert values["settlement_heat_kwh"] == (pytest.approx(1234560.0), "kWh")
    assert values["heat_power_kw"] == (12.5, "kW")
    assert values["flow_m3_h"] == (1.2345, "m³/h")
    assert values["cumulative_volume_m3"] == (4567.89, "m³")
    assert values["supply_temp_c"] == (75.3, "°C")
    assert values["working_hours_h"] == (8760, "h")
    assert len(values) == 8


@pytest.mark.parametrize(("code", "kwh"), [
    (0x02, 3.6),  # 3600.00 Wh
    (0x05, 3600.0),
    (0x08, 3600000.0),
    (0x0A, 360000000.0),  # MWh×100
    (0x0E, 1000.0),  # MJ / 3.6
    (0x11, 1000000.0),  # GJ × 1000 / 3.6
])
def test_heat_units(code: int, kwh: float) -> None:
    frame = rebuild(HEAT_REPLY, 23, code)  # unit byte of current heat
    r = decode_reply(frame, meter_type=HEAT, address=HEAT_ADDR)
    assert r.current_heat_kwh == pytest.approx(kwh, rel=1e-12)
    assert r.raw_units["current_heat_kwh"] == code


@pytest.mark.parametrize(("code", "kw"), [(0x14, 0.0125), (0x17, 12.5), (0x1A, 12500.0)])
def test_power_units(code: int, kw: float) -> None:
    r = decode_reply(rebuild(HEAT_REPLY, 28, code), meter_type=HEAT, address=HEAT_ADDR)
    assert r.heat_power_kw == pytest.approx(kw, rel=1e-12)


def test_litre_units() -> None:
    r = decode_reply(rebuild(V1, 18, 0x29), meter_type=COLD_WATER, address=V1_ADDR)
    assert r.current_volume_m3 == pytest.approx(556.677, rel=1e-12)
    assert r.settlement_volume_m3 == 556677.0
    r = decode_reply(rebuild(HEAT_REPLY, 33, 0x32), meter_type=HEAT, address=HEAT_ADDR)
    assert r.flow_m3_h == pytest.approx(0.0012345, rel=1e-12)


def test_cooling_heat_meter_uses_heat_layout() -> None:
    frame = rebuild(HEAT_REPLY, 1, HEAT_COOLING)
    assert decode_reply(frame, meter_type=HEAT_COOLING, address=HEAT_ADDR).heat_power_kw == 12.5


def test_ff_fields_are_none() -> None:
    frame = V1
    for i in range(14, 19):  # current volume and its unit byte
        frame = rebuild(frame, i, 0xFF)
    for i in range(24, 31):  # clock
        frame = rebuild(frame, i, 0xFF)
    r = decode_reply(frame, meter_type=COLD_WATER, address=V1_ADDR)
    assert r.current_volume_m3 is None
    assert r.clock is None
    assert r.settlement_volume_m3 == 556677.0
    assert r.raw_units == {"settlement_volume_m3": 0x2C}
    assert reading_values(r) == {"settlement_volume_m3": (556677.0, "m³")}


# --- errors ---------------------------------------------------------------------------------

def error(frame: bytes, **kw: object) -> str:
    args: dict[str, object] = {"meter_type": COLD_WATER, "address": V1_ADDR, **kw}
    with pytest.raises(ProtocolError) as exc:
        decode_reply(frame, **args)  # type: ignore[arg-type]
    return str(exc.value)


def test_bad_checksum() -> None:
    assert error(V1[:-2] + b"\x14\x16") == "bad checksum: got 0x14, computed 0x13"


def test_wrong_address() -> None:
    assert error(V1, address="78330011223345") == (
        "reply from meter 78330011223344, expected 78330011223345")


def test_wrong_meter_type() -> None:
    assert error(V1, meter_type=HOT_WATER) == (
        "reply from meter type 0x10 (cold water), expected 0x11 (hot water)")


def test_wrong_di() -> None:
    assert error(rebuild(V1, 11, 0x1E)) == (
        "reply carries DI 0x901E (bytes 1E 90), expected 0x901F")


def test_not_a_reply() -> None:
    assert error(V1_REQ) == "control 0x01 is a request, not a reply"


def test_not_a_read_reply() -> None:
    assert error(rebuild(V1, 9, 0x83)) == "control 0x83 is not a read-data reply (0x81)"


def test_abnormal_reply_is_decoded() -> None:
    frame = with_checksum(bytes.fromhex("68 10 44 33 22 11 00 33 78 C1 03 00 05 00"))
    assert error(frame) == (
        "meter 78330011223344 answered abnormally (control 0xC1): "
        "status 0x0005: valve closed, battery low")


def test_short_data() -> None:
    frame = with_checksum(V1[:9] + b"\x81\x0a" + V1[11:21])
    assert error(frame) == "short data: 10 bytes, a water meter 901F reply has 22"


def test_invalid_bcd() -> None:
    assert error(rebuild(V1, 16, 0xA3)) == (
        "BCD digit 0xA3 in byte 3 of current volume (data byte 5)")


def test_unknown_unit_code() -> None:
    assert error(rebuild(V1, 18, 0x07)) == "unknown unit code 0x07 for current volume"


def test_unit_of_wrong_quantity() -> None:
    assert error(rebuild(V1, 18, 0x05)) == (
        "unit code 0x05 (kWh) is not a volume unit, in current volume")


def test_invalid_bcd_in_clock() -> None:
    assert error(rebuild(V1, 27, 0x1A)) == "BCD digit 0x1A in byte 4 of clock (data byte 16)"


def test_invalid_clock() -> None:
    assert error(rebuild(V1, 28, 0x13))  # month == "clock 2015-13-11 22:01:31 is not a valid date"


@pytest.mark.parametrize(("frame", "message"), [
    (V1[:12], "frame too short: 12 bytes after the preamble, a frame has at least 13"),
    (b"\x69" + V1[1:], "frame starts with 0x69, expected 0x68"),
    (V1[:-3] + V1[-2:], "length byte says 22 data bytes, frame holds 21"),
    (V1[:-1] + b"\x17", "frame ends with 0x17, expected 0x16"),
])
def test_decode_frame_structure(frame: bytes, message: str) -> None:
    with pytest.raises(ProtocolError) as exc:
        decode_frame(frame)
    assert str(exc.value) == message


def test_decode_frame() -> None:
    f = decode_frame(V2_REQ)
    assert (f.meter_type, f.address, f.control, f.data) == (
        COLD_WATER, V2_ADDR, 0x01, bytes.fromhex("90 1F 00"))


def test_caller_errors_are_value_errors() -> None:
    with pytest.raises(ValueError, match="no CJ/T 188 901F layout for electricity"):
        decode_reply(V1, meter_type=ELECTRICITY, address=V1_ADDR)
    with pytest.raises(ValueError, match="only DI 0x901F"):
        decode_reply(V1, meter_type=COLD_WATER, address=V1_ADDR, di=0x9010)
    with pytest.raises(ValueError, match="unknown CJ/T 188 meter type 0x55"):
        encode_read(0x55, V1_ADDR)
    with pytest.raises(ValueError, match="sequence number"):
        encode_read(COLD_WATER, V1_ADDR, seq=256)
    with pytest.raises(ValueError, match="di_order"):
        encode_read(COLD_WATER, V1_ADDR, di_order="middle")  # type: ignore[arg-type]


# --- addresses, types, BCD ------------------------------------------------------------------

def test_address_text_and_wire() -> None:
    assert parse_address(V1_ADDR) == bytes.fromhex("44 33 22 11 00 33 78")
    assert format_address(bytes.fromhex("12 00 00 00 00 00 00")) == V2_ADDR
    assert parse_address("aaaaaaaaaaaaaa") == b"\xaa" * 7


@pytest.mark.parametrize(("text", "message"), [
    ("7833001122334", "must be 14 hex digits, got 13"),
    ("7833001122334G", "non-hex character 'G'"),
])
def test_bad_address(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_address(text)


def test_format_address_needs_7_bytes() -> None:
    with pytest.raises(ValueError, match="7 bytes, got 6"):
        format_address(b"\x00" * 6)


@given(st.binary(min_size=7, max_size=7))
def test_address_round_trip(wire: bytes) -> None:
    assert parse_address(format_address(wire)) == wire


@pytest.mark.parametrize(("t", "kind"), [
    (0x10, "water"), (0x11, "water"), (0x12, "water"), (0x13, "water"),
    (0x20, "heat"), (0x21, "heat"), (0x30, "gas"), (0x40, "electricity"),
])
def test_meter_kind(t: int, kind: str) -> None:
    assert meter_kind(t) == kind


def test_unknown_meter_kind() -> None:
    with pytest.raises(ValueError, match="0x14"):
        meter_kind(0x14)


@given(st.integers(1, 7).flatmap(
    lambda n: st.tuples(st.just(n), st.integers(0, 100 ** n - 1))))
def test_bcd_round_trip(case: tuple[int, int]) -> None:
    size, number = case
    wire = to_bcd(number, size)
    assert len(wire) == size
    assert from_bcd(wire) == number


def test_bcd_is_low_byte_first() -> None:
    assert to_bcd(55667700, 4) == bytes.fromhex("00 77 66 55")
    with pytest.raises(ValueError):
        to_bcd(100, 1)


# --- find_frame -----------------------------------------------------------------------------

def test_find_frame_skips_preamble() -> None:
    assert find_frame(V1_REPLY) == (4, len(V1_REPLY))
    assert find_frame(bytearray(V2_REPLY)) == (3, len(V2_REPLY))


def test_find_frame_skips_garbage() -> None:
    garbage = b"\x00\x68\x12\xff\x16\x68"
    buf = garbage + V1_REPLY
    assert find_frame(buf) == (len(garbage) + 4, len(buf))


def test_find_frame_stray_start_claiming_a_long_frame() -> None:
    # this 0x68 announces 80 data bytes that will never come; the real frame follows
    stray = b"\x68" + bytes(9) + b"\x50"
    assert find_frame(stray + V2_REQ) == (len(stray), len(stray) + len(V2_REQ))


def test_find_frame_implausible_length() -> None:
    fake = b"\x68" + bytes(9) + b"\xff" + bytes(300)
    assert find_frame(fake) is None
    assert find_frame(fake + V2_REQ) == (len(fake), len(fake) + len(V2_REQ))


def test_find_frame_needs_more_bytes() -> None:
    assert find_frame(b"") is None
    assert find_frame(b"\xfe\xfe\xfe") is None
    for k in range(len(V1_REPLY)):
        assert find_frame(V1_REPLY[:k]) is None


def test_find_frame_back_to_back() -> None:
    buf = V1_REQ + V2_REQ + V1_REPLY
    spans = []
    pos = 0
    while (span := find_frame(buf[pos:])) is not None:
        spans.append((pos + span[0], pos + span[1]))
        pos += span[1]
    assert spans == [(4, 20), (20, 36), (40, len(buf))]


def test_find_frame_skips_bad_checksum() -> None:
    bad = V1_REPLY[:-2] + b"\x14\x16"
    assert find_frame(bad) is None
    assert find_frame(bad + V2_REPLY) == (len(bad) + 3, len(bad) + len(V2_REPLY))


def receive(chunks: list[bytes]) -> list[bytes]:
    """Frames a receiver gets when bytes arrive in `chunks`."""
    buf = bytearray()
    frames = []
    for chunk in chunks:
        buf += chunk
        while (span := find_frame(buf)) is not None:
            frames.append(bytes(buf[span[0]:span[1]]))
            del buf[:span[1]]
    return frames


def test_find_frame_every_split_point() -> None:
    stream = b"\x00\x68\xff" + V1_REPLY + HEAT_REPLY + V2_REPLY
    expected = [V1, HEAT_REPLY, V2]
    for k in range(len(stream) + 1):
        assert receive([stream[:k], stream[k:]]) == expected, k
    assert receive([stream[i:i + 1] for i in range(len(stream))]) == expected


def test_find_frame_linear_time() -> None:
    # every 11th byte starts a plausible 100-byte frame that never completes correctly
    buf = (b"\x68" + bytes(9) + b"\x64") * 30000
    started = time.perf_counter()
    assert find_frame(buf) is None
    assert time.perf_counter() - started < 10


@given(st.binary(max_size=300))
def test_find_frame_never_raises(buf: bytes) -> None:
    span = find_frame(buf)
    if span is not None:
        start, end = span
        assert buf[start] == 0x68 and buf[end - 1] == 0x16
        decode_frame(buf[start:end])


# --- fuzzing the decoders -------------------------------------------------------------------

TYPES = [COLD_WATER, HEAT, GAS]
INTERESTING = st.sampled_from([0x00, 0x01, 0x12, 0x99, 0x9A, 0xA3, 0xFF, 0x2C, 0x05, 0x35])


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    """Checksummed frames with plausible headers and mostly hostile data."""
    t = draw(st.sampled_from([*TYPES, 0x11, 0xAA]))
    addr = draw(st.sampled_from([parse_address(V1_ADDR), b"\xaa" * 7, bytes(7)]))
    control = draw(st.sampled_from([0x81, 0xC1, 0x01, 0x83]) | st.integers(0, 255))
    di = draw(st.sampled_from([b"\x1f\x90", b"\x90\x1f", b"\x1e\x90"]))
    size = draw(st.sampled_from([0, 1, 5, 19, 43]) | st.integers(0, 97))
    data = (di + b"\x00" + bytes(draw(st.lists(INTERESTING, min_size=size, max_size=size))))
    data = data[:draw(st.integers(0, len(data)))]
    return with_checksum(bytes([0x68, t, *addr, control, len(data), *data]))


@st.composite
def mutated_replies(draw: st.DrawFn) -> tuple[bytes, int, str]:
    """A valid reply with a few data bytes replaced (checksum kept valid): (frame, T, address)."""
    frame, t, addr = draw(st.sampled_from([
        (V1, COLD_WATER, V1_ADDR), (V2, COLD_WATER, V2_ADDR), (HEAT_REPLY, HEAT, HEAT_ADDR)]))
    for _ in range(draw(st.integers(0, 3))):
        frame = rebuild(frame, draw(st.integers(11, len(frame) - 3)), draw(INTERESTING))
    return frame, t, addr


@given(st.binary(max_size=120) | frames())
def test_decode_frame_raises_only_protocol_error(buf: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode_frame(buf)


@given(st.binary(max_size=120) | frames(), st.sampled_from(TYPES),
       st.sampled_from([V1_ADDR, "AAAAAAAAAAAAAA"]))
def test_decode_reply_raises_only_protocol_error(buf: bytes, t: int, addr: str) -> None:
    with contextlib.suppress(ProtocolError):
        assert isinstance(decode_reply(buf, meter_type=t, address=addr), Reading)


@given(mutated_replies())
def test_decode_mutated_reply_raises_only_protocol_error(case: tuple[bytes, int, str]) -> None:
    frame, t, addr = case
    with contextlib.suppress(ProtocolError):
        assert isinstance(decode_reply(frame, meter_type=t, address=addr), Reading)


# --- simulated meter ------------------------------------------------------------------------

def water_meter(address: str = V1_ADDR, **kw: object) -> Meter:
    values = {"current_volume_m3": lambda _t: 556677.0,
              "settlement_volume_m3": lambda _t: 556677.0}
    return Meter(COLD_WATER, address, values, **kw)  # type: ignore[arg-type]


def test_meter_reproduces_vector1() -> None:
    reply = water_meter().handle(V1_REQ, NOW)
    assert reply is not None
    assert reply[:-11] == V1_REPLY[:-11]  # all but clock, status, checksum
    assert reply[-1] == 0x16
    # with the vector's clock and status the reply is the vector, byte for byte
    assert water_meter(status=0x8421).handle(V1_REQ, V1_NOW) == V1_REPLY


def test_meter_reproduces_vector2_high_first() -> None:
    meter = Meter(COLD_WATER, V2_ADDR, {"current_volume_m3": lambda _t: 1000.1,
                                       "settlement_volume_m3": lambda _t: 1000.1},
                  di_order="high_first")
    reply = meter.handle(V2_REQ, NOW)
    assert reply is not None
    assert reply[:4] == b"\xfe" * 4  # the vector has 3 FE; this meter sends 4
    assert reply[4:-11] == V2[:-11]


@pytest.mark.parametrize("order", ["low_first", "high_first"])
def test_meter_accepts_both_di_orders(order: str) -> None:
    request = encode_read(COLD_WATER, V1_ADDR, di_order=order, seq=7)  # type: ignore[arg-type]
    reply = water_meter().handle(request, NOW)
    assert reply is not None
    assert decode_frame(reply).data[:3] == b"\x1f\x90\x07"  # its own DI order, SER echoed
    r = decode_reply(reply, meter_type=COLD_WATER, address=V1_ADDR)
    assert r.current_volume_m3 == 556677.0
    assert r.clock == datetime(2024, 3, 15, 8, 30, 45)
    assert r.status == 0


def test_meter_ignores_other_meters() -> None:
    meter = water_meter()
    assert meter.handle(encode_read(COLD_WATER, "78330011223345"), NOW) is None
    assert meter.handle(encode_read(HOT_WATER, V1_ADDR), NOW) is None
    assert meter.handle(V1_REPLY, NOW) is None  # another meter's reply on the bus
    assert meter.handle(b"\x00\x68\x16", NOW) is None
    assert meter.handle(V1_REQ[:-2] + b"\x81\x16", NOW) is None  # bad checksum


def test_meter_answers_wildcards() -> None:
    meter = water_meter()
    for address in ("AAAAAAAAAAAAAA", "AAAAAAAAAA3344"):
        reply = meter.handle(encode_read(COLD_WATER, address), NOW)
        assert reply is not None
        assert decode_reply(reply, meter_type=COLD_WATER, address=address).address == V1_ADDR


def test_meter_abnormal_reply_for_unknown_di() -> None:
    reply = water_meter(status=0x0004).handle(encode_read(COLD_WATER, V1_ADDR, di=0x9010), NOW)
    assert reply is not None
    assert decode_frame(reply).control == 0xC1
    assert error(reply) == (
        "meter 78330011223344 answered abnormally (control 0xC1): "
        "status 0x0004: valve open, battery low")


def test_meter_sends_ff_for_unsupplied_fields() -> None:
    meter = Meter(GAS, V1_ADDR, {"settlement_volume_m3": lambda t: t / 1e6})
    reply = meter.handle(encode_read(GAS, V1_ADDR), NOW)
    assert reply is not None
    assert decode_frame(reply).data[3:8] == b"\xff" * 5
    r = decode_reply(reply, meter_type=GAS, address=V1_ADDR)
    assert r.current_volume_m3 is None
    assert r.settlement_volume_m3 == round(NOW / 1e6, 2)
    assert list(reading_values(r)) == ["settlement_volume_m3"]


def test_heat_meter_round_trip() -> None:
    values = {
        "settlement_heat_kwh": 1234.56, "current_heat_kwh": 2345.67, "heat_power_kw": 12.5,
        "flow_m3_h": 1.2345, "cumulative_volume_m3": 4567.89, "supply_temp_c": 75.3,
        "return_temp_c": 45.12, "working_hours_h": 8760.0,
    }
    meter = Meter(HEAT, HEAT_ADDR, {k: (lambda _t, v=v: v) for k, v in values.items()})
    reply = meter.handle(encode_read(HEAT, HEAT_ADDR), NOW)
    assert reply is not None
    r = decode_reply(reply, meter_type=HEAT, address=HEAT_ADDR)
    assert {k: v for k, (v, _unit) in reading_values(r).items()} == values
    assert r.raw_units == {
        "settlement_heat_kwh": 0x05, "current_heat_kwh": 0x05, "heat_power_kw": 0x17,
        "flow_m3_h": 0x35, "cumulative_volume_m3": 0x2C,
    }
    assert r.clock == datetime(2024, 3, 15, 8, 30, 45)


@given(st.integers(0, 99999999), st.integers(0, 99999999))
def test_meter_value_round_trip(current: int, settlement: int) -> None:
    meter = Meter(COLD_WATER, V1_ADDR, {"current_volume_m3": lambda _t: current / 100,
                                       "settlement_volume_m3": lambda _t: settlement / 100})
    reply = meter.handle(V1_REQ, NOW)
    assert reply is not None
    r = decode_reply(reply, meter_type=COLD_WATER, address=V1_ADDR)
    assert (r.current_volume_m3, r.settlement_volume_m3) == (current / 100, settlement / 100)


def test_meter_configuration_errors() -> None:
    with pytest.raises(ValueError, match="no value 'heat_power_kw'"):
        Meter(COLD_WATER, V1_ADDR, {"heat_power_kw": lambda _t: 1.0})
    with pytest.raises(ValueError, match="wildcard"):
        Meter(COLD_WATER, "AAAAAAAAAAAAAA", {})
    with pytest.raises(ValueError, match="electricity"):
        Meter(ELECTRICITY, V1_ADDR, {})
    meter = Meter(COLD_WATER, V1_ADDR, {"current_volume_m3": lambda _t: -1.0})
    with pytest.raises(ValueError, match=r"current volume -1.0 is outside 0..999999.99"):
        meter.handle(V1_REQ, NOW)
