"""Carbon performance: the baseline year, targets broken down to units and quarters,
progress and deviation, and the intensity against benchmarks. Pure: no I/O
(server/performance.py reads the historian's days and hands the sums in).

The plant file's `performance:` section:

    performance:
      co2_basis: accounted             # accounted (each unit's basis) | cems | factor
      baseline:
        year: 2024
        source: "2024 verified emission report, 鄂碳核〔2025〕12"   # for entered values
        units: {U1: {co2_t: 3.1e6, output_mwh: 3.6e6}}
        # or: from_history: true       (Σ of the historian's stored days of that year)
      targets:
        - year: 2026
          site_co2_t: 5.8e6            # the year's absolute target, t CO2
          intensity_t_mwh: 0.82        # and / or an intensity target
          units: {U1: {share_pct: 55}, U2: {share_pct: 45}}   # or {co2_t: …}; a number: t
          quarters_pct: [27, 23, 24, 26]   # or quarters_co2_t: [...] (Σ = site_co2_t)
          source: "集团 2026 年碳排放目标分解"
      benchmarks:
        - {unit: U1, indicator: intensity_t_mwh, value: 0.8218, kind: benchmark,
           source: "全国碳市场 2025 年度配额分配方案, 300 MW 等级以上常规燃煤机组"}

Definitions (a "period" is the plant-local year to date or quarter to date, whole days):

- baseline intensity = Σ CO2 / Σ output of the baseline year (per unit; the site's is over
  every unit with a baseline);
- normalised baseline = baseline intensity × this period's actual output: what the
  baseline performance would have emitted for the output actually produced. The site's is
  the sum of its units' (so a change in the units' output mix is not counted as progress);
- target to date, prorated by days = annual target × elapsed days / days of the year;
  by the quarters' shares = Σ targets of the quarters passed + the current quarter's
  target × its elapsed days / its days. Without an absolute target but with an intensity
  target, the target to date is the intensity target × the actual output;
- deviation = actual − target (t), and / target · 100 (%): positive is above target;
- benchmark gap = actual intensity − benchmark value (t/MWh), and / value · 100 (%);
  ranked from the largest gap (%) down.

Output: a power unit's in MWh (intensities t CO2/MWh), a product unit's (output.rate_t_h:
hot metal, lime …) in t (intensities t CO2/t); the result names it per row (`output_unit`)
and the JSON keys carry it (`output_ytd_mwh` / `output_ytd_t`, `intensity_ytd_t_mwh` /
`intensity_ytd_t_t`). The site has an output and an intensity only when all its units'
outputs are of one kind; its tonnes (baseline, targets, deviations) always add up.
CO2 is each unit's accounted CO2 (`co2_basis: accounted`, its configured basis), or its
CEMS or factor-method figure.

Unit targets: `share_pct` of the site's target (all units' shares then add up to 100 %) or
an absolute `co2_t` (all units' then add up to the site's target, when one is given); a
unit's quarters are split in the same proportions as the site's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import date, timedelta
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, model_validator

from model.schema import ConfigModel, Problems

SITE = "site"  # the id of the site's row among the units'
QUARTER_START_MONTHS = (1, 4, 7, 10)
SUM_TOLERANCE_REL = 1e-6  # shares and tonnes that "add up": to a millionth
BENCHMARK_KINDS = ("benchmark", "best_in_class", "advanced")
Year = Annotated[int, Field(ge=2005, le=2100)]
PositiveT = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class BaselineUnitConfig(ConfigModel):
    """One unit's emissions and output in the baseline year, as entered (output in MWh for
    a power unit, in t for a product unit)."""

    co2_t: float = Field(ge=0, allow_inf_nan=False)
    output_mwh: PositiveT | None = None
    output_t: PositiveT | None = None

    @model_validator(mode="after")
    def _one_output(self) -> BaselineUnitConfig:
        if (self.output_mwh is None) == (self.output_t is None):
            raise ValueError("give 'output_mwh' (a power unit) or 'output_t' (a product "
                             "unit)")
        return self

    @property
    def output(self) -> float:
        """The output, in the unit's own unit."""
        out = self.output_mwh if self.output_mwh is not None else self.output_t
        assert out is not None
        return out

    @property
    def output_unit(self) -> str:
        """MWh or t."""
        return "MWh" if self.output_mwh is not None else "t"


