"""The monthly data the national carbon-market platform asks of a power plant: pure.

One workbook for one plant-local month: per unit its generation, heat supplied,
operating hours, load factor and purchased electricity; per fuel its consumption, net
calorific value, carbon content and oxidation rate; each figure with its source:

- 计量 meter: summed from the stored days (the unit's power tag, the stream's feeder or
  meter counter);
- 人工录入 manual entry: a day whose quantity was entered (flag S, a `quantity` entry of the
  ledger; its document named);
- 化验录入 lab entry: a factor version made by a `factor` entry (id `set@labN`; the lab
  report named); 因子表缺省值 default factor: a version of the configured factor table.

A figure the plant configuration cannot give (heat supplied without a heat meter, the load
factor without the rated capacity) is left empty and the row says why. NCV and carbon
content of a month with several factor versions are the quantity-weighted means.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from compute.clock import PlantClock
from compute.config import StreamConfig, UnitConfig
from compute.factors import FactorTable, FactorVersion
from model.flags import DataFlag
from model.records import StreamPeriod, UnitPeriod
from server.reports.config import ReportsConfig
from server.reports.tables import Cell, Column, Periods, Report, ReportData, Table

PLATFORM_COLUMNS = (
    Column("item", "项目", "Item"), Column("object", "对象", "Unit or fuel"),
    Column("value", "数值", "Value"), Column("value_unit", "单位", "Unit of the value"),
    Column("source", "数据来源", "Source of the figure"),
    Column("detail", "依据/说明", "Document, tag or reason"),
    Column("item_key", "字段", "Key"))
METER = "计量 meter"
MANUAL = "人工录入 manual entry"
LAB = "化验录入 lab entry"
DEFAULT = "因子表缺省值 default factor"
MISSING = "缺失 not available"


def _input_source(tag: str | None, value: float | None) -> str:
    return f"tag {tag}" if tag is not None else f"configured constant {value}"


def _documents(entries: Sequence[Mapping[str, Any]], target: str, t0: datetime,
               t1: datetime) -> list[str]:
    out = []
    for e in entries:
        if e.get("kind") != "quantity" or e.get("target") != target:
            continue
        t = datetime.fromisoformat(str(e["t"]))
        if t0 <= t < t1:
            out.append(f"entry {e.get('id')}: {e.get('document') or '(no document)'}")
    return out


def _weighted(parts: Sequence[StreamPeriod], versions: Mapping[str, FactorVersion],
              name: str) -> tuple[float | None, list[FactorVersion]]:
    """Quantity-weighted mean of factor `name` over the parts, and the versions giving it."""
    used: dict[str, float] = {}
    for p in parts:
        if p.factor_version in versions:
            q = p.quantity if math.isfinite(p.quantity) else 0.0
            used[p.factor_version] = used.get(p.factor_version, 0.0) + q
    with_factor = {vid: q for vid, q in used.items() if name in versions[vid].values}
    if not with_factor:
        return None, []
    vs = [versions[vid] for vid in with_factor]
    if len(vs) == 1:  # one version: its value as written, not a mean's rounding of it
        return vs[0].values[name], vs
    total = math.fsum(with_factor.values())
    if total <= 0:
        if len({v.values[name] for v in vs}) == 1:
            return vs[0].values[name], vs
        return None, vs
    return math.fsum(q * versions[vid].values[name] for vid, q in with_factor.items()) / total, vs


def _factor_source(vs: Sequence[FactorVersion]) -> tuple[str, str]:
    kinds = sorted({LAB if "@lab" in v.id else DEFAULT for v in vs})
    return " + ".join(kinds), "; ".join(f"{v.id}: {v.source}" for v in vs)


def _unit_rows(unit: UnitConfig, reports: ReportsConfig, data: ReportData, hours_h: int,
               t0: datetime, t1: datetime, entries: Sequence[Mapping[str, Any]],
               ) -> list[tuple[Cell, ...]]:
    days = [u for d in data.days for u in d.units if u.unit == unit.id]
    hours = [u for h in data.hours for u in h.units if u.unit == unit.id]
    # A unit whose output is a product (a blast furnace's hot metal, a kiln's lime) reports
    # that output in t where a generating unit reports its generation; it has no load factor.
    product = unit.output.unit == "t"

    def output(u: UnitPeriod) -> float:
        return u.output_t if product else u.output_mwh

    gen = [output(u) for u in days if math.isfinite(output(u))]
    generation = math.fsum(gen) if gen else None
    manual = any(u.flag is DataFlag.S for u in days)
    power = unit.output.rate
    gen_src = (MANUAL if manual else METER) if generation is not None else MISSING
    gen_detail = ("; ".join(_documents(entries, f"unit:{unit.id}", t0, t1)) if manual
                  else _input_source(power.tag, power.value) if generation is not None
                  else "no stored day of the month")
    running = sum(1 for u in hours if math.isfinite(output(u)) and output(u) > 0)
    capacity = reports.capacity_mw.get(unit.id)
    load: float | None
    if product:
        load = None
        load_src, load_detail = MISSING, "a product unit (output in t): no generating capacity"
    elif capacity is None or generation is None:
        load = None
        load_src, load_detail = MISSING, (
            f"no rated capacity: set reports.capacity_mw.{unit.id}" if capacity is None
            else "no generation")
    else:
        load = generation / (capacity * hours_h) * 100.0
        load_src = METER
        load_detail = f"generation / ({capacity} MW x {hours_h} h)"
    elec = [s for s in unit.streams if s.kind == "electricity"]
    elec_q = [p.quantity for d in data.days for p in d.streams
              if p.stream in {s.id for s in elec} and math.isfinite(p.quantity)]
    if not elec:
        purchased: float | None = None
        p_src, p_detail = MISSING, "the unit has no purchased-electricity stream configured"
    else:
        purchased = math.fsum(elec_q) if elec_q else None
        p_src = METER if purchased is not None else MISSING
        p_detail = ", ".join(_stream_input(s) for s in elec)
    cems = [u.co2_cems_t for u in days if math.isfinite(u.co2_cems_t)]
    factor = [u.co2_factor_t for u in days if math.isfinite(u.co2_factor_t)]
    u = unit.id
    return [
        ("产品产量", u, generation, "t", gen_src, gen_detail, "product_output_t") if product
        else ("发电量", u, generation, "MWh", gen_src, gen_detail, "generation_mwh"),
        ("供热量", u, None, "GJ", MISSING,
         "厂区配置无供热计量 the plant configuration has no heat-supply meter",
         "heat_supplied_gj"),
        ("运行小时数", u, running, "h", METER,
         f"stored hours with output > 0 of {hours_h} h", "operating_hours_h"),
        ("负荷率", u, load, "%", load_src, load_detail, "load_factor_pct"),
        ("购入电量", u, purchased, "MWh", p_src, p_detail, "purchased_electricity_mwh"),
        ("CEMS二氧化碳排放量", u, math.fsum(cems) if cems else None, "t", METER,
         "CEMS, sum of the stored days", "co2_cems_t"),
        ("排放因子法二氧化碳排放量", u, math.fsum(factor) if factor else None, "t", METER,
         "emission-factor method, sum of the stored days", "co2_factor_t"),
    ]


def _stream_input(s: StreamConfig) -> str:
    if s.counter is not None:
        return f"meter counter {s.counter.tag}"
    assert s.rate_per_h is not None
    return _input_source(s.rate_per_h.tag, s.rate_per_h.value)


def _fuel_rows(stream: StreamConfig, unit: UnitConfig, data: ReportData,
               versions: Mapping[str, FactorVersion], t0: datetime, t1: datetime,
               entries: Sequence[Mapping[str, Any]]) -> list[tuple[Cell, ...]]:
    parts = [p for d in data.days for p in d.streams if p.stream == stream.id]
    q = [p.quantity for p in parts if math.isfinite(p.quantity)]
    quantity = math.fsum(q) if q else None
    manual = any(p.flag is DataFlag.S for p in parts)
    q_src = (MANUAL if manual else METER) if quantity is not None else MISSING
    q_detail = ("; ".join(_documents(entries, f"stream:{stream.id}", t0, t1)) if manual
                else _stream_input(stream) if quantity is not None else
                "no stored day of the month")
    qu = stream.quantity_unit
    per = "t" if qu == "t" else "10⁴m³"
    obj = f"{stream.id} ({unit.id})"
    rows: list[tuple[Cell, ...]] = [
        ("燃料消耗量", obj, quantity, "t" if qu == "t" else "10⁴m³", q_src, q_detail,
         "fuel_consumption")]
    ncv_name = "ncv_gj_t" if qu == "t" else "ncv_gj_1e4m3"
    c_name = "c_ar_tc_t" if qu == "t" else "c_ar_tc_1e4m3"
    wanted = [("低位发热量", ncv_name, f"GJ/{per}", "ncv"),
              ("单位热值含碳量", "cc_tc_gj", "tC/GJ", "carbon_content_tc_gj")]
    if stream.calc_method == "measured_carbon":
        wanted.append(("元素碳含量", c_name, f"tC/{per}", "carbon_content_ar"))
    wanted.append(("碳氧化率", "of", "fraction", "oxidation_fraction"))
    for zh, name, unit_text, key in wanted:
        value, vs = _weighted(parts, versions, name)
        if value is None:
            src, detail = MISSING, (f"the factor versions used give no {name}" if parts
                                    else "no stored day of the month")
        else:
            src, detail = _factor_source(vs)
            if len(vs) > 1:
                detail = f"quantity-weighted mean of {len(vs)} versions: {detail}"
        rows.append((zh, obj, value, unit_text, src, detail, key))
    co2 = [p.co2_t for p in parts if math.isfinite(p.co2_t)]
    rows.append(("化石燃料燃烧排放量", obj, math.fsum(co2) if co2 else None, "t", METER,
                 "emission-factor method, sum of the stored days", "fuel_co2_t"))
    return rows


def platform_report(cfg: Any, clock: PlantClock, start: datetime, data: ReportData,
                    factors: FactorTable, entries: Sequence[Mapping[str, Any]]) -> Report:
    """The platform workbook of the plant-local month containing `start`."""
    t0, t1 = clock.month_bounds(start)
    per = Periods(clock, "month", t0, t1)
    days = per.group(data.days)[0]
    hours = per.group(data.hours)[0]
    month = ReportData(days, hours)
    hours_h = clock.hours_in(t0, t1)
    versions = {v.id: v for s in factors.streams for v in factors.versions(s)}
    rows: list[tuple[Cell, ...]] = []
    for unit in cfg.units:
        rows += _unit_rows(unit, cfg.reports, month, hours_h, t0, t1, entries)
        for stream in unit.streams:
            if stream.kind.endswith("_fuel"):
                rows += _fuel_rows(stream, unit, month, versions, t0, t1, entries)
    label = per.label(t0)
    table = Table("platform", f"{label}月度数据", f"Monthly data {label}", PLATFORM_COLUMNS,
                  rows)
    notes = ("全国碳市场管理平台月度信息化存证数据（发电行业）。",
             "Monthly data for the national carbon-market platform (power generation).",
             "空白数值：见“依据/说明”列。Empty value: the last columns say why.")
    return Report("platform", "碳市场月度数据", "Carbon-market monthly data", cfg.site.id,
                  cfg.site.name_zh or cfg.site.name, cfg.site.timezone, t0, t1, (table,),
                  notes)
