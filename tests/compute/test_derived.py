"""Intensity, reconciliation, uncertainty and allowance position against hand-worked numbers."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest

from compute import derived as d
from compute.clock import PlantClock


def printed(value: float, decimals: int) -> object:
    """Equality to a figure printed in calc_vectors.md, rounded to `decimals` places."""
    return pytest.approx(value, abs=0.5 * 10.0**-decimals, rel=0)


def test_intensity() -> None:
    # 5 703 t over 10 000 MWh
    assert float(d.intensity(5_703.0, 10_000.0)) == pytest.approx(0.5703, rel=1e-12)
    got = d.intensity([100.0, 100.0, 100.0, np.nan], [50.0, 0.0, -3.0, 10.0])
    assert got[0] == 2.0 and np.isnan(got[1:]).all()


def test_energy_intensity() -> None:
    # 29 307.6 GJ for 1 000 t of product = 29.3076 GJ/t = 1 tce/t
    assert float(d.energy_intensity_gj(29_307.6, 1_000.0)) == pytest.approx(29.3076, rel=1e-12)
    assert float(d.energy_intensity_tce(29_307.6, 1_000.0)) == pytest.approx(1.0, rel=1e-12)
    assert np.isnan(d.energy_intensity_tce(1.0, 0.0))


def test_reconciliation() -> None:
    rec = d.reconcile([1_050.0, 980.0, 1_000.0, 1.0, np.nan], [1_000.0, 1_000.0, 1_000.0, 0.0,
                                                              1.0], limit_pct=3.0)
    assert rec.diff_pct[:3] == pytest.approx([5.0, -2.0, 0.0], rel=1e-12)
    assert rec.exceeds.tolist() == [True, False, False, False, False]
    assert rec.comparable.tolist() == [True, True, True, False, False]
    assert np.isnan(rec.diff_pct[3:]).all()
    assert bool(d.reconcile(970.0, 1_000.0, 2.5).exceeds)  # −3 %: the limit is two-sided


def test_combined_relative_uncertainty() -> None:
    # flow 2.5 %, CO2 2 % → sqrt(2.5² + 2²) = sqrt(10.25) = 3.2016 %
    assert d.combined_relative_uncertainty([2.5, 2.0]) == printed(3.2016, 4)
    assert d.combined_relative_uncertainty([0.03, 0.04]) == pytest.approx(0.05, rel=1e-12)


def test_rectangular() -> None:
    # ±1 % stated accuracy → 1/√3 = 0.57735 %
    assert d.standard_uncertainty_rectangular(1.0) == printed(0.57735, 5)


def test_sum_uncertainty_independent_and_correlated() -> None:
    # 4 × 100 t at 2 %: independent sqrt(4·2²) = 4 t (1 %); correlated 4·2 = 8 t (2 %)
    ind = d.sum_uncertainty([100.0] * 4, 2.0)
    assert (ind.total_t, ind.u_t, ind.u_rel_pct) == pytest.approx((400.0, 4.0, 1.0), rel=1e-12)
    cor = d.sum_uncertainty([100.0] * 4, 2.0, correlated=True)
    assert (cor.u_t, cor.u_rel_pct) == pytest.approx((8.0, 2.0), rel=1e-12)
    # 24 hours at 3.2016 %: 3.20156/√24 = 0.6535 %
    day = d.sum_uncertainty([196.9622] * 24, math.sqrt(10.25))
    assert day.u_rel_pct == printed(0.6535, 4)
    # per-term uncertainties: sqrt((0.01·300)² + (0.04·100)²) = sqrt(9 + 16) = 5 t
    assert d.sum_uncertainty([300.0, 100.0], [1.0, 4.0]).u_t == pytest.approx(5.0, rel=1e-12)
    assert math.isnan(d.sum_uncertainty([0.0], 2.0).u_rel_pct)


def test_allowance_position_on_track() -> None:
    # annual 1 000 000 t, ytd 800 000 t after day 300 of 365, last 30 days 90 000 t
    pos = d.allowance_position(1_000_000.0, 800_000.0, 90_000.0, year_fraction=300 / 365,
                               days_left=65.0, carbon_price_cny_t=60.0)
    assert pos.forecast_year_end_t == pytest.approx(995_000.0, rel=1e-12)  # 800 000 + 3 000·65
    assert pos.headroom_t == 200_000.0
    assert pos.used_pct == pytest.approx(80.0, rel=1e-12)
    assert pos.prorated_t == printed(821_917.808, 3)  # 1e6 · 300/365
    assert pos.forecast_shortfall_t == 0.0 and pos.shortfall_cost_cny == 0.0


def test_allowance_position_with_shortfall() -> None:
    # last 30 days 120 000 t → 4 000 t/d · 65 = 260 000 → 1 060 000 t; 60 000 t short at 60 CNY/t
    pos = d.allowance_position(1_000_000.0, 800_000.0, 120_000.0, year_fraction=300 / 365,
                               days_left=65.0, carbon_price_cny_t=60.0)
    assert pos.forecast_year_end_t == pytest.approx(1_060_000.0, rel=1e-12)
    assert pos.forecast_shortfall_t == pytest.approx(60_000.0, rel=1e-12)
    assert pos.shortfall_cost_cny == pytest.approx(3_600_000.0, rel=1e-12)


def test_allowance_position_rejects_bad_progress() -> None:
    with pytest.raises(ValueError):
        d.allowance_position(1.0, 0.0, 0.0, year_fraction=1.2, days_left=0.0)
    with pytest.raises(ValueError):
        d.allowance_position(1.0, 0.0, 0.0, year_fraction=0.5, days_left=-1.0)
    assert math.isnan(d.allowance_position(0.0, 5.0, 0.0, year_fraction=0.5,
                                           days_left=1.0).used_pct)


def test_allowance_from_the_plant_clock() -> None:
    clock = PlantClock()
    # 2023-10-28 00:00 Asia/Shanghai (UTC+8): 300 days of 2023 (365 days) have passed
    t = datetime(2023, 10, 27, 16, tzinfo=UTC)
    frac, left = d.year_progress(clock, t)
    assert frac == pytest.approx(300 / 365, rel=1e-12) and left == pytest.approx(65.0, rel=1e-9)
    pos = d.allowance_position_at(clock, t, 1_000_000.0, 800_000.0, 90_000.0)
    assert pos.forecast_year_end_t == pytest.approx(995_000.0, rel=1e-9)
    # leap year: 2024-10-27 00:00 local is day 300 of 366 → 66 days left
    _, left = d.year_progress(clock, datetime(2024, 10, 26, 16, tzinfo=UTC))
    assert left == pytest.approx(66.0, rel=1e-9)
