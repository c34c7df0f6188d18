"""compute/uncertainty.py against worked examples done by hand (IPCC 2006 Vol. 1 eq. 3.1, 3.2)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from compute.config import SourceConfig
from compute.uncertainty import (
    SourceMass,
    components_rel_pct,
    product_rel_uncertainty_pct,
    source_components,
    std_rel_from_accuracy_pct,
    sum_rel_uncertainty_pct,
    total_uncertainty,
    unit_site_uncertainty,
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


# --- totals of units and the site (issue 15) ------------------------------------------------

def _mass(source: str, unit: str, co2_t: float, *components: tuple[str, float],
          unknown: bool = False) -> SourceMass:
    return SourceMass(source, unit, co2_t, None if unknown else tuple(components))


def test_total_of_two_independent_sources() -> None:
    # A 100 t at 1.5 %, B 300 t at 2.0 %, no instrument in common (eq. 3.2):
    #   u(Σ) = √((1.5 % · 100)² + (2.0 % · 300)²) = √(1.5² + 6²) = √38.25 = 6.1846584 t
    #   relative 6.1846584 / 400 = 1.5461646 %; k = 2: 3.0923292 %, 12.3693169 t
    total = total_uncertainty([_mass("A", "U1", 100.0, ("a_co2", 1.5)),
                               _mass("B", "U1", 300.0, ("b_co2", 2.0))])
    assert total.co2_t == 400.0
    assert total.rel_pct == pytest.approx(1.5461646, abs=1e-7)
    assert total.rel_expanded_pct == pytest.approx(3.0923292, abs=1e-7)
    assert total.expanded_t == pytest.approx(12.3693169, abs=1e-7)
    assert (total.no_data, total.unknown) == ((), ())
    # The same as the eq. 3.2 helper on the sources' own figures.
    assert total.rel_pct == pytest.approx(
        100.0 * sum_rel_uncertainty_pct([(100.0, 0.015), (300.0, 0.020)]), abs=1e-9)


def test_a_shared_instrument_counts_once_not_independently() -> None:
    # A 100 t: CO2 analyser 1.2 %, the shared barometer 0.5 % → A alone √(1.44 + 0.25) = 1.3 %
    # B 300 t: CO2 analyser 1.6 %, the same barometer 0.5 % → B alone √(2.56 + 0.25) = 1.6763 %
    # Per instrument (t): a_co2 1.2, b_co2 4.8, baro 0.5 + 1.5 = 2.0 (one error, adds up)
    #   u(Σ) = √(1.2² + 4.8² + 2.0²) = √28.48 = 5.3366656 t → 5.3366656 / 400 = 1.3341664 %
    # (eq. 3.2 taking them as independent would say √(1.3² + 5.0289²)/400 = 1.2985569 %.)
    a = _mass("A", "U1", 100.0, ("a_co2", 1.2), ("baro", 0.5))
    b = _mass("B", "U1", 300.0, ("b_co2", 1.6), ("baro", 0.5))
    assert a.rel_pct == pytest.approx(1.3, abs=1e-12)
    assert b.rel_pct == pytest.approx(1.6763055, abs=1e-7)
    total = total_uncertainty([a, b])
    assert total.rel_pct == pytest.approx(1.3341664, abs=1e-7)
    assert total.expanded_t == pytest.approx(2 * 5.3366656, abs=1e-6)


def test_a_source_without_data_is_left_out_and_named() -> None:
    # C has no value for the period: the total is A's alone, 100 t at 1.5 %.
    total = total_uncertainty([_mass("A", "U1", 100.0, ("a_co2", 1.5)),
                               _mass("C", "U1", math.nan, ("c_co2", 9.0))])
    assert (total.co2_t, total.no_data, total.unknown) == (100.0, ("C",), ())
    assert total.rel_pct == pytest.approx(1.5, abs=1e-12)
    assert total.expanded_t == pytest.approx(3.0, abs=1e-12)  # 2 · 1.5 % · 100 t
    nothing = total_uncertainty([_mass("C", "U1", math.nan, ("c_co2", 9.0))])
    assert math.isnan(nothing.co2_t) and nothing.no_data == ("C",)
    assert (nothing.rel_pct, nothing.rel_expanded_pct, nothing.expanded_t) == (None, None, None)
    assert math.isnan(total_uncertainty([]).co2_t)


def test_unknown_uncertainty_makes_the_total_unknown_unless_its_mass_is_zero() -> None:
    # D emitted 50 t with an input that has no instrument: the sum's figure is not known.
    total = total_uncertainty([_mass("A", "U1", 100.0, ("a_co2", 1.5)),
                               _mass("D", "U1", 50.0, unknown=True)])
    assert (total.co2_t, total.unknown) == (150.0, ("D",))
    assert (total.rel_pct, total.rel_expanded_pct, total.expanded_t) == (None, None, None)
    # D stopped (0 t): it adds nothing, its unknown figure does not matter.
    total = total_uncertainty([_mass("A", "U1", 100.0, ("a_co2", 1.5)),
                               _mass("D", "U1", 0.0, unknown=True)])
    assert (total.co2_t, total.unknown) == (100.0, ())
    assert total.rel_pct == pytest.approx(1.5, abs=1e-12)


def test_zero_total_has_no_relative_figure() -> None:
    total = total_uncertainty([_mass("A", "U1", 0.0, ("a_co2", 1.5))])
    assert (total.co2_t, total.rel_pct, total.rel_expanded_pct, total.expanded_t) == (
        0.0, None, None, 0.0)


def test_units_and_site() -> None:
    # U1: A 100 t at 1.5 %, B 300 t at 2.0 % → 1.5461646 % (as above)
    # U2: C 200 t at 1.0 % → 1.0 %;  U3 configured without data → NaN
    # Site: √(1.5² + 6² + 2²) = √42.25 = 6.5 t of 600 t = 1.0833333 %
    units, site = unit_site_uncertainty(
        [_mass("A", "U1", 100.0, ("a_co2", 1.5)), _mass("C", "U2", 200.0, ("c_co2", 1.0)),
         _mass("B", "U1", 300.0, ("b_co2", 2.0))], ["U3", "U1"])
    assert list(units) == ["U3", "U1", "U2"]
    assert units["U1"].rel_pct == pytest.approx(1.5461646, abs=1e-7)
    assert units["U2"].rel_pct == pytest.approx(1.0, abs=1e-12)
    assert math.isnan(units["U3"].co2_t) and units["U3"].rel_pct is None
    assert site.co2_t == 600.0
    assert site.rel_pct == pytest.approx(1.0833333, abs=1e-7)
    assert site.expanded_t == pytest.approx(13.0, abs=1e-9)


def _source(inputs: dict[str, Any]) -> SourceConfig:
    return SourceConfig.model_validate({"id": "S1", "name": "Stack 1", "area_m2": 20.0,
                                        "inputs": inputs})


def test_source_components_from_the_configuration() -> None:
    # Velocity 3 %, CO2 1.5 %, moisture 1.2 %, the barometer a constant (adds nothing):
    #   shares c·a/√3: velocity 1.7320508, co2 0.8660254, moisture 0.6928203 %
    #   u_c = √((9 + 2.25 + 1.44)/3) = √4.23 = 2.0566964 %
    src = _source({"velocity_m_s": {"tag": "v"}, "co2_pct": {"tag": "c"},
                   "temp_c": {"value": 120.0}, "static_pa": {"value": 0.0},
                   "baro_pa": {"value": 101325.0}, "moisture_pct": {"tag": "m"}})
    comps = source_components(src, {"v": 3.0, "c": 1.5, "m": 1.2})
    assert comps is not None
    assert dict(comps) == pytest.approx({"c": 0.8660254, "v": 1.7320508, "m": 0.6928203},
                                        abs=1e-7)
    assert components_rel_pct(comps) == pytest.approx(2.0566964, abs=1e-7)
    # The moisture tag without an instrument: unknown.
    assert source_components(src, {"v": 3.0, "c": 1.5, "m": None}) is None
    assert source_components(src, {"v": 3.0, "c": 1.5}) is None
    # A pitot's dynamic pressure enters with ½: a = 2 % → ½ · 2/√3 = 0.5773503 %
    pitot = _source({"dynamic_pressure_pa": {"tag": "dp"}, "co2_pct": {"value": 12.0},
                     "temp_c": {"value": 120.0}, "static_pa": {"value": 0.0},
                     "baro_pa": {"value": 101325.0}, "moisture_pct": {"value": 8.0}})
    assert dict(source_components(pitot, {"dp": 2.0}) or ()) == pytest.approx(
        {"dp": 0.5773503}, abs=1e-7)
