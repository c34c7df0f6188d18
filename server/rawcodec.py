"""A lossless codec for the historian's raw archive (table raw_window): one minute's RawWindow.

Bit-exact for every float64, NaN payloads, -0.0 and inf included, because every choice the
encoder makes is checked by running the decoder's own arithmetic on it; what fails the
check is stored as raw bits (an exception). Pure numpy + zlib.

What the data looks like and what the codec does with it:
- times: a device's tags share one timestamp per poll, so a tag whose times equal an
  earlier tag's stores only a reference; the distinct rows are float64 bit patterns
  (monotonic integers for positive times) coded as delta-of-delta, nearly all zero or small.
- values: Modbus / meter registers are mostly float32 (sometimes times a decimal scale),
  and instruments report at a fixed decimal resolution. Per tag the encoder picks the
  first float32 scale that round-trips (else float64), then the smallest decimal exponent d
  with `value == f32(k / 10**d)` (else the float's bits as an ordered integer), and codes
  the integers k as deltas or offsets from the tag's first value, whichever is smaller.
- flags: mostly zero; zlib alone.
The first time and each tag's first integer are stored apart, so the streams hold only
small numbers. All integer streams are zigzagged, cut to the bytes the largest needs and
split into byte planes (the high planes are then runs of zeros) before one zlib call over
the whole minute. The mode is searched on each tag's first SEARCH_SAMPLES samples and then
checked on all of them, which keeps encoding a 100-source minute at a few ms.

Row layout: the new format stores the blob in column `vals` with tags "" and empty
counts / times / flags; it starts with MAGIC and a version byte. The first format (plain
little-endian arrays, one per column) is still read, so no migration is needed.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
import numpy.typing as npt

from model.errors import CarbonScadaError
from model.records import RawWindow

MAGIC = b"CRW"
VERSION = 1
ZLIB_LEVEL = 6
# Multipliers a driver's scale may have applied to a float32 register (value = f32 * s).
SCALES = np.array([1.0, 1000.0, 100.0, 10.0, 0.1, 0.01, 0.001, 1e6, 1e-6])
F64 = 255  # scale index of a tag whose values are not float32 × scale
MAX_DECIMALS = 6
SEARCH_SAMPLES = 8  # per tag, to pick its mode; the whole tag is checked after
POW10 = 10.0 ** np.arange(MAX_DECIMALS + 1)
NO_DECIMAL = 255
DELTA, OFFSET = 0, 1
# n_tags, n_samples, n_unique_times, w_t, w_v, n_exceptions, w_k0, first time (ordered bits)
_HEADER = struct.Struct("<IIIBBIBq")
_M63 = np.int64(0x7FFFFFFFFFFFFFFF)
_M31 = np.int32(0x7FFFFFFF)

RawRow = tuple[str, bytes, bytes, bytes, bytes]  # tags, counts, times, vals, flags


class RawCodecError(CarbonScadaError):
    """A raw_window row that cannot be decoded (unknown version, truncated blob)."""


def _ordered64(bits: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Sign-magnitude float bits → integers in value order (an involution)."""
    return np.where(bits < 0, bits ^ _M63, bits)


def _ordered32(bits: npt.NDArray[np.int32]) -> npt.NDArray[np.int32]:
    """The float32 form of _ordered64."""
    return np.where(bits < 0, bits ^ _M31, bits)


def _zigzag(r: npt.NDArray[np.int64]) -> npt.NDArray[np.uint64]:
    return ((r << 1) ^ (r >> 63)).view(np.uint64)


def _unzigzag(z: npt.NDArray[np.uint64]) -> npt.NDArray[np.int64]:
    return ((z >> np.uint64(1)).view(np.int64) ^ -(z & np.uint64(1)).view(np.int64))


def _width(z: npt.NDArray[np.uint64]) -> int:
    """Bytes needed by the largest value of z."""
    top = int(z.max(initial=0))
    return (top.bit_length() + 7) // 8


