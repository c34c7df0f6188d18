"""Carbon performance (compute/performance.py): baseline, normalisation, targets broken
down to units and quarters, progress, deviation and benchmark gaps — a worked example
computed by hand below — and the `performance:` checks naming their keys.
"""

from __future__ import annotations

import copy
import math
from datetime import date
from typing import Any

import pytest

from compute.performance import (
    Calendar,
    PerformanceConfig,
    Sums,
    baseline_sums,
    performance,
    performance_json,
    performance_problems,
)
from model.errors import ConfigError
from server.config import parse_config
from tests.fixtures.plant import plant_dict

REL = 1e-9

# The worked example. Year 2026 (365 days): Q1 = 31+28+31 = 90 days, Q2 = 30+31+30 = 91,
# Q3 = 31+31+30 = 92, Q4 = 31+30+31 = 92. As of 2026-05-11 (the days before it counted):
# elapsed = 31+28+31+30+10 = 130 days, the current quarter Q2 with 30+10 = 40 of 91 days.
AS_OF = date(2026, 5, 11)
PERF: dict[str, Any] = {
    "baseline": {"year": 2024, "source": "2024 verified emission report",
                 "units": {"U1": {"co2_t": 3_000_000.0, "output_mwh": 3_600_000.0},
                           "U2": {"co2_t": 1_800_000.0, "output_mwh": 2_000_000.0}}},
    "targets": [{"year": 2026, "site_co2_t": 4_380_000.0, "intensity_t_mwh": 0.82,
                 "units": {"U1": {"share_pct": 60}, "U2": {"share_pct": 40}},
                 "quarters_pct": [27, 23, 24, 26], "source": "group target 2026"}],
    "benchmarks": [
        {"unit": "U1", "value": 0.8218, "kind": "benchmark", "source": "allocation plan"},
        {"unit": "U1", "value": 0.78, "kind": "best_in_class", "source": "sector survey"},
        {"unit": "U2", "value": 0.8218, "kind": "benchmark", "source": "allocation plan"},
        {"value": 0.80, "kind": "advanced", "source": "group best practice"}],
}
# Stored days summed per quarter (t CO2, MWh): Q1 and Q2 to date, nothing after.
QUARTERS = {"U1": [Sums(700_000.0, 880_000.0), Sums(300_000.0, 390_000.0), Sums(), Sums()],
            "U2": [Sums(420_000.0, 480_000.0), Sums(190_000.0, 200_000.0), Sums(), Sums()]}


def approx(x: float) -> Any:
    return pytest.approx(x, rel=REL, abs=0.0)


def worked() -> Any:
    cfg = PerformanceConfig.model_validate(PERF)
    return performance(cfg, ["U1", "U2"], 2026, AS_OF, QUARTERS, baseline_sums(cfg))


def test_calendar_counts_whole_plant_days() -> None:
    c = Calendar.of(2026, AS_OF)
    assert (c.days_in_year_d, c.days_elapsed_d, c.quarter, c.quarter_days_d,
            c.quarter_days_elapsed_d) == (365, 130, 2, 91, 40)
    assert c.quarter_days() == (90, 91, 92, 92)
    # 2024 is a leap year: Q1 = 31+29+31 = 91; a past year counts all its days, in Q4.
    past = Calendar.of(2024, date(2026, 1, 1))
    assert (past.days_in_year_d, past.days_elapsed_d, past.quarter,
            past.quarter_days_elapsed_d) == (366, 366, 4, 92)
    assert past.quarter_days()[0] == 91
    future = Calendar.of(2027, AS_OF)
    assert (future.days_elapsed_d, future.quarter, future.quarter_days_elapsed_d) == (0, 1, 0)


