"""Running hour / day / year totals per entity, reset at plant-clock period boundaries."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime

from compute.clock import PlantClock


@dataclass(slots=True)
class Running:
    """Sums of one quantity over the current hour, day and year."""

    hour_start: datetime | None = None
    day_start: datetime | None = None
    year_start: datetime | None = None
    hour: float = 0.0
    day: float = 0.0
    year: float = 0.0


@dataclass(slots=True)
class Totals:
    """Period totals of many quantities, keyed by name (e.g. "S1.co2_kg")."""

    clock: PlantClock
    _sums: dict[str, Running] = field(default_factory=dict)

    def seed(self, key: str, t: datetime, hour: float, day: float, year: float) -> None:
        """Start from sums already stored (after a restart) for the periods containing `t`."""
        self._sums[key] = Running(self.clock.hour_start(t), self.clock.day_start(t),
                                  self.clock.year_start(t), hour, day, year)

    def add(self, key: str, t: datetime, amount: float) -> Running:
        """Add `amount` for the minute starting at `t`; NaN adds nothing."""
        r = self._sums.setdefault(key, Running())
        h, d, y = self.clock.hour_start(t), self.clock.day_start(t), self.clock.year_start(t)
        if r.year_start != y:
            r.year_start, r.year = y, 0.0
        if r.day_start != d:
            r.day_start, r.day = d, 0.0
        if r.hour_start != h:
            r.hour_start, r.hour = h, 0.0
        if not math.isnan(amount):
            r.hour += amount
            r.day += amount
            r.year += amount
        return r
