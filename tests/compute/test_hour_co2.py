"""A factor-method unit's closed hours in the running totals (compute/hour_co2.py)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from compute.clock import PlantClock
from compute.hour_co2 import HourCO2
from compute.totals import Totals
from model.records import PeriodRecords
from tests.fixtures.boundaries import period, unit_period

H = timedelta(hours=1)
# The steel demo's kiln hour, worked in tests/test_demo_steel.py: 26.307 466 094 726 t.
LK_HOUR_T = 25 * (0.90 * 44 / 56.08 + 0.02 * 44 / 40.30) + 0.375 * 389.31 * 0.0153 * 0.99 * 44 / 12


def hour(t: datetime, **co2_t: float) -> PeriodRecords:
    """The records of one closed hour starting at `t`, a unit record per keyword."""
    return period("hour", t, t + H, [unit_period(u, t, v) for u, v in co2_t.items()])


def counting(t: datetime) -> tuple[Totals, HourCO2]:
    """Totals of LK (factor method) and PP (CEMS) started at `t`; LK's hours counted."""
    clock = PlantClock(60.0, "UTC")
    totals = Totals(clock)
    for unit in ("LK", "PP"):
        totals.seed(f"{unit}.co2_kg", t, 0.0, 0.0, 0.0)
    return totals, HourCO2(totals, clock, ["LK"])


def test_closed_hours_revisions_and_day_ends_in_the_running_totals() -> None:
    d0 = datetime(2026, 12, 7, tzinfo=UTC)
    totals, hc = counting(d0)
    # The kiln's first two hours close; the power plant (CEMS, minute CO2) is not counted.
    hc.take(hour(d0, LK=LK_HOUR_T, PP=500.0))
    hc.take(hour(d0 + H, LK=LK_HOUR_T, PP=500.0))
    r = totals.add("LK.co2_kg", d0 + 2 * H, math.nan)  # a factor unit's minute: no CO2
    assert (r.day, r.year) == (2 * LK_HOUR_T * 1000, 2 * LK_HOUR_T * 1000)
    assert totals.add("PP.co2_kg", d0 + 2 * H, 0.0).day == 0.0
    # An entry recalculates the first hour: 30 t. The day and year take the difference,
    # 30 − 26.307 466 094 726 t, not the hour again.
    hc.take(hour(d0, LK=30.0))
    r = totals.add("LK.co2_kg", d0 + 2 * H + timedelta(minutes=1), math.nan)
    assert r.day == (30.0 + LK_HOUR_T) * 1000 and r.year == r.day
    # Hour 23 closes after the next day's first minute: the year has it, today does not.
    d1 = d0 + 24 * H
    totals.add("LK.co2_kg", d1, math.nan)
    hc.take(hour(d1 - H, LK=20.0))
    r = totals.add("LK.co2_kg", d1 + timedelta(minutes=1), math.nan)
    assert r.day == 0.0 and r.year == (30.0 + LK_HOUR_T + 20.0) * 1000
    # An hour without a value counts 0, and removes what that hour counted before.
    hc.take(hour(d1 - H, LK=math.nan))
    r = totals.add("LK.co2_kg", d1 + timedelta(minutes=2), math.nan)
    assert r.year == (30.0 + LK_HOUR_T) * 1000
    # Days are not hours: a day record adds nothing (its hours did).
    hc.take(period("day", d0, d1, [unit_period("LK", d0, 1e6)]))
    assert totals.add("LK.co2_kg", d1 + timedelta(minutes=3), math.nan).year == r.year


def test_a_new_year_starts_the_count_again_and_a_past_years_hour_is_left() -> None:
    y1 = datetime(2027, 1, 1, tzinfo=UTC)
    totals, hc = counting(y1)
    hc.count("LK", y1, 10.0)
    hc.count("LK", y1 - H, 7.0)  # 2026's last hour, closed after 2027 began
    r = totals.add("LK.co2_kg", y1 + H, math.nan)
    assert (r.day, r.year) == (10_000.0, 10_000.0)


def test_seeded_hours_count_once_and_a_revision_after_the_restart_by_its_difference() -> None:
    d1 = datetime(2026, 12, 8, tzinfo=UTC)
    now = d1 + 3 * H
    totals, hc = counting(now)
    # Stored: yesterday 23:00 20 t, today 00:00 and 01:00 26.307 … t each, 02:00 no value.
    hc.seed("LK", [(d1 - H, 20.0), (d1, LK_HOUR_T), (d1 + H, LK_HOUR_T), (d1 + 2 * H, None)],
            now)
    r = totals.add("LK.co2_kg", now, math.nan)
    assert (r.day, r.year) == (2 * LK_HOUR_T * 1000, (20.0 + 2 * LK_HOUR_T) * 1000)
    hc.count("LK", d1, 30.0)  # an entry after the restart recalculates 00:00: 30 t
    r = totals.add("LK.co2_kg", now + timedelta(minutes=1), math.nan)
    assert r.day == (30.0 + LK_HOUR_T) * 1000 and r.year == (50.0 + LK_HOUR_T) * 1000
