"""The report maker: reads the stored days and hours, builds a report and writes it.

Used by `carbonscada report` (the historian file opened for the command), by
GET /api/v1/reports/{kind} and by the schedule (the running server's historian). The
historian reads on its own thread; building and writing run in a worker thread, so a
year's report never holds up the event loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from compute.assets import AssetEntry, CompliancePosition
from compute.clock import PlantClock
from compute.factors import FactorTable
from compute.performance import Performance
from model.errors import InvalidValueError
from model.records import PeriodRecords
from server.reports.boundaries import boundary_table
from server.reports.carbon import carbon_tables
from server.reports.cases import case_table
from server.reports.config import BUILT_IN, FORMATS
from server.reports.definition import ReportDefinition, custom_report
from server.reports.monitoring import conformity_table, plan_table
from server.reports.performance import performance_notes, performance_tables
from server.reports.platform import platform_report
from server.reports.tables import (
    KIND_LEVEL,
    Periods,
    Report,
    ReportData,
    Table,
    emission_report,
)
from server.reports.writers import CONTENT_TYPES, render
from web.monitoring_plan import DayConformity, PlanRow

MAX_PERIODS = 400  # days of a daily report (a year and some), months of a monthly one …
MAX_PDF_PERIODS = 62  # a PDF is for print: two months of days, five years of months


class StoredPeriods(Protocol):
    """Where stored hours and days come from (server/historian.py Historian)."""

    async def periods(self, level: str, start: datetime, end: datetime) -> list[PeriodRecords]:
        """The stored hours or days with start ≤ t < end, oldest first."""
        ...


class CarbonLedger(Protocol):
    """What the carbon-asset sheets read (server/assets.py AssetKeeper)."""

    def entries(self, kind: str | None = None) -> Sequence[AssetEntry | Mapping[str, Any]]:
        """Every ledger entry (optionally of one kind), oldest first."""
        ...

    async def position(self, year: int | None = None) -> CompliancePosition:
        """The compliance position of `year` now."""
        ...


CARBON_KINDS = ("monthly", "annual")  # the reports that carry the carbon-asset sheets


class CaseListing(Protocol):
    """What the cases sheet reads (server/cases.py CaseKeeper)."""

    def cases(self, state: str | None = None) -> list[dict[str, Any]]:
        """Every case (of a state), oldest first, as JSON-ready dicts."""
        ...


CASE_KINDS = ("daily", "monthly", "annual")  # the reports that carry the cases sheet


class PerformanceReading(Protocol):
    """What the performance sheets read (server/performance.py PerformanceKeeper)."""

    async def performance(self, year: int | None = None) -> Performance:
        """The performance of `year` to date."""
        ...

    async def quarter_ends(self, year: int) -> list[Performance]:
        """The performance of `year` at the end of each quarter begun."""
        ...


PERFORMANCE_KINDS = ("annual",)  # the reports that carry the performance sheets


class ConformityChecks(Protocol):
    """What the monitoring-plan sheets read (server/conformity.py ConformityReader)."""

    def plan(self, at: datetime | None = None) -> tuple[PlanRow, ...]:
        """The plan's rows, the factors as in force at `at`."""
        ...

    async def days(self, start: datetime, end: datetime) -> list[DayConformity]:
        """The checks of every stored day starting in [start, end), oldest first."""
        ...


CONFORMITY_KINDS = ("daily",)  # the reports that carry the conformity sheet


@dataclass(frozen=True, slots=True)
class RenderedReport:
    """A written report: its bytes, their media type and a file name for them."""

    body: bytes
    content_type: str
    filename: str


