"""CO2e: GWP sets and their versions, combustion CH4 / N2O of fuels, ghg streams, and the
stream and unit records' co2e_t (compute/gases.py, compute/gasconfig.py, compute/periods.py).

Worked example (IPCC 2006 vol. 2 ch. 2, Tier 1: t gas = FC · NCV · EF · 1e-6): 100 t of
coal, NCV 20.908 GJ/t, EF_CH4 1 kg/TJ, EF_N2O 1.5 kg/TJ →
  CH4 = 100 · 20.908 · 1 · 1e-6   = 0.0020908 t
  N2O = 100 · 20.908 · 1.5 · 1e-6 = 0.0031362 t
  SAR (21, 310): 0.0020908 · 21 + 0.0031362 · 310 = 0.0439068 + 0.972222  = 1.0161288 t CO2e
  AR5 (28, 265): 0.0020908 · 28 + 0.0031362 · 265 = 0.0585424 + 0.831093  = 0.8896354 t CO2e
  AR6 (27.0, 273): 0.0020908 · 27 + 0.0031362 · 273 = 0.0564516 + 0.8561826 = 0.9126342
The same coal's CO2 with CC 0.02858 tC/GJ, OF 0.98: 100 · 20.908 · 0.02858 · 0.98 · 44/12
= 214.7160… t (written as the expression below).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from compute import factors, gases
from compute.gases import GwpTable, GwpVersion, combustion_gas_t, gwp_set
from compute.periods import PeriodCycle
from model.errors import ConfigError, InvalidValueError
from server.config import parse_config, parse_plant
from tests.compute.test_periods import DAY0, Q, hours_of_minutes
from tests.fixtures.plant import plant_dict

REL = 1e-9
CH4_T = 0.0020908
N2O_T = 0.0031362
COAL_CO2_T = 100 * 20.908 * 0.02858 * 0.98 * 44 / 12
HOUR_CEMS_T = 12.0 * 1.964 * Q / 100 / 1000  # the fixture's CEMS hour (test_periods.py)

FACTORS = """versions:
  - id: grid-1
    stream: grid_electricity
    effective_from: 2020-01-01T00:00:00+08:00
    source: test
    factors: {ef_tco2_mwh: 0.5703}
  - id: coal-1
    stream: coal
    effective_from: 2020-01-01T00:00:00+08:00
    source: test (IPCC 2006 vol. 2 table 2.2 style CH4 / N2O)
    factors: {ncv_gj_t: 20.908, cc_tc_gj: 0.02858, of: 0.98, ef_ch4_kg_tj: 1.0,
              ef_n2o_kg_tj: 1.5}
  - id: sf6-1
    stream: sf6_leak
    effective_from: 2020-01-01T00:00:00+08:00
    source: measured itself
    factors: {ef_t_gas_t: 1.0}
  - id: measured-c
    stream: measured_coal
    effective_from: 2020-01-01T00:00:00+08:00
    source: test
    factors: {c_ar_tc_t: 0.6, of: 0.98, ef_ch4_kg_tj: 1.0}