class BaselineConfig(ConfigModel):
    """The baseline year: entered per unit (with the document they are from), or taken
    from the historian's stored days of that year (`from_history: true`)."""

    year: Year
    from_history: bool = False
    units: dict[str, BaselineUnitConfig] = Field(default_factory=dict)
    source: str = ""  # the document the entered values are from

    @model_validator(mode="after")
    def _one_way(self) -> BaselineConfig:
        if self.from_history and self.units:
            raise ValueError("give either 'units' (entered values) or 'from_history: true', "
                             "not both")
        if not self.from_history and not self.units:
            raise ValueError("give the baseline 'units' ({U1: {co2_t: …, output_mwh: …}}) or "
                             "'from_history: true'")
        if self.units and not self.source.strip():
            raise ValueError("entered baseline values need their 'source' (the document "
                             "they are from)")
        return self


def _number_is_tonnes(v: Any) -> Any:
    """A unit target given as a bare number is its absolute target in t CO2."""
    if isinstance(v, int | float) and not isinstance(v, bool):
        return {"co2_t": v}
    return v


class UnitTargetConfig(ConfigModel):
    """One unit's part of a year's target: a share of the site's or absolute tonnes, and /
    or an intensity target."""

    share_pct: float | None = Field(None, ge=0, le=100, allow_inf_nan=False)
    co2_t: float | None = Field(None, ge=0, allow_inf_nan=False)
    intensity_t_mwh: PositiveT | None = None  # a power unit's
    intensity_t_t: PositiveT | None = None  # a product unit's

    @model_validator(mode="after")
    def _some(self) -> UnitTargetConfig:
        if self.share_pct is not None and self.co2_t is not None:
            raise ValueError("give 'share_pct' or 'co2_t', not both")
        if self.intensity_t_mwh is not None and self.intensity_t_t is not None:
            raise ValueError("give 'intensity_t_mwh' or 'intensity_t_t', not both")
        if self.share_pct is None and self.co2_t is None and self.intensity is None:
            raise ValueError("give 'share_pct', 'co2_t' or 'intensity_t_mwh' / "
                             "'intensity_t_t'")
        return self

    @property
    def intensity(self) -> float | None:
        """The intensity target in the unit's own unit, None without one."""
        return self.intensity_t_mwh if self.intensity_t_mwh is not None else self.intensity_t_t


class TargetConfig(ConfigModel):
    """One year's target: the site's absolute and / or intensity target, its breakdown to
    units and quarters, and the document it is from."""

    year: Year
    site_co2_t: PositiveT | None = None
    intensity_t_mwh: PositiveT | None = None  # the site's (all its units power units)
    intensity_t_t: PositiveT | None = None  # the site's (all its units product units)
    units: dict[str, Annotated[UnitTargetConfig, BeforeValidator(_number_is_tonnes)]] = \
        Field(default_factory=dict)
    quarters_pct: tuple[float, float, float, float] | None = None
    quarters_co2_t: tuple[float, float, float, float] | None = None
    source: str = ""

    @model_validator(mode="after")
    def _some(self) -> TargetConfig:
        if (self.site_co2_t is None and self.intensity_t_mwh is None
                and self.intensity_t_t is None and not self.units):
            raise ValueError("give 'site_co2_t', 'intensity_t_mwh' / 'intensity_t_t' or unit "
                             "targets")
        if self.intensity_t_mwh is not None and self.intensity_t_t is not None:
            raise ValueError("give 'intensity_t_mwh' or 'intensity_t_t', not both")
        if self.quarters_pct is not None and self.quarters_co2_t is not None:
            raise ValueError("give 'quarters_pct' or 'quarters_co2_t', not both")
        return self


class BenchmarkConfig(ConfigModel):
    """A benchmark or best-in-class value of an indicator, with the document it is from."""

    unit: str | None = None  # None: the site
    indicator: Literal["intensity_t_mwh", "intensity_t_t"] = "intensity_t_mwh"
    value: PositiveT
    kind: Literal["benchmark", "best_in_class", "advanced"] = "benchmark"
    source: str = Field(min_length=1)


