"""The monitoring plan's sheets (issue 18): the plan, and the daily conformity check. Pure.

- `monitoring_plan`: one row per monitored parameter (web/monitoring_plan.py PlanRow);
- `conformity`: one row per parameter and checked day, with its verdict and why; the
  report kind `monitoring_plan` carries both, the daily report the conformity sheet.
"""

from __future__ import annotations

from collections.abc import Sequence

from server.reports.tables import Cell, Column, Table
from web.monitoring_plan import DayConformity, PlanRow

_OBTAINED_ZH = {"measured": "在线测量 measured", "constant": "常数 constant",
                "lab": "化验 lab analysis", "factor_table": "缺省值/因子表 factor table",
                "none": "无 none"}
_KIND_ZH = {"cems": "CEMS参数 CEMS input", "quantity": "活动数据 quantity",
            "factor": "排放因子 factor", "output": "产出 output"}
_VERDICT_ZH = {"conforms": "符合 conforms", "deviates": "偏离 deviates"}

PLAN_COLUMNS = (
    Column("parameter", "参数", "Parameter"),
    Column("kind", "类别", "Kind"),
    Column("unit", "核算单元", "Unit"),
    Column("subject", "对象", "Source / stream / unit"),
    Column("uom", "计量单位", "Unit of measure"),
    Column("obtained", "获取方式", "Obtained"),
    Column("how", "获取方式说明", "How it is obtained"),
    Column("tag", "测点", "Tag"),
    Column("device", "设备", "Device"),
    Column("frequency", "监测频次", "Planned frequency"),
    Column("frequency_s", "监测间隔(s)", "Planned interval (s)"),
    Column("instrument_serial", "仪表编号", "Instrument serial"),
    Column("instrument_model", "仪表型号", "Instrument model"),
    Column("accuracy_pct", "准确度(%)", "Accuracy (% of reading)"),
    Column("calibration_due", "下次校准日期", "Calibration due"),
    Column("factor_version", "因子版本", "Factor version"),
    Column("factor_value", "因子值", "Factor value"),
    Column("lab_method", "化验方法", "Lab method"),
    Column("min_capture_pct", "最低数据获取率(%)", "Minimum capture (%)"),
    Column("missing_data_rule", "数据缺失处理", "Missing-data rule"),
    Column("owner", "负责部门/人", "Owner"),
)
CONFORMITY_COLUMNS = (
    Column("day", "日期(厂区)", "Day (plant time)"),
    Column("parameter", "参数", "Parameter"),
    Column("kind", "类别", "Kind"),
    Column("tag", "测点", "Tag"),
    Column("frequency_s", "监测间隔(s)", "Planned interval (s)"),
    Column("expected_n", "应获取数", "Readings planned"),
    Column("received_n", "实获取数", "Readings received"),
    Column("capture_pct", "数据获取率(%)", "Capture rate (%)"),
    Column("min_capture_pct", "最低数据获取率(%)", "Minimum capture (%)"),
    Column("instrument_state", "仪表校准状态", "Instrument calibration"),
    Column("substituted_hours_h", "替代小时数(h)", "Substituted hours (h)"),
    Column("substitution_rule", "替代规则", "Substitution rule"),
    Column("factor_version", "因子版本", "Factor version"),
    Column("verdict", "结论", "Verdict"),
    Column("reasons", "偏离原因", "Why it deviates"),
)


def plan_table(plan: Sequence[PlanRow]) -> Table:
    """The plan: one row per monitored parameter, in the plan's order."""
    rows: list[tuple[Cell, ...]] = []
    for r in plan:
        inst = r.instrument
        due = r.calibration_due
        rows.append((r.parameter, _KIND_ZH.get(r.kind, r.kind), r.unit, r.subject, r.uom,
                     _OBTAINED_ZH.get(r.obtained, r.obtained), r.how, r.tag, r.device,
                     r.frequency, r.frequency_s, None if inst is None else inst.serial,
                     None if inst is None else inst.model or None, r.accuracy_pct,
                     None if due is None else due.isoformat(), r.factor_version or None,
                     r.factor_value, r.lab_method or None, r.min_capture_pct,
                     r.missing_data_rule, r.owner))
    return Table("monitoring_plan", "监测计划", "Monitoring plan", PLAN_COLUMNS, rows)


def conformity_table(days: Sequence[DayConformity]) -> Table:
    """The daily checks: one row per parameter and day, oldest day first."""
    rows: list[tuple[Cell, ...]] = []
    for c in days:
        for r in c.rows:
            rows.append((c.day.isoformat(), r.parameter, _KIND_ZH.get(r.kind, r.kind), r.tag,
                         r.frequency_s, r.expected_n, r.received_n, r.capture_pct,
                         r.min_capture_pct, r.instrument_state or None,
                         r.substituted_hours_h, r.substitution_rule or None,
                         r.factor_version or None, _VERDICT_ZH[r.verdict],
                         "; ".join(r.reasons) or None))
    return Table("conformity", "监测计划执行检查", "Conformity with the monitoring plan",
                 CONFORMITY_COLUMNS, rows)