"""


def approx(x: float) -> Any:
    return pytest.approx(x, rel=REL, abs=0)


# ------------------------------------------------------------------ pure functions


def test_combustion_gases_and_co2e_of_the_worked_example() -> None:
    assert combustion_gas_t(100.0, 20.908, 1.0) == approx(CH4_T)
    assert combustion_gas_t(100.0, 20.908, 1.5) == approx(N2O_T)
    masses = {"CH4": CH4_T, "N2O": N2O_T}
    assert gwp_set("SAR").gas_co2e_t(masses) == approx(1.0161288)
    assert gwp_set("AR5").gas_co2e_t(masses) == approx(0.8896354)
    assert gwp_set("AR6").gas_co2e_t(masses) == approx(0.9126342)
    assert gwp_set("AR4").co2e_t(10.0, masses) == approx(10.0 + CH4_T * 25 + N2O_T * 298)
    assert gwp_set("SAR").gas_co2e_t({"CH4": math.nan}) != gwp_set("SAR").gas_co2e_t({})


def test_shipped_gwp_values() -> None:
    # IPCC SAR table 2.9, AR4 table 2.14, AR5 table 8.A.1, AR6 table 7.15 (100-year).
    assert {k: (v["CH4"], v["CH4_fossil"], v["N2O"]) for k, v in gases.GWP_SETS.items()} == {
        "SAR": (21.0, 21.0, 310.0), "AR4": (25.0, 25.0, 298.0), "AR5": (28.0, 30.0, 265.0),
        "AR6": (27.0, 29.8, 273.0)}


def test_configured_gas_and_unknowns() -> None:
    s = gwp_set("AR5", {"SF6": {"AR5": 23500.0, "SAR": 23900.0}})
    assert s.of("SF6") == 23500.0
    assert gwp_set("SAR", {"SF6": {"SAR": 23900.0}}).gas_co2e_t({"SF6": 0.001}) == approx(23.9)
    with pytest.raises(InvalidValueError, match="no GWP for gas 'SF6'"):
        gwp_set("AR4", {"SF6": {"AR5": 23500.0}}).of("SF6")
    with pytest.raises(InvalidValueError, match="unknown GWP set 'AR7'"):
        gwp_set("AR7")


def test_gwp_version_in_force_by_date() -> None:
    ar5_from = datetime(2025, 1, 1, tzinfo=UTC) - timedelta(hours=8)  # 2025-01-01 +08:00
    table = GwpTable([GwpVersion(gwp_set("SAR"), None),
                      GwpVersion(gwp_set("AR6"), datetime(2030, 1, 1, tzinfo=UTC)),
                      GwpVersion(gwp_set("AR5"), ar5_from)])
    sec = timedelta(seconds=1)
    assert table.at(datetime(2000, 1, 1, tzinfo=UTC)).id == "SAR"  # type: ignore[union-attr]
    assert table.at(ar5_from - sec).id == "SAR"  # type: ignore[union-attr]
    assert table.at(ar5_from).id == "AR5"  # type: ignore[union-attr]
    assert table.at(datetime(2030, 1, 1, tzinfo=UTC)).id == "AR6"  # type: ignore[union-attr]
    dated_only = GwpTable([GwpVersion(gwp_set("AR5"), ar5_from)])
    assert dated_only.at(ar5_from - sec) is None


def test_gas_factors_need_a_fuel_and_its_ncv() -> None:
    t0 = datetime(2020, 1, 1, tzinfo=UTC)
    fuel = factors.FactorVersion("c", "coal", t0, {"c_ar_tc_t": 0.6, "of": 0.98,
                                                   "ef_ch4_kg_tj": 1.0}, "test")
    assert "need the fuel's NCV: add ncv_gj_t" in str(
        factors.gas_factor_problem(fuel, "measured_carbon", "t"))
    with_ncv = factors.FactorVersion("c2", "coal", t0, {**fuel.values, "ncv_gj_t": 20.908},
                                     "test")
    assert factors.gases_t(with_ncv, "measured_carbon", "t", 100.0) == {"CH4": approx(CH4_T)}
    grid = factors.FactorVersion("g", "grid", t0, {"ef_tco2_mwh": 0.5, "ef_n2o_kg_tj": 1.0},
                                 "test")
    assert "only apply to fuels" in str(factors.gas_factor_problem(grid, "electricity", "MWh"))


# ------------------------------------------------------------------ configuration


def plant(tmp_path: Path, gwp: dict[str, Any] | None = None,
          streams: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The fixture plant with a coal feeder (t/h, the tag u1_coal) and an SF6 leak of
    0.001 t/h (a constant), on the factor table FACTORS."""
    (tmp_path / "factors.yaml").write_text(FACTORS, encoding="utf-8")
    d = plant_dict()
    d["devices"][0]["tags"] += [
        {"id": "u1_coal", "register": 30, "unit": "t/h", "sim": {"value": 100.0}},
        {"id": "u1_aux_kwh", "register": 32, "type": "float64", "unit": "kWh",
         "sim": {"value": 0.0}}]
    d["factor_table"] = str(tmp_path / "factors.yaml")
    d["reconciliation"] = {"limit_pct": 5.0}
    d["units"][0]["streams"] = streams if streams is not None else [
        {"id": "U1_coal", "kind": "solid_fuel", "factors": "coal",
         "rate_per_h": {"tag": "u1_coal"}},
        {"id": "U1_sf6", "kind": "ghg", "gas": "SF6", "factors": "sf6_leak",
         "rate_per_h": {"value": 0.001}}]
    d["gwp"] = gwp if gwp is not None else {
        "set": "SAR", "gases": [{"gas": "SF6", "gwp": {"SAR": 23900, "AR5": 23500}}]}
    return d


