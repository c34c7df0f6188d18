"""Entries applied by the period stage: lab factors, quantities, corrections, QA intervals.

Built on test_periods.py's worked day (2026-01-01 in Shanghai): hours of C 12.0 % and
Q 835 718.9 m³/h give 196.96223 t; hours 1 and 2 are 12.5 % and 13.0 % (205.16899 t,
213.37575 t); hour 3 is an instrument fault (D), substituted by the MRR rule with
221.58251 t; the day is 4 776.33409 t; coal 100 t/h, 2 400 t a day.
"""

from __future__ import annotations

import math
from datetime import timedelta
from types import MappingProxyType

import pytest

from compute.entries import LabFactor, Override, Records
from compute.periods import PeriodCycle
from compute.plan import CalculationPlan, build_plan
from model.errors import InvalidValueError
from model.flags import DataFlag
from model.records import PeriodRecords
from tests.compute.test_periods import (
    DAY0,
    hours_of_minutes,
    kwh_readings,
    printed,
)
from tests.compute.test_periods import config as base_config

H = timedelta(hours=1)


def plan_with(records: Records) -> CalculationPlan:
    p = base_config()
    return build_plan(p.config, p.tag_ids, p.factors, records)


def day_of(records: Records) -> list[PeriodRecords]:
    batch = hours_of_minutes(DAY0, 25, conc={1: 12.5, 2: 13.0}, bad={3: DataFlag.D},
                             kwh=kwh_readings(25 * 60, jump_at=5 * 60 + 30))
    return PeriodCycle(plan_with(records)).add(batch)


def hours(out: list[PeriodRecords]) -> list[PeriodRecords]:
    return [r for r in out if r.level == "hour"]


def day(out: list[PeriodRecords]) -> PeriodRecords:
    return next(r for r in out if r.level == "day")


def test_nothing_entered_changes_nothing() -> None:
    d = day(day_of(Records()))
    assert d.sources[0].co2_t == printed(4776.33409, 5)
    assert (d.sources[0].flag, d.streams[0].flag, d.units[0].flag) == (DataFlag.N,) * 3


def test_a_lab_entry_gives_a_dated_factor_version_that_inherits_the_rest() -> None:
    # Lab report of the January coal: NCV 18.5 GJ/t, CC 0.0290 tC/GJ; OF not measured, so
    # the 0.99 of the version in force before. 2 400 t · 18.5 · 0.0290 · 0.99 · 44/12 =
    # 44 400 · 0.0290 = 1 287.6; · 0.99 = 1 274.724; · 44/12 = 4 673.988 t
    lab = LabFactor("demo_coal", DAY0, {"ncv_gj_t": 18.5, "cc_tc_gj": 0.0290},
                    "LAB-2026-001", entry=7)
    out = day_of(Records(lab_factors=(lab,)))
    coal = day(out).streams[0]
    assert coal.factor_version == "demo_coal@lab7"
    assert coal.co2_t == printed(4673.988, 6)
    # the hours use it too: 100 t · … = 194.74950 t
    assert hours(out)[0].streams[0].co2_t == printed(194.7495, 5)
    # (4 776.33409 − 4 673.988) / 4 673.988 · 100 = 102.34609 / 46.73988 = 2.18970 %
    assert day(out).units[0].reconciliation_diff_pct == printed(2.1897, 4)


def test_a_lab_entry_on_a_versions_date_replaces_that_version() -> None:
    base = base_config().factors
    first = base.versions("demo_coal")[0]
    table = Records(lab_factors=(LabFactor("demo_coal", first.effective_from,
                                           {"ncv_gj_t": 17.5}, "LAB-fix", 3),)
                    ).factor_table(base)
    ids = [v.id for v in table.versions("demo_coal")]
    assert first.id not in ids and "demo_coal@lab3" in ids
    assert dict(table.at("demo_coal", first.effective_from).values) == {
        "ncv_gj_t": 17.5, "cc_tc_gj": 0.03085, "of": 0.99}


def test_correcting_an_hours_co2_makes_it_valid_and_s_and_changes_the_day() -> None:
    # Hour 3 (D, substituted 221.58251 t) corrected to 200 t: the day is
    # 21 · 196.96223 + 205.16899 + 213.37575 + 200 = 4 754.75158 t, every hour valid.
    fix = Override("source", "hour", "S1", DAY0 + 3 * H, {"co2_t": 200.0}, entry=1)
    out = day_of(Records(overrides=(fix,)))
    h3 = hours(out)[3].sources[0]
    assert (h3.co2_t, h3.valid, h3.flag, h3.substituted) == (200.0, True, DataFlag.S, False)
    assert math.isnan(h3.co2_measured_t)  # nothing was measured in the faulty hour
    d = day(out).sources[0]
    assert d.co2_t == printed(4754.75158, 5)
    assert (d.valid, d.flag, d.n_valid, d.n_substituted) == (True, DataFlag.S, 24, 0)
    assert day(out).units[0].co2_cems_t == printed(4754.75158, 5)
    # the allowance's year to date at the end of the day moves by 200 − 221.58251
    before = hours(day_of(Records()))[23].allowance
    after = hours(out)[23].allowance
    assert before is not None and after is not None
    assert after.ytd_t - before.ytd_t == pytest.approx(-21.58251, abs=5e-6)


