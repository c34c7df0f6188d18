"""The abnormal-data cases sheet of the daily, monthly and annual reports (issue 18): pure.

The cases a report's period concerns, from what server/cases.py CaseKeeper answers: every
case about the period's data (a stored period or an alarm of the period, however late the
case was opened: a review finds them afterwards), and every case open at some time during
the period; oldest first, with its state as of when the report is made and whether it is
overdue.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, tzinfo
from typing import Any

from server.reports.tables import Cell, Column, Table

CASE_COLUMNS = (
    Column("case", "编号", "Case"),
    Column("state", "状态", "State"),
    Column("overdue", "逾期", "Overdue"),
    Column("subject", "对象", "Subject"),
    Column("title", "标题", "Title"),
    Column("cause", "原因", "Cause"),
    Column("opened_local", "登记时间(厂区时间)", "Opened (plant time)"),
    Column("due_local", "期限(厂区时间)", "Due (plant time)"),
    Column("owner", "负责人", "Owner"),
    Column("reviewer", "审核人", "Reviewer"),
    Column("review", "审核结论", "Review"),
    Column("n_actions", "措施数", "Actions"),
    Column("closed_local", "关闭时间(厂区时间)", "Closed (plant time)"),
)
_STATE_ZH = {"open": "未关闭 open", "closed": "已关闭 closed"}


def _local(text: str | None, tz: tzinfo) -> str:
    if not text:
        return ""
    return datetime.fromisoformat(text).astimezone(tz).strftime("%Y-%m-%d %H:%M")


def _subject(s: Mapping[str, Any]) -> str:
    kind = str(s.get("kind", ""))
    if kind == "alarm":
        return f"alarm {s.get('rule', '')} {s.get('t', '')}"
    if kind == "entry":
        return f"entry #{s.get('entry', '')}"
    return f"{kind} {s.get('ref', '')}".strip()


def subject_time(s: Mapping[str, Any]) -> datetime | None:
    """When the subject of a case happened: a period's start (its ref
    `<table>:<id>:<ISO start>`), an alarm's time; None for entries and other subjects."""
    text = s.get("t") if s.get("kind") == "alarm" else (
        str(s.get("ref", "")).split(":", 2)[2] if s.get("kind") == "period"
        and str(s.get("ref", "")).count(":") >= 2 else None)
    if not text:
        return None
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None


def case_table(cases: Sequence[Mapping[str, Any]], start: datetime, end: datetime,
               tz: tzinfo) -> Table:
    """The cases of the period [start, end): about its data, or open during it; oldest
    first."""
    rows: list[tuple[Cell, ...]] = []
    for c in sorted(cases, key=lambda c: int(c["id"])):
        opened = datetime.fromisoformat(str(c["opened"]))
        closed = datetime.fromisoformat(str(c["closed"])) if c.get("closed") else None
        about = subject_time(c["subject"])
        of_period = about is not None and start <= about < end
        open_during = opened < end and (closed is None or closed >= start)
        if not (of_period or open_during):
            continue
        rows.append((int(c["id"]), _STATE_ZH.get(str(c["state"]), str(c["state"])),
                     bool(c["overdue"]), _subject(c["subject"]), str(c["title"]),
                     str(c.get("cause") or ""), _local(str(c["opened"]), tz),
                     _local(str(c["due"]), tz), str(c["owner"]), str(c.get("reviewer") or ""),
                     str(c.get("review") or ""), int(c.get("actions") or 0),
                     _local(c.get("closed"), tz)))
    return Table("cases", "异常数据处理台账", "Abnormal-data cases", CASE_COLUMNS, rows)
