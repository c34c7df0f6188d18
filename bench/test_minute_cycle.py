"""The minute cycle's kernels against a numpy reference and a memcpy of the same input.

Run with `make bench`. Each group measures, in the same run: the numba kernels (the
path MinuteCalculator.compute takes), the numpy reference of tests/compute/reference.py,
and a plain copy of the input arrays (the floor: no calculation can be faster than
reading its input once). Targets: 100k sources in at most 3× the copy, numba at least
5× faster than numpy.

With `--benchmark-disable` (make test) every case runs once, as a correctness check.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from compute import kernels as k
from compute.minute import SourceArrays, run_kernels
from tests.compute import reference as ref

SAMPLES = 60
TAGS_PER_SOURCE = 6
SIZES = [1_000, 10_000, 100_000]
REPO = Path(__file__).resolve().parents[1]
# The six tags of a source, in tag order, and the input column each feeds. Barometric
# pressure is a constant; O2 wet is not measured.
TAG_COLUMNS = [k.FLOW, k.CO2, k.TEMP, k.STATIC, k.MOIST, k.O2_DRY]


@functools.cache
def make_inputs(n_src: int) -> dict[str, np.ndarray]:
    """A window of n_src sources × 6 tags × 60 samples; a third of each flow mode.

    Every source has an O2 analyser and bituminous-coal F-factors; 2 % of samples are
    flagged B and 1 % of the CO2 analysers are out all minute (flag D), so some
    minutes take CO2 from O2.
    """
    rng = np.random.default_rng(1)
    n_tags = n_src * TAGS_PER_SOURCE
    mode = np.arange(n_src) % 3  # 0 velocity m/s, 1 actual flow m³/h, 2 pitot Pd
    flow_centre = np.choose(mode, [18.0, 1.5e6, 200.0])
    # Per tag: flow, CO2 %, temperature °C, static Pa, moisture %, O2 % dry.
    centre = np.tile(np.array([0.0, 12.5, 50.0, -400.0, 10.0, 6.0]), (n_src, 1))
    centre[:, 0] = flow_centre
    spread = np.tile(np.array([0.0, 0.2, 1.0, 20.0, 0.3, 0.2]), (n_src, 1))
    spread[:, 0] = flow_centre * 0.05
    values = rng.normal(centre.reshape(-1, 1), spread.reshape(-1, 1), (n_tags, SAMPLES))
    flags = np.where(rng.random((n_tags, SAMPLES)) < 0.02, 3, 0).astype(np.uint8)
    co2_out = np.flatnonzero(rng.random(n_src) < 0.01) * TAGS_PER_SOURCE + 1
    flags[co2_out] = 4
    src_tag = np.full((n_src, k.N_INPUTS), -1, np.int64)
    src_tag[:, TAG_COLUMNS] = np.arange(n_tags).reshape(n_src, TAGS_PER_SOURCE)
    src_const = np.full((n_src, k.N_INPUTS), np.nan)
    src_const[:, k.BARO] = 101_000.0
    params = np.zeros((n_src, k.N_PARAMS))
    params[:, k.AREA] = 20.0
    params[:, k.FLOW_MODE] = np.choose(mode, [k.FLOW_VELOCITY, k.FLOW_ACTUAL, k.FLOW_PITOT])
    params[:, k.KP] = 0.84
    params[:, k.KV] = 1.0
    params[:, k.O2_MODE] = 1.0
    params[:, k.FC_FD] = 1800.0 / 9780.0
    return {"values": values, "flags": flags, "counts": np.full(n_tags, SAMPLES, np.int64),
            "src_tag": src_tag, "src_const": src_const, "params": params}


def numba_cycle(d: dict[str, np.ndarray]) -> SourceArrays:
    _, src = run_kernels(d["values"], d["flags"], d["counts"], 12, d["src_tag"],
                         d["src_const"], d["params"], 273.15, 101325.0, 1.964, 1 / 60)
    return src


def numpy_cycle(d: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    mean, _, _, _, flag = ref.tag_minute_stats(d["values"], d["flags"], d["counts"], 12)
    inputs, input_flags = ref.gather(mean, flag, d["src_tag"], d["src_const"])
    return ref.cems_matrix(inputs, input_flags, d["params"])


def group(n_src: int) -> str:
    return f"minute cycle {n_src} sources x {SAMPLES} samples x {TAGS_PER_SOURCE} inputs"


@pytest.mark.parametrize("n_src", SIZES)
def test_numba(benchmark, n_src: int) -> None:  # type: ignore[no-untyped-def]
    d = make_inputs(n_src)
    benchmark.group = group(n_src)
    got = benchmark(numba_cycle, d)
    want = numpy_cycle(d)
    for col, key in ((k.OUT_FLOW_SD, "q_sd"), (k.OUT_CO2_DRY, "c_dry"), (k.OUT_MASS, "mass"),
                     (k.OUT_VELOCITY, "v")):
        np.testing.assert_allclose(got.cems[:, col], want[key], rtol=1e-9, equal_nan=True)
    np.testing.assert_array_equal(got.flag, want["flag"])
    np.testing.assert_array_equal(got.substitution, want["sub"])
    assert got.substitution.any()  # the F-factor path is part of what is measured


@pytest.mark.parametrize("n_src", SIZES)
def test_numpy_reference(benchmark, n_src: int) -> None:  # type: ignore[no-untyped-def]
    d = make_inputs(n_src)
    benchmark.group = group(n_src)
    benchmark(numpy_cycle, d)


@pytest.mark.parametrize("n_src", SIZES)
def test_memcpy_baseline(benchmark, n_src: int) -> None:  # type: ignore[no-untyped-def]
    d = make_inputs(n_src)
    dst_v, dst_f = np.empty_like(d["values"]), np.empty_like(d["flags"])
    benchmark.group = group(n_src)

    def copy() -> None:
        np.copyto(dst_v, d["values"])
        np.copyto(dst_f, d["flags"])
    benchmark(copy)


COLD_START = """
import json
from compute import kernels as k
k.warm_up()
dispatchers = {"tag_minute_stats": k.tag_minute_stats, "gather_inputs": k.gather_inputs,
               "cems_minute": k.cems_minute}

