"""The raw archive codec: bit-exact round trips, both row formats, and its size on a CEMS minute."""

from __future__ import annotations

import sqlite3
import struct
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model.records import MinuteResult, RawWindow
from server import rawcodec
from server.historian import Historian, to_ms
from tests.server.test_historian import minute

T0 = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)
# One source of a CEMS: (tag, centre, noise, instrument resolution, driver scale). Static
# pressure is a kPa float32 register scaled ×1000 to Pa by the driver, as in
# config/demo-plant.yaml; the rest are float32 registers in engineering units.
CEMS_TAGS = [("velocity_m_s", 18.0, 0.15, 0.01, 1.0), ("co2_pct", 12.5, 0.05, 0.01, 1.0),
             ("temp_c", 50.0, 0.2, 0.1, 1.0), ("static_pa", -400.0, 10.0, 1.0, 1000.0),
             ("moisture_pct", 10.0, 0.1, 0.01, 1.0), ("o2_pct", 6.0, 0.05, 0.01, 1.0)]


def cems_minute(n_sources: int = 100, seed: int = 7, resolution: bool = True) -> RawWindow:
    """A minute at 1 Hz of n_sources CEMS sources × 6 tags, as the minute cycle hands it over.

    Each device is polled once a second at its own phase with a few ms of jitter, so its
    six tags share one time.time()-like timestamp per poll (not round microseconds).
    Values drift slowly plus noise; with `resolution` they are what an analyser reports
    (its display resolution, then float32), else full-mantissa float32 (an ADC's reading).
    Source 3 misses five polls (NaN, flag B=3); 1 % of the other samples are flagged B.
    """
    rng = np.random.default_rng(seed)
    tags: list[str] = []
    times: list[np.ndarray] = []
    values: list[np.ndarray] = []
    flags: list[np.ndarray] = []
    t0 = T0.timestamp()
    for s in range(n_sources):
        polls = t0 + rng.uniform(0, 1) + np.arange(60) + rng.normal(0, 0.003, 60)
        for name, centre, noise, res, scale in CEMS_TAGS:
            x = (centre + np.cumsum(rng.normal(0, noise * 0.2, 60))
                 + rng.normal(0, noise, 60)) / scale
            if resolution:
                x = np.round(x * (scale / res)) / (scale / res)
            v = x.astype(np.float32).astype(np.float64) * scale
            f = np.where(rng.random(60) < 0.01, 3, 0).astype(np.uint8)
            if s == 3:
                v[20:25], f[20:25] = np.nan, 3
            tags.append(f"s{s:03d}_{name}")
            times.append(polls)
            values.append(v)
            flags.append(f)
    return RawWindow(tuple(tags), np.full(len(tags), 60, np.int64), np.concatenate(times),
                     np.concatenate(values), np.concatenate(flags))


def old_row(w: RawWindow) -> tuple[str, bytes, bytes, bytes, bytes]:
    """The columns the historian wrote before the codec (format 0: plain arrays)."""
    return ("\n".join(w.tags), w.counts.astype("<i8").tobytes(), w.times.astype("<f8").tobytes(),
            w.values.astype("<f8").tobytes(), w.flags.astype("u1").tobytes())


def assert_same(a: RawWindow, b: RawWindow) -> None:
    """Equal bit for bit (NaN payloads, -0.0), dtypes and shapes included."""
    assert a.tags == b.tags
    for name in ("counts", "times", "values", "flags"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x.dtype, x.shape) == (y.dtype, y.shape), name
        assert x.tobytes() == y.tobytes(), name


SPECIAL = [0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, 0.1, 1e-310, 5e-324, -1.7976931348623157e308]
float64_bits = st.integers(-(2**63), 2**63 - 1).map(
    lambda i: np.array([i], np.int64).view(np.float64)[0])
any_float = st.one_of(float64_bits, st.floats(allow_nan=True, allow_infinity=True),
                      st.floats(width=32), st.sampled_from(SPECIAL),
                      st.integers(-10**6, 10**6).map(lambda k: float(np.float32(k / 100))))


