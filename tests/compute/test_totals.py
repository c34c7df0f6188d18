"""Running totals corrected after a stored minute was corrected (issue 15)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from compute.clock import PlantClock
from compute.totals import Totals

# 2026-03-02 10:30 in Shanghai (UTC+8): hour from 10:00, day from 00:00 local, year 2026.
NOW = datetime(2026, 3, 2, 2, 30, tzinfo=UTC)
MIN = timedelta(minutes=1)


def totals() -> Totals:
    t = Totals(PlantClock(60.0, "Asia/Shanghai"))
    t.seed("U1.co2_kg", NOW, 10.0, 100.0, 1000.0)
    t.seed("S1.co2_kg", NOW, 20.0, 200.0, 2000.0)
    return t


@pytest.mark.parametrize("grouped", [False, True], ids=["key", "group"])
def test_a_correction_moves_the_periods_that_hold_its_minute(grouped: bool) -> None:
    t = totals()

    def add(when: datetime, amount: float) -> tuple[float, float, float]:
        if grouped:
            a = t.add_array(["S1.co2_kg"], when, np.array([amount]))
            return float(a.hour[0]), float(a.day[0]), float(a.year[0])
        r = t.add("U1.co2_kg", when, amount)
        return r.hour, r.day, r.year

    base = (20.0, 200.0, 2000.0) if grouped else (10.0, 100.0, 1000.0)
    assert add(NOW, 5.0) == (base[0] + 5, base[1] + 5, base[2] + 5)
    key = "S1.co2_kg" if grouped else "U1.co2_kg"
    # −2 kg in a minute of this hour (10:05 local): hour, day and year
    t.correct(key, NOW - 25 * MIN, -2.0)
    # +7 kg in a minute of yesterday (2026-03-01 23:00 local): the year only
    t.correct(key, NOW - timedelta(hours=11, minutes=30), 7.0)
    # +100 kg in a minute of last year: nothing that still runs
    t.correct(key, datetime(2025, 12, 31, 12, 0, tzinfo=UTC), 100.0)
    # a NaN delta (a minute without mass before and after): nothing
    t.correct(key, NOW, float("nan"))
    # the next minute adds 1 kg: hour 5 − 2 + 1, day 5 − 2 + 1, year 5 − 2 + 7 + 1
    assert add(NOW + MIN, 1.0) == (base[0] + 4, base[1] + 4, base[2] + 11)


def test_a_correction_of_an_hour_that_closed_meanwhile_leaves_the_new_hour_alone() -> None:
    t = totals()
    t.add("U1.co2_kg", NOW, 5.0)
    t.correct("U1.co2_kg", NOW, 3.0)  # 10:30 local, applied with the 11:00 minute
    r = t.add("U1.co2_kg", NOW + 30 * MIN, 1.0)  # 11:00 local: a new hour
    assert (r.hour, r.day, r.year) == (1.0, 109.0, 1009.0)
