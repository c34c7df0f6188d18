"""Threshold alarm rules: a warning (预警) / alarm (报警) state machine per rule."""

from __future__ import annotations

import dataclasses
import math
import typing
from datetime import datetime
from typing import Literal

from server.config import Target, ThresholdRuleConfig
from server.records import AlarmEvent, MinuteResult, SiteMinute, SourceMinute, UnitMinute

State = Literal["normal", "warning", "alarm"]

_RANK: dict[str, int] = {"normal": 0, "warning": 1, "alarm": 2}
_LEVEL_EN = {"warning": "warning level", "alarm": "alarm level"}
_LEVEL_ZH = {"warning": "预警限值", "alarm": "报警限值"}
_STATE_ZH = {"normal": "正常", "warning": "预警", "alarm": "报警"}
_NUMERIC = (float, int)


def _numeric_fields(cls: type) -> tuple[str, ...]:
    """Names of the numeric dataclass fields and float properties of a record class."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if hints.get(f.name) in _NUMERIC]
    for name, attr in vars(cls).items():
        if (isinstance(attr, property) and attr.fget is not None
                and typing.get_type_hints(attr.fget).get("return") in _NUMERIC):
            names.append(name)
    return tuple(sorted(names))


FIELDS: dict[str, tuple[str, ...]] = {
    "source": _numeric_fields(SourceMinute),
    "unit": _numeric_fields(UnitMinute),
    "site": _numeric_fields(SiteMinute),
}
"""Field names an alarm target may name, per kind of target."""


def target_kind(target: Target) -> str:
    """Which kind of record a target watches: "source", "unit" or "site"."""
    if target.source is not None:
        return "source"
    if target.unit is not None:
        return "unit"
    return "site"


def target_label(target: Target) -> str:
    """The target as text, e.g. "source S1 co2_rate_t_h" or "site co2_today_t"."""
    kind = target_kind(target)
    if kind == "site":
        return f"site {target.field}"
    return f"{kind} {target.source if kind == 'source' else target.unit} {target.field}"


def check_target(target: Target, rule_id: str | None = None) -> None:
    """Raise ValueError naming the rule and field if the target's field does not exist."""
    kind = target_kind(target)
    if target.field not in FIELDS[kind]:
        who = "alarm target" if rule_id is None else f"alarm rule {rule_id!r}"
        raise ValueError(
            f"{who}: unknown {kind} field {target.field!r}; "
            f"valid {kind} fields: {', '.join(FIELDS[kind])}")


def target_value(result: MinuteResult, target: Target) -> float:
    """The watched value in one minute's results; NaN if the source or unit is absent."""
    check_target(target)
    kind = target_kind(target)
    record: SourceMinute | UnitMinute | SiteMinute | None
    if kind == "source":
        record = next((s for s in result.sources if s.source == target.source), None)
    elif kind == "unit":
        record = next((u for u in result.units if u.unit == target.unit), None)
    else:
        record = result.site
    if record is None:
        return math.nan
    return float(getattr(record, target.field))


def fmt_number(x: float) -> str:
    """A number for a message: 2 decimals (4 below 1), trailing zeros dropped."""
    text = f"{x:.{2 if abs(x) >= 1 else 4}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


class ThresholdRule:
    """Warning and alarm levels on one value, with a deadband for leaving a state."""

    def __init__(self, config: ThresholdRuleConfig) -> None:
        check_target(config.target, config.id)
        self.config = config
        self.id = config.id
        self.target = config.target
        self.state: State = "normal"
        self.last_event: AlarmEvent | None = None
        self._levels: dict[str, float | None] = {"warning": config.warning,
                                                 "alarm": config.alarm}

    def _holds(self, level_state: str, value: float) -> bool:
        """Whether `value` puts or keeps the rule at least in `level_state`."""
        level = self._levels[level_state]
        if level is None:
            return False
        # Once at or beyond a level, the value must pass it by the deadband to leave.
        held = _RANK[self.state] >= _RANK[level_state]
        band = self.config.deadband if held else 0.0
        if self.config.direction == "high":
            return value >= level - band
        return value <= level + band

    def _next_state(self, value: float) -> State:
        if self._holds("alarm", value):
            return "alarm"
        if self._holds("warning", value):
            return "warning"
        return "normal"

    def evaluate(self, value: float, t: datetime) -> AlarmEvent | None:
        """Feed one value; return an event if the state changed, else None (NaN keeps state)."""
        if math.isnan(value):
            return None
        new = self._next_state(value)
        if new == self.state:
            return None
        event = self._event(new, value, t)
        self.state = new
        self.last_event = event
        return event

    def _event(self, new: State, value: float, t: datetime) -> AlarmEvent:
        old = self.state
        high = self.config.direction == "high"
        tgt = self.target
        where = tgt.source or tgt.unit or "site"
        where_zh = tgt.source or tgt.unit or "全厂"
        rule = f"rule {self.id}" + (f": {self.config.name}" if self.config.name else "")
        rule_zh = f"规则 {self.id}" + (f"：{self.config.name}" if self.config.name else "")
        v = fmt_number(value)
        if _RANK[new] > _RANK[old]:
            level = self._levels[new]
            assert level is not None
            sign = "≥" if high else "≤"
            en = f"{where} {tgt.field} = {v} {sign} {_LEVEL_EN[new]} {fmt_number(level)}"
            zh = f"{where_zh} {tgt.field} = {v} {sign} {_LEVEL_ZH[new]} {fmt_number(level)}"
        else:
            # Leaving towards `new`: the level crossed is the lowest one above `new`.
            crossed = "warning" if new == "normal" and self._levels["warning"] is not None \
                else "alarm"
            level = self._levels[crossed]
            assert level is not None
            sign = "<" if high else ">"
            db = self.config.deadband
            db_en = f" (deadband {fmt_number(db)})" if db else ""
            db_zh = f"（死区 {fmt_number(db)}）" if db else ""
            back_en = "back to normal" if new == "normal" else f"back to {new}"
            back_zh = "恢复正常" if new == "normal" else f"降为{_STATE_ZH[new]}"
            en = (f"{where} {tgt.field} = {v} {sign} {_LEVEL_EN[crossed]} {fmt_number(level)}"
                  f"{db_en}, {back_en}")
            zh = (f"{where_zh} {tgt.field} = {v} {sign} {_LEVEL_ZH[crossed]} {fmt_number(level)}"
                  f"{db_zh}，{back_zh}")
        return AlarmEvent(rule=self.id, t=t, state=new, previous=old, value=value,
                          limit=level, target=target_label(tgt),
                          message=f"{en} [{rule}]", message_zh=f"{zh}［{rule_zh}］")