def test_baseline_and_normalised_baseline() -> None:
    p = worked()
    u1, u2 = p.units
    # U1 baseline 3 000 000 / 3 600 000 = 5/6 t/MWh; output to date 880 000 + 390 000 =
    # 1 270 000 MWh → normalised 1 270 000 · 5/6 = 1 058 333.33… t; actual 1 000 000 t,
    # 350 000/6 t below: −(350 000/6) / (6 350 000/6) = −7/127 = −5.5118… %.
    assert u1.baseline_intensity == approx(5 / 6)
    assert u1.normalised_baseline_ytd_t == approx(1_270_000 * 5 / 6)
    assert u1.vs_baseline_t == approx(-350_000 / 6)
    assert u1.vs_baseline_pct == approx(-700 / 127)
    # U2 baseline 1 800 000 / 2 000 000 = 0.9; output 680 000 → 612 000 t; actual 610 000.
    assert u2.normalised_baseline_ytd_t == approx(612_000.0)
    assert u2.vs_baseline_t == approx(-2_000.0)
    # Site: baseline 4 800 000 / 5 600 000 = 6/7; normalised = Σ units' = 1 058 333.33 +
    # 612 000 = 1 670 333.33 (not 6/7 · 1 950 000: the output mix changed).
    s = p.site
    assert s.baseline_intensity == approx(6 / 7)
    assert s.normalised_baseline_ytd_t == approx(1_270_000 * 5 / 6 + 612_000)
    assert (p.baseline_year, p.baseline_source) == (2024, "2024 verified emission report")


def test_site_progress_against_days_and_quarters() -> None:
    s = worked().site
    # Actual: 1 000 000 + 610 000 = 1 610 000 t, output 1 950 000 MWh; Q2: 490 000 t.
    assert (s.co2_ytd_t, s.output_ytd, s.co2_qtd_t) == (1_610_000.0, 1_950_000.0,
                                                            490_000.0)
    # By days: 4 380 000 · 130/365 = 12 000 · 130 = 1 560 000 t; deviation +50 000 t,
    # 50 000 / 1 560 000 = 3.2051… %.
    assert s.target_ytd_t == approx(1_560_000.0)
    assert s.deviation_ytd_t == approx(50_000.0)
    assert s.deviation_ytd_pct == approx(5_000_000 / 1_560_000)
    # Q2's target 4 380 000 · 23 % = 1 007 400 t; to date 1 007 400 · 40/91 =
    # 40 296 000/91 = 442 813.19 t; Q2 actual 490 000 = 44 590 000/91: +4 294 000/91 t,
    # 4 294 000 / 40 296 000 = 10.656… %.
    assert s.target_quarter_t == approx(1_007_400.0)
    assert s.target_qtd_t == approx(40_296_000 / 91)
    assert s.deviation_qtd_t == approx(4_294_000 / 91)
    assert s.deviation_qtd_pct == approx(429_400_000 / 40_296_000)
    # By the quarters' shares: Q1 4 380 000 · 27 % = 1 182 600 plus Q2 to date:
    # (107 616 600 + 40 296 000)/91 = 147 912 600/91; actual 146 510 000/91: −1 402 600/91.
    assert s.target_ytd_quarters_t == approx(147_912_600 / 91)
    assert s.deviation_ytd_quarters_t == approx(-1_402_600 / 91)
    assert s.deviation_ytd_quarters_pct == approx(-140_260_000 / 147_912_600)
    # Intensity 1 610 000 / 1 950 000 = 161/195 against 0.82: (161 − 159.9)/195 = 1.1/195.
    assert s.intensity_ytd == approx(161 / 195)
    assert s.intensity_deviation == approx(1.1 / 195)
    assert s.intensity_deviation_pct == approx(110 / 195 / 0.82)
    assert s.target_used_pct == approx(161_000_000 / 4_380_000)


