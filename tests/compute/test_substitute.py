"""Substitution of invalid hours against hand-worked numbers."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from compute import rollup as r
from compute import substitute as s
from model.flags import DataFlag


def printed(value: float, decimals: int) -> object:
    """Equality to a figure printed in calc_vectors.md, rounded to `decimals` places."""
    return pytest.approx(value, abs=0.5 * 10.0**-decimals, rel=0)


NAN = np.nan
LOOKBACK = [230.0, 235.0, 240.0, 238.0, 236.0, 242.0, 233.0]  # g/Nm³, calc_vectors.md


def test_eu_mrr_eq4_mean_plus_2sigma() -> None:
    sub = s.mean_plus_2sigma(LOOKBACK)
    assert sub.mean == printed(236.2857, 4)
    assert sub.sigma == printed(4.1115, 4)  # sample standard deviation (ddof = 1)
    assert sub.value == printed(244.509, 3)
    assert sub.rule == "mrr_mean_2sigma" and sub.reason == "" and sub.n_used == 7


def test_invalid_hours_in_the_lookback_are_skipped() -> None:
    gappy = [NAN, 230.0, 235.0, NAN, 240.0, 238.0, 236.0, NAN, NAN, 242.0, 233.0]
    assert s.mean_plus_2sigma(gappy).value == printed(244.509, 3)


@pytest.mark.parametrize("lookback", [[], [NAN, NAN], [236.0], [NAN, 236.0, NAN]])
def test_too_short_lookback_gives_nan_with_reason(lookback: list[float]) -> None:
    sub = s.mean_plus_2sigma(lookback)
    assert np.isnan(sub.value)
    n = sum(1 for v in lookback if v == v)
    assert sub.n_used == n
    assert f"{n} valid hour" in sub.reason and "at least 2 needed" in sub.reason


def test_min_valid_is_configurable() -> None:
    assert np.isnan(s.mean_plus_2sigma(LOOKBACK, min_valid=8).value)
    assert "7 valid hours in the lookback, at least 8 needed" in s.mean_plus_2sigma(
        LOOKBACK, min_valid=8).reason
    with pytest.raises(ValueError):
        s.mean_plus_2sigma(LOOKBACK, min_valid=1)  # σ needs two values


def test_max_previous_n() -> None:
    lookback = [230.0, 250.0, NAN, 235.0, 240.0]  # oldest first
    assert s.max_previous(lookback, 3).value == 250.0  # 250, 235, 240
    assert s.max_previous(lookback, 2).value == 240.0  # 235, 240
    assert s.max_previous(lookback, 2).n_used == 2
    assert s.max_previous(lookback, 9, min_valid=4).value == 250.0


def test_max_previous_n_needs_n_valid_hours_by_default() -> None:
    sub = s.max_previous([240.0], 3)
    assert np.isnan(sub.value) and "1 valid hour in the lookback, at least 3 needed" in sub.reason
    assert s.max_previous([240.0], 3, min_valid=1).value == 240.0


def test_factor_method() -> None:
    sub = s.factor_method(150.0)
    assert sub.value == 150.0 and sub.rule == "factor_method" and sub.reason == ""
    for bad in (NAN, -1.0, np.inf):
        sub = s.factor_method(bad)
        assert np.isnan(sub.value) and "factor-method value" in sub.reason


def test_rule_validation() -> None:
    with pytest.raises(ValueError, match="unknown"):
        s.SubstitutionRule("mean")
    with pytest.raises(ValueError):
        s.SubstitutionRule(s.MAX_PREVIOUS_N, n=0)
    assert s.SubstitutionRule().min_valid_hours == 2
    assert s.SubstitutionRule(s.MAX_PREVIOUS_N, n=5).min_valid_hours == 5


# Three valid hours then one invalid, per source. Conc 12.0, 12.4, 11.6 %;
# flow 800 000, 820 000, 780 000 m³/h.
CONC = [12.0, 12.4, 11.6, NAN]
FLOW = [800_000.0, 820_000.0, 780_000.0, NAN]
VALID = [True, True, True, False]


def test_substitute_hours_by_rule() -> None:
    rules = [s.SubstitutionRule(s.MRR_MEAN_2SIGMA), s.SubstitutionRule(s.MAX_PREVIOUS_N, n=2)]
    out = s.substitute_hours([CONC, CONC], [FLOW, FLOW], [VALID, VALID], rules)
    # mrr: C 12.0 + 2·0.4 = 12.8 %; Q 800 000 + 2·20 000 = 840 000 m³/h;
    #      12.8 · 1.964 · 840 000 / 100 = 211 169.28 kg/h → 211.16928 t
    assert out.co2_dry_pct[0, 3] == pytest.approx(12.8, rel=1e-12)
    assert out.flow_std_dry_m3_h[0, 3] == pytest.approx(840_000.0, rel=1e-12)
    assert out.co2_t[0, 3] == pytest.approx(211.16928, rel=1e-12)
    # max of the previous 2: C 12.4, Q 820 000 → 12.4 · 1.964 · 820 000 / 1e5 = 199.69952 t
    assert out.co2_dry_pct[1, 3] == 12.4 and out.flow_std_dry_m3_h[1, 3] == 820_000.0
    assert out.co2_t[1, 3] == pytest.approx(199.69952, rel=1e-12)
    # valid hours have no substitute
    assert np.isnan(out.co2_t[:, :3]).all() and not out.substituted[:, :3].any()
    assert (out.co2_status[:, :3] == s.NOT_NEEDED).all()
    assert out.substituted[:, 3].all() and (out.co2_status[:, 3] == s.OK).all()
    assert out.co2_n_used[0, 3] == 3 and out.flow_n_used[1, 3] == 2
    assert out.rule_names == ("mrr_mean_2sigma", "max_previous_n")
    assert out.reason(0, 3) == ""


def test_only_the_missing_parameter_is_substituted() -> None:
    conc = [12.0, 12.4, 11.6, 12.2]
    out = s.substitute_hours([conc], [FLOW], [[True] * 4], [s.SubstitutionRule()],
                             flow_valid=[VALID])
    # measured 12.2 % with substituted flow 840 000: 12.2 · 1.964 · 840 000 / 1e5 = 201.27072 t
    assert out.co2_t[0, 3] == pytest.approx(201.27072, rel=1e-12)
    assert np.isnan(out.co2_dry_pct[0, 3]) and out.co2_status[0, 3] == s.NOT_NEEDED
    assert out.flow_std_dry_m3_h[0, 3] == pytest.approx(840_000.0, rel=1e-12)


def test_lookback_window() -> None:
    out = s.substitute_hours([CONC], [FLOW], [VALID], [s.SubstitutionRule(lookback_h=2)])
    # only hours 1, 2: C 12.4, 11.6 → mean 12.0, σ = 0.4·√2 = 0.5656854 → 13.1313708
    assert out.co2_dry_pct[0, 3] == pytest.approx(13.1313708, abs=1e-7)
    assert out.co2_n_used[0, 3] == 2


def test_substitutes_never_enter_the_lookback_and_inputs_stay_untouched() -> None:
    conc = np.array([[*CONC, NAN, 12.0]])
    flow = np.array([[*FLOW, NAN, 800_000.0]])
    valid = np.array([[*VALID, False, True]])
    before = conc.copy(), flow.copy(), valid.copy()
    out = s.substitute_hours(conc, flow, valid, [s.SubstitutionRule()])
    assert out.co2_dry_pct[0, 4] == pytest.approx(12.8, rel=1e-12)  # same lookback as hour 3
    assert out.co2_t[0, 4] == out.co2_t[0, 3]
    for a, b in zip((conc, flow, valid), before, strict=True):
        np.testing.assert_array_equal(a, b)


def test_invalid_hour_with_partial_measured_values_is_substituted_all_the_same() -> None:
    conc = [12.0, 12.4, 11.6, 20.0]  # 20 % from a few valid minutes of an invalid hour
    out = s.substitute_hours([conc], [FLOW], [VALID], [s.SubstitutionRule()])
    assert out.co2_dry_pct[0, 3] == pytest.approx(12.8, rel=1e-12)


def test_too_few_valid_hours_gives_nan_with_reason() -> None:
    out = s.substitute_hours([[12.0, NAN, NAN]], [[800_000.0, NAN, NAN]],
                             [[True, False, False]], [s.SubstitutionRule()])
    assert np.isnan(out.co2_t[0, 1:]).all() and not out.substituted.any()
    assert out.co2_status[0, 1] == s.TOO_FEW_VALID
    assert out.reason(0, 1) == ("co2_dry_pct: 1 valid hour in the lookback, at least 2 needed; "
                                "flow_std_dry_m3_h: 1 valid hour in the lookback, "
                                "at least 2 needed")


def test_factor_method_hours() -> None:
    rules = [s.SubstitutionRule(s.FACTOR_METHOD)] * 2
    factor = [[NAN, NAN, NAN, 205.5], [NAN, NAN, NAN, NAN]]
    out = s.substitute_hours([CONC, CONC], [FLOW, FLOW], [VALID, VALID], rules,
                             factor_co2_t=factor)
    assert out.co2_t[0, 3] == 205.5 and out.substituted[0, 3]
    assert np.isnan(out.co2_t[0, :3]).all()
    assert np.isnan(out.co2_t[1, 3]) and out.co2_status[1, 3] == s.NO_FACTOR_VALUE
    assert "factor-method value" in out.reason(1, 3)
    none = s.substitute_hours([CONC], [FLOW], [VALID], rules[:1])
    assert np.isnan(none.co2_t[0, 3])


def test_shape_and_rule_count_are_checked() -> None:
    with pytest.raises(ValueError):
        s.substitute_hours([CONC], [FLOW], [VALID], [s.SubstitutionRule()] * 2)
    with pytest.raises(ValueError):
        s.substitute_hours([CONC], [FLOW[:3]], [VALID], [s.SubstitutionRule()])


def test_substituted_hour_keeps_its_flag_and_reaches_the_day() -> None:
    # Source S1: 23 valid hours of the calc_vectors example, hour 23 instrument fault (D).
    minutes_c = np.full((1, 24, 60), 12.0)
    minutes_q = np.full((1, 24, 60), 835_718.9)
    flags = np.zeros((1, 24, 60), np.uint8)
    flags[0, 23, :] = DataFlag.D
    hours = r.rollup_hour(minutes_c, minutes_q, flags)
    rules = [s.SubstitutionRule()]
    sub = s.substitute_hours(hours.co2_dry_pct, hours.flow_std_dry_m3_h, hours.valid, rules)
    # constant lookback: σ = 0, substitute = the measured hour 196.9622 t
    assert sub.co2_t[0, 23] == printed(196.9622, 4)
    day = r.rollup_day(hours, sub.co2_t)
    assert day.co2_t[0] == printed(4_727.09, 2) and day.n_substituted[0] == 1
    last = r.HourArrays(hours.co2_dry_pct[:, 23], hours.flow_std_dry_m3_h[:, 23],
                        hours.co2_rate_kg_h[:, 23], hours.co2_t[:, 23], hours.n_valid[:, 23],
                        hours.flag[:, 23])
    (rec,) = r.hour_records(["S1"], datetime(2024, 1, 1, 23, tzinfo=UTC), last,
                            sub.co2_t[:, 23], sub.rule_names)
    assert rec.flag is DataFlag.D and not rec.valid
    assert rec.substituted and rec.substitution_rule == "mrr_mean_2sigma"
    assert rec.co2_t == printed(196.9622, 4) and np.isnan(rec.co2_measured_t)
