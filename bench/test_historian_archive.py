"""The historian's raw archive: the codec against plain zlib of the raw arrays, same run.

Each group measures, on one minute of 100 CEMS sources × 6 tags at 1 Hz
(tests/server/test_rawcodec.cems_minute): rawcodec encode + decode, and the baseline
zlib.compress + decompress of the arrays the historian used to store. `extra_info`
holds the bytes per source-minute of the codec, the zlib baseline and the uncompressed
row. Target: ≤ 1200 B per source-minute; encode well under 10 ms.

Two minutes: "resolution" (analyser values at their display resolution, as float32
registers) and "adc" (full-mantissa float32: the worst case for any lossless codec).
"""

from __future__ import annotations

import functools
import zlib

import pytest

from model.records import RawWindow
from server import rawcodec
from tests.server.test_rawcodec import assert_same, cems_minute, old_row

N_SOURCES = 100
KINDS = ["resolution", "adc"]


@functools.cache
def minute(kind: str) -> RawWindow:
    return cems_minute(N_SOURCES, resolution=kind == "resolution")


def sizes(w: RawWindow) -> dict[str, float]:
    row = old_row(w)
    raw = b"".join(row[1:])
    return {"codec_B_per_source_minute": len(rawcodec.encode(w)) / N_SOURCES,
            "zlib_B_per_source_minute": (len(zlib.compress(raw)) + len(row[0])) / N_SOURCES,
            "uncompressed_B_per_source_minute": (len(raw) + len(row[0])) / N_SOURCES}


@pytest.mark.parametrize("kind", KINDS)
def test_codec_encode_decode(benchmark, kind: str) -> None:  # type: ignore[no-untyped-def]
    w = minute(kind)
    benchmark.group = f"raw archive, {kind}"
    benchmark.extra_info.update(sizes(w))

    def round_trip() -> RawWindow:
        return rawcodec.decode(rawcodec.encode(w))

    assert_same(benchmark(round_trip), w)
    if kind == "resolution":
        assert benchmark.extra_info["codec_B_per_source_minute"] <= 1200


@pytest.mark.parametrize("kind", KINDS)
def test_codec_encode_only(benchmark, kind: str) -> None:  # type: ignore[no-untyped-def]
    w = minute(kind)
    benchmark.group = f"raw archive, {kind}"
    benchmark(rawcodec.encode, w)


@pytest.mark.parametrize("kind", KINDS)
def test_zlib_baseline(benchmark, kind: str) -> None:  # type: ignore[no-untyped-def]
    w = minute(kind)
    benchmark.group = f"raw archive, {kind}"
    benchmark.extra_info.update(sizes(w))
    row = old_row(w)

    def round_trip() -> bytes:
        return zlib.decompress(zlib.compress(b"".join(row[1:])))

    assert benchmark(round_trip) == b"".join(row[1:])
