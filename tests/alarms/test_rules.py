"""Threshold rule state machine and target field selection."""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from alarms.bank import RuleBank
from alarms.config import (
    FIELDS,
    CaptureRateRuleConfig,
    RateOfChangeRuleConfig,
    Target,
    ThresholdRuleConfig,
)
from alarms.context import MinuteContext, target_value
from alarms.spec import fmt_number, target_label
from compute.clock import PlantClock
from compute.config import AllowanceConfig
from model.errors import ConfigError
from model.flags import DataFlag
from model.records import (
    DeviceEvent,
    MinuteResult,
    PeriodRecords,
    PeriodResult,
    SiteMinute,
    SourceMinute,
    TagMinute,
    UnitMinute,
)
from server.config import parse_config
from tests.alarms.reference import (
    CaptureRateRule,
    CommLossRule,
    RateOfChangeRule,
    ReconciliationRule,
    ScalarRule,
    ThresholdRule,
    scalar_rules,
)
from tests.fixtures.plant import plant_dict

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


# --- delays, deadband, and every rule kind, with the arithmetic written out ---------------

CLOCK = PlantClock(60.0, "Asia/Shanghai")


def at(minutes: float, t0: datetime = T0) -> datetime:
    return t0 + timedelta(minutes=minutes)


def feed(r: ScalarRule, values: list[float], t0: datetime = T0) -> dict[int, tuple[str, str]]:
    """Minute k gets values[k]; the condition changes by minute."""
    out = {}
    for k, v in enumerate(values):
        ev = r.evaluate(v, at(k, t0))
        if ev is not None:
            out[k] = (ev.previous, ev.state)
    return out


def make(kind: str, **data: Any) -> ScalarRule:
    cfg = parse_config({**plant_dict(), "reconciliation": {"limit_pct": 5.0},
                        "allowance": {"annual_t": 1_000_000.0, "carbon_price_cny_t": 80.0},
                        "alarms": {"rules": [{"id": "r1", "kind": kind, **data}]}},
                       "test_rules")
    return scalar_rules(cfg)[0]


def record(t: datetime, *, s1_co2: float = 12.0, s1_flag: DataFlag = DataFlag.N,
           s1_kg: float = 3282.7, u1_kg: float = 8000.0, u1_mwh: float = 10.0,
           u1_flag: DataFlag = DataFlag.N, ytd_t: float = 5e5,
           with_s1: bool = True, u1_out_flag: DataFlag = DataFlag.N) -> MinuteResult:
    """A one-unit minute: S1 (CO2 %, kg), U1 (kg, MWh), the site's year to date."""
    src = SourceMinute("S1", "U1", t, 1e6, 8e5, s1_co2, s1_co2 * 19_640, s1_kg * 60, s1_kg,
                       s1_flag is DataFlag.N, s1_flag)
    unit = UnitMinute("U1", t, u1_mwh, u1_kg, u1_kg / 1000 / u1_mwh if u1_mwh else math.nan,
                      u1_flag is DataFlag.N, u1_flag, output_flag=u1_out_flag)
    site = SiteMinute(t, u1_kg, 100.0, ytd_t, 4e6, ytd_t / 4e4, 4e6 - ytd_t)
    tags = (TagMinute("s1_co2", t, s1_co2, s1_co2, s1_co2, 12, s1_flag),)
    return MinuteResult(t, (src,) if with_s1 else (), (unit,), site, tags)


def context(result: MinuteResult, trailing_30d_t: float = math.nan) -> MinuteContext:
    return MinuteContext(result, CLOCK, AllowanceConfig(annual_t=1_000_000.0,
                                                        carbon_price_cny_t=80.0),
                         trailing_30d_t)


