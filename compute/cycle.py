"""One minute cycle: a window of raw samples → the minute's typed records, with totals.

The live server and `carbonscada recalc` both run this, so a recalculation of what
the server saw gives the same numbers.
"""

from __future__ import annotations

import dataclasses
import math
from datetime import datetime

import numpy as np
import numpy.typing as npt

from compute import kernels
from compute.clock import PlantClock
from compute.entries import OUT_OF_CONTROL_FLAG, Records
from compute.minute import MinuteArrays, MinuteCalculator
from compute.plan import CalculationPlan
from compute.tagstore import Window
from compute.totals import Totals
from model.flags import DataFlag
from model.records import (
    MinuteResult,
    RawWindow,
    SiteMinute,
    SourceColumns,
    TagColumns,
    UnitMinute,
)

F64 = npt.NDArray[np.float64]
_FLAGS = {int(f): f for f in DataFlag}
_RULES = tuple(kernels.SUBSTITUTION_RULES)

# Totals keys (after "<unit>.") of the sums over a unit's valid minutes only: the numerator
# and denominator of its running intensity. A restart seeds them from the stored minutes
# whose `valid` is 1 (server/runtime.py, Historian.period_sums(valid_only=True)).
PAIRED_CO2 = "co2_valid_kg"
PAIRED_OUTPUT = "output_valid_mwh"


def raw_window(tag_ids: tuple[str, ...], w: Window) -> RawWindow:
    """The samples of a padded window, concatenated tag after tag."""
    width = w.values.shape[1]
    if len(w.counts) and bool((w.counts == width).all()):
        # Every tag has as many samples as the widest (every device polled alike, the
        # usual minute): the padded rows are the concatenation already, no copy.
        return RawWindow(tag_ids, w.counts.copy(), w.times.reshape(-1),
                         w.values.reshape(-1), w.flags.reshape(-1))
    keep = np.arange(width)[None, :] < w.counts[:, None]
    return RawWindow(tag_ids, w.counts.copy(), w.times[keep], w.values[keep], w.flags[keep])


def padded(raw: RawWindow) -> Window:
    """The window a raw window was cut from (the inverse of `raw_window`)."""
    n = len(raw.tags)
    width = max(int(raw.counts.max(initial=0)), 1)
    values = np.full((n, width), np.nan)
    flags = np.zeros((n, width), np.uint8)
    times = np.zeros((n, width), np.float64)
    keep = np.arange(width)[None, :] < raw.counts[:, None]
    values[keep], flags[keep], times[keep] = raw.values, raw.flags, raw.times
    return Window(values, flags, times, raw.counts.astype(np.int64))


def _no_intervals() -> tuple[npt.NDArray[np.int64], F64, F64]:
    return np.zeros(0, np.int64), np.zeros(0), np.zeros(0)