class PerformanceConfig(ConfigModel):
    """The plant file's `performance:` section (see the module's docstring)."""

    co2_basis: Literal["accounted", "cems", "factor"] = "accounted"
    baseline: BaselineConfig | None = None
    targets: list[TargetConfig] = Field(default_factory=list)
    benchmarks: list[BenchmarkConfig] = Field(default_factory=list)

    def target(self, year: int) -> TargetConfig | None:
        """The target of `year`, None without one."""
        return next((t for t in self.targets if t.year == year), None)


def _adds_up(total: float, want: float) -> bool:
    return abs(total - want) <= SUM_TOLERANCE_REL * max(abs(want), 1.0)


_INTENSITY_KEY = {"MWh": "intensity_t_mwh", "t": "intensity_t_t"}


def output_units(units: Mapping[str, str] | Sequence[str]) -> dict[str, str]:
    """Unit id → the unit of its output (MWh or t); a plain list of ids: all MWh."""
    if isinstance(units, Mapping):
        return dict(units)
    return {u: "MWh" for u in units}


def site_output_unit(units: Mapping[str, str]) -> str:
    """The site's output unit: its units' when all are of one kind, else "" (none)."""
    kinds = set(units.values())
    return kinds.pop() if len(kinds) == 1 else ""


def performance_problems(perf: PerformanceConfig,
                         units: Mapping[str, str] | Sequence[str]) -> Problems:
    """Checks of `performance:` against the plant's units (id → output unit, MWh or t)
    and of the breakdowns' sums; every problem names its key (e.g.
    `performance.targets[0].quarters_pct`)."""
    problems: Problems = []
    out = output_units(units)
    known = set(out)
    names = ", ".join(out)
    site_unit = site_output_unit(out)
    root = "performance"

    def intensity_key(path: str, who: str, given: str, unit: str) -> None:
        want = _INTENSITY_KEY.get(unit)
        if want is None:
            problems.append((path, f"{who} has no single output unit (its units' are MWh "
                             "and t): give intensities per unit"))
        elif given != want:
            problems.append((path, f"{who}'s output is in {unit}: give {want}, not {given}"))

    if perf.baseline is not None:
        for u, bu in perf.baseline.units.items():
            if u not in known:
                problems.append((f"{root}.baseline.units.{u}", f"unknown unit {u!r} "
                                 f"(units: {names})"))
            elif bu.output_unit != out[u]:
                key = "output_mwh" if out[u] == "MWh" else "output_t"
                problems.append((f"{root}.baseline.units.{u}", f"unit {u}'s output is in "
                                 f"{out[u]}: give {key}"))
    years: set[int] = set()
    for i, t in enumerate(perf.targets):
        path = f"{root}.targets[{i}]"
        if t.year in years:
            problems.append((f"{path}.year", f"a second target for {t.year}"))
        years.add(t.year)
        for u, x in t.units.items():
            if u not in known:
                problems.append((f"{path}.units.{u}", f"unknown unit {u!r} (units: {names})"))
            elif x.intensity is not None:
                given = "intensity_t_mwh" if x.intensity_t_mwh is not None else "intensity_t_t"
                intensity_key(f"{path}.units.{u}.{given}", f"unit {u}", given, out[u])
        for given in ("intensity_t_mwh", "intensity_t_t"):
            if getattr(t, given) is not None:
                intensity_key(f"{path}.{given}", "the site", given, site_unit)
        shares = {u: x.share_pct for u, x in t.units.items() if x.share_pct is not None}
        tonnes = {u: x.co2_t for u, x in t.units.items() if x.co2_t is not None}
        if shares and tonnes:
            problems.append((f"{path}.units", "give every unit's target as 'share_pct' or "
                             f"every unit's as 'co2_t', not a mix ({', '.join(shares)} as "
                             f"shares, {', '.join(tonnes)} as t)"))
        elif shares:
            total = math.fsum(shares.values())
            if t.site_co2_t is None:
                problems.append((f"{path}.units", "unit shares need the site's target: set "
                                 "'site_co2_t'"))
            elif not _adds_up(total, 100.0):
                problems.append((f"{path}.units", f"the units' share_pct add up to {total:g} %,"
                                 " not 100 %"))
        elif tonnes and t.site_co2_t is not None:
            total = math.fsum(tonnes.values())
            if not _adds_up(total, t.site_co2_t):
                problems.append((f"{path}.units", f"the units' co2_t add up to {total:g} t, "
                                 f"not site_co2_t {t.site_co2_t:g} t"))
        if t.quarters_pct is not None or t.quarters_co2_t is not None:
            key = "quarters_pct" if t.quarters_pct is not None else "quarters_co2_t"
            qs = t.quarters_pct if t.quarters_pct is not None else t.quarters_co2_t
            assert qs is not None
            if any(not (math.isfinite(q) and q >= 0) for q in qs):
                problems.append((f"{path}.{key}", "every quarter must be a number ≥ 0"))
            elif t.site_co2_t is None and not tonnes:
                problems.append((f"{path}.{key}", "quarters need the year's target: set "
                                 "'site_co2_t'"))
            elif key == "quarters_pct" and not _adds_up(math.fsum(qs), 100.0):
                problems.append((f"{path}.{key}", f"the quarters add up to {math.fsum(qs):g} %"
                                 ", not 100 %"))
            elif key == "quarters_co2_t":
                year_t = t.site_co2_t if t.site_co2_t is not None else math.fsum(
                    tonnes.values())
                if not _adds_up(math.fsum(qs), year_t):
                    problems.append((f"{path}.{key}", f"the quarters add up to "
                                     f"{math.fsum(qs):g} t, not the year's {year_t:g} t"))
    for i, b in enumerate(perf.benchmarks):
        if b.unit is not None and b.unit not in known:
            problems.append((f"{root}.benchmarks[{i}].unit", f"unknown unit {b.unit!r} "
                             f"(units: {names})"))
        elif b.unit is not None:
            intensity_key(f"{root}.benchmarks[{i}].indicator", f"unit {b.unit}", b.indicator,
                          out[b.unit])
        else:
            intensity_key(f"{root}.benchmarks[{i}].indicator", "the site", b.indicator,
                          site_unit)
    return problems