def test_on_and_off_delay_with_deadband() -> None:
    # warning 160, alarm 180, deadband 5; a level is entered after it held 2 minutes
    # (at the 3rd minute in a row) and left after 1 minute back beyond the deadband.
    r = rule(warning=160.0, alarm=180.0, deadband=5.0, on_delay_min=2, off_delay_min=1)
    events = feed(r, [
        165, 170,  # m0-1: ≥ 160 for 0 and 1 minute: not yet
        150,  # m2: back below 160: the on-delay starts again
        165,  # m3: ≥ 160 since m3
        185,  # m4: ≥ 180 since m4; ≥ 160 for 1 minute
        185,  # m5: ≥ 160 for 2 minutes (m3→m5): warning
        185,  # m6: ≥ 180 for 2 minutes (m4→m6): alarm
        176,  # m7: 176 ≥ 180 − 5: still alarm (deadband)
        174,  # m8: < 175 since m8, 0 minutes: still alarm (off-delay)
        176,  # m9: back in the deadband: the off-delay starts again
        174,  # m10: < 175 since m10
        170,  # m11: < 175 for 1 minute: alarm left; 170 ≥ 160 − 5: warning
        154,  # m12: < 155 since m12
        154,  # m13: for 1 minute: normal
    ])
    assert events == {5: ("normal", "warning"), 6: ("warning", "alarm"),
                      11: ("alarm", "warning"), 13: ("warning", "normal")}


def test_nan_keeps_delay_timers() -> None:
    # on-delay 2: ≥ 180 at m0, no value at m1 and m2, ≥ 180 at m3: held since m0 → alarm.
    r = rule(alarm=180.0, on_delay_min=2)
    assert feed(r, [181, math.nan, math.nan, 182]) == {3: ("normal", "alarm")}


def test_low_threshold_with_delays() -> None:
    # low: warning 10, alarm 5, deadband 1, off-delay 2: leave alarm above 5 + 1 = 6
    r = rule(target={"site": True, "field": "allowance_headroom_t"}, direction="low",
             warning=10.0, alarm=5.0, deadband=1.0, off_delay_min=2)
    assert feed(r, [4.0, 6.5, 6.5, 6.5, 12.0, 12.0, 12.0]) == {
        0: ("normal", "alarm"),
        3: ("alarm", "warning"),  # > 6 since m1, 2 minutes at m3; 6.5 ≤ 10 + 1: warning
        6: ("warning", "normal")}  # > 11 since m4, 2 minutes at m6


def test_threshold_on_a_tag_and_its_area() -> None:
    r = make("threshold", target={"tag": "s1_co2", "field": "mean"}, alarm=13.0)
    assert r.spec.area == "U1" and r.spec.target == "tag s1_co2 mean"
    (ev,) = r.step(context(record(T0, s1_co2=13.5)))
    assert ev.message == "s1_co2 mean = 13.5 ≥ alarm level 13 [rule r1]"


def test_rate_of_change() -> None:
    values = [100.0, 102.0, 106.0, 113.0, 114.0, 114.0]
    # over 2 minutes: m2 (106 − 100)/2 = 3.0, m3 (113 − 102)/2 = 5.5, m4 (114 − 106)/2 = 4.0,
    # m5 (114 − 113)/2 = 0.5; m0 and m1 have no value 2 minutes before.
    rise = make("rate_of_change", target={"source": "S1", "field": "co2_dry_pct"},
                over_min=2, direction="rise", warning=3.0, alarm=5.0)
    assert isinstance(rise, RateOfChangeRule)
    got = [rise.rate(v, m) for m, v in enumerate(values)]
    assert got[:2] == [pytest.approx(math.nan, nan_ok=True)] * 2
    assert got[2:] == [3.0, 5.5, 4.0, 0.5]
    rise2 = make("rate_of_change", target={"source": "S1", "field": "co2_dry_pct"},
                 over_min=2, direction="rise", warning=3.0, alarm=5.0)
    events = [rise2.step(context(record(at(m), s1_co2=v))) for m, v in enumerate(values)]
    assert [[(e.previous, e.state) for e in evs] for evs in events] == [
        [], [], [("normal", "warning")], [("warning", "alarm")], [("alarm", "warning")],
        [("warning", "normal")]]
    w = events[2][0]
    assert w.target == "source S1 co2_dry_pct rate"
    assert w.message == "S1 co2_dry_pct rise per min over 2 min = 3 ≥ warning level 3 [rule r1]"
    # Falling: the same values fall by −3.0 … : never a fall; "both" sees the magnitude.
    fall = make("rate_of_change", target={"source": "S1", "field": "co2_dry_pct"},
                over_min=2, direction="fall", alarm=1.0)
    assert isinstance(fall, RateOfChangeRule)
    assert [fall.rate(v, m) for m, v in enumerate(values)][2:] == [-3.0, -5.5, -4.0, -0.5]
    both = make("rate_of_change", target={"source": "S1", "field": "co2_dry_pct"},
                over_min=1, alarm=1.0)
    assert isinstance(both, RateOfChangeRule)
    assert [both.rate(v, m) for m, v in enumerate([5.0, 3.0, 4.0])][1:] == [2.0, 1.0]
    # A missing minute leaves no value N minutes back: NaN, the state is kept.
    gap = make("rate_of_change", target={"source": "S1", "field": "co2_dry_pct"},
               over_min=1, alarm=1.0)
    assert isinstance(gap, RateOfChangeRule)
    assert math.isnan([gap.rate(v, m) for m, v in ((0, 1.0), (2, 9.0))][1])


