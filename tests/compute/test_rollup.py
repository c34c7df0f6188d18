"""Hour / day / month rollups against hand-worked numbers and a plain numpy reference."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from compute import rollup as r
from model.flags import DataFlag


def printed(value: float, decimals: int) -> object:
    """Equality to a figure printed in calc_vectors.md, rounded to `decimals` places."""
    return pytest.approx(value, abs=0.5 * 10.0**-decimals, rel=0)


C_VEC = 12.0  # calc_vectors.md CEMS example: 12.0 % dry
Q_VEC = 835_718.9  # its Q_sd, m³/h
# the hour's mass from those exact inputs: 12.0 · 1.964 = 23.568; 23.568 · 835 718.9 / 100
# = 196 962.230352 kg/h → 196.962230352 t (printed 196.9622 in the brief)
HOUR_T = 196.962230352


def exact(value: float) -> object:
    return pytest.approx(value, rel=1e-12)


def minutes(n_valid: int, bad_flags: list[int] | None = None, n: int = 60
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One source's hour: n_valid valid minutes of the vector, then flagged minutes, then gaps."""
    c = np.full((1, n), C_VEC)
    q = np.full((1, n), Q_VEC)
    f = np.zeros((1, n), np.uint8)
    bad = bad_flags or []
    f[0, n_valid:n_valid + len(bad)] = bad
    c[0, n_valid + len(bad):] = np.nan  # no record
    q[0, n_valid + len(bad):] = np.nan
    return c, q, f


def test_hour_of_identical_minutes_is_the_worked_example() -> None:
    h = r.rollup_hour(*minutes(60))
    assert h.co2_dry_pct[0] == pytest.approx(12.0, rel=1e-12)
    assert h.flow_std_dry_m3_h[0] == pytest.approx(Q_VEC, rel=1e-12)
    assert h.co2_rate_kg_h[0] == printed(196_962.2, 1)
    assert h.co2_t[0] == printed(196.9622, 4)
    assert h.n_valid[0] == 60 and h.flag[0] == 0 and bool(h.valid[0])


def test_hour_is_mean_conc_times_mean_flow_not_sum_of_minute_masses() -> None:
    # C (10, 14) %, Q (100 000, 300 000) m³/h → C_h 12, Q_h 200 000,
    # G_h = 12 · 1.964 · 200 000 / 100 = 47 136 kg/h. Σ minute masses would give 51 064.
    h = r.rollup_hour([[10.0, 14.0]], [[100_000.0, 300_000.0]], [[0, 0]], min_valid=2)
    assert h.co2_rate_kg_h[0] == pytest.approx(47_136.0, rel=1e-12)
    assert h.co2_t[0] == pytest.approx(47.136, rel=1e-12)


def test_44_valid_minutes_make_an_invalid_hour_flagged_by_its_worst_minute() -> None:
    c, q, f = minutes(44, [5] * 10 + [4] * 6)  # 10 calibration, 6 instrument fault
    h = r.rollup_hour(c, q, f)
    assert h.flag[0] == DataFlag.C and not h.valid[0]
    assert h.n_valid[0] == 44
    assert h.co2_t[0] == printed(196.9622, 4)  # statistics of the valid minutes are kept


def test_45_valid_minutes_make_a_valid_hour() -> None:
    h = r.rollup_hour(*minutes(45, [4] * 15))
    assert h.flag[0] == 0 and h.n_valid[0] == 45
    assert h.co2_t[0] == printed(196.9622, 4)


def test_hour_without_minutes_is_communication_failure() -> None:
    h = r.rollup_hour(*minutes(0))
    assert h.flag[0] == DataFlag.B and h.n_valid[0] == 0
    assert np.isnan(h.co2_t[0]) and np.isnan(h.co2_dry_pct[0])


def test_no_minute_slots_at_all_give_b() -> None:
    h = r.rollup_hour(np.empty((2, 0)), np.empty((2, 0)), np.empty((2, 0), np.uint8))
    assert h.flag.tolist() == [DataFlag.B, DataFlag.B] and np.isnan(h.co2_t).all()