def test_correcting_a_minute_enters_the_hour_as_valid() -> None:
    # Minute 00:00 of hour 0 set to 24.0 %: C_h = (24 + 59 · 12) / 60 = 12.2 %,
    # 12.2 · 1.964 · 835 718.9 / 1e5 = 200.24493 t; the hour carries S.
    fix = Override("source", "minute", "S1", DAY0, {"co2_dry_pct": 24.0}, entry=1)
    h0 = hours(day_of(Records(overrides=(fix,))))[0].sources[0]
    assert h0.co2_dry_pct == pytest.approx(12.2, rel=1e-12)
    assert h0.co2_t == printed(200.24493, 5)
    assert (h0.valid, h0.flag, h0.n_valid) == (True, DataFlag.S, 60)


def test_minutes_of_a_faulty_hour_set_by_hand_make_it_valid() -> None:
    # All 60 minutes of hour 3 (flag D) set to 12.0 % and Q: the hour is 196.96223 t, S.
    fixes = tuple(Override("source", "minute", "S1", DAY0 + 3 * H + timedelta(minutes=m),
                           {"co2_dry_pct": 12.0, "flow_std_dry_m3_h": 835_718.9}, entry=m)
                  for m in range(60))
    h3 = hours(day_of(Records(overrides=fixes)))[3].sources[0]
    assert h3.co2_t == printed(196.96223, 5)
    assert (h3.valid, h3.flag, h3.substituted) == (True, DataFlag.S, False)


def test_a_days_weighbridge_quantity_replaces_the_metered_one() -> None:
    # 2 500 t from the weighbridge: 2 500 · 17.2 · 0.03085 · 0.99 · 44/12 = 4 815.3765 t
    q = Override("stream", "day", "U1_coal", DAY0, {"quantity": 2500.0}, entry=2)
    coal = day(day_of(Records(overrides=(q,)))).streams[0]
    assert (coal.quantity, coal.flag, coal.valid) == (2500.0, DataFlag.S, True)
    assert coal.co2_t == printed(4815.3765, 4)
    assert coal.factor_version == "demo-coal-2020-01"


def test_a_days_output_entered_gives_the_intensity() -> None:
    # 4 776.33409 t / 15 000 MWh = 0.318422 t/MWh
    o = Override("unit", "day", "U1", DAY0, {"output_mwh": 15_000.0}, entry=2)
    u = day(day_of(Records(overrides=(o,)))).units[0]
    assert u.output_mwh == 15_000.0 and u.flag is DataFlag.S
    assert u.intensity_t_mwh == printed(0.318422, 6)


def test_the_latest_entry_of_a_value_wins() -> None:
    a = Override("source", "hour", "S1", DAY0 + 3 * H, {"co2_t": 150.0}, entry=1)
    b = Override("source", "hour", "S1", DAY0 + 3 * H, {"co2_t": 200.0}, entry=2)
    for order in ((a, b), (b, a)):
        assert hours(day_of(Records(overrides=order)))[3].sources[0].co2_t == 200.0


def test_an_out_of_control_interval_invalidates_its_hours_until_the_passed_check() -> None:
    # Failed span check at 10:00, passed at 12:00: hours 10 and 11 are invalid (D) and
    # substituted (MRR over 3 h of 12.0 %: σ 0, so 196.96223 t); hour 12 is measured again.
    t0, t1 = (DAY0 + 10 * H).timestamp(), (DAY0 + 12 * H).timestamp()
    out = hours(day_of(Records(out_of_control=MappingProxyType({"S1": ((t0, t1),)}))))
    s = [h.sources[0] for h in out]
    assert [x.flag for x in s[9:13]] == [DataFlag.N, DataFlag.D, DataFlag.D, DataFlag.N]
    assert s[10].substituted and s[11].substituted and not s[12].substituted
    assert math.isnan(s[10].co2_measured_t)
    assert s[10].co2_t == printed(196.96223, 5) and s[12].co2_t == printed(196.96223, 5)


def test_an_override_names_what_is_wrong() -> None:
    with pytest.raises(InvalidValueError, match=r"co2_kg.*cannot be set"):
        Override("source", "hour", "S1", DAY0, {"co2_kg": 1.0})
    with pytest.raises(InvalidValueError, match="a unit minute cannot be set"):
        Override("unit", "minute", "U1", DAY0, {"output_mwh": 1.0})
    with pytest.raises(InvalidValueError, match="finite"):
        Override("stream", "day", "U1_coal", DAY0, {"quantity": -1.0})
    with pytest.raises(InvalidValueError, match="time zone"):
        Override("stream", "day", "U1_coal", DAY0.replace(tzinfo=None),
                 {"quantity": 1.0})


def test_changed_intervals_are_the_spans_an_entry_moved() -> None:
    from compute.entries import changed_intervals
    inf = math.inf
    # S1: out of control from 100 on; a pass at 160 ends it: [160, inf) left control.
    # S2: a failed check at 50 until a pass at 70, then again from 300: both new.
    # S3: unchanged.
    old = {"S1": ((100.0, inf),), "S3": ((0.0, 10.0),)}
    new = {"S1": ((100.0, 160.0),), "S2": ((50.0, 70.0), (300.0, inf)),
           "S3": ((0.0, 10.0),)}
    assert changed_intervals(old, new) == {
        "S1": ((160.0, inf),), "S2": ((50.0, 70.0), (300.0, inf))}
    # an interval that grew at both ends: [90, 100) and [200, 250)
    assert changed_intervals({"S1": ((100.0, 200.0),)}, {"S1": ((90.0, 250.0),)}) == {
        "S1": ((90.0, 100.0), (200.0, 250.0))}
    # two old intervals joined by a new one: the gap between them only
    assert changed_intervals({"S1": ((0.0, 10.0), (20.0, 30.0))}, {"S1": ((0.0, 30.0),)}) == {
        "S1": ((10.0, 20.0),)}
