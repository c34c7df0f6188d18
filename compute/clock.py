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
_US = timedelta(microseconds=1)
# Why an anchor: scaled from 1970, a clock 133× faster (0.45-s minutes) already showed a
# scaled year past 9999 in 2030. Scaled from 2026 that takes until about 2086.
_ANCHOR_S = (datetime(2026, 1, 1, tzinfo=UTC) - _EPOCH).total_seconds()


@dataclass(frozen=True, slots=True)
class PlantClock:
    """Maps wall-clock UTC instants to calculation minutes and local periods."""

    minute_seconds: float = 60.0
    timezone: str = "Asia/Shanghai"

    @property
    def _minute_us(self) -> float:
        # The minute in µs: a whole number (exactly) unless the minute is no whole µs.
        us = self.minute_seconds * 1e6
        return float(round(us)) if abs(us - round(us)) < 1e-6 else us

    def minute_start(self, t: datetime) -> datetime:
        """Start (UTC) of the calculation minute containing `t`."""
        # In integer µs where the minute is a whole number of them (see _minutes).
        us, minute_us = (t - _EPOCH) // _US, self._minute_us
        if minute_us.is_integer():
            return _EPOCH + timedelta(microseconds=us // int(minute_us) * int(minute_us))
        return _EPOCH + timedelta(microseconds=math.floor(us / minute_us + 1e-9) * minute_us)

    def next_minute(self, t: datetime) -> datetime:
        """Start (UTC) of the calculation minute after the one containing `t`."""
        return self.minute_start(t) + timedelta(seconds=self.minute_seconds)

    @property
    def _anchors(self) -> tuple[int, int]:
        # (wall minute index, scaled µs since 1970) that coincide: the wall anchor on the
        # minute grid and the scaled one on a whole minute, so that scaled minutes, hours
        # and days begin on calculation minutes. At 60-s minutes both are the same instant.
        return (math.floor(_ANCHOR_S / self.minute_seconds + 1e-9),
                math.floor(_ANCHOR_S / 60.0) * 60 * 1_000_000)

    def _minutes(self, t: datetime) -> float:
        """Calculation minutes from the wall anchor to `t`: a whole number at a minute start."""
        # In integer µs, not float seconds: sped up 600× (0.1-s minutes), the float's
        # error of a few tenths of a µs put a plant midnight 0.2 ms into the day before.
        k0, _ = self._anchors
        minute_us = self._minute_us
        num = (t - _EPOCH) // _US - k0 * minute_us
        whole = round(num / minute_us)
        return float(whole) if abs(num - whole * minute_us) < 0.5 else num / minute_us

    def scaled_local(self, t: datetime) -> datetime:
        """The plant-local calendar time that the (possibly sped-up) clock shows at `t`."""
        _, scaled_us = self._anchors
        m = self._minutes(t)
        scaled = (_EPOCH + timedelta(microseconds=scaled_us + 60_000_000 * int(m))
                  if m.is_integer()
                  else _EPOCH + timedelta(microseconds=scaled_us + 60e6 * m))
        return scaled.astimezone(ZoneInfo(self.timezone))

    def wall_of(self, local: datetime) -> datetime:
        """The wall-clock UTC instant the (possibly sped-up) clock shows as `local` (aware)."""
        return self._wall(local)

    def date_start(self, d: date) -> datetime:
        """Start (UTC, wall clock) of the plant-local calendar date `d`."""
        # From the day's noon: far from either end of the day whatever the zone's offset.
        return self.day_start(self.wall_of(datetime.combine(d, time(12),
                                                            ZoneInfo(self.timezone))))

    def _wall(self, local: datetime) -> datetime:
        k0, scaled_us = self._anchors
        m = ((local - _EPOCH) // _US - scaled_us) / 60e6  # scaled minutes since the anchor
        if m.is_integer():  # a minute start: exactly on the wall clock's minute grid
            return _EPOCH + timedelta(microseconds=(k0 + int(m)) * self._minute_us)
        return _EPOCH + timedelta(microseconds=(k0 + m) * self._minute_us)

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
