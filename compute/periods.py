"""Groups minute results into plant hours and days and rolls them up (compute/rollup.py).

Used by `carbonscada recalc --level hour|day`; minutes missing from an hour count as
invalid (flag B), so a partial hour or day at either end of the data is invalid.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime

import numpy as np

from compute import rollup
from compute.clock import PlantClock
from compute.rollup import PeriodResult
from server.records import MinuteResult

MINUTES_PER_HOUR = 60
HOURS_PER_DAY = 24


def hours(clock: PlantClock, sources: tuple[str, ...], minutes: Iterable[MinuteResult], *,
          min_valid_minutes: int = rollup.HOUR_MIN_VALID_MINUTES,
          rho_kg_m3: float = rollup.CO2_DENSITY_KG_M3,
          ) -> Iterator[tuple[rollup.HourArrays, tuple[PeriodResult, ...]]]:
    """Hour arrays and records, in order, from minute results in time order."""
    n = len(sources)
    current: datetime | None = None
    conc = flow = np.empty(0)
    flags = np.empty(0, np.uint8)

    def close(t: datetime) -> tuple[rollup.HourArrays, tuple[PeriodResult, ...]]:
        h = rollup.rollup_hour(conc, flow, flags, min_valid=min_valid_minutes,
                               rho_kg_m3=rho_kg_m3)
        return h, rollup.hour_records(sources, t, h)

    for m in minutes:
        start = clock.hour_start(m.t)
        if start != current:
            if current is not None:
                yield close(current)
            current = start
            # A minute that never arrives stays NaN with flag 0: invalid, flagged B.
            conc = np.full((n, MINUTES_PER_HOUR), np.nan)
            flow = np.full((n, MINUTES_PER_HOUR), np.nan)
            flags = np.zeros((n, MINUTES_PER_HOUR), np.uint8)
        k = round((m.t - start).total_seconds() / clock.minute_seconds)
        for i, s in enumerate(m.sources):
            conc[i, k] = s.co2_dry_pct
            flow[i, k] = s.flow_std_dry_m3_h
            flags[i, k] = int(s.flag)
    if current is not None:
        yield close(current)


def days(clock: PlantClock, sources: tuple[str, ...],
         hour_results: Iterable[tuple[rollup.HourArrays, tuple[PeriodResult, ...]]], *,
         min_valid_hours: int = rollup.DAY_MIN_VALID_HOURS) -> Iterator[tuple[PeriodResult, ...]]:
    """Day records, in order, from hour results in time order."""
    n = len(sources)
    current: datetime | None = None
    fields = ("co2_dry_pct", "flow_std_dry_m3_h", "co2_rate_kg_h", "co2_t")
    arrays: dict[str, np.ndarray] = {}
    n_valid = np.zeros(0, np.int64)
    flags = np.zeros(0, np.uint8)

    def close(t: datetime) -> tuple[PeriodResult, ...]:
        h = rollup.HourArrays(arrays["co2_dry_pct"], arrays["flow_std_dry_m3_h"],
                              arrays["co2_rate_kg_h"], arrays["co2_t"], n_valid, flags)
        return rollup.day_records(sources, t, rollup.rollup_day(h, min_valid=min_valid_hours))

    for h, recs in hour_results:
        start = clock.day_start(recs[0].t)
        if start != current:
            if current is not None:
                yield close(current)
            current = start
            arrays = {f: np.full((n, HOURS_PER_DAY), np.nan) for f in fields}
            n_valid = np.zeros((n, HOURS_PER_DAY), np.int64)
            flags = np.zeros((n, HOURS_PER_DAY), np.uint8)
        k = round((recs[0].t - start).total_seconds() / (clock.minute_seconds * 60))
        for f in fields:
            arrays[f][:, k] = getattr(h, f)
        n_valid[:, k] = h.n_valid
        flags[:, k] = h.flag
    if current is not None:
        yield close(current)
