"""carbon_performance rules: the year's carbon performance (compute/performance.py) against
levels — deviation from the prorated target, from the quarter's target, the gap to a
benchmark — with performances computed from the hand-worked example of
tests/compute/test_performance.py, and the rule checks naming their keys.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from alarms.engine import AlarmSink
from compute.performance import Performance, PerformanceConfig, Sums, baseline_sums, performance
from model.errors import ConfigError
from model.records import AlarmEvent
from server.config import PlantConfig, parse_config
from tests.alarms.test_engine import FakeNotifier
from tests.compute.test_performance import AS_OF, PERF, QUARTERS, two_units

T = datetime(2026, 5, 10, 16, tzinfo=UTC)  # 11 May 00:00 plant time: 10 May closed


def plant(*rules: dict[str, Any], perf: dict[str, Any] | None = None) -> PlantConfig:
    d = two_units(PERF if perf is None else perf)
    d["alarms"] = {"rules": list(rules)}
    return parse_config(d, "plant.yaml")


def perf_with(u1_q2_t: float) -> Performance:
    """The worked example with U1's second-quarter CO2 replaced."""
    cfg = PerformanceConfig.model_validate(PERF)
    qs = dict(QUARTERS)
    qs["U1"] = [QUARTERS["U1"][0], Sums(u1_q2_t, 390_000.0), Sums(), Sums()]
    return performance(cfg, ["U1", "U2"], 2026, AS_OF, qs, baseline_sums(cfg))


def sink(*rules: dict[str, Any]) -> tuple[AlarmSink, list[AlarmEvent]]:
    s = AlarmSink(plant(*rules), notifier=FakeNotifier())
    journal: list[AlarmEvent] = []
    s.subscribe(journal.append)
    return s, journal


def test_site_target_deviation_raises_and_clears() -> None:
    s, journal = sink({"id": "dev", "kind": "carbon_performance",
                       "measure": "target_deviation_pct", "warning": 2.0, "alarm": 5.0})
    # Worked example: 1 610 000 t against 1 560 000 t by days: +50 000 / 1 560 000 = 3.205 %.
    s.on_carbon_performance(perf_with(300_000.0), T)
    (ev,) = journal
    assert (ev.rule, ev.state, ev.kind, ev.area) == ("dev", "warning", "carbon_performance",
                                                    "site")
    assert ev.value == pytest.approx(5_000_000 / 1_560_000, rel=1e-9)
    assert ev.limit == 2.0
    assert "site CO2 year to date above the prorated target %" in ev.message
    assert "年累计排放超出按天折算目标" in ev.message_zh
    # U1's Q2 350 000 t: site 1 660 000, +100 000 / 1 560 000 = 6.41 % ≥ 5: alarm.
    s.on_carbon_performance(perf_with(350_000.0), T + timedelta(days=1))
    assert journal[-1].state == "alarm"
    assert journal[-1].value == pytest.approx(10_000_000 / 1_560_000, rel=1e-9)
    # U1's Q2 250 000 t: site 1 560 000 t, on target (0 %): back to normal.
    s.on_carbon_performance(perf_with(250_000.0), T + timedelta(days=2))
    assert journal[-1].state == "normal" and journal[-1].value == 0.0
    n = len(journal)
    # A year without output or target yet (NaN) changes nothing.
    empty = performance(PerformanceConfig(), ["U1", "U2"], 2026, AS_OF, {}, {})
    s.on_carbon_performance(empty, T + timedelta(days=3))
    assert len(journal) == n


def test_unit_quarter_deviation_and_benchmark_gap() -> None:
    s, journal = sink(
        {"id": "q1", "kind": "carbon_performance", "measure": "quarter_deviation_pct",
         "unit": "U1", "alarm": 10.0},
        {"id": "bm", "kind": "carbon_performance", "measure": "benchmark_gap_pct",
         "unit": "U2", "benchmark_kind": "benchmark", "warning": 5.0, "alarm": 8.0},
        {"id": "best", "kind": "carbon_performance", "measure": "benchmark_gap_pct",
         "unit": "U1", "benchmark_kind": "best_in_class", "warning": 1.0})
    s.on_carbon_performance(perf_with(300_000.0), T)
    by = {e.rule: e for e in journal}
    # U1 Q2: 300 000 t against 2 628 000 · 23 % · 40/91 = 24 177 600/91 t:
    # (27 300 000 − 24 177 600) / 24 177 600 = 12.914 % ≥ 10.
    assert by["q1"].state == "alarm" and by["q1"].area == "U1"
    assert by["q1"].value == pytest.approx(312_240_000 / 24_177_600, rel=1e-9)
    # U2 61/68 t/MWh against 0.8218: 9.158 % ≥ 8.
    assert by["bm"].state == "alarm"
    assert by["bm"].value == pytest.approx((61 / 68 - 0.8218) / 0.8218 * 100, rel=1e-9)
    # U1 100/127 against best in class 0.78: 0.949 % < 1: stays normal.
    assert "best" not in by
    assert s.engine.bank.value[2] == pytest.approx((100 / 127 - 0.78) / 0.78 * 100, rel=1e-9)


@pytest.mark.parametrize(("rule", "perf_change", "key", "words"), [
    ({"measure": "benchmark_gap_pct", "unit": "U1", "benchmark_kind": "advanced"}, None,
     "alarms.rules[0].measure", "no benchmark of kind advanced of unit U1"),
    ({"measure": "target_deviation_pct"}, lambda p: p.update(targets=[]),
     "alarms.rules[0].measure", "needs a target"),
    ({"measure": "target_deviation_pct", "unit": "U8"}, None,
     "alarms.rules[0].unit", "unknown unit 'U8'"),
    ({"measure": "target_deviation_pct", "benchmark_kind": "benchmark"}, None,
     "alarms.rules[0]", "only for measure benchmark_gap_pct"),
    ({"measure": "benchmark_gap_pct"}, lambda p: p["benchmarks"].pop(),
     "alarms.rules[0].measure", "no benchmark of the site"),
])
def test_rule_problems_name_the_key(rule: dict[str, Any], perf_change: Any, key: str,
                                    words: str) -> None:
    perf = copy.deepcopy(PERF)
    if perf_change is not None:
        perf_change(perf)
    with pytest.raises(ConfigError) as exc:
        plant({"id": "r", "kind": "carbon_performance", "warning": 1.0, **rule}, perf=perf)
    assert any(k == key and words in m for k, m in exc.value.problems), exc.value.problems


def test_rules_changed_at_run_time_are_checked_against_the_performance() -> None:
    from alarms.config import with_alarm_rules

    cfg = plant()
    with pytest.raises(ConfigError) as exc:
        with_alarm_rules(cfg, [{"id": "b", "kind": "carbon_performance", "unit": "U2",
                                "measure": "benchmark_gap_pct",
                                "benchmark_kind": "best_in_class", "warning": 1.0}], "api")
    assert exc.value.problems == [("alarms.rules[0].measure",
                                   "no benchmark of kind best_in_class of unit U2 in "
                                   "performance.benchmarks")]
