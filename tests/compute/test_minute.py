"""The calculator wired to a configuration: tags feed the right inputs."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from compute import kernels as k
from compute.minute import MinuteArrays, MinuteCalculator
from compute.tagstore import TagStore
from server.config import parse_plant
from tests.fixtures.plant import VECTOR, plant_dict, plant_plan


def test_minute_from_samples_matches_worked_example() -> None:
    calc = MinuteCalculator(plant_plan())
    store = TagStore(calc.tag_ids, capacity=64)
    values = {"s1_velocity": VECTOR["velocity"], "s1_temp": VECTOR["temp"],
              "s1_static": VECTOR["static"], "s1_moisture": VECTOR["moisture_pct"],
              "s1_co2": VECTOR["co2"], "u1_power": 600.0}
    for i in range(12):
        for tag, v in values.items():
            store.append(store.index[tag], 60.0 + i, v, 0)
    a = calc.compute(store.take(60.0, 120.0))
    assert a.source_flag.tolist() == [0]
    assert a.cems[0, k.OUT_MASS] == pytest.approx(3282.70, abs=0.005)
    assert a.unit_output_mwh[0] == pytest.approx(10.0)  # 600 MW for one minute
    assert a.unit_co2_kg[0] == pytest.approx(3282.70, abs=0.005)


def test_too_few_samples_flags_source_and_unit() -> None:
    calc = MinuteCalculator(plant_plan())  # min_samples_per_minute = 5
    store = TagStore(calc.tag_ids, capacity=64)
    for tag in calc.tag_ids:
        n = 3 if tag == "s1_co2" else 10
        for i in range(n):
            store.append(store.index[tag], 60.0 + i, 1.0, 0)
    a = calc.compute(store.take(60.0, 120.0))
    assert a.tag_flag[calc.tag_ids.index("s1_co2")] == 3  # B: too few, none flagged
    assert a.source_flag.tolist() == [3] and a.unit_flag.tolist() == [3]
    assert np.isfinite(a.cems[0, k.OUT_MASS])  # computed from what there was, but flagged


def with_o2_and_dp_tags(d: dict[str, Any]) -> dict[str, Any]:
    d["devices"][0]["tags"] += [
        {"id": "s1_dp", "register": 10, "unit": "Pa", "sim": {"value": 150.0}},
        {"id": "s1_o2_dry", "register": 12, "unit": "%", "sim": {"value": 6.0}},
        {"id": "s1_o2_wet", "register": 14, "unit": "%", "sim": {"value": 5.52}}]
    return d


SAMPLES = {"s1_velocity": VECTOR["velocity"], "s1_temp": VECTOR["temp"],
           "s1_static": VECTOR["static"], "s1_moisture": VECTOR["moisture_pct"],
           "s1_co2": VECTOR["co2"], "u1_power": 600.0, "s1_dp": 150.0, "s1_o2_dry": 6.0,
           "s1_o2_wet": 5.52}


def minute_of(d: dict[str, Any], flags: dict[str, int] | None = None) -> tuple[
        MinuteCalculator, MinuteArrays]:
    calc = MinuteCalculator(parse_plant(d, "test").plan())
    store = TagStore(calc.tag_ids, capacity=64)
    for i in range(12):
        for tag in calc.tag_ids:
            store.append(store.index[tag], 60.0 + i, SAMPLES[tag], (flags or {}).get(tag, 0))
    return calc, calc.compute(store.take(60.0, 120.0))


def test_measured_minute_has_no_substitution() -> None:
    _, a = minute_of(plant_dict())
    assert a.source_substitution.tolist() == [k.SUB_NONE]


def test_pitot_source() -> None:
    # Pd 150 Pa, Kp 0.84, Kv 1.0, O2 6 % dry, otherwise the worked example: by hand in
    # tests/compute/test_kernels.py (PITOT), ρs 1.095271354 kg/m³, v 13.90205649 m/s,
    # minute mass 3 042.42243 kg.
    d = with_o2_and_dp_tags(plant_dict())
    src = d["units"][0]["sources"][0]
    src["pitot"] = {"kp": 0.84}
    del src["inputs"]["velocity_m_s"]
    src["inputs"] |= {"dynamic_pressure_pa": {"tag": "s1_dp"}, "o2_dry_pct": {"tag": "s1_o2_dry"}}
    _, a = minute_of(d)
    assert a.cems[0, k.OUT_VELOCITY] == pytest.approx(13.90205649, rel=1e-9)
    assert a.cems[0, k.OUT_MASS] == pytest.approx(3_042.42243, rel=1e-9)
    assert a.source_flag.tolist() == [0]


def test_co2_from_o2_while_co2_analyser_is_in_maintenance() -> None:
    # CO2 flagged M (6) all minute; O2 6 % dry, bituminous coal defaults:
    # CO2 = 100 · 1800/9780 · 14.9/20.9 = 13.12120234 %, minute mass 3 589.41862 kg.
    d = with_o2_and_dp_tags(plant_dict())
    src = d["units"][0]["sources"][0]
    src["co2_from_o2"] = {}
    src["inputs"]["o2_dry_pct"] = {"tag": "s1_o2_dry"}
    calc, a = minute_of(d, {"s1_co2": 6})
    assert a.tag_flag[calc.tag_ids.index("s1_co2")] == 6  # the raw reading keeps its flag
    assert np.isnan(a.tag_mean[calc.tag_ids.index("s1_co2")])  # no valid CO2 sample
    assert a.cems[0, k.OUT_CO2_DRY] == pytest.approx(13.12120234, rel=1e-9)
    assert a.cems[0, k.OUT_MASS] == pytest.approx(3_589.41862, rel=1e-9)
    assert a.source_substitution.tolist() == [k.SUB_F_FACTOR_O2]
    assert a.source_flag.tolist() == [0] and a.unit_flag.tolist() == [0]
    assert a.unit_co2_kg[0] == pytest.approx(3_589.41862, rel=1e-9)


def test_moisture_from_wet_and_dry_o2() -> None:
    # Xsw = 1 − 5.52/6.0 = 0.08, as the worked example's moisture → 3 282.70 kg.
    d = with_o2_and_dp_tags(plant_dict())
    inputs = d["units"][0]["sources"][0]["inputs"]
    del inputs["moisture_pct"]
    inputs |= {"o2_dry_pct": {"tag": "s1_o2_dry"}, "o2_wet_pct": {"tag": "s1_o2_wet"}}
    _, a = minute_of(d)
    assert a.cems[0, k.OUT_XSW] == pytest.approx(0.08, rel=1e-12)
    assert a.cems[0, k.OUT_MASS] == pytest.approx(3282.70, abs=0.005)
    assert a.source_flag.tolist() == [0]


def test_constant_inputs_and_actual_flow() -> None:
    d = plant_dict()
    src = d["units"][0]["sources"][0]
    del src["area_m2"]
    del src["inputs"]["velocity_m_s"]
    src["inputs"]["flow_act_m3_h"] = {"value": 1_080_000.0}
    src["inputs"]["moisture_pct"] = {"value": 8.0}
    _, a = minute_of(d)
    assert a.cems[0, k.OUT_MASS] == pytest.approx(3282.70, abs=0.005)
    assert np.isnan(a.cems[0, k.OUT_VELOCITY])