def test_unit_targets_from_shares() -> None:
    u1, u2 = worked().units
    # U1: 60 % of 4 380 000 = 2 628 000 t; by days 7 200 · 130 = 936 000; actual 1 000 000:
    # +64 000 t, 64 000 / 936 000 = 6.8376… %. Q2: 2 628 000 · 23 % · 40/91 =
    # 24 177 600/91; actual 300 000 = 27 300 000/91: +3 122 400/91.
    assert u1.target_year_t == approx(2_628_000.0)
    assert u1.target_ytd_t == approx(936_000.0)
    assert u1.deviation_ytd_pct == approx(6_400_000 / 936_000)
    assert u1.target_qtd_t == approx(24_177_600 / 91)
    assert u1.deviation_qtd_t == approx(3_122_400 / 91)
    # U2: 40 % = 1 752 000 t; by days 4 800 · 130 = 624 000; actual 610 000: −14 000 t.
    assert u2.target_ytd_t == approx(624_000.0)
    assert u2.deviation_ytd_t == approx(-14_000.0)
    assert u2.deviation_ytd_pct == approx(-1_400_000 / 624_000)
    assert math.isnan(u1.target_intensity)  # no unit intensity target


def test_benchmarks_gap_and_rank() -> None:
    gaps = worked().benchmarks
    # U1 100/127 = 0.78740 t/MWh; U2 610 000/680 000 = 61/68 = 0.89706; site 161/195.
    # Gaps %: U2 (61/68 − 0.8218)/0.8218 = 9.158 %; site (161/195 − 0.8)/0.8 = 3.205 %;
    # U1 best in class (100/127 − 0.78)/0.78 = 0.949 %; U1 benchmark −4.186 %.
    assert [(g.unit, g.kind, g.rank) for g in gaps] == [
        ("U2", "benchmark", 1), ("site", "advanced", 2), ("U1", "best_in_class", 3),
        ("U1", "benchmark", 4)]
    u2, site, best, bench = gaps
    assert u2.actual == approx(61 / 68)
    assert u2.gap == approx(61 / 68 - 0.8218)
    assert u2.gap_pct == approx((61 / 68 - 0.8218) / 0.8218 * 100)
    assert site.gap_pct == approx((161 / 195 - 0.8) / 0.8 * 100)
    assert best.gap == approx(100 / 127 - 0.78)
    assert bench.gap_pct == approx((100 / 127 - 0.8218) / 0.8218 * 100)
    assert (bench.source, best.source) == ("allocation plan", "sector survey")


def test_intensity_target_only_and_absolute_quarters() -> None:
    data = copy.deepcopy(PERF)
    data["targets"] = [{"year": 2026, "intensity_t_mwh": 0.8}]
    cfg = PerformanceConfig.model_validate(data)
    s = performance(cfg, ["U1", "U2"], 2026, AS_OF, QUARTERS, baseline_sums(cfg)).site
    # No tonnes: the target to date is 0.8 · 1 950 000 = 1 560 000 t, Q2 0.8 · 590 000.
    assert s.target_ytd_t == approx(1_560_000.0)
    assert s.target_qtd_t == approx(472_000.0)
    assert s.deviation_qtd_t == approx(18_000.0)
    assert math.isnan(s.target_year_t) and math.isnan(s.target_used_pct)
    # Absolute quarters 1 000 000 + 1 200 000 + 1 100 000 + 1 080 000 = 4 380 000:
    # Q2 to date 1 200 000 · 40/91; by quarters 1 000 000 + that.
    data["targets"] = [{"year": 2026, "site_co2_t": 4_380_000.0,
                        "quarters_co2_t": [1_000_000, 1_200_000, 1_100_000, 1_080_000]}]
    cfg = PerformanceConfig.model_validate(data)
    s = performance(cfg, ["U1", "U2"], 2026, AS_OF, QUARTERS, baseline_sums(cfg)).site
    assert s.target_quarter_t == approx(1_200_000.0)
    assert s.target_ytd_quarters_t == approx(1_000_000 + 48_000_000 / 91)
    # Without quarters the quarters are weighted by their days: Q1 4 380 000 · 90/365 =
    # 1 080 000, Q2 to date 12 000 · 40 = 480 000: by quarters = by days = 1 560 000.
    data["targets"] = [{"year": 2026, "site_co2_t": 4_380_000.0}]
    cfg = PerformanceConfig.model_validate(data)
    s = performance(cfg, ["U1", "U2"], 2026, AS_OF, QUARTERS, baseline_sums(cfg)).site
    assert s.target_ytd_quarters_t == approx(1_560_000.0)
    assert s.target_qtd_t == approx(480_000.0)