def test_gaps_without_flags_give_b() -> None:
    h = r.rollup_hour(*minutes(30))
    assert h.flag[0] == DataFlag.B and h.n_valid[0] == 30


def test_flag_zero_minute_with_nan_flow_is_not_valid() -> None:
    c, q, f = minutes(60)
    q[0, :20] = np.nan
    h = r.rollup_hour(c, q, f)
    assert h.n_valid[0] == 40 and h.flag[0] == DataFlag.B


def test_min_valid_minutes_is_configurable() -> None:
    assert r.rollup_hour(*minutes(30), min_valid=30).flag[0] == 0
    with pytest.raises(ValueError):
        r.rollup_hour(*minutes(30), min_valid=0)


def test_leading_axes_sources_by_hours() -> None:
    c = np.full((3, 24, 60), C_VEC)
    q = np.full((3, 24, 60), Q_VEC)
    f = np.zeros((3, 24, 60), np.uint8)
    f[1, 5, :20] = 6  # source 1, hour 5: maintenance for 20 minutes
    h = r.rollup_hour(c, q, f)
    assert h.co2_t.shape == (3, 24)
    assert h.flag[1, 5] == DataFlag.M and h.flag.sum() == DataFlag.M
    d = r.rollup_day(h)
    assert d.co2_t.shape == (3,)
    assert d.co2_t[0] == printed(4_727.09, 2)
    assert d.co2_t[1] == exact(23 * HOUR_T)  # the invalid hour is missing
    assert d.n_missing.tolist() == [0, 1, 0]


def hours(n_valid: int, bad_flags: list[int]) -> r.HourArrays:
    c, q, f = minutes(60)
    h = r.rollup_hour(np.repeat(c, 24, 0), np.repeat(q, 24, 0), np.repeat(f, 24, 0))
    flag = h.flag.copy()
    flag[n_valid:n_valid + len(bad_flags)] = bad_flags
    return r.HourArrays(h.co2_dry_pct[None], h.flow_std_dry_m3_h[None], h.co2_rate_kg_h[None],
                        h.co2_t[None], h.n_valid[None], flag[None])


def test_day_of_24_valid_hours() -> None:
    d = r.rollup_day(hours(24, []))
    assert d.co2_t[0] == printed(4_727.09, 2)  # 24 × 196.9622 = 4 727.0928
    assert d.co2_t[0] == exact(24 * HOUR_T)
    assert d.co2_measured_t[0] == printed(4_727.09, 2)
    assert np.isnan(d.co2_substitute_t[0])
    assert d.n_valid[0] == 24 and d.flag[0] == 0 and d.valid[0]
    assert d.co2_dry_pct[0] == pytest.approx(12.0) and d.co2_rate_kg_h[0] == printed(196_962.2, 1)


def test_19_valid_hours_make_an_invalid_day() -> None:
    d = r.rollup_day(hours(19, [3, 3, 6, 4, 3]))
    assert not d.valid[0] and d.flag[0] == DataFlag.M
    assert d.n_valid[0] == 19 and d.n_missing[0] == 5
    assert d.co2_t[0] == exact(19 * HOUR_T)


def test_20_valid_hours_make_a_valid_day() -> None:
    d = r.rollup_day(hours(20, [4] * 4), min_valid=20)
    assert d.valid[0] and d.n_valid[0] == 20


def test_substituted_hours_are_included_in_the_day() -> None:
    sub = np.full((1, 24), np.nan)
    sub[0, 20:23] = 200.0  # hours 20–22 substituted, hour 23 not
    sub[0, 0] = 999.0  # a substitute for a valid hour is ignored
    d = r.rollup_day(hours(20, [4, 4, 4, 4]), sub)
    # 20 × 196.962230352 + 3 × 200 = 4 539.24460704
    assert d.co2_t[0] == exact(4_539.24460704)
    assert d.co2_measured_t[0] == exact(3_939.24460704)
    assert d.co2_substitute_t[0] == pytest.approx(600.0)
    assert (d.n_valid[0], d.n_substituted[0], d.n_missing[0]) == (20, 3, 1)


