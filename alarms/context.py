"""What every rule shares in one plant minute: its records, indexed, the units stopped, the
plant-local month, the allowance measures and the minute's index on the plant clock."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from functools import cached_property

import numpy as np
import numpy.typing as npt

from alarms.config import Target, target_kind
from alarms.spec import check_target, target_id
from compute import derived
from compute.clock import PlantClock
from compute.config import AllowanceConfig
from model.flags import DataFlag
from model.records import (
    MinuteResult,
    PeriodRecords,
    SiteMinute,
    SourceMinute,
    TagMinute,
    UnitMinute,
)

F64 = npt.NDArray[np.float64]

NONE = -(1 << 62)
"""'No time' for the delay timers (minute indices are ≥ 0)."""

ALLOWANCE_MEASURES = ("used_pct", "prorated_pct", "forecast_pct", "forecast_shortfall_t",
                      "shortfall_cost_cny")
MIN_PRORATED_FRACTION = 1.0 / 366.0
"""Before one day of the year has passed, the pro-rated allowance is too small to compare."""

# Codes of a closed hour for the capture rate.
HOUR_UNKNOWN, HOUR_VALID, HOUR_INVALID, HOUR_STOPPED = 0, 1, 2, 3


Record = SourceMinute | UnitMinute | TagMinute | SiteMinute


def _find_record(result: MinuteResult, kind: str, ident: str) -> Record | None:
    if kind == "source":
        return next((s for s in result.sources if s.source == ident), None)
    if kind == "unit":
        return next((u for u in result.units if u.unit == ident), None)
    if kind == "tag":
        return next((g for g in result.tags if g.tag == ident), None)
    return result.site


def target_value(result: MinuteResult, target: Target) -> float:
    """The watched value in one minute's results; NaN if the source, unit or tag is absent."""
    check_target(target)
    record = _find_record(result, target_kind(target), target_id(target))
    if record is None:
        return math.nan
    return float(getattr(record, target.field))


def good_record(record: Record | None) -> bool:
    """Whether a record's values are good: a valid source / unit minute, a tag minute with
    valid samples (flag N), or the site."""
    if record is None:
        return False
    if isinstance(record, TagMinute):
        return record.flag is DataFlag.N and record.count > 0
    if isinstance(record, SiteMinute):
        return True
    return record.valid


def intensity_pair_ok(co2: float, output: float, co2_flag: DataFlag,
                      output_flag: DataFlag) -> bool:
    """Whether a minute's (CO2, output) counts towards an intensity: both finite, both N.

    An intensity is a ratio: a minute whose output (or CO2) is missing or invalid is left
    out of numerator and denominator alike, never half counted.
    """
    return (math.isfinite(co2) and math.isfinite(output) and co2_flag is DataFlag.N
            and output_flag is DataFlag.N)


def minute_index(t: datetime, minute_seconds: float) -> int:
    """The plant-clock minute containing `t`, counted from the Unix epoch."""
    # Within 1e-4 of a minute of its start is that minute: at 0.1-s minutes the float
    # quotient of a minute start can fall 4e-6 short of the whole number.
    k = t.timestamp() / minute_seconds
    return round(k) if abs(k - round(k)) < 1e-4 else math.floor(k)


def stopped_units(result: MinuteResult) -> set[str]:
    """Units stopped this minute: their unit record or one of their sources carries flag F."""
    out = {u.unit for u in result.units if u.flag is DataFlag.F}
    cols = result.source_columns
    if cols is not None:  # no record per source for this
        out.update(cols.units[i] for i in np.flatnonzero(cols.flag == DataFlag.F).tolist())
    else:
        out.update(s.unit for s in result.sources if s.flag is DataFlag.F)
    return out


def month_key(clock: PlantClock, t: datetime) -> int:
    """The plant-local month of `t` as year · 12 + month − 1."""
    loc = clock.scaled_local(t)
    return loc.year * 12 + loc.month - 1


def allowance_measures(clock: PlantClock, t: datetime, ytd_t: float,
                       allowance: AllowanceConfig, trailing_30d_t: float) -> F64:
    """The allowance measures (ALLOWANCE_MEASURES order) at `t`; NaN where unknown.

    The forecast needs the trailing 30-day emissions (from the hourly allowance
    position of the period stage); until it is known the forecast measures are NaN.
    """
    frac, days_left = derived.year_progress(clock, t)
    pos = derived.allowance_position(allowance.annual_t, ytd_t, trailing_30d_t,
                                     year_fraction=frac, days_left=days_left,
                                     carbon_price_cny_t=allowance.carbon_price_cny_t)
    annual = allowance.annual_t
    prorated = (pos.ytd_t / pos.prorated_t * 100.0
                if frac >= MIN_PRORATED_FRACTION and pos.prorated_t > 0 else math.nan)
    forecast = pos.forecast_year_end_t / annual * 100.0 if annual > 0 else math.nan
    return np.array([pos.used_pct, prorated, forecast, pos.forecast_shortfall_t,
                     pos.shortfall_cost_cny], np.float64)


def hour_codes(records: PeriodRecords) -> dict[str, int]:
    """Per source of a closed hour: HOUR_VALID, HOUR_INVALID or HOUR_STOPPED (flag F)."""
    return {s.source: HOUR_STOPPED if s.flag is DataFlag.F else
            HOUR_VALID if s.valid else HOUR_INVALID for s in records.sources}


class MinuteContext:
    """One minute's records, indexed, and what every scalar rule shares; built once a minute."""

    def __init__(self, result: MinuteResult, clock: PlantClock, allowance: AllowanceConfig,
                 trailing_30d_t: float = math.nan) -> None:
        self.result = result
        self.t = result.t
        self.m = minute_index(result.t, clock.minute_seconds)
        self.stopped = stopped_units(result)
        self.month = month_key(clock, result.t)
        self._clock = clock
        self._allowance = allowance
        self._trailing = trailing_30d_t

    @cached_property
    def sources(self) -> dict[str, SourceMinute]:
        """Source records by id."""
        return {s.source: s for s in self.result.sources}

    @cached_property
    def units(self) -> dict[str, UnitMinute]:
        """Unit records by id."""
        return {u.unit: u for u in self.result.units}

    @cached_property
    def tags(self) -> dict[str, TagMinute]:
        """Tag records by id."""
        return {g.tag: g for g in self.result.tags}

    @cached_property
    def allowance(self) -> dict[str, float]:
        """The allowance measures by name, at the end of this minute."""
        end = self.t + timedelta(seconds=self._clock.minute_seconds)
        values = allowance_measures(self._clock, end, self.result.site.co2_ytd_t,
                                    self._allowance, self._trailing)
        return dict(zip(ALLOWANCE_MEASURES, values.tolist(), strict=True))

    @cached_property
    def site_co2_output(self) -> tuple[float, float]:
        """Σ CO2 (t) and Σ output (MWh) over the units with both values valid this minute."""
        co2_kg = out = 0.0
        for u in self.result.units:
            if intensity_pair_ok(u.co2_kg, u.output_mwh, u.flag, u.output_flag):
                co2_kg += u.co2_kg
                out += u.output_mwh
        return co2_kg / 1000.0, out

    def record(self, kind: str, ident: str) -> Record | None:
        """The record a target names, or None if it is absent this minute."""
        if kind == "source":
            return self.sources.get(ident)
        if kind == "unit":
            return self.units.get(ident)
        if kind == "tag":
            return self.tags.get(ident)
        return self.result.site