def test_stale_value() -> None:
    r = make("stale", target={"source": "S1", "field": "co2_dry_pct"}, warning_min=2,
             alarm_min=5)
    minutes = [
        record(at(0)),  # good: 0 minutes without
        record(at(1), s1_flag=DataFlag.D),  # 1
        record(at(2), s1_flag=DataFlag.B),  # 2 ≥ 2: warning
        record(at(3), s1_co2=math.nan),  # NaN is not good: 3
        record(at(4), with_s1=False),  # source absent: 4
        record(at(5), s1_flag=DataFlag.D),  # 5 ≥ 5: alarm
        record(at(6)),  # good again: 0, normal
    ]
    got = [[(e.previous, e.state, e.value) for e in r.step(context(res))] for res in minutes]
    assert got == [[], [], [("normal", "warning", 2.0)], [], [], [("warning", "alarm", 5.0)],
                   [("alarm", "normal", 0.0)]]
    assert r.last_event is not None
    assert r.last_event.message.startswith(
        "S1 co2_dry_pct minutes without a good value = 0 < warning level 2, back to normal")
    # A tag is good with samples and flag N.
    tag = make("stale", target={"tag": "s1_co2", "field": "mean"}, alarm_min=1)
    assert tag.step(context(record(at(0), s1_flag=DataFlag.B))) == []  # first minute: 0
    (ev,) = tag.step(context(record(at(1), s1_flag=DataFlag.B)))
    assert ev.state == "alarm" and ev.target == "tag s1_co2 mean stale"


def test_comm_loss_with_on_delay() -> None:
    r = make("comm_loss", device="cems1", on_delay_min=2)
    assert isinstance(r, CommLossRule) and r.spec.area == "U1"
    fault = DeviceEvent("cems1", "127.0.0.1:5020", at(0.3), True, "no reply in 1.0 s")
    assert r.on_device_event(fault) is None  # m0: in fault for 0 minutes
    assert r.step(context(record(at(1)))) == []  # 1 minute
    (ev,) = r.step(context(record(at(2))))  # 2 minutes: alarm
    assert (ev.state, ev.value, ev.limit, ev.target) == ("alarm", 1.0, None, "device cems1")
    assert ev.message == "device cems1 communication lost: no reply in 1.0 s [rule r1]"
    assert ev.message_zh == "设备 cems1 通信中断：no reply in 1.0 s［规则 r1］"
    other = DeviceEvent("other", "x", at(2.5), False, "")
    assert r.on_device_event(other) is None
    back = r.on_device_event(DeviceEvent("cems1", "127.0.0.1:5020", at(3.2), False, "ok"))
    assert back is not None and back.state == "normal"
    assert back.message == "device cems1 communication restored [rule r1]"


