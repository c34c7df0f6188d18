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


PARAM = {"area": k.AREA, "co2_wet": k.CO2_WET, "flow_mode": k.FLOW_MODE, "kp": k.KP,
         "kv": k.KV, "md": k.MD, "moist_from_o2": k.MOIST_MODE, "o2_mode": k.O2_MODE,
         "fc_fd": k.FC_FD}
INPUT = {"flow": k.FLOW, "co2": k.CO2, "temp": k.TEMP, "static": k.STATIC, "baro": k.BARO,
         "moist": k.MOIST, "o2_dry": k.O2_DRY, "o2_wet": k.O2_WET}
# calc_vectors.md, CEMS: t 50 °C, Ba 101325 Pa, Ps −500 Pa, Xsw 0.08, CO2 12.0 % dry, A 20 m²
WORKED = {"flow": 15.0, "co2": 12.0, "temp": 50.0, "static": -500.0, "baro": 101325.0,
          "moist": 8.0}
# Bituminous coal, US EPA Method 19 table 19-2: Fc 1800 scf/MMBtu, Fd 9780 dscf/MMBtu.
FC_FD_BITUMINOUS = 1800.0 / 9780.0


def one_source(values: dict[str, float], flags: dict[str, int] | None = None,
               t0: float = 273.15, **params: float) -> tuple[np.ndarray, int, int]:
    """cems_minute on one source given by input and parameter names; (out, flag, sub)."""
    inputs = np.full((1, k.N_INPUTS), np.nan)
    for name, v in values.items():
        inputs[0, INPUT[name]] = v
    fl = np.zeros((1, k.N_INPUTS), np.uint8)
    for name, f in (flags or {}).items():
        fl[0, INPUT[name]] = f
    p = np.zeros((1, k.N_PARAMS))
    p[0, k.AREA] = 20.0
    for name, v in params.items():
        p[0, PARAM[name]] = v
    out = np.empty((1, k.N_OUT))
    flag = np.empty(1, np.uint8)
    sub = np.empty(1, np.uint8)
    k.cems_minute(inputs, fl, p, t0, 101325.0, 1.964, 1 / 60, out, flag, sub)
    return out[0], int(flag[0]), int(sub[0])


def run_cems(v: float, co2: float, t: float, ps: float, ba: float, moist_pct: float,
             area: float, wet: bool = False, t0: float = 273.15) -> np.ndarray:
    out, flag, sub = one_source({"flow": v, "co2": co2, "temp": t, "static": ps, "baro": ba,
                                 "moist": moist_pct}, t0=t0, area=area,
                                co2_wet=1.0 if wet else 0.0)
    assert flag == 0 and sub == 0
    return out


def test_cems_worked_example() -> None:
    # calc_vectors.md, CEMS: v 15 m/s, A 20 m², t 50 °C, Ba 101325, Ps -500, Xsw 0.08, 12 % dry
    out = run_cems(15.0, 12.0, 50.0, -500.0, 101325.0, 8.0, 20.0)
    assert out[k.OUT_FLOW_ACT] == pytest.approx(1_080_000, rel=1e-12)
    assert out[k.OUT_FLOW_SD] == printed(835_718.9, 1)
    assert out[k.OUT_CO2_MG] == pytest.approx(235_680, rel=1e-12)
    assert out[k.OUT_RATE] == printed(196_962.2, 1)
    assert out[k.OUT_MASS] == printed(3_282.70, 2)
    assert out[k.OUT_VELOCITY] == 15.0 and out[k.OUT_XSW] == pytest.approx(0.08, rel=1e-12)
    assert np.isnan(out[k.OUT_RHO_FLUE])  # no pitot, no flue-gas density


def test_cems_with_t0_273_as_printed_in_hj212() -> None:
    out = run_cems(15.0, 12.0, 50.0, -500.0, 101325.0, 8.0, 20.0, t0=273.0)
    assert out[k.OUT_FLOW_SD] == printed(835_647.9, 1)


