"""The period stage: plant hours and days from calculation minutes, with missing-data
substitution, the emission-factor method, reconciliation and the allowance position.

The live server feeds it one minute at a time, `carbonscada recalc` many minutes at a
time; both run this one class on the same arrays, so both get the same records.

Rules (CEMS details in compute/rollup.py and compute/substitute.py):
- An hour closes with its last minute, or when a later minute arrives. A minute that
  never arrives is invalid (a gap, flag B); an hour without any minute is closed too, so
  the hour series has no holes and every invalid hour meets the substitution rule.
- Streams measured by a rate, and unit output: hour quantity = mean of the valid minutes'
  rates × 1 h (NaN without any), valid with ≥ `min_valid_minutes_per_hour` valid minutes,
  like the CEMS hour.
- Streams measured by a meter counter: Σ of the register's deltas that end in the hour
  (compute/counters.py); a delta across invalid readings counts in the hour it ends in,
  so a day loses nothing. Flag: the worst of the deltas' flags; B without a valid reading.
- Hour CO2 of a stream: the factor version in force at the hour's start. Carbon outputs
  and exports count negative (compute/factors.py), so a unit's factor-method total, the
  Σ of its direct streams, is its carbon balance Σ in − Σ out plus its fuels, process and
  carbonate CO2. An hour's total is NaN when one of them has no value (a balance without
  its outputs would overstate); a day's sums the streams' day records, each over the
  hours it has (the stream's day shows a missing hour in n_valid and, below the minimum,
  its flag) — except a carbon balance with incomplete hours (some of its rate-measured
  streams with a valid quantity, some without): it is then taken over its common hours,
  each incomplete hour counting their mean hourly balance, and is invalid with fewer than
  `min_valid_hours_per_day` common hours (PeriodCycle._balance_day). A total
  ≤ 0 is no reconciliation reference (diff NaN) and no factor_method substitute.
  Electricity and heat, purchased and exported, stay out of it, each its own stream
  record; net_purchase_co2_t sums them per unit.
- Day: sources by rollup_day with the hours' substitutes; streams by period_emissions
  (the formula on each factor version's total quantity) over every hour with a quantity,
  valid with ≥ `min_valid_hours_per_day` valid hours; units: CEMS vs factor reconciliation.
- Accounting basis (UnitConfig.basis; UnitPeriod.co2_t): a `cems` unit's CO2 is its
  sources' (co2_cems_t), a `factor` unit's its direct streams' total (co2_factor_t: a
  blast furnace's carbon balance, a lime kiln's carbonates; it may have no source). Its
  hour is valid when its direct streams' hours and its output hour are, its day when its
  streams' days are. co2_t is direct CO2 only: net purchased electricity and heat are
  indirect and stay in their stream records (the China guidelines report them apart).
  A factor unit has no minute CO2 (compute/minute.py): its CO2 arrives when its hour closes.
  The site's CO2 (the allowance's year to date, the days' totals) is Σ of the units' co2_t.
- Intensity (UnitPeriod.intensity_*): an hour's is co2_t / output, valid only with a
  valid output hour and a CO2 value of every source (factor unit: direct stream) of the
  unit (else NaN with the flag of the missing part); a day's is Σ CO2 / Σ output over its
  hours with a valid intensity, valid with ≥ `min_valid_hours_per_day` of them — never a
  ratio whose numerator counts hours its denominator lacks. Output: MW × 1 h in
  output_mwh (t CO2/MWh), or for a product rate (output.rate_t_h) t/h × 1 h in output_t
  (intensity_t_t, t CO2/t).
- CO2e (compute/gases.py): a stream record's other gases — a fuel's combustion CH4 and
  N2O (optional factors ef_ch4_kg_tj / ef_n2o_kg_tj × NCV), a ghg stream's gas — from its
  factor version, and co2e_t = co2_t + Σ gas · GWP by the GWP set in force at its start; a
  unit's co2e_t = its accounted co2_t + Σ gas · GWP of its direct streams' records (NaN
  when one has no value), by the set in force at the period's start.
- A minute that never arrives is one the server did not calculate (it was not running):
  an hour (a day) invalid only for such minutes (hours) gets `missing_reason`
  "not_running". Its flag stays B — HJ 212 has no letter for "not running", and B (no
  data reached the record) keeps it invalid and substituted like any missing hour.
- Entries (compute/entries.py, the plan's `records`): minutes of an out-of-control
  analyser are invalid (D); a value set by hand (a minute's concentration or flow, an
  hour's or day's CO2, a stream's quantity, a unit's output) counts as valid and its
  record carries flag S. The hour a set minute falls in is S when valid; a day with a set
  or corrected hour likewise. Lab factor versions are in the plan's factor table.
- Allowance position at the end of every hour: year to date = the plant year's closed days
  + the current day's closed hours (every unit's co2_t: CEMS with substitutes, or the
  factor method); year-end forecast from the mean of the last ≤ 30 closed days (NaN
  before the first closed day).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import numpy as np
import numpy.typing as npt

from compute import counters, cycle, derived, factors, kernels, rollup, substitute
from compute import gases as gases_mod
from compute.clock import PlantClock
from compute.config import Input, StreamConfig, UnitConfig
from compute.entries import MANUAL_FLAG
from compute.kernels import period_flag
from compute.minute import MinuteArrays, MinuteCalculator
from compute.plan import CalculationPlan
from model.errors import FactorVersionNotFound, InvalidValueError
from model.flags import DataFlag
from model.records import (
    AllowancePosition,
    MinuteResult,
    PeriodRecords,
    PeriodResult,
    RawWindow,
    StreamPeriod,
    UnitPeriod,
)

F64 = npt.NDArray[np.float64]
U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]

MINUTES_PER_HOUR = 60
NOT_RUNNING = "not_running"  # PeriodResult.missing_reason: minutes the server did not run for
_B = int(DataFlag.B)
_N = int(DataFlag.N)
_S = DataFlag.S


@dataclass(frozen=True, slots=True, eq=False)
class Readings:
    """Readings of one meter-counter tag, oldest first."""

    t_s: F64  # epoch seconds
    value: F64
    flag: U8

    @staticmethod
    def empty() -> Readings:
        """No readings."""
        return Readings(np.empty(0), np.empty(0), np.empty(0, np.uint8))


@dataclass(frozen=True, slots=True, eq=False)
class MinuteBatch:
    """Calculation minutes in time order, as the period stage needs them.

    Sources and tags in configuration order (compute.minute.MinuteCalculator's); one
    Readings per entry of `PeriodCycle.counter_tags`, the samples of those minutes.
    """

    t_s: F64  # (minutes,) minute starts, epoch seconds
    co2_dry_pct: F64  # (minutes, sources)
    flow_std_dry_m3_h: F64  # (minutes, sources)
    source_flag: U8  # (minutes, sources)
    tag_mean: F64  # (minutes, tags)
    tag_flag: U8  # (minutes, tags)
    counters: tuple[Readings, ...] = ()


def minute_batch(result: MinuteResult, counter_tags: Sequence[str]) -> MinuteBatch:
    """The one-minute batch of a live minute result."""
    raw = result.raw
    readings = [_tag_samples(raw, tag) if raw is not None else Readings.empty()
                for tag in counter_tags]
    t_s = np.array([result.t.timestamp()])
    cols, tags = result.source_columns, result.tag_columns
    if cols is not None and tags is not None:  # the live minute: no record per source or tag
        return MinuteBatch(t_s, cols.co2_dry_pct[None, :].copy(),
                           cols.flow_std_dry_m3_h[None, :].copy(), cols.flag[None, :].copy(),
                           tags.mean[None, :].copy(), tags.flag[None, :].copy(),
                           tuple(readings))
    src = result.sources
    return MinuteBatch(
        t_s,
        np.array([[s.co2_dry_pct for s in src]], np.float64).reshape(1, len(src)),
        np.array([[s.flow_std_dry_m3_h for s in src]], np.float64).reshape(1, len(src)),
        np.array([[int(s.flag) for s in src]], np.uint8).reshape(1, len(src)),
        np.array([[g.mean for g in result.tags]], np.float64).reshape(1, len(result.tags)),
        np.array([[int(g.flag) for g in result.tags]], np.uint8).reshape(1, len(result.tags)),
        tuple(readings))


CounterRows = tuple[F64, F64, U8, npt.NDArray[np.uint16]]  # per reading: t, delta, flag, reason


def arrays_batch(t_s: F64, a: MinuteArrays, counter_readings: Sequence[Readings]) -> MinuteBatch:
    """The batch of minutes computed together (MinuteCalculator.compute_batch)."""
    return MinuteBatch(t_s, a.cems[:, :, kernels.OUT_CO2_DRY], a.cems[:, :, kernels.OUT_FLOW_SD],
                       a.source_flag, a.tag_mean, a.tag_flag, tuple(counter_readings))


def windows_batch(calc: MinuteCalculator, windows: Sequence[tuple[datetime, RawWindow]],
                  counter_tags: Sequence[str]) -> MinuteBatch:
    """Stored raw windows calculated again, as one batch (e.g. the open hour after a restart)."""
    padded = [cycle.padded(w) for _, w in windows]
    width = max(p.values.shape[1] for p in padded)
    n, n_tags = len(padded), len(calc.tag_ids)
    values = np.full((n, n_tags, width), np.nan)
    flags = np.zeros((n, n_tags, width), np.uint8)
    counts = np.zeros((n, n_tags), np.int64)
    for m, p in enumerate(padded):
        values[m, :, :p.values.shape[1]] = p.values
        flags[m, :, :p.flags.shape[1]] = p.flags
        counts[m] = p.counts
    readings = []
    for tag in counter_tags:
        parts = [_tag_samples(w, tag) for _, w in windows]
        readings.append(Readings(np.concatenate([x.t_s for x in parts]),
                                 np.concatenate([x.value for x in parts]),
                                 np.concatenate([x.flag for x in parts])))
    t_s = np.array([t.timestamp() for t, _ in windows])
    return arrays_batch(t_s, calc.compute_batch(values, flags, counts), readings)


def _tag_samples(raw: RawWindow, tag: str) -> Readings:
    i = raw.tags.index(tag)
    a = int(raw.counts[:i].sum())
    b = a + int(raw.counts[i])
    return Readings(raw.times[a:b], raw.values[a:b], raw.flags[a:b])


@dataclass(slots=True)
class _Counter:
    """One counter stream: the register's state across minutes and the open hour's deltas."""

    base_t_s: float = math.nan  # the last valid reading
    base_value: float = math.nan
    bad_flag: int = 0  # flag of the invalid readings while no reading was valid yet
    deltas: list[float] = field(default_factory=list)  # N deltas ending in the open hour
    worst: int = 0  # worst flag of the open hour's deltas
    bad: int = 0  # worst flag of the open hour's invalid readings
    reasons: int = 0
    n_valid: int = 0  # valid readings in the open hour


def hours_of_absent_days(clock: PlantClock, start: datetime, end: datetime,
                         day_starts: Sequence[datetime]) -> int:
    """The hours of the plant days in [start, end) without a day record (`day_starts`: the
    days that have one): what a month or year total counts as missing for them.

    A day is as long as the clock says (23, 24 or 25 hours with daylight saving time),
    not 24: a year of Europe/Berlin has 8760 hours, and its 25-hour day is 25 missing.
    """
    have = {d for d in day_starts if start <= d < end}
    return clock.hours_in(start, end) - sum(clock.hours_in(d, clock.next_day(d)) for d in have)


def _hour_intensity_flag(power_flag: int, sources: Sequence[PeriodResult]) -> int:
    """The flag of a unit hour's intensity: N needs a valid output hour (≥ the minimum of
    valid output minutes, like a CEMS hour) and a CO2 value (measured or substituted) of
    every source of the unit. Else the output's flag, or the worst flag of a source
    without a value (B if it has none): a ratio is invalid when a part of it is missing,
    never computed from part of the CO2 or over an output from too few minutes."""
    if power_flag:
        return power_flag
    lacking = [int(s.flag) or _B for s in sources if not math.isfinite(s.co2_t)]
    return max(lacking, default=_N)


def _hour_factor_intensity_flag(power_flag: int, streams: Sequence[StreamPeriod]) -> int:
    """The flag of a factor unit's hour intensity: a valid output hour and a CO2 value of
    every direct stream (a carbon balance without its outputs would overstate), else the
    output's flag or the worst flag of a stream without a value (B if it has none)."""
    if power_flag:
        return power_flag
    lacking = [int(s.flag) or _B for s in streams if not math.isfinite(s.co2_t)]
    return max(lacking, default=_N)


