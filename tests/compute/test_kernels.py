"""The minute kernels against ../shared/reference/calc_vectors.md and the numpy reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from compute import kernels as k
from tests.compute import reference as ref


def printed(value: float, decimals: int) -> object:
    """Equality to a figure printed in calc_vectors.md, rounded to `decimals` places."""
    return pytest.approx(value, abs=0.5 * 10.0**-decimals, rel=0)


def run_cems(v: float, co2: float, t: float, ps: float, ba: float, moist_pct: float,
             area: float, wet: bool = False, t0: float = 273.15) -> np.ndarray:
    inputs = np.zeros((1, k.N_INPUTS))
    inputs[0, [k.FLOW, k.CO2, k.TEMP, k.STATIC, k.BARO, k.MOIST]] = [v, co2, t, ps, ba,
                                                                     moist_pct]
    params = np.zeros((1, k.N_PARAMS))
    params[0, k.AREA] = area
    params[0, k.CO2_WET] = 1.0 if wet else 0.0
    out = np.empty((1, k.N_OUT))
    flag = np.empty(1, np.uint8)
    k.cems_minute(inputs, np.zeros((1, k.N_INPUTS), np.uint8), params, t0, 101325.0, 1.964,
                  1 / 60, out, flag)
    assert flag[0] == 0
    return out[0]


def test_cems_worked_example() -> None:
    # calc_vectors.md, CEMS: v 15 m/s, A 20 m², t 50 °C, Ba 101325, Ps -500, Xsw 0.08, 12 % dry
    out = run_cems(15.0, 12.0, 50.0, -500.0, 101325.0, 8.0, 20.0)
    assert out[k.OUT_FLOW_ACT] == pytest.approx(1_080_000, rel=1e-12)
    assert out[k.OUT_FLOW_SD] == printed(835_718.9, 1)
    assert out[k.OUT_CO2_MG] == pytest.approx(235_680, rel=1e-12)
    assert out[k.OUT_RATE] == printed(196_962.2, 1)
    assert out[k.OUT_MASS] == printed(3_282.70, 2)


def test_cems_with_t0_273_as_printed_in_hj212() -> None:
    out = run_cems(15.0, 12.0, 50.0, -500.0, 101325.0, 8.0, 20.0, t0=273.0)
    assert out[k.OUT_FLOW_SD] == printed(835_647.9, 1)


def test_wet_to_dry() -> None:
    # 11.04 % wet at Xsw 0.08 → 12.00 % dry
    out = run_cems(15.0, 11.04, 50.0, -500.0, 101325.0, 8.0, 20.0, wet=True)
    assert out[k.OUT_CO2_DRY] == pytest.approx(12.00, rel=1e-12)
    assert out[k.OUT_MASS] == printed(3_282.70, 2)


def test_actual_flow_input_bypasses_area() -> None:
    inputs = np.array([[1_080_000.0, 12.0, 50.0, -500.0, 101325.0, 8.0]])
    params = np.array([[0.0, 0.0, 1.0]])
    out = np.empty((1, k.N_OUT))
    flag = np.empty(1, np.uint8)
    k.cems_minute(inputs, np.zeros((1, 6), np.uint8), params, 273.15, 101325.0, 1.964, 1 / 60,
                  out, flag)
    assert out[0, k.OUT_MASS] == printed(3_282.70, 2)


def test_source_flag_is_worst_input_flag() -> None:
    inputs = np.ones((1, k.N_INPUTS))
    flags = np.array([[0, 3, 0, 5, 0, 0]], np.uint8)  # B on CO2, C on static pressure
    out = np.empty((1, k.N_OUT))
    flag = np.empty(1, np.uint8)
    k.cems_minute(inputs, flags, np.ones((1, 3)), 273.15, 101325.0, 1.964, 1 / 60, out, flag)
    assert flag[0] == 5


def stats(values: np.ndarray, flags: np.ndarray, counts: np.ndarray, min_valid: int
          ) -> tuple[np.ndarray, ...]:
    n = values.shape[0]
    out = (np.empty(n), np.empty(n), np.empty(n), np.empty(n, np.int64), np.empty(n, np.uint8))
    k.tag_minute_stats(values, flags, counts, min_valid, *out)
    return out


def test_minute_stats_validity_rule() -> None:
    # 12 valid samples make a valid minute (HJ 212 annex D); 11 valid + 1 flagged D do not.
    vals = np.tile(np.arange(1.0, 13.0), (2, 1))
    flags = np.zeros((2, 12), np.uint8)
    flags[1, 0] = 4
    mean, lo, hi, n, flag = stats(vals, flags, np.array([12, 12]), 12)
    assert mean[0] == pytest.approx(6.5) and lo[0] == 1.0 and hi[0] == 12.0
    assert n.tolist() == [12, 11]
    assert flag.tolist() == [0, 4]
    assert mean[1] == pytest.approx(7.0)  # statistics of the valid samples are kept


def test_tag_with_no_samples_is_communication_failure() -> None:
    mean, _, _, n, flag = stats(np.zeros((1, 4)), np.zeros((1, 4), np.uint8),
                                np.array([0]), 12)
    assert np.isnan(mean[0]) and n[0] == 0 and flag[0] == 3


flags_st = st.sampled_from([0, 0, 0, 0, 3, 4, 5, 7])


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_minute_stats_equal_reference(data: st.DataObject) -> None:
    n_tags = data.draw(st.integers(1, 12))
    width = data.draw(st.integers(1, 40))
    values = data.draw(hnp.arrays(np.float64, (n_tags, width), elements=st.one_of(
        st.floats(-1e6, 1e6), st.just(np.nan))))
    flags = data.draw(hnp.arrays(np.uint8, (n_tags, width), elements=flags_st))
    counts = data.draw(hnp.arrays(np.int64, n_tags, elements=st.integers(0, width)))
    min_valid = data.draw(st.integers(1, 15))
    got = stats(values, flags, counts, min_valid)
    want = ref.tag_minute_stats(values, flags, counts, min_valid)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-6, equal_nan=True)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_cems_equals_reference(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 20))

    def col(lo: float, hi: float) -> np.ndarray:
        return data.draw(hnp.arrays(np.float64, n, elements=st.floats(lo, hi)))

    v, area, t, ps = col(0, 40), col(0.5, 60), col(-20, 400), col(-5000, 5000)
    ba, xsw, co2 = col(80_000, 110_000), col(0, 0.4), col(0, 25)
    wet = data.draw(hnp.arrays(np.bool_, n))
    inputs = np.stack([v, co2, t, ps, ba, xsw * 100], axis=1)
    params = np.stack([area, wet.astype(float), np.zeros(n)], axis=1)
    out = np.empty((n, k.N_OUT))
    flag = np.empty(n, np.uint8)
    k.cems_minute(inputs, np.zeros((n, 6), np.uint8), params, 273.15, 101325.0, 1.964, 1 / 60,
                  out, flag)
    want = ref.cems(v, area, t, ba, ps, xsw, co2, wet)
    for col_i, key in ((k.OUT_FLOW_ACT, "q_act"), (k.OUT_FLOW_SD, "q_sd"),
                       (k.OUT_CO2_DRY, "c_dry"), (k.OUT_CO2_MG, "mg"), (k.OUT_RATE, "rate"),
                       (k.OUT_MASS, "mass")):
        np.testing.assert_allclose(out[:, col_i], want[key], rtol=1e-9, atol=1e-9)