def problems(d: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as exc:
        parse_config(d, "plant.yaml")
    return exc.value.problems


@pytest.mark.parametrize(("gwp", "path", "text"), [
    ({"set": "AR7"}, "gwp.set", "unknown GWP set 'AR7'"),
    ({"versions": [{"set": "AR9", "effective_from": "2025-01-01T00:00:00+08:00"}]},
     "gwp.versions[0].set", "unknown GWP set 'AR9'"),
    ({"versions": [{"set": "AR5", "effective_from": "2025-01-01T00:00:00"}]},
     "gwp.versions[0].effective_from", "timezone"),
    ({"gases": [{"gas": "CH4", "gwp": {"AR5": 28}}]}, "gwp.gases[0].gas", "built in"),
    ({"gases": [{"gas": "SF6", "gwp": {"AR5": -1}}]}, "gwp.gases[0].gwp", "> 0"),
    ({"gases": [{"gas": "SF6", "gwp": {"SAR": 23900}}],
      "versions": [{"set": "AR5", "effective_from": "2025-01-01T00:00:00+08:00"}]},
     "gwp.gases[0].gwp", "no GWP for set(s) AR5"),
    ({"set": "SAR", "gwp_set": "AR5"}, "gwp.gwp_set", "unknown key"),
])
def test_bad_gwp_config_names_the_key(tmp_path: Path, gwp: dict[str, Any], path: str,
                                      text: str) -> None:
    got = problems(plant(tmp_path, gwp=gwp))
    assert [p for p, _ in got] == [path], got
    assert text in got[0][1]


def test_bad_gas_streams_name_the_key(tmp_path: Path) -> None:
    sf6 = {"id": "U1_x", "kind": "ghg", "gas": "HFC-23", "factors": "sf6_leak",
           "rate_per_h": {"value": 1.0}}
    got = problems(plant(tmp_path, streams=[sf6]))
    assert got == [("units[0].streams[0].gas", "unknown gas 'HFC-23': one of CH4, "
                    "CH4_fossil, N2O, SF6, or list it in 'gwp.gases' with its GWPs")]
    no_gas = {k: v for k, v in sf6.items() if k != "gas"}
    assert [p for p, _ in problems(plant(tmp_path, streams=[no_gas]))] == ["units[0].streams[0]"]
    measured = {"id": "U1_m", "kind": "solid_fuel", "method": "measured_carbon",
                "factors": "measured_coal", "rate_per_h": {"tag": "u1_coal"}}
    got = problems(plant(tmp_path, streams=[measured]))
    assert [p for p, _ in got] == ["units[0].streams[0].factors"]
    assert "ef_ch4_kg_tj need the fuel's NCV: add ncv_gj_t" in got[0][1]


# ------------------------------------------------------------------ periods


def minutes(hours: int, coal_t_h: float = 100.0) -> Any:
    """test_periods' minutes (CEMS C 12.0 %, coal `coal_t_h`) without its meter counter."""
    return dataclasses.replace(hours_of_minutes(DAY0, hours, coal_t_h=coal_t_h), counters=())


def cycle(tmp_path: Path, **gwp: Any) -> PeriodCycle:
    return PeriodCycle(parse_plant(plant(tmp_path, gwp=gwp or None), "test").plan())


def test_hour_and_day_co2e_of_streams_and_units(tmp_path: Path) -> None:
    out = cycle(tmp_path).add(minutes(25))
    hour = out[0]
    coal, sf6 = hour.streams
    assert (coal.ch4_t, coal.n2o_t) == (approx(CH4_T), approx(N2O_T))
    assert coal.co2_t == approx(COAL_CO2_T)
    # SAR: 214.716… + 1.0161288
    assert (coal.co2e_t, coal.gwp_set) == (approx(COAL_CO2_T + 1.0161288), "SAR")
    # SF6 0.001 t/h measured itself: 0 t CO2, 0.001 · 23 900 = 23.9 t CO2e
    assert (sf6.gas, sf6.gas_t, sf6.co2_t, sf6.co2e_t) == ("SF6", approx(0.001), 0.0,
                                                           approx(23.9))
    (u,) = hour.units
    # A CEMS unit: the CEMS CO2 + its fuel's CH4/N2O + the SF6.
    assert u.co2_t == approx(HOUR_CEMS_T)
    assert (u.co2e_t, u.gwp_set) == (approx(HOUR_CEMS_T + 1.0161288 + 23.9), "SAR")
    day = next(r for r in out if r.level == "day")
    dcoal, dsf6 = day.streams
    # 24 h · 100 t = 2 400 t: CH4 2400 · 20.908e-6 = 0.0501792, N2O · 1.5 = 0.0752688;
    # SAR 0.0501792 · 21 + 0.0752688 · 310 = 1.0537632 + 23.333328 = 24.3870912.
    assert (dcoal.ch4_t, dcoal.n2o_t) == (approx(0.0501792), approx(0.0752688))
    assert dcoal.co2e_t == approx(24 * COAL_CO2_T + 24.3870912)
    assert dsf6.gas_t == approx(0.024) and dsf6.co2e_t == approx(0.024 * 23900)
    (du,) = day.units
    assert du.co2e_t == approx(24 * HOUR_CEMS_T + 24.3870912 + 0.024 * 23900)


def test_the_set_in_force_at_the_start_of_each_period(tmp_path: Path) -> None:
    # AR5 from 2026-01-01 01:00 +08:00 (hour 1 of the plant day): hour 0 SAR, hour 1 AR5;
    # the day starts under SAR.
    gwp = {"set": "SAR", "versions": [{"set": "AR5",
                                       "effective_from": "2026-01-01T01:00:00+08:00"}],
           "gases": [{"gas": "SF6", "gwp": {"SAR": 23900, "AR5": 23500}}]}
    out = cycle(tmp_path, **gwp).add(minutes(25))
    h0, h1 = out[0], out[1]
    assert [s.gwp_set for s in h0.streams] == ["SAR", "SAR"]
    assert [s.gwp_set for s in h1.streams] == ["AR5", "AR5"]
    # AR5: 0.8896354 from the coal, 0.001 · 23 500 = 23.5 from the SF6
    assert h1.units[0].co2e_t == approx(HOUR_CEMS_T + 0.8896354 + 23.5)
    assert h1.streams[0].co2e_t == approx(COAL_CO2_T + 0.8896354)
    day = next(r for r in out if r.level == "day")
    assert day.units[0].gwp_set == "SAR"


def test_a_stream_without_gas_factors_has_co2e_equal_to_co2(tmp_path: Path) -> None:
    aux = {"id": "U1_aux", "kind": "electricity", "factors": "grid_electricity",
           "rate_per_h": {"value": 2.0}}
    out = PeriodCycle(parse_plant(plant(tmp_path, gwp={}, streams=[aux]), "test").plan()).add(
        minutes(1))
    (s,) = out[0].streams
    assert (s.ch4_t, s.n2o_t, s.co2e_t, s.gwp_set) == (0.0, 0.0, s.co2_t, "SAR")
    assert s.co2_t == approx(2.0 * 0.5703)
    # An indirect stream is no part of the unit's CO2e: the CEMS CO2 alone.
    assert out[0].units[0].co2e_t == approx(HOUR_CEMS_T)


def test_an_hour_without_fuel_quantity_has_no_co2e(tmp_path: Path) -> None:
    batch = minutes(1, coal_t_h=math.nan)
    out = cycle(tmp_path).add(batch)
    coal = out[0].streams[0]
    assert math.isnan(coal.ch4_t) and math.isnan(coal.co2e_t)
    assert math.isnan(out[0].units[0].co2e_t)
    assert out[0].units[0].co2_t == approx(HOUR_CEMS_T)  # the CO2 stays


def written(plan: Any, records: list[Any], level: str) -> dict[str, list[dict[str, str]]]:
    """The rows `carbonscada recalc` writes for `records` (server/recalc.py), read back."""
    from server.recalc import ResultFiles, write_records

    bufs = {k: io.StringIO() for k in ("sources", "streams", "units", "allowance")}
    write_records(ResultFiles(**bufs), plan, records, level)
    return {k: list(csv.DictReader(io.StringIO(b.getvalue()))) for k, b in bufs.items()}


def test_recalc_rows_carry_co2e_with_every_digit(tmp_path: Path) -> None:
    plan = parse_plant(plant(tmp_path), "test").plan()
    records = PeriodCycle(plan).add(minutes(25))
    hours = [r for r in records if r.level == "hour"]
    rows = written(plan, records, "hour")
    coal = [r for r in rows["streams"] if r["stream"] == "U1_coal"]
    # the CSV is the record's float exactly (repr), so a recalculation compares bit for bit
    assert [r["co2e_t"] for r in coal] == [repr(h.streams[0].co2e_t) for h in hours]
    assert (coal[0]["ch4_t"], coal[0]["n2o_t"], coal[0]["gwp_set"]) == (
        repr(hours[0].streams[0].ch4_t), repr(hours[0].streams[0].n2o_t), "SAR")
    assert float(coal[0]["ef_ch4_kg_tj"]) == 1.0 and float(coal[0]["ef_n2o_kg_tj"]) == 1.5
    sf6 = next(r for r in rows["streams"] if r["stream"] == "U1_sf6")
    assert (sf6["gas"], float(sf6["gas_t"]), float(sf6["co2e_t"])) == (
        "SF6", approx(0.001), approx(23.9))
    assert [r["co2e_t"] for r in rows["units"]] == [repr(h.units[0].co2e_t) for h in hours]
    day = next(r for r in records if r.level == "day")
    (month,) = written(plan, [day], "month")["units"]
    # one day in the month: the month's CO2e is the day's
    assert (float(month["co2e_t"]), month["gwp_set"]) == (approx(day.units[0].co2e_t), "SAR")


def test_a_gas_meter_without_a_value_leaves_the_co2_alone(tmp_path: Path) -> None:
    leak = {"id": "U1_sf6", "kind": "ghg", "gas": "SF6", "factors": "sf6_leak",
            "rate_per_h": {"tag": "u1_coal"}}  # the coal tag stands in, NaN all hour
    plan = parse_plant(plant(tmp_path, streams=[leak]), "test").plan()
    out = PeriodCycle(plan).add(minutes(1, coal_t_h=math.nan))
    (s,) = out[0].streams
    assert (s.co2_t, s.gas) == (0.0, "SF6") and math.isnan(s.gas_t) and math.isnan(s.co2e_t)
    (u,) = out[0].units
    assert u.co2_factor_t == 0.0 and u.co2_t == approx(HOUR_CEMS_T)
    assert math.isnan(u.co2e_t)  # its SF6 is unknown