def test_intensity_windows() -> None:
    # Rolling hour of U1: 60 minutes of 8 t / 10 MWh = 0.8 t/MWh; at m60 one minute of
    # 70 t: minutes 1..60 → (59 · 8 + 70) / 600 = 542 / 600 = 0.90333 ≥ 0.85: warning.
    # It leaves the window at m120: 480 / 600 = 0.8: normal.
    r = make("intensity", scope={"unit": "U1"}, window="hour", warning=0.85, alarm=0.95)
    got = {}
    for m in range(121):
        for e in r.step(context(record(at(m), u1_kg=70_000.0 if m == 60 else 8000.0))):
            got[m] = (e.previous, e.state, round(e.value, 5))
    assert got == {60: ("normal", "warning", 0.90333), 120: ("warning", "normal", 0.8)}
    assert r.last_event is not None
    assert r.last_event.target == "unit U1 intensity hour"
    assert r.last_event.message.startswith(
        "U1 intensity t/MWh (last 60 min) = 0.8 < warning level 0.85")


def test_intensity_month_to_date_and_minimum_output() -> None:
    # 2024-05-31 15:58 UTC is 23:58 in Shanghai: two minutes of May, then June starts.
    t0 = datetime(2024, 5, 31, 15, 58, tzinfo=UTC)
    r = make("intensity", scope={"source": "S1"}, window="month_to_date",
             benchmark_t_mwh=0.8229, warning_pct=105.0, alarm_pct=115.0)
    # Levels: 0.8229 · 1.05 = 0.864045, 0.8229 · 1.15 = 0.946335 t/MWh. S1's CO2 over
    # U1's output: m0 9 t / 10 MWh = 0.9: warning; m1 (9 + 7) / 20 = 0.8: normal;
    # m2 is June: 9.5 / 10 = 0.95: alarm.
    assert r.spec.warning is not None and r.spec.alarm is not None
    assert (round(r.spec.warning, 6), round(r.spec.alarm, 6)) == (0.864045, 0.946335)
    got = [[(e.state, e.value) for e in r.step(context(record(at(m, t0), s1_kg=kg)))]
           for m, kg in enumerate([9000.0, 7000.0, 9500.0])]
    assert got == [[("warning", 0.9)], [("normal", 0.8)], [("alarm", 0.95)]]
    # Output at or below min_output_mwh: no value, the state is kept.
    m = make("intensity", scope={"site": True}, window="minute", alarm=0.9, min_output_mwh=5.0)
    assert m.step(context(record(T0, u1_kg=9500.0, u1_mwh=10.0)))[0].state == "alarm"
    assert m.step(context(record(at(1), u1_kg=100.0, u1_mwh=4.0))) == []
    assert m.step(context(record(at(2), u1_kg=100.0, u1_mwh=10.0)))[0].state == "normal"


def test_intensity_leaves_out_minutes_without_a_valid_output() -> None:
    # U1 and S1: 8 t / 10 MWh = 0.8 t/MWh a minute (levels 0.85 / 0.95). In m2 and m3 the
    # power meter answered only partly: an output of 3 MWh from too few samples, flag B
    # (so U1's minute is B too), while the CO2 is valid. Counting them, the hour window
    # at m2 would be (3 · 8) / (10 + 10 + 3) = 24 / 23 = 1.04348: a false alarm. Left out
    # of numerator and denominator alike: (8 + 8) / (10 + 10) = 0.8 in the hour, day,
    # month and for the source; the minute window has no value in m2, m3: held, no event.
    windows = ("minute", "hour", "day", "month_to_date")
    scopes = [{"unit": "U1"}, {"source": "S1"}, {"site": True}]
    rules = [{"id": f"r{i}", "kind": "intensity", "scope": sc, "window": w,
              "warning": 0.85, "alarm": 0.95}
             for i, (sc, w) in enumerate((sc, w) for sc in scopes for w in windows)]
    cfg = parse_config({**plant_dict(), "alarms": {"rules": rules}}, "test_rules")
    scalar = scalar_rules(cfg)
    measured = scalar_rules(cfg)  # the same rules again, to read their values
    bank = RuleBank(cfg)
    lost = {2, 3}
    for m in range(5):
        res = record(at(m), s1_kg=8000.0, u1_kg=8000.0,
                     u1_mwh=3.0 if m in lost else 10.0,
                     u1_flag=DataFlag.B if m in lost else DataFlag.N,
                     u1_out_flag=DataFlag.B if m in lost else DataFlag.N)
        events = [e for r in scalar for e in r.step(context(res))]
        changes = bank.minute(res)
        assert events == [] and changes.rows.size == 0, m
        values = [r.measure(context(res)) for r in measured]
        minute = [w == "minute" for _ in scopes for w in windows]
        for i, is_minute in enumerate(minute):
            if m in lost and is_minute:
                assert math.isnan(values[i])
                assert bank.value[i] == pytest.approx(0.8)  # the last value, held
            else:
                assert bank.value[i] == pytest.approx(0.8), (m, rules[i]["id"])
                assert values[i] == pytest.approx(0.8), (m, rules[i]["id"])