def test_wet_to_dry() -> None:
    # 11.04 % wet at Xsw 0.08 → 12.00 % dry
    out = run_cems(15.0, 11.04, 50.0, -500.0, 101325.0, 8.0, 20.0, wet=True)
    assert out[k.OUT_CO2_DRY] == pytest.approx(12.00, rel=1e-12)
    assert out[k.OUT_MASS] == printed(3_282.70, 2)


def test_actual_flow_input_bypasses_area() -> None:
    out, flag, _ = one_source({**WORKED, "flow": 1_080_000.0}, area=0.0,
                              flow_mode=k.FLOW_ACTUAL)
    assert out[k.OUT_MASS] == printed(3_282.70, 2)
    assert np.isnan(out[k.OUT_VELOCITY]) and flag == 0


def test_source_flag_is_worst_input_flag() -> None:
    _, flag, _ = one_source(WORKED, {"co2": 3, "static": 5})  # B on CO2, C on static pressure
    assert flag == 5


def test_inputs_a_source_does_not_use_do_not_flag_it() -> None:
    # An O2 analyser kept for the F-factor only: in calibration while CO2 is fine.
    _, flag, sub = one_source({**WORKED, "o2_dry": 6.0}, {"o2_dry": 5}, o2_mode=1,
                              fc_fd=FC_FD_BITUMINOUS)
    assert (flag, sub) == (0, 0)


# Pitot: Pd 150 Pa, Kp 0.84, Kv 1.0, t 50 °C, Ba 101325 Pa, Ps −500 Pa, Xsw 0.08,
# CO2 12 % dry, O2 6 % dry, A 20 m². By hand (bc -l):
#   Md = 0.44·12 + 0.32·6 + 0.28·(100 − 12 − 6) = 5.28 + 1.92 + 22.96 = 30.16 g/mol
#   Ms = 30.16·(1 − 0.08) + 18.0·0.08 = 27.7472 + 1.44 = 29.1872 g/mol
#   ρs = 29.1872/22.414 · 273.15/323.15 · (101325 − 500)/101325
#      = 1.302186134 · 0.845273093 · 0.995065384 = 1.095271354 kg/m³
#   v  = 1.0 · 0.84 · sqrt(2·150/1.095271354) = 0.84 · sqrt(273.9047258)
#      = 0.84 · 16.55006724 = 13.90205649 m/s
#   Q_act = 3600 · 13.90205649 · 20 = 1 000 948.067 m³/h
#   Q_sd  = 1 000 948.067 · 0.845273093 · 0.995065384 · 0.92 = 774 547.462 m³/h
#   G     = 12/100 · 1.964 · 774 547.462 = 182 545.346 kg/h; minute 3 042.42243 kg
PITOT = {"flow": 150.0, "co2": 12.0, "temp": 50.0, "static": -500.0, "baro": 101325.0,
         "moist": 8.0, "o2_dry": 6.0}


def test_pitot_worked_example() -> None:
    out, flag, sub = one_source(PITOT, flow_mode=k.FLOW_PITOT, kp=0.84, kv=1.0, o2_mode=1)
    assert out[k.OUT_RHO_FLUE] == pytest.approx(1.095271354, rel=1e-9)
    assert out[k.OUT_VELOCITY] == pytest.approx(13.90205649, rel=1e-9)
    assert out[k.OUT_FLOW_ACT] == pytest.approx(1_000_948.067, rel=1e-9)
    assert out[k.OUT_FLOW_SD] == pytest.approx(774_547.462, rel=1e-9)
    assert out[k.OUT_RATE] == pytest.approx(182_545.346, rel=1e-9)
    assert out[k.OUT_MASS] == pytest.approx(3_042.42243, rel=1e-9)
    assert (flag, sub) == (0, 0)


