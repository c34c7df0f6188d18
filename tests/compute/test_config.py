"""Configuration of the calculation: substitution, factor-method streams, meter counters,
factor table, reconciliation, carbon price and validity rules. Every bad value is a
ConfigError naming the file and the key path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from model.errors import ConfigError
from server.config import load_plant, parse_config, parse_plant
from tests.fixtures.plant import plant_dict

REPO = Path(__file__).resolve().parents[2]
SHIPPED_FACTORS = REPO / "config" / "factors.yaml"


def problems_of(data: dict[str, Any], base_dir: Path | None = None) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as exc:
        parse_config(data, "plant.yaml", base_dir)
    assert str(exc.value).startswith("plant.yaml: ")
    return exc.value.problems


def source(d: dict[str, Any]) -> dict[str, Any]:
    src: dict[str, Any] = d["units"][0]["sources"][0]
    return src


def with_coal(d: dict[str, Any] | None = None) -> dict[str, Any]:
    """The fixture plant with a coal feeder stream (the power tag stands in as t/h)."""
    d = d if d is not None else plant_dict()
    d["factor_table"] = str(SHIPPED_FACTORS)
    d["reconciliation"] = {"limit_pct": 5.0}
    d["units"][0]["streams"] = [{"id": "U1_coal", "kind": "solid_fuel", "factors": "demo_coal",
                                 "rate_per_h": {"tag": "u1_power"}}]
    return d


def stream(d: dict[str, Any]) -> dict[str, Any]:
    st: dict[str, Any] = d["units"][0]["streams"][0]
    return st


# ----------------------------------------------------------------- valid configurations


def test_defaults_keep_the_standards_rules() -> None:
    cfg, factors = parse_plant(plant_dict(), "plant.yaml")
    assert cfg.clock.min_valid_minutes_per_hour == 45  # HJ 75-2017
    assert cfg.clock.min_valid_hours_per_day == 20
    assert cfg.units[0].sources[0].substitution.rule == "none"
    assert cfg.allowance.carbon_price_cny_t == 0.0
    assert cfg.factor_table is None and factors.streams == ()


def test_full_calculation_config_is_valid() -> None:
    d = with_coal()
    source(d)["substitution"] = {"rule": "mrr_mean_2sigma", "lookback_h": 720}
    d["units"][0]["streams"].append({
        "id": "U1_aux", "kind": "electricity", "factors": "grid_electricity",
        "counter": {"tag": "u1_power", "rollover_count": 1e8, "max_jump_per_h": 5e4,
                    "quantity_per_count": 0.001}})
    d["allowance"]["carbon_price_cny_t"] = 95.0
    cfg, factors = parse_plant(d, "plant.yaml")
    coal, aux = cfg.units[0].streams
    assert (coal.quantity_unit, coal.calc_method, coal.direct) == ("t", "ncv_cc_of", True)
    assert (aux.quantity_unit, aux.calc_method, aux.direct) == ("MWh", "electricity", False)
    assert aux.counter is not None and aux.counter.quantity_per_count == 0.001
    assert [v.id for v in factors.versions("demo_coal")] == ["demo-coal-2020-01",
                                                                 "demo-coal-2026-11"]
    assert cfg.reconciliation is not None and cfg.reconciliation.limit_pct == 5.0


def test_factor_table_is_read_relative_to_the_plant_file(tmp_path: Path) -> None:
    (tmp_path / "f.yaml").write_text(SHIPPED_FACTORS.read_text(encoding="utf-8"),
                                     encoding="utf-8")
    d = with_coal()
    d["factor_table"] = "f.yaml"
    plant = tmp_path / "plant.yaml"
    plant.write_text(yaml.safe_dump(d, allow_unicode=True), encoding="utf-8")
    assert load_plant(plant).factors.streams == ("grid_electricity", "purchased_heat",
                                                  "demo_coal", "natural_gas")


# ----------------------------------------------------------------- validity rules


@pytest.mark.parametrize(("key", "value", "message"), [
    ("min_valid_minutes_per_hour", 61, "Input should be less than or equal to 60"),
    ("min_valid_minutes_per_hour", 0, "Input should be greater than or equal to 1"),
    ("min_valid_hours_per_day", 25, "Input should be less than or equal to 24"),
    ("min_valid_hours_per_day", "many", "Input should be a valid integer, unable to parse "
                                        "string as an integer"),
])
def test_validity_rules(key: str, value: Any, message: str) -> None:
    d = plant_dict()
    d["clock"][key] = value
    assert problems_of(d) == [(f"clock.{key}", message)]


# ----------------------------------------------------------------- substitution


SUB = "units[0].sources[0].substitution"


@pytest.mark.parametrize(("rule", "path", "message"), [
    ({"rule": "mean"}, f"{SUB}.rule", "unknown rule 'mean' (known: 'none', 'mrr_mean_2sigma', "
     "'max_previous_n', 'factor_method')"),
    ({"rule": "mrr_mean_2sigma"}, f"{SUB}.lookback_h", "required key is missing"),
    ({"rule": "mrr_mean_2sigma", "lookback_h": 1}, f"{SUB}.lookback_h",
     "Input should be greater than or equal to 2"),
    ({"rule": "mrr_mean_2sigma", "lookback_h": 9000}, f"{SUB}.lookback_h",
     "Input should be less than or equal to 8784"),
    ({"rule": "mrr_mean_2sigma", "lookback_h": 24, "min_valid_hours": 1},
     f"{SUB}.min_valid_hours", "Input should be greater than or equal to 2"),
    ({"rule": "mrr_mean_2sigma", "lookback_h": 24, "min_valid_hours": 25},
     f"{SUB}.min_valid_hours", "25 valid hours can never be found in a lookback of 24 h"),
    ({"rule": "mrr_mean_2sigma", "lookback_h": 24, "n_hours": 3}, f"{SUB}.n_hours",
     "unknown key"),
    ({"rule": "max_previous_n", "lookback_h": 24}, f"{SUB}.n_hours", "required key is missing"),
    ({"rule": "max_previous_n", "n_hours": 0, "lookback_h": 24}, f"{SUB}.n_hours",
     "Input should be greater than or equal to 1"),
    ({"rule": "max_previous_n", "n_hours": 24, "lookback_h": 12}, f"{SUB}.lookback_h",
     "shorter than n_hours (24): the 24 previous valid hours are looked for in the lookback"),
    ({"rule": "max_previous_n", "n_hours": 3, "lookback_h": 24, "min_valid_hours": 4},
     f"{SUB}.min_valid_hours", "more than n_hours (3), the most the rule looks at"),
    ({"rule": "max_previous_n", "n_hours": 3, "lookback_h": 24, "min_valid_hours": 0},
     f"{SUB}.min_valid_hours", "Input should be greater than or equal to 1"),
    ({"rule": "factor_method"}, f"{SUB}.rule",
     "factor_method needs fuel or process streams on unit 'U1' ('streams')"),
    ({"rule": "none", "lookback_h": 3}, f"{SUB}.lookback_h", "unknown key"),
])
def test_bad_substitution(rule: dict[str, Any], path: str, message: str) -> None:
    d = plant_dict()
    source(d)["substitution"] = rule
    assert problems_of(d) == [(path, message)]


def test_good_substitution_rules() -> None:
    for rule in ({"rule": "none"}, {"rule": "mrr_mean_2sigma", "lookback_h": 720},
                 {"rule": "max_previous_n", "n_hours": 24, "lookback_h": 720,
                  "min_valid_hours": 12}):
        d = plant_dict()
        source(d)["substitution"] = rule
        assert parse_config(d, "plant.yaml").units[0].sources[0].substitution.rule == rule["rule"]
    d = with_coal()
    source(d)["substitution"] = {"rule": "factor_method"}
    assert parse_config(d, "plant.yaml").units[0].sources[0].substitution.rule == "factor_method"


def test_factor_method_substitution_needs_a_single_source_unit() -> None:
    d = with_coal()
    second = {**source(d), "id": "S1b"}
    d["units"][0]["sources"].append(second)
    source(d)["substitution"] = {"rule": "factor_method"}
    assert problems_of(d) == [(f"{SUB}.rule", "factor_method needs a unit whose emissions all "
                               "leave through this one source; unit 'U1' has 2")]


def test_factor_method_substitution_ignores_purchased_energy() -> None:
    d = with_coal()
    stream(d).update(kind="electricity", factors="grid_electricity")
    source(d)["substitution"] = {"rule": "factor_method"}
    d["reconciliation"] = None
    assert problems_of(d) == [(f"{SUB}.rule",
                               "factor_method needs fuel or process streams on unit 'U1' "
                               "('streams')")]


# ----------------------------------------------------------------- streams and counters


ST = "units[0].streams[0]"


@pytest.mark.parametrize(("change", "path", "message"), [
    ({"kind": "coal"}, f"{ST}.kind", "Input should be 'solid_fuel', 'liquid_fuel', "
     "'gaseous_fuel', 'electricity', 'heat', 'process', 'carbon_input', 'carbon_output', "
     "'clinker', 'lime', 'electricity_export', 'heat_export', 'ghg' or "
     "'electricity_green'"),
    ({"id": "1coal"}, f"{ST}.id", "String should match pattern '^[A-Za-z][A-Za-z0-9_\\-]{0,63}$'"),
    ({"rate_per_h": None}, ST, "give either 'rate_per_h' or 'counter'"),
    ({"counter": {"tag": "u1_power", "rollover_count": 1e8, "max_jump_per_h": 300}}, ST,
     "give either 'rate_per_h' or 'counter'"),
    ({"rate_per_h": {"tag": "coal_belt"}}, f"{ST}.rate_per_h.tag", "unknown tag 'coal_belt'"),
    ({"method": "measured_carbon", "kind": "heat"}, ST,
     "'method' only applies to fuels, not to kind 'heat'"),
    ({"method": "guess"}, f"{ST}.method",
     "Input should be 'ncv_cc_of' or 'measured_carbon'"),
    ({"id": "S1"}, f"{ST}.id", "duplicate id 'S1' (also units[0].sources[0])"),
    ({"factors": "lignite"}, f"{ST}.factors",
     f"no factor stream 'lignite' in {SHIPPED_FACTORS} (it has: grid_electricity, "
     "purchased_heat, demo_coal, natural_gas)"),
    ({"method": "measured_carbon"}, f"{ST}.factors", f"{SHIPPED_FACTORS}: stream 'demo_coal', "
     "factor version 'demo-coal-2020-01': method measured_carbon with quantity in t needs "
     "factor(s) c_ar_tc_t"),
    ({"kind": "gaseous_fuel"}, f"{ST}.factors", f"{SHIPPED_FACTORS}: stream 'demo_coal', "
     "factor version 'demo-coal-2020-01': method ncv_cc_of with quantity in 1e4m3 needs "
     "factor(s) ncv_gj_1e4m3"),
    ({"unit_of_measure": "t"}, f"{ST}.unit_of_measure", "unknown key"),
])
def test_bad_stream(change: dict[str, Any], path: str, message: str) -> None:
    d = with_coal()
    stream(d).update(change)
    for k in [k for k, v in stream(d).items() if v is None]:
        del stream(d)[k]
    assert problems_of(d) == [(path, message)]


@pytest.mark.parametrize(("counter", "path", "message"), [
    ({"tag": "nope", "rollover_count": 1e8, "max_jump_per_h": 300},
     f"{ST}.counter.tag", "unknown tag 'nope'"),
    ({"tag": "u1_power", "rollover_count": 0, "max_jump_per_h": 300},
     f"{ST}.counter.rollover_count", "Input should be greater than 0"),
    ({"tag": "u1_power", "rollover_count": 1e8},
     f"{ST}.counter.max_jump_per_h", "required key is missing"),
    ({"tag": "u1_power", "rollover_count": 1e8, "max_jump_per_h": -1},
     f"{ST}.counter.max_jump_per_h", "Input should be greater than 0"),
    ({"tag": "u1_power", "rollover_count": 1e8, "max_jump_per_h": 300,
      "quantity_per_count": 0}, f"{ST}.counter.quantity_per_count",
     "Input should be greater than 0"),
])
def test_bad_counter(counter: dict[str, Any], path: str, message: str) -> None:
    d = with_coal()
    del stream(d)["rate_per_h"]
    stream(d)["counter"] = counter
    assert problems_of(d) == [(path, message)]


def test_streams_need_a_factor_table_and_a_reconciliation_limit() -> None:
    d = with_coal()
    del d["factor_table"], d["reconciliation"]
    assert problems_of(d) == [
        ("reconciliation", "unit 'U1' has CEMS sources and fuel or process streams, "
         "reconciled daily: set 'reconciliation.limit_pct'"),
        ("factor_table", "streams need a factor table: set 'factor_table' to a YAML file of "
         "factor versions (e.g. factors.yaml)")]


@pytest.mark.parametrize(("value", "message"), [
    (0, "Input should be greater than 0"),
    (150, "Input should be less than or equal to 100"),
])
def test_bad_reconciliation_limit(value: float, message: str) -> None:
    d = with_coal()
    d["reconciliation"] = {"limit_pct": value}
    assert problems_of(d) == [("reconciliation.limit_pct", message)]


def test_bad_carbon_price() -> None:
    d = plant_dict()
    d["allowance"]["carbon_price_cny_t"] = -80
    assert problems_of(d) == [("allowance.carbon_price_cny_t",
                               "Input should be greater than or equal to 0")]


# ----------------------------------------------------------------- the factor table file


def factor_file_problems(tmp_path: Path, versions: Any) -> tuple[str, list[tuple[str, str]]]:
    f = tmp_path / "factors.yaml"
    f.write_text(yaml.safe_dump({"versions": versions}), encoding="utf-8")
    d = with_coal()
    d["factor_table"] = "factors.yaml"
    with pytest.raises(ConfigError) as exc:
        parse_config(d, "plant.yaml", tmp_path)
    return str(exc.value), exc.value.problems


COAL = {"id": "c1", "stream": "demo_coal", "effective_from": "2024-01-01T00:00:00+08:00",
        "source": "lab report 2024-01", "factors": {"ncv_gj_t": 20.0, "cc_tc_gj": 0.03085,
                                                    "of": 0.99}}


@pytest.mark.parametrize(("version", "path", "message"), [
    ({**COAL, "effective_from": "2024-01-01T00:00:00"}, "versions[0].effective_from",
     "Input should have timezone info"),
    ({**COAL, "factors": {**COAL["factors"], "of": 1.2}}, "versions[0].factors",
     "stream 'demo_coal', factor version 'c1': OF (of) = 1.2 is outside (0, 1]"),
    ({**COAL, "factors": {**COAL["factors"], "ncv": 20.0}}, "versions[0].factors",
     "stream 'demo_coal', factor version 'c1': unknown factor 'ncv' (known: ncv_gj_t, "
     "ncv_gj_1e4m3, cc_tc_gj, of, c_ar_tc_t, c_ar_tc_1e4m3, ef_tco2_mwh, ef_green_tco2_mwh, "
     "ef_tco2_gj, "
     "ef_tco2_t, c_tc_t, cao_fraction, mgo_fraction, cao_raw_fraction, mgo_raw_fraction, "
     "ef_ch4_kg_tj, ef_n2o_kg_tj, ef_t_gas_t)"),
    ({**COAL, "factors": {**COAL["factors"], "cc_tc_gj": 0}}, "versions[0].factors",
     "stream 'demo_coal', factor version 'c1': factor cc_tc_gj = 0.0 must be finite and > 0"),
    ({**COAL, "source": ""}, "versions[0].source", "String should have at least 1 character"),
    ({k: v for k, v in COAL.items() if k != "stream"}, "versions[0].stream",
     "required key is missing"),
])
def test_bad_factor_version(tmp_path: Path, version: dict[str, Any], path: str,
                            message: str) -> None:
    text, problems = factor_file_problems(tmp_path, [version])
    assert problems == [(path, message)]
    assert text.startswith(f"{tmp_path / 'factors.yaml'}: {path}: ")


def test_factor_version_ids_and_dates_are_unique(tmp_path: Path) -> None:
    _, problems = factor_file_problems(tmp_path, [COAL, {**COAL, "stream": "other"}])
    assert problems == [("versions", "factor version id 'c1' is used twice (streams "
                         "'demo_coal' and 'other')")]
    _, problems = factor_file_problems(tmp_path, [COAL, {**COAL, "id": "c2"}])
    assert problems == [("versions", "stream 'demo_coal': factor versions 'c1' and 'c2' share "
                         "effective_from 2023-12-31T16:00:00+00:00")]


def test_missing_factor_table_file(tmp_path: Path) -> None:
    d = with_coal()
    d["factor_table"] = "nope.yaml"
    with pytest.raises(ConfigError) as exc:
        parse_config(d, "plant.yaml", tmp_path)
    # Issue 11: the plant file and its key are named, with the path that was tried
    # (it used to name only nope.yaml and "(file)").
    assert exc.value.problems == [("factor_table", f"cannot read {tmp_path / 'nope.yaml'}: "
                                   "No such file or directory")]
    assert str(exc.value).startswith("plant.yaml: factor_table: ")