class MinuteCycle:
    """Calculates minutes in order and keeps the hour / day / year totals running."""

    def __init__(self, plan: CalculationPlan) -> None:
        config = self.config = plan.config
        self.clock = PlantClock(config.clock.minute_seconds, config.site.timezone)
        self.calc = MinuteCalculator(plan)
        self.totals = Totals(self.clock)
        self._tag_ids = tuple(self.calc.tag_ids)
        pairs = list(config.sources())
        self._source_ids = tuple(src.id for _, src in pairs)
        self._source_units = tuple(unit.id for unit, _ in pairs)
        self._source_keys = tuple(f"{src.id}.co2_kg" for _, src in pairs)
        unit_pos = {u.id: i for i, u in enumerate(config.units)}
        self._unit_of_source = np.array([unit_pos[u.id] for u, _ in pairs], np.int64)
        self._qa: tuple[npt.NDArray[np.int64], F64, F64] = _no_intervals()
        self.use_records(plan.records)

    def use_records(self, records: Records) -> None:
        """Apply these entries' out-of-control intervals to the minutes calculated from now.

        The record keeper calls it when a QA check is entered; a minute being calculated
        in a worker thread meanwhile sees either the old intervals or the new ones.
        """
        pos = {s: i for i, s in enumerate(self._source_ids)}
        rows = [(pos[s], t0, t1) for s, spans in records.out_of_control.items()
                if s in pos for t0, t1 in spans]
        self._qa = (np.array([r[0] for r in rows], np.int64),
                    np.array([r[1] for r in rows], np.float64),
                    np.array([r[2] for r in rows], np.float64)) if rows else _no_intervals()

    def run(self, t: datetime, window: Window) -> MinuteResult:
        """The records of the minute starting at `t` calculated from `window`."""
        arrays = self._out_of_control(t, self.calc.compute(window))
        return self._records(t, arrays, raw_window(self._tag_ids, window))

    def _out_of_control(self, t: datetime, a: MinuteArrays) -> MinuteArrays:
        """`a` with flag D on the sources whose analyser is out of control at `t` (an
        interval [t0, t1) of compute.entries.Records holds it), and on their units: the
        minute counts as one whose analyser failed (HJ 75-2017: invalid, substituted)."""
        src, t0, t1 = self._qa
        if not src.size:
            return a
        t_s = t.timestamp()
        hit = src[(t0 <= t_s) & (t_s < t1)]
        if not hit.size:
            return a
        flag = np.uint8(OUT_OF_CONTROL_FLAG)
        sflag = a.source_flag.copy()
        sflag[hit] = np.maximum(sflag[hit], flag)
        uflag = a.unit_flag.copy()
        units = self._unit_of_source[hit]
        uflag[units] = np.maximum(uflag[units], flag)
        return dataclasses.replace(a, source_flag=sflag, unit_flag=uflag)

    def _records(self, t: datetime, a: MinuteArrays, raw: RawWindow) -> MinuteResult:
        # Sources and tags stay columns (a sink that wants records builds them once);
        # their running totals are one array addition each for the whole plant.
        tags = TagColumns(self._tag_ids, a.tag_mean, a.tag_min, a.tag_max,
                          a.tag_count.astype(np.int64, copy=False), a.tag_flag)
        cems = a.cems
        mass = np.ascontiguousarray(cems[:, kernels.OUT_MASS], np.float64)
        run = self.totals.add_array(self._source_keys, t, mass)
        sources = SourceColumns(
            self._source_ids, self._source_units,
            flow_act_m3_h=np.ascontiguousarray(cems[:, kernels.OUT_FLOW_ACT]),
            flow_std_dry_m3_h=np.ascontiguousarray(cems[:, kernels.OUT_FLOW_SD]),
            co2_dry_pct=np.ascontiguousarray(cems[:, kernels.OUT_CO2_DRY]),
            co2_mg_m3=np.ascontiguousarray(cems[:, kernels.OUT_CO2_MG]),
            co2_rate_kg_h=np.ascontiguousarray(cems[:, kernels.OUT_RATE]), co2_kg=mass,
            flag=a.source_flag.astype(np.uint8, copy=False),
            substitution=a.source_substitution.astype(np.int64, copy=False),
            rules=_RULES, co2_hour_t=run.hour / 1000, co2_today_t=run.day / 1000,
            co2_ytd_t=run.year / 1000)
        units = []
        site_kg = site_day = site_year = 0.0
        for i, unit in enumerate(self.config.units):
            co2 = float(a.unit_co2_kg[i])
            out = float(a.unit_output_mwh[i])
            c = self.totals.add(f"{unit.id}.co2_kg", t, co2)
            o = self.totals.add(f"{unit.id}.output_mwh", t, out)
            f = _FLAGS[int(a.unit_flag[i])]
            # A ratio is only as valid as both of its parts. The minute's intensity needs
            # the minute valid (every source's CO2 and the output flag N); today's is
            # Σ CO2 / Σ output over such minutes only. Summing CO2 over every minute but
            # output over the minutes the meter answered made it drift upwards while the
            # power meter was down (issue 11: 0.81 → 2.43 t/MWh in 50 s). An auditor can
            # check the pairing: both sums are over the same minutes, those stored valid.
            paired = f is DataFlag.N and math.isfinite(co2) and math.isfinite(out)
            cp = self.totals.add(f"{unit.id}.{PAIRED_CO2}", t, co2 if paired else math.nan)
            op = self.totals.add(f"{unit.id}.{PAIRED_OUTPUT}", t, out if paired else math.nan)
            units.append(UnitMinute(
                unit=unit.id, t=t, output_mwh=out, co2_kg=co2,
                intensity_t_mwh=co2 / 1000 / out if paired and out > 0 else math.nan,
                valid=f is DataFlag.N, flag=f, co2_today_t=c.day / 1000,
                output_today_mwh=o.day,
                intensity_today_t_mwh=cp.day / 1000 / op.day if op.day > 0 else math.nan,
                co2_ytd_t=c.year / 1000, output_flag=_FLAGS[int(a.unit_output_flag[i])]))
            if not math.isnan(co2):
                site_kg += co2
            site_day += c.day / 1000
            site_year += c.year / 1000
        annual = self.config.allowance.annual_t
        site = SiteMinute(
            t=t, co2_kg=site_kg, co2_today_t=site_day, co2_ytd_t=site_year,
            allowance_annual_t=annual,
            allowance_used_pct=site_year / annual * 100 if annual > 0 else math.nan,
            allowance_headroom_t=annual - site_year if annual > 0 else math.nan)
        return MinuteResult(t, None, tuple(units), site, None, raw, source_columns=sources,
                            tag_columns=tags)