def test_json_names_units_and_has_no_nan() -> None:
    body = performance_json(worked())
    assert body["year"] == 2026 and body["as_of"] == "2026-05-11"
    assert body["site"]["unit"] == "site" and body["units"][0]["unit"] == "U1"
    assert body["site"]["target_ytd_t"] == approx(1_560_000.0)
    assert body["units"][0]["target_intensity_t_mwh"] is None
    assert body["benchmarks"][0]["gap_intensity_t_mwh"] == approx(61 / 68 - 0.8218)
    assert body["benchmarks"][0]["value_intensity_t_mwh"] == 0.8218


def test_no_baseline_no_target() -> None:
    cfg = PerformanceConfig()
    p = performance(cfg, ["U1"], 2026, AS_OF, {"U1": QUARTERS["U1"]}, {})
    assert p.site.co2_ytd_t == 1_000_000.0
    assert math.isnan(p.site.normalised_baseline_ytd_t)
    assert math.isnan(p.site.deviation_ytd_pct)
    assert p.benchmarks == ()


# ------------------------------------------------------------------ checks


def two_units(perf: dict[str, Any]) -> dict[str, Any]:
    data = plant_dict()
    u2 = copy.deepcopy(data["units"][0])
    u2["id"], u2["name"] = "U2", "Unit 2"
    u2["sources"][0]["id"] = "S2"
    data["units"].append(u2)
    data["performance"] = perf
    return data


