"""Factor-method units' CO2 in the running totals: their CO2Today and CO2YTD, the site's.

A unit accounted by the factor method (a blast furnace's carbon balance, a lime kiln's
carbonates) has no minute CO2 (compute/minute.py): its CO2 comes with the closed hour. The
running totals that OPC UA, the HMI and InfluxDB show (a unit's co2_today_t and co2_ytd_t,
the site's, the live allowance use) are sums of minutes, so without this they left those
units out: a lime kiln showed 0 t today. Each closed hour of such a unit — and each
revision of one after an entry — changes the unit's running day and year sums of `co2_kg`
by the hour's CO2 less what that hour counted before (Totals.correct: applied with the
next minute, by the thread that adds it; a day already over keeps its sum, the year takes
it). The hours counted are kept for the plant year, ≤ 8 784 figures a unit.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable
from datetime import datetime

from compute.clock import PlantClock
from compute.totals import Totals
from model.records import PeriodRecords


class HourCO2:
    """Adds the closed hours' CO2 of hour-accounted units to their running totals."""

    def __init__(self, totals: Totals, clock: PlantClock, units: Collection[str]) -> None:
        self._totals = totals
        self._clock = clock
        self.units = frozenset(units)
        self._year: datetime | None = None
        self._counted: dict[tuple[str, datetime], float] = {}  # (unit, hour) → co2_t counted

    def take(self, records: PeriodRecords) -> None:
        """A closed (or recalculated) hour: its hour-accounted units' CO2 into the totals."""
        if records.level != "hour":
            return
        for unit in records.units:
            if unit.unit in self.units:
                self.count(unit.unit, records.t, unit.co2_t)

    def seed(self, unit: str, hours: Iterable[tuple[datetime, float | None]],
             now: datetime) -> None:
        """A restart: `unit`'s stored hours (start, co2_t) of the plant year before `now`,
        counted, and into the totals with one correction for the days before today and one
        for today (not one per hour: each would cost the minute thread a clock lookup)."""
        self._year = self._clock.year_start(now)
        d0 = self._clock.day_start(now)
        earlier, today, first = 0.0, 0.0, None
        for t, co2_t in hours:
            value = co2_t if co2_t is not None and math.isfinite(co2_t) else 0.0
            self._counted[(unit, t)] = value
            if t >= d0:
                today += value
            else:
                earlier += value
                first = first or t
        if first is not None:
            self._totals.correct(f"{unit}.co2_kg", first, earlier * 1000.0)
        self._totals.correct(f"{unit}.co2_kg", d0, today * 1000.0)

    def count(self, unit: str, t: datetime, co2_t: float | None) -> None:
        """`unit`'s hour starting at `t` has `co2_t` (None, NaN: no value, counts 0)."""
        year = self._clock.year_start(t)
        if self._year is None or year > self._year:
            self._year = year
            self._counted.clear()
        elif year < self._year:
            return  # a past year's hour: its running totals are over
        value = co2_t if co2_t is not None and math.isfinite(co2_t) else 0.0
        before = self._counted.get((unit, t), 0.0)
        self._counted[(unit, t)] = value
        self._totals.correct(f"{unit}.co2_kg", t, (value - before) * 1000.0)