def _planes(z: npt.NDArray[np.uint64], w: int) -> bytes:
    """The low w bytes of each value, byte plane after byte plane."""
    return np.ascontiguousarray(z.astype("<u8").view(np.uint8).reshape(-1, 8)[:, :w].T).tobytes()


def _unplanes(buf: bytes, n: int, w: int) -> npt.NDArray[np.uint64]:
    out = np.zeros((n, 8), np.uint8)
    if w:
        out[:, :w] = np.frombuffer(buf, np.uint8, n * w).reshape(w, n).T
    return out.view("<u8").reshape(n).astype(np.uint64)


def _decode_values(k: npt.NDArray[np.int64], scale: npt.NDArray[np.uint8],
                   dec: npt.NDArray[np.uint8]) -> npt.NDArray[np.float64]:
    """Values from integers k with per-element scale index and decimal exponent.

    The encoder verifies its candidates with this very function, so whatever it
    stores comes back bit for bit.
    """
    is32 = scale != F64
    has_dec = dec != NO_DECIMAL
    all32, all_dec = bool(is32.all()), bool(has_dec.all())
    with np.errstate(all="ignore"):
        base = np.zeros(k.size, np.float64)
        if has_dec.any():
            r = k.astype(np.float64) / POW10[np.where(has_dec, dec, 0)]
            if all32:
                r = r.astype(np.float32).astype(np.float64)
            elif is32.any():
                r = np.where(is32, r.astype(np.float32).astype(np.float64), r)
            base = r
        if not all_dec:
            if is32.any():
                b32 = _ordered32(k.astype(np.int32)).view(np.float32).astype(np.float64)
                base = np.where(has_dec | ~is32, base, b32)
            if not all32:
                base = np.where(has_dec | is32, base, _ordered64(k).view(np.float64))
        scaled = is32 & (scale != 0)
        out = base
        if scaled.any():
            out = np.where(scaled, base * SCALES[np.where(scaled, scale, 0)], base)
    return np.asarray(out, np.float64)


def _segments(counts: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.int64],
                                                      npt.NDArray[np.int64]]:
    """(start offset per tag, tag index per sample)."""
    starts = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
    return starts, np.repeat(np.arange(counts.size), counts)


def _per_tag_count(x: npt.NDArray[np.bool_], owner: npt.NDArray[np.int64],
                 n_tags: int) -> npt.NDArray[np.int64]:
    """How many samples of each tag have x set."""
    return np.bincount(owner[x], minlength=n_tags).astype(np.int64)