def test_allowance_measures_worked_example() -> None:
    # Shanghai, 2023 (365 days). The minute 2023-07-02 15:59 UTC ends at 2023-07-03 00:00
    # local: 181 days Jan–Jun + 2 days of July = 183 days gone, 182 left.
    # annual 1 000 000 t, year to date 500 000 t, trailing 30 days 90 000 t, 80 CNY/t:
    #   used        500 000 / 1 000 000 · 100                        = 50 %
    #   pro-rated   1 000 000 · 183/365 = 501 369.86 t; 500 000 / 501 369.86 = 99.7268 %
    #   forecast    500 000 + 90 000/30 · 182 = 1 046 000 t          = 104.6 %
    #   shortfall   46 000 t, cost 46 000 · 80                       = 3 680 000 CNY
    t = datetime(2023, 7, 2, 15, 59, tzinfo=UTC)
    ctx = context(record(t, ytd_t=500_000.0), trailing_30d_t=90_000.0)
    assert ctx.allowance == {
        "used_pct": 50.0, "prorated_pct": pytest.approx(99.726776, rel=1e-7),
        "forecast_pct": pytest.approx(104.6), "forecast_shortfall_t": pytest.approx(46_000.0),
        "shortfall_cost_cny": pytest.approx(3_680_000.0)}
    rules = {m: make("allowance_position", measure=m, warning=w, alarm=a) for m, w, a in (
        ("used_pct", 80.0, 90.0), ("prorated_pct", 99.5, 100.0),
        ("forecast_pct", 100.0, 104.5), ("shortfall_cost_cny", 1e6, 3e6))}
    got = {m: [e.state for e in r.step(ctx)] for m, r in rules.items()}
    assert got == {"used_pct": [], "prorated_pct": ["warning"], "forecast_pct": ["alarm"],
                   "shortfall_cost_cny": ["alarm"]}
    ev = rules["forecast_pct"].last_event
    assert ev is not None and ev.target == "site allowance forecast_pct"
    assert ev.message.startswith(
        "site forecast year-end emissions / allowance % = 104.6 ≥ alarm level 104.5")
    # Without the trailing emissions the forecast is unknown: nothing changes.
    assert math.isnan(context(record(t, ytd_t=500_000.0)).allowance["forecast_pct"])
    # On the first day of the year the pro-rated allowance is too small to compare.
    jan1 = context(record(datetime(2023, 1, 1, 0, 0, tzinfo=UTC), ytd_t=10.0))
    assert math.isnan(jan1.allowance["prorated_pct"])


def hour(h: int, code: str) -> PeriodRecords:
    """Closed hour h after T0 with S1 valid (V), invalid (I) or stopped (F)."""
    t = at(60 * h)
    flag = {"V": DataFlag.N, "I": DataFlag.D, "F": DataFlag.F}[code]
    src = PeriodResult("S1", t, 12.0, 8e5, 1.9e5, 190.0, 190.0, code == "V", flag, 50)
    return PeriodRecords("hour", t, at(60 * h + 60), (src,), (), ())


