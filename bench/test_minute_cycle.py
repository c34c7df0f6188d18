"""The minute cycle's kernels against a numpy reference and a memcpy of the same input.

Run with `make bench`. Each group measures, in the same run: the numba kernels, the
numpy reference of tests/compute/reference.py, and a plain copy of the input arrays
(the floor: no calculation can be faster than reading its input once).
"""

from __future__ import annotations

import numpy as np
import pytest

from compute import kernels as k
from tests.compute import reference as ref

SAMPLES = 60


def make_inputs(n_src: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    n_tags = n_src * k.N_INPUTS
    # Per input column: velocity m/s, CO2 %, temperature °C, static Pa, baro Pa, moisture %.
    centre = np.array([18.0, 12.5, 50.0, -400.0, 101_000.0, 10.0])
    spread = np.array([1.0, 0.2, 1.0, 20.0, 100.0, 0.3])
    values = rng.normal(np.tile(centre, n_src)[:, None], np.tile(spread, n_src)[:, None],
                        (n_tags, SAMPLES))
    flags = np.where(rng.random((n_tags, SAMPLES)) < 0.02, 3, 0).astype(np.uint8)
    return {"values": values, "flags": flags,
            "counts": np.full(n_tags, SAMPLES, np.int64),
            "params": np.tile(np.array([20.0, 0.0, 0.0]), (n_src, 1))}


def numba_cycle(d: dict[str, np.ndarray]) -> np.ndarray:
    n_tags = d["values"].shape[0]
    mean, lo, hi = np.empty(n_tags), np.empty(n_tags), np.empty(n_tags)
    count, flag = np.empty(n_tags, np.int64), np.empty(n_tags, np.uint8)
    k.tag_minute_stats(d["values"], d["flags"], d["counts"], 12, mean, lo, hi, count, flag)
    n_src = n_tags // k.N_INPUTS
    out = np.empty((n_src, k.N_OUT))
    src_flag = np.empty(n_src, np.uint8)
    k.cems_minute(mean.reshape(n_src, k.N_INPUTS), flag.reshape(n_src, k.N_INPUTS),
                  d["params"], 273.15, 101325.0, 1.964, 1 / 60, out, src_flag)
    return out


def numpy_cycle(d: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    mean, *_ = ref.tag_minute_stats(d["values"], d["flags"], d["counts"], 12)
    m = mean.reshape(-1, k.N_INPUTS)
    return ref.cems(m[:, 0], d["params"][:, 0], m[:, 2], m[:, 4], m[:, 3], m[:, 5] / 100,
                    m[:, 1], d["params"][:, 1] > 0.5)


SIZES = [1_000, 10_000]


@pytest.mark.parametrize("n_src", SIZES)
def test_numba(benchmark, n_src: int) -> None:  # type: ignore[no-untyped-def]
    d = make_inputs(n_src)
    benchmark.group = f"minute cycle {n_src} sources x {SAMPLES} samples x 6 inputs"
    out = benchmark(numba_cycle, d)
    want = numpy_cycle(d)
    np.testing.assert_allclose(out[:, k.OUT_MASS], want["mass"], rtol=1e-9)


@pytest.mark.parametrize("n_src", SIZES)
def test_numpy_reference(benchmark, n_src: int) -> None:  # type: ignore[no-untyped-def]
    d = make_inputs(n_src)
    benchmark.group = f"minute cycle {n_src} sources x {SAMPLES} samples x 6 inputs"
    benchmark(numpy_cycle, d)


@pytest.mark.parametrize("n_src", SIZES)
def test_memcpy_baseline(benchmark, n_src: int) -> None:  # type: ignore[no-untyped-def]
    d = make_inputs(n_src)
    dst_v, dst_f = np.empty_like(d["values"]), np.empty_like(d["flags"])
    benchmark.group = f"minute cycle {n_src} sources x {SAMPLES} samples x 6 inputs"

    def copy() -> None:
        np.copyto(dst_v, d["values"])
        np.copyto(dst_f, d["flags"])
    benchmark(copy)