def _search(v_bits: npt.NDArray[np.int64], counts: npt.NDArray[np.int64],
            owner: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    """Per tag the first float32 scale, then the smallest decimal exponent, that fit."""
    n_tags = counts.size
    v = v_bits.view(np.float64)
    # A tag may keep a few exceptions (NaN of a failed poll, a stray -0.0) and still use
    # a compact mode; each exception costs ~12 bytes against ~2 saved per sample.
    slack = counts // 8
    scale = np.full(n_tags, F64, np.uint8)
    best = np.full(n_tags, np.iinfo(np.int64).max, np.int64)
    open_ = np.ones(n_tags, np.bool_)
    with np.errstate(all="ignore"):
        tiny = (np.abs(v) < np.finfo(np.float32).tiny) & (v != 0)  # see _integers
        for i in range(SCALES.size):
            # the decoder's arithmetic for (scale i, no decimal), inlined; encode checks
            # the final choice with _decode_values itself
            back = (v / SCALES[i] if i else v).astype(np.float32).astype(np.float64)
            bad = ((back * SCALES[i] if i else back).view(np.int64) != v_bits) | tiny
            fails = _per_tag_count(bad, owner, n_tags)
            take = open_ & (fails <= slack) & (fails < best)
            scale[take], best[take] = i, fails[take]
            open_ &= ~(fails == 0)
            if not open_.any():
                break
        el_scale = scale[owner]
        is32 = el_scale != F64
        base = np.where(is32, (v / SCALES[np.where(is32, el_scale, 0)]).astype(
            np.float32).astype(np.float64), v)
        base_fails = np.where(scale == F64, 0, best)
        dec = np.full(n_tags, NO_DECIMAL, np.uint8)
        open_ = np.ones(n_tags, np.bool_)
        for d in range(MAX_DECIMALS + 1):
            kd = np.rint(base * POW10[d])
            r = kd / POW10[d]
            r = np.where(is32, r.astype(np.float32).astype(np.float64), r)
            bad = (r.view(np.int64) != base.view(np.int64)) | ~(np.abs(kd) < 2.0**52)
            fails = _per_tag_count(bad, owner, n_tags)
            take = open_ & (fails <= base_fails + counts // 16)
            dec[take] = d
            open_ &= ~take
            if not open_.any():
                break
    return scale, dec


def _integers(v_bits: npt.NDArray[np.int64], el_scale: npt.NDArray[np.uint8],
              el_dec: npt.NDArray[np.uint8]) -> tuple[npt.NDArray[np.int64],
                                                      npt.NDArray[np.bool_]]:
    """Per sample the integer k of its tag's mode, and whether k decodes to it exactly."""
    v = v_bits.view(np.float64)
    is32 = el_scale != F64
    has_dec = el_dec != NO_DECIMAL
    with np.errstate(all="ignore"):
        base = np.where(is32, (v / SCALES[np.where(is32, el_scale, 0)]).astype(
            np.float32).astype(np.float64), v)
        kd = np.rint(base * POW10[np.where(has_dec, el_dec, 0)])
        kd = np.where(np.abs(kd) < 2.0**52, kd, 0)
        k32 = _ordered32(base.astype(np.float32).view(np.int32)).astype(np.int64)
    k = np.where(has_dec, kd.astype(np.int64), np.where(is32, k32, _ordered64(v_bits)))
    exact = _decode_values(k, el_scale, el_dec).view(np.int64) == v_bits
    # Subnormals go through float arithmetic only as raw bits: a process that flushes
    # them to zero (FTZ/DAZ, set by some native libraries) would decode them differently.
    with np.errstate(invalid="ignore"):
        tiny = (np.abs(v) < np.finfo(np.float32).tiny) & (v != 0)
    exact &= ~(tiny & (is32 | has_dec))
    return k, exact


def _choose_values(v_bits: npt.NDArray[np.int64], counts: npt.NDArray[np.int64],
                   starts: npt.NDArray[np.int64], owner: npt.NDArray[np.int64]
                   ) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8],
                              npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """Per tag (scale index, decimal exponent); per sample the integer k and its exactness.

    The search runs on each tag's first SEARCH_SAMPLES samples; the whole tag is then
    checked once, and a tag with too many exceptions falls back (no decimal, then float64).
    """
    n_tags = counts.size
    pick = np.flatnonzero(np.arange(v_bits.size) - starts[owner] < SEARCH_SAMPLES)
    scale, dec = _search(v_bits[pick], np.minimum(counts, SEARCH_SAMPLES), owner[pick])
    for fallback in (True, False):
        k, exact = _integers(v_bits, scale[owner], dec[owner])
        worse = _per_tag_count(~exact, owner, n_tags) > counts // 8
        if not worse.any():
            break
        if fallback:
            dec[worse] = NO_DECIMAL
        else:
            scale[worse], dec[worse] = F64, NO_DECIMAL
            k, exact = _integers(v_bits, scale[owner], dec[owner])
    return scale, dec, k, exact


def encode(w: RawWindow) -> bytes:
    """One minute's raw window as a compressed blob (MAGIC, version byte, zlib payload)."""
    counts = np.ascontiguousarray(w.counts, np.int64)
    n_tags, n = counts.size, int(counts.sum())
    times_bits = np.ascontiguousarray(w.times, "<f8").view(np.int64)
    v_bits = np.ascontiguousarray(w.values, "<f8").view(np.int64)
    flags = np.ascontiguousarray(w.flags, np.uint8)
    starts, owner = _segments(counts)

    # times: a reference to the first tag with the same times, else the tag's own row
    # A tag equal to the one before it (the usual case: a device's tags are adjacent) is
    # found with array operations; only the others go through the dict.
    same = np.zeros(n_tags, np.bool_)
    if n_tags > 1:
        same[1:] = (counts[1:] == counts[:-1]) & (counts[1:] > 0)
        el = same[owner]
        partner = np.arange(n) - np.where(el, counts[np.maximum(owner - 1, 0)], 0)
        same &= _per_tag_count(el & (times_bits != times_bits[partner]), owner, n_tags) == 0
    tref = np.full(n_tags, -1, np.int32)
    seen: dict[bytes, int] = {}
    own: list[npt.NDArray[np.int64]] = []
    for i in np.flatnonzero(~same & (counts > 0)).tolist():
        row = times_bits[starts[i]:starts[i] + counts[i]]
        j = seen.setdefault(row.tobytes(), i)
        if j == i:
            own.append(row)
        else:
            tref[i] = j
    # a run of equal tags points where its head points (the head itself if it is own)
    head = np.maximum.accumulate(np.where(~same, np.arange(n_tags), 0)) if n_tags else tref
    root = np.where(tref[head] >= 0, tref[head], head)
    tref = np.where(same, root, tref).astype(np.int32)
    uniq = _ordered64(np.concatenate(own)) if own else np.zeros(0, np.int64)
    # the first time goes in the header: the streams then hold only small numbers
    t_first = int(uniq[0]) if uniq.size else 0
    d1 = np.diff(uniq, prepend=np.int64(t_first))
    tz = _zigzag(np.diff(d1, prepend=np.int64(0)))
    w_t = _width(tz)

    # values
    scale, dec, k, exact = _choose_values(v_bits, counts, starts, owner)
    good = exact.copy()
    idx = np.maximum.accumulate(np.where(good, np.arange(n), -1)) if n else np.zeros(0, np.int64)
    filled = np.where(idx >= starts[owner], k[np.maximum(idx, 0)], 0) if n else k
    k = np.where(good, k, filled)
    at_start = np.zeros(n, np.bool_)
    at_start[starts[counts > 0]] = True
    # each tag's first integer is stored on its own, so the residuals stay small
    k0 = np.where(counts > 0, k[np.minimum(starts, max(n - 1, 0))] if n else 0, 0)
    r_delta = np.where(at_start, 0, k - np.roll(k, 1))
    r_off = k - k0[owner]
    k0z = _zigzag(k0.astype(np.int64))
    w_k0 = _width(k0z)
    with np.errstate(divide="ignore"):
        cost_d = np.bincount(owner, np.log2(np.abs(r_delta.astype(np.float64)) + 1), n_tags)
        cost_o = np.bincount(owner, np.log2(np.abs(r_off.astype(np.float64)) + 1), n_tags)
    coding = np.where(cost_o < cost_d, OFFSET, DELTA).astype(np.uint8)
    vz = _zigzag(np.where(coding[owner] == OFFSET, r_off, r_delta))
    w_v = _width(vz)
    exc = np.flatnonzero(~exact)
    exc_gap = np.diff(exc, prepend=np.int64(0)).astype("<u4")
    exc_bits = _planes(v_bits[exc].view(np.uint64), 8)

    names = "\n".join(w.tags).encode("utf-8")
    params = np.stack([scale, dec, coding]).astype(np.uint8).tobytes()
    payload = b"".join([
        _HEADER.pack(n_tags, n, uniq.size, w_t, w_v, exc.size, w_k0, t_first),
        struct.pack("<I", len(names)), names,
        _planes(counts.view(np.uint64), 8), tref.astype("<i4").tobytes(), params,
        _planes(k0z, w_k0), _planes(tz, w_t), _planes(vz, w_v), flags.tobytes(),
        exc_gap.tobytes(), exc_bits])
    return MAGIC + bytes([VERSION]) + zlib.compress(payload, ZLIB_LEVEL)


class _Reader:
    def __init__(self, buf: bytes) -> None:
        self.buf, self.at = buf, 0

    def take(self, size: int) -> bytes:
        if self.at + size > len(self.buf):
            raise RawCodecError("raw window blob is truncated")
        out = self.buf[self.at:self.at + size]
        self.at += size
        return out


def decode(blob: bytes) -> RawWindow:
    """The raw window of a blob from `encode`, bit for bit."""
    if blob[:3] != MAGIC or len(blob) < 4:
        raise RawCodecError("not a raw window blob")
    if blob[3] != VERSION:
        raise RawCodecError(f"raw window format version {blob[3]} is not known")
    try:
        rd = _Reader(zlib.decompress(blob[4:]))
    except zlib.error as e:
        raise RawCodecError(f"raw window blob is corrupt: {e}") from e
    n_tags, n, n_uniq, w_t, w_v, n_exc, w_k0, t_first = _HEADER.unpack(rd.take(_HEADER.size))
    (len_names,) = struct.unpack("<I", rd.take(4))
    names = rd.take(len_names).decode("utf-8")
    tags = tuple(names.split("\n")) if n_tags else ()
    counts = _unplanes(rd.take(8 * n_tags), n_tags, 8).view(np.int64)
    tref = np.frombuffer(rd.take(4 * n_tags), "<i4").astype(np.int64)
    params = np.frombuffer(rd.take(3 * n_tags), np.uint8).reshape(3, n_tags)
    scale, dec, coding = params[0], params[1], params[2]
    k0 = _unzigzag(_unplanes(rd.take(w_k0 * n_tags), n_tags, w_k0))
    tz = _unplanes(rd.take(w_t * n_uniq), n_uniq, w_t)
    vz = _unplanes(rd.take(w_v * n), n, w_v)
    flags = np.frombuffer(rd.take(n), np.uint8).copy()
    exc = np.cumsum(np.frombuffer(rd.take(4 * n_exc), "<u4").astype(np.int64))
    exc_bits = _unplanes(rd.take(8 * n_exc), n_exc, 8).view(np.int64)
    starts, owner = _segments(counts)

    uniq = _ordered64(np.int64(t_first) + np.cumsum(np.cumsum(_unzigzag(tz))))
    is_own = (tref < 0) & (counts > 0)
    own_off = np.concatenate(([0], np.cumsum(np.where(is_own, counts, 0))[:-1])).astype(np.int64)
    src = np.where(is_own, own_off, own_off[np.maximum(tref, 0)])
    gather = np.arange(n, dtype=np.int64) - starts[owner] + src[owner]
    times = uniq[gather].view(np.float64) if n else np.zeros(0, np.float64)

    r = _unzigzag(vz)
    c = np.cumsum(r)
    before = np.where(starts > 0, c[np.maximum(starts - 1, 0)] if n else 0, 0)
    k = k0[owner] + np.where(coding[owner] == OFFSET, r, c - before[owner] if n else r)
    values = _decode_values(k, scale[owner], dec[owner]).view(np.int64).copy()
    values[exc] = exc_bits
    return RawWindow(tags, counts.astype(np.int64), np.asarray(times, np.float64).copy(),
                     values.view(np.float64), flags)


def encode_row(w: RawWindow) -> RawRow:
    """The (tags, counts, times, vals, flags) columns of a raw_window row, new format."""
    return "", b"", b"", encode(w), b""


def decode_row(tags: str, counts: bytes, times: bytes, vals: bytes, flags: bytes) -> RawWindow:
    """A raw_window row of either format back to its RawWindow.

    The first format is plain arrays and never has empty counts with non-empty vals
    (no tags means no samples), so an empty counts column marks the new format.
    """
    if not counts and vals[:3] == MAGIC:
        return decode(bytes(vals))
    return RawWindow(
        tuple(tags.split("\n")) if tags else (),
        np.frombuffer(counts, "<i8").astype(np.int64),
        np.frombuffer(times, "<f8").astype(np.float64),
        np.frombuffer(vals, "<f8").astype(np.float64),
        np.frombuffer(flags, "u1").astype(np.uint8))