def test_capture_rate() -> None:
    # Window 4 h, at least 3 counted hours; low levels warning 90 %, alarm 75 %.
    r = make("capture_rate", source="S1", window_h=4, min_hours=3, warning=90.0, alarm=75.0)
    assert isinstance(r, CaptureRateRule)
    codes = "VVIFVVV"
    # h0 V, h1 V: fewer than 3 counted; h2: 2/3 = 66.7 % ≤ 75: alarm; h3 F is not counted:
    # V V I F 2/3; h4: V I F V 2/3; h5: I F V V 2/3; h6: F V V V 3/3 = 100 %: normal.
    got = {}
    for h, c in enumerate(codes):
        ev = r.on_period(hour(h, c))
        if ev is not None:
            got[h] = (ev.previous, ev.state, round(ev.value, 2), ev.t)
    assert got == {2: ("normal", "alarm", 66.67, at(180)), 6: ("alarm", "normal", 100.0, at(420))}
    assert r.last_event is not None and r.last_event.message.startswith(
        "S1 valid-hour capture rate % (last 4 h) = 100 > warning level 90, back to normal")
    assert r.on_period(dataclasses.replace(hour(7, "I"), level="day")) is None


def test_reconciliation() -> None:
    r = make("reconciliation_diff", unit="U1", warning=3.0, alarm=5.0)
    assert isinstance(r, ReconciliationRule)
    day = datetime(2024, 5, 2, 16, tzinfo=UTC)
    ev = r.on_reconciliation("U1", day, -6.2)  # |−6.2| = 6.2 ≥ 5: alarm
    assert ev is not None and (ev.state, ev.value, ev.limit) == ("alarm", 6.2, 5.0)
    assert ev.message == "U1 CEMS vs factor method |difference| % = 6.2 ≥ alarm level 5 [rule r1]"
    assert r.on_reconciliation("U2", day, 0.0) is None
    ev = r.on_reconciliation("U1", day + timedelta(days=1), 4.0)
    assert ev is not None and ev.state == "warning"
    ev = r.on_reconciliation("U1", day + timedelta(days=2), 1.0)
    assert ev is not None and ev.state == "normal"


# --- rule configuration -------------------------------------------------------------------


def rule_problems(*rules: dict[str, Any], **top: Any) -> list[tuple[str, str]]:
    data = {**plant_dict(), **top, "alarms": {"rules": list(rules)}}
    with pytest.raises(ConfigError) as exc:
        parse_config(data, "plant.yaml")
    return exc.value.problems


def test_rule_kinds_parse_with_defaults() -> None:
    cfg = parse_config({**plant_dict(), "alarms": {"rules": [
        {"id": "a", "target": {"source": "S1", "field": "co2_kg"}, "alarm": 1.0},
        {"id": "b", "kind": "rate_of_change", "target": {"unit": "U1", "field": "output_mwh"},
         "alarm": 2.0},
        {"id": "c", "kind": "stale", "target": {"tag": "s1_co2", "field": "mean"},
         "alarm_min": 5},
        {"id": "d", "kind": "comm_loss", "device": "cems1"},
        {"id": "e", "kind": "intensity", "scope": {"site": True}, "window": "day",
         "alarm": 0.9},
        {"id": "f", "kind": "allowance_position", "measure": "used_pct", "warning": 80,
         "alarm": 90},
        {"id": "g", "kind": "capture_rate", "source": "S1", "alarm": 90}]}}, "plant.yaml")
    kinds = [r.kind for r in cfg.alarms.rules]
    assert kinds == ["threshold", "rate_of_change", "stale", "comm_loss", "intensity",
                     "allowance_position", "capture_rate"]
    b = cfg.alarms.rules[1]
    assert isinstance(b, RateOfChangeRuleConfig)
    assert (b.over_min, b.direction, b.on_delay_min, b.suppress_when_stopped) == (
        1, "both", 0, True)
    g = cfg.alarms.rules[6]
    assert isinstance(g, CaptureRateRuleConfig) and (g.window_h, g.min_hours) == (720, 24)