def test_day_without_any_value_is_nan() -> None:
    d = r.rollup_day(hours(0, [3] * 24))
    assert np.isnan(d.co2_t[0]) and np.isnan(d.co2_measured_t[0]) and d.flag[0] == DataFlag.B


def test_month_is_sum_of_days() -> None:
    z = np.zeros((1, 3))
    days = r.DayArrays(co2_dry_pct=z, flow_std_dry_m3_h=z, co2_rate_kg_h=z,
                       co2_t=np.array([[4_727.0928, np.nan, 100.0]]),
                       co2_measured_t=np.zeros((1, 3)), co2_substitute_t=np.zeros((1, 3)),
                       n_valid=np.array([[24, 0, 20]]), n_substituted=np.array([[0, 0, 4]]),
                       n_missing=np.array([[0, 24, 0]]), flag=np.zeros((1, 3), np.uint8))
    m = r.rollup_total(days)
    assert m.co2_t[0] == pytest.approx(4_827.0928, rel=1e-12)
    assert m.n_substituted[0] == 4 and m.n_missing[0] == 24
    y = r.rollup_total(r.rollup_day(hours(0, [3] * 24)))
    assert np.isnan(y.co2_t)


def test_eu_mrr_eq1_hourly_conc_times_flow() -> None:
    # 235·900 000 + 240·950 000 + 238·920 000 g = 658 460 000 g = 658.46 t
    e = r.mass_from_concentration_t([235.0, 240.0, 238.0], [900_000.0, 950_000.0, 920_000.0])
    assert float(e) == printed(658.46, 2)


def test_hour_records() -> None:
    t = datetime(2024, 3, 1, 8, tzinfo=UTC)
    c, q, f = minutes(60)
    c2, q2, f2 = minutes(10, [4] * 50)
    h = r.rollup_hour(np.vstack([c, c2, c2]), np.vstack([q, q2, q2]), np.vstack([f, f2, f2]))
    recs = r.hour_records(["S1", "S2", "S3"], t, h, [5.0, 150.0, np.nan],
                          ["mrr_mean_2sigma", "max_previous_n", "max_previous_n"])
    s1, s2, s3 = recs
    assert s1.valid and s1.flag is DataFlag.N and not s1.substituted and s1.substitution_rule == ""
    assert s1.co2_t == printed(196.9622, 4) and s1.n_valid == 60
    assert not s2.valid and s2.flag is DataFlag.D and s2.substituted
    assert s2.substitution_rule == "max_previous_n" and s2.co2_t == 150.0
    assert s2.co2_measured_t == printed(196.9622, 4)  # measured from 10 minutes, kept
    assert (s2.n_substituted, s2.n_missing) == (1, 0)
    assert not s3.substituted and np.isnan(s3.co2_t) and s3.n_missing == 1
    assert s3.substitution_rule == "" and s3.flag is DataFlag.D


def test_day_records() -> None:
    t = datetime(2024, 3, 1, tzinfo=UTC)
    sub = np.full((1, 24), np.nan)
    sub[0, 20:] = 200.0
    d = r.rollup_day(hours(20, [4, 4, 4, 4]), sub)
    (rec,) = r.day_records(["S1"], t, d, ["mrr_mean_2sigma"])
    assert rec.valid and rec.flag is DataFlag.N and rec.n_valid == 20
    assert rec.substituted and rec.substitution_rule == "mrr_mean_2sigma"
    assert rec.n_substituted == 4 and rec.n_missing == 0
    assert rec.co2_t == exact(20 * HOUR_T + 800)


# --- against a plain numpy implementation -------------------------------------------------

RHO = 1.964