def problems(perf: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as exc:
        parse_config(two_units(perf), "plant.yaml")
    assert str(exc.value).startswith("plant.yaml: ")
    return exc.value.problems


def test_worked_example_is_a_valid_plant_section() -> None:
    cfg = parse_config(two_units(PERF), "plant.yaml")
    assert cfg.performance.target(2026) is not None
    assert performance_problems(cfg.performance, ["U1", "U2"]) == []


@pytest.mark.parametrize(("change", "key", "words"), [
    (lambda p: p["targets"][0]["units"].update({"U2": {"share_pct": 30}}),
     "performance.targets[0].units", "add up to 90 %, not 100 %"),
    (lambda p: p["targets"][0]["units"].update({"U9": {"share_pct": 0}}),
     "performance.targets[0].units.U9", "unknown unit 'U9'"),
    (lambda p: p["targets"][0].update({"quarters_pct": [27, 23, 24, 25]}),
     "performance.targets[0].quarters_pct", "add up to 99 %"),
    (lambda p: p["targets"][0].update({"quarters_pct": None,
                                       "quarters_co2_t": [1, 2, 3, 4]}),
     "performance.targets[0].quarters_co2_t", "not the year's 4.38e+06 t"),
    (lambda p: p["targets"][0].update({"units": {"U1": 2_000_000.0, "U2": 2_000_000.0}}),
     "performance.targets[0].units", "add up to 4e+06 t, not site_co2_t"),
    (lambda p: p["targets"][0].update({"units": {"U1": 4_380_000.0,
                                                 "U2": {"share_pct": 0}}}),
     "performance.targets[0].units", "not a mix"),
    (lambda p: p["targets"].append(dict(p["targets"][0])),
     "performance.targets[1].year", "a second target for 2026"),
    (lambda p: p["baseline"]["units"].update({"U7": {"co2_t": 1, "output_mwh": 1}}),
     "performance.baseline.units.U7", "unknown unit"),
    (lambda p: p["benchmarks"][0].update({"unit": "U5"}),
     "performance.benchmarks[0].unit", "unknown unit 'U5'"),
    (lambda p: p["baseline"].update({"source": ""}),
     "performance.baseline", "need their 'source'"),
    (lambda p: p["baseline"].update({"from_history": True}),
     "performance.baseline", "not both"),
    (lambda p: p["benchmarks"][1].pop("source"),
     "performance.benchmarks[1].source", "required"),
    (lambda p: p["benchmarks"][1].update({"kind": "best"}),
     "performance.benchmarks[1].kind", "benchmark"),
])
def test_problems_name_the_key(change: Any, key: str, words: str) -> None:
    perf = copy.deepcopy(PERF)
    change(perf)
    found = problems(perf)
    assert any(k == key and words in m for k, m in found), found


def test_from_history_baseline_takes_the_stored_year() -> None:
    cfg = PerformanceConfig.model_validate({"baseline": {"year": 2025, "from_history": True}})
    # Units without output in the baseline year have no baseline.
    got = baseline_sums(cfg, {"U1": Sums(10.0, 20.0), "U2": Sums(0.0, 0.0)})
    assert got == {"U1": Sums(10.0, 20.0)}
    p = performance(cfg, ["U1", "U2"], 2026, AS_OF, QUARTERS, got)
    assert p.baseline_source == "historian 2025"
    assert p.units[0].baseline_intensity == 0.5
    assert math.isnan(p.units[1].baseline_intensity)
    # The site's baseline is over the units with one: 0.5 · U1's output 1 270 000.
    assert p.site.normalised_baseline_ytd_t == approx(635_000.0)


def test_product_units_name_their_output_and_the_site_has_none() -> None:
    # U2 a lime kiln (output in t): its intensity 610 000 / 680 000 = 61/68 t CO2/t; the
    # site's output MWh + t means nothing: no output and no intensity, the tonnes add up.
    data = copy.deepcopy(PERF)
    data["baseline"]["units"]["U2"] = {"co2_t": 1_800_000.0, "output_t": 2_000_000.0}
    data["targets"][0].pop("intensity_t_mwh")
    data["targets"][0]["units"]["U2"] = {"share_pct": 40, "intensity_t_t": 0.9}
    data["benchmarks"] = [{"unit": "U2", "indicator": "intensity_t_t", "value": 0.85,
                           "source": "lime kiln guide"}]
    cfg = PerformanceConfig.model_validate(data)
    units = {"U1": "MWh", "U2": "t"}
    assert performance_problems(cfg, units) == []
    p = performance(cfg, units, 2026, AS_OF, QUARTERS, baseline_sums(cfg))
    u2 = p.units[1]
    assert (u2.output_unit, u2.intensity_ytd) == ("t", approx(61 / 68))
    # 61/68 − 0.9 = (61 − 61.2)/68 = −0.2/68 t/t
    assert u2.intensity_deviation == approx(-0.2 / 68)
    assert p.site.output_unit == "" and math.isnan(p.site.output_ytd)
    assert math.isnan(p.site.intensity_ytd) and math.isnan(p.site.baseline_intensity)
    assert p.site.co2_ytd_t == 1_610_000.0
    assert p.site.normalised_baseline_ytd_t == approx(1_270_000 * 5 / 6 + 612_000)
    body = performance_json(p)
    assert body["units"][1]["output_ytd_t"] == 680_000.0
    assert body["units"][1]["intensity_ytd_t_t"] == approx(61 / 68)
    assert body["units"][0]["output_ytd_mwh"] == 1_270_000.0
    assert body["site"]["output_ytd_mwh"] is None
    assert body["benchmarks"][0]["gap_intensity_t_t"] == approx(61 / 68 - 0.85)
    # The wrong keys for a unit's kind are named.
    bad = copy.deepcopy(data)
    bad["benchmarks"][0]["indicator"] = "intensity_t_mwh"
    bad["baseline"]["units"]["U1"] = {"co2_t": 1.0, "output_t": 1.0}
    bad["targets"][0]["intensity_t_mwh"] = 0.8
    found = performance_problems(PerformanceConfig.model_validate(bad), units)
    assert ("performance.benchmarks[0].indicator",
            "unit U2's output is in t: give intensity_t_t, not intensity_t_mwh") in found
    assert ("performance.baseline.units.U1", "unit U1's output is in MWh: give output_mwh"
            ) in found
    assert any(k == "performance.targets[0].intensity_t_mwh" and "no single output unit" in m
               for k, m in found)