def test_rule_config_errors_name_the_key() -> None:
    tgt = {"source": "S1", "field": "co2_kg"}
    assert rule_problems({"id": "r", "kind": "treshold", "target": tgt}) == [
        ("alarms.rules[0].kind", "unknown kind 'treshold' (known: 'threshold', "
         "'rate_of_change', 'stale', 'comm_loss', 'intensity', 'allowance_position', "
         "'capture_rate', 'reconciliation_diff', 'carbon_position', 'carbon_performance')")]
    assert rule_problems({"id": "r", "kind": "rate_of_change", "target": tgt,
                          "warning": 5.0, "alarm": 2.0}) == [
        ("alarms.rules[0]", "'alarm' level must be beyond 'warning' level for direction "
         "'high'")]
    assert rule_problems({"id": "r", "kind": "capture_rate", "source": "S1",
                          "warning": 75.0, "alarm": 90.0}) == [
        ("alarms.rules[0]", "'alarm' level must be beyond 'warning' level for direction "
         "'low'")]
    assert rule_problems({"id": "r", "kind": "stale", "target": tgt, "alarm_min": 5,
                          "deadband": 1}) == [("alarms.rules[0].deadband", "unknown key")]
    assert rule_problems({"id": "r", "target": tgt, "alarm": 1, "on_delay_min": -1}) == [
        ("alarms.rules[0].on_delay_min", "Input should be greater than or equal to 0")]
    assert rule_problems({"id": "r", "kind": "intensity", "scope": {"unit": "U1"},
                          "window": "hour", "alarm": 0.9, "benchmark_t_mwh": 0.8,
                          "alarm_pct": 110}) == [
        ("alarms.rules[0]", "give levels either as 'warning' / 'alarm' (t/MWh) or as "
         "'warning_pct' / 'alarm_pct' of 'benchmark_t_mwh', not both")]
    assert rule_problems({"id": "r", "kind": "intensity", "scope": {"unit": "U1"},
                          "window": "week", "alarm": 0.9})[0][0] == "alarms.rules[0].window"
    assert rule_problems({"id": "r", "kind": "stale", "target": tgt, "alarm_min": 2,
                          "warning_min": 5}) == [
        ("alarms.rules[0]", "'alarm_min' must not be shorter than 'warning_min'")]
    assert rule_problems({"id": "r", "kind": "capture_rate", "source": "S1", "alarm": 90,
                          "window_h": 12}) == [
        ("alarms.rules[0]", "'min_hours' (24) is more than 'window_h' (12)")]
    assert rule_problems({"id": "r", "target": {"tag": "x", "unit": "U1", "field": "mean"},
                          "alarm": 1}) == [
        ("alarms.rules[0].target", "give exactly one of 'source', 'unit', 'tag' or "
         "'site: true'")]


def test_rule_cross_checks() -> None:
    assert rule_problems(
        {"id": "a", "kind": "comm_loss", "device": "rtu9"},
        {"id": "b", "kind": "stale", "target": {"tag": "nope", "field": "mean"},
         "alarm_min": 1},
        {"id": "c", "kind": "intensity", "scope": {"unit": "U7"}, "window": "hour",
         "alarm": 1},
        {"id": "d", "kind": "capture_rate", "source": "S7", "alarm": 90},
        {"id": "e", "kind": "reconciliation_diff", "unit": "U1", "alarm": 5},
        {"id": "f", "kind": "allowance_position", "measure": "shortfall_cost_cny",
         "alarm": 1e6},
        {"id": "f", "kind": "rate_of_change", "target": {"source": "S1", "field": "co2_kg"},
         "alarm": 1, "notify": ["pager"]},
        allowance={"annual_t": 0.0}) == [
        ("alarms.rules[0].device", "unknown device 'rtu9'"),
        ("alarms.rules[1].target.tag", "unknown tag 'nope'"),
        ("alarms.rules[2].scope.unit", "unknown unit 'U7'"),
        ("alarms.rules[3].source", "unknown source 'S7'"),
        ("alarms.rules[4].kind", "reconciliation_diff rules need the daily reconciliation: "
         "set 'reconciliation.limit_pct'"),
        ("alarms.rules[5].kind", "allowance_position rules need the annual allowance: set "
         "'allowance.annual_t'"),
        ("alarms.rules[5].measure", "shortfall_cost_cny needs the carbon price: set "
         "'allowance.carbon_price_cny_t'"),
        ("alarms.rules[6].id", "duplicate rule id 'f'"),
        ("alarms.rules[6].notify[0]", "unknown channel 'pager'")]