# ------------------------------------------------------------------ calendar


def quarter_of(d: date) -> int:
    """The quarter (1–4) of a date."""
    return (d.month - 1) // 3 + 1


def quarter_bounds(year: int, q: int) -> tuple[date, date]:
    """First day of quarter `q` of `year` and the first day after it."""
    start = date(year, QUARTER_START_MONTHS[q - 1], 1)
    end = date(year + 1, 1, 1) if q == 4 else date(year, QUARTER_START_MONTHS[q], 1)
    return start, end


@dataclass(frozen=True, slots=True)
class Calendar:
    """Whole plant-local days of a year passed by `as_of` (exclusive), and of its quarter."""

    year: int
    as_of: date  # the first day not counted (clipped to the year)
    days_in_year_d: int
    days_elapsed_d: int
    quarter: int  # the quarter of the last day counted (1 before any)
    quarter_days_d: int
    quarter_days_elapsed_d: int

    @staticmethod
    def of(year: int, as_of: date) -> Calendar:
        """The calendar of `year` with the days before `as_of` passed."""
        y0, y1 = date(year, 1, 1), date(year + 1, 1, 1)
        end = min(max(as_of, y0), y1)
        # The quarter of the last closed day: on 1 April the quarter to date is Q1, complete.
        q = quarter_of(end - timedelta(days=1)) if end > y0 else 1
        q0, q1 = quarter_bounds(year, q)
        return Calendar(year, end, (y1 - y0).days, (end - y0).days, q,
                        (q1 - q0).days, (min(end, q1) - q0).days)

    def quarter_days(self) -> tuple[int, int, int, int]:
        """The days of each quarter of the year."""
        out = [(b - a).days for a, b in (quarter_bounds(self.year, q) for q in (1, 2, 3, 4))]
        return out[0], out[1], out[2], out[3]


# ------------------------------------------------------------------ results


@dataclass(frozen=True, slots=True)
class Sums:
    """Σ CO2 and Σ output of some days (output in its unit's unit, MWh or t)."""

    co2_t: float = 0.0
    output: float = 0.0

    @property
    def intensity(self) -> float:
        """Σ CO2 / Σ output (t/MWh or t/t); NaN without output."""
        return self.co2_t / self.output if self.output > 0 else math.nan