def _day_not_running(day: PeriodResult, hours: Sequence[PeriodResult], absent: bool) -> bool:
    """Whether a source's invalid day lacks data only because the server did not run: every
    invalid hour of it is a not-running hour, and one is (or an hour of the day is absent)."""
    if day.valid:
        return False
    bad = [h for h in hours if not h.valid]
    if any(h.missing_reason != NOT_RUNNING for h in bad):
        return False
    return absent or bool(bad)


def net_purchase_co2_t(streams: Sequence[StreamPeriod], unit: str) -> tuple[float, float]:
    """(electricity, heat) t CO2 of `unit`'s net purchase in one period's stream records.

    Net purchase = purchased − exported (China's GHG accounting guidelines): the Σ of the
    unit's electricity and electricity_export (heat and heat_export) streams, exports
    being negative. NaN when the unit has no such stream or one of them has no value.
    """
    def net(methods: tuple[str, str]) -> float:
        values = [s.co2_t for s in streams if s.unit == unit and s.method in methods]
        return math.fsum(values) if values and all(map(math.isfinite, values)) else math.nan

    return net(("electricity", "electricity_export")), net(("heat", "heat_export"))


def _gas_co2e_t(x: StreamPeriod, gwp: gases_mod.GwpSet | None) -> float:
    """Σ gas · GWP of a stream record's gases other than CO2 (NaN without a GWP set)."""
    if gwp is None:
        return math.nan
    ch4 = gases_mod.CH4_FOSSIL if x.gas == gases_mod.CH4_FOSSIL else gases_mod.CH4
    masses = {ch4: x.ch4_t, gases_mod.N2O: x.n2o_t}
    if x.gas and x.gas not in gases_mod.BUILTIN_GASES:
        masses[x.gas] = x.gas_t
    return gwp.gas_co2e_t({g: m for g, m in masses.items() if m != 0.0})


def _fsum_finite(values: Sequence[float]) -> float:
    """Exact sum of the finite values; NaN when there is none."""
    finite = [v for v in values if math.isfinite(v)]
    return math.fsum(finite) if finite else math.nan


def _take(inp: Input | None, tag_pos: dict[str, int]) -> tuple[int, float]:
    assert inp is not None
    return (tag_pos[inp.tag], math.nan) if inp.tag is not None else (-1, float(inp.value or 0))


def _flags(n_valid: I64, min_valid: int, worst: npt.NDArray[np.integer]) -> U8:
    """compute.kernels.period_flag over arrays."""
    out: U8 = np.where(n_valid >= min_valid, 0, np.where(worst > 0, worst, _B)).astype(np.uint8)
    return out


