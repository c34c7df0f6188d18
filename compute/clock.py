"""The plant clock: minute boundaries in UTC, days and years in plant local time.

`minute_seconds` may shorten the minute for tests and demos. Hours are 60 such
minutes and days 24 such hours: the clock runs `60 / minute_seconds` times faster
than the wall clock, from an anchor in 2026 (`_ANCHOR`), and local calendar periods
are taken of that scaled time. At 60-s minutes the scaled time is the wall clock itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Why an anchor: scaled from 1970, a clock 133× faster (0.45-s minutes) already showed a
# scaled year past 9999 in 2030. Scaled from 2026 that takes until about 2086.
_ANCHOR_S = (datetime(2026, 1, 1, tzinfo=UTC) - _EPOCH).total_seconds()


@dataclass(frozen=True, slots=True)
class PlantClock:
    """Maps wall-clock UTC instants to calculation minutes and local periods."""

    minute_seconds: float = 60.0
    timezone: str = "Asia/Shanghai"

    @property
    def _speed(self) -> float:
        return 60.0 / self.minute_seconds

    def minute_start(self, t: datetime) -> datetime:
        """Start (UTC) of the calculation minute containing `t`."""
        s = (t - _EPOCH).total_seconds()
        return _EPOCH + timedelta(seconds=math.floor(s / self.minute_seconds + 1e-9)
                                  * self.minute_seconds)

    def next_minute(self, t: datetime) -> datetime:
        """Start (UTC) of the calculation minute after the one containing `t`."""
        return self.minute_start(t) + timedelta(seconds=self.minute_seconds)

    @property
    def _anchors(self) -> tuple[float, float]:
        # (wall, scaled) seconds since 1970 that coincide: the wall anchor on the minute
        # grid and the scaled one on a whole minute, so that scaled minutes, hours and days
        # begin on calculation minutes. At 60-s minutes both are the same instant.
        wall = math.floor(_ANCHOR_S / self.minute_seconds + 1e-9) * self.minute_seconds
        return wall, math.floor(_ANCHOR_S / 60.0) * 60.0

    def scaled_local(self, t: datetime) -> datetime:
        """The plant-local calendar time that the (possibly sped-up) clock shows at `t`."""
        wall, scaled = self._anchors
        s = scaled + ((t - _EPOCH).total_seconds() - wall) * self._speed
        return (_EPOCH + timedelta(seconds=s)).astimezone(ZoneInfo(self.timezone))

    def wall_of(self, local: datetime) -> datetime:
        """The wall-clock UTC instant the (possibly sped-up) clock shows as `local` (aware)."""
        return self._wall(local)

    def date_start(self, d: date) -> datetime:
        """Start (UTC, wall clock) of the plant-local calendar date `d`."""
        # From the day's noon: far from either end of the day whatever the zone's offset.
        return self.day_start(self.wall_of(datetime.combine(d, time(12),
                                                            ZoneInfo(self.timezone))))

    def _wall(self, local: datetime) -> datetime:
        wall, scaled = self._anchors
        s = wall + ((local - _EPOCH).total_seconds() - scaled) / self._speed
        return _EPOCH + timedelta(seconds=s)

    def hour_start(self, t: datetime) -> datetime:
        """Start (UTC, wall clock) of the plant hour containing `t`."""
        loc = self.scaled_local(t)
        return self._wall(loc.replace(minute=0, second=0, microsecond=0))

    def day_start(self, t: datetime) -> datetime:
        """Start (UTC, wall clock) of the plant-local day containing `t`."""
        loc = self.scaled_local(t)
        return self._wall(loc.replace(hour=0, minute=0, second=0, microsecond=0))

    def year_start(self, t: datetime) -> datetime:
        """Start (UTC, wall clock) of the plant-local year containing `t`."""
        loc = self.scaled_local(t)
        return self._wall(loc.replace(month=1, day=1, hour=0, minute=0, second=0,
                                      microsecond=0))

    def next_hour(self, t: datetime) -> datetime:
        """Start (UTC, wall clock) of the plant hour after the one containing `t`."""
        return self.hour_start(self.hour_start(t) + timedelta(seconds=60 * self.minute_seconds))

    def next_day(self, t: datetime) -> datetime:
        """Start (UTC, wall clock) of the plant-local day after the one containing `t`."""
        return self.day_start(self.day_start(t) + timedelta(seconds=36 * 60 * self.minute_seconds))

    def year_bounds(self, t: datetime) -> tuple[datetime, datetime]:
        """Start and end (UTC, wall clock) of the plant-local year containing `t`."""
        loc = self.scaled_local(t)
        start = loc.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)
        return self._wall(start), self._wall(start.replace(year=start.year + 1))

    def month_bounds(self, t: datetime) -> tuple[datetime, datetime]:
        """Start and end (UTC, wall clock) of the plant-local month containing `t`."""
        loc = self.scaled_local(t)
        start = loc.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
        return self._wall(start), self._wall(end)

    def hours_in(self, start: datetime, end: datetime) -> int:
        """The plant hours from `start` to `end` (both on plant-hour boundaries).

        Hours are counted on the UTC time line, so a plant day has 23, 24 or 25 of them
        where the zone has daylight saving time (Europe/Berlin 2026-10-25: 25).
        """
        return round((end - start).total_seconds() / (60 * self.minute_seconds))

    def year_fraction(self, t: datetime) -> float:
        """Fraction of the plant-local year that has passed at `t` (for pro-rating)."""
        loc = self.scaled_local(t)
        start = loc.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)
        end = start.replace(year=start.year + 1)
        return (loc - start).total_seconds() / (end - start).total_seconds()
