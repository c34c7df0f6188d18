"""Threshold rule state machine and target field selection."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import pytest

from alarms.rules import FIELDS, ThresholdRule, fmt_number, target_label, target_value
from server.config import Target, ThresholdRuleConfig
from server.records import DataFlag, MinuteResult, SiteMinute, SourceMinute, UnitMinute

T0 = datetime(2024, 5, 1, 0, 3, tzinfo=UTC)


def rule(**kw: Any) -> ThresholdRule:
    data: dict[str, Any] = {"id": "r1", "name": "High CO2 rate",
                            "target": {"source": "S1", "field": "co2_rate_t_h"}}
    data.update(kw)
    return ThresholdRule(ThresholdRuleConfig.model_validate(data))


def minute_result(co2_rate_kg_h: float = 196_960.0, t: datetime = T0) -> MinuteResult:
    """A hand-built minute: S1 at `co2_rate_kg_h`, U1 at 0.82 t/MWh, site 1234.5 t today."""
    src = SourceMinute(source="S1", unit="U1", t=t, flow_act_m3_h=1_080_000.0,
                       flow_std_dry_m3_h=835_000.0, co2_dry_pct=12.0, co2_mg_m3=235_680.0,
                       co2_rate_kg_h=co2_rate_kg_h, co2_kg=co2_rate_kg_h / 60, valid=True,
                       flag=DataFlag.N, co2_hour_t=3.28, co2_today_t=1234.5, co2_ytd_t=5e5)
    unit = UnitMinute(unit="U1", t=t, output_mwh=10.0, co2_kg=8200.0, intensity_t_mwh=0.82,
                      valid=True, flag=DataFlag.N, co2_today_t=1234.5)
    site = SiteMinute(t=t, co2_kg=8200.0, co2_today_t=1234.5, co2_ytd_t=500_000.0,
                      allowance_annual_t=4_000_000.0, allowance_used_pct=12.5,
                      allowance_headroom_t=3_500_000.0)
    return MinuteResult(t=t, sources=(src,), units=(unit,), site=site)


def run(r: ThresholdRule, values: list[float]) -> list[tuple[str, str] | None]:
    out: list[tuple[str, str] | None] = []
    for v in values:
        ev = r.evaluate(v, T0)
        out.append(None if ev is None else (ev.previous, ev.state))
    return out


def test_high_every_transition_with_messages() -> None:
    r = rule(warning=160.0, alarm=180.0, deadband=5.0)
    assert r.evaluate(150.0, T0) is None
    w = r.evaluate(165.0, T0)
    assert w is not None
    assert (w.previous, w.state, w.value, w.limit) == ("normal", "warning", 165.0, 160.0)
    assert w.rule == "r1" and w.t == T0 and w.target == "source S1 co2_rate_t_h"
    assert w.message == "S1 co2_rate_t_h = 165 ≥ warning level 160 [rule r1: High CO2 rate]"
    assert w.message_zh == "S1 co2_rate_t_h = 165 ≥ 预警限值 160［规则 r1：High CO2 rate］"
    assert r.evaluate(170.0, T0) is None

    a = r.evaluate(196.96, T0)
    assert a is not None
    assert (a.previous, a.state, a.limit) == ("warning", "alarm", 180.0)
    assert a.message.startswith("S1 co2_rate_t_h = 196.96 ≥ alarm level 180 ")
    assert a.message_zh.startswith("S1 co2_rate_t_h = 196.96 ≥ 报警限值 180")
    assert r.state == "alarm" and r.last_event is a

    back = r.evaluate(174.0, T0)
    assert back is not None
    assert (back.previous, back.state, back.limit) == ("alarm", "warning", 180.0)
    assert back.message.startswith(
        "S1 co2_rate_t_h = 174 < alarm level 180 (deadband 5), back to warning")
    assert back.message_zh.startswith("S1 co2_rate_t_h = 174 < 报警限值 180（死区 5），降为预警")

    normal = r.evaluate(154.9, T0)
    assert normal is not None
    assert (normal.previous, normal.state, normal.limit) == ("warning", "normal", 160.0)
    assert normal.message.startswith(
        "S1 co2_rate_t_h = 154.9 < warning level 160 (deadband 5), back to normal")
    assert "恢复正常" in normal.message_zh
    assert r.last_event is normal


def test_deadband_hysteresis() -> None:
    r = rule(warning=160.0, alarm=180.0, deadband=5.0)
    # Entering needs the level itself; leaving needs level − deadband.
    assert run(r, [179.99, 180.0]) == [("normal", "warning"), ("warning", "alarm")]
    assert run(r, [179.9, 176.0, 175.0]) == [None, None, None]
    assert run(r, [174.99]) == [("alarm", "warning")]
    assert run(r, [159.0, 155.0, 179.0]) == [None, None, None]
    assert run(r, [154.99]) == [("warning", "normal")]
    # Back in normal, a value within the deadband below the level does not re-enter.
    assert run(r, [158.0, 159.99]) == [None, None]


def test_deadband_zero_leaves_just_below_level() -> None:
    r = rule(warning=160.0, alarm=180.0)
    assert run(r, [180.0, 179.999, 159.999, 160.0]) == [
        ("normal", "alarm"), ("alarm", "warning"), ("warning", "normal"), ("normal", "warning")]


def test_direct_jumps_between_normal_and_alarm() -> None:
    r = rule(warning=160.0, alarm=180.0, deadband=5.0)
    up = r.evaluate(250.0, T0)
    assert up is not None and (up.previous, up.state, up.limit) == ("normal", "alarm", 180.0)
    down = r.evaluate(100.0, T0)
    assert down is not None and (down.previous, down.state) == ("alarm", "normal")
    # The level crossed on the way down to normal is the warning level.
    assert down.limit == 160.0
    assert down.message.startswith("S1 co2_rate_t_h = 100 < warning level 160 (deadband 5)")
    # From alarm, a value inside the warning deadband keeps warning, not normal.
    r2 = rule(warning=160.0, alarm=180.0, deadband=5.0)
    assert run(r2, [190.0, 157.0]) == [("normal", "alarm"), ("alarm", "warning")]


def test_low_direction() -> None:
    r = rule(target={"site": True, "field": "allowance_headroom_t"}, direction="low",
             warning=10.0, alarm=5.0, deadband=1.0)
    assert run(r, [12.0, 10.0]) == [None, ("normal", "warning")]
    ev = r.evaluate(5.0, T0)
    assert ev is not None and (ev.state, ev.limit) == ("alarm", 5.0)
    assert ev.target == "site allowance_headroom_t"
    assert ev.message.startswith("site allowance_headroom_t = 5 ≤ alarm level 5 ")
    assert ev.message_zh.startswith("全厂 allowance_headroom_t = 5 ≤ 报警限值 5")
    assert run(r, [5.5, 6.0]) == [None, None]
    back = r.evaluate(6.01, T0)
    assert back is not None and (back.previous, back.state) == ("alarm", "warning")
    assert back.message.startswith(
        "site allowance_headroom_t = 6.01 > alarm level 5 (deadband 1), back to warning")
    assert run(r, [10.5, 11.0, 11.01]) == [None, None, ("warning", "normal")]


def test_only_alarm_level() -> None:
    r = rule(alarm=180.0, deadband=2.0)
    assert run(r, [179.9, 500.0, 178.0, 177.99, 179.0, 180.0]) == [
        None, ("normal", "alarm"), None, ("alarm", "normal"), None, ("normal", "alarm")]
    back = rule(alarm=180.0)
    back.evaluate(181.0, T0)
    ev = back.evaluate(1.0, T0)
    assert ev is not None and ev.limit == 180.0
    assert ev.message.startswith("S1 co2_rate_t_h = 1 < alarm level 180, back to normal")


def test_only_warning_level() -> None:
    r = rule(warning=160.0)
    assert run(r, [1000.0, 159.0]) == [("normal", "warning"), ("warning", "normal")]


def test_nan_keeps_state() -> None:
    r = rule(warning=160.0, alarm=180.0)
    a = r.evaluate(190.0, T0)
    assert r.evaluate(math.nan, T0) is None
    assert r.state == "alarm" and r.last_event is a
    assert r.evaluate(185.0, T0) is None
    n = rule(alarm=180.0)
    assert n.evaluate(math.nan, T0) is None and n.state == "normal"


def test_rule_without_name_and_unit_target() -> None:
    r = rule(name="", target={"unit": "U1", "field": "intensity_t_mwh"}, warning=0.8)
    ev = r.evaluate(0.8123, T0)
    assert ev is not None
    assert ev.target == "unit U1 intensity_t_mwh"
    assert ev.message == "U1 intensity_t_mwh = 0.8123 ≥ warning level 0.8 [rule r1]"


def test_target_value_source_unit_site() -> None:
    res = minute_result()
    assert target_value(res, Target(source="S1", field="co2_rate_t_h")) == pytest.approx(196.96)
    assert target_value(res, Target(source="S1", field="co2_rate_kg_h")) == 196_960.0
    assert target_value(res, Target(source="S1", field="co2_today_t")) == 1234.5
    assert target_value(res, Target(unit="U1", field="intensity_t_mwh")) == 0.82
    assert target_value(res, Target(unit="U1", field="output_mwh")) == 10.0
    assert target_value(res, Target(site=True, field="co2_today_t")) == 1234.5
    assert target_value(res, Target(site=True, field="allowance_used_pct")) == 12.5
    # A source or unit missing from this minute means no data.
    assert math.isnan(target_value(res, Target(source="S9", field="co2_kg")))
    assert math.isnan(target_value(res, Target(unit="U9", field="co2_kg")))


def test_fields_come_from_records() -> None:
    assert "co2_rate_t_h" in FIELDS["source"]  # a property
    assert "flow_std_dry_m3_h" in FIELDS["source"]
    assert "intensity_t_mwh" in FIELDS["unit"]
    assert "allowance_headroom_t" in FIELDS["site"]
    # Identifiers, times and flags are not values to alarm on.
    for name in ("source", "unit", "t", "flag", "valid"):
        assert name not in FIELDS["source"]
    assert target_label(Target(site=True, field="co2_ytd_t")) == "site co2_ytd_t"


def test_bad_field_name_is_a_clear_error() -> None:
    with pytest.raises(ValueError) as err:
        rule(target={"source": "S1", "field": "co2_rate"}, alarm=1.0)
    text = str(err.value)
    assert text.startswith("alarm rule 'r1': unknown source field 'co2_rate'; valid source "
                           "fields: co2_dry_pct, ")
    assert "co2_rate_t_h" in text and "flow_std_dry_m3_h" in text
    # A source field on a unit target is still wrong, and the unit fields are listed.
    with pytest.raises(ValueError, match=r"unknown unit field 'co2_rate_t_h'.*intensity_t_mwh"):
        rule(target={"unit": "U1", "field": "co2_rate_t_h"}, alarm=1.0)
    with pytest.raises(ValueError, match=r"^alarm target: unknown source field 'source'"):
        target_value(minute_result(), Target(source="S1", field="source"))


def test_fmt_number() -> None:
    assert [fmt_number(x) for x in (196.96, 180.0, 0.8123, 3_500_000.5, -0.0, 0.0)] == [
        "196.96", "180", "0.8123", "3500000.5", "0", "0"]
