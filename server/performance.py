"""Carbon performance of a year from the historian: the stored unit days summed per unit
and quarter in SQL (one scan, off the event loop, on a read-only connection; one scan too
for the year at each quarter's end), handed to compute/performance.py.

Only closed, stored days count: the year to date is the days before today (plant time),
a past year all its days. The baseline year's sums come from the plant file, or with
`baseline.from_history` from the same table for that year.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from compute.clock import PlantClock
from compute.performance import (
    Performance,
    PerformanceConfig,
    Sums,
    baseline_sums,
    performance,
    performance_json,
    quarter_bounds,
)
from model.errors import CarbonScadaError, InvalidValueError
from model.times import MAX_YEAR, MIN_YEAR
from server.historian import read_only

# The CO2 of a stored day: the accounted one (its unit's basis; rows stored before it was
# kept have none: their CEMS figure, the only basis then), or one method's.
_COLUMN = {"accounted": "COALESCE(co2_t, co2_cems_t)", "cems": "co2_cems_t",
           "factor": "co2_factor_t"}
# A day's output: MWh of a power unit, t of a product unit (the other column is NULL).
_OUTPUT = "COALESCE(output_mwh, output_t)"
_OLD_COLUMNS = {"COALESCE(co2_t, co2_cems_t)": "co2_cems_t", _OUTPUT: "output_mwh"}


class PerformanceFileError(CarbonScadaError):
    """The historian cannot be read for the performance; names the file."""



def unit_sums(path: str | Path, column: str, bounds: Sequence[tuple[datetime, datetime]],
              ) -> dict[str, list[Sums]]:
    """Per unit, Σ `column` and Σ output (MWh or t) of its stored days in each of `bounds`,
    summed by SQLite in one scan (NULL, i.e. no value, counts nothing)."""
    if not bounds:
        return {}
    ms = [(round(a.timestamp() * 1000), round(b.timestamp() * 1000)) for a, b in bounds]
    args = [x for a, b in ms for x in (a, b, a, b)]
    if not Path(path).is_file():
        return {}  # no historian yet: nothing stored
    with read_only(path, PerformanceFileError) as db:
        have = {r[1] for r in db.execute("PRAGMA table_info(unit_day)")}
        if not have:
            return {}  # a new historian: nothing stored yet
        exprs = [c if "co2_t" in have and "output_t" in have else _OLD_COLUMNS.get(c, c)
                 for c in (column, _OUTPUT)]  # a file the server has not opened since
        parts = ", ".join(f"TOTAL(CASE WHEN t_ms >= ? AND t_ms < ? THEN {c} END)"
                          for _ in ms for c in exprs)
        rows = db.execute(
            f"SELECT unit, {parts} FROM unit_day WHERE t_ms >= ? AND t_ms < ? GROUP BY unit",
            (*args, min(a for a, _ in ms), max(b for _, b in ms))).fetchall()
    return {str(r[0]): [Sums(float(r[1 + 2 * i]), float(r[2 + 2 * i])) for i in range(len(ms))]
            for r in rows}



class PerformanceKeeper:
    """Computes a year's carbon performance from the plant file and the historian."""

    def __init__(self, config: Any, path: str | Path | None = None) -> None:
        self.config = config
        self.perf: PerformanceConfig = config.performance
        self.clock = PlantClock(config.clock.minute_seconds, config.site.timezone)
        self.path = Path(path if path is not None else config.historian.path)
        self.units = {u.id: u.output.unit for u in config.units}  # id → MWh or t

    def now(self) -> datetime:
        """The current time (UTC); tests may replace it."""
        return datetime.now(UTC)

    def today(self, now: datetime | None = None) -> date:
        """The plant-local date at `now`."""
        return self.clock.scaled_local(self.now() if now is None else now).date()

    async def performance(self, year: int | None = None,
                          as_of: date | None = None) -> Performance:
        """The performance of `year` (default: the current plant year) with the days before
        `as_of` counted (default and at most: today, plant time)."""
        return (await self._performances(year, [as_of]))[0]

    async def _performances(self, year: int | None,
                            as_ofs: Sequence[date | None]) -> list[Performance]:
        """`performance(year, as_of)` of each of `as_ofs`, the sums of all of them read in
        one scan of the stored unit days."""
        now = self.now()
        today = self.today(now)
        year = today.year if year is None else year
        if not MIN_YEAR <= year <= MAX_YEAR:
            raise InvalidValueError(f"year must be from {MIN_YEAR} to {MAX_YEAR}, not {year}")
        column = _COLUMN[self.perf.co2_basis]
        base = self.perf.baseline
        history = base is not None and base.from_history
        days: list[date] = []
        bounds: list[tuple[datetime, datetime]] = []  # every as_of's four quarters, in turn
        for as_of in as_ofs:
            as_of = today if as_of is None else min(as_of, today)
            as_of = min(max(as_of, date(year, 1, 1)), date(year + 1, 1, 1))
            days.append(as_of)
            for q in (1, 2, 3, 4):
                a, b = quarter_bounds(year, q)
                a, b = min(a, as_of), min(b, as_of)
                bounds.append((self.clock.date_start(a), self.clock.date_start(b)))
        if history and base is not None:
            bounds.append((self.clock.date_start(date(base.year, 1, 1)),
                           self.clock.date_start(date(base.year + 1, 1, 1))))
        # One scan for all: a unit's sums of each span are those a scan of the as_of's own
        # spans gives (a unit with no day in them but in another's: zeros, as one missing).
        sums = await asyncio.to_thread(unit_sums, self.path, column, bounds)
        baseline = baseline_sums(self.perf, {u: s[-1] for u, s in sums.items()}
                                 if history else None)
        return [performance(self.perf, self.units, year, as_of,
                            {u: s[4 * i:4 * i + 4] for u, s in sums.items()}, baseline)
                for i, as_of in enumerate(days)]

    async def quarter_ends(self, year: int) -> list[Performance]:
        """The performance of `year` at the end of each of its quarters begun by today (the
        current one as of today): its quarter-to-date values are the quarters'."""
        today = self.today()
        ends: list[date | None] = []
        for q in (1, 2, 3, 4):
            a, b = quarter_bounds(year, q)
            if a >= today and ends:
                break
            ends.append(b)
        return await self._performances(year, ends)

    async def performance_json(self, year: int | None = None) -> dict[str, Any]:
        """`performance` as JSON."""
        return performance_json(await self.performance(year))
