"""CO2eToday: CO2Today + the other gases of the unit's closed hours of the plant day."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from compute.clock import PlantClock
from compute.co2e_today import CO2eToday
from model.flags import DataFlag
from model.records import PeriodRecords, UnitPeriod

# The steel demo's lime kiln (tests/test_demo_steel.py): 26.307 466 094 726 t CO2 an hour,
# CO2e under SAR 26.315 057 639 726 t; the difference, its CH4 and N2O:
# 1.459 912 5e-4 · 21 + 1.459 912 5e-5 · 310 = 0.003 065 816 25 + 0.004 525 728 75
# = 0.007 591 545 t an hour.
LK_CO2_T = 26.307466094726
LK_CO2E_T = 26.315057639726
LK_DIFF_T = 0.007591545
# Asia/Shanghai is UTC+8: the plant day of 15 March 2025 is [14 Mar 16:00, 15 Mar 16:00) UTC.
DAY = datetime(2025, 3, 14, 16, tzinfo=UTC)
HOUR = timedelta(hours=1)


def hand(value: float) -> object:
    """Equality to a hand-worked figure, to 1e-9 relative."""
    return pytest.approx(value, rel=1e-9, abs=0)


def hour(t: datetime, *units: UnitPeriod) -> PeriodRecords:
    """A closed hour starting at `t` with these units."""
    return PeriodRecords("hour", t, t + HOUR, (), (), units)


def kiln(t: datetime, co2_t: float = LK_CO2_T, co2e_t: float = LK_CO2E_T,
         unit: str = "LK") -> UnitPeriod:
    """A lime-kiln hour accounted by its factors (no CEMS)."""
    return UnitPeriod(unit, t, math.nan, co2_t, math.nan, math.nan, True, DataFlag.N,
                      co2_t=co2_t, basis="factor", co2e_t=co2e_t, gwp_set="SAR")


def test_closed_hours_add_their_other_gases_and_the_day_resets() -> None:
    acc = CO2eToday(PlantClock(60.0, "Asia/Shanghai"))
    minute = DAY + 5 * HOUR + timedelta(minutes=30)  # 05:30 local
    # Before any hour closed, CO2eToday is CO2Today (a factor unit's: 0, no minute CO2).
    assert acc.today_t("LK", minute, 0.0) == 0.0
    assert acc.add_hour(hour(DAY + 3 * HOUR, kiln(DAY + 3 * HOUR)))
    assert acc.add_hour(hour(DAY + 4 * HOUR, kiln(DAY + 4 * HOUR)))
    # 2 hours: 2 · 0.007 591 545 = 0.015 183 09 t
    assert acc.today_t("LK", minute, 0.0) == hand(0.01518309)
    # On a CEMS unit's CO2Today of 1 520.25 t the same hours add the same: 1 520.265 183 09
    assert acc.today_t("LK", minute, 1520.25) == hand(1520.26518309)
    assert acc.today_t("PP", minute, 12.5) == 12.5  # no hour of PP: its CO2Today
    # The same hour again (sent twice) replaces its figure: still 2 hours.
    assert acc.add_hour(hour(DAY + 4 * HOUR, kiln(DAY + 4 * HOUR)))
    assert acc.extra_t("LK", minute) == hand(2 * LK_DIFF_T)
    # An hour without a CO2e (invalid, no substitute) adds no other gases.
    assert acc.add_hour(hour(DAY + 5 * HOUR, kiln(DAY + 5 * HOUR, math.nan, math.nan)))
    assert acc.extra_t("LK", minute) == hand(2 * LK_DIFF_T)
    # A day's record is not an hour of today.
    assert not acc.add_hour(PeriodRecords("day", DAY, DAY + 24 * HOUR, (), (),
                                          (kiln(DAY, 631.4, 631.6),)))
    assert acc.extra_t("LK", minute) == hand(2 * LK_DIFF_T)
    # The next plant day's minutes (from 15 Mar 16:00 UTC) start again at CO2Today.
    tomorrow = DAY + 24 * HOUR
    assert acc.today_t("LK", tomorrow, 0.0) == 0.0
    assert not acc.covers(tomorrow) and acc.covers(DAY) and not acc.covers(DAY - HOUR)
    # The next day's first hour resets the sums; a late hour of the day before is dropped.
    assert acc.add_hour(hour(tomorrow, kiln(tomorrow)))
    assert acc.extra_t("LK", tomorrow + HOUR) == hand(LK_DIFF_T)
    assert not acc.add_hour(hour(DAY + 23 * HOUR, kiln(DAY + 23 * HOUR)))
    assert acc.extra_t("LK", tomorrow + HOUR) == hand(LK_DIFF_T)
    assert acc.today_t("LK", minute, 0.0) == 0.0  # a minute of the day before: no sums


def test_a_sped_up_clock_resets_at_its_own_plant_day() -> None:
    # 0.5-s minutes: an hour is 30 s and a day 12 min of wall time (compute/clock.py).
    clock = PlantClock(0.5, "Asia/Shanghai")
    acc = CO2eToday(clock)
    t0 = clock.day_start(datetime(2026, 12, 7, 19, tzinfo=UTC))
    h = timedelta(seconds=30)
    for i in range(3):
        assert acc.add_hour(hour(t0 + i * h, kiln(t0 + i * h)))
    # 3 hours: 3 · 0.007 591 545 = 0.022 774 635 t
    assert acc.today_t("LK", t0 + 3 * h, 0.0) == hand(0.022774635)
    assert acc.today_t("LK", t0 + 24 * h, 0.0) == 0.0  # 12 min on: the next plant day


def test_stored_hours_seed_the_sums_after_a_restart() -> None:
    acc = CO2eToday(PlantClock(60.0, "Asia/Shanghai"))
    minute = DAY + 5 * HOUR + timedelta(minutes=30)
    # Stored rows (NULL is None): two kiln hours, one without figures, and yesterday's.
    acc.seed_hour("LK", DAY - HOUR, LK_CO2_T, LK_CO2E_T)
    acc.seed_hour("LK", DAY + 3 * HOUR, LK_CO2_T, LK_CO2E_T)
    acc.seed_hour("LK", DAY + 4 * HOUR, None, None)
    acc.seed_hour("LK", DAY + 4 * HOUR + HOUR, LK_CO2_T, LK_CO2E_T)
    # yesterday's was dropped when today's came: 2 · 0.007 591 545 = 0.015 183 09 t
    assert acc.today_t("LK", minute, 0.0) == hand(0.01518309)
    # The same hour closed again after the restart replaces its stored figure.
    assert acc.add_hour(hour(DAY + 5 * HOUR, kiln(DAY + 5 * HOUR)))
    assert acc.today_t("LK", minute, 0.0) == hand(0.01518309)