class ReportMaker:
    """Makes the built-in and the custom reports of one plant."""

    def __init__(self, config: Any, historian: StoredPeriods,
                 factors: Callable[[], FactorTable],
                 entries: Callable[[], Sequence[Mapping[str, Any]]] = list,
                 definitions: Mapping[str, ReportDefinition] | None = None,
                 assets: CarbonLedger | None = None) -> None:
        self.config = config
        self.clock = PlantClock(config.clock.minute_seconds, config.site.timezone)
        self._historian = historian
        self._factors = factors
        self._entries = entries
        self.definitions = dict(definitions or {})
        # The carbon-asset keeper: with it the monthly and annual reports get its sheets.
        self.assets = assets
        # The abnormal-data case ledger: with it the emission reports list the period's cases.
        self.cases: CaseListing | None = None
        # The carbon performance: the `performance` kind, and the annual report's sheets.
        self.performance: PerformanceReading | None = None
        # The monitoring plan's daily check: the daily report's conformity sheet. The
        # `monitoring_plan` kind reads the historian's file itself when it is not set.
        self.conformity: ConformityChecks | None = None

    @property
    def kinds(self) -> tuple[str, ...]:
        """Every kind this maker knows: the built-in ones, then the custom ones."""
        return (*BUILT_IN, *self.definitions)

    def level(self, kind: str) -> str:
        """The period (day, month, year) a kind's rows are."""
        if kind in KIND_LEVEL:
            return KIND_LEVEL[kind]
        if kind == "platform":
            return "month"
        if kind == "performance":
            return "year"
        if kind == "monitoring_plan":
            return "day"
        if kind in self.definitions:
            return self.definitions[kind].period
        raise InvalidValueError(f"unknown report kind {kind!r} (known: {', '.join(self.kinds)})")

    def previous_period(self, kind: str, now: datetime) -> tuple[datetime, datetime]:
        """The day, month or year of `kind` that ended last before `now` (UTC bounds)."""
        tick = timedelta(microseconds=1)
        per = Periods(self.clock, self.level(kind), now, now + tick)
        return per.start_of(per.start - tick), per.start

    async def report(self, kind: str, start: datetime, end: datetime) -> Report:
        """Build the report of `kind` over the whole periods from `start` to `end`."""
        per = Periods(self.clock, self.level(kind), start, end, MAX_PERIODS)
        if kind == "platform" and len(per.bounds) != 1:
            raise InvalidValueError("the platform workbook covers one month: give --from and "
                                    "--to within one plant-local month")
        cfg, clock = self.config, self.clock
        if kind == "performance":
            return await self._performance_report(per)
        if kind == "monitoring_plan":
            return await self._monitoring_plan_report(per)
        days = await self._historian.periods("day", per.start, per.end)
        hours = await self._historian.periods("hour", per.start, per.end)
        data = ReportData(days, hours)
        if kind == "platform":
            entries = list(self._entries())
            return await asyncio.to_thread(platform_report, cfg, clock, per.start, data,
                                           self._factors(), entries)
        if kind in self.definitions:
            return await asyncio.to_thread(custom_report, self.definitions[kind], cfg, clock,
                                           per.start, per.end, data)
        rep = await asyncio.to_thread(emission_report, kind, cfg, clock, per.level, per.start,
                                      per.end, data, self._factors())
        # The boundaries sheet: site, processes and facilities with their shares.
        bounds = await asyncio.to_thread(boundary_table, cfg, per, days)
        rep = dataclasses.replace(rep, tables=(*rep.tables, bounds))
        if self.cases is not None and kind in CASE_KINDS:
            table = case_table(self.cases.cases(), per.start, per.end,
                               ZoneInfo(self.clock.timezone))
            rep = dataclasses.replace(rep, tables=(*rep.tables, table))
        if self.performance is not None and kind in PERFORMANCE_KINDS:
            tables, notes = await self._performance_sheets(per)
            rep = dataclasses.replace(rep, tables=(*rep.tables, *tables),
                                      notes=(*rep.notes, *notes))
        if self.conformity is not None and kind in CONFORMITY_KINDS:
            checks = await self.conformity.days(per.start, per.end)
            rep = dataclasses.replace(rep, tables=(*rep.tables, conformity_table(checks)))
        if self.assets is None or kind not in CARBON_KINDS:
            return rep
        return await self._with_carbon(rep, per)

    def _conformity_checks(self) -> ConformityChecks:
        """The monitoring plan's checks: the runtime's, else read from the historian file."""
        if self.conformity is not None:
            return self.conformity
        from server.conformity import ConformityReader

        cfg = self.config
        return ConformityReader(cfg, cfg.monitoring, self._historian, self._factors,
                                cfg.historian.path)

    async def _monitoring_plan_report(self, per: Periods) -> Report:
        """The `monitoring_plan` report: the plan as at the end of the period, and the
        check of every stored day of it."""
        checks = self._conformity_checks()
        plan = checks.plan(per.end - timedelta(microseconds=1))
        days = await checks.days(per.start, per.end)
        cfg = self.config
        notes = ("监测计划由配置生成；数据获取率 = 实获取数 / 应获取数（按计划频次），"
                 "每分钟最多计入计划数。The plan is generated from the configuration; "
                 "capture rate = readings received / readings planned at the planned "
                 "frequency, a minute counting at most the readings the plan asks of it.",
                 "因子按期末有效版本列出。Factors as the versions in force at the period's end.")
        return Report("monitoring_plan", "监测计划及执行检查", "Monitoring plan and conformity",
                      cfg.site.id, cfg.site.name_zh or cfg.site.name, cfg.site.timezone,
                      per.start, per.end, (plan_table(plan), conformity_table(days)), notes)

    async def _performance_sheets(self, per: Periods) -> tuple[tuple[Table, ...],
                                                              tuple[str, ...]]:
        """The performance sheets and notes of the years of `per`."""
        if self.performance is None:
            raise InvalidValueError("this server computes no carbon performance")
        years = sorted({self.clock.scaled_local(t0).year for t0, _ in per.bounds})
        perfs = [await self.performance.performance(y) for y in years]
        quarters = [await self.performance.quarter_ends(y) for y in years]
        return performance_tables(perfs, quarters), performance_notes(perfs)

    async def _performance_report(self, per: Periods) -> Report:
        """The `performance` report: the performance sheets of the years of `per`."""
        tables, notes = await self._performance_sheets(per)
        cfg = self.config
        return Report("performance", "碳绩效报告", "Carbon performance report", cfg.site.id,
                      cfg.site.name_zh or cfg.site.name, cfg.site.timezone, per.start, per.end,
                      tables, notes)

    async def _with_carbon(self, rep: Report, per: Periods) -> Report:
        """The report with the carbon-asset sheets of its compliance years appended."""
        assert self.assets is not None
        years = sorted({self.clock.scaled_local(t0).year for t0, _ in per.bounds})
        entries = list(self.assets.entries())
        positions = [await self.assets.position(y) for y in years]
        tables = await asyncio.to_thread(carbon_tables, self.clock, per.start, per.end, years,
                                         entries, positions)
        notes = (*rep.notes, "碳资产：期末持有量按期末前的台账计算；履约状况为报表生成时的状况；"
                 "减排量与净排放不用于履约。Carbon assets: holdings from the ledger entries "
                 "before the period's end; the compliance position as of when the report "
                 "was made; reductions and net emissions are not compliance figures.")
        return dataclasses.replace(rep, tables=(*rep.tables, *tables), notes=notes)

    async def make(self, kind: str, start: datetime, end: datetime, fmt: str) -> RenderedReport:
        """The report of `kind` written in `fmt` (xlsx, csv, pdf)."""
        if fmt not in FORMATS:
            raise InvalidValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
        if fmt == "pdf":  # fpdf2 lays a table out cell by cell: keep a PDF printable
            try:
                Periods(self.clock, self.level(kind), start, end, MAX_PDF_PERIODS)
            except InvalidValueError:
                raise InvalidValueError(f"a PDF report covers at most {MAX_PDF_PERIODS} "
                                        "periods: ask for xlsx or csv") from None
        rep = await self.report(kind, start, end)
        body = await asyncio.to_thread(render, rep, fmt, self.config.reports.pdf_font)
        label = Periods(self.clock, self.level(kind), rep.start, rep.end)
        first, last = label.label(rep.start), label.label(label.bounds[-1][0])
        span = first if first == last else f"{first}_{last}"
        return RenderedReport(body, CONTENT_TYPES[fmt],
                              f"{self.config.site.id}-{kind}-{span}.{fmt}")
