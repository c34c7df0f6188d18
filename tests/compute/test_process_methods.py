"""Process methods of issue 18: carbon balance, carbonates from CaO / MgO, exports.

Formulas (China's GHG accounting guidelines for iron and steel, cement and lime
producers), every figure worked by hand in the comments, checked to 1e-9 relative:
- carbon balance: E = (Σ Q_in · C_in − Σ Q_out · C_out) · 44/12, as signed streams;
- carbonates: E = Q · ((CaO − CaO_raw) · 44/56.08 + (MgO − MgO_raw) · 44/40.30);
- net purchase: E = (purchased − exported) · EF.
The period-stage test runs a blast furnace's carbon balance through PeriodCycle.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from compute import factors as fx
from compute.config import STREAM_KINDS, StreamConfig
from compute.periods import MinuteBatch, PeriodCycle, net_purchase_co2_t
from model.errors import ConfigError, InvalidValueError
from model.flags import DataFlag
from server.config import parse_plant
from tests.fixtures.plant import plant_dict

REL = 1e-9
T0 = datetime(2025, 1, 1, tzinfo=UTC)
DAY0 = datetime(2025, 12, 31, 16, tzinfo=UTC)  # 2026-01-01 00:00 in Shanghai


def hand(value: float) -> Any:
    """Equality to a hand-worked figure, to 1e-9 relative."""
    return pytest.approx(value, rel=REL, abs=0)


def version(vid: str, stream: str, values: dict[str, float]) -> fx.FactorVersion:
    return fx.FactorVersion(vid, stream, T0, values, "lab report 2025-01")


# ------------------------------------------------------------------ carbon balance

def test_carbon_balance_of_a_blast_furnace() -> None:
    # In: coke 400 t · 0.86 tC/t = 344 tC; pulverised coal 150 t · 0.70 = 105 tC → 449 tC.
    # Out: pig iron 1 000 t · 0.045 = 45 tC; dust 20 t · 0.30 = 6 tC → 51 tC.
    # (449 − 51) tC = 398 tC · 44/12 = 17 512/12 = 1 459.333 333 333… t CO2
    e = fx.carbon_balance_co2_t([(400.0, 0.86), (150.0, 0.70)], [(1000.0, 0.045), (20.0, 0.30)])
    assert e == hand(17_512 / 12)
    # As signed streams: + 400·0.86·44/12 = 15 136/12 = 1 261.333…; + 150·0.70·44/12 = 385;
    # − 1 000·0.045·44/12 = −165; − 20·0.30·44/12 = −22 → 1 261.333… + 385 − 165 − 22
    parts = [fx.carbon_input_co2_t(400.0, 0.86), fx.carbon_input_co2_t(150.0, 0.70),
             fx.carbon_output_co2_t(1000.0, 0.045), fx.carbon_output_co2_t(20.0, 0.30)]
    assert parts == [hand(15_136 / 12), hand(385.0), hand(-165.0), hand(-22.0)]
    assert math.fsum(parts) == hand(17_512 / 12)


def test_carbon_balance_through_versions_and_co2_t() -> None:
    coke = version("coke-2025", "coke", {"c_tc_t": 0.85})
    iron = version("iron-2025", "pig_iron", {"c_tc_t": 0.045})
    # coke 100 t · 0.85 · 44/12 = 311.666…; pig iron −120 · 0.045 · 44/12 = −19.8
    assert fx.co2_t("carbon_input", 100.0, coke.factors("carbon_input", "t")) == hand(
        935 / 3)
    out = fx.result(iron, "carbon_output", 120.0, "t", T0, T0 + timedelta(hours=1))
    assert (out.quantity, out.co2_t, out.method) == (120.0, hand(-19.8), "carbon_output")
    assert fx.required_factors("carbon_output", "t") == ("c_tc_t",)
    assert fx.FACTOR_UNITS["c_tc_t"] == "tC/t"


def test_carbon_output_day_is_the_formula_on_the_day_total() -> None:
    table = fx.FactorTable([version("iron-2025", "pig_iron", {"c_tc_t": 0.045})])
    t_s = T0.timestamp() + 3600.0 * np.arange(24, dtype=np.float64)
    # 24 h · 120 t = 2 880 t · 0.045 = 129.6 tC · 44/12 = 475.2 t, counted −475.2
    (day,) = fx.period_emissions(table, "pig_iron", "carbon_output", "t", t_s,
                                 np.full(24, 120.0), T0, T0 + timedelta(days=1))
    assert (day.quantity, day.co2_t) == (hand(2880.0), hand(-475.2))
    per_h = fx.interval_co2_t(table, "pig_iron", "carbon_output", "t", t_s, np.full(24, 120.0))
    assert per_h.tolist() == [hand(-19.8)] * 24


@pytest.mark.parametrize(("values", "pattern"), [
    ({"c_tc_t": 1.2}, "factor c_tc_t = 1.2 is outside \\(0, 1\\]"),
    ({"c_tc_t": 0.0}, "factor c_tc_t = 0.0 is outside \\(0, 1\\]"),
    ({"cao_fraction": -0.1}, "factor cao_fraction = -0.1 is outside \\[0, 1\\]"),
    ({"mgo_raw_fraction": 1.5}, "factor mgo_raw_fraction = 1.5 is outside \\[0, 1\\]"),
])
def test_bad_process_factors_are_refused(values: dict[str, float], pattern: str) -> None:
    with pytest.raises(InvalidValueError, match=f"stream 'm', factor version 'v1': {pattern}"):
        version("v1", "m", values)


def test_carbon_quantities_stay_non_negative() -> None:
    with pytest.raises(InvalidValueError,
                       match=re.escape("quantity quantity_t = -1.0 must be finite")):
        fx.carbon_output_co2_t(-1.0, 0.045, stream="pig_iron")


# ------------------------------------------------------------------ carbonates

def test_clinker_carbonates_from_cao_and_mgo() -> None:
    # 1 000 t clinker, CaO 0.65 (0.01 not from carbonates), MgO 0.02 (0.005 not):
    # 1 000 · (0.64 · 44/56.08 + 0.015 · 44/40.30) = 1 000 · (2 816/5 608 + 66/4 030)
    # = 1 000 · (352/701 + 33/2 015) = 1 000 · (709 280 + 23 133)/1 412 515
    # = 732 413 000/1 412 515 = 518.516 971 501 19 t CO2
    assert fx.carbonate_oxides_co2_t(1000.0, 0.65, 0.01, 0.02, 0.005) == hand(
        732_413_000 / 1_412_515)
    v = version("clinker-2025", "clinker", {"cao_fraction": 0.65, "cao_raw_fraction": 0.01,
                                            "mgo_fraction": 0.02, "mgo_raw_fraction": 0.005})
    assert fx.result(v, "carbonate_oxides", 1000.0, "t", T0, T0 + timedelta(days=1)).co2_t == (
        hand(732_413_000 / 1_412_515))
    assert (fx.M_CO2_G_MOL, fx.M_CAO_G_MOL, fx.M_MGO_G_MOL) == (44.0, 56.08, 40.30)


def test_lime_without_non_carbonate_oxides() -> None:
    # 500 t lime, CaO 0.90, MgO 0.03, the raw fractions left out (0):
    # 500 · (0.90 · 44/56.08 + 0.03 · 44/40.30) = 500 · (495/701 + 66/2 015)
    # = 500 · (997 425 + 46 266)/1 412 515 = 521 845 500/1 412 515 = 369.444 218 291 t CO2
    v = version("lime-2025", "lime", {"cao_fraction": 0.90, "mgo_fraction": 0.03})
    assert v.factors("carbonate_oxides", "t") == (0.90, 0.0, 0.03, 0.0)
    assert fx.co2_t_per_unit(v, "carbonate_oxides", "t") * 500.0 == hand(
        521_845_500 / 1_412_515)
    # An MgO-free lime is allowed: 100 · 0.95 · 44/56.08 = 4 180/56.08 = 74.536 376 605 t
    assert fx.carbonate_oxides_co2_t(100.0, 0.95, 0.0, 0.0, 0.0) == hand(4180 / 56.08)


def test_carbonate_oxides_need_both_contents_and_consistent_raw_parts() -> None:
    v = version("lime-2025", "lime", {"cao_fraction": 0.90})
    with pytest.raises(InvalidValueError, match="method carbonate_oxides with quantity in t "
                       "needs factor\\(s\\) mgo_fraction"):
        v.factors("carbonate_oxides", "t")
    with pytest.raises(InvalidValueError,
                       match=re.escape("cao_raw_fraction 0.7 > cao_fraction 0.65")):
        fx.carbonate_oxides_co2_t(1.0, 0.65, 0.7, 0.02, 0.0, stream="clinker")
    with pytest.raises(InvalidValueError,
                       match=re.escape("cao_fraction 0.9 + mgo_fraction 0.2 exceeds 1")):
        fx.carbonate_oxides_co2_t(1.0, 0.9, 0.0, 0.2, 0.0, stream="lime")


# ------------------------------------------------------------------ exports

def test_net_purchase_of_electricity_and_heat() -> None:
    # Electricity: 10 000 MWh bought − 4 000 MWh exported = 6 000 · 0.5703 = 3 421.8 t;
    # as streams: 5 703 − 2 281.2. Heat: 2 000 GJ − 500 GJ = 1 500 · 0.11 = 165 t: 220 − 55.
    assert fx.electricity_export_co2_t(4000.0, 0.5703) == hand(-2281.2)
    assert fx.electricity_co2_t(10_000.0) + fx.electricity_export_co2_t(4000.0) == hand(3421.8)
    assert fx.heat_export_co2_t(500.0, 0.11) == hand(-55.0)
    assert fx.co2_t("heat", 2000.0, (0.11,)) + fx.co2_t("heat_export", 500.0, (0.11,)) == hand(
        165.0)
    assert fx.required_factors("electricity_export", "MWh") == ("ef_tco2_mwh",)
    assert fx.required_factors("heat_export", "GJ") == ("ef_tco2_gj",)
    # Nothing exported is +0.0, never −0.0: SQLite stores no sign of zero, and an hour
    # without any export then compared unequal with its recalculation (the steel demo).
    for zero in (fx.electricity_export_co2_t(0.0), fx.heat_export_co2_t(0.0),
                 fx.carbon_output_co2_t(0.0, 0.045)):
        assert zero == 0.0 and math.copysign(1.0, zero) == 1.0


def test_every_method_has_factors_and_a_formula_text() -> None:
    methods = {m for m, _ in fx.REQUIRED_FACTORS}
    assert methods == set(fx.FORMULA_TEXT) == {k[1] for k in STREAM_KINDS.values()} | {
        "measured_carbon"}
    assert fx.FORMULA_TEXT["carbon_output"] == "-quantity*c_tc_t*44/12"
    assert all(n in fx.FACTOR_UNITS for names in fx.REQUIRED_FACTORS.values() for n in names)


# ------------------------------------------------------------------ configuration

def test_kinds_units_methods_and_direct() -> None:
    assert {k: STREAM_KINDS[k] for k in ("carbon_input", "carbon_output", "clinker", "lime",
                                         "electricity_export", "heat_export")} == {
        "carbon_input": ("t", "carbon_input"), "carbon_output": ("t", "carbon_output"),
        "clinker": ("t", "carbonate_oxides"), "lime": ("t", "carbonate_oxides"),
        "electricity_export": ("MWh", "electricity_export"),
        "heat_export": ("GJ", "heat_export")}
    direct = {k: StreamConfig.model_validate({"id": "x", "kind": k, "factors": "f",
                                              "rate_per_h": {"value": 1.0},
                                              **({"gas": "CH4"} if k == "ghg" else {})}).direct
              for k in STREAM_KINDS}
    assert [k for k, d in direct.items() if not d] == [
        "electricity", "heat", "electricity_export", "heat_export", "electricity_green"]


FACTORS = [
    {"id": "coke-2025", "stream": "coke", "effective_from": "2025-01-01T00:00:00+08:00",
     "source": "lab report BF-2025-01 (coke, GB/T 476)", "factors": {"c_tc_t": 0.85}},
    {"id": "iron-2025", "stream": "pig_iron", "effective_from": "2025-01-01T00:00:00+08:00",
     "source": "lab report BF-2025-01 (pig iron, GB/T 223.69)", "factors": {"c_tc_t": 0.045}},
    {"id": "grid-2025", "stream": "grid", "effective_from": "2025-01-01T00:00:00+08:00",
     "source": "MEE 2022 national grid average", "factors": {"ef_tco2_mwh": 0.5703}},
    {"id": "lime-2025", "stream": "lime", "effective_from": "2025-01-01T00:00:00+08:00",
     "source": "lab report LK-2025-01",
     "factors": {"cao_fraction": 0.90, "cao_raw_fraction": 0.95, "mgo_fraction": 0.03}},
]


def blast_furnace(tmp_path: Path, streams: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The fixture plant as a blast furnace: coke 100 t/h in, pig iron (tag, 120 t/h) out,
    80 MWh/h bought and 50 MWh/h exported."""
    (tmp_path / "factors.yaml").write_text(yaml.safe_dump({"versions": FACTORS}),
                                           encoding="utf-8")
    d = plant_dict()
    d["devices"][0]["tags"].append({"id": "bf_iron", "register": 30, "unit": "t/h",
                                    "sim": {"value": 120.0}})
    d["factor_table"] = str(tmp_path / "factors.yaml")
    d["reconciliation"] = {"limit_pct": 5.0}
    d["units"][0]["streams"] = streams if streams is not None else [
        {"id": "BF_coke", "kind": "carbon_input", "factors": "coke",
         "rate_per_h": {"value": 100.0}},
        {"id": "BF_iron", "kind": "carbon_output", "factors": "pig_iron",
         "rate_per_h": {"tag": "bf_iron"}},
        {"id": "BF_grid", "kind": "electricity", "factors": "grid",
         "rate_per_h": {"value": 80.0}},
        {"id": "BF_export", "kind": "electricity_export", "factors": "grid",
         "rate_per_h": {"value": 50.0}}]
    return d