def _hour_means(values: F64, flags: U8, min_valid: int) -> tuple[F64, I64, U8]:
    """Per row: mean of the valid minutes (NaN if none), their number, the hour's flag."""
    ok = (flags == 0) & np.isfinite(values)
    n = ok.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, np.where(ok, values, 0.0).sum(axis=1) / np.maximum(n, 1), np.nan)
    worst = flags.max(axis=1, initial=0)
    return mean, n, _flags(n, min_valid, worst)


class PeriodCycle:
    """Closes plant hours and days as minutes come in, oldest first, and keeps their history."""

    def __init__(self, plan: CalculationPlan) -> None:
        config = self.config = plan.config
        c = config.clock
        self.clock = PlantClock(c.minute_seconds, config.site.timezone)
        self._minute_s = c.minute_seconds
        self._hour_s = MINUTES_PER_HOUR * c.minute_seconds
        self._min_minutes = c.min_valid_minutes_per_hour
        self._min_hours = c.min_valid_hours_per_day
        self._rho = config.constants.co2_density_kg_m3
        self._table = plan.factors
        self._records = plan.records
        self._gwp = config.gwp.table()  # CO2e: the GWP set in force when (compute/gases.py)
        tag_pos = {t: i for i, t in enumerate(plan.tag_ids)}

        pairs = config.sources()
        self.source_ids = tuple(s.id for _, s in pairs)
        self._source_pos = {sid: i for i, sid in enumerate(self.source_ids)}
        self._unit_sources = [[i for i, (su, _) in enumerate(pairs) if su.id == u.id]
                              for u in config.units]
        rules = list(plan.substitution)
        self._rules = rules
        self._rule_names = [r.rule if r is not None else "" for r in rules]
        lookback = max((r.lookback_h for r in rules if r is not None), default=0)
        self.lookback_h = lookback

        self.streams: tuple[tuple[UnitConfig, StreamConfig], ...] = tuple(config.streams())
        self._rate_of = [r for r, (_, s) in enumerate(self.streams) if s.rate_per_h is not None]
        self._counter_of = [r for r, (_, s) in enumerate(self.streams) if s.counter is not None]
        rate = [_take(self.streams[r][1].rate_per_h, tag_pos) for r in self._rate_of]
        self._rate_tag = np.array([t for t, _ in rate], np.int64)
        self._rate_const = np.array([v for _, v in rate], np.float64)
        self.counter_tags = tuple(
            s.counter.tag for _, s in self.streams if s.counter is not None)
        power = [_take(u.output.rate, tag_pos) for u in config.units]
        self._power_tag = np.array([t for t, _ in power], np.int64)
        self._power_const = np.array([v for _, v in power], np.float64)
        self._direct = [[r for r, (su, s) in enumerate(self.streams) if su.id == u.id and s.direct]
                        for u in config.units]
        # How each unit's CO2 is accounted (UnitPeriod.co2_t) and what its output is in.
        self._factor_basis = [u.accounting_basis == "factor" for u in config.units]
        self._product = [u.output.unit == "t" for u in config.units]
        # The key an entered output is set under (compute/entries.py SETTABLE).
        self._output_key = ["output_t" if p else "output_mwh" for p in self._product]

        n_src, n_rate, n_unit = len(pairs), len(self._rate_of), len(config.units)
        self._conc = np.full((n_src, MINUTES_PER_HOUR), np.nan)
        self._flow = np.full((n_src, MINUTES_PER_HOUR), np.nan)
        self._sflag = np.zeros((n_src, MINUTES_PER_HOUR), np.uint8)
        self._set = np.zeros((n_src, MINUTES_PER_HOUR), np.bool_)  # minutes set by hand
        self._rate = np.full((n_rate, MINUTES_PER_HOUR), np.nan)
        self._rflag = np.zeros((n_rate, MINUTES_PER_HOUR), np.uint8)
        self._power = np.full((n_unit, MINUTES_PER_HOUR), np.nan)
        self._pflag = np.zeros((n_unit, MINUTES_PER_HOUR), np.uint8)
        self._counters = [_Counter() for _ in self._counter_of]
        self._hour: datetime | None = None  # start of the open hour
        self._taken = np.zeros(MINUTES_PER_HOUR, np.bool_)  # the open hour's minutes taken
        self._filled = False  # whether a minute of the open hour was taken
        self._last_t_s = -math.inf  # start of the last minute taken
        # The substitution rules' lookback: measured hour means and validity, oldest first.
        self._hist_conc: deque[F64] = deque(maxlen=lookback)
        self._hist_flow: deque[F64] = deque(maxlen=lookback)
        self._hist_valid: deque[npt.NDArray[np.bool_]] = deque(maxlen=lookback)
        self._day_hours: list[PeriodRecords] = []  # closed hours of the open day
        self._year: datetime | None = None  # the plant year of `_year_days_t`
        self._year_days_t = 0.0  # Σ of the site CO2 of that year's closed days
        self._recent_days: deque[float] = deque(maxlen=30)  # site CO2 of the last closed days

    def use(self, plan: CalculationPlan) -> None:
        """Take another plan's entries and factor table (an entry was made) from now on."""
        self._table, self._records = plan.factors, plan.records

    @property
    def open_hour(self) -> datetime | None:
        """Start of the hour minutes are being taken for (None before the first minute)."""
        return self._hour

    def close_before(self, t: datetime) -> list[PeriodRecords]:
        """Close the open hours that end by `t` although not every minute of them came (a
        recalculation stopping where the live cycle's open hour begins)."""
        out: list[PeriodRecords] = []
        while self._hour is not None and self.clock.next_hour(self._hour) <= t:
            out.extend(self._close_hour())
        return out

    def adopt_closed(self, other: PeriodCycle) -> None:
        """Take what `other` knows of the closed hours and days, and its entries and factors.

        `other` recalculated the closed periods (an entry was made) up to this cycle's open
        hour; this cycle keeps the open hour's minutes and its meter registers.
        """
        if other.open_hour != self._hour:
            raise InvalidValueError(f"a recalculation up to {other.open_hour} cannot continue "
                                    f"the open hour {self._hour}")
        self._hist_conc, self._hist_flow = other._hist_conc, other._hist_flow
        self._hist_valid, self._day_hours = other._hist_valid, other._day_hours
        self._year, self._year_days_t = other._year, other._year_days_t
        self._recent_days = other._recent_days
        self._table, self._records = other._table, other._records

    # ------------------------------------------------------------------ feeding

    def add(self, batch: MinuteBatch) -> list[PeriodRecords]:
        """Take minutes (later than every minute taken before); return what they closed."""
        t_s = batch.t_s
        if t_s.size == 0:
            return []
        if t_s[0] <= self._last_t_s or (t_s.size > 1 and not (np.diff(t_s) > 0).all()):
            raise InvalidValueError("minutes must come in time order, each once")
        out: list[PeriodRecords] = []
        conc, flow, sflag, set_mask = self._records.apply_minutes(
            t_s, self.source_ids, batch.co2_dry_pct, batch.flow_std_dry_m3_h,
            batch.source_flag)
        rows = [self._counter_rows(i, r) for i, r in enumerate(batch.counters)]
        cursor = [0] * len(rows)
        j = 0
        while j < t_s.size:
            first = datetime.fromtimestamp(float(t_s[j]), UTC)
            if self._hour is None:
                self._hour = self.clock.hour_start(first)
            while first >= self.clock.next_hour(self._hour):
                out.extend(self._close_hour())
            h0 = self._hour
            h1 = self.clock.next_hour(h0)
            end = int(np.searchsorted(t_s, h1.timestamp(), side="left"))
            seg = slice(j, end)
            k = np.rint((t_s[seg] - h0.timestamp()) / self._minute_s).astype(np.int64)
            self._conc[:, k] = conc[seg].T
            self._flow[:, k] = flow[seg].T
            self._sflag[:, k] = sflag[seg].T
            if set_mask is not None:
                self._set[:, k] = set_mask[seg].T
            self._fill(self._rate, self._rflag, self._rate_tag, self._rate_const, batch, seg, k)
            self._fill(self._power, self._pflag, self._power_tag, self._power_const, batch,
                       seg, k)
            for i, r in enumerate(rows):
                stop = int(np.searchsorted(r[0], h1.timestamp(), side="left"))
                self._counter_hour(i, r, cursor[i], stop)
                cursor[i] = stop
            self._taken[k] = True
            self._filled = True
            j = end
            if k[-1] == MINUTES_PER_HOUR - 1:
                out.extend(self._close_hour())
        self._last_t_s = float(t_s[-1])
        return out

    def flush(self) -> list[PeriodRecords]:
        """Close the open hour and day although incomplete (the end of a recalculation)."""
        if self._hour is None:
            return []
        if self._filled:
            return self._close_hour(final=True)
        return [self._close_day()] if self._day_hours else []

    @staticmethod
    def _fill(values: F64, flags: U8, tag: I64, const: F64, batch: MinuteBatch, seg: slice,
              k: I64) -> None:
        if tag.size == 0:
            return
        has = tag >= 0
        idx = np.where(has, tag, 0)
        mean: F64 = np.full((k.size, tag.size), np.nan)
        flag: U8 = np.zeros((k.size, tag.size), np.uint8)
        if batch.tag_mean.shape[1]:
            mean, flag = batch.tag_mean[seg][:, idx], batch.tag_flag[seg][:, idx]
        values[:, k] = np.where(has[None, :], mean, const[None, :]).T
        flags[:, k] = np.where(has[None, :], flag, 0).T

    # ------------------------------------------------------------------ meter counters

    def _counter_rows(self, i: int, r: Readings) -> CounterRows:
        """Per reading of a batch: its time and the delta, flag and reason bits it ends."""
        st = self._counters[i]
        cfg = self.streams[self._counter_of[i]][1].counter
        assert cfg is not None
        t, v, f = r.t_s, r.value, r.flag
        # The register's state goes on across batches: the last valid reading, or the
        # flag of the invalid ones when none was valid yet, opens the kernel's input.
        prepended = True
        if math.isfinite(st.base_value):
            t, v = np.append(st.base_t_s, t), np.append(st.base_value, v)
            f = np.append(np.uint8(_N), f).astype(np.uint8)
        elif st.bad_flag:
            t, v = np.append(-math.inf, t), np.append(math.nan, v)
            f = np.append(np.uint8(st.bad_flag), f).astype(np.uint8)
        else:
            prepended = False
        n = max(t.size - 1, 0)
        delta, flag, reason = np.empty(n), np.empty(n, np.uint8), np.empty(n, np.uint16)
        if t.size:
            counters.counter_deltas_kernel(
                np.ascontiguousarray(t, np.float64), np.ascontiguousarray(v, np.float64),
                np.ascontiguousarray(f, np.uint8), cfg.rollover_count, cfg.rollover_count,
                cfg.max_jump_per_h / 3600.0, np.empty(0), np.empty(0), np.empty(0), delta,
                flag, reason)
        ok = (r.flag == _N) & np.isfinite(r.value) & (r.value >= 0) & (
            r.value <= cfg.rollover_count)
        if not prepended and r.t_s.size:  # the very first reading ends no interval
            first_bad = 0 if ok[0] else (int(r.flag[0]) or (
                int(DataFlag.T) if math.isfinite(r.value[0]) else _B))
            delta = np.append(math.nan, delta)
            flag = np.append(np.uint8(first_bad), flag).astype(np.uint8)
            reason = np.append(np.uint16(0 if ok[0] else counters.INVALID_READING),
                               reason).astype(np.uint16)
        if ok.any():
            last = int(np.flatnonzero(ok)[-1])
            st.base_t_s, st.base_value = float(r.t_s[last]), float(r.value[last])
        elif r.t_s.size and not math.isfinite(st.base_value):
            st.bad_flag = int(flag[-1])
        return r.t_s, delta, flag, reason

    def _counter_hour(self, i: int, rows: CounterRows, start: int, stop: int) -> None:
        """Count the rows [start, stop) of a batch in the open hour."""
        delta, flag, reason = rows[1][start:stop], rows[2][start:stop], rows[3][start:stop]
        st = self._counters[i]
        invalid = (reason & counters.INVALID_READING) != 0
        good = ~invalid & (flag == _N) & np.isfinite(delta)
        st.deltas.extend(delta[good].tolist())
        st.n_valid += int((~invalid).sum())
        if invalid.any():
            st.bad = max(st.bad, int(flag[invalid].max()))
        if (~invalid).any():
            st.worst = max(st.worst, int(flag[~invalid].max()))
            st.reasons |= int(np.bitwise_or.reduce(reason[~invalid]))

    def restore_counter(self, tag_index: int, t_s: float, value: float) -> None:
        """Set the last valid reading of counter `counter_tags[tag_index]` (after a restart)."""
        st = self._counters[tag_index]
        st.base_t_s, st.base_value, st.bad_flag = t_s, value, 0

    # ------------------------------------------------------------------ closing

    def _close_hour(self, final: bool = False) -> list[PeriodRecords]:
        assert self._hour is not None
        h0 = self._hour
        h1 = self.clock.next_hour(h0)
        hours = rollup.rollup_hour(self._conc, self._flow, self._sflag,
                                   min_valid=self._min_minutes, rho_kg_m3=self._rho)
        measured_t = hours.co2_t.copy()  # an hour set by hand keeps its measured mass apart
        manual = self._set_hours(hours, h0)
        streams = self._stream_hours(h0, h1)
        unit_factor = [self._factor_sum([streams[r].co2_t for r in rs]) for rs in self._direct]
        sub_co2, notes, sub_conc, sub_flow = self._substitutes(hours, unit_factor)
        sources = rollup.hour_records(self.source_ids, h0, hours, sub_co2, self._rule_names)
        sources = tuple(replace(s, substitution_note=notes[i]) if notes[i] else s
                        for i, s in enumerate(sources))
        sources = tuple(replace(s, substitute_co2_dry_pct=float(sub_conc[i]),
                                substitute_flow_std_dry_m3_h=float(sub_flow[i]))
                        if s.substituted else s for i, s in enumerate(sources))
        not_running = self._not_running(self._sflag, hours.flag)
        sources = tuple(replace(s, missing_reason=NOT_RUNNING) if not_running[i] else s
                        for i, s in enumerate(sources))
        sources = tuple(replace(s, flag=MANUAL_FLAG, co2_measured_t=float(measured_t[i]))
                        if manual[i] and s.valid else s for i, s in enumerate(sources))
        power, n_power, power_flag = _hour_means(self._power, self._pflag, self._min_minutes)
        set_output = [self._records.values("unit", "hour", unit.id, h0).get(key)
                      for unit, key in zip(self.config.units, self._output_key, strict=True)]
        for u, v in enumerate(set_output):
            if v is not None:
                power[u], power_flag[u] = v, 0
        units = []
        for u, unit in enumerate(self.config.units):
            own = [sources[i] for i in self._unit_sources[u]]
            out_mwh = float(power[u])  # mean MW (t/h for a product output) × 1 h
            cems = _fsum_finite([s.co2_t for s in own])
            if self._factor_basis[u]:
                direct = [streams[r] for r in self._direct[u]]
                flag = max([0 if s.valid else int(s.flag) for s in direct]
                           + [int(power_flag[u])])
                i_flag = _hour_factor_intensity_flag(int(power_flag[u]), direct)
                set_by_hand = set_output[u] is not None or any(s.flag is _S for s in direct)
                co2 = unit_factor[u]
            else:
                flag = max([int(s.flag) for s in own] + [int(power_flag[u])])
                i_flag = _hour_intensity_flag(int(power_flag[u]), own)
                set_by_hand, co2 = set_output[u] is not None, cems
            units.append(self._unit_period(
                u, UnitPeriod(
                    unit.id, h0, cems, unit_factor[u], out_mwh,
                    co2 / out_mwh if i_flag == 0 and out_mwh > 0 else math.nan, flag == 0,
                    _S if flag == 0 and set_by_hand else DataFlag(flag),
                    intensity_flag=DataFlag(i_flag), intensity_n_valid=int(n_power[u]),
                    n_substituted=int(not self._factor_basis[u]
                                      and any(s.substituted for s in own)))))
        self._hist_conc.append(hours.co2_dry_pct.copy())
        self._hist_flow.append(hours.flow_std_dry_m3_h.copy())
        # A lookback hour needs its concentration and flow: one set by its CO2 alone is none.
        self._hist_valid.append((hours.flag == 0) & np.isfinite(hours.co2_dry_pct)
                                & np.isfinite(hours.flow_std_dry_m3_h))
        units = self._co2e_units(units, streams, h0)
        rec = PeriodRecords("hour", h0, h1, sources, tuple(streams), tuple(units))
        self._day_hours.append(rec)
        rec = replace(rec, allowance=self._allowance(h0, h1))
        self._day_hours[-1] = rec
        self._reset_hour(h1)
        out = [rec]
        if final or self.clock.day_start(h1) != self.clock.day_start(h0):
            out.append(self._close_day())
        return out

    def _unit_period(self, u: int, rec: UnitPeriod) -> UnitPeriod:
        """Unit `u`'s record built with the power fields, with its accounted co2_t and, for
        a product output (t/h), the output and intensity moved to output_t / intensity_t_t."""
        rec = replace(rec, co2_t=rec.co2_factor_t if self._factor_basis[u] else rec.co2_cems_t,
                      basis="factor" if self._factor_basis[u] else "cems")
        if self._product[u]:
            rec = replace(rec, output_t=rec.output_mwh, intensity_t_t=rec.intensity_t_mwh,
                          output_mwh=math.nan, intensity_t_mwh=math.nan)
        return rec

    def _site_t(self, rec: PeriodRecords) -> float:
        """The site's accounted t CO2 in an hour or day: Σ of its units' (NaN if none has
        a value). A stored unit no longer configured counts by its stored co2_t, or CEMS."""
        pos = {u.id: i for i, u in enumerate(self.config.units)}
        values = [self._co2_of(pos[x.unit], x) if x.unit in pos
                  else (x.co2_t if math.isfinite(x.co2_t) else x.co2_cems_t) for x in rec.units]
        return _fsum_finite(values)

    def _co2_of(self, u: int, rec: UnitPeriod) -> float:
        """Unit `u`'s accounted t CO2 in a record (from the basis, so that a stored record
        written before co2_t existed counts too)."""
        return rec.co2_factor_t if self._factor_basis[u] else rec.co2_cems_t

    def _output_of(self, u: int, rec: UnitPeriod) -> float:
        """Unit `u`'s output in a record: MWh, or t for a product output."""
        return rec.output_t if self._product[u] else rec.output_mwh

    def _not_running(self, minute_flags: U8, hour_flags: U8) -> npt.NDArray[np.bool_]:
        """Per row: whether the hour is invalid only because the server did not run.

        That is: the hour is invalid, none of its calculated minutes carries a flag (so
        the flag B is period_flag's "no data", not a measured communication failure), and
        some of its minutes were never calculated. A minute the live server ran always
        arrives (with flag B from the kernel when its device did not answer), so a minute
        that never arrived is one the server did not run for (or, in a recalculation, one
        outside the export).
        """
        if self._taken.all():
            return np.zeros(hour_flags.shape, np.bool_)
        out: npt.NDArray[np.bool_] = (hour_flags != 0) & (minute_flags.max(axis=1, initial=0)
                                                          == 0)
        return out

    def _set_hours(self, hours: rollup.HourArrays, h0: datetime) -> npt.NDArray[np.bool_]:
        """Apply the hour's values set by hand to `hours` (in place); which sources have some.

        An hour set by hand is valid (flag 0 in the arrays, so the day and the substitution
        lookback take it as measured); its concentration and flow give its rate and CO2 by
        the hour formula (G = C·ρ·Q/100 kg/h over 1 h) unless its CO2 is set itself.
        """
        manual: npt.NDArray[np.bool_] = self._set.any(axis=1) & (hours.flag == 0)
        for sid, v in self._records.at("source", "hour", h0).items():
            i = self._source_pos.get(sid)
            if i is None:
                continue
            c = v.get("co2_dry_pct", float(hours.co2_dry_pct[i]))
            q = v.get("flow_std_dry_m3_h", float(hours.flow_std_dry_m3_h[i]))
            hours.co2_dry_pct[i], hours.flow_std_dry_m3_h[i] = c, q
            if "co2_t" in v:
                hours.co2_t[i] = v["co2_t"]
                hours.co2_rate_kg_h[i] = v["co2_t"] * 1000.0
            else:
                hours.co2_rate_kg_h[i] = c * self._rho * q / 100.0
                hours.co2_t[i] = hours.co2_rate_kg_h[i] / 1000.0
            hours.flag[i] = 0
            manual[i] = True
        return manual

    def _reset_hour(self, h1: datetime) -> None:
        for a in (self._conc, self._flow, self._rate, self._power):
            a.fill(np.nan)
        for f in (self._sflag, self._rflag, self._pflag):
            f.fill(0)
        self._set.fill(False)
        for st in self._counters:
            st.deltas, st.worst, st.bad, st.reasons, st.n_valid = [], 0, 0, 0, 0
        self._taken.fill(False)
        self._hour = h1
        self._filled = False

    @staticmethod
    def _factor_sum(values: Sequence[float]) -> float:
        """Σ of a unit's direct streams (outputs negative); NaN without streams or when one
        has no value."""
        if not values or not all(math.isfinite(v) for v in values):
            return math.nan
        return math.fsum(values)

    def _substitutes(self, hours: rollup.HourArrays,
                     unit_factor: Sequence[float]) -> tuple[F64, list[str], F64, F64]:
        """Per source: the substitute t CO2 of an invalid hour (NaN: none), why none, and the
        substitute concentration (% dry) and flow (m³/h std dry) it is computed from (NaN
        for factor_method, whose mass is no concentration × flow)."""
        n = len(self.source_ids)
        sub = np.full(n, np.nan)
        sub_conc = np.full(n, np.nan)
        sub_flow = np.full(n, np.nan)
        notes = [""] * n
        rows = []
        for i, rule in enumerate(self._rules):
            if rule is None or hours.flag[i] == 0:
                continue
            if hours.flag[i] == DataFlag.F:
                notes[i] = "unit stopped (F): no substitute"
                continue
            rows.append(i)
        if not rows:
            return sub, notes, sub_conc, sub_flow

        def lookback(hist: deque[F64], now: F64) -> F64:
            return np.column_stack([*hist, now])[rows] if hist else now[rows, None]

        conc = lookback(self._hist_conc, hours.co2_dry_pct)
        flow = lookback(self._hist_flow, hours.flow_std_dry_m3_h)
        valid = np.column_stack([*self._hist_valid, np.zeros(n, np.bool_)])[rows]
        factor = np.full(conc.shape, np.nan)
        unit_of = {i: u for u, ss in enumerate(self._unit_sources) for i in ss}
        factor[:, -1] = [unit_factor[unit_of[i]] for i in rows]
        out = substitute.substitute_hours(conc, flow, valid,
                                          [self._rules[i] for i in rows],  # type: ignore[misc]
                                          factor_co2_t=factor, rho_kg_m3=self._rho)
        last = conc.shape[1] - 1
        for r, i in enumerate(rows):
            sub[i] = out.co2_t[r, last]
            if not math.isfinite(sub[i]):
                notes[i] = out.reason(r, last)
            # The hour is invalid as a whole (one mask), so both parameters are substitutes.
            sub_conc[i], sub_flow[i] = out.co2_dry_pct[r, last], out.flow_std_dry_m3_h[r, last]
        return sub, notes, sub_conc, sub_flow

    def _stream_hours(self, h0: datetime, h1: datetime) -> list[StreamPeriod]:
        """Quantity and CO2 of every stream in the open hour."""
        q, n_valid, flag = _hour_means(self._rate, self._rflag, self._min_minutes)
        found: dict[int, tuple[float, int, int, str]] = {
            r: (float(q[j]), int(n_valid[j]), int(flag[j]), "")
            for j, r in enumerate(self._rate_of)}
        for j, r in enumerate(self._counter_of):
            st = self._counters[j]
            cfg = self.streams[r][1].counter
            assert cfg is not None
            if st.n_valid:
                found[r] = (math.fsum(st.deltas) * cfg.quantity_per_count, st.n_valid,
                            st.worst, counters.reason_text(st.reasons))
            else:
                found[r] = (math.nan, 0, int(period_flag(0, 1, max(st.worst, st.bad))),
                            counters.reason_text(st.reasons))
        out = []
        for r, (unit, s) in enumerate(self.streams):
            quantity, n, f, note = found[r]
            set_q = self._records.values("stream", "hour", s.id, h0).get("quantity")
            if set_q is not None:
                quantity, f = set_q, int(_S)
            if quantity < 0:  # noise of a rate meter around zero: over range, no CO2
                f = max(f, int(DataFlag.T))
                note = note or "negative quantity"
            co2, version, why = self._co2(s, quantity, h0, h1)
            out.append(self._with_gases(s, StreamPeriod(
                s.id, unit.id, h0, h1, quantity, s.quantity_unit, co2, version, s.calc_method,
                f in (0, _S), DataFlag(f), n, note or why)))
        return out

    def _with_gases(self, s: StreamConfig, x: StreamPeriod) -> StreamPeriod:
        """A stream record with its other gases (t) and CO2e by the GWP set in force at its
        start. The gases come from its factor version (the one in force when it has none:
        whether it would have gases); NaN without a quantity, 0 without gas factors."""
        version: factors.FactorVersion | None = None
        try:
            if x.factor_version:
                version = next((v for v in self._table.versions(s.factors)
                                if v.id == x.factor_version), None)
            else:
                version = self._table.at(s.factors, x.t)
        except FactorVersionNotFound:
            version = None
        note = x.note
        if version is None:
            gases = {s.gas: math.nan} if s.gas is not None else {}
        else:
            known = math.isfinite(x.quantity) and x.quantity >= 0
            try:
                gases = factors.gases_t(version, s.calc_method, s.quantity_unit,
                                        x.quantity if known else 0.0, s.gas)
            except InvalidValueError as exc:  # a lab version with CH4/N2O but no NCV
                gases, known = dict.fromkeys(factors.GAS_FACTORS, 0.0), False
                note = ",".join(p for p in (note, str(exc)) if p)
            if not known:  # the gases it has, without a value
                gases = dict.fromkeys(gases, math.nan)
        if s.gas is not None:  # a ghg stream emits no CO2, known or not its quantity: a
            x = replace(x, co2_t=0.0)  # failed gas meter leaves the unit's CO2 total alone
        gwp = self._gwp.at(x.t)
        ch4 = gases.get(gases_mod.CH4, gases.get(gases_mod.CH4_FOSSIL, 0.0))
        other = s.gas if s.gas is not None and s.gas not in gases_mod.BUILTIN_GASES else ""
        x = replace(x, ch4_t=ch4, n2o_t=gases.get(gases_mod.N2O, 0.0), gas=s.gas or "",
                    gas_t=gases.get(other, 0.0) if other else 0.0, note=note,
                    gwp_set=gwp.id if gwp is not None else "")
        return replace(x, co2e_t=x.co2_t + _gas_co2e_t(x, gwp))

    def _co2e_units(self, units: Sequence[UnitPeriod], streams: Sequence[StreamPeriod],
                    t: datetime) -> list[UnitPeriod]:
        """The units' records with CO2e: the accounted co2_t + Σ gas · GWP of the other
        gases of the unit's direct streams' records (NaN when one has no value), by the
        GWP set in force at `t`, the period's start."""
        gwp = self._gwp.at(t)
        out = []
        for u, rec in enumerate(units):
            own = {self.streams[r][1].id for r in self._direct[u]}
            parts = [_gas_co2e_t(x, gwp) for x in streams if x.stream in own]
            gas = math.fsum(parts) if all(map(math.isfinite, parts)) else math.nan
            out.append(replace(rec, co2e_t=rec.co2_t + gas,
                               gwp_set=gwp.id if gwp is not None else ""))
        return out

    def _co2(self, s: StreamConfig, quantity: float, t0: datetime,
             t1: datetime) -> tuple[float, str, str]:
        """(t CO2, factor version id, why no CO2) of a quantity by the version in force at t0."""
        try:
            version = self._table.at(s.factors, t0)
        except FactorVersionNotFound as exc:
            return math.nan, "", str(exc)
        if not (math.isfinite(quantity) and quantity >= 0):
            return math.nan, version.id, ""
        res = factors.result(version, s.calc_method, quantity, s.quantity_unit, t0, t1)
        return res.co2_t, version.id, ""

    def _allowance(self, h0: datetime, h1: datetime) -> AllowancePosition:
        """The allowance position at the end of the hour starting at h0."""
        year_start, year_end = self.clock.year_bounds(h0)
        if self._year != year_start:
            self._year, self._year_days_t = year_start, 0.0
        today = [self._site_t(h) for h in self._day_hours]
        ytd = self._year_days_t + math.fsum(x for x in today if math.isfinite(x))
        frac = (h1 - year_start) / (year_end - year_start)
        days_in_year = round((year_end - year_start).total_seconds() / (24 * self._hour_s))
        trailing = (math.fsum(self._recent_days) / len(self._recent_days) * 30.0
                    if self._recent_days else math.nan)
        a = self.config.allowance
        return derived.allowance_position(
            a.annual_t, ytd, trailing, year_fraction=frac, days_left=(1 - frac) * days_in_year,
            carbon_price_cny_t=a.carbon_price_cny_t)

    def _close_day(self) -> PeriodRecords:
        hours = self._day_hours
        d0 = self.clock.day_start(hours[0].t)
        d1 = self.clock.next_day(d0)
        n_h = round((d1 - d0).total_seconds() / self._hour_s)
        idx = [round((h.t - d0).total_seconds() / self._hour_s) for h in hours]
        n_src = len(self.source_ids)
        cols = {name: np.full((n_src, n_h), np.nan) for name in (
            "co2_dry_pct", "flow_std_dry_m3_h", "co2_rate_kg_h", "co2_measured_t", "sub")}
        n_valid = np.zeros((n_src, n_h), np.int64)
        flag = np.zeros((n_src, n_h), np.uint8)
        manual = np.zeros(n_src, np.bool_)  # sources with an hour set by hand
        for k, h in zip(idx, hours, strict=True):
            for i, x in enumerate(h.sources):
                for name in ("co2_dry_pct", "flow_std_dry_m3_h", "co2_rate_kg_h"):
                    cols[name][i, k] = getattr(x, name)
                # A valid hour counts with its CO2: the measured one, or the one set by
                # hand (flag S, valid), which the day takes as measured.
                cols["co2_measured_t"][i, k] = x.co2_t if x.valid else x.co2_measured_t
                cols["sub"][i, k] = x.co2_t if x.substituted else math.nan
                n_valid[i, k] = x.n_valid
                flag[i, k] = 0 if x.valid else int(x.flag)
                manual[i] |= x.valid and x.flag is _S
        day = rollup.rollup_day(
            rollup.HourArrays(cols["co2_dry_pct"], cols["flow_std_dry_m3_h"],
                              cols["co2_rate_kg_h"], cols["co2_measured_t"], n_valid, flag),
            cols["sub"], min_valid=self._min_hours)
        sources = rollup.day_records(self.source_ids, d0, day, self._rule_names)
        sources = tuple(
            replace(x, missing_reason=NOT_RUNNING)
            if _day_not_running(x, [h.sources[i] for h in hours], len(hours) < n_h) else x
            for i, x in enumerate(sources))
        sources = tuple(self._set_day(x, d0, bool(manual[i])) for i, x in enumerate(sources))
        streams: list[StreamPeriod] = []
        stream_days: list[list[StreamPeriod]] = []
        for r, (unit, s) in enumerate(self.streams):
            recs = [self._with_gases(s, x) for x in
                    self._stream_day(unit, s, d0, d1, [h.streams[r] for h in hours])]
            streams.extend(recs)
            stream_days.append(recs)
        units = []
        for u, unit in enumerate(self.config.units):
            own = [sources[i] for i in self._unit_sources[u]]
            direct = [x for r in self._direct[u] for x in stream_days[r]]
            cems = _fsum_finite([x.co2_t for x in own])
            factor = self._factor_sum([x.co2_t for x in direct])
            balance = self._balance_day(u, d0, d1, hours, stream_days)
            if balance is not None:  # a carbon balance with incomplete hours
                factor = balance[0]
            if self._factor_basis[u]:
                n_sub = 0 if balance is None else balance[2]
            else:  # the hours in which one of its sources' hours was substituted
                n_sub = sum(any(h.sources[i].substituted for i in self._unit_sources[u])
                            for h in hours)
            co2 = factor if self._factor_basis[u] else cems
            out_mwh = _fsum_finite([self._output_of(u, h.units[u]) for h in hours])
            set_out = self._records.values("unit", "day", unit.id, d0).get(self._output_key[u])
            diff, exceeded = math.nan, False
            if self.config.reconciliation is not None and self._direct[u] and own:
                rec = derived.reconcile(cems, factor, self.config.reconciliation.limit_pct)
                diff, exceeded = float(rec.diff_pct), bool(rec.exceeds)
            # A factor unit's day is as valid as its direct streams' days.
            f = max((0 if x.valid else int(x.flag)
                     for x in (direct if self._factor_basis[u] else own)), default=0)
            if balance is not None and self._factor_basis[u]:
                f = max(f, balance[1])  # and as its balance's common hours
            if set_out is not None:  # the day's output entered (e.g. from the sales meter)
                out_mwh = set_out
                intensity = co2 / out_mwh if out_mwh > 0 and math.isfinite(co2) else math.nan
                i_flag, i_n = (_N if math.isfinite(intensity) else _B), len(hours)
            else:
                intensity, i_flag, i_n = self._day_intensity(u, [h.units[u] for h in hours],
                                                             co2, out_mwh)
            manual_unit = set_out is not None or any(x.flag is _S for x in own) or any(
                h.units[u].flag is _S for h in hours)
            units.append(self._unit_period(u, UnitPeriod(
                unit.id, d0, cems, factor, out_mwh, intensity, f == 0,
                _S if f == 0 and manual_unit else DataFlag(f), diff, exceeded,
                DataFlag(i_flag), i_n, n_substituted=n_sub)))
        site = _fsum_finite([self._co2_of(u, x) for u, x in enumerate(units)])
        if self._year != self.clock.year_bounds(d0)[0]:
            self._year, self._year_days_t = self.clock.year_bounds(d0)[0], 0.0
        if math.isfinite(site):
            self._year_days_t += site
            self._recent_days.append(site)
        self._day_hours = []
        units = self._co2e_units(units, streams, d0)
        return PeriodRecords("day", d0, d1, sources, tuple(streams), tuple(units))

    def _balance_day(self, u: int, d0: datetime, d1: datetime, hours: Sequence[PeriodRecords],
                     stream_days: Sequence[Sequence[StreamPeriod]],
                     ) -> tuple[float, int, int] | None:
        """(t CO2 of unit `u`'s direct streams, flag, incomplete hours filled) of a day whose
        carbon balance has incomplete hours; None when it has none (the day is then Σ of
        its streams' days).

        Why: Σ in − Σ out of the streams' days, each over the hours it has, counts the
        input carbon of an hour whose output is missing (a blast-furnace gas meter out
        for two hours raises the day by their gas carbon): CO2 overstated. The balance is
        taken over its common hours instead, those in which every balance stream
        (carbon_input / carbon_output measured by a rate) has a valid quantity, and an
        incomplete hour (some of them with a quantity, some without a valid one) counts
        the mean hourly balance of the common hours, as HJ 75-2017 fills a missing CEMS
        hour from valid ones: no input carbon goes in unmatched by its outputs. An hour
        without any of them (not running) counts 0. The day is invalid with fewer than
        min_valid_hours_per_day common hours (flag: the worst of the incomplete hours'
        missing streams, else B). A stream measured by a meter counter, or whose day
        quantity is set by hand, counts by its day record: a register loses nothing in a
        gap (the next valid delta carries it), so its hours are no balance of their own.
        The streams' day records stay their true quantities; only the unit's total moves.
        """
        balance = [r for r in self._direct[u]
                   if self.streams[r][1].kind in ("carbon_input", "carbon_output")]
        hourly = [r for r in balance if self.streams[r][1].rate_per_h is not None
                  and self._records.values("stream", "day", self.streams[r][1].id,
                                           d0).get("quantity") is None]
        if not hourly:
            return None

        def present(x: StreamPeriod) -> bool:
            return math.isfinite(x.quantity) and x.quantity >= 0

        common: list[int] = []
        n_incomplete, worst = 0, 0
        for k, h in enumerate(hours):
            xs = [h.streams[r] for r in hourly]
            ok = [x.valid and present(x) for x in xs]
            if all(ok):
                common.append(k)
            elif any(present(x) for x in xs):
                n_incomplete += 1
                worst = max([worst] + [int(x.flag) for x, o in zip(xs, ok, strict=True)
                                       if not o and not x.valid])
        if not n_incomplete:
            return None
        rest = [x.co2_t for r in self._direct[u] if r not in hourly for x in stream_days[r]]
        flag = int(period_flag(len(common), self._min_hours, worst))
        if not common:
            return math.nan, flag, 0
        parts: list[float] = []
        t_s = np.array([hours[k].t.timestamp() for k in common])
        for r in hourly:
            s = self.streams[r][1]
            q = np.array([hours[k].streams[r].quantity for k in common])
            try:
                parts.extend(res.co2_t for res in factors.period_emissions(
                    self._table, s.factors, s.calc_method, s.quantity_unit, t_s, q, d0, d1))
            except FactorVersionNotFound:
                return math.nan, flag, 0
        common_t = self._factor_sum(parts)
        day_t = math.fsum([common_t, n_incomplete * (common_t / len(common))])
        return self._factor_sum([*rest, day_t]), flag, n_incomplete

    def _set_day(self, x: PeriodResult, d0: datetime, manual: bool) -> PeriodResult:
        """A source's day with its CO2 set by hand, or flagged S for an hour set by hand."""
        v = self._records.values("source", "day", x.source, d0).get("co2_t")
        if v is not None:
            return replace(x, co2_t=v, valid=True, flag=_S)
        return replace(x, flag=_S) if manual and x.valid else x

    def _day_intensity(self, u: int, hours: Sequence[UnitPeriod], cems_t: float,
                       out_mwh: float) -> tuple[float, int, int]:
        """(t/MWh or t/t, flag, hours used) of unit `u`'s day from its hours' intensities
        (`cems_t`: the day's accounted CO2, CEMS or factor method by the unit's basis).

        Like the CEMS day (HJ 75: ≥ min_valid_hours_per_day valid hours), the day's
        intensity is over the hours whose own intensity is valid: Σ CO2 / Σ output of those
        hours, valid with at least min_valid_hours_per_day of them. An hour without a valid
        output has no substitute, so counting its CO2 (substituted or not) over an output
        that lacks it would bias the ratio upwards; both sums are over the same hours. When
        every hour is valid the sums are the day's own CO2 and output.
        """
        use = [h for h in hours if h.intensity_flag is DataFlag.N
               and math.isfinite(self._co2_of(u, h)) and math.isfinite(self._output_of(u, h))]
        n = len(use)
        if n < self._min_hours:
            worst = max((int(h.intensity_flag) for h in hours), default=0)
            return math.nan, worst or _B, n
        if n < len(hours):
            cems_t = math.fsum(self._co2_of(u, h) for h in use)
            out_mwh = math.fsum(self._output_of(u, h) for h in use)
        return (cems_t / out_mwh if out_mwh > 0 else math.nan), _N, n

    def _stream_day(self, unit: UnitConfig, s: StreamConfig, d0: datetime, d1: datetime,
                    hours: Sequence[StreamPeriod]) -> list[StreamPeriod]:
        """A stream's day, one record per factor version in force (period_emissions)."""
        n_valid = sum(h.valid for h in hours)
        worst = max((int(h.flag) for h in hours if not h.valid), default=0)
        f = DataFlag(int(period_flag(n_valid, self._min_hours, worst)))
        note = ",".join(sorted({p for h in hours for p in h.note.split(",") if p}))
        set_q = self._records.values("stream", "day", s.id, d0).get("quantity")
        if set_q is not None:  # the day's quantity entered (a weighbridge, a delivery note)
            try:
                res = factors.result(self._table.at(s.factors, d0), s.calc_method, set_q,
                                     s.quantity_unit, d0, d1)
            except FactorVersionNotFound as exc:
                return [StreamPeriod(s.id, unit.id, d0, d1, set_q, s.quantity_unit, math.nan,
                                     "", s.calc_method, False, _S, n_valid, str(exc))]
            return [StreamPeriod(s.id, unit.id, d0, d1, set_q, s.quantity_unit, res.co2_t,
                                 res.factor_version, s.calc_method, True, _S, n_valid, note)]
        if f is DataFlag.N and any(h.flag is _S for h in hours):
            f = _S
        use = [h for h in hours if math.isfinite(h.quantity) and h.quantity >= 0]
        if not use:
            return [StreamPeriod(s.id, unit.id, d0, d1, math.nan, s.quantity_unit, math.nan, "",
                                 s.calc_method, False, f, n_valid, note)]
        t_s = np.array([h.t.timestamp() for h in use])
        q = np.array([h.quantity for h in use])
        try:
            results = factors.period_emissions(self._table, s.factors, s.calc_method,
                                               s.quantity_unit, t_s, q, d0, d1)
        except FactorVersionNotFound as exc:
            return [StreamPeriod(s.id, unit.id, d0, d1, math.fsum(q.tolist()),
                                 s.quantity_unit, math.nan, "", s.calc_method, False, f,
                                 n_valid, str(exc))]
        return [StreamPeriod(s.id, unit.id, res.period_start, res.period_end, res.quantity,
                             s.quantity_unit, res.co2_t, res.factor_version, s.calc_method,
                             f in (DataFlag.N, _S), f, n_valid, note) for res in results]

    # ------------------------------------------------------------------ restart

    def restore(self, hours: Sequence[PeriodRecords], days: Sequence[PeriodRecords]) -> None:
        """Continue from stored records after a restart, before any minute is added.

        `hours`: the stored hours, oldest first, of at least the substitution lookback and
        the day of the last one; `days`: the stored days of the last one's plant year and
        the 30 days before. The hour after the last stored one is then the open hour.
        """
        if not hours:
            return
        index = {sid: i for i, sid in enumerate(self.source_ids)}
        n = len(self.source_ids)
        step = timedelta(seconds=self._hour_s)
        expected: datetime | None = None
        for h in hours:
            while expected is not None and expected < h.t:  # a hole: an hour without data
                self._hist_conc.append(np.full(n, np.nan))
                self._hist_flow.append(np.full(n, np.nan))
                self._hist_valid.append(np.zeros(n, np.bool_))
                expected += step
            conc, flow, valid = np.full(n, np.nan), np.full(n, np.nan), np.zeros(n, np.bool_)
            for s in h.sources:
                if s.source in index:
                    i = index[s.source]
                    conc[i], flow[i], valid[i] = s.co2_dry_pct, s.flow_std_dry_m3_h, s.valid
            self._hist_conc.append(conc)
            self._hist_flow.append(flow)
            self._hist_valid.append(valid)
            expected = h.t_end
        last = hours[-1]
        self._hour = last.t_end
        self._last_t_s = last.t_end.timestamp() - self._minute_s
        day = self.clock.day_start(last.t)
        if self.clock.day_start(last.t_end) == day:
            self._day_hours = [h for h in hours if self.clock.day_start(h.t) == day
                               and self._compatible(h)]
        year = self.clock.year_bounds(self._hour)[0]
        self._year = year
        totals = [(d.t, self._site_t(d)) for d in days]
        self._year_days_t = math.fsum(t for d, t in totals if d >= year and math.isfinite(t))
        self._recent_days.extend(t for d, t in totals[-30:] if math.isfinite(t))

    def _compatible(self, h: PeriodRecords) -> bool:
        """Whether a stored hour has the records of the current configuration, in order."""
        return (tuple(s.source for s in h.sources) == self.source_ids
                and tuple(s.stream for s in h.streams) == tuple(s.id for _, s in self.streams)
                and tuple(u.unit for u in h.units) == tuple(u.id for u in self.config.units))


def warm_up() -> None:
    """Compile (or load from the on-disk cache) the kernels hours and days use."""
    rollup.warm_up()
    substitute.warm_up()
    one = np.zeros(2)
    counters.counter_deltas_kernel(one, one, np.zeros(2, np.uint8), 1.0, 1.0, 1.0, np.empty(0),
                                   np.empty(0), np.empty(0), np.empty(1),
                                   np.empty(1, np.uint8), np.empty(1, np.uint16))
