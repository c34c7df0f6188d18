"""Running hour / day / year totals per entity, reset at plant-clock period boundaries.

Quantities of many entities that are added together each minute (every source's CO2)
form a group: their sums are arrays, so a minute costs one boundary check and three
array additions for the whole group, not three time-zone conversions per entity.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import numpy.typing as npt

from compute.clock import PlantClock

F64 = npt.NDArray[np.float64]


@dataclass(slots=True)
class Running:
    """Sums of one quantity over the current hour, day and year."""

    hour_start: datetime | None = None
    day_start: datetime | None = None
    year_start: datetime | None = None
    hour: float = 0.0
    day: float = 0.0
    year: float = 0.0


@dataclass(frozen=True, slots=True)
class RunningArrays:
    """Sums of a group's quantities over the current hour, day and year (one per key)."""

    hour: F64
    day: F64
    year: F64


@dataclass(slots=True)
class _Group:
    keys: tuple[str, ...]
    # Period starts of each key's sums, as epoch seconds (NaN: never started).
    starts: F64  # (3, n): hour, day, year
    sums: F64  # (3, n)


@dataclass(slots=True)
class Totals:
    """Period totals of many quantities, keyed by name (e.g. "S1.co2_kg")."""

    clock: PlantClock
    _sums: dict[str, Running] = field(default_factory=dict)
    _groups: dict[tuple[str, ...], _Group] = field(default_factory=dict)
    _in_group: dict[str, tuple[_Group, int]] = field(default_factory=dict)
    _bounds_of: tuple[datetime, tuple[datetime, datetime, datetime]] | None = None
    # Corrections of stored minutes, made on the event loop, applied by whichever thread
    # adds the next minute: the sums are never written by two threads at once.
    _pending: deque[tuple[str, datetime, float]] = field(default_factory=deque)

    def _bounds(self, t: datetime) -> tuple[datetime, datetime, datetime]:
        """Hour, day and year start of `t`: worked out once per minute, shared by all keys."""
        if self._bounds_of is None or self._bounds_of[0] != t:
            c = self.clock
            self._bounds_of = (t, (c.hour_start(t), c.day_start(t), c.year_start(t)))
        return self._bounds_of[1]

    def seed(self, key: str, t: datetime, hour: float, day: float, year: float) -> None:
        """Start from sums already stored (after a restart) for the periods containing `t`."""
        h, d, y = self._bounds(t)
        member = self._in_group.get(key)
        if member is not None:
            g, i = member
            g.starts[:, i] = (h.timestamp(), d.timestamp(), y.timestamp())
            g.sums[:, i] = (hour, day, year)
            return
        self._sums[key] = Running(h, d, y, hour, day, year)

    def correct(self, key: str, t: datetime, delta: float) -> None:
        """Change the sums of the hour, day and year holding the minute `t` by `delta`
        (a stored minute corrected), those still running; applied with the next minute."""
        if math.isfinite(delta) and delta != 0.0:
            self._pending.append((key, t, delta))

    def _apply_corrections(self) -> None:
        while self._pending:
            key, t, delta = self._pending.popleft()
            c = self.clock
            starts = np.array([c.hour_start(t).timestamp(), c.day_start(t).timestamp(),
                               c.year_start(t).timestamp()])
            member = self._in_group.get(key)
            if member is not None:
                g, i = member
                g.sums[:, i] += np.where(g.starts[:, i] == starts, delta, 0.0)
                continue
            r = self._sums.get(key)
            if r is None:
                continue
            for j, (start, name) in enumerate(((r.hour_start, "hour"),
                                               (r.day_start, "day"), (r.year_start, "year"))):
                if start is not None and start.timestamp() == starts[j]:
                    setattr(r, name, getattr(r, name) + delta)

    def add(self, key: str, t: datetime, amount: float) -> Running:
        """Add `amount` for the minute starting at `t`; NaN adds nothing."""
        if self._pending:
            self._apply_corrections()
        r = self._sums.setdefault(key, Running())
        h, d, y = self._bounds(t)
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

    def add_array(self, keys: Sequence[str], t: datetime, amounts: F64) -> RunningArrays:
        """Add `amounts[i]` to key i for the minute starting at `t`; NaN adds nothing.

        The same sums as `add` key by key (the same additions in the same order, so
        bit for bit), as arrays. Returns copies of the sums after the addition.
        """
        if self._pending:
            self._apply_corrections()
        group = self._group(tuple(keys))
        h, d, y = self._bounds(t)
        now = np.array([h.timestamp(), d.timestamp(), y.timestamp()])[:, None]
        stale = group.starts != now
        group.sums[stale] = 0.0
        group.starts[stale] = np.broadcast_to(now, group.starts.shape)[stale]
        group.sums += np.where(np.isnan(amounts), 0.0, amounts)[None, :]
        return RunningArrays(group.sums[0].copy(), group.sums[1].copy(), group.sums[2].copy())

    def _group(self, keys: tuple[str, ...]) -> _Group:
        group = self._groups.get(keys)
        if group is not None:
            return group
        n = len(keys)
        group = _Group(keys, np.full((3, n), np.nan), np.zeros((3, n)))
        for i, key in enumerate(keys):  # sums seeded (or added) key by key before
            r = self._sums.pop(key, None)
            if r is not None and r.hour_start is not None:
                assert r.day_start is not None and r.year_start is not None
                group.starts[:, i] = (r.hour_start.timestamp(), r.day_start.timestamp(),
                                      r.year_start.timestamp())
                group.sums[:, i] = (r.hour, r.day, r.year)
            self._in_group[key] = (group, i)
        self._groups[keys] = group
        return group

    def get(self, key: str) -> Running:
        """The sums of one key as they stand (zeros for a key never added or seeded)."""
        member = self._in_group.get(key)
        if member is None:
            return self._sums.get(key, Running())
        g, i = member
        return Running(None, None, None, *g.sums[:, i].tolist())
