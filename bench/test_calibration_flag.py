"""The minute calculation with every source's calibration status tag read (issue 15).

compute.minute.MinuteCalculator flags a source's minute C when its analyser's
calibration-in-progress tag reads non-zero. This measures `compute` on one 1 Hz minute
of a 16 700-source plant (100 sources a device, six inputs each) whose every source has
such a tag, against the same plant without the tags, in the same run: the cost of the
flag is the difference (target: a few % of the minute, no Python loop per source).

With `--benchmark-disable` (make test) every case runs once, as a correctness check.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pytest

from bench.test_real_minute import PER_DEVICE, plant_dict
from compute.minute import MinuteArrays, MinuteCalculator
from compute.tagstore import Window
from server.config import parse_plant

N_SRC = 16_700
SAMPLES = 60
CALIBRATING = 0.01  # share of the sources calibrating in the measured minute


def with_calibration_tags(d: dict[str, Any]) -> dict[str, Any]:
    """Every source gets a status tag on its device and a `qa.calibration_tag`."""
    for dev, unit in zip(d["devices"], d["units"], strict=True):
        for s, src in enumerate(unit["sources"]):
            tag = f"{src['id'].lower()}_cal"
            dev["tags"].append({"id": tag, "register": 12 * PER_DEVICE + 2 + 2 * s})
            src["qa"] = {"calibration_tag": tag}
    return d


@functools.cache
def calculator(with_tags: bool) -> tuple[MinuteCalculator, Window]:
    """The calculator and one minute's window (the status reads 1 at 1 % of the sources)."""
    d = plant_dict(N_SRC)
    if with_tags:
        d = with_calibration_tags(d)
    plant = parse_plant(d, "bench/test_calibration_flag.py")
    calc = MinuteCalculator(plant.plan())
    n_tags = len(calc.tag_ids)
    rng = np.random.default_rng(3)
    values = 10.0 * (1 + 0.01 * rng.standard_normal((n_tags, SAMPLES)))
    cal_rows = [i for i, t in enumerate(calc.tag_ids) if t.endswith("_cal")]
    values[cal_rows] = 0.0
    if cal_rows:
        on = rng.choice(cal_rows, int(CALIBRATING * len(cal_rows)), replace=False)
        values[on, 30:] = 1.0  # calibration began half way through the minute
    times = np.tile(np.arange(SAMPLES, dtype=np.float64), (n_tags, 1))
    window = Window(values, np.zeros((n_tags, SAMPLES), np.uint8), times,
                    np.full(n_tags, SAMPLES, np.int64))
    return calc, window


def group() -> str:
    return f"minute calculation, {N_SRC:,} sources, calibration tags"


@pytest.mark.parametrize("with_tags", [False, True], ids=["without", "with"])
def test_minute_with_calibration_tags(benchmark, with_tags: bool) -> None:  # type: ignore[no-untyped-def]
    """MinuteCalculator.compute of one minute."""
    calc, window = calculator(with_tags)
    benchmark.group = group()
    a: MinuteArrays = benchmark(calc.compute, window)
    n_c = int((a.source_flag == 5).sum())
    assert n_c == (int(CALIBRATING * N_SRC) if with_tags else 0)
