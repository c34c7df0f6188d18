"""Carbon performance of a year from the historian: the stored unit days summed per unit
and quarter in SQL (one scan, off the event loop), handed to compute/performance.py.

Only closed, stored days count: the year to date is the days before today (plant time),
a past year all its days. The baseline year's sums come from the plant file, or with
`baseline.from_history` from the same table for that year.
"""

from __future__ import annotations

import asyncio
import sqlite3
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
    try:
        db = sqlite3.connect(path, timeout=5.0)
    except sqlite3.Error as exc:
        raise PerformanceFileError(f"historian {path}: cannot open: {exc}") from None
    try:
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
    except sqlite3.Error as exc:
        raise PerformanceFileError(f"historian {path}: {exc}") from None
    finally:
        db.close()
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
        now = self.now()
        today = self.today(now)
        year = today.year if year is None else year
        if not MIN_YEAR <= year <= MAX_YEAR:
            raise InvalidValueError(f"year must be from {MIN_YEAR} to {MAX_YEAR}, not {year}")
        as_of = today if as_of is None else min(as_of, today)
        as_of = min(max(as_of, date(year, 1, 1)), date(year + 1, 1, 1))
        column = _COLUMN[self.perf.co2_basis]
        bounds = []
        for q in (1, 2, 3, 4):
            a, b = quarter_bounds(year, q)
            a, b = min(a, as_of), min(b, as_of)
            bounds.append((self.clock.date_start(a), self.clock.date_start(b)))
        base = self.perf.baseline
        if base is not None and base.from_history:
            bounds.append((self.clock.date_start(date(base.year, 1, 1)),
                           self.clock.date_start(date(base.year + 1, 1, 1))))
        sums = await asyncio.to_thread(unit_sums, self.path, column, bounds)
        quarters = {u: s[:4] for u, s in sums.items()}
        history = {u: s[4] for u, s in sums.items()} if len(bounds) == 5 else None
        return performance(self.perf, self.units, year, as_of, quarters,
                           baseline_sums(self.perf, history))

    async def quarter_ends(self, year: int) -> list[Performance]:
        """The performance of `year` at the end of each of its quarters begun by today (the
        current one as of today): its quarter-to-date values are the quarters'."""
        today = self.today()
        out: list[Performance] = []
        for q in (1, 2, 3, 4):
            a, b = quarter_bounds(year, q)
            if a >= today and out:
                break
            out.append(await self.performance(year, b))
        return out

    async def performance_json(self, year: int | None = None) -> dict[str, Any]:
        """`performance` as JSON."""
        return performance_json(await self.performance(year))
