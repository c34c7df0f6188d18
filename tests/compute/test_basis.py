"""Units accounted by the emission-factor method (issue 18): `basis`, a unit without CEMS,
an output in t, the accounted co2_t in the hours, days, intensity and allowance position.

The plant: the fixture's CEMS unit U1 (600 MW, S1 at 12.0 % and 835 718.9 m³/h) and a
blast furnace BF without any source (basis factor by default), coke 40 t/h in at
0.85 tC/t, hot metal 115 t/h out at 0.045 tC/t, the hot metal also its output (t/h).
Every figure is worked by hand in the comments and checked to 1e-9 relative.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from compute import kernels
from compute.entries import Override, Records
from compute.minute import MinuteCalculator
from compute.periods import MinuteBatch, PeriodCycle
from compute.plan import build_plan
from model.errors import ConfigError
from model.flags import DataFlag
from model.records import PeriodRecords
from server.config import parse_plant
from server.recalc import _periods  # the month and year rows of RESULTS-units.csv
from tests.fixtures.plant import plant_dict

DAY0 = datetime(2025, 12, 31, 16, tzinfo=UTC)  # 2026-01-01 00:00 in Shanghai
# Hour of BF: (40 · 0.85 − 115 · 0.045) tC · 44/12 = (34 − 5.175) · 44/12 = 28.825 · 44/12
BF_HOUR_T = 28.825 * 44 / 12  # = 105.691 666 666 …
# Hour of S1: 12.0 % · 1.964 kg/m³ · 835 718.9 m³/h / 100 / 1000 = 196.962 230 352 t
U1_HOUR_T = 196.962230352
FACTORS = [
    {"id": "coke-2025", "stream": "coke", "effective_from": "2025-01-01T00:00:00+08:00",
     "source": "lab report 2025-01", "factors": {"c_tc_t": 0.85}},
    {"id": "iron-2025", "stream": "hot_metal", "effective_from": "2025-01-01T00:00:00+08:00",
     "source": "lab report 2025-01", "factors": {"c_tc_t": 0.045}},
]


def hand(value: float) -> Any:
    """Equality to a hand-worked figure, to 1e-9 relative."""
    return pytest.approx(value, rel=1e-9, abs=0)


def works(tmp_path: Path) -> dict[str, Any]:
    """The fixture plant with a blast furnace unit BF that has no CEMS source."""
    (tmp_path / "factors.yaml").write_text(yaml.safe_dump({"versions": FACTORS}),
                                           encoding="utf-8")
    d = plant_dict()
    d["devices"][0]["tags"] += [
        {"id": "bf_coke", "register": 30, "unit": "t/h", "sim": {"value": 40.0}},
        {"id": "bf_iron", "register": 32, "unit": "t/h", "sim": {"value": 115.0}}]
    d["factor_table"] = str(tmp_path / "factors.yaml")
    d["units"].append({
        "id": "BF", "name": "Blast furnace", "output": {"rate_t_h": {"tag": "bf_iron"}},
        "streams": [
            {"id": "BF_coke", "kind": "carbon_input", "factors": "coke",
             "rate_per_h": {"tag": "bf_coke"}},
            {"id": "BF_iron", "kind": "carbon_output", "factors": "hot_metal",
             "rate_per_h": {"tag": "bf_iron"}}]})
    return d


def problems(d: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as exc:
        parse_plant(d, "plant.yaml")
    return exc.value.problems


# ------------------------------------------------------------------ configuration

def test_a_unit_without_sources_is_accounted_by_the_factor_method(tmp_path: Path) -> None:
    cfg = parse_plant(works(tmp_path), "plant.yaml").config
    u1, bf = cfg.units
    assert (u1.accounting_basis, bf.accounting_basis) == ("cems", "factor")
    assert (u1.output.unit, bf.output.unit, bf.output.key) == ("MWh", "t", "rate_t_h")
    assert bf.sources == []  # and no reconciliation asked for: nothing to reconcile with


def test_cems_basis_without_sources_names_the_basis(tmp_path: Path) -> None:
    d = works(tmp_path)
    d["units"][1]["basis"] = "cems"
    assert problems(d) == [("units[1].basis", "unit 'BF' is accounted by CEMS but has no "
                            "'sources': add its stacks, or set 'basis: factor'")]


def test_factor_basis_needs_a_direct_stream(tmp_path: Path) -> None:
    d = works(tmp_path)
    d["units"][1]["streams"] = []
    assert problems(d) == [("units[1].streams", "unit 'BF' is accounted by the emission-"
                            "factor method ('basis: factor') but has no fuel, process, "
                            "carbon-balance or carbonate stream")]


def test_an_output_is_power_or_a_rate_not_both(tmp_path: Path) -> None:
    d = works(tmp_path)
    d["units"][1]["output"]["power_mw"] = {"value": 1.0}
    ((path, message),) = problems(d)
    assert path == "units[1].output"
    assert "give either 'power_mw' or 'rate_t_h'" in message


# ------------------------------------------------------------------ minutes

def test_a_factor_unit_has_no_minute_co2_or_mwh(tmp_path: Path) -> None:
    plan = parse_plant(works(tmp_path), "plant.yaml").plan()
    calc = MinuteCalculator(plan)
    n_tags, width = len(plan.tag_ids), 6
    values = np.full((1, n_tags, width), 1.0)
    for tag, v in (("s1_velocity", 15.0), ("s1_temp", 50.0), ("s1_static", -500.0),
                   ("s1_moisture", 8.0), ("s1_co2", 12.0), ("u1_power", 600.0),
                   ("bf_coke", 40.0), ("bf_iron", 115.0)):
        values[0, plan.tag_ids.index(tag)] = v
    a = calc.compute_batch(values, np.zeros(values.shape, np.uint8),
                           np.full((1, n_tags), width, np.int64))
    # U1: its stack's minute; BF: no CEMS, so no minute CO2, and no MWh (its output is t)
    assert a.unit_co2_kg[0, 0] == a.cems[0, 0, kernels.OUT_MASS] > 0
    assert a.unit_output_mwh[0, 0] == hand(600.0 / 60)
    assert math.isnan(a.unit_co2_kg[0, 1]) and math.isnan(a.unit_output_mwh[0, 1])


# ------------------------------------------------------------------ hours and days

def minutes(tag_ids: tuple[str, ...], hours: int, bad_iron_hour: int | None = None
            ) -> MinuteBatch:
    """`hours` hours of minutes from DAY0 (hot metal flagged D all of `bad_iron_hour`)."""
    n = hours * 60
    means = np.zeros((n, len(tag_ids)))
    means[:, tag_ids.index("u1_power")] = 600.0
    means[:, tag_ids.index("bf_coke")] = 40.0
    means[:, tag_ids.index("bf_iron")] = 115.0
    tag_flag = np.zeros((n, len(tag_ids)), np.uint8)
    if bad_iron_hour is not None:
        tag_flag[bad_iron_hour * 60:(bad_iron_hour + 1) * 60,
                 tag_ids.index("bf_iron")] = int(DataFlag.D)
    t_s = DAY0.timestamp() + 60.0 * np.arange(n, dtype=np.float64)
    return MinuteBatch(t_s, np.full((n, 1), 12.0), np.full((n, 1), 835_718.9),
                       np.zeros((n, 1), np.uint8), means, tag_flag, ())


def run(tmp_path: Path, hours: int, bad_iron_hour: int | None = None
        ) -> tuple[list[PeriodRecords], PeriodRecords]:
    plan = parse_plant(works(tmp_path), "plant.yaml").plan()
    out = PeriodCycle(plan).add(minutes(plan.tag_ids, hours, bad_iron_hour))
    (day,) = [r for r in out if r.level == "day"]
    return [r for r in out if r.level == "hour"], day


def test_hours_account_each_unit_by_its_basis(tmp_path: Path) -> None:
    hours, _ = run(tmp_path, 25)
    u1, bf = hours[0].units
    assert (u1.basis, u1.co2_t, u1.co2_cems_t) == ("cems", hand(U1_HOUR_T), hand(U1_HOUR_T))
    # 196.962 230 352 / 600 = 0.328 270 383 92 t/MWh; no product output
    assert (u1.intensity_t_mwh, math.isnan(u1.output_t)) == (hand(0.32827038392), True)
    assert (bf.basis, bf.co2_t, bf.co2_factor_t) == ("factor", hand(BF_HOUR_T), hand(BF_HOUR_T))
    assert math.isnan(bf.co2_cems_t)
    # 115 t of hot metal: 105.691 666 666 … / 115 = 0.919 057 971 014 … t CO2/t
    assert (bf.output_t, bf.intensity_t_t) == (hand(115.0), hand(BF_HOUR_T / 115))
    assert math.isnan(bf.output_mwh) and math.isnan(bf.intensity_t_mwh)
    assert (bf.valid, bf.flag, bf.intensity_flag) == (True, DataFlag.N, DataFlag.N)
    # The allowance position counts both: 196.962 230 352 + 105.691 666 666 … =
    # 302.653 897 018 666 … t after the year's first hour
    a = hours[0].allowance
    assert a is not None and a.ytd_t == hand(U1_HOUR_T + BF_HOUR_T)


def test_days_and_the_year_to_date_count_factor_units(tmp_path: Path) -> None:
    hours, day = run(tmp_path, 25)
    u1, bf = day.units
    # BF day: coke 960 t · 0.85 = 816 tC, hot metal 2 760 t · 0.045 = 124.2 tC;
    # (816 − 124.2) · 44/12 = 691.8 · 44/12 = 2 536.6 t = 24 · 105.691 666 …
    assert (bf.co2_t, bf.output_t) == (hand(2536.6), hand(2760.0))
    assert bf.intensity_t_t == hand(2536.6 / 2760)
    assert (bf.valid, math.isnan(bf.reconciliation_diff_pct)) == (True, True)
    assert u1.co2_t == hand(24 * U1_HOUR_T)  # 4 727.093 528 448 t
    # The 25th hour's position: the day's 4 727.093 528 448 + 2 536.6 = 7 263.693 528 448 t
    # and the hour's 302.653 897 018 666 … = 7 566.347 425 466 666 … t
    a = hours[24].allowance
    assert a is not None and a.ytd_t == hand(7263.693528448 + U1_HOUR_T + BF_HOUR_T)


def test_a_missing_output_hour_invalidates_the_factor_unit_hour(tmp_path: Path) -> None:
    hours, day = run(tmp_path, 25, bad_iron_hour=5)
    bf = hours[5].units[1]
    # No hot metal: no balance (it would overstate), no output, the flag of the weigher
    assert math.isnan(bf.co2_t) and math.isnan(bf.output_t)
    assert (bf.valid, bf.flag, bf.intensity_flag) == (False, DataFlag.D, DataFlag.D)
    # ytd after hour 5: 6 hours of U1, 5 of BF (hour 5's BF has no value)
    a = hours[5].allowance
    assert a is not None and a.ytd_t == hand(6 * U1_HOUR_T + 5 * BF_HOUR_T)
    # Day: the stream's 23 hours of hot metal, 2 645 t (its day valid with 23 ≥ 20 hours).
    # The balance is over the 23 common hours, hour 5 counting their mean 105.691 666 … t:
    # 24 · 105.691 666 … = 2 536.6 t (Σ of the streams' days, (816 − 2 645 · 0.045) · 44/12
    # = 2 555.575 t, would count hour 5's coke without its hot metal). Its intensity is
    # over the 23 hours with both parts: 23 · 105.691 666 … / (23 · 115), not 2 536.6 / 2 645
    dbf = day.units[1]
    assert (dbf.co2_t, dbf.output_t, dbf.valid) == (hand(2536.6), hand(2645.0), True)
    assert (dbf.intensity_t_t, dbf.intensity_n_valid) == (hand(BF_HOUR_T / 115), 23)


def test_a_product_units_output_is_entered_in_t(tmp_path: Path) -> None:
    p = parse_plant(works(tmp_path), "plant.yaml")
    entered = Records(overrides=(
        Override("unit", "day", "BF", DAY0, {"output_t": 2500.0}, entry=1),
        # output_mwh on a unit in t is no output of it (server/records.py refuses it)
        Override("unit", "hour", "BF", DAY0, {"output_mwh": 1.0}, entry=2)))
    plan = build_plan(p.config, p.plan().tag_ids, p.factors, entered)
    out = PeriodCycle(plan).add(minutes(plan.tag_ids, 25))
    bf_hour = next(r for r in out if r.level == "hour").units[1]
    assert bf_hour.output_t == hand(115.0)  # the weigher's, not the 1.0 in MWh
    (day,) = [r for r in out if r.level == "day"]
    bf = day.units[1]
    # The day's 2 536.6 t over the 2 500 t entered (the weigher read 2 760 t):
    # 1.014 64 t CO2/t, flagged S (set by hand)
    assert (bf.output_t, bf.intensity_t_t, bf.flag) == (hand(2500.0), hand(2536.6 / 2500),
                                                        DataFlag.S)
    assert math.isnan(bf.output_mwh)


def test_restored_days_keep_the_factor_units_in_the_year(tmp_path: Path) -> None:
    plan = parse_plant(works(tmp_path), "plant.yaml").plan()
    out = PeriodCycle(plan).add(minutes(plan.tag_ids, 25))
    hours = [r for r in out if r.level == "hour"]
    days = [r for r in out if r.level == "day"]
    again = PeriodCycle(plan)
    again.restore(hours[:24], days)  # stopped at the end of the first day
    batch = minutes(plan.tag_ids, 25)
    tail = MinuteBatch(batch.t_s[1440:], batch.co2_dry_pct[1440:],
                       batch.flow_std_dry_m3_h[1440:], batch.source_flag[1440:],
                       batch.tag_mean[1440:], batch.tag_flag[1440:], ())
    (hour,) = [r for r in again.add(tail) if r.level == "hour"]
    assert hour.allowance is not None and hours[24].allowance is not None
    assert hour.allowance.ytd_t == hours[24].allowance.ytd_t


def test_month_totals_of_a_factor_unit(tmp_path: Path) -> None:
    plan = parse_plant(works(tmp_path), "plant.yaml").plan()
    records = PeriodCycle(plan).add(minutes(plan.tag_ids, 25))
    (month,) = list(_periods(plan.config, records, "month"))
    u1, bf = month.units
    # One day in the month: BF 2 536.6 t over 2 760 t of hot metal (0.919 057 971 … t/t),
    # no MWh; U1 4 727.093 528 448 t by CEMS over 14 400 MWh
    assert (bf.basis, bf.co2_t, bf.output_t) == ("factor", hand(2536.6), hand(2760.0))
    assert bf.intensity_t_t == hand(2536.6 / 2760)
    assert math.isnan(bf.output_mwh) and math.isnan(bf.intensity_t_mwh)
    assert (u1.basis, u1.co2_t, u1.output_mwh) == ("cems", hand(4727.093528448), hand(14400.0))
    assert math.isnan(u1.output_t)
