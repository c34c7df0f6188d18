"""Report tables from stored periods: pure, no I/O (the engine reads, the writers write).

A report covers whole plant-local days, months or years. Every figure comes from the
historian's day and hour records (model/records.py PeriodRecords) as the period stage
stored them; months and years are sums of days in plant local time (compute/clock.py),
as `recalc` sums them (compute/rollup.py rollup_total):

- CO2 of a source, stream or unit: Σ of its days' CO2 (substituted hours included, as the
  day records hold them); NaN when no day has one.
- valid-hour capture rate = Σ valid hours / hours of the period · 100, the period's hours
  counted on the UTC time line (a 25-hour day has 25, compute/clock.py hours_in).
- substituted and missing hours: Σ of the days'; the days without a record count all
  their hours as missing (compute/periods.py hours_of_absent_days).
- intensity of a month, year or the site = Σ CO2 / Σ output over the days whose own
  intensity is valid (a day's is already over its hours with a valid intensity).
- reconciliation of a month or year = (Σ CEMS − Σ factor) / Σ factor · 100 over the days
  that have both, checked against reconciliation.limit_pct.
- allowance position: the one stored with the last hour of the period.

Each column's key carries its unit (co2_cems_t, capture_rate_pct, output_mwh); the headers
are Chinese and English, the unit in both.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from compute import periods as period_rules
from compute.clock import PlantClock
from compute.config import CalculationConfig
from compute.factors import FACTOR_UNITS, FactorTable
from model.errors import InvalidValueError
from model.flags import DataFlag
from model.records import PeriodRecords, PeriodResult, StreamPeriod, UnitPeriod

Cell = str | float | int | bool | None
LEVELS = ("day", "month", "year")
KIND_LEVEL = {"daily": "day", "monthly": "month", "annual": "year"}
_LEVEL_ZH = {"day": "日", "month": "月", "year": "年"}
_QUANTITY_COLUMN = {"t": "quantity_t", "1e4m3": "quantity_1e4m3", "MWh": "quantity_mwh",
                    "GJ": "quantity_gj"}


@dataclass(frozen=True, slots=True)
class Column:
    """One column: its key (the unit in it), Chinese and English header."""

    key: str
    zh: str
    en: str

    @property
    def header(self) -> str:
        """The one-line header, "中文 English"."""
        return f"{self.zh} {self.en}"


@dataclass(frozen=True, slots=True)
class Table:
    """One table of a report (one sheet of the workbook)."""

    key: str
    zh: str
    en: str
    columns: tuple[Column, ...]
    rows: list[tuple[Cell, ...]] = field(default_factory=list)

    def column(self, key: str) -> list[Cell]:
        """The cells of one column, top to bottom."""
        i = [c.key for c in self.columns].index(key)
        return [r[i] for r in self.rows]

    def select(self, keys: Sequence[str]) -> Table:
        """The table with only the columns `keys`, in that order."""
        idx = [[c.key for c in self.columns].index(k) for k in keys]
        return Table(self.key, self.zh, self.en, tuple(self.columns[i] for i in idx),
                     [tuple(r[i] for i in idx) for r in self.rows])


@dataclass(frozen=True, slots=True)
class Report:
    """A whole report: what it is, what it covers and its tables."""

    kind: str
    zh: str
    en: str
    site_id: str
    site_name: str
    timezone: str
    start: datetime  # UTC
    end: datetime  # UTC, exclusive
    tables: tuple[Table, ...]
    notes: tuple[str, ...] = ()

    def table(self, key: str) -> Table:
        """The table of that key."""
        for t in self.tables:
            if t.key == key:
                return t
        raise KeyError(key)


PERIOD_COLUMNS = (Column("period", "周期", "Period (plant time)"),
                  Column("period_start_utc", "开始时间(UTC)", "Start (UTC)"))
SOURCE_COLUMNS = (
    *PERIOD_COLUMNS,
    Column("source", "排放源", "Source"), Column("unit", "机组", "Unit"),
    Column("co2_cems_t", "CEMS二氧化碳排放量(t)", "CO2 by CEMS (t)"),
    Column("co2_measured_t", "实测二氧化碳排放量(t)", "CO2 measured (t)"),
    Column("hours_h", "周期小时数(h)", "Hours in period (h)"),
    Column("valid_hours_h", "有效小时数(h)", "Valid hours (h)"),
    Column("capture_rate_pct", "有效小时捕集率(%)", "Valid-hour capture rate (%)"),
    Column("substituted_hours_h", "替代小时数(h)", "Substituted hours (h)"),
    Column("substitution_rule", "替代规则", "Substitution rule"),
    Column("missing_hours_h", "缺失小时数(h)", "Missing hours (h)"),
    Column("valid_days_d", "有效天数(d)", "Valid days (d)"),
    Column("days_d", "天数(d)", "Days (d)"),
    Column("flag", "数据标记", "Flag (HJ 212)"))
STREAM_COLUMNS = (
    *PERIOD_COLUMNS,
    Column("stream", "核算单元", "Stream"), Column("unit", "机组", "Unit"),
    Column("method", "核算方法", "Method"),
    Column("quantity_t", "消耗量(t)", "Quantity (t)"),
    Column("quantity_1e4m3", "消耗量(10⁴m³)", "Quantity (10^4 m3)"),
    Column("quantity_mwh", "电量(MWh)", "Quantity (MWh)"),
    Column("quantity_gj", "热量(GJ)", "Quantity (GJ)"),
    Column("co2_factor_t", "排放因子法二氧化碳(t)", "CO2 by factor method (t)"),
    Column("factor_version", "排放因子版本", "Factor version"),
    Column("valid_hours_h", "有效小时数(h)", "Valid hours (h)"),
    Column("flag", "数据标记", "Flag (HJ 212)"), Column("note", "说明", "Note"))
UNIT_COLUMNS = (
    *PERIOD_COLUMNS, Column("unit", "机组", "Unit"),
    Column("co2_cems_t", "CEMS二氧化碳排放量(t)", "CO2 by CEMS (t)"),
    Column("co2_factor_t", "排放因子法二氧化碳(t)", "CO2 by factor method (t)"),
    # The accounted CO2: CEMS or factor method by the unit's basis (its intensity's)
    Column("co2_t", "核算二氧化碳排放量(t)", "CO2 accounted (t)"),
    Column("output_mwh", "发电量(MWh)", "Output (MWh)"),
    Column("intensity_t_mwh", "排放强度(t/MWh)", "Intensity (t/MWh)"),
    # A unit whose output is a product (hot metal, lime …): in t, intensity t CO2/t
    Column("output_t", "产品产量(t)", "Output (t)"),
    Column("intensity_t_t", "产品排放强度(t/t)", "Intensity (t CO2/t)"),
    Column("reconciliation_diff_pct", "两法偏差(%)", "Reconciliation CEMS vs factor (%)"),
    Column("reconciliation_exceeded", "偏差超限", "Reconciliation limit exceeded"),
    Column("valid_days_d", "有效天数(d)", "Valid days (d)"),
    Column("flag", "数据标记", "Flag (HJ 212)"),
    # CO2 + other gases · GWP (compute/gases.py), and the GWP set(s) used
    Column("co2e_t", "二氧化碳当量排放量(t)", "CO2e (t)"),
    Column("gwp_set", "全球变暖潜势值版本", "GWP set"),
    # Hours whose CO2 holds a substitute (a source's hour, a carbon balance's filled hour)
    Column("substituted_h", "含替代数据小时数(h)", "Hours with substituted data (h)"))
SITE_COLUMNS = (
    *PERIOD_COLUMNS, Column("site", "厂区", "Site"),
    Column("co2_cems_t", "CEMS二氧化碳排放量(t)", "CO2 by CEMS (t)"),
    Column("co2_factor_t", "排放因子法二氧化碳(t)", "CO2 by factor method (t)"),
    Column("co2_t", "核算二氧化碳排放量(t)", "CO2 accounted (t)"),
    Column("output_mwh", "发电量(MWh)", "Output (MWh)"),
    Column("intensity_t_mwh", "排放强度(t/MWh)", "Intensity (t/MWh)"))
ALLOWANCE_COLUMNS = (
    *PERIOD_COLUMNS,
    Column("at", "时点(厂区时间)", "As of (plant time)"),
    Column("annual_t", "年度配额(t)", "Annual allowance (t)"),
    Column("ytd_t", "年累计排放(t)", "Year to date (t)"),
    Column("used_pct", "配额使用率(%)", "Allowance used (%)"),
    Column("headroom_t", "配额余量(t)", "Headroom (t)"),
    Column("forecast_year_end_t", "年末预测排放(t)", "Year-end forecast (t)"),
    Column("forecast_shortfall_t", "预测缺口(t)", "Forecast shortfall (t)"),
    Column("carbon_price_cny_t", "碳价(元/t)", "Carbon price (CNY/t)"),
    Column("shortfall_cost_cny", "缺口成本(元)", "Shortfall cost (CNY)"))
SUBSTITUTED_COLUMNS = (
    Column("hour", "小时(厂区时间)", "Hour (plant time)"),
    Column("hour_start_utc", "开始时间(UTC)", "Start (UTC)"),
    Column("source", "排放源", "Source"),
    Column("flag", "数据标记", "Flag (HJ 212)"),
    Column("substituted", "已替代", "Substituted"),
    Column("substitution_rule", "替代规则", "Substitution rule"),
    Column("co2_t", "计入二氧化碳(t)", "CO2 counted (t)"),
    Column("co2_dry_pct", "二氧化碳浓度(干基,%)", "CO2 dry (%)"),
    Column("flow_std_dry_m3_h", "标干流量(m³/h)", "Flow std dry (m3/h)"),
    Column("valid_minutes_min", "有效分钟数(min)", "Valid minutes (min)"),
    Column("note", "说明", "Note"))
FACTOR_COLUMNS = (
    Column("factor_version", "排放因子版本", "Factor version"),
    Column("factor_set", "因子集", "Factor set"),
    Column("effective_from", "生效时间(厂区时间)", "Effective from (plant time)"),
    Column("factor", "因子", "Factor"), Column("value", "数值", "Value"),
    Column("factor_unit", "单位", "Unit of the factor"),
    Column("origin", "来源类型", "Origin"),
    Column("document", "依据文件", "Document"))

GROUPINGS = {"source": SOURCE_COLUMNS, "stream": STREAM_COLUMNS, "unit": UNIT_COLUMNS,
             "site": SITE_COLUMNS, "allowance": ALLOWANCE_COLUMNS}


def cell_num(x: float) -> float | None:
    """A number for a report cell: None (an empty cell) for NaN and infinities."""
    return x if math.isfinite(x) else None


def _fsum(values: Iterable[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return math.fsum(finite) if finite else math.nan


class Periods:
    """The plant-local days, months or years a report covers, and their day records."""

    def __init__(self, clock: PlantClock, level: str, start: datetime, end: datetime,
                 max_periods: int = 40_000) -> None:
        if level not in LEVELS:
            raise InvalidValueError(f"period must be one of {', '.join(LEVELS)}, not {level!r}")
        if end <= start:
            raise InvalidValueError("the end of a report must be after its start")
        self.clock, self.level = clock, level
        self.bounds: list[tuple[datetime, datetime]] = []
        t = self.start_of(start)
        while t < end:
            t1 = self.end_of(t)
            self.bounds.append((t, t1))
            t = t1
            if len(self.bounds) > max_periods:
                raise InvalidValueError(f"a report covers at most {max_periods} {level}s")
        self.start, self.end = self.bounds[0][0], self.bounds[-1][1]

    def start_of(self, t: datetime) -> datetime:
        """Start (UTC) of the period of this level that contains `t`."""
        c = self.clock
        if self.level == "day":
            return c.day_start(t)
        return (c.month_bounds(t) if self.level == "month" else c.year_bounds(t))[0]

    def end_of(self, t: datetime) -> datetime:
        """End (UTC, exclusive) of the period starting at `t`."""
        c = self.clock
        if self.level == "day":
            return c.next_day(t)
        return (c.month_bounds(t) if self.level == "month" else c.year_bounds(t))[1]

    def label(self, t: datetime) -> str:
        """The period as plant people name it: 2026-01-01, 2026-01, 2026."""
        loc = self.clock.scaled_local(t)
        fmt = {"day": "%Y-%m-%d", "month": "%Y-%m", "year": "%Y"}[self.level]
        return loc.strftime(fmt)

    def group(self, records: Iterable[PeriodRecords]) -> list[list[PeriodRecords]]:
        """The records (days or hours) of each period, in period order."""
        out: list[list[PeriodRecords]] = [[] for _ in self.bounds]
        starts = [b[0] for b in self.bounds]
        for r in records:
            i = bisect.bisect_right(starts, r.t) - 1
            if i >= 0 and r.t < self.bounds[i][1]:
                out[i].append(r)
        return out

    def head(self, i: int) -> tuple[Cell, Cell]:
        """The period columns of period i."""
        t0 = self.bounds[i][0]
        return self.label(t0), t0.isoformat().replace("+00:00", "Z")


def _worst(flags: Iterable[DataFlag]) -> DataFlag:
    return DataFlag(max((int(f) for f in flags), default=int(DataFlag.B)))


def source_table(cfg: CalculationConfig, per: Periods,
                 days: list[list[PeriodRecords]]) -> Table:
    """Per period and source: CEMS CO2, valid-hour capture, substitution, missing hours."""
    rows: list[tuple[Cell, ...]] = []
    clock = per.clock
    for i, (t0, t1) in enumerate(per.bounds):
        hours = clock.hours_in(t0, t1)
        n_days = len(_day_starts(clock, t0, t1))
        for unit, src in cfg.sources():
            ds: list[PeriodResult] = [s for d in days[i] for s in d.sources if s.source == src.id]
            valid_days = sum(d.valid for d in ds)
            missing = sum(d.n_missing for d in ds) + period_rules.hours_of_absent_days(
                clock, t0, t1, [d.t for d in days[i] if any(s.source == src.id
                                                             for s in d.sources)])
            valid_h = sum(d.n_valid for d in ds)
            n_sub = sum(d.n_substituted for d in ds)
            flag = (DataFlag.N if ds and valid_days == n_days
                    else _worst(d.flag for d in ds if not d.valid) if ds else DataFlag.B)
            rules = sorted({d.substitution_rule for d in ds if d.substitution_rule})
            rows.append((*per.head(i), src.id, unit.id, cell_num(_fsum(d.co2_t for d in ds)),
                         cell_num(_fsum(d.co2_measured_t for d in ds)), hours, valid_h,
                         valid_h / hours * 100.0 if hours else None, n_sub, ",".join(rules),
                         missing, valid_days, n_days, flag.name))
    return Table("sources", "排放源", "Sources (CEMS)", SOURCE_COLUMNS, rows)


def _day_starts(clock: PlantClock, t0: datetime, t1: datetime) -> list[datetime]:
    out, t = [], t0
    while t < t1:
        out.append(t)
        t = clock.next_day(t)
    return out


def stream_table(cfg: CalculationConfig, per: Periods,
                 days: list[list[PeriodRecords]]) -> Table:
    """Per period and stream: quantity (in its unit's column), factor-method CO2 and the
    factor versions used."""
    rows: list[tuple[Cell, ...]] = []
    for i in range(len(per.bounds)):
        for unit, st in cfg.streams():
            parts: list[StreamPeriod] = [s for d in days[i] for s in d.streams
                                         if s.stream == st.id]
            q = cell_num(_fsum(p.quantity for p in parts))
            quantities: dict[str, float | None] = dict.fromkeys(_QUANTITY_COLUMN.values())
            quantities[_QUANTITY_COLUMN[st.quantity_unit]] = q
            versions = list(dict.fromkeys(p.factor_version for p in parts if p.factor_version))
            notes = sorted({n for p in parts for n in p.note.split(",") if n})
            flag = (DataFlag.N if parts and all(p.valid for p in parts)
                    else _worst(p.flag for p in parts if not p.valid) if parts else DataFlag.B)
            rows.append((*per.head(i), st.id, unit.id, st.calc_method,
                         *quantities.values(), cell_num(_fsum(p.co2_t for p in parts)),
                         ",".join(versions), sum(p.n_valid for p in parts), flag.name,
                         ",".join(notes)))
    return Table("streams", "核算单元", "Streams (emission-factor method)", STREAM_COLUMNS,
                 rows)


def _unit_days(days: list[PeriodRecords], unit: str) -> list[UnitPeriod]:
    return [u for d in days for u in d.units if u.unit == unit]


def _intensity(us: Sequence[UnitPeriod], product: bool = False) -> float:
    """Σ accounted CO2 / Σ output over the periods whose own intensity is valid: t/MWh, or
    t/t of a product (`product`). The accounted CO2, not the CEMS one: a unit accounted by
    the factor method has no CEMS CO2, and its intensity is over its factor CO2."""
    def output(u: UnitPeriod) -> float:
        return u.output_t if product else u.output_mwh

    ok = [u for u in us if math.isfinite(u.intensity_t_t if product else u.intensity_t_mwh)
          and output(u) > 0]
    out = math.fsum(output(u) for u in ok)
    return math.fsum(u.co2_t for u in ok) / out if ok and out > 0 else math.nan


def _reconciliation(us: Sequence[UnitPeriod]) -> float:
    both = [u for u in us if math.isfinite(u.co2_cems_t) and math.isfinite(u.co2_factor_t)]
    factor = math.fsum(u.co2_factor_t for u in both)
    if not both or factor <= 0:
        return math.nan
    return (math.fsum(u.co2_cems_t for u in both) - factor) / factor * 100.0


def unit_table(cfg: CalculationConfig, per: Periods, days: list[list[PeriodRecords]]) -> Table:
    """Per period and unit: CEMS and factor-method CO2, output, intensity, reconciliation."""
    rows: list[tuple[Cell, ...]] = []
    limit = cfg.reconciliation.limit_pct if cfg.reconciliation is not None else None
    for i, (t0, t1) in enumerate(per.bounds):
        n_days = len(_day_starts(per.clock, t0, t1))
        for unit in cfg.units:
            us = _unit_days(days[i], unit.id)
            if per.level == "day" and len(us) == 1:
                diff, exceeded = us[0].reconciliation_diff_pct, us[0].reconciliation_exceeded
                intensity = us[0].intensity_t_mwh
                intensity_t = us[0].intensity_t_t
            else:
                diff = _reconciliation(us)
                exceeded = limit is not None and math.isfinite(diff) and abs(diff) > limit
                intensity = _intensity(us)
                intensity_t = _intensity(us, product=True)
            valid_days = sum(u.valid for u in us)
            flag = (DataFlag.N if us and valid_days == n_days
                    else _worst(u.flag for u in us if not u.valid) if us else DataFlag.B)
            rows.append((*per.head(i), unit.id, cell_num(_fsum(u.co2_cems_t for u in us)),
                         cell_num(_fsum(u.co2_factor_t for u in us)),
                         cell_num(_fsum(u.co2_t for u in us)),
                         cell_num(_fsum(u.output_mwh for u in us)), cell_num(intensity),
                         cell_num(_fsum(u.output_t for u in us)), cell_num(intensity_t),
                         cell_num(diff), bool(exceeded), valid_days, flag.name,
                         cell_num(_fsum(u.co2e_t for u in us)),
                         ",".join(dict.fromkeys(u.gwp_set for u in us if u.gwp_set)),
                         sum(u.n_substituted for u in us)))
    return Table("units", "机组", "Units", UNIT_COLUMNS, rows)


def site_table(cfg: CalculationConfig, per: Periods, days: list[list[PeriodRecords]]) -> Table:
    """Per period: the site's CO2 by both methods, output and intensity."""
    rows: list[tuple[Cell, ...]] = []
    for i in range(len(per.bounds)):
        us = [u for d in days[i] for u in d.units]
        rows.append((*per.head(i), cfg.site.id, cell_num(_fsum(u.co2_cems_t for u in us)),
                     cell_num(_fsum(u.co2_factor_t for u in us)),
                     cell_num(_fsum(u.co2_t for u in us)),
                     cell_num(_fsum(u.output_mwh for u in us)), cell_num(_intensity(us))))
    return Table("site", "厂区", "Site", SITE_COLUMNS, rows)


def allowance_table(per: Periods, hours: list[list[PeriodRecords]]) -> Table:
    """Per period: the allowance position stored with the period's last hour."""
    rows: list[tuple[Cell, ...]] = []
    for i in range(len(per.bounds)):
        last = next((h for h in reversed(hours[i]) if h.allowance is not None), None)
        if last is None or last.allowance is None:
            rows.append((*per.head(i), None, *([None] * 8)))
            continue
        a = last.allowance
        at = per.clock.scaled_local(last.t_end)
        rows.append((*per.head(i), at.strftime("%Y-%m-%d %H:%M"), cell_num(a.annual_t),
                     cell_num(a.ytd_t), cell_num(a.used_pct), cell_num(a.headroom_t),
                     cell_num(a.forecast_year_end_t), cell_num(a.forecast_shortfall_t),
                     cell_num(a.carbon_price_cny_t), cell_num(a.shortfall_cost_cny)))
    return Table("allowance", "配额", "Allowance position", ALLOWANCE_COLUMNS, rows)


def substituted_table(clock: PlantClock, hours: Iterable[PeriodRecords]) -> Table:
    """Every source hour that is not valid: its flag, whether and by which rule it was
    substituted, the CO2 it counts and why it has none."""
    rows: list[tuple[Cell, ...]] = []
    for h in hours:
        for s in h.sources:
            if s.valid and not s.substituted:
                continue
            note = s.substitution_note or s.missing_reason
            rows.append((clock.scaled_local(h.t).strftime("%Y-%m-%d %H:%M"),
                         h.t.isoformat().replace("+00:00", "Z"), s.source, s.flag.name,
                         s.substituted, s.substitution_rule, cell_num(s.co2_t),
                         cell_num(s.co2_dry_pct), cell_num(s.flow_std_dry_m3_h), s.n_valid, note))
    return Table("substituted_hours", "无效及替代小时", "Invalid and substituted hours",
                 SUBSTITUTED_COLUMNS, rows)


def factor_table(clock: PlantClock, factors: FactorTable, used: Iterable[str]) -> Table:
    """The factor versions the report's streams used, one factor a row, with their origin:
    a lab entry (version `set@labN`) or the configured factor table (defaults)."""
    wanted = set(used)
    rows: list[tuple[Cell, ...]] = []
    for stream in factors.streams:
        for v in factors.versions(stream):
            if v.id not in wanted:
                continue
            origin = "化验录入 lab entry" if "@lab" in v.id else "因子表缺省值 default factor"
            for name, value in v.values.items():
                rows.append((v.id, v.stream,
                             clock.scaled_local(v.effective_from).strftime("%Y-%m-%d %H:%M"),
                             name, value, FACTOR_UNITS.get(name, ""), origin, v.source))
    return Table("factor_versions", "排放因子版本", "Factor versions used", FACTOR_COLUMNS, rows)


@dataclass(frozen=True, slots=True)
class ReportData:
    """What the historian gave for a report: its day and hour records, oldest first."""

    days: list[PeriodRecords]
    hours: list[PeriodRecords]


def emission_report(kind: str, cfg: CalculationConfig, clock: PlantClock, level: str,
                    start: datetime, end: datetime, data: ReportData,
                    factors: FactorTable) -> Report:
    """The daily, monthly or annual emission report of the site: site, units, sources,
    streams, allowance, invalid and substituted hours, factor versions."""
    per = Periods(clock, level, start, end)
    days, hours = per.group(data.days), per.group(data.hours)
    streams = stream_table(cfg, per, days)
    used = {v for cell in streams.column("factor_version") for v in str(cell or "").split(",")
            if v}
    tables = (site_table(cfg, per, days), unit_table(cfg, per, days),
              source_table(cfg, per, days), streams, allowance_table(per, hours),
              substituted_table(clock, (h for g in hours for h in g)),
              factor_table(clock, factors, used))
    zh = {"day": "碳排放日报", "month": "碳排放月报", "year": "碳排放年报"}[level]
    en = {"day": "Daily emission report", "month": "Monthly emission report",
          "year": "Annual emission report"}[level]
    return Report(kind, zh, en, cfg.site.id, cfg.site.name_zh or cfg.site.name,
                  cfg.site.timezone, per.start, per.end, tables, _notes(level))


def _notes(level: str) -> tuple[str, ...]:
    return (f"按厂区时间{_LEVEL_ZH[level]}统计；月、年为日数据之和。",
            "Periods in plant local time; months and years are sums of the stored days.",
            "替代小时计入排放量；实测排放量仅含有效小时。Substituted hours count in CO2 by "
            "CEMS; CO2 measured holds the valid hours only.",
            "空白：无数据。Empty cell: no value.")


def grouped_table(grouping: str, cfg: CalculationConfig, clock: PlantClock, level: str,
                  start: datetime, end: datetime, data: ReportData) -> Table:
    """The standard table of one grouping (source, stream, unit, site, allowance)."""
    per = Periods(clock, level, start, end)
    days = per.group(data.days)
    if grouping == "source":
        return source_table(cfg, per, days)
    if grouping == "stream":
        return stream_table(cfg, per, days)
    if grouping == "unit":
        return unit_table(cfg, per, days)
    if grouping == "site":
        return site_table(cfg, per, days)
    if grouping == "allowance":
        return allowance_table(per, per.group(data.hours))
    raise InvalidValueError(f"grouping must be one of {', '.join(GROUPINGS)}, not {grouping!r}")