def test_pitot_velocity_field_coefficient_scales_velocity() -> None:
    out, _, _ = one_source(PITOT, flow_mode=k.FLOW_PITOT, kp=0.84, kv=0.95, o2_mode=1)
    assert out[k.OUT_VELOCITY] == pytest.approx(0.95 * 13.90205649, rel=1e-9)


def test_pitot_without_o2_uses_configured_dry_molar_mass() -> None:
    # Md 30.0 → Ms = 30.0·0.92 + 18.0·0.08 = 29.04 g/mol;
    # ρs = 29.04/22.414 · 0.845273093 · 0.995065384 = 1.089747565 kg/m³;
    # v = 0.84 · sqrt(300/1.089747565) = 13.93724581 m/s
    no_o2 = {n: v for n, v in PITOT.items() if n != "o2_dry"}
    out, _, _ = one_source(no_o2, flow_mode=k.FLOW_PITOT, kp=0.84, kv=1.0, md=30.0)
    assert out[k.OUT_RHO_FLUE] == pytest.approx(1.089747565, rel=1e-9)
    assert out[k.OUT_VELOCITY] == pytest.approx(13.93724581, rel=1e-9)


def test_pitot_density_uses_o2_flag() -> None:
    _, flag, _ = one_source(PITOT, {"o2_dry": 4}, flow_mode=k.FLOW_PITOT, kp=0.84, kv=1.0,
                            o2_mode=1)
    assert flag == 4


def test_negative_dynamic_pressure_is_no_flow_and_nan_stays_nan() -> None:
    out, _, _ = one_source({**PITOT, "flow": -2.0}, flow_mode=k.FLOW_PITOT, kp=0.84, kv=1.0,
                           o2_mode=1)
    assert out[k.OUT_VELOCITY] == 0.0 and out[k.OUT_MASS] == 0.0
    out, flag, _ = one_source({**PITOT, "flow": np.nan}, {"flow": 3}, flow_mode=k.FLOW_PITOT,
                              kp=0.84, kv=1.0, o2_mode=1)
    assert np.isnan(out[k.OUT_VELOCITY]) and np.isnan(out[k.OUT_MASS]) and flag == 3


# F-factor, bituminous coal, O2 6 % dry (US EPA Method 19):
#   Fc/Fd = 1800/9780 = 0.184049080
#   CO2 = 100 · 0.184049080 · (20.9 − 6)/20.9 = 18.4049080 · 0.712918660 = 13.12120234 % dry
F_FACTOR_CO2 = 13.12120234


def test_f_factor_substitutes_co2_when_analyser_is_out() -> None:
    # CO2 analyser in maintenance (M = 6, mean NaN), O2 valid; the rest as calc_vectors.md:
    #   Q_sd = 835 718.942 m³/h (worked example)
    #   G = 13.12120234/100 · 1.964 · 835 718.942 = 215 365.117 kg/h; minute 3 589.41862 kg
    out, flag, sub = one_source({**WORKED, "co2": np.nan, "o2_dry": 6.0}, {"co2": 6},
                                o2_mode=1, fc_fd=FC_FD_BITUMINOUS)
    assert out[k.OUT_CO2_DRY] == pytest.approx(F_FACTOR_CO2, rel=1e-9)
    assert out[k.OUT_CO2_MG] == pytest.approx(F_FACTOR_CO2 * 1.964e4, rel=1e-9)
    assert out[k.OUT_RATE] == pytest.approx(215_365.117, rel=1e-9)
    assert out[k.OUT_MASS] == pytest.approx(3_589.41862, rel=1e-9)
    assert (flag, sub) == (0, k.SUB_F_FACTOR_O2)
    assert k.SUBSTITUTION_RULES[sub] == "f_factor_o2"


def test_f_factor_result_is_dry_even_for_a_wet_co2_analyser() -> None:
    out, _, sub = one_source({**WORKED, "co2": np.nan, "o2_dry": 6.0}, {"co2": 4},
                             co2_wet=1.0, o2_mode=1, fc_fd=FC_FD_BITUMINOUS)
    assert out[k.OUT_CO2_DRY] == pytest.approx(F_FACTOR_CO2, rel=1e-9) and sub == 1


