"""carbon_position rules: the ledger's compliance position (compute/assets.py) against
levels — the forecast deficit raising and clearing, the surrender-deadline warning of a
year not covered — with positions built from real ledger entries and numbers worked by hand.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from alarms.config import with_alarm_rules
from alarms.engine import AlarmEngine, AlarmSink
from compute.assets import (
    AssetEntry,
    CarbonConfig,
    CompliancePosition,
    forecast_year_end,
    position,
)
from model.errors import ConfigError
from model.records import AlarmEvent
from tests.alarms.reference import CarbonPositionRule, scalar_rules
from tests.alarms.test_engine import FakeNotifier, key, two_unit_plant
from tests.alarms.test_rules import record

CFG = CarbonConfig()  # offset limit 5 %, deadline 12-31 of the year after
NAN = math.nan


def entry(i: int, kind: str, quantity_t: float, *, instrument: str = "national_allowance",
          side: str = "", price: float = NAN, year: int = 2025) -> AssetEntry:
    return AssetEntry(i, kind, datetime(2025, 1, 1, tzinfo=UTC) + timedelta(days=i), year,
                      instrument, quantity_t, side, price, "", None, None, "", "eng", "")


# The year's ledger: a final allocation of 100 000 t, 3 000 t of CCER, a price of 80 CNY/t.
LEDGER = [entry(1, "allocation", 100_000.0, side="final"),
          entry(2, "acquisition", 3_000.0, instrument="ccer"),
          entry(3, "price", NAN, instrument="", price=80.0)]


def live(entries: list[AssetEntry], ytd_t: float, daily_t: float, days_left: int,
         today: date) -> CompliancePosition:
    """The live position with a trailing rate of `daily_t` a day for 30 days."""
    fc = forecast_year_end([daily_t] * 30, ytd_t, days_left)
    return position(entries, 2025, ytd_t, "live", fc, CFG, today)


def sink(*rules: dict[str, Any]) -> tuple[AlarmSink, list[AlarmEvent]]:
    s = AlarmSink(two_unit_plant(list(rules)), notifier=FakeNotifier())
    journal: list[AlarmEvent] = []
    s.subscribe(journal.append)
    return s, journal


T = datetime(2025, 10, 1, 0, 0, tzinfo=UTC)


def test_forecast_deficit_alarm_fires_and_clears() -> None:
    s, journal = sink({"id": "fd", "kind": "carbon_position", "measure": "forecast_deficit_t",
                       "warning": 1000.0, "alarm": 5000.0, "deadband": 200.0})
    # 75 000 t so far, 300 t/d for 92 days: 75 000 + 27 600 = 102 600 t at year end, against
    # 100 000 t allowances + min(3 000, 5 % · 102 600 = 5 130) = 3 000 t CCER = 103 000 t.
    p = live(LEDGER, 75_000.0, 300.0, 92, date(2025, 9, 30))
    assert (p.forecast_year_end_t, p.offsets_eligible_t, p.forecast_deficit_t) == (
        102_600.0, 3_000.0, 0.0)
    s.on_carbon_position(p, T)
    assert journal == []
    # 80 000 t, 350 t/d for 77 days: 106 950 t; 106 950 − 103 000 = 3 950 t ≥ 1 000: warning.
    p = live(LEDGER, 80_000.0, 350.0, 77, date(2025, 10, 15))
    assert p.forecast_deficit_t == pytest.approx(3_950.0)
    s.on_carbon_position(p, T + timedelta(days=14))
    (ev,) = journal
    assert (ev.rule, ev.state, ev.kind, ev.area) == ("fd", "warning", "carbon_position", "site")
    assert ev.value == pytest.approx(3_950.0)
    assert ev.target == "site carbon forecast_deficit_t"
    assert ev.message.startswith("site forecast year-end compliance deficit t = 3950 ≥ "
                                 "warning level 1000")
    assert ev.message_zh.startswith("全厂 预测年末履约缺口 t = 3950 ≥ 预警限值 1000")
    # Minutes in between do not touch it: the rule holds its level until the next position.
    s.engine.on_minute(record(T + timedelta(days=14, minutes=1)))
    assert len(journal) == 1
    # 85 000 t, 420 t/d for 70 days: 114 400 t; 5 % of it is 5 720 > 3 000 held, so
    # 114 400 − 103 000 = 11 400 t ≥ 5 000: alarm.
    p = live(LEDGER, 85_000.0, 420.0, 70, date(2025, 10, 22))
    assert p.forecast_deficit_t == pytest.approx(11_400.0)
    s.on_carbon_position(p, T + timedelta(days=21))
    assert journal[-1].state == "alarm"
    assert journal[-1].value == pytest.approx(11_400.0)
    # 10 500 t bought: 114 400 − 113 500 = 900 t < 1 000 but not by more than the deadband
    # of 200: back to warning, not normal.
    bought = [*LEDGER, entry(4, "trade", 10_500.0, side="buy", price=82.0)]
    p = live(bought, 85_000.0, 420.0, 70, date(2025, 10, 22))
    assert p.forecast_deficit_t == pytest.approx(900.0)
    s.on_carbon_position(p, T + timedelta(days=21, hours=1))
    assert journal[-1].state == "warning"
    assert journal[-1].message.startswith(
        "site forecast year-end compliance deficit t = 900 < alarm level 5000 (deadband 200), "
        "back to warning")
    # 1 500 t more: 114 400 − 115 000 < 0, no forecast deficit: cleared.
    bought.append(entry(5, "trade", 1_500.0, side="buy", price=82.0))
    p = live(bought, 85_000.0, 420.0, 70, date(2025, 10, 22))
    assert p.forecast_deficit_t == 0.0
    s.on_carbon_position(p, T + timedelta(days=21, hours=2))
    assert [e.state for e in journal] == ["warning", "alarm", "warning", "normal"]
    assert [e.value for e in journal] == pytest.approx([3_950.0, 11_400.0, 900.0, 0.0])
    assert journal[-1].message.startswith(
        "site forecast year-end compliance deficit t = 0 < warning level 1000 (deadband 200), "
        "back to normal")


def test_deficit_rule_on_delay_counts_positions_in_time() -> None:
    engine = AlarmEngine(two_unit_plant([
        {"id": "d", "kind": "carbon_position", "measure": "deficit_t", "alarm": 1.0,
         "on_delay_min": 120}]))
    # Verified 104 000 t against 100 000 + min(3 000, 5 200) = 103 000 t: 1 000 t short,
    # 80 000 CNY at 80 CNY/t.
    fc = forecast_year_end([], 104_000.0, 0)
    p = position(LEDGER, 2025, 104_000.0, "verified", fc, CFG, date(2026, 3, 1))
    assert (p.deficit_t, p.deficit_cost_cny) == (1_000.0, 80_000.0)
    assert engine.on_carbon_position(p, T) == []  # the delay starts
    assert engine.on_carbon_position(p, T + timedelta(hours=1)) == []
    (ev,) = engine.on_carbon_position(p, T + timedelta(hours=2))  # 120 minutes on
    assert (ev.state, ev.value, ev.t) == ("alarm", 1_000.0, T + timedelta(hours=2))


def test_deadline_warns_while_the_year_is_not_covered() -> None:
    s, journal = sink({"id": "due", "kind": "carbon_position", "measure": "days_to_deadline",
                       "warning": 60.0, "alarm": 14.0})
    verified = [*LEDGER, entry(6, "verified", 98_000.0, instrument="")]
    fc = forecast_year_end([], 98_000.0, 0)

    def at(entries: list[AssetEntry], today: date) -> CompliancePosition:
        return position(entries, 2025, 98_000.0, "verified", fc, CFG, today)

    # 2026-09-15: 107 days to 2026-12-31, nothing surrendered: beyond 60, normal.
    p = at(verified, date(2026, 9, 15))
    assert (p.surrender_deadline, p.days_to_deadline, p.surrendered_t) == (
        date(2026, 12, 31), 107.0, 0.0)
    s.on_carbon_position(p, datetime(2026, 9, 15, tzinfo=UTC))
    assert journal == []
    # 2026-11-15: 46 days ≤ 60 and 98 000 t not surrendered (no deficit: a surplus of
    # 100 000 + 3 000 − 98 000 = 5 000 t, but the year is not handed in): warning.
    p = at(verified, date(2026, 11, 15))
    assert (p.days_to_deadline, p.surplus_t, p.deficit_t) == (46.0, 5_000.0, 0.0)
    s.on_carbon_position(p, datetime(2026, 11, 15, tzinfo=UTC))
    assert [(e.state, e.value) for e in journal] == [("warning", 46.0)]
    assert journal[-1].message.startswith(
        "site days to the surrender deadline = 46 ≤ warning level 60")
    # 2026-12-20: 11 days ≤ 14: alarm.
    s.on_carbon_position(at(verified, date(2026, 12, 20)), datetime(2026, 12, 20, tzinfo=UTC))
    assert (journal[-1].state, journal[-1].value) == ("alarm", 11.0)
    # 98 000 t surrendered on 2026-12-21: covered (surplus 5 000 t left), back to normal
    # although only 10 days are left.
    done = [*verified, entry(7, "surrender", 98_000.0)]
    p = at(done, date(2026, 12, 21))
    assert (p.surrendered_t, p.deficit_t, p.days_to_deadline) == (98_000.0, 0.0, 10.0)
    s.on_carbon_position(p, datetime(2026, 12, 21, tzinfo=UTC))
    assert (journal[-1].state, journal[-1].value) == ("normal", 10.0)
    assert journal[-1].message.startswith(
        "site days to the surrender deadline = 10: the year is covered, back to normal")
    assert journal[-1].message_zh.startswith(
        "全厂 距配额清缴截止日天数 = 10：本年度已足额覆盖，恢复正常")
    # Still covered the next day: stays normal.
    s.on_carbon_position(at(done, date(2026, 12, 22)), datetime(2026, 12, 22, tzinfo=UTC))
    assert len(journal) == 3


def test_deadline_warns_with_a_deficit_even_after_a_surrender() -> None:
    engine = AlarmEngine(two_unit_plant([
        {"id": "due", "kind": "carbon_position", "measure": "days_to_deadline",
         "warning": 30.0}]))
    # 104 000 t verified, all 100 000 t allowances surrendered: surrendered 100 000 <
    # 104 000 and 104 000 − 100 000 − 3 000 CCER = 1 000 t still short.
    ledger = [*LEDGER, entry(8, "surrender", 100_000.0)]
    p = position(ledger, 2025, 104_000.0, "verified", forecast_year_end([], 104_000.0, 0),
                 CFG, date(2026, 12, 11))
    assert (p.deficit_t, p.days_to_deadline) == (1_000.0, 20.0)
    (ev,) = engine.on_carbon_position(p, datetime(2026, 12, 11, tzinfo=UTC))
    assert (ev.state, ev.value) == ("warning", 20.0)


def test_carbon_position_rule_levels_and_direction() -> None:
    cfg = two_unit_plant([])
    ok = with_alarm_rules(cfg, [
        {"id": "a", "kind": "carbon_position", "measure": "days_to_deadline", "warning": 30,
         "alarm": 7},
        {"id": "b", "kind": "carbon_position", "measure": "forecast_deficit_t", "warning": 1,
         "alarm": 500}], "test")
    assert [r.kind for r in ok.alarms.rules] == ["carbon_position", "carbon_position"]
    for measure, levels in (("days_to_deadline", {"warning": 7, "alarm": 30}),
                            ("deficit_t", {"warning": 500, "alarm": 1})):
        with pytest.raises(ConfigError, match="must be beyond 'warning' level for direction "
                           f"'{'low' if measure == 'days_to_deadline' else 'high'}'"):
            with_alarm_rules(cfg, [{"id": "x", "kind": "carbon_position", "measure": measure,
                                    **levels}], "test")
    with pytest.raises(ConfigError, match="measure"):
        with_alarm_rules(cfg, [{"id": "x", "kind": "carbon_position", "measure": "price",
                                "warning": 1}], "test")


def test_deadline_is_the_surrendered_years_deficit_the_current_years() -> None:
    s, journal = sink({"id": "due", "kind": "carbon_position", "measure": "days_to_deadline",
                       "warning": 30.0},
                      {"id": "fd", "kind": "carbon_position", "measure": "forecast_deficit_t",
                       "warning": 1000.0})
    # 2026-12-10: the year 2025 (98 000 t verified, nothing surrendered) is due in 21 days;
    # 2026's own deadline is 2027-12-31, 386 days away, and its forecast is covered.
    fc = forecast_year_end([], 98_000.0, 0)
    due = position(LEDGER, 2025, 98_000.0, "verified", fc, CFG, date(2026, 12, 10))
    ledger_2026 = [*LEDGER, entry(9, "allocation", 100_000.0, side="final", year=2026)]
    now = position(ledger_2026, 2026, 90_000.0, "live",
                   forecast_year_end([250.0] * 30, 90_000.0, 21), CFG, date(2026, 12, 10))
    assert (due.days_to_deadline, now.days_to_deadline, now.forecast_deficit_t) == (
        21.0, 386.0, 0.0)
    s.on_carbon_position(now, datetime(2026, 12, 10, tzinfo=UTC))
    assert journal == []  # the current year alone: 386 days
    s.on_carbon_position(now, datetime(2026, 12, 10, 1, tzinfo=UTC), deadline=due)
    assert [(e.rule, e.state, e.value) for e in journal] == [("due", "warning", 21.0)]


def test_bank_matches_the_scalar_rules() -> None:
    """Random positions (deficits, deadlines, covered or not, with and without a year
    due) and minutes between them: the bank and the scalar reference give the same events."""
    rng = random.Random(17)
    rules: list[dict[str, Any]] = []
    for i in range(60):
        measure = rng.choice(["forecast_deficit_t", "deficit_t", "days_to_deadline"])
        lo, hi = sorted([rng.uniform(0, 100), rng.uniform(0, 100)])
        levels = ({"warning": hi, "alarm": lo} if measure == "days_to_deadline"
                  else {"warning": lo, "alarm": hi})
        rules.append({"id": f"c{i}", "kind": "carbon_position", "measure": measure, **levels,
                      "deadband": rng.choice([0.0, 5.0]),
                      "on_delay_min": rng.choice([0, 0, 60, 180]),
                      "off_delay_min": rng.choice([0, 0, 120])})
    cfg = two_unit_plant(rules)
    engine = AlarmEngine(cfg)
    scalar = [r for r in scalar_rules(cfg) if isinstance(r, CarbonPositionRule)]
    assert len(scalar) == 60
    base = position(LEDGER, 2025, 98_000.0, "verified", forecast_year_end([], 98_000.0, 0),
                    CFG, date(2026, 11, 1))

    def draw() -> CompliancePosition:
        emissions = rng.uniform(90, 110)
        return dataclasses.replace(
            base, emissions_t=emissions, deficit_t=max(0.0, rng.uniform(-50, 100)),
            forecast_deficit_t=max(0.0, rng.uniform(-50, 120)),
            days_to_deadline=float(rng.randint(-5, 120)),
            surrendered_t=rng.choice([0.0, emissions, emissions + 1]))

    seen: Counter[str] = Counter()
    t = datetime(2026, 11, 1, tzinfo=UTC)
    for k in range(400):
        t += timedelta(minutes=rng.choice([1, 30, 60]))
        if k % 7 == 3:  # a minute between positions changes nothing
            assert engine.on_minute(record(t)) == []
            continue
        p, due = draw(), draw() if rng.random() < 0.5 else None
        got = engine.on_carbon_position(p, t, due)
        want = [e for r in scalar if (e := r.on_carbon_position(p, t, due)) is not None]
        assert sorted(map(key, got)) == sorted(map(key, want)), k
        seen.update(e.message.split(" = ")[0] + (" covered" if "covered" in e.message else "")
                    for e in got)
    assert set(seen) == {"site forecast year-end compliance deficit t",
                         "site compliance deficit t", "site days to the surrender deadline",
                         "site days to the surrender deadline covered"}
