"""Carbon-asset sheets of the monthly and annual reports (issue 17): pure, no I/O.

Three tables, from what server/assets.py AssetKeeper keeps (the engine reads it):

- holdings at the end of the report's period, per compliance year and instrument:
  compute/assets.py `holdings` over the ledger entries made before the period's end (so a
  January report shows January's closing holdings even when it is made in March);
- the compliance position of every compliance year the report covers, as the keeper
  answers it when the report is made (emissions live or verified, allowances, eligible
  offsets, surplus or deficit and its cost, the forecast; reductions and net emissions kept
  apart: they are not compliance figures);
- the ledger entries made within the period, oldest first, reversed ones marked.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any

from compute.assets import AssetEntry, CompliancePosition, holdings, reversed_ids
from compute.clock import PlantClock
from server.reports.tables import Cell, Column, Table
from server.reports.tables import cell_num as _num

_INSTRUMENT_ZH = {"national_allowance": "全国配额", "local_allowance": "地方配额",
                  "ccer": "CCER", "other_offset": "其他核证减排量"}
_KIND_ZH = {"allocation": "配额分配", "acquisition": "取得", "trade": "交易",
            "surrender": "清缴", "transfer": "划转", "price": "碳价", "reduction": "减排量",
            "verified": "核查排放量", "reversal": "冲销"}


HOLDING_COLUMNS = (
    Column("as_of", "截至(厂区时间)", "As of (plant time)"),
    Column("year", "履约年度", "Compliance year"),
    Column("instrument", "品种", "Instrument"),
    Column("allocated_t", "分配量(t)", "Allocated (t)"),
    Column("bought_t", "买入及取得(t)", "Bought and acquired (t)"),
    Column("sold_t", "卖出(t)", "Sold (t)"),
    Column("transferred_in_t", "转入(t)", "Transferred in (t)"),
    Column("transferred_out_t", "转出(t)", "Transferred out (t)"),
    Column("surrendered_t", "已清缴(t)", "Surrendered (t)"),
    Column("held_t", "持有量(t)", "Held (t)"))
POSITION_COLUMNS = (
    Column("year", "履约年度", "Compliance year"),
    Column("emissions_basis", "排放量依据", "Emissions basis"),
    Column("emissions_t", "排放量(t)", "Emissions (t)"),
    Column("allowances_t", "持有配额(t)", "Allowances held (t)"),
    Column("offsets_held_t", "持有抵销量(t)", "Offsets held (t)"),
    Column("offset_limit_pct", "抵销上限(%)", "Offset limit (%)"),
    Column("offsets_eligible_t", "可用抵销量(t)", "Offsets eligible (t)"),
    Column("surrendered_t", "已清缴(t)", "Surrendered (t)"),
    Column("surplus_t", "盈余(t)", "Surplus (t)"),
    Column("deficit_t", "缺口(t)", "Deficit (t)"),
    Column("price_cny_t", "最新碳价(元/t)", "Latest price (CNY/t)"),
    Column("price_at", "碳价日期(厂区时间)", "Price as of (plant time)"),
    Column("deficit_cost_cny", "补足缺口成本(元)", "Cost of closing the deficit (CNY)"),
    Column("holdings_value_cny", "持有配额价值(元)", "Value of allowances held (CNY)"),
    Column("forecast_year_end_t", "年末预测排放(t)", "Year-end forecast (t)"),
    Column("forecast_low_t", "预测下限(t)", "Forecast low, 95 % (t)"),
    Column("forecast_high_t", "预测上限(t)", "Forecast high, 95 % (t)"),
    Column("forecast_deficit_t", "预测缺口(t)", "Forecast deficit (t)"),
    Column("surrender_deadline", "清缴截止日", "Surrender deadline"),
    Column("days_to_deadline_d", "距截止天数(d)", "Days to the deadline (d)"),
    Column("reductions_t", "减排量(t,不用于履约)", "Reductions (t, not for compliance)"),
    Column("net_emissions_t", "扣减后净排放(t,不用于履约)",
       "Net emissions (t, not for compliance)"))
LEDGER_COLUMNS = (
    Column("entry", "编号", "Entry"),
    Column("t", "时间(厂区时间)", "Time (plant time)"),
    Column("t_utc", "时间(UTC)", "Time (UTC)"),
    Column("kind", "类型", "Kind"),
    Column("year", "履约年度", "Compliance year"),
    Column("instrument", "品种", "Instrument"),
    Column("side", "方向/类型", "Side"),
    Column("quantity", "数量(t;减排电量MWh)", "Quantity (t; MWh for renewable reductions)"),
    Column("price_cny_t", "价格(元/t)", "Price (CNY/t)"),
    Column("counterparty", "交易对方", "Counterparty"),
    Column("vintage", "减排年份", "Vintage"),
    Column("reverses", "冲销编号", "Reverses entry"),
    Column("reversed", "已被冲销", "Reversed"),
    Column("document", "依据文件", "Document"),
    Column("user", "录入人", "User"),
    Column("reason", "原因", "Reason"))


def _utc(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def as_entry(e: AssetEntry | Mapping[str, Any]) -> AssetEntry:
    """An entry as the keeper lists it (AssetEntry.as_json form, or the entry itself)."""
    if isinstance(e, AssetEntry):
        return e

    def num(x: Any) -> float:
        return math.nan if x is None else float(x)

    def opt(x: Any) -> int | None:
        return None if x is None or x == "" else int(x)

    t = e["t"]
    when = t if isinstance(t, datetime) else datetime.fromisoformat(str(t).replace("Z", "+00:00"))
    return AssetEntry(int(e["id"]), str(e["kind"]), when, int(e.get("year") or 0),
                      str(e.get("instrument") or ""), num(e.get("quantity_t")),
                      str(e.get("side") or ""), num(e.get("price_cny_t")),
                      str(e.get("counterparty") or ""), opt(e.get("vintage")),
                      opt(e.get("reverses")), str(e.get("document") or ""),
                      str(e.get("user") or ""), str(e.get("reason") or ""))


def _instrument(name: str) -> str:
    zh = _INSTRUMENT_ZH.get(name)
    return f"{zh} {name}" if zh and zh != name else name


def holdings_table(clock: PlantClock, end: datetime, years: Sequence[int],
                   entries: Sequence[AssetEntry]) -> Table:
    """Holdings per compliance year and instrument from the entries made before `end`."""
    before = [e for e in entries if e.t < end]
    as_of = clock.scaled_local(end).strftime("%Y-%m-%d %H:%M")
    rows: list[tuple[Cell, ...]] = []
    for year in years:
        for h in holdings(before, year).values():
            rows.append((as_of, year, _instrument(h.instrument), h.allocated_t, h.bought_t,
                         h.sold_t, h.transferred_in_t, h.transferred_out_t, h.surrendered_t,
                         h.held_t))
    return Table("carbon_holdings", "碳资产持有量", "Carbon holdings at the period end",
                 HOLDING_COLUMNS, rows)


def position_table(clock: PlantClock, positions: Sequence[CompliancePosition]) -> Table:
    """One row per compliance year: the position as the keeper answered it."""
    rows: list[tuple[Cell, ...]] = []
    for p in positions:
        basis = {"verified": "核查 verified", "live": "实时 live"}.get(p.emissions_basis,
                                                                       p.emissions_basis)
        price_at = (clock.scaled_local(p.price_t).strftime("%Y-%m-%d %H:%M")
                    if p.price_t is not None else None)
        deadline = p.surrender_deadline
        rows.append((p.year, basis, _num(p.emissions_t), _num(p.allowances_t),
                     _num(p.offsets_held_t), _num(p.offset_limit_pct),
                     _num(p.offsets_eligible_t), _num(p.surrendered_t), _num(p.surplus_t),
                     _num(p.deficit_t), _num(p.price_cny_t), price_at,
                     _num(p.deficit_cost_cny), _num(p.holdings_value_cny),
                     _num(p.forecast_year_end_t), _num(p.forecast_low_t),
                     _num(p.forecast_high_t), _num(p.forecast_deficit_t),
                     deadline.isoformat() if isinstance(deadline, date) else str(deadline),
                     _num(p.days_to_deadline), _num(p.reductions_t), _num(p.net_emissions_t)))
    return Table("carbon_position", "履约状况", "Compliance position (when made)",
                 POSITION_COLUMNS, rows)


def ledger_table(clock: PlantClock, start: datetime, end: datetime,
                 entries: Sequence[AssetEntry]) -> Table:
    """The entries made within [start, end), oldest first; reversed ones marked (by any
    reversal in the ledger, also one made after the period)."""
    gone = reversed_ids(entries)
    rows: list[tuple[Cell, ...]] = []
    for e in sorted((e for e in entries if start <= e.t < end), key=lambda x: (x.t, x.id)):
        kind = f"{_KIND_ZH.get(e.kind, '')} {e.kind}".strip()
        rows.append((e.id, clock.scaled_local(e.t).strftime("%Y-%m-%d %H:%M:%S"), _utc(e.t),
                     kind, e.year or None, _instrument(e.instrument) if e.instrument else None,
                     e.side or None, _num(e.quantity_t), _num(e.price_cny_t),
                     e.counterparty or None, e.vintage, e.reverses, e.id in gone,
                     e.document or None, e.user or None, e.reason or None))
    return Table("carbon_ledger", "碳资产台账", "Carbon asset ledger of the period",
                 LEDGER_COLUMNS, rows)


def carbon_tables(clock: PlantClock, start: datetime, end: datetime, years: Sequence[int],
                  entries: Sequence[AssetEntry | Mapping[str, Any]],
                  positions: Sequence[CompliancePosition]) -> tuple[Table, ...]:
    """The three carbon-asset tables of a report over [start, end)."""
    es = [as_entry(e) for e in entries]
    return (holdings_table(clock, end, years, es), position_table(clock, positions),
            ledger_table(clock, start, end, es))