def _total(xs: Sequence[Sums]) -> Sums:
    return Sums(math.fsum(x.co2_t for x in xs), math.fsum(x.output for x in xs))


def _dev(actual: float, target: float) -> tuple[float, float]:
    """(actual − target, that / target · 100); NaN where there is no target."""
    if not math.isfinite(target):
        return math.nan, math.nan
    d = actual - target
    return d, (d / target * 100.0 if target > 0 else math.nan)


@dataclass(frozen=True, slots=True)
class Progress:
    """One unit's (or the site's) performance in a year to date.

    Outputs and intensities are in `output_unit` (MWh: t CO2/MWh; t: t CO2/t): a unit's
    kind decides, so those fields name no unit here; the JSON keys do (progress_json).
    """

    id: str  # the unit id, or SITE
    output_unit: str  # "MWh", "t"; "" for a site of both kinds (no output, no intensity)
    co2_ytd_t: float
    output_ytd: float
    intensity_ytd: float
    co2_qtd_t: float
    output_qtd: float
    intensity_qtd: float
    baseline_co2_t: float  # NaN: no baseline
    baseline_output: float
    baseline_intensity: float
    normalised_baseline_ytd_t: float  # baseline intensity × output to date
    vs_baseline_t: float  # actual − normalised baseline
    vs_baseline_pct: float
    target_year_t: float  # NaN: no absolute target
    target_intensity: float  # NaN: no intensity target
    target_quarter_t: float  # the current quarter's whole target
    target_ytd_t: float  # prorated by days
    target_ytd_quarters_t: float  # by the quarters' shares
    target_qtd_t: float  # the quarter's target prorated by its days
    deviation_ytd_t: float
    deviation_ytd_pct: float
    deviation_ytd_quarters_t: float
    deviation_ytd_quarters_pct: float
    deviation_qtd_t: float
    deviation_qtd_pct: float
    intensity_deviation: float  # actual − target intensity
    intensity_deviation_pct: float
    target_used_pct: float  # actual / the year's whole target · 100


@dataclass(frozen=True, slots=True)
class BenchmarkGap:
    """The actual intensity (to date) against one benchmark value."""

    unit: str  # or SITE
    indicator: str
    kind: str
    value: float  # in the indicator's unit (t/MWh, t/t)
    source: str
    actual: float
    gap: float  # actual − value, in the indicator's unit
    gap_pct: float
    rank: int  # 1: the largest gap (%); 0: no actual value to rank


@dataclass(frozen=True, slots=True)
class Performance:
    """The performance of a year as of a day: per unit, the site, the benchmarks."""

    calendar: Calendar
    co2_basis: str
    baseline_year: int | None
    baseline_source: str
    target_source: str
    units: tuple[Progress, ...]
    site: Progress
    benchmarks: tuple[BenchmarkGap, ...]

    def row(self, ident: str) -> Progress | None:
        """The progress of a unit, or of the site (SITE); None if unknown."""
        if ident == SITE:
            return self.site
        return next((p for p in self.units if p.id == ident), None)


def baseline_sums(cfg: PerformanceConfig, history: Mapping[str, Sums] | None = None,
                  ) -> dict[str, Sums]:
    """Per unit, the baseline year's sums: entered ones, or `history`'s (from_history)."""
    b = cfg.baseline
    if b is None:
        return {}
    if b.from_history:
        return {u: s for u, s in (history or {}).items() if s.output > 0}
    return {u: Sums(x.co2_t, x.output) for u, x in b.units.items()}


def _quarter_weights(t: TargetConfig, cal: Calendar) -> tuple[float, float, float, float]:
    """Each quarter's fraction of the year's target: as configured, else by its days."""
    if t.quarters_pct is not None:
        qs: Sequence[float] = t.quarters_pct
    elif t.quarters_co2_t is not None:
        qs = t.quarters_co2_t
    else:
        qs = [float(d) for d in cal.quarter_days()]
    total = math.fsum(qs)
    w = [q / total if total > 0 else 0.0 for q in qs]
    return w[0], w[1], w[2], w[3]


def _unit_year_targets(t: TargetConfig | None) -> dict[str, float]:
    """Per unit, its absolute target of the year (t)."""
    if t is None:
        return {}
    out: dict[str, float] = {}
    for u, x in t.units.items():
        if x.co2_t is not None:
            out[u] = x.co2_t
        elif x.share_pct is not None and t.site_co2_t is not None:
            out[u] = t.site_co2_t * x.share_pct / 100.0
    return out