@st.composite
def windows(draw: st.DrawFn) -> RawWindow:
    """Random windows: 0-7 tags, 0-9 samples each, shared or random times, any floats."""
    counts = draw(st.lists(st.integers(0, 9), max_size=7))
    n = sum(counts)
    values = np.array(draw(st.lists(any_float, min_size=n, max_size=n)), np.float64)
    if draw(st.booleans()):
        times = np.array(draw(st.lists(any_float, min_size=n, max_size=n)), np.float64)
    else:  # one poll timestamp per sample index, shared by every tag
        polls = np.array(draw(st.lists(any_float, min_size=10, max_size=10)), np.float64)
        times = np.concatenate([polls[:c] for c in counts]) if n else np.zeros(0)
    flags = np.array(draw(st.lists(st.integers(0, 255), min_size=n, max_size=n)), np.uint8)
    names = st.text(st.characters(codec="utf-8", exclude_characters="\n"),
                    min_size=1, max_size=8)
    tags = tuple(draw(names) for _ in counts)
    return RawWindow(tags, np.array(counts, np.int64), times, values, flags)


@settings(max_examples=400, deadline=None)
@given(windows())
def test_any_window_round_trips_bit_for_bit(w: RawWindow) -> None:
    assert_same(rawcodec.decode(rawcodec.encode(w)), w)
    assert_same(rawcodec.decode_row(*rawcodec.encode_row(w)), w)
    assert_same(rawcodec.decode_row(*old_row(w)), w)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**64 - 1), st.integers(1, 60))
def test_nan_payloads_survive_in_a_float32_tag(payload: int, at: int) -> None:
    # A float32 decimal tag (0.01 resolution) with one NaN, -0.0 and inf of any payload:
    # the compact mode for the tag and raw bits for the odd samples.
    v = (np.arange(61) / 100).astype(np.float32).astype(np.float64)
    v[at] = np.array([payload | 0x7FF0000000000001], np.uint64).view(np.float64)[0]
    v[0], v[-1] = -0.0, -np.inf
    w = RawWindow(("a",), np.array([61]), 1.8e9 + np.arange(61.0), v, np.zeros(61, np.uint8))
    back = rawcodec.decode(rawcodec.encode(w))
    assert back.values.view(np.uint64).tolist() == v.view(np.uint64).tolist()


def test_subnormals_are_kept_as_raw_bits() -> None:
    # a float32 tag with float32 subnormals: arithmetic on them is not portable (FTZ)
    # (16 samples, 2 subnormal: within a tag's slack of 16 // 8, so the tag stays float32
    # with one decimal, and the two are exceptions)
    v = np.arange(16) / 2
    v[3], v[9] = float(np.float32(1e-40)), -float(np.float32(1e-45))
    w = RawWindow(("a",), np.array([16]), np.arange(16.0), v, np.zeros(16, np.uint8))
    p = zlib.decompress(rawcodec.encode(w)[4:])
    assert struct.unpack_from("<IIIBBIBq", p)[5] == 2  # two exceptions
    assert p[27 + 4 + 1 + 8 + 4:][:2] == bytes([0, 1])  # scale ×1, one decimal
    assert_same(rawcodec.decode(rawcodec.encode(w)), w)


def test_empty_windows() -> None:
    for w in (RawWindow((), np.zeros(0, np.int64), np.zeros(0), np.zeros(0), np.zeros(0, np.uint8)),
              RawWindow(("a", "b"), np.zeros(2, np.int64), np.zeros(0), np.zeros(0),
                        np.zeros(0, np.uint8))):
        assert_same(rawcodec.decode(rawcodec.encode(w)), w)