def config_problems(d: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as exc:
        parse_plant(d, "plant.yaml")
    return exc.value.problems


def test_carbon_output_needs_a_carbon_input(tmp_path: Path) -> None:
    d = blast_furnace(tmp_path, [{"id": "BF_iron", "kind": "carbon_output",
                                  "factors": "pig_iron", "rate_per_h": {"tag": "bf_iron"}}])
    assert config_problems(d) == [(
        "units[0].streams[0].kind", "a carbon_output stream needs a carbon_input stream on "
        "unit 'U1': the carbon balance is Σ carbon in − Σ carbon out")]


def test_factor_version_with_raw_cao_above_the_content_names_the_stream(tmp_path: Path) -> None:
    d = blast_furnace(tmp_path, [{"id": "LK_lime", "kind": "lime", "factors": "lime",
                                  "rate_per_h": {"value": 20.0}}])
    ((path, message),) = config_problems(d)
    assert path == "units[0].streams[0].factors"
    assert message.endswith("stream 'lime': the non-carbonate part exceeds the content "
                            "(cao_raw_fraction 0.95 > cao_fraction 0.9 or mgo_raw_fraction 0.0 "
                            "> mgo_fraction 0.03)")


def test_carbon_kinds_take_no_fuel_method(tmp_path: Path) -> None:
    d = blast_furnace(tmp_path)
    d["units"][0]["streams"][0]["method"] = "measured_carbon"
    assert config_problems(d) == [(
        "units[0].streams[0]", "'method' only applies to fuels, not to kind 'carbon_input'")]


# ------------------------------------------------------------------ the period stage

def furnace_minutes(tag_ids: tuple[str, ...], hours: int,
                    bad_iron_hour: int | None = None) -> MinuteBatch:
    """`hours` hours of minutes from DAY0: CEMS C 12.0 %, Q 835 718.9 m³/h, 600 MW, pig iron
    120 t/h (flagged D all of hour `bad_iron_hour`)."""
    n = hours * 60
    means = np.zeros((n, len(tag_ids)))
    means[:, tag_ids.index("u1_power")] = 600.0
    means[:, tag_ids.index("bf_iron")] = 120.0
    tag_flag = np.zeros((n, len(tag_ids)), np.uint8)
    if bad_iron_hour is not None:
        tag_flag[bad_iron_hour * 60:(bad_iron_hour + 1) * 60,
                 tag_ids.index("bf_iron")] = int(DataFlag.D)
    t_s = DAY0.timestamp() + 60.0 * np.arange(n, dtype=np.float64)
    return MinuteBatch(t_s, np.full((n, 1), 12.0), np.full((n, 1), 835_718.9),
                       np.zeros((n, 1), np.uint8), means, tag_flag, ())


def test_blast_furnace_carbon_balance_hours_and_day(tmp_path: Path) -> None:
    plan = parse_plant(blast_furnace(tmp_path), "plant.yaml").plan()
    out = PeriodCycle(plan).add(furnace_minutes(plan.tag_ids, 25))
    hours = [r for r in out if r.level == "hour"]
    (day,) = [r for r in out if r.level == "day"]
    coke, iron, grid, export = hours[0].streams
    # Hour: coke 100 t · 0.85 tC/t = 85 tC in; pig iron 120 t · 0.045 = 5.4 tC out;
    # (85 − 5.4) · 44/12 = 79.6 · 44/12 = 291.866 666 666… t CO2 = 311.666… − 19.8
    assert (coke.co2_t, iron.co2_t) == (hand(935 / 3), hand(-19.8))
    assert (iron.quantity, iron.method, iron.valid, iron.flag) == (
        hand(120.0), "carbon_output", True, DataFlag.N)
    assert hours[0].units[0].co2_factor_t == hand(79.6 * 44 / 12)
    # Electricity kept apart from the unit's total: 80 · 0.5703 = 45.624 t bought,
    # 50 · 0.5703 = 28.515 t exported (−); net 30 MWh · 0.5703 = 17.109 t
    assert (grid.co2_t, export.co2_t, export.method) == (
        hand(45.624), hand(-28.515), "electricity_export")
    net_mwh_t, net_heat_t = net_purchase_co2_t(hours[0].streams, "U1")
    assert net_mwh_t == hand(17.109) and math.isnan(net_heat_t)  # no heat stream
    # Day: coke 2 400 t · 0.85 · 44/12 = 7 480 t; pig iron 2 880 t · 0.045 · 44/12 = 475.2 t
    # out → 7 004.8 t = 24 · 291.866…; electricity 24 · 45.624 = 1 094.976, export
    # 24 · 28.515 = 684.36 (−), net 410.616 t
    d_coke, d_iron, d_grid, d_export = day.streams
    assert (d_coke.quantity, d_coke.co2_t) == (hand(2400.0), hand(7480.0))
    assert (d_iron.quantity, d_iron.co2_t, d_iron.valid) == (hand(2880.0), hand(-475.2), True)
    (u1,) = day.units
    assert u1.co2_factor_t == hand(7004.8)
    assert (d_grid.co2_t, d_export.co2_t) == (hand(1094.976), hand(-684.36))
    assert net_purchase_co2_t(day.streams, "U1")[0] == hand(410.616)
    # CEMS: 24 h · 12.0 · 1.964 · 835 718.9/1e5 t = 24 · 196.962 230 352 = 4 727.093 528 448 t;
    # (4 727.093 528 448 − 7 004.8)/7 004.8 · 100 = −32.516 366 941 98 %
    assert u1.co2_cems_t == hand(4727.093528448)
    assert u1.reconciliation_diff_pct == hand(-32.51636694198)
    assert u1.reconciliation_exceeded


def test_a_missing_output_hour_leaves_the_balance_without_a_value(tmp_path: Path) -> None:
    plan = parse_plant(blast_furnace(tmp_path), "plant.yaml").plan()
    out = PeriodCycle(plan).add(furnace_minutes(plan.tag_ids, 25, bad_iron_hour=5))
    hours = [r for r in out if r.level == "hour"]
    (day,) = [r for r in out if r.level == "day"]
    iron = hours[5].streams[1]
    assert (math.isnan(iron.quantity), iron.valid, iron.flag) == (True, False, DataFlag.D)
    # Without its output the hour's balance would be the coke alone (311.67 t, overstated):
    # it has no value, and no factor_method substitute could take it.
    assert math.isnan(hours[5].units[0].co2_factor_t)
    assert hours[4].units[0].co2_factor_t == hand(79.6 * 44 / 12)
    # Day: the stream keeps its 23 hours of pig iron, 2 760 t · 0.045 · 44/12 = 455.4 t
    # (23 valid hours ≥ 20, the day valid). The balance is over the 23 common hours,
    # 23 · 291.866… t, the incomplete hour 5 counting their mean 291.866… t: 24 · 291.866…
    # = 7 004.8 t (not 7 480 − 455.4 = 7 024.6 t, which counts hour 5's coke unmatched)
    d_iron = day.streams[1]
    assert (d_iron.quantity, d_iron.co2_t, d_iron.n_valid, d_iron.valid) == (
        hand(2760.0), hand(-455.4), 23, True)
    assert day.units[0].co2_factor_t == hand(7004.8)


def test_green_electricity_is_kept_apart_under_the_factor_the_rules_give() -> None:
    """Green electricity: E = MWh · EF_green, 0 while the rules count it zero-emission."""
    table = fx.FactorTable([
        version("green-zero-2025", "green_power", {"ef_green_tco2_mwh": 0.0}),
        # a rule change on 2025-01-01 12:00: from then on it counts at the grid factor
        fx.FactorVersion("green-grid-2025h", "green_power", T0 + timedelta(hours=12),
                         {"ef_green_tco2_mwh": 0.5703}, "rule change (illustrative)")])
    t_s = T0.timestamp() + 3600.0 * np.arange(24, dtype=np.float64)
    # 12 h · 50 MWh = 600 MWh · 0 = 0 t; then 600 MWh · 0.5703 = 342.18 t
    zero, grid = fx.period_emissions(table, "green_power", "electricity_green", "MWh", t_s,
                                     np.full(24, 50.0), T0, T0 + timedelta(days=1))
    assert (zero.factor_version, zero.quantity, zero.co2_t) == ("green-zero-2025",
                                                                 hand(600.0), 0.0)
    assert (grid.factor_version, grid.quantity, grid.co2_t) == ("green-grid-2025h",
                                                                 hand(600.0), hand(342.18))
    assert fx.FORMULA_TEXT["electricity_green"] == "quantity*ef_green_tco2_mwh"
    # indirect, so never in a unit's direct CO2 nor in the net grid purchase
    assert STREAM_KINDS["electricity_green"] == ("MWh", "electricity_green")
    green = StreamConfig(id="G", kind="electricity_green", factors="green_power",
                         rate_per_h={"value": 50.0})
    assert not green.direct
    with pytest.raises(InvalidValueError, match=r"ef_green_tco2_mwh = -0\.1 must be finite"):
        fx.green_electricity_co2_t(10.0, -0.1)