def stats():
    return {name: {"hits": sum(d.stats.cache_hits.values()),
                   "misses": sum(d.stats.cache_misses.values()),
                   "signatures": len(d.signatures)} for name, d in dispatchers.items()}

after_warm_up = stats()
# A real minute of the fixture plant must find every signature warm_up loaded.
from compute.minute import MinuteCalculator
from compute.tagstore import TagStore
from tests.fixtures.plant import plant_plan
calc = MinuteCalculator(plant_plan())
store = TagStore(calc.tag_ids, capacity=64)
for i in range(12):
    for t in range(len(calc.tag_ids)):
        store.append(t, 60.0 + i, 1.0, 0)
calc.compute(store.take(60.0, 120.0))
print(json.dumps({"after_warm_up": after_warm_up, "after_minute": stats()}))
"""


def fresh_process_stats() -> dict[str, dict[str, dict[str, int]]]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("NUMBA_DISABLE_JIT", None)
    r = subprocess.run([sys.executable, "-c", COLD_START], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stderr
    result: dict[str, dict[str, dict[str, int]]] = json.loads(r.stdout.splitlines()[-1])
    return result


def test_cold_start_compiles_nothing_when_the_cache_is_warm() -> None:
    fresh_process_stats()  # fills the on-disk cache if this checkout has none yet
    s = fresh_process_stats()
    for name, st in s["after_warm_up"].items():
        # every signature warm_up needs (one per call shape: single minute, batch) came
        # from the on-disk cache, none was compiled
        assert st["misses"] == 0 and st["hits"] == st["signatures"] >= 1, (name, st)
    assert s["after_minute"] == s["after_warm_up"]