def test_f_factor_from_wet_o2_and_measured_moisture() -> None:
    # O2 wet 5.52 % at Xsw 0.08 → 5.52/0.92 = 6.0 % dry → same CO2 as above.
    out, _, sub = one_source({**WORKED, "co2": np.nan, "o2_wet": 5.52}, {"co2": 3},
                             o2_mode=2, fc_fd=FC_FD_BITUMINOUS)
    assert out[k.OUT_CO2_DRY] == pytest.approx(F_FACTOR_CO2, rel=1e-9) and sub == 1


def test_no_f_factor_when_o2_is_invalid_too() -> None:
    out, flag, sub = one_source({**WORKED, "co2": np.nan, "o2_dry": 6.0},
                                {"co2": 6, "o2_dry": 4}, o2_mode=1, fc_fd=FC_FD_BITUMINOUS)
    assert (flag, sub) == (6, 0) and np.isnan(out[k.OUT_MASS])


def test_no_f_factor_when_co2_is_valid_or_not_configured() -> None:
    out, _, sub = one_source({**WORKED, "o2_dry": 6.0}, o2_mode=1, fc_fd=FC_FD_BITUMINOUS)
    assert out[k.OUT_CO2_DRY] == 12.0 and sub == 0
    _, flag, sub = one_source({**WORKED, "co2": np.nan, "o2_dry": 6.0}, {"co2": 6}, o2_mode=1)
    assert (flag, sub) == (6, 0)


def test_f_factor_minute_keeps_the_other_inputs_flags() -> None:
    _, flag, sub = one_source({**WORKED, "co2": np.nan, "o2_dry": 6.0}, {"co2": 6, "temp": 4},
                              o2_mode=1, fc_fd=FC_FD_BITUMINOUS)
    assert (flag, sub) == (4, 1)


def test_moisture_from_wet_and_dry_o2() -> None:
    # Xsw = 1 − 5.52/6.0 = 1 − 0.92 = 0.08: the calc_vectors.md worked example again.
    values = {n: v for n, v in WORKED.items() if n != "moist"} | {"o2_wet": 5.52, "o2_dry": 6.0}
    out, flag, _ = one_source(values, moist_from_o2=1.0, o2_mode=1)
    assert out[k.OUT_XSW] == pytest.approx(0.08, rel=1e-12)
    assert out[k.OUT_FLOW_SD] == printed(835_718.9, 1)
    assert out[k.OUT_MASS] == printed(3_282.70, 2)
    assert flag == 0
    _, flag, _ = one_source(values, {"o2_wet": 5}, moist_from_o2=1.0, o2_mode=1)
    assert flag == 5  # the derived moisture carries its inputs' flags