def ref_hour(c: np.ndarray, q: np.ndarray, f: np.ndarray, min_valid: int
             ) -> dict[str, np.ndarray]:
    ok = (f == 0) & np.isfinite(c) & np.isfinite(q)
    n = ok.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ch = np.where(ok, c, 0.0).sum(axis=-1) / n
        qh = np.where(ok, q, 0.0).sum(axis=-1) / n
    ch = np.where(n > 0, ch, np.nan)
    qh = np.where(n > 0, qh, np.nan)
    rate = ch * RHO * qh / 100.0
    worst = f.max(axis=-1)
    flag = np.where(n >= min_valid, 0, np.where(worst > 0, worst, 3))
    return {"co2_dry_pct": ch, "flow_std_dry_m3_h": qh, "co2_rate_kg_h": rate,
            "co2_t": rate / 1000.0, "n_valid": n, "flag": flag}


def ref_day(c: np.ndarray, q: np.ndarray, m: np.ndarray, f: np.ndarray, sub: np.ndarray,
            min_valid: int) -> dict[str, np.ndarray]:
    ok = (f == 0) & np.isfinite(m)
    has_sub = ~ok & np.isfinite(sub)
    n = ok.sum(axis=-1)
    ns = has_sub.sum(axis=-1)
    measured = np.where(n > 0, np.where(ok, m, 0.0).sum(axis=-1), np.nan)
    subst = np.where(ns > 0, np.where(has_sub, sub, 0.0).sum(axis=-1), np.nan)
    total = np.where(n + ns > 0, np.nan_to_num(measured) + np.nan_to_num(subst), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        cd = np.where(n > 0, np.where(ok, c, 0.0).sum(axis=-1) / n, np.nan)
    worst = np.where(ok, 0, f).max(axis=-1)
    flag = np.where(n >= min_valid, 0, np.where(worst > 0, worst, 3))
    return {"co2_t": total, "co2_measured_t": measured, "co2_substitute_t": subst,
            "co2_dry_pct": cd, "n_valid": n, "n_substituted": ns,
            "n_missing": f.shape[-1] - n - ns, "flag": flag}


flags_st = st.sampled_from([0, 0, 0, 0, 0, 0, 1, 3, 4, 5, 6, 7])


def values(data: st.DataObject, shape: tuple[int, ...], lo: float, hi: float) -> np.ndarray:
    a: np.ndarray = data.draw(hnp.arrays(np.float64, shape, elements=st.one_of(
        st.floats(lo, hi), st.floats(lo, hi), st.floats(lo, hi), st.just(np.nan))))
    return a


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_hour_rollup_equals_numpy_reference(data: st.DataObject) -> None:
    shape = (data.draw(st.integers(1, 6)), data.draw(st.integers(1, 70)))
    c = values(data, shape, 0.0, 25.0)
    q = values(data, shape, 0.0, 5e6)
    f = data.draw(hnp.arrays(np.uint8, shape, elements=flags_st))
    min_valid = data.draw(st.integers(1, 70))
    got = r.rollup_hour(c, q, f, min_valid=min_valid, rho_kg_m3=RHO)
    for key, want in ref_hour(c, q, f, min_valid).items():
        np.testing.assert_allclose(getattr(got, key), want, rtol=1e-9, atol=0, equal_nan=True,
                                   err_msg=key)


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_day_rollup_equals_numpy_reference(data: st.DataObject) -> None:
    shape = (data.draw(st.integers(1, 6)), data.draw(st.integers(1, 26)))
    c = values(data, shape, 0.0, 25.0)
    q = values(data, shape, 0.0, 5e6)
    m = values(data, shape, 0.0, 2000.0)
    f = data.draw(hnp.arrays(np.uint8, shape, elements=flags_st))
    sub = values(data, shape, 0.0, 2000.0)
    min_valid = data.draw(st.integers(1, 26))
    hrs = r.HourArrays(c, q, m * 1000.0, m, np.zeros(shape, np.int64), f)
    got = r.rollup_day(hrs, sub, min_valid=min_valid)
    for key, want in ref_day(c, q, m, f, sub, min_valid).items():
        np.testing.assert_allclose(getattr(got, key), want, rtol=1e-9, atol=0, equal_nan=True,
                                   err_msg=key)