def test_a_worked_minute_of_one_meter() -> None:
    # An energy meter at 0.5 kWh resolution, polled every 10 s on the second.
    kwh = np.array([1000.0, 1000.5, 1001.0, 1001.0, 1001.5, 1002.0])
    t = np.asarray(T0.timestamp() + 10.0 * np.arange(6), np.float64)
    w = RawWindow(("kwh",), np.array([6]), t, kwh, np.zeros(6, np.uint8))
    blob = rawcodec.encode(w)
    assert blob[:4] == b"CRW\x01"
    p = zlib.decompress(blob[4:])
    t_bits = int(t[:1].view(np.int64)[0])
    # header: 1 tag, 6 samples, 6 distinct times; times need 4 bytes, residuals 1, no
    # exceptions, first integers 2 bytes; the first time's bit pattern
    assert struct.unpack_from("<IIIBBIBq", p) == (1, 6, 6, 4, 1, 0, 2, t_bits)
    at = 27 + 4 + 3 + 8 + 4  # header, names length, names, counts, times reference
    # float64 exactly float32 (scale index 0 = ×1), one decimal (k = 10 × kWh), deltas
    assert p[at:at + 3] == bytes([0, 1, rawcodec.DELTA])
    # k = 10000, 10005, 10010, 10010, 10015, 10020: k0 = 10000 (zigzag 20000 = 0x4e20,
    # two byte planes), then the times, then deltas 0, 5, 5, 0, 5, 5 (zigzag ×2)
    at += 3
    assert p[at:at + 2] == bytes([0x20, 0x4E])
    # times: delta-of-delta of the bit patterns; 10 s is 10 × 2**22 ulps at 1.78e9 s,
    # so 0, 10 << 22 (zigzag 2 × that), then zeros
    tz = np.frombuffer(p[at + 2:at + 26], np.uint8).reshape(4, 6).T.copy()
    assert np.pad(tz, ((0, 0), (0, 4))).view("<u8").ravel().tolist() == [
        0, 2 * (10 << 22), 0, 0, 0, 0]
    assert p[at + 26:at + 32] == bytes([0, 10, 10, 0, 10, 10])
    assert len(blob) < 80 < len(b"".join(old_row(w)[1:]))
    assert_same(rawcodec.decode(blob), w)


def test_cems_minute_fits_in_1200_bytes_per_source() -> None:
    w = cems_minute(100)
    blob = rawcodec.encode(w)
    assert_same(rawcodec.decode(blob), w)
    uncompressed = sum(len(c) for c in old_row(w)[1:]) + len(old_row(w)[0])
    # per source: 6 counts × 8 B + 360 samples × 17 B, and the names
    assert uncompressed == 100 * (6 * 8 + 360 * 17) + len("\n".join(w.tags))
    assert len(blob) / 100 <= 1200
    assert len(blob) < 0.6 * len(zlib.compress(b"".join(old_row(w)[1:])))


def test_full_mantissa_float32_still_round_trips() -> None:
    # ADC readings with no decimal resolution: float32 bits as ordered integers
    w = cems_minute(20, resolution=False)
    blob = rawcodec.encode(w)
    assert_same(rawcodec.decode(blob), w)
    assert len(blob) / 20 <= 1400


def test_unknown_version_is_an_error() -> None:
    blob = bytearray(rawcodec.encode(cems_minute(1)))
    blob[3] = 99
    with pytest.raises(rawcodec.RawCodecError, match="version 99"):
        rawcodec.decode(bytes(blob))


async def test_historian_reads_old_and_new_rows(tmp_path: Path) -> None:
    old, new = cems_minute(2, seed=1), cems_minute(2, seed=2)
    h = Historian(tmp_path / "h.sqlite")
    await h.start()
    try:
        m = minute(T0 + timedelta(minutes=1), 1.0)
        await h.on_minute(MinuteResult(m.t, m.sources, m.units, m.site, m.tags, raw=new))
        with sqlite3.connect(tmp_path / "h.sqlite") as db:  # a row from before the codec
            db.execute("INSERT INTO raw_window VALUES (?,?,?,?,?,?)", (to_ms(T0), *old_row(old)))
            sizes = db.execute("SELECT length(vals), length(counts) FROM raw_window"
                               " ORDER BY t_ms").fetchall()
        assert sizes[0] == (8 * 720, 8 * 12)
        assert sizes[1][1] == 0 and sizes[1][0] < 2 * 1200
        got = await h.raw_windows(T0, T0 + timedelta(minutes=2))
        assert [t for t, _ in got] == [T0, T0 + timedelta(minutes=1)]
        assert_same(got[0][1], old)
        assert_same(got[1][1], new)
        # s000_temp_c's last valid sample before the end: from the new row
        i = new.tags.index("s000_temp_c")
        sl = slice(60 * i, 60 * i + 60)
        ok = np.flatnonzero(new.flags[sl] == 0)[-1]
        assert await h.last_reading("s000_temp_c", T0 + timedelta(minutes=2)) == (
            float(new.times[sl][ok]), float(new.values[sl][ok]))
        stored = await h.stored_minutes(None, 10)  # only minute 1 has results
        assert [m.t for m in stored] == [T0 + timedelta(minutes=1)]
        assert stored[0].raw is not None
        assert_same(stored[0].raw, new)
    finally:
        await h.stop()

