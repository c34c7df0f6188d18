"""Intensity rules on closed hours: factor-method and product-output (t) units of the steel demo."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from alarms.bank import RuleBank
from model.errors import ConfigError
from model.flags import DataFlag
from model.records import PeriodRecords, UnitPeriod
from server.config import PlantConfig, parse_config

STEEL = Path(__file__).resolve().parents[2] / "config" / "demo-steel.yaml"
H0 = datetime(2024, 5, 1, 0, 0, tzinfo=UTC)  # 08:00 in Shanghai


def steel(rules: list[dict[str, Any]]) -> PlantConfig:
    data = yaml.safe_load(STEEL.read_text(encoding="utf-8"))
    data["alarms"]["rules"] = rules
    return parse_config(data, "test_intensity_hours", STEEL.parent)


def bf_hour(k: int, co2_t: float, out_t: float,
            flag: DataFlag = DataFlag.N) -> PeriodRecords:
    """Closed hour k after H0 with BF's factor-method CO2 and hot metal (its output in t)."""
    t = H0 + timedelta(hours=k)
    bf = UnitPeriod("BF", t, math.nan, co2_t, math.nan, math.nan, flag is DataFlag.N, flag,
                    intensity_flag=flag, co2_t=co2_t, basis="factor", output_t=out_t,
                    intensity_t_t=co2_t / out_t if flag is DataFlag.N else math.nan)
    return PeriodRecords("hour", t, t + timedelta(hours=1), (), (), (bf,))


def test_bf_hour_window_is_the_last_closed_hour() -> None:
    # config/demo-steel.yaml's BF hour: (47.695 − 45.425) t C · 44/12 = 2.27 · 44/12
    # = 8.323333… t CO2 over 115 t hot metal = 0.0723768115942… t CO2/t ≥ 0.07: alarm.
    cfg = steel([{"id": "bf_i", "kind": "intensity", "scope": {"unit": "BF"},
                  "window": "hour", "warning": 0.065, "alarm": 0.07}])
    bank = RuleBank(cfg)
    assert bank.specs[0].subject == "BF intensity t/t (last closed hour)"
    co2 = 2.27 * 44.0 / 12.0
    ch = bank.period(bf_hour(0, co2, 115.0))
    assert ch.new.tolist() == [2]
    assert bank.value[0] == pytest.approx(0.0723768115942029, rel=1e-9, abs=0)
    # An hour not valid for intensity (flag B): no value, the rule keeps alarm and value.
    ch = bank.period(bf_hour(1, math.nan, 115.0, DataFlag.B))
    assert ch.rows.tolist() == [] and bank.levels.level[0] == 2
    assert bank.value[0] == pytest.approx(0.0723768115942029, rel=1e-9, abs=0)
    # 6.9 t over 115 t = 0.06 < 0.065: back to normal.
    ch = bank.period(bf_hour(2, 6.9, 115.0))
    assert ch.new.tolist() == [0]
    assert bank.value[0] == pytest.approx(0.06, rel=1e-9, abs=0)


def test_bf_day_window_is_the_last_24_valid_closed_hours() -> None:
    # 30 closed hours: hours 0..5 of 11.5 t / 115 t (0.1 t/t), hours 6..29 of 6.9 t / 115 t
    # (0.06 t/t) except hour 20, invalid (left out of both sums). At hour 29 the last 24
    # are 6..29: 23 valid hours → Σ 23 · 6.9 = 158.7 t / Σ 23 · 115 = 2645 t = 0.06 t/t:
    # normal. At hour 23 (hours 0..23): (6 · 11.5 + 17 · 6.9) / (23 · 115)
    # = (69 + 117.3) / 2645 = 186.3 / 2645 = 0.0704347826… ≥ 0.07: still alarm. Hour 24
    # (hours 1..24): (5 · 11.5 + 18 · 6.9) / 2645 = (57.5 + 124.2) / 2645 = 181.7 / 2645
    # = 0.0686956521… < 0.07: normal (alarm level only).
    # min_output_t 200: hour 0 alone (115 t) is not evaluated; hour 1 (2 · 11.5 / 230
    # = 0.1 t/t) is: alarm.
    cfg = steel([{"id": "bf_d", "kind": "intensity", "scope": {"unit": "BF"},
                  "window": "day", "alarm": 0.07, "min_output_t": 200.0}])
    bank = RuleBank(cfg)
    values: dict[int, float] = {}
    changes: dict[int, int] = {}
    for k in range(30):
        rec = (bf_hour(k, math.nan, 115.0, DataFlag.B) if k == 20 else
               bf_hour(k, 11.5 if k < 6 else 6.9, 115.0))
        ch = bank.period(rec)
        values[k] = float(bank.value[0])
        if len(ch.rows):
            changes[k] = int(ch.new[0])
    assert math.isnan(values[0])
    assert values[1] == pytest.approx(0.1, rel=1e-9, abs=0)
    assert changes == {1: 2, 24: 0}
    assert values[23] == pytest.approx(186.3 / 2645.0, rel=1e-9, abs=0)
    assert values[23] == pytest.approx(0.0704347826086957, rel=1e-9, abs=0)
    assert values[24] == pytest.approx(0.0686956521739130, rel=1e-9, abs=0)
    assert values[29] == pytest.approx(0.06, rel=1e-9, abs=0)


def test_cems_power_unit_stays_on_minutes() -> None:
    # PP is cems with MWh output: its rule is evaluated each minute, not on closed hours.
    cfg = steel([{"id": "pp_i", "kind": "intensity", "scope": {"unit": "PP"},
                  "window": "hour", "alarm": 1.0}])
    bank = RuleBank(cfg)
    assert bank.specs[0].subject == "PP intensity t/MWh (last 60 min)"
    assert len(bank._hour_int.rows) == 0


def test_config_errors() -> None:
    with pytest.raises(ConfigError) as exc:
        steel([{"id": "site_i", "kind": "intensity", "scope": {"site": True},
                "window": "day", "alarm": 1.0}])
    text = str(exc.value)
    assert "alarms.rules[0].scope.site" in text
    assert ("alarm rule 'site_i': a site intensity over units with different output units "
            "is meaningless") in text
    assert "BF (t), LK (t), PP (MWh)" in text
    with pytest.raises(ConfigError, match=r"alarms.rules\[0\].window.*'bf_m'.*window "
                       "'minute' has no value"):
        steel([{"id": "bf_m", "kind": "intensity", "scope": {"unit": "BF"},
                "window": "minute", "alarm": 1.0}])
    with pytest.raises(ConfigError, match=r"'bf_x'.*the output of BF is in t.*"
                       "min_output_t"):
        steel([{"id": "bf_x", "kind": "intensity", "scope": {"unit": "BF"},
                "window": "hour", "alarm": 1.0, "min_output_mwh": 5.0}])


def test_a_dumped_t_rule_validates_again() -> None:
    # The engine and the rule store keep rules as full dumps (min_output_mwh 0.0 included).
    cfg = steel([{"id": "bf_d", "kind": "intensity", "scope": {"unit": "BF"},
                  "window": "day", "alarm": 0.07, "min_output_t": 200.0}])
    dumped = [r.model_dump(mode="json") for r in cfg.alarms.rules]
    assert dumped[0]["min_output_mwh"] == 0.0
    again = steel(dumped)
    assert RuleBank(again).specs[0].subject == "BF intensity t/t (last 24 closed hours)"
