"""Emission-factor method against ../shared/reference/calc_vectors.md and hand-worked vectors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest

from compute import factors as fx


def printed(value: float, decimals: int) -> object:
    """Equality to a figure printed in calc_vectors.md, rounded to `decimals` places."""
    return pytest.approx(value, abs=0.5 * 10.0**-decimals, rel=0)


def exact(value: float) -> object:
    """Equality to a hand-worked figure that has no rounding, to float rounding."""
    return pytest.approx(value, rel=1e-12, abs=0)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


CST = timezone(timedelta(hours=8))  # Asia/Shanghai has no DST


def coal_version(vid: str, start: datetime, cc: float = 0.03085, ncv: float = 20.0,
                 of: float = 0.99) -> fx.FactorVersion:
    return fx.FactorVersion(vid, "coal", start, {"ncv_gj_t": ncv, "cc_tc_gj": cc, "of": of},
                            "MRV guideline default")


# --- calc_vectors.md -------------------------------------------------------------------

def test_coal_vector() -> None:
    # 100 000 t · 20.0 GJ/t = 2 000 000 GJ · 0.03085 = 61 700 tC · 0.99 = 61 083 tC
    # · 44/12 = 223 971.0 t CO2
    assert fx.fuel_co2_t(100_000, 20.0, 0.03085, 0.99) == printed(223_971.0, 1)


def test_coal_vector_older_default_cc() -> None:
    # 2 000 000 GJ · 0.03356 = 67 120 tC · 0.99 = 66 448.8 tC · 44/12 = 243 645.6 t CO2
    assert fx.fuel_co2_t(100_000, 20.0, 0.03356, 0.99) == printed(243_645.6, 1)


def test_coal_measured_carbon_vector() -> None:
    # 100 000 t · 0.55 tC/t = 55 000 tC · 0.99 = 54 450 tC · 44/12 = 199 650.0 t CO2
    assert fx.measured_carbon_co2_t(100_000, 0.55, 0.99) == printed(199_650.0, 1)


def test_electricity_vector() -> None:
    # 10 000 MWh · 0.5703 t/MWh = 5 703 t CO2
    assert fx.electricity_co2_t(10_000, 0.5703) == printed(5_703, 0)
    assert fx.electricity_co2_t(10_000) == printed(5_703, 0)  # the 2022 default


def test_coal_vectors_through_a_version() -> None:
    v = coal_version("coal-2024", utc(2024, 1, 1))
    r = fx.result(v, "ncv_cc_of", 100_000, "t", utc(2024, 1, 1), utc(2025, 1, 1))
    assert r.co2_t == printed(223_971.0, 1)
    assert (r.factor_version, r.method, r.quantity_unit) == ("coal-2024", "ncv_cc_of", "t")
    m = fx.FactorVersion("coal-lab-7", "coal", utc(2024, 1, 1),
                         {"c_ar_tc_t": 0.55, "of": 0.99}, "lab report 2024-017")
    r = fx.result(m, "measured_carbon", 100_000, "t", utc(2024, 1, 1), utc(2025, 1, 1))
    assert r.co2_t == printed(199_650.0, 1) and r.method == "measured_carbon"


# --- hand-worked: gas, heat, process ------------------------------------------------------

def test_natural_gas_in_1e4_m3() -> None:
    # 1 000 ·10⁴ m³ · 389.31 GJ/10⁴m³ = 389 310 GJ · 0.01532 tC/GJ = 5 964.2292 tC
    # · 0.99 = 5 904.586908 tC · 44/12 = 259 801.823952 / 12 = 21 650.151996 t CO2
    assert fx.fuel_co2_t(1_000, 389.31, 0.01532, 0.99) == exact(21_650.151996)
    v = fx.FactorVersion("ng-2024", "gas", utc(2024, 1, 1),
                         {"ncv_gj_1e4m3": 389.31, "cc_tc_gj": 0.01532, "of": 0.99}, "default")
    r = fx.result(v, "ncv_cc_of", 1_000, "1e4m3", utc(2024, 1, 1), utc(2024, 2, 1))
    assert r.co2_t == exact(21_650.151996) and r.quantity_unit == "1e4m3"


def test_gas_measured_carbon_in_1e4_m3() -> None:
    # 200 ·10⁴ m³ · 5.9 tC/10⁴m³ = 1 180 tC · 0.99 = 1 168.2 tC · 44/12 = 4 283.4 t CO2
    v = fx.FactorVersion("ng-lab", "gas", utc(2024, 1, 1),
                         {"c_ar_tc_1e4m3": 5.9, "of": 0.99}, "lab report G-3")
    r = fx.result(v, "measured_carbon", 200, "1e4m3", utc(2024, 1, 1), utc(2024, 2, 1))
    assert r.co2_t == exact(4_283.4)


def test_gas_ncv_is_never_applied_to_tonnes() -> None:
    v = fx.FactorVersion("ng-2024", "gas", utc(2024, 1, 1),
                         {"ncv_gj_1e4m3": 389.31, "cc_tc_gj": 0.01532, "of": 0.99}, "default")
    with pytest.raises(ValueError, match=r"'gas'.*ng-2024.*ncv_gj_t"):
        fx.result(v, "ncv_cc_of", 1_000, "t", utc(2024, 1, 1), utc(2024, 2, 1))


def test_purchased_heat() -> None:
    # 5 000 GJ · 0.11 t/GJ = 550 t CO2
    assert fx.heat_co2_t(5_000) == exact(550.0)
    v = fx.FactorVersion("heat-default", "steam-in", utc(2024, 1, 1), {"ef_tco2_gj": 0.11},
                         "MRV guideline default")
    r = fx.result(v, "heat", 5_000, "GJ", utc(2024, 1, 1), utc(2024, 2, 1))
    assert r.co2_t == exact(550.0) and r.method == "heat"


def test_process_emissions() -> None:
    # limestone: 10 000 t CaCO3 · 0.44 t CO2/t = 4 400 t CO2
    assert fx.process_co2_t(10_000, 0.44) == exact(4_400.0)
    v = fx.FactorVersion("caco3", "kiln-feed", utc(2024, 1, 1), {"ef_tco2_t": 0.44}, "stoich.")
    r = fx.result(v, "process", 10_000, "t", utc(2024, 1, 1), utc(2024, 2, 1))
    assert r.co2_t == exact(4_400.0) and r.method == "process"


def test_electricity_through_a_version() -> None:
    v = fx.FactorVersion("grid-2022", "grid", utc(2024, 1, 1), {"ef_tco2_mwh": 0.5703},
                         "MEE 2022 national average")
    r = fx.result(v, "electricity", 10_000, "MWh", utc(2024, 1, 1), utc(2024, 2, 1))
    assert r.co2_t == printed(5_703, 0)


def test_method_with_wrong_unit_is_refused() -> None:
    v = fx.FactorVersion("grid-2022", "grid", utc(2024, 1, 1), {"ef_tco2_mwh": 0.5703}, "MEE")
    with pytest.raises(ValueError, match=r"'grid'.*electricity.*GJ.*not supported"):
        fx.result(v, "electricity", 10, "GJ", utc(2024, 1, 1), utc(2024, 2, 1))


# --- validation -------------------------------------------------------------------------

@pytest.mark.parametrize(("call", "pattern"), [
    (lambda: fx.fuel_co2_t(-1.0, 20.0, 0.03085, 0.99, stream="coal"), r"'coal'.*fc.*-1\.0"),
    (lambda: fx.fuel_co2_t(1.0, 20.0, 0.03085, 0.0, stream="coal"), r"'coal'.*OF.*0\.0"),
    (lambda: fx.fuel_co2_t(1.0, 20.0, 0.03085, 1.01, stream="coal"), r"'coal'.*OF.*1\.01"),
    (lambda: fx.fuel_co2_t(1.0, 0.0, 0.03085, 0.99, stream="coal"), r"'coal'.*ncv.*0\.0"),
    (lambda: fx.fuel_co2_t(1.0, 20.0, -0.03, 0.99, stream="coal"), r"'coal'.*cc.*-0\.03"),
    (lambda: fx.fuel_co2_t(float("nan"), 20.0, 0.03, 0.99, stream="coal"), r"'coal'.*fc.*nan"),
    (lambda: fx.measured_carbon_co2_t(1.0, 0.0, 0.99, stream="c"), r"'c'.*c_ar.*0\.0"),
    (lambda: fx.electricity_co2_t(-5.0, stream="grid"), r"'grid'.*mwh.*-5\.0"),
    (lambda: fx.heat_co2_t(-5.0, stream="steam"), r"'steam'.*gj.*-5\.0"),
    (lambda: fx.process_co2_t(-5.0, 0.44, stream="kiln"), r"'kiln'.*quantity_t.*-5\.0"),
])
def test_invalid_inputs_name_stream_factor_value(call: object, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        call()  # type: ignore[operator]


def test_of_of_exactly_one_is_allowed() -> None:
    # 10 t · 20 GJ/t = 200 GJ · 0.03 = 6 tC · 1.0 · 44/12 = 22 t CO2
    assert fx.fuel_co2_t(10, 20.0, 0.03, 1.0) == exact(22.0)


@pytest.mark.parametrize(("values", "pattern"), [
    ({"ncv_gj_t": 20.0, "cc_tc_gj": 0.0306, "of": 1.2}, r"'coal'.*'v1'.*OF.*1\.2"),
    ({"ncv_gj_t": -20.0, "cc_tc_gj": 0.0306, "of": 0.9}, r"'coal'.*'v1'.*ncv_gj_t.*-20\.0"),
    ({"ncv_gj_t": 20.0, "cc_tc_gj": 0.0, "of": 0.9}, r"'coal'.*'v1'.*cc_tc_gj.*0\.0"),
    ({"ncv": 20.0}, r"'coal'.*'v1'.*unknown factor 'ncv'"),
])
def test_invalid_version_is_refused(values: dict[str, float], pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        fx.FactorVersion("v1", "coal", utc(2024, 1, 1), values, "x")


def test_version_needs_a_time_zone_and_is_immutable() -> None:
    with pytest.raises(ValueError, match="time zone"):
        fx.FactorVersion("v1", "coal", datetime(2024, 1, 1), {"of": 0.9}, "x")
    v = fx.FactorVersion("v1", "coal", datetime(2024, 1, 1, 8, tzinfo=CST), {"of": 0.9}, "x")
    assert v.effective_from == utc(2024, 1, 1)  # stored as UTC
    with pytest.raises(TypeError):
        v.values["of"] = 0.5  # type: ignore[index]


# --- factor versions --------------------------------------------------------------------

JAN = utc(2024, 1, 1)
JAN16 = utc(2024, 1, 16)
FEB = utc(2024, 2, 1)


def january_table() -> fx.FactorTable:
    # CC changes on the 16th (lab result); NCV and OF unchanged.
    return fx.FactorTable([coal_version("coal-2024-01b", JAN16, cc=0.03356),
                           coal_version("coal-2024-01a", JAN, cc=0.03085)])


def test_lookup_latest_effective_version() -> None:
    table = january_table()
    assert table.at("coal", JAN).id == "coal-2024-01a"
    assert table.at("coal", JAN16 - timedelta(seconds=1)).id == "coal-2024-01a"
    assert table.at("coal", JAN16).id == "coal-2024-01b"  # effective_from is inclusive
    assert table.at("coal", utc(2030, 1, 1)).id == "coal-2024-01b"
    assert [v.id for v in table.versions("coal")] == ["coal-2024-01a", "coal-2024-01b"]


def test_lookup_before_first_version_names_stream_and_time() -> None:
    table = january_table()
    with pytest.raises(fx.FactorVersionNotFound,
                       match=r"'coal'.*2023-12-31T23:59:00\+00:00.*coal-2024-01a"):
        table.at("coal", utc(2023, 12, 31, 23, 59))
    with pytest.raises(LookupError, match=r"'coal'.*2023-12-31T23:00:00\+00:00"):
        table.indices("coal", np.array([utc(2023, 12, 31, 23).timestamp(), JAN.timestamp()]))
    with pytest.raises(LookupError, match="'oil'"):
        table.at("oil", JAN)


def test_duplicate_effective_from_is_refused() -> None:
    with pytest.raises(ValueError, match=r"'coal'.*'a'.*'b'.*2024-01-01T00:00:00\+00:00"):
        fx.FactorTable([coal_version("a", JAN), coal_version("b", JAN, cc=0.03356)])


def test_duplicate_version_id_is_refused() -> None:
    with pytest.raises(ValueError, match="'a' is used twice"):
        fx.FactorTable([coal_version("a", JAN), coal_version("a", JAN16)])


def minute_data(start: datetime, end: datetime, t_per_min: float) -> tuple[np.ndarray, ...]:
    t_s = np.arange(start.timestamp(), end.timestamp(), 60.0)
    return t_s, np.full(t_s.size, t_per_min)


def test_month_split_at_cc_change() -> None:
    # 2.0 t coal every minute of January 2024; CC 0.03085 until the 16th, then 0.03356.
    # 1–15 Jan: 15 d · 1 440 min · 2 t = 43 200 t · 20 GJ/t = 864 000 GJ · 0.03085
    #   = 26 654.4 tC · 0.99 = 26 387.856 tC · 44/12 = 1 161 065.664 / 12 = 96 755.472 t
    # 16–31 Jan: 16 d · 1 440 · 2 = 46 080 t · 20 = 921 600 GJ · 0.03356 = 30 928.896 tC
    #   · 0.99 = 30 619.60704 tC · 44 = 1 347 262.70976 / 12 = 112 271.89248 t
    t_s, q = minute_data(JAN, FEB, 2.0)
    a, b = fx.period_emissions(january_table(), "coal", "ncv_cc_of", "t", t_s, q, JAN, FEB)
    assert (a.factor_version, a.period_start, a.period_end) == ("coal-2024-01a", JAN, JAN16)
    assert (b.factor_version, b.period_start, b.period_end) == ("coal-2024-01b", JAN16, FEB)
    assert a.quantity == exact(43_200.0) and b.quantity == exact(46_080.0)
    assert a.co2_t == exact(96_755.472)
    assert b.co2_t == exact(112_271.89248)
    assert a.stream == b.stream == "coal" and a.method == b.method == "ncv_cc_of"


def test_per_interval_kernel_uses_version_in_force() -> None:
    # one minute of 2 t: 2 · 20 = 40 GJ · 0.03085 = 1.234 tC · 0.99 = 1.22166 tC · 44/12
    #   = 4.47942 t (before the 16th);  40 · 0.03356 = 1.3424 · 0.99 = 1.328976 · 44/12
    #   = 4.872912 t (from the 16th)
    table = january_table()
    t_s, q = minute_data(JAN, FEB, 2.0)
    per_min = fx.interval_co2_t(table, "coal", "ncv_cc_of", "t", t_s, q)
    split = int((JAN16 - JAN).total_seconds() // 60)
    assert per_min[0] == exact(4.47942) and per_min[split - 1] == exact(4.47942)
    assert per_min[split] == exact(4.872912) and per_min[-1] == exact(4.872912)
    assert per_min[:split].sum() == pytest.approx(96_755.472, rel=1e-12)
    assert per_min[split:].sum() == pytest.approx(112_271.89248, rel=1e-12)


def test_period_starting_mid_version_is_cut_at_its_bounds() -> None:
    # 10–20 Jan at 1 t/h. 10–16 Jan: 144 h = 144 t · 20 = 2 880 GJ · 0.03085 = 88.848 tC
    #   · 0.99 = 87.95952 · 44/12 = 322.51824 t;  16–20 Jan: 96 t · 20 = 1 920 GJ · 0.03356
    #   = 64.4352 tC · 0.99 = 63.790848 · 44/12 = 233.899776 t
    start, end = utc(2024, 1, 10), utc(2024, 1, 20)
    t_s = np.arange(start.timestamp(), end.timestamp(), 3600.0)
    a, b = fx.period_emissions(january_table(), "coal", "ncv_cc_of", "t", t_s,
                               np.ones(t_s.size), start, end)
    assert (a.period_start, a.period_end, b.period_start, b.period_end) == (
        start, JAN16, JAN16, end)
    assert a.co2_t == exact(322.51824) and b.co2_t == exact(233.899776)


def test_version_without_quantities_still_reported() -> None:
    # only the first half has fuel: the second version shows a zero result for its part
    t_s, q = minute_data(JAN, JAN + timedelta(hours=1), 2.0)
    a, b = fx.period_emissions(january_table(), "coal", "ncv_cc_of", "t", t_s, q, JAN, FEB)
    assert a.quantity == exact(120.0) and b.quantity == 0.0 and b.co2_t == 0.0
    assert b.factor_version == "coal-2024-01b"


def test_period_within_one_version_gives_one_result() -> None:
    t_s, q = minute_data(JAN16, FEB, 2.0)
    (r,) = fx.period_emissions(january_table(), "coal", "ncv_cc_of", "t", t_s, q, JAN16, FEB)
    assert r.factor_version == "coal-2024-01b" and r.co2_t == exact(112_271.89248)


def test_period_result_of_a_total() -> None:
    table = january_table()
    r = table.period_result("coal", "ncv_cc_of", 100_000, "t", JAN16, FEB)
    # 100 000 t with CC 0.03356: 243 645.6 t (calc_vectors.md)
    assert r.co2_t == printed(243_645.6, 1) and r.factor_version == "coal-2024-01b"
    with pytest.raises(ValueError, match=r"'coal'.*change.*coal-2024-01b.*split"):
        table.period_result("coal", "ncv_cc_of", 100_000, "t", JAN, FEB)


def test_period_emissions_refuses_bad_quantities() -> None:
    table = january_table()
    t_s, q = minute_data(JAN, JAN + timedelta(minutes=3), 2.0)
    q[1] = -0.5
    with pytest.raises(ValueError, match=r"'coal'.*-0\.5.*2024-01-01T00:01:00"):
        fx.period_emissions(table, "coal", "ncv_cc_of", "t", t_s, q, JAN, FEB)
    q[1] = np.nan
    with pytest.raises(ValueError, match=r"'coal'.*nan"):
        fx.period_emissions(table, "coal", "ncv_cc_of", "t", t_s, q, JAN, FEB)
    with pytest.raises(ValueError, match=r"'coal'.*outside the period"):
        fx.period_emissions(table, "coal", "ncv_cc_of", "t", t_s, np.ones(3), JAN16, FEB)


def test_period_before_first_version_errors() -> None:
    start = utc(2023, 12, 31)
    t_s, q = minute_data(start, start + timedelta(minutes=2), 2.0)
    with pytest.raises(fx.FactorVersionNotFound, match=r"'coal'.*2023-12-31T00:00:00\+00:00"):
        fx.period_emissions(january_table(), "coal", "ncv_cc_of", "t", t_s, q, start, FEB)
