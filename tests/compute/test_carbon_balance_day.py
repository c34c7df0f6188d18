"""A carbon balance's hours and days when one of its streams misses hours.

The plant: the fixture's CEMS unit U1 (600 MW, S1 at 12.0 % and 835 718.9 m³/h) and a
blast furnace BF without any source (basis factor), coke 10 t/h in at 0.85 tC/t and
blast-furnace gas 20 t/h out at 0.175 tC/t, each from its own tag.
A complete hour: (10 · 0.85 − 20 · 0.175) tC = (8.5 − 3.5) tC = 5 tC · 44/12
= 18.333 333 … t CO2. The day of a balance with incomplete hours is over its common hours
(every balance stream valid), each incomplete hour counting their mean hourly balance
(compute/periods.py, PeriodCycle._balance_day). Figures worked by hand, checked to 1e-9.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from compute.periods import MinuteBatch, PeriodCycle, Readings
from model.flags import DataFlag
from model.records import PeriodRecords
from server.config import parse_plant
from tests.fixtures.plant import plant_dict

DAY0 = datetime(2025, 12, 31, 16, tzinfo=UTC)  # 2026-01-01 00:00 in Shanghai
HOUR_T = 5 * 44 / 12  # 18.333 333 … t CO2, a complete hour of BF
U1_DAY_T = 24 * 196.962230352  # 24 · 12.0 % · 1.964 · 835 718.9 / 1e5 t = 4 727.093 528 448
FACTORS = [
    {"id": "coke-2025", "stream": "coke", "effective_from": "2025-01-01T00:00:00+08:00",
     "source": "lab report 2025-01", "factors": {"c_tc_t": 0.85}},
    {"id": "bfg-2025", "stream": "bf_gas", "effective_from": "2025-01-01T00:00:00+08:00",
     "source": "lab report 2025-01", "factors": {"c_tc_t": 0.175}},
]


def hand(value: float) -> Any:
    """Equality to a hand-worked figure, to 1e-9 relative."""
    return pytest.approx(value, rel=1e-9, abs=0)


def works(tmp_path: Path, gas_counter: bool = False) -> dict[str, Any]:
    """The fixture plant with the blast furnace BF (coke in, gas out, both by a rate tag,
    or the gas by the meter counter bf_gas_total in t)."""
    (tmp_path / "factors.yaml").write_text(yaml.safe_dump({"versions": FACTORS}),
                                           encoding="utf-8")
    d = plant_dict()
    d["devices"][0]["tags"] += [
        {"id": "bf_coke", "register": 30, "unit": "t/h", "sim": {"value": 10.0}},
        {"id": "bf_gas", "register": 32, "unit": "t/h", "sim": {"value": 20.0}},
        {"id": "bf_gas_total", "register": 34, "type": "float64", "unit": "t",
         "sim": {"value": 0.0}}]
    d["factor_table"] = str(tmp_path / "factors.yaml")
    d["units"].append({
        "id": "BF", "name": "Blast furnace", "output": {"rate_t_h": {"value": 6.0}},
        "streams": [
            {"id": "BF_coke", "kind": "carbon_input", "factors": "coke",
             "rate_per_h": {"tag": "bf_coke"}},
            {"id": "BF_gas", "kind": "carbon_output", "factors": "bf_gas",
             "rate_per_h": {"tag": "bf_gas"}}]})
    if gas_counter:
        d["units"][1]["streams"][1] = {
            "id": "BF_gas", "kind": "carbon_output", "factors": "bf_gas",
            "counter": {"tag": "bf_gas_total", "rollover_count": 1e9, "max_jump_per_h": 100.0}}
    return d


def run(tmp_path: Path, bad: dict[str, list[int]], hours: int = 25,
        minutes: range = range(60), flag: DataFlag = DataFlag.D,
        gas_counter: bool = False) -> list[PeriodRecords]:
    """`hours` hours of minutes from DAY0 through PeriodCycle; `bad`: per tag, the hours
    whose `minutes` carry `flag` (no valid rate; for bf_gas with `gas_counter`, the
    register's readings, one 30 s into each minute, 1/3 t more each minute)."""
    plan = parse_plant(works(tmp_path, gas_counter), "plant.yaml").plan()
    tags = plan.tag_ids
    n = hours * 60
    means = np.zeros((n, len(tags)))
    means[:, tags.index("u1_power")] = 600.0
    means[:, tags.index("bf_coke")] = 10.0
    means[:, tags.index("bf_gas")] = 20.0
    tag_flag = np.zeros((n, len(tags)), np.uint8)
    for tag, hs in bad.items():
        for h in hs:
            tag_flag[[h * 60 + m for m in minutes], tags.index(tag)] = int(flag)
    t_s = DAY0.timestamp() + 60.0 * np.arange(n, dtype=np.float64)
    readings: tuple[Readings, ...] = ()
    if gas_counter:
        r_flag = np.zeros(n, np.uint8)
        for h in bad.get("bf_gas", []):
            r_flag[[h * 60 + m for m in minutes]] = int(flag)
        readings = (Readings(t_s + 30.0, np.arange(n, dtype=np.float64) / 3.0, r_flag),)
    return PeriodCycle(plan).add(MinuteBatch(
        t_s, np.full((n, 1), 12.0), np.full((n, 1), 835_718.9), np.zeros((n, 1), np.uint8),
        means, tag_flag, readings))


def split(out: list[PeriodRecords]) -> tuple[list[PeriodRecords], PeriodRecords]:
    hours = [r for r in out if r.level == "hour"]
    (day,) = [r for r in out if r.level == "day"]
    return hours, day


# ------------------------------------------------------------------ hours

def test_an_hour_without_its_output_has_no_balance(tmp_path: Path) -> None:
    hours, _ = split(run(tmp_path, {"bf_gas": [3]}))
    gas = hours[3].streams[1]
    assert (math.isnan(gas.quantity), gas.valid, gas.flag) == (True, False, DataFlag.D)
    # The coke alone would be 8.5 tC · 44/12 = 31.166… t, overstated: no value, invalid
    # with the flag of the missing stream.
    bf = hours[3].units[1]
    assert (math.isnan(bf.co2_factor_t), math.isnan(bf.co2_t), bf.valid, bf.flag) == (
        True, True, False, DataFlag.D)
    assert (hours[2].units[1].co2_t, hours[2].units[1].valid) == (hand(HOUR_T), True)


def test_an_hour_with_too_few_output_minutes_is_invalid(tmp_path: Path) -> None:
    # 30 of the gas's 60 minutes flagged D (< 45 valid): its quantity is the mean of the 30
    # valid minutes' 20 t/h × 1 h = 20 t, so the balance has its value 18.333… t, but the
    # hour is no measured balance: invalid, flag D.
    hours, _ = split(run(tmp_path, {"bf_gas": [3]}, minutes=range(30)))
    gas, bf = hours[3].streams[1], hours[3].units[1]
    assert (gas.quantity, gas.valid, gas.flag, gas.n_valid) == (hand(20.0), False,
                                                                DataFlag.D, 30)
    assert (bf.co2_t, bf.valid, bf.flag) == (hand(HOUR_T), False, DataFlag.D)


def test_an_hour_without_any_balance_stream_has_no_value(tmp_path: Path) -> None:
    # Neither coke nor gas: the unit's hour has no value and flag B, as before.
    hours, _ = split(run(tmp_path, {"bf_coke": [3], "bf_gas": [3]}, flag=DataFlag.B))
    bf = hours[3].units[1]
    assert (math.isnan(bf.co2_t), bf.valid, bf.flag) == (True, False, DataFlag.B)


# ------------------------------------------------------------------ days

def test_incomplete_hours_count_the_mean_balance_of_the_common_hours(tmp_path: Path) -> None:
    _, day = split(run(tmp_path, {"bf_gas": [3, 4]}))
    coke, gas = (x for x in day.streams if x.unit == "BF")
    # The streams' days keep their true quantities: coke 24 · 10 = 240 t · 0.85 · 44/12
    # = 748 t; gas 22 · 20 = 440 t · 0.175 · 44/12 = 282.333… t (−), 22 valid hours ≥ 20.
    assert (coke.quantity, coke.co2_t, coke.n_valid) == (hand(240.0), hand(748.0), 24)
    assert (gas.quantity, gas.co2_t, gas.n_valid, gas.valid) == (
        hand(440.0), hand(-440 * 0.175 * 44 / 12), 22, True)
    # Σ of the streams' days would be 748 − 282.333… = 465.666… t: hours 3 and 4 with
    # their coke (2 · 31.166… t) but without their gas. Common hours: 22, balance
    # 22 · 5 · 44/12 = 403.333… t, mean 18.333… t/h; the 2 incomplete hours take that
    # mean → 24 · 5 · 44/12 = 440 t, valid (22 common hours ≥ 20).
    u1, bf = day.units
    assert (bf.co2_factor_t, bf.co2_t, bf.valid, bf.flag) == (hand(440.0), hand(440.0),
                                                              True, DataFlag.N)
    assert bf.co2e_t == hand(440.0)  # no other gases
    assert bf.n_substituted == 2  # hours 3 and 4 are estimates: an auditor sees how many
    assert (u1.co2_t, u1.valid) == (hand(U1_DAY_T), True)  # the CEMS unit: as before
    assert u1.n_substituted == 0  # none of its source's hours was substituted


def test_too_few_common_hours_leave_the_day_invalid(tmp_path: Path) -> None:
    # Gas missing hours 0–2 (21 valid), coke hours 5–6 (22 valid): each stream's day is
    # valid, but only 24 − 5 = 19 hours are common (< 20): the balance day is invalid
    # (flag D, the missing streams'). Its value: 19 · 18.333… + 5 · 18.333… = 440 t
    # (Σ of the streams' days, 22 · 10 · 0.85 · 44/12 − 21 · 20 · 0.175 · 44/12
    # = 685.666… − 269.5 = 416.166… t, would count hours 0–2 without gas and drop 5–6).
    _, day = split(run(tmp_path, {"bf_gas": [0, 1, 2], "bf_coke": [5, 6]}))
    coke, gas = (x for x in day.streams if x.unit == "BF")
    assert (coke.co2_t, coke.valid, gas.co2_t, gas.valid) == (
        hand(220 * 0.85 * 44 / 12), True, hand(-420 * 0.175 * 44 / 12), True)
    bf = day.units[1]
    assert (bf.co2_t, bf.valid, bf.flag) == (hand(440.0), False, DataFlag.D)


def test_hours_without_any_balance_stream_count_zero(tmp_path: Path) -> None:
    # Hours 10–11 without coke or gas (not running, flag B): they count 0. Gas missing in
    # hour 3: incomplete. Common hours 21, balance 21 · 18.333… = 385 t, + hour 3 at their
    # mean 18.333… → 22 · 18.333… = 403.333… t, valid (21 ≥ 20).
    out = run(tmp_path, {"bf_coke": [10, 11], "bf_gas": [3, 10, 11]}, flag=DataFlag.B)
    _, day = split(out)
    bf = day.units[1]
    assert (bf.co2_t, bf.valid, bf.flag) == (hand(22 * 5 * 44 / 12), True, DataFlag.N)
    assert bf.n_substituted == 1  # hour 3; hours 10–11 count 0, nothing estimated


def test_a_day_without_incomplete_hours_is_the_sum_of_its_streams(tmp_path: Path) -> None:
    # Only hours 10–11 without either stream: no hour is incomplete, so the day is Σ of
    # the streams' days as before: coke 220 t · 0.85 · 44/12 = 685.666… t, gas 440 t ·
    # 0.175 · 44/12 = 282.333… t → 403.333… t = 22 · 18.333… t, bit for bit that sum.
    _, day = split(run(tmp_path, {"bf_coke": [10, 11], "bf_gas": [10, 11]}))
    coke, gas = (x for x in day.streams if x.unit == "BF")
    bf = day.units[1]
    assert bf.co2_t == hand(22 * 5 * 44 / 12)
    assert bf.co2_t == math.fsum([coke.co2_t, gas.co2_t])
    assert bf.n_substituted == 0


def test_a_counter_stream_counts_by_its_day(tmp_path: Path) -> None:
    # The gas by a register, 1/3 t a minute, its readings of hour 3 invalid (B): hour 3 has
    # no gas quantity, and hour 4's first delta spans the gap (61 minutes), so the day's
    # register total loses nothing: readings 0 … 1 439, 1 439/3 t (the first reading opens
    # the register). The balance is then Σ of the streams' days: coke 240 t · 0.85 · 44/12
    # = 748 t; gas 1 439/3 t · 0.175 · 44/12 = 307.786 111 … t (−) → 440.213 888 … t. A
    # common-hour balance would count hour 3 at the mean and hour 4's 40 t of gas too.
    out = run(tmp_path, {"bf_gas": [3]}, flag=DataFlag.B, gas_counter=True)
    hours, day = split(out)
    assert math.isnan(hours[3].streams[1].quantity)
    assert hours[4].streams[1].quantity == hand(40.0)  # 61/3 + 59/3 t
    coke, gas = (x for x in day.streams if x.unit == "BF")
    assert (coke.co2_t, gas.quantity, gas.co2_t) == (
        hand(748.0), hand(1439 / 3), hand(-1439 / 3 * 0.175 * 44 / 12))
    bf = day.units[1]
    assert (bf.co2_t, bf.valid) == (hand(748.0 - 1439 / 3 * 0.175 * 44 / 12), True)


def test_a_restart_mid_day_gives_the_same_balance_day(tmp_path: Path) -> None:
    # The live server restarted after hour 11 continues from the stored hours: the day it
    # closes is the uninterrupted one's, bit for bit (gas missing in hours 3 and 4: 440 t).
    out = run(tmp_path, {"bf_gas": [3, 4]})
    hours, day = split(out)
    plan = parse_plant(works(tmp_path), "plant.yaml").plan()
    again = PeriodCycle(plan)
    again.restore(hours[:12], [])
    tags = plan.tag_ids
    n = 13 * 60
    means = np.zeros((n, len(tags)))
    means[:, tags.index("u1_power")] = 600.0
    means[:, tags.index("bf_coke")] = 10.0
    means[:, tags.index("bf_gas")] = 20.0
    t_s = DAY0.timestamp() + 3600.0 * 12 + 60.0 * np.arange(n, dtype=np.float64)
    rest = again.add(MinuteBatch(t_s, np.full((n, 1), 12.0), np.full((n, 1), 835_718.9),
                                 np.zeros((n, 1), np.uint8), means,
                                 np.zeros((n, len(tags)), np.uint8), ()))
    (day2,) = [r for r in rest if r.level == "day"]
    assert day2.units[1].co2_t == day.units[1].co2_t == hand(440.0)
    assert repr(day2.units) == repr(day.units)  # every float to its last bit (NaN too)
