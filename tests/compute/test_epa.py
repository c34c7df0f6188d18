"""40 CFR 75 appendix F CO2 mass against calc_vectors.md."""

from __future__ import annotations

import numpy as np
import pytest

from compute import epa


def printed(value: float, decimals: int) -> object:
    """Equality to a figure printed in calc_vectors.md, rounded to `decimals` places."""
    return pytest.approx(value, abs=0.5 * 10.0**-decimals, rel=0)


def test_wet_basis() -> None:
    # 5.7e-7 · 10.0 · 5.0e7 = 285.0 short ton/h
    assert float(epa.co2_rate_wet_ton_h(10.0, 5.0e7)) == printed(285.0, 1)


def test_dry_co2_with_wet_flow() -> None:
    # 5.7e-7 · 12.0 · 5.0e7 · 0.90 = 307.8 short ton/h
    assert float(epa.co2_rate_dry_ton_h(12.0, 5.0e7, 10.0)) == printed(307.8, 1)


def test_quarter_total() -> None:
    # 285.0·1 + 307.8·1 + 307.8·0.5 = 746.7 short ton
    rates = np.array([285.0, 307.8, 307.8])
    assert float(epa.co2_total_ton(rates, [1.0, 1.0, 0.5])) == printed(746.7, 1)


def test_quarter_from_hourly_readings() -> None:
    rates = np.concatenate([epa.co2_rate_wet_ton_h([10.0], [5.0e7]),
                            epa.co2_rate_dry_ton_h([12.0, 12.0], [5.0e7, 5.0e7], 10.0)])
    assert float(epa.co2_total_ton(rates, [1.0, 1.0, 0.5])) == printed(746.7, 1)


def test_short_tons_to_tonnes() -> None:
    # 746.7 · 0.90718474 = 677.3948 t
    assert float(epa.short_ton_to_t(746.7)) == printed(677.3948, 4)
