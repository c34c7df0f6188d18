"""Carbon-performance sheets (issue 18): pure, no I/O.

From what server/performance.py PerformanceKeeper answers (the engine reads it), per
compliance year the report covers:

- progress per unit and for the site: baseline, normalised baseline, actual, targets and
  deviations to date (the year's days before the report is made, a past year all of it);
- per quarter begun: the quarter's actual against its target and the deviation;
- the benchmark comparison, ranked, each value with the document it is from.

The `performance` report kind is these three sheets alone; the annual report carries them
after its emission sheets.
"""

from __future__ import annotations

from collections.abc import Sequence

from compute.performance import Performance, Progress
from server.reports.tables import Cell, Column, Table
from server.reports.tables import cell_num as _num

_SITE_ZH = "全厂 site"


PROGRESS_COLUMNS = (
    Column("year", "年度", "Year"),
    Column("as_of", "统计截至(不含)", "Days before"),
    Column("unit", "机组", "Unit"),
    Column("baseline_year", "基准年", "Baseline year"),
    Column("baseline_co2_t", "基准年排放(t)", "Baseline CO2 (t)"),
    Column("output_unit", "产出单位", "Output unit"),
    Column("baseline_output", "基准年产出(MWh或t)", "Baseline output (MWh or t)"),
    Column("baseline_intensity", "基准强度(t/MWh或t/t)", "Baseline intensity (t/MWh or t/t)"),
    Column("co2_ytd_t", "年累计排放(t)", "CO2 year to date (t)"),
    Column("output_ytd", "年累计产出(MWh或t)", "Output year to date (MWh or t)"),
    Column("intensity_ytd", "年累计强度(t/MWh或t/t)", "Intensity year to date (t/MWh or t/t)"),
    Column("normalised_baseline_ytd_t", "按产出折算基准排放(t)",
       "Baseline normalised to output (t)"),
    Column("vs_baseline_t", "较折算基准(t)", "Against normalised baseline (t)"),
    Column("vs_baseline_pct", "较折算基准(%)", "Against normalised baseline (%)"),
    Column("target_year_t", "年度目标(t)", "Target of the year (t)"),
    Column("target_intensity", "强度目标(t/MWh或t/t)", "Intensity target (t/MWh or t/t)"),
    Column("target_ytd_t", "按天折算目标(t)", "Target to date, by days (t)"),
    Column("deviation_ytd_t", "偏差(t)", "Deviation (t)"),
    Column("deviation_ytd_pct", "偏差(%)", "Deviation (%)"),
    Column("target_ytd_quarters_t", "按季度分解目标(t)", "Target to date, by quarters (t)"),
    Column("deviation_ytd_quarters_t", "按季度偏差(t)", "Deviation by quarters (t)"),
    Column("deviation_ytd_quarters_pct", "按季度偏差(%)", "Deviation by quarters (%)"),
    Column("intensity_deviation", "强度偏差(t/MWh或t/t)", "Intensity deviation (t/MWh or t/t)"),
    Column("intensity_deviation_pct", "强度偏差(%)", "Intensity deviation (%)"),
    Column("target_used_pct", "年度目标已用(%)", "Target of the year used (%)"))
QUARTER_COLUMNS = (
    Column("year", "年度", "Year"),
    Column("quarter", "季度", "Quarter"),
    Column("days_d", "已统计天数(d)", "Days counted (d)"),
    Column("unit", "机组", "Unit"),
    Column("co2_t", "季度排放(t)", "CO2 of the quarter (t)"),
    Column("output_unit", "产出单位", "Output unit"),
    Column("output", "季度产出(MWh或t)", "Output of the quarter (MWh or t)"),
    Column("intensity", "季度强度(t/MWh或t/t)", "Intensity of the quarter (t/MWh or t/t)"),
    Column("target_quarter_t", "季度目标(t)", "Target of the quarter (t)"),
    Column("target_qtd_t", "按天折算季度目标(t)", "Quarter's target to date (t)"),
    Column("deviation_t", "偏差(t)", "Deviation (t)"),
    Column("deviation_pct", "偏差(%)", "Deviation (%)"))
