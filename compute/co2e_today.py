"""A unit's CO2 equivalent of the plant day so far (OPC UA CO2eToday, the live co2e_today_t).

CO2eToday = CO2Today + Σ over the day's closed hours of the unit of (co2e_t − co2_t).

The other gases (CH4, N2O … · GWP, compute/gases.py) are known only with a closed hour,
while CO2Today is the running Σ of the minutes' CO2. Adding the hours' difference, not
their co2e_t, keeps CO2eToday on the same basis as CO2Today (a factor unit's CO2Today is
its closed hours' CO2, compute/hour_co2.py) and never below it. Kept per unit and closed
hour (at most 24 figures a unit), so a minute costs one dictionary look-up per unit and no
loop; an hour sent again replaces its figure.
"""

from __future__ import annotations

import math
from datetime import datetime

from compute.clock import PlantClock
from model.records import PeriodRecords


class CO2eToday:
    """Σ (co2e_t − co2_t) of each unit's closed hours of the current plant day."""

    def __init__(self, clock: PlantClock) -> None:
        self._clock = clock
        self._day: tuple[datetime, datetime] | None = None  # [start, end) of the plant day
        self._hours: dict[str, dict[datetime, float]] = {}  # unit → hour start → difference
        self._extra_t: dict[str, float] = {}  # unit → Σ of its hours' differences

    def add_hour(self, records: PeriodRecords) -> bool:
        """Take a closed hour's units; False (nothing taken) for a day or a past day's hour."""
        if records.level != "hour" or not self._today(records.t):
            return False
        for unit in records.units:
            self._take(unit.unit, records.t, unit.co2e_t - unit.co2_t)
        return True

    def seed_hour(self, unit: str, t: datetime, co2_t: float | None,
                  co2e_t: float | None) -> None:
        """Take a stored hour of `unit` starting at `t` (after a restart; None: NULL)."""
        if self._today(t):
            self._take(unit, t, (math.nan if co2e_t is None else co2e_t)
                       - (math.nan if co2_t is None else co2_t))

    def _today(self, t: datetime) -> bool:
        """Whether an hour starting at `t` counts, starting its day's sums if it is newer."""
        start = self._clock.day_start(t)
        if self._day is not None and start < self._day[0]:
            return False  # an hour of a day already over: it is no longer "today"
        if self._day is None or start != self._day[0]:
            self._day = (start, self._clock.next_day(start))
            self._hours.clear()
            self._extra_t.clear()
        return True

    def _take(self, unit: str, t: datetime, diff: float) -> None:
        # An hour without a CO2 or CO2e figure adds no other gases (as a NaN minute adds
        # nothing to CO2Today); an hour taken again replaces its figure.
        hours = self._hours.setdefault(unit, {})
        hours[t] = diff if math.isfinite(diff) else 0.0
        self._extra_t[unit] = math.fsum(hours.values())

    def covers(self, t: datetime) -> bool:
        """Whether the minute starting at `t` is in the day the figures are of."""
        return self._day is not None and self._day[0] <= t < self._day[1]

    def extra_t(self, unit: str, t: datetime) -> float:
        """Σ (co2e_t − co2_t) of `unit`'s closed hours of the plant day holding minute `t`."""
        if not self.covers(t):
            return 0.0  # a new day (or none closed yet): CO2eToday starts again at CO2Today
        return self._extra_t.get(unit, 0.0)

    def today_t(self, unit: str, t: datetime, co2_today_t: float) -> float:
        """CO2eToday of `unit` at the minute `t` whose CO2Today is `co2_today_t`."""
        return co2_today_t + self.extra_t(unit, t)