def progress(ident: str, unit: str, ytd: Sums, qtd: Sums, base: Sums | None,
             normalised_t: float, year_t: float, intensity: float, weights: Sequence[float],
             cal: Calendar) -> Progress:
    """One row of progress from its sums and targets (NaN where there is none); `unit`
    the output's ("" for none: output and intensities NaN)."""
    nan = math.nan
    if not unit:  # outputs of both kinds: their sum means nothing
        ytd, qtd = Sums(ytd.co2_t, nan), Sums(qtd.co2_t, nan)
        base = Sums(base.co2_t, nan) if base is not None else None
    b_i = base.intensity if base is not None else nan
    vs_t, vs_pct = _dev(ytd.co2_t, normalised_t)
    q = cal.quarter
    if math.isfinite(year_t):
        target_q = year_t * weights[q - 1]
        target_ytd = year_t * cal.days_elapsed_d / cal.days_in_year_d
        target_qtd = target_q * cal.quarter_days_elapsed_d / cal.quarter_days_d
        target_ytd_q = math.fsum(year_t * w for w in weights[:q - 1]) + target_qtd
        used = ytd.co2_t / year_t * 100.0 if year_t > 0 else nan
    elif math.isfinite(intensity):  # an intensity target: tonnes for this output
        target_q = nan
        target_ytd = target_ytd_q = intensity * ytd.output
        target_qtd = intensity * qtd.output
        used = nan
    else:
        target_q = target_ytd = target_ytd_q = target_qtd = used = nan
    d_ytd = _dev(ytd.co2_t, target_ytd)
    d_ytdq = _dev(ytd.co2_t, target_ytd_q)
    d_qtd = _dev(qtd.co2_t, target_qtd)
    i_dev = _dev(ytd.intensity, intensity)
    return Progress(ident, unit, ytd.co2_t, ytd.output, ytd.intensity, qtd.co2_t,
                    qtd.output, qtd.intensity, base.co2_t if base is not None else nan,
                    base.output if base is not None else nan, b_i, normalised_t, vs_t,
                    vs_pct, year_t, intensity, target_q, target_ytd, target_ytd_q,
                    target_qtd, *d_ytd, *d_ytdq, *d_qtd, *i_dev, used)


def benchmark_gaps(benchmarks: Sequence[BenchmarkConfig],
                   actual: Mapping[str, float]) -> tuple[BenchmarkGap, ...]:
    """Each benchmark against the actual intensity of its unit (SITE for none), ranked
    from the largest gap (%) down; one without an actual value is ranked 0, last."""
    rows = []
    for b in benchmarks:
        who = b.unit or SITE
        a = actual.get(who, math.nan)
        gap = a - b.value
        rows.append(BenchmarkGap(who, b.indicator, b.kind, b.value, b.source, a, gap,
                                 gap / b.value * 100.0, 0))
    ranked = sorted((r for r in rows if math.isfinite(r.gap_pct)), key=lambda r: -r.gap_pct)
    rank = {id(r): i + 1 for i, r in enumerate(ranked)}
    out = [BenchmarkGap(r.unit, r.indicator, r.kind, r.value, r.source, r.actual, r.gap,
                        r.gap_pct, rank.get(id(r), 0)) for r in rows]
    return tuple(sorted(out, key=lambda r: (r.rank == 0, r.rank)))


