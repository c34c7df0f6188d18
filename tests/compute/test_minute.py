"""The calculator wired to a configuration: tags feed the right inputs."""

from __future__ import annotations

import numpy as np
import pytest

from compute import kernels as k
from compute.minute import MinuteCalculator
from compute.tagstore import TagStore
from tests.fixtures.plant import VECTOR, plant_config


def test_minute_from_samples_matches_worked_example() -> None:
    cfg = plant_config()
    calc = MinuteCalculator(cfg)
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
    cfg = plant_config()  # min_samples_per_minute = 5
    calc = MinuteCalculator(cfg)
    store = TagStore(calc.tag_ids, capacity=64)
    for tag in calc.tag_ids:
        n = 3 if tag == "s1_co2" else 10
        for i in range(n):
            store.append(store.index[tag], 60.0 + i, 1.0, 0)
    a = calc.compute(store.take(60.0, 120.0))
    assert a.tag_flag[calc.tag_ids.index("s1_co2")] == 3  # B: too few, none flagged
    assert a.source_flag.tolist() == [3] and a.unit_flag.tolist() == [3]
    assert np.isfinite(a.cems[0, k.OUT_MASS])  # computed from what there was, but flagged