BENCHMARK_COLUMNS = (
    Column("year", "年度", "Year"),
    Column("rank", "排名", "Rank"),
    Column("unit", "机组", "Unit"),
    Column("indicator", "指标", "Indicator"),
    Column("kind", "类型", "Kind"),
    Column("value", "对标值(按指标单位)", "Benchmark value (indicator's unit)"),
    Column("actual", "实际值(按指标单位)", "Actual (indicator's unit)"),
    Column("gap", "差距(按指标单位)", "Gap (indicator's unit)"),
    Column("gap_pct", "差距(%)", "Gap (%)"),
    Column("source", "来源", "Source"))
_KIND_ZH = {"benchmark": "基准值 benchmark", "best_in_class": "先进值 best in class",
            "advanced": "领先值 advanced"}


def _unit(ident: str) -> str:
    return _SITE_ZH if ident == "site" else ident


def _rows(p: Performance) -> list[Progress]:
    return [*p.units, p.site]


def progress_table(perfs: Sequence[Performance]) -> Table:
    """Per year, per unit and the site: baseline, actual, targets and deviations to date."""
    rows: list[tuple[Cell, ...]] = []
    for p in perfs:
        for r in _rows(p):
            rows.append((p.calendar.year, p.calendar.as_of.isoformat(), _unit(r.id),
                         p.baseline_year, _num(r.baseline_co2_t), r.output_unit or None,
                         _num(r.baseline_output), _num(r.baseline_intensity),
                         _num(r.co2_ytd_t), _num(r.output_ytd), _num(r.intensity_ytd),
                         _num(r.normalised_baseline_ytd_t), _num(r.vs_baseline_t),
                         _num(r.vs_baseline_pct), _num(r.target_year_t),
                         _num(r.target_intensity), _num(r.target_ytd_t),
                         _num(r.deviation_ytd_t), _num(r.deviation_ytd_pct),
                         _num(r.target_ytd_quarters_t), _num(r.deviation_ytd_quarters_t),
                         _num(r.deviation_ytd_quarters_pct), _num(r.intensity_deviation),
                         _num(r.intensity_deviation_pct), _num(r.target_used_pct)))
    return Table("performance", "碳绩效进度", "Carbon performance to date", PROGRESS_COLUMNS,
                 rows)


def quarter_table(quarters: Sequence[Sequence[Performance]]) -> Table:
    """Per year and quarter begun (each the year's performance at the quarter's end)."""
    rows: list[tuple[Cell, ...]] = []
    for ends in quarters:
        for p in ends:
            c = p.calendar
            for r in _rows(p):
                rows.append((c.year, f"Q{c.quarter}", c.quarter_days_elapsed_d, _unit(r.id),
                             _num(r.co2_qtd_t), r.output_unit or None, _num(r.output_qtd),
                             _num(r.intensity_qtd), _num(r.target_quarter_t),
                             _num(r.target_qtd_t), _num(r.deviation_qtd_t),
                             _num(r.deviation_qtd_pct)))
    return Table("performance_quarters", "季度目标完成", "Quarters against their targets",
                 QUARTER_COLUMNS, rows)


def benchmark_table(perfs: Sequence[Performance]) -> Table:
    """Per year, the benchmark comparison in rank order, each with its source."""
    rows: list[tuple[Cell, ...]] = []
    for p in perfs:
        for b in p.benchmarks:
            rows.append((p.calendar.year, b.rank or None, _unit(b.unit),
                         f"{b.indicator}", _KIND_ZH.get(b.kind, b.kind), b.value,
                         _num(b.actual), _num(b.gap), _num(b.gap_pct), b.source))
    return Table("performance_benchmarks", "对标", "Against benchmarks", BENCHMARK_COLUMNS,
                 rows)


def performance_tables(perfs: Sequence[Performance],
                       quarters: Sequence[Sequence[Performance]]) -> tuple[Table, ...]:
    """The three performance sheets: `perfs` one per year (to date), `quarters` each
    year's performances at its quarters' ends."""
    return progress_table(perfs), quarter_table(quarters), benchmark_table(perfs)


def performance_notes(perfs: Sequence[Performance]) -> tuple[str, ...]:
    """Where the baseline and the targets come from, and what the figures count."""
    notes = ["碳绩效：仅统计已结束并已存储的日；偏差为正表示高于目标。Carbon performance: closed, "
             "stored days only; a positive deviation is above the target."]
    for p in perfs:
        if p.baseline_year is not None:
            notes.append(f"{p.calendar.year}: 基准年 baseline {p.baseline_year} "
                         f"({p.baseline_source}); 目标来源 target source: "
                         f"{p.target_source or '—'}; CO2: {p.co2_basis}")
    return tuple(notes)