def performance(cfg: PerformanceConfig, units: Mapping[str, str] | Sequence[str], year: int,
                as_of: date, quarters: Mapping[str, Sequence[Sums]],
                baseline: Mapping[str, Sums]) -> Performance:
    """The performance of `year` with the days before `as_of` counted.

    `units`: unit id → its output unit (MWh, t), or a list of power units' ids;
    `quarters`: per unit, the sums of its stored days in each quarter of the year (four,
    up to `as_of`); `baseline`: per unit, the baseline year's sums (`baseline_sums`).
    """
    out_unit = output_units(units)
    unit_ids = list(out_unit)
    cal = Calendar.of(year, as_of)
    t = cfg.target(year)
    weights = _quarter_weights(t, cal) if t is not None else (0.25,) * 4
    unit_year = _unit_year_targets(t)
    nan = math.nan
    rows = []
    ytds: list[Sums] = []
    qtds: list[Sums] = []
    normalised: list[float] = []
    for u in unit_ids:
        qs = list(quarters.get(u, ())) + [Sums()] * 4
        ytd = _total(qs[:cal.quarter])
        qtd = qs[cal.quarter - 1]
        base = baseline.get(u)
        norm = base.intensity * ytd.output if base is not None else nan
        ut = t.units.get(u) if t is not None else None
        u_int = ut.intensity if ut is not None and ut.intensity is not None else nan
        rows.append(progress(u, out_unit[u], ytd, qtd, base, norm, unit_year.get(u, nan),
                             u_int, weights, cal))
        ytds.append(ytd)
        qtds.append(qtd)
        if base is not None:
            normalised.append(norm)
    based = [baseline[u] for u in unit_ids if u in baseline]
    site_base = _total(based) if based else None
    site_norm = math.fsum(normalised) if normalised else nan
    site_year = (t.site_co2_t if t is not None and t.site_co2_t is not None
                 else math.fsum(unit_year.values()) if unit_year else nan)
    site_int = nan
    if t is not None:
        given = t.intensity_t_mwh if t.intensity_t_mwh is not None else t.intensity_t_t
        site_int = given if given is not None else nan
    site = progress(SITE, site_output_unit(out_unit), _total(ytds), _total(qtds), site_base,
                    site_norm, site_year, site_int, weights, cal)
    actual = {p.id: p.intensity_ytd for p in (*rows, site)}
    b = cfg.baseline
    source = ("" if b is None else f"historian {b.year}" if b.from_history else b.source)
    return Performance(cal, cfg.co2_basis, b.year if b is not None else None, source,
                       t.source if t is not None else "", tuple(rows), site,
                       benchmark_gaps(cfg.benchmarks, actual))


# ------------------------------------------------------------------ JSON


def _num(x: float) -> float | None:
    return x if math.isfinite(x) else None


_OUTPUT_FIELDS = ("output_ytd", "output_qtd", "baseline_output")
_INTENSITY_FIELDS = ("intensity_ytd", "intensity_qtd", "baseline_intensity",
                     "target_intensity", "intensity_deviation")


def progress_json(p: Progress) -> dict[str, Any]:
    """A row of progress as JSON (NaN as null); every key names its unit: outputs end in
    _mwh or _t, intensities in _t_mwh or _t_t (a site of both kinds: _mwh, null)."""
    out_sfx = "_t" if p.output_unit == "t" else "_mwh"
    int_sfx = "_t_t" if p.output_unit == "t" else "_t_mwh"
    out: dict[str, Any] = {}
    for f in fields(p):
        v = getattr(p, f.name)
        key = ("unit" if f.name == "id" else f.name + out_sfx if f.name in _OUTPUT_FIELDS
               else f.name + int_sfx if f.name in _INTENSITY_FIELDS else f.name)
        out[key] = _num(v) if isinstance(v, float) else v
    return out


def performance_json(p: Performance) -> dict[str, Any]:
    """The whole performance as JSON: calendar, baseline, units, site, benchmarks."""
    c = p.calendar
    return {
        "year": c.year, "as_of": c.as_of.isoformat(), "days_in_year_d": c.days_in_year_d,
        "days_elapsed_d": c.days_elapsed_d, "quarter": c.quarter,
        "quarter_days_d": c.quarter_days_d, "quarter_days_elapsed_d": c.quarter_days_elapsed_d,
        "co2_basis": p.co2_basis, "baseline_year": p.baseline_year,
        "baseline_source": p.baseline_source, "target_source": p.target_source,
        "units": [progress_json(u) for u in p.units], "site": progress_json(p.site),
        "benchmarks": [{"unit": b.unit, "indicator": b.indicator, "kind": b.kind,
                        f"value_{b.indicator}": b.value, "source": b.source,
                        f"actual_{b.indicator}": _num(b.actual),
                        f"gap_{b.indicator}": _num(b.gap), "gap_pct": _num(b.gap_pct),
                        "rank": b.rank} for b in p.benchmarks],
    }
