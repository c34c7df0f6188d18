"""compute/uncertainty.py against worked examples done by hand (IPCC 2006 Vol. 1 eq. 3.1, 3.2)."""

from __future__ import annotations

import math

import pytest

from compute.uncertainty import (
    product_rel_uncertainty_pct,
    std_rel_from_accuracy_pct,
    sum_rel_uncertainty_pct,
)


def test_accuracy_class_is_a_uniform_bound() -> None:
    # a = 1.732 % of reading → u = a/√3 = 1.0000 %
    assert std_rel_from_accuracy_pct(math.sqrt(3.0)) == pytest.approx(1.0, abs=1e-12)
    assert std_rel_from_accuracy_pct(2.0) == pytest.approx(1.1547005, abs=1e-7)


def test_product_with_sensitivities() -> None:
    # eq. 3.1 with a pitot's dynamic pressure (exponent ½): u = 3 %, 4 %, and 2 % × ½
    #   √(3² + 4² + 1²) = √26 = 5.0990195 %
    assert product_rel_uncertainty_pct([(3.0, 1.0), (4.0, 1.0), (2.0, 0.5)]) == pytest.approx(
        5.0990195, abs=1e-7)
    assert product_rel_uncertainty_pct([]) == 0.0


def test_sum_of_independent_sources() -> None:
    # eq. 3.2: 100 t at 2 % and 300 t at 1 % → √(200² + 300²)/400 = √130000/400
    #   = 360.55513/400 = 0.9013878 %
    assert sum_rel_uncertainty_pct([(100.0, 2.0), (300.0, 1.0)]) == pytest.approx(
        0.9013878, abs=1e-7)
    assert math.isnan(sum_rel_uncertainty_pct([(0.0, 2.0)]))