def test_gather_inputs_reads_tags_and_constants() -> None:
    mean = np.array([1.5, 2.5])
    tflag = np.array([0, 4], np.uint8)
    src_tag = np.array([[1, -1, 0]])
    const = np.array([[np.nan, 7.0, np.nan]])
    inputs = np.empty((1, 3))
    flags = np.empty((1, 3), np.uint8)
    k.gather_inputs(mean, tflag, src_tag, const, inputs, flags)
    assert inputs.tolist() == [[2.5, 7.0, 1.5]] and flags.tolist() == [[4, 0, 0]]


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
    inputs = np.full((n, k.N_INPUTS), np.nan)
    inputs[:, :6] = np.stack([v, co2, t, ps, ba, xsw * 100], axis=1)
    params = np.zeros((n, k.N_PARAMS))
    params[:, k.AREA] = area
    params[:, k.CO2_WET] = wet
    out = np.empty((n, k.N_OUT))
    flag = np.empty(n, np.uint8)
    sub = np.empty(n, np.uint8)
    k.cems_minute(inputs, np.zeros((n, k.N_INPUTS), np.uint8), params, 273.15, 101325.0,
                  1.964, 1 / 60, out, flag, sub)
    want = ref.cems(v, area, t, ba, ps, xsw, co2, wet)
    for col_i, key in ((k.OUT_FLOW_ACT, "q_act"), (k.OUT_FLOW_SD, "q_sd"),
                       (k.OUT_CO2_DRY, "c_dry"), (k.OUT_CO2_MG, "mg"), (k.OUT_RATE, "rate"),
                       (k.OUT_MASS, "mass")):
        np.testing.assert_allclose(out[:, col_i], want[key], rtol=1e-9, atol=1e-9)


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_cems_every_mode_equals_reference(data: st.DataObject) -> None:
    """Random modes, values and flags (invalid inputs with NaN means) against the reference."""
    n = data.draw(st.integers(1, 24))

    def col(lo: float, hi: float) -> np.ndarray:
        return data.draw(hnp.arrays(np.float64, n, elements=st.floats(lo, hi)))

    flow_mode = data.draw(hnp.arrays(np.float64, n, elements=st.sampled_from(
        [k.FLOW_VELOCITY, k.FLOW_ACTUAL, k.FLOW_PITOT])))
    flow = np.where(flow_mode == k.FLOW_ACTUAL, col(0, 4e6),
                    np.where(flow_mode == k.FLOW_PITOT, col(-20, 2000), col(0, 40)))
    o2_dry = col(1, 20)
    xsw = col(0, 0.4)
    inputs = np.stack([flow, col(0, 25), col(-20, 400), col(-5000, 5000), col(80_000, 110_000),
                       xsw * 100, o2_dry, o2_dry * (1 - col(0, 0.4))], axis=1)
    flags = data.draw(hnp.arrays(np.uint8, (n, k.N_INPUTS), elements=flags_st))
    # An invalid minute's mean is NaN when it had no valid sample at all.
    nan_mean = data.draw(hnp.arrays(np.bool_, (n, k.N_INPUTS)))
    inputs[(flags != 0) & nan_mean] = np.nan
    moist_from_o2 = data.draw(hnp.arrays(np.bool_, n))
    o2_mode = np.where(moist_from_o2, 1.0, data.draw(hnp.arrays(
        np.float64, n, elements=st.sampled_from([0.0, 1.0, 2.0]))))
    fc_fd = np.where(data.draw(hnp.arrays(np.bool_, n)), col(0.1, 0.2), 0.0)
    params = np.stack([col(0.5, 60), data.draw(hnp.arrays(np.bool_, n)).astype(float),
                       flow_mode, col(0.5, 1.0), col(0.8, 1.2), col(28, 31),
                       moist_from_o2.astype(float), o2_mode, fc_fd], axis=1)
    assert params.shape[1] == k.N_PARAMS
    out = np.empty((n, k.N_OUT))
    flag = np.empty(n, np.uint8)
    sub = np.empty(n, np.uint8)
    k.cems_minute(inputs, flags, params, 273.15, 101325.0, 1.964, 1 / 60, out, flag, sub)
    want = ref.cems_matrix(inputs, flags, params)
    for col_i, key in ((k.OUT_FLOW_ACT, "q_act"), (k.OUT_FLOW_SD, "q_sd"),
                       (k.OUT_CO2_DRY, "c_dry"), (k.OUT_CO2_MG, "mg"), (k.OUT_RATE, "rate"),
                       (k.OUT_MASS, "mass"), (k.OUT_VELOCITY, "v"), (k.OUT_XSW, "xsw"),
                       (k.OUT_RHO_FLUE, "rho_s")):
        np.testing.assert_allclose(out[:, col_i], want[key], rtol=1e-9, atol=1e-9,
                                   equal_nan=True, err_msg=key)
    np.testing.assert_array_equal(flag, want["flag"])
    np.testing.assert_array_equal(sub, want["sub"])
