"""Alarm rules: what each kind measures, its levels, and their evaluation.

Every rule reduces to one measured value per evaluation, compared with a warning
(预警) and an alarm (报警) level — "high" rules at or above, "low" rules at or below —
with a deadband for leaving a level and on / off delays in plant minutes. The kinds
differ only in the value:

    threshold            a field of a source, unit, raw tag or the site
    rate_of_change       (x(m) − x(m−N)) / N per minute: its rise, fall or magnitude
    stale                minutes since the last good value (finite, flag N)
    comm_loss            1 while a device's communication has failed (DeviceEvent), else 0
    intensity            Σ CO2 / Σ output (t/MWh) over the minute, the last 60 or 1440
                         minutes, or the plant-local month to date
    allowance_position   % of the annual allowance used, % of the pro-rated allowance,
                         forecast year-end % of allowance, forecast shortfall t or its cost
    capture_rate         valid / counted closed hours over a window, % (each closed hour)
    reconciliation_diff  |CEMS − factor method| / factor method, % (each closed day)

Level logic: level k (1 warning, 2 alarm) is entered once the value has been at or
beyond it for `on_delay` minutes (0: at once), and left once it has been back by more
than the deadband for `off_delay` minutes. A minute without a value (NaN) changes
nothing: the rule keeps its level and its delay timers.

Two implementations of the same arithmetic: `RuleBank` evaluates all rules of a plant
together on numpy arrays (what the engine runs), and the scalar rule classes
(`ThresholdRule` …) evaluate one rule in plain Python: the reference the bank is
tested against, and the bench's baseline.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import operator
import typing
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property

import numpy as np
import numpy.typing as npt

from alarms.state import LEVELS, AlarmState, RuleInfo
from compute import derived
from compute.clock import PlantClock
from model.flags import DataFlag
from model.records import (
    AlarmEvent,
    DeviceEvent,
    MinuteResult,
    PeriodRecords,
    SiteMinute,
    SourceMinute,
    TagMinute,
    UnitMinute,
)
from server.config import (
    AllowanceConfig,
    AllowanceRuleConfig,
    CaptureRateRuleConfig,
    CommLossRuleConfig,
    IntensityRuleConfig,
    PlantConfig,
    RateOfChangeRuleConfig,
    ReconciliationRuleConfig,
    RuleConfig,
    StaleRuleConfig,
    Target,
    ThresholdRuleConfig,
)

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
B1 = npt.NDArray[np.bool_]
Rows = slice | npt.NDArray[np.intp]

NONE = -(1 << 62)
"""'No time' for the delay timers (minute indices are ≥ 0)."""

_LEVEL_EN = {1: "warning level", 2: "alarm level"}
_LEVEL_ZH = {1: "预警限值", 2: "报警限值"}
_STATE_ZH = {0: "正常", 1: "预警", 2: "报警"}
_NUMERIC = (float, int)

ALLOWANCE_MEASURES = ("used_pct", "prorated_pct", "forecast_pct", "forecast_shortfall_t",
                      "shortfall_cost_cny")
_ALLOWANCE_TEXT = {
    "used_pct": ("allowance used %", "配额使用率 %"),
    "prorated_pct": ("emissions / pro-rated allowance %", "排放量/按时间比例配额 %"),
    "forecast_pct": ("forecast year-end emissions / allowance %", "预测年末排放/配额 %"),
    "forecast_shortfall_t": ("forecast year-end shortfall t", "预测年末配额缺口 t"),
    "shortfall_cost_cny": ("forecast shortfall cost CNY", "预测配额缺口成本 元"),
}
_WINDOW_MINUTES = {"hour": 60, "day": 1440}
_WINDOW_TEXT = {"minute": ("this minute", "本分钟"), "hour": ("last 60 min", "近 60 分钟"),
                "day": ("last 24 h", "近 24 小时"), "month_to_date": ("month to date", "本月累计")}
_ROC_TEXT = {"rise": ("rise", "上升"), "fall": ("fall", "下降"), "both": ("|change|", "变化绝对值")}
MIN_PRORATED_FRACTION = 1.0 / 366.0
"""Before one day of the year has passed, the pro-rated allowance is too small to compare."""

# Codes of a closed hour for the capture rate.
HOUR_UNKNOWN, HOUR_VALID, HOUR_INVALID, HOUR_STOPPED = 0, 1, 2, 3


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
    "tag": _numeric_fields(TagMinute),
    "site": _numeric_fields(SiteMinute),
}
"""Field names an alarm target may name, per kind of target."""


def target_kind(target: Target) -> str:
    """Which kind of record a target watches: "source", "unit", "tag" or "site"."""
    if target.source is not None:
        return "source"
    if target.unit is not None:
        return "unit"
    if target.tag is not None:
        return "tag"
    return "site"


def _target_id(target: Target) -> str:
    return target.source or target.unit or target.tag or ""


def target_label(target: Target) -> str:
    """The target as text, e.g. "source S1 co2_rate_t_h" or "site co2_today_t"."""
    kind = target_kind(target)
    if kind == "site":
        return f"site {target.field}"
    return f"{kind} {_target_id(target)} {target.field}"


def check_target(target: Target, rule_id: str | None = None) -> None:
    """Raise ValueError naming the rule and field if the target's field does not exist."""
    kind = target_kind(target)
    if target.field not in FIELDS[kind]:
        who = "alarm target" if rule_id is None else f"alarm rule {rule_id!r}"
        raise ValueError(
            f"{who}: unknown {kind} field {target.field!r}; "
            f"valid {kind} fields: {', '.join(FIELDS[kind])}")


Record = SourceMinute | UnitMinute | TagMinute | SiteMinute


def _find_record(result: MinuteResult, kind: str, ident: str) -> Record | None:
    if kind == "source":
        return next((s for s in result.sources if s.source == ident), None)
    if kind == "unit":
        return next((u for u in result.units if u.unit == ident), None)
    if kind == "tag":
        return next((g for g in result.tags if g.tag == ident), None)
    return result.site


def target_value(result: MinuteResult, target: Target) -> float:
    """The watched value in one minute's results; NaN if the source, unit or tag is absent."""
    check_target(target)
    record = _find_record(result, target_kind(target), _target_id(target))
    if record is None:
        return math.nan
    return float(getattr(record, target.field))


def good_record(record: Record | None) -> bool:
    """Whether a record's values are good: a valid source / unit minute, a tag minute with
    valid samples (flag N), or the site."""
    if record is None:
        return False
    if isinstance(record, TagMinute):
        return record.flag is DataFlag.N and record.count > 0
    if isinstance(record, SiteMinute):
        return True
    return record.valid


def fmt_number(x: float) -> str:
    """A number for a message: 2 decimals (4 below 1), trailing zeros dropped."""
    text = f"{x:.{2 if abs(x) >= 1 else 4}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def minute_index(t: datetime, minute_seconds: float) -> int:
    """The plant-clock minute containing `t`, counted from the Unix epoch."""
    return math.floor(t.timestamp() / minute_seconds + 1e-9)


# --- what a rule is, for evaluation and messages ------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class RuleSpec:
    """One configured rule as evaluation and messages need it.

    `warning` and `alarm` are in the measured value's terms (e.g. t/MWh, minutes, %);
    `high` compares at or above them, else at or below.
    """

    id: str
    kind: str
    name: str
    target: str  # AlarmEvent.target, e.g. "source S1 co2_rate_t_h"
    subject: str  # the measured value in messages, e.g. "S1 co2_rate_t_h"
    subject_zh: str
    area: str  # the unit the rule belongs to, "site", or ""
    high: bool
    warning: float | None
    alarm: float | None
    deadband: float
    on_delay: int
    off_delay: int
    notify: tuple[str, ...]
    suppress: bool  # while `area` (a unit) is stopped
    config: RuleConfig

    @property
    def info(self) -> RuleInfo:
        """What the alarm state machine writes into this rule's events."""
        return RuleInfo(self.id, self.target, self.kind, self.area, self.name)

    @property
    def sign(self) -> float:
        """+1 for high rules, −1 for low ones: −x ≥ −level is x ≤ level."""
        return 1.0 if self.high else -1.0

    def norm_levels(self) -> tuple[float, float]:
        """(warning, alarm) times the sign, NaN where a level is not set."""
        s = self.sign
        return (math.nan if self.warning is None else s * self.warning,
                math.nan if self.alarm is None else s * self.alarm)

    def limit(self, level: int) -> float | None:
        """The level value of level 1 (warning) or 2 (alarm)."""
        return self.warning if level == 1 else self.alarm

    def message(self, new: int, old: int, value: float,
                note: str = "") -> tuple[float | None, str, str]:
        """(limit, English, Chinese) of a change of condition from `old` to `new`."""
        if self.kind == "comm_loss":
            what = f": {note}" if note else ""
            what_zh = f"：{note}" if note else ""
            if new > old:
                return None, f"{self.subject} communication lost{what}", \
                    f"{self.subject_zh} 通信中断{what_zh}"
            return None, f"{self.subject} communication restored", f"{self.subject_zh} 通信恢复"
        v = fmt_number(value)
        if new > old:
            level = self.limit(new)
            assert level is not None
            sign = "≥" if self.high else "≤"
            return (level, f"{self.subject} = {v} {sign} {_LEVEL_EN[new]} {fmt_number(level)}",
                    f"{self.subject_zh} = {v} {sign} {_LEVEL_ZH[new]} {fmt_number(level)}")
        # Leaving towards `new`: the level crossed is the lowest one above `new`.
        crossed = 1 if new == 0 and self.warning is not None else 2
        level = self.limit(crossed)
        assert level is not None
        sign = "<" if self.high else ">"
        db = self.deadband
        db_en = f" (deadband {fmt_number(db)})" if db else ""
        db_zh = f"（死区 {fmt_number(db)}）" if db else ""
        back_en = "back to normal" if new == 0 else f"back to {LEVELS[new]}"
        back_zh = "恢复正常" if new == 0 else f"降为{_STATE_ZH[new]}"
        return (level,
                f"{self.subject} = {v} {sign} {_LEVEL_EN[crossed]} {fmt_number(level)}"
                f"{db_en}, {back_en}",
                f"{self.subject_zh} = {v} {sign} {_LEVEL_ZH[crossed]} {fmt_number(level)}"
                f"{db_zh}，{back_zh}")


def tag_units(plant: PlantConfig) -> dict[str, set[str]]:
    """The units whose calculation reads each tag."""
    out: dict[str, set[str]] = {}
    for unit in plant.units:
        tags = [unit.output.power_mw.tag]
        for src in unit.sources:
            tags += [getattr(src.inputs, k).tag for k in type(src.inputs).model_fields
                     if getattr(getattr(src.inputs, k), "tag", None) is not None]
        for stream in unit.streams:
            if stream.rate_per_h is not None:
                tags.append(stream.rate_per_h.tag)
            if stream.counter is not None:
                tags.append(stream.counter.tag)
        for tag in tags:
            if tag is not None:
                out.setdefault(tag, set()).add(unit.id)
    return out


class Areas:
    """Which unit each rule belongs to (what suppresses it while stopped), for one plant."""

    def __init__(self, plant: PlantConfig) -> None:
        self.source_unit = {s.id: u.id for u, s in plant.sources()}
        self.tag_unit = {t: next(iter(us)) if len(us) == 1 else ""
                         for t, us in tag_units(plant).items()}
        units = tag_units(plant)
        self.device_unit: dict[str, str] = {}
        for dev in plant.devices:
            us: set[str] = set().union(*(units.get(t.id, set()) for t in dev.tags))
            self.device_unit[dev.id] = next(iter(us)) if len(us) == 1 else ""

    def __call__(self, config: RuleConfig) -> str:
        """A unit id, "site" for site-wide rules, or "" (no single unit)."""
        if isinstance(config, ThresholdRuleConfig | RateOfChangeRuleConfig | StaleRuleConfig):
            tgt = config.target
            if tgt.source is not None:
                return self.source_unit.get(tgt.source, "")
            if tgt.unit is not None:
                return tgt.unit
            if tgt.tag is not None:
                return self.tag_unit.get(tgt.tag, "")
            return "site"
        if isinstance(config, CommLossRuleConfig):
            return self.device_unit.get(config.device, "")
        if isinstance(config, IntensityRuleConfig):
            sc = config.scope
            if sc.source is not None:
                return self.source_unit.get(sc.source, "")
            return sc.unit if sc.unit is not None else "site"
        if isinstance(config, CaptureRateRuleConfig):
            return self.source_unit.get(config.source, "")
        if isinstance(config, ReconciliationRuleConfig):
            return config.unit
        return "site"


def rule_area(config: RuleConfig, plant: PlantConfig) -> str:
    """The unit a rule belongs to (what suppresses it when stopped), "site", or ""."""
    return Areas(plant)(config)


def rule_spec(config: RuleConfig, area: str = "") -> RuleSpec:
    """The evaluation and message view of one configured rule; ValueError on a bad field."""

    def spec(target: str, subject: str, subject_zh: str, high: bool, warning: float | None,
             alarm: float | None) -> RuleSpec:
        delays = ((config.on_delay_min, config.off_delay_min)
                  if not isinstance(config, StaleRuleConfig) else (0, 0))
        return RuleSpec(
            id=config.id, kind=config.kind, name=config.name, target=target, subject=subject,
            subject_zh=subject_zh, area=area, high=high, warning=warning, alarm=alarm,
            deadband=getattr(config, "deadband", 0.0), on_delay=delays[0], off_delay=delays[1],
            notify=tuple(config.notify),
            suppress=config.suppress_when_stopped and area not in ("", "site"), config=config)

    if isinstance(config, CommLossRuleConfig):
        return spec(f"device {config.device}", f"device {config.device}",
                    f"设备 {config.device}", True, None, 1.0)
    if isinstance(config, ThresholdRuleConfig | RateOfChangeRuleConfig | StaleRuleConfig):
        check_target(config.target, config.id)
        ident = _target_id(config.target)
        where, where_zh = f"{ident or 'site'} {config.target.field}", \
            f"{ident or '全厂'} {config.target.field}"
        label = target_label(config.target)
        if isinstance(config, ThresholdRuleConfig):
            return spec(label, where, where_zh, config.direction == "high", config.warning,
                        config.alarm)
        if isinstance(config, StaleRuleConfig):
            return spec(f"{label} stale", f"{where} minutes without a good value",
                        f"{where_zh} 无有效值分钟数", True, _opt_float(config.warning_min),
                        _opt_float(config.alarm_min))
        en, zh = _ROC_TEXT[config.direction]
        n = config.over_min
        return spec(f"{label} rate", f"{where} {en} per min over {n} min",
                    f"{where_zh} 每分钟{zh}（{n} 分钟内）", True, config.warning, config.alarm)
    if isinstance(config, IntensityRuleConfig):
        sc = config.scope
        who = sc.source or sc.unit
        label = f"source {sc.source}" if sc.source else f"unit {sc.unit}" if sc.unit else "site"
        en, zh = _WINDOW_TEXT[config.window]
        return spec(f"{label} intensity {config.window}",
                    f"{who or 'site'} intensity t/MWh ({en})",
                    f"{who or '全厂'} 排放强度 t/MWh（{zh}）", True, *config.levels())
    if isinstance(config, AllowanceRuleConfig):
        en, zh = _ALLOWANCE_TEXT[config.measure]
        return spec(f"site allowance {config.measure}", f"site {en}", f"全厂 {zh}", True,
                    config.warning, config.alarm)
    if isinstance(config, CaptureRateRuleConfig):
        w = config.window_h
        return spec(f"source {config.source} capture_rate",
                    f"{config.source} valid-hour capture rate % (last {w} h)",
                    f"{config.source} 有效小时捕集率 %（近 {w} 小时）", False, config.warning,
                    config.alarm)
    return spec(f"unit {config.unit} reconciliation",
                f"{config.unit} CEMS vs factor method |difference| %",
                f"{config.unit} CEMS 与核算法差异绝对值 %", True, config.warning, config.alarm)


def _opt_float(x: int | None) -> float | None:
    return None if x is None else float(x)


_DEFINITION = ("kind", "target", "direction", "over_min", "device", "scope", "window", "measure",
               "source", "window_h", "unit")


def definition(config: RuleConfig) -> tuple[object, ...]:
    """What a rule measures (kind, target, window …), without its levels, delays, name and
    channels: a rule changed only in those keeps its evaluation state."""
    fields = vars(config)  # not getattr: a missing attribute costs pydantic a slow miss
    return tuple(fields.get(name) for name in _DEFINITION)


def target_problems(plant: PlantConfig) -> list[tuple[str, str]]:
    """(key path, problem) of every rule whose target names a field its record lacks."""
    problems = []
    for i, rule in enumerate(plant.alarms.rules):
        target = getattr(rule, "target", None)
        if isinstance(target, Target):
            try:
                check_target(target)
            except ValueError as exc:
                problems.append((f"alarms.rules[{i}].target.field", str(exc)))
    return problems


def plant_specs(plant: PlantConfig) -> list[RuleSpec]:
    """The specs of every rule of a plant, in configuration order."""
    area = Areas(plant)
    return [rule_spec(r, area(r)) for r in plant.alarms.rules]


# --- what every rule shares in one minute -------------------------------------------------


def stopped_units(result: MinuteResult) -> set[str]:
    """Units stopped this minute: their unit record or one of their sources carries flag F."""
    out = {u.unit for u in result.units if u.flag is DataFlag.F}
    out.update(s.unit for s in result.sources if s.flag is DataFlag.F)
    return out


def month_key(clock: PlantClock, t: datetime) -> int:
    """The plant-local month of `t` as year · 12 + month − 1."""
    loc = clock.scaled_local(t)
    return loc.year * 12 + loc.month - 1


def allowance_measures(clock: PlantClock, t: datetime, ytd_t: float,
                       allowance: AllowanceConfig, trailing_30d_t: float) -> F64:
    """The allowance measures (ALLOWANCE_MEASURES order) at `t`; NaN where unknown.

    The forecast needs the trailing 30-day emissions (from the hourly allowance
    position of the period stage); until it is known the forecast measures are NaN.
    """
    frac, days_left = derived.year_progress(clock, t)
    pos = derived.allowance_position(allowance.annual_t, ytd_t, trailing_30d_t,
                                     year_fraction=frac, days_left=days_left,
                                     carbon_price_cny_t=allowance.carbon_price_cny_t)
    annual = allowance.annual_t
    prorated = (pos.ytd_t / pos.prorated_t * 100.0
                if frac >= MIN_PRORATED_FRACTION and pos.prorated_t > 0 else math.nan)
    forecast = pos.forecast_year_end_t / annual * 100.0 if annual > 0 else math.nan
    return np.array([pos.used_pct, prorated, forecast, pos.forecast_shortfall_t,
                     pos.shortfall_cost_cny], np.float64)


def hour_codes(records: PeriodRecords) -> dict[str, int]:
    """Per source of a closed hour: HOUR_VALID, HOUR_INVALID or HOUR_STOPPED (flag F)."""
    return {s.source: HOUR_STOPPED if s.flag is DataFlag.F else
            HOUR_VALID if s.valid else HOUR_INVALID for s in records.sources}


class MinuteContext:
    """One minute's records, indexed, and what every scalar rule shares; built once a minute."""

    def __init__(self, result: MinuteResult, clock: PlantClock, allowance: AllowanceConfig,
                 trailing_30d_t: float = math.nan) -> None:
        self.result = result
        self.t = result.t
        self.m = minute_index(result.t, clock.minute_seconds)
        self.stopped = stopped_units(result)
        self.month = month_key(clock, result.t)
        self._clock = clock
        self._allowance = allowance
        self._trailing = trailing_30d_t

    @cached_property
    def sources(self) -> dict[str, SourceMinute]:
        """Source records by id."""
        return {s.source: s for s in self.result.sources}

    @cached_property
    def units(self) -> dict[str, UnitMinute]:
        """Unit records by id."""
        return {u.unit: u for u in self.result.units}

    @cached_property
    def tags(self) -> dict[str, TagMinute]:
        """Tag records by id."""
        return {g.tag: g for g in self.result.tags}

    @cached_property
    def allowance(self) -> dict[str, float]:
        """The allowance measures by name, at the end of this minute."""
        end = self.t + timedelta(seconds=self._clock.minute_seconds)
        values = allowance_measures(self._clock, end, self.result.site.co2_ytd_t,
                                    self._allowance, self._trailing)
        return dict(zip(ALLOWANCE_MEASURES, values.tolist(), strict=True))

    @cached_property
    def site_co2_output(self) -> tuple[float, float]:
        """Σ CO2 (t) and Σ output (MWh) over the units with both values this minute."""
        co2_kg = out = 0.0
        for u in self.result.units:
            if math.isfinite(u.co2_kg) and math.isfinite(u.output_mwh):
                co2_kg += u.co2_kg
                out += u.output_mwh
        return co2_kg / 1000.0, out

    def record(self, kind: str, ident: str) -> Record | None:
        """The record a target names, or None if it is absent this minute."""
        if kind == "source":
            return self.sources.get(ident)
        if kind == "unit":
            return self.units.get(ident)
        if kind == "tag":
            return self.tags.get(ident)
        return self.result.site


# --- scalar rules: one rule in plain Python -----------------------------------------------


class ScalarRule:
    """One rule evaluated on its own in plain Python, with its own alarm state."""

    def __init__(self, config: RuleConfig, *, area: str = "",
                 minute_seconds: float = 60.0) -> None:
        self.config = config
        self.spec = rule_spec(config, area)
        self.id = config.id
        self.minute_seconds = minute_seconds
        self.alarm = AlarmState(self.spec.info)
        self._sign = self.spec.sign
        self._lv1, self._lv2 = self.spec.norm_levels()
        self._db = self.spec.deadband
        self._on, self._off = self.spec.on_delay, self.spec.off_delay
        self.level = 0
        self._up1 = self._up2 = self._dn1 = self._dn2 = NONE

    @property
    def state(self) -> str:
        """The condition: "normal", "warning" or "alarm"."""
        return LEVELS[self.level]

    @property
    def last_event(self) -> AlarmEvent | None:
        """The rule's latest alarm event."""
        return self.alarm.last_event

    def measure(self, ctx: MinuteContext) -> float:
        """The rule's value in one minute (NaN: nothing to evaluate this minute)."""
        return math.nan

    def note(self) -> str:
        """Extra text for a condition message (the device's fault)."""
        return ""

    def next_level(self, value: float, m: int) -> int:
        """Run the level logic on one value at minute `m`; the new level."""
        if value != value:  # NaN: no information, nothing changes
            return self.level
        x = value * self._sign
        held = self.level >= 1
        if x >= self._lv1 - (self._db if held else 0.0):
            if self._up1 == NONE:
                self._up1 = m
            self._dn1 = NONE
        else:
            if self._dn1 == NONE:
                self._dn1 = m
            self._up1 = NONE
        a1 = ((self._dn1 == NONE or m - self._dn1 < self._off) if held
              else (self._up1 != NONE and m - self._up1 >= self._on))
        held = self.level >= 2
        if x >= self._lv2 - (self._db if held else 0.0):
            if self._up2 == NONE:
                self._up2 = m
            self._dn2 = NONE
        else:
            if self._dn2 == NONE:
                self._dn2 = m
            self._up2 = NONE
        a2 = ((self._dn2 == NONE or m - self._dn2 < self._off) if held
              else (self._up2 != NONE and m - self._up2 >= self._on))
        self.level = 2 if a2 else 1 if a1 else 0
        return self.level

    def evaluate(self, value: float, t: datetime, m: int | None = None) -> AlarmEvent | None:
        """Feed one value; the event if the condition changed, else None (NaN keeps state)."""
        old = self.level
        new = self.next_level(value, minute_index(t, self.minute_seconds) if m is None else m)
        if new == old or self.alarm.out_of_service:
            return None
        limit, en, zh = self.spec.message(new, old, value, self.note())
        return self.alarm.condition(new, value, limit, t, en, zh)

    def step(self, ctx: MinuteContext) -> list[AlarmEvent]:
        """One minute: the condition, suppressed first if the unit stopped, unsuppressed
        after if it runs again; the events."""
        events = []
        stopped = self.spec.suppress and self.spec.area in ctx.stopped
        if stopped and not self.alarm.suppressed:
            events.append(self.alarm.suppress(True, ctx.t))
        ev = self.evaluate(self.measure(ctx), ctx.t, ctx.m)
        if ev is not None:
            events.append(ev)
        if not stopped and self.alarm.suppressed:
            events.append(self.alarm.suppress(False, ctx.t))
        return [e for e in events if e is not None]


class _TargetRule(ScalarRule):
    config: ThresholdRuleConfig | RateOfChangeRuleConfig | StaleRuleConfig

    def __init__(self, config: ThresholdRuleConfig | RateOfChangeRuleConfig | StaleRuleConfig,
                 **kw: typing.Any) -> None:
        super().__init__(config, **kw)
        self.target = config.target
        self._kind = target_kind(config.target)
        self._ident = _target_id(config.target)
        self._field = config.target.field

    def _value(self, ctx: MinuteContext) -> tuple[float, Record | None]:
        rec = ctx.record(self._kind, self._ident)
        return (math.nan if rec is None else float(getattr(rec, self._field))), rec


class ThresholdRule(_TargetRule):
    """Warning and alarm levels on one value of a source, unit, tag or the site."""

    def measure(self, ctx: MinuteContext) -> float:
        """The target's value this minute."""
        return self._value(ctx)[0]


class RateOfChangeRule(_TargetRule):
    """Levels on the rate of change per minute of a value, over N minutes."""

    config: RateOfChangeRuleConfig

    def __init__(self, config: RateOfChangeRuleConfig, **kw: typing.Any) -> None:
        super().__init__(config, **kw)
        self._n = config.over_min
        self._history: dict[int, float] = {}

    def rate(self, x: float, m: int) -> float:
        """Record x at minute m; (x − x(m − N)) / N per minute, or NaN without x(m − N)."""
        hist = self._history
        hist[m] = x
        for old in [k for k in hist if k < m - self._n]:
            del hist[old]
        rate = (x - hist.get(m - self._n, math.nan)) / self._n
        d = self.config.direction
        return rate if d == "rise" else -rate if d == "fall" else abs(rate)

    def measure(self, ctx: MinuteContext) -> float:
        """The watched rate this minute."""
        return self.rate(self._value(ctx)[0], ctx.m)


class StaleRule(_TargetRule):
    """Minutes since the target last had a good value (from the first minute seen)."""

    def __init__(self, config: StaleRuleConfig, **kw: typing.Any) -> None:
        super().__init__(config, **kw)
        self._last_good = NONE

    def minutes(self, good: bool, m: int) -> float:
        """Record whether minute m was good; the minutes since the last good one."""
        if self._last_good == NONE or good:
            self._last_good = m
        return float(m - self._last_good)

    def measure(self, ctx: MinuteContext) -> float:
        """Minutes without a good value."""
        x, rec = self._value(ctx)
        return self.minutes(good_record(rec) and math.isfinite(x), ctx.m)


class CommLossRule(ScalarRule):
    """An alarm while a device's communication has failed."""

    config: CommLossRuleConfig

    def __init__(self, config: CommLossRuleConfig, **kw: typing.Any) -> None:
        super().__init__(config, **kw)
        self.fault = False
        self._message = ""

    def note(self) -> str:
        """The driver's message about the fault."""
        return self._message if self.fault else ""

    def on_device_event(self, event: DeviceEvent) -> AlarmEvent | None:
        """Take a device's fault or restoration; the event if the condition changed."""
        if event.device != self.config.device:
            return None
        self.fault, self._message = event.fault, event.message
        return self.evaluate(1.0 if self.fault else 0.0, event.t)

    def measure(self, ctx: MinuteContext) -> float:
        """1 while the device is in fault (the on / off delays run with the minutes)."""
        return 1.0 if self.fault else 0.0


class _Rolling:
    """Running sums of (CO2, output) over the last `width` minutes (plain Python)."""

    def __init__(self, width: int) -> None:
        self.width = width
        self.items: deque[tuple[int, float, float]] = deque()
        self.co2 = self.out = 0.0
        self.last = NONE
        self._pushes = 0

    def push(self, m: int, co2: float, out: float) -> None:
        if m <= self.last:
            return
        self.last = m
        self.items.append((m, co2, out))
        self.co2 += co2
        self.out += out
        while self.items[0][0] <= m - self.width:
            _, c, o = self.items.popleft()
            self.co2 -= c
            self.out -= o
        self._pushes += 1
        if self._pushes % self.width == 0:  # no drift from adding and subtracting
            self.co2 = math.fsum(c for _, c, _ in self.items)
            self.out = math.fsum(o for _, _, o in self.items)


class IntensityRule(ScalarRule):
    """Emission intensity (t/MWh) of a source, unit or the site over a window."""

    config: IntensityRuleConfig

    def __init__(self, config: IntensityRuleConfig, **kw: typing.Any) -> None:
        super().__init__(config, **kw)
        self._window = config.window
        width = _WINDOW_MINUTES.get(config.window)
        self._rolling = _Rolling(width) if width is not None else None
        self._month = NONE
        self._co2 = self._out = 0.0
        self._min_out = config.min_output_mwh

    def minute_values(self, ctx: MinuteContext) -> tuple[float, float]:
        """This minute's CO2 (t) and output (MWh) of the scope; (0, 0) if either is missing."""
        sc = self.config.scope
        if sc.site:
            return ctx.site_co2_output
        if sc.source is not None:
            src = ctx.sources.get(sc.source)
            unit = ctx.units.get(src.unit) if src is not None else None
            co2 = src.co2_kg / 1000.0 if src is not None else math.nan
        else:
            unit = ctx.units.get(sc.unit or "")
            co2 = unit.co2_kg / 1000.0 if unit is not None else math.nan
        out = unit.output_mwh if unit is not None else math.nan
        if math.isfinite(co2) and math.isfinite(out):
            return co2, out
        return 0.0, 0.0

    def measure(self, ctx: MinuteContext) -> float:
        """Σ CO2 / Σ output over the window; NaN at or below `min_output_mwh`."""
        co2, out = self.minute_values(ctx)
        if self._rolling is not None:
            self._rolling.push(ctx.m, co2, out)
            co2, out = self._rolling.co2, self._rolling.out
        elif self._window == "month_to_date":
            if ctx.month != self._month:
                self._month, self._co2, self._out = ctx.month, 0.0, 0.0
            self._co2 += co2
            self._out += out
            co2, out = self._co2, self._out
        return co2 / out if out > self._min_out and out > 0.0 else math.nan


class AllowanceRule(ScalarRule):
    """The site's allowance position: one measure against levels."""

    config: AllowanceRuleConfig

    def measure(self, ctx: MinuteContext) -> float:
        """The configured allowance measure at the end of this minute."""
        return ctx.allowance[self.config.measure]


class CaptureRateRule(ScalarRule):
    """A source's valid-hour capture rate over the last closed hours (evaluated hourly)."""

    config: CaptureRateRuleConfig

    def __init__(self, config: CaptureRateRuleConfig, **kw: typing.Any) -> None:
        super().__init__(config, **kw)
        self._hours: dict[int, int] = {}

    def rate(self, code: int, h: int) -> float:
        """Record closed hour h's code; the capture rate %, NaN below `min_hours` counted."""
        w = self.config.window_h
        self._hours[h] = code
        for old in [k for k in self._hours if k <= h - w]:
            del self._hours[old]
        codes = list(self._hours.values())
        valid = codes.count(HOUR_VALID)
        counted = valid + codes.count(HOUR_INVALID)
        return valid / counted * 100.0 if counted >= self.config.min_hours else math.nan

    def on_period(self, records: PeriodRecords) -> AlarmEvent | None:
        """Take a closed hour (other periods are ignored); the event if the condition changed."""
        if records.level != "hour":
            return None
        code = hour_codes(records).get(self.config.source, HOUR_UNKNOWN)
        m = minute_index(records.t, self.minute_seconds)
        return self.evaluate(self.rate(code, m // 60), records.t_end)


class ReconciliationRule(ScalarRule):
    """A unit's daily CEMS vs factor-method |difference| % against levels."""

    config: ReconciliationRuleConfig

    def on_reconciliation(self, unit: str, t: datetime, diff_pct: float) -> AlarmEvent | None:
        """Take one day's difference of `unit`; the event if the condition changed."""
        if unit != self.config.unit:
            return None
        return self.evaluate(abs(diff_pct), t)


_SCALAR: dict[str, type[ScalarRule]] = {
    "threshold": ThresholdRule, "rate_of_change": RateOfChangeRule, "stale": StaleRule,
    "comm_loss": CommLossRule, "intensity": IntensityRule,
    "allowance_position": AllowanceRule, "capture_rate": CaptureRateRule,
    "reconciliation_diff": ReconciliationRule}


def scalar_rules(plant: PlantConfig) -> list[ScalarRule]:
    """Every rule of a plant as a scalar rule (the reference and the bench baseline)."""
    ms = plant.clock.minute_seconds
    area = Areas(plant)
    return [_SCALAR[r.kind](r, area=area(r), minute_seconds=ms)
            for r in plant.alarms.rules]


# --- the vectorised bank: all rules of a plant at once ------------------------------------


class LevelBank:
    """The level logic of many rules on numpy arrays: one call per evaluation, any subset."""

    def __init__(self, specs: Sequence[RuleSpec]) -> None:
        n = len(specs)
        lv = np.array([s.norm_levels() for s in specs], np.float64).reshape(n, 2)
        self.lv1 = lv[:, 0].copy()
        self.lv2 = lv[:, 1].copy()
        self.db = np.array([s.deadband for s in specs], np.float64)
        self.on = np.array([s.on_delay for s in specs], np.int64)
        self.off = np.array([s.off_delay for s in specs], np.int64)
        self.sign = np.array([s.sign for s in specs], np.float64)
        self.level = np.zeros(n, np.int8)
        self.up1, self.up2, self.dn1, self.dn2 = (np.full(n, NONE, np.int64) for _ in range(4))

    def reset(self, i: int, level: int = 0) -> None:
        """At `level` with no timers running: normal for a rule returned to service, its
        alarm state's level for one restored or redefined."""
        self.level[i] = level
        for a in (self.up1, self.up2, self.dn1, self.dn2):
            a[i] = NONE

    def take_over(self, old: LevelBank, rows: npt.NDArray[np.intp],
                  old_rows: npt.NDArray[np.intp]) -> None:
        """Rows `rows` continue with the levels and delay timers of `old`'s `old_rows`."""
        for mine, theirs in ((self.level, old.level), (self.up1, old.up1), (self.up2, old.up2),
                             (self.dn1, old.dn1), (self.dn2, old.dn2)):
            mine[rows] = theirs[old_rows]

    def step(self, rows: Rows, value: F64, m: int) -> tuple[npt.NDArray[np.intp],
                                                             npt.NDArray[np.int8],
                                                             npt.NDArray[np.int8]]:
        """Evaluate `rows` on their values at minute m; (changed positions in rows, old, new)."""
        old = self.level[rows]
        x = value * self.sign[rows]
        ok = ~np.isnan(x)
        act = []
        for k, lv, up_a, dn_a in ((1, self.lv1, self.up1, self.dn1),
                                  (2, self.lv2, self.up2, self.dn2)):
            held = old >= k
            cond = x >= lv[rows] - self.db[rows] * held  # NaN level or value: False
            up, dn = up_a[rows], dn_a[rows]
            up = np.where(ok, np.where(cond, np.where(up == NONE, m, up), NONE), up)
            dn = np.where(ok, np.where(cond, NONE, np.where(dn == NONE, m, dn)), dn)
            up_a[rows], dn_a[rows] = up, dn
            act.append(np.where(held, (dn == NONE) | (m - dn < self.off[rows]),
                                (up != NONE) & (m - up >= self.on[rows])))
        new = np.where(ok, np.where(act[1], 2, np.where(act[0], 1, 0)), old).astype(np.int8)
        changed = np.flatnonzero(new != old)
        old_changed = old[changed]  # a copy: `old` may be a view of self.level
        self.level[rows] = new
        return changed, old_changed, new[changed]


class _FieldTable:
    """Each minute, the record fields the rules read, gathered into one flat array.

    `refs` are (kind, id, field) triples; `load` returns their values (NaN where the
    record is absent) and whether each came from a good record.
    """

    def __init__(self, refs: Sequence[tuple[str, str, str]]) -> None:
        self.refs = list(refs)
        self.fields: dict[str, list[str]] = {
            k: sorted({f for kind, _, f in self.refs if kind == k})
            for k in ("source", "unit", "tag", "site")}
        self._ids: dict[str, list[str]] = {}
        self._index = np.zeros(len(self.refs), np.intp)
        self._good_tmpl: B1 | None = None

    def _ids_of(self, kind: str, result: MinuteResult) -> list[str]:
        if kind == "source":
            return [s.source for s in result.sources]
        if kind == "unit":
            return [u.unit for u in result.units]
        return [g.tag for g in result.tags]

    def load(self, result: MinuteResult, need_good: bool) -> tuple[F64, B1]:
        """The refs' values this minute, and whether each one's record is good."""
        parts: list[F64] = []
        goods: list[B1] = []
        ids: dict[str, list[str]] = {}
        for kind, records in (("source", result.sources), ("unit", result.units),
                              ("tag", result.tags)):
            fields = self.fields[kind]
            if not fields:
                continue
            recs: Sequence[Record] = records
            ids[kind] = self._ids_of(kind, result)
            n, nf = len(recs), len(fields)
            get = operator.attrgetter(*fields)
            if nf == 1:
                vals = np.fromiter(map(get, recs), np.float64, n)
            else:
                vals = np.fromiter(itertools.chain.from_iterable(map(get, recs)),
                                   np.float64, n * nf)
            parts.append(vals)
            if need_good:
                goods.append(np.repeat(_good_flags(kind, recs), nf))
        site_fields = self.fields["site"]
        parts.append(np.array([getattr(result.site, f) for f in site_fields], np.float64))
        parts.append(np.array([math.nan]))
        if ids != self._ids:
            self._reindex(ids)
        flat = np.concatenate(parts)[self._index]
        if not need_good:
            return flat, np.zeros(0, np.bool_)
        goods.append(np.ones(len(site_fields), np.bool_))
        goods.append(np.zeros(1, np.bool_))
        return flat, np.concatenate(goods)[self._index]

    def _reindex(self, ids: dict[str, list[str]]) -> None:
        """Where each ref sits in the flat array, for a new order of records."""
        self._ids = ids
        offset: dict[str, int] = {}
        pos: dict[str, dict[str, int]] = {}
        n = 0
        for kind in ("source", "unit", "tag"):
            if kind in ids:
                offset[kind] = n
                pos[kind] = {ident: i for i, ident in enumerate(ids[kind])}
                n += len(ids[kind]) * len(self.fields[kind])
        offset["site"] = n
        missing = n + len(self.fields["site"])
        index = []
        for kind, ident, field in self.refs:
            col = self.fields[kind].index(field)
            if kind == "site":
                index.append(offset["site"] + col)
                continue
            p = pos[kind].get(ident)
            index.append(missing if p is None
                         else offset[kind] + p * len(self.fields[kind]) + col)
        self._index = np.array(index, np.intp)


def _good_flags(kind: str, recs: Sequence[Record]) -> B1:
    """`good_record` of many records of one kind at once."""
    n = len(recs)
    if kind != "tag":
        return np.fromiter(map(operator.attrgetter("valid"), recs), np.bool_, n)
    flag = np.fromiter(map(operator.attrgetter("flag"), recs), np.int64, n)
    count = np.fromiter(map(operator.attrgetter("count"), recs), np.int64, n)
    good: B1 = (flag == DataFlag.N) & (count > 0)
    return good


class _RollingBank:
    """Running sums of (CO2, output) of many entities over the last `width` minutes."""

    def __init__(self, n: int, width: int) -> None:
        self.width = width
        self.ring = np.zeros((2, n, width))
        self.sums = np.zeros((2, n))
        self.last = NONE
        self._pushes = 0

    def take_over(self, old: _RollingBank, mine: npt.NDArray[np.intp],
                  theirs: npt.NDArray[np.intp]) -> None:
        """Entities `mine` continue with `old`'s `theirs`; the others start from zero."""
        self.ring[:, mine] = old.ring[:, theirs]
        self.sums[:, mine] = old.sums[:, theirs]
        self.last, self._pushes = old.last, old._pushes

    def push(self, m: int, co2: F64, out: F64) -> None:
        if m <= self.last:
            return
        if m - self.last >= self.width:
            self.ring[:] = 0.0
            self.sums[:] = 0.0
        elif m - self.last > 1:  # minutes without a result drop out of the window as zeros
            gap = np.arange(self.last + 1, m) % self.width
            self.sums -= self.ring[:, :, gap].sum(axis=2)
            self.ring[:, :, gap] = 0.0
        self.last = m
        s = m % self.width
        new = np.stack([co2, out])
        self.sums += new - self.ring[:, :, s]
        self.ring[:, :, s] = new
        self._pushes += 1
        if self._pushes % self.width == 0:  # no drift from adding and subtracting
            self.sums = self.ring.sum(axis=2)


@dataclass(slots=True)
class Changes:
    """What one evaluation changed: suppression flags, then condition levels, by row."""

    t: datetime
    suppress_rows: npt.NDArray[np.intp]
    suppress_on: B1
    rows: npt.NDArray[np.intp]
    old: npt.NDArray[np.int8]
    new: npt.NDArray[np.int8]


_EMPTY_ROWS = np.zeros(0, np.intp)


class RuleBank:
    """All alarm rules of a plant evaluated together on numpy arrays.

    Per minute the cost is a handful of numpy operations over all rules, whatever
    their number; only the rules whose condition or suppression changed come back
    for the Python state machine. `value` holds every rule's latest measured value.
    """

    def __init__(self, plant: PlantConfig, specs: Sequence[RuleSpec] | None = None) -> None:
        self.plant = plant
        self.specs = list(specs) if specs is not None else plant_specs(plant)
        self.clock = PlantClock(plant.clock.minute_seconds, plant.site.timezone)
        n = len(self.specs)
        self.n = n
        self.levels = LevelBank(self.specs)
        self.value = np.full(n, math.nan)
        self.trailing_30d_t = math.nan
        self.last_m = NONE
        kind = np.array([s.kind for s in self.specs], dtype=object)
        rows = {k: np.flatnonzero(kind == k) for k in _SCALAR}
        self._rows = rows
        cfgs: list[typing.Any] = [s.config for s in self.specs]

        # Suppression: the rule's unit (index into plant.units) or -1.
        self._unit_ix = {u.id: i for i, u in enumerate(plant.units)}
        self._area = np.array([self._unit_ix.get(s.area, -1) if s.suppress else -1
                               for s in self.specs], np.intp)
        self.suppressed = np.zeros(n, np.bool_)

        # Rules on a record field: threshold, rate of change, stale.
        refs: list[tuple[str, str, str]] = []
        self._tgt_rows = np.concatenate([rows["threshold"], rows["rate_of_change"],
                                         rows["stale"]])
        for i in self._tgt_rows:
            tgt = cfgs[i].target
            refs.append((target_kind(tgt), _target_id(tgt), tgt.field))
        n_tgt = len(refs)
        self._is_tgt = np.zeros(n, np.intp)  # rule row → position in the target refs
        self._is_tgt[self._tgt_rows] = np.arange(n_tgt)
        self._roc_groups = []
        for over in sorted({cfgs[i].over_min for i in rows["rate_of_change"]}):
            r = np.array([i for i in rows["rate_of_change"] if cfgs[i].over_min == over],
                         np.intp)
            direction = np.array([{"rise": 0, "fall": 1, "both": 2}[cfgs[i].direction]
                                  for i in r], np.int8)
            self._roc_groups.append(_RocGroup(r, over, direction))
        self._stale_last = np.full(len(rows["stale"]), NONE, np.int64)

        # Intensity: per window, the entities (source / unit / site) the rules look at.
        src_unit = {s.id: u.id for u, s in plant.sources()}
        self._ent_refs: list[tuple[str, str]] = []  # (kind, id); "site" once at most
        ent_ix: dict[tuple[str, str], int] = {}
        per_window: dict[str, list[int]] = {}
        for i in rows["intensity"]:
            sc = cfgs[i].scope
            key = (("source", sc.source) if sc.source else ("unit", sc.unit) if sc.unit
                   else ("site", ""))
            per_window.setdefault(cfgs[i].window, []).append(ent_ix.setdefault(key, len(ent_ix)))
        self._ent_refs = list(ent_ix)
        self._windows: list[_IntensityWindow] = []
        for window, ents in per_window.items():
            r = np.array([i for i in rows["intensity"] if cfgs[i].window == window], np.intp)
            used = sorted(set(ents))
            where = {e: j for j, e in enumerate(used)}
            width = _WINDOW_MINUTES.get(window)
            self._windows.append(_IntensityWindow(
                window, r, np.array(used, np.intp), np.array([where[e] for e in ents], np.intp),
                np.array([cfgs[i].min_output_mwh for i in r], np.float64),
                _RollingBank(len(used), width) if width is not None else None,
                np.zeros((2, len(used)))))
        # CO2 and output refs of the intensity entities, after the target refs.
        self._site_units = [u.id for u in plant.units]
        for kind_, ident in self._ent_refs:
            if kind_ == "source":
                refs += [("source", ident, "co2_kg"),
                         ("unit", src_unit.get(ident, ""), "output_mwh")]
            elif kind_ == "unit":
                refs += [("unit", ident, "co2_kg"), ("unit", ident, "output_mwh")]
        self._site_ref0 = len(refs)
        if ("site", "") in ent_ix:
            for u in self._site_units:
                refs += [("unit", u, "co2_kg"), ("unit", u, "output_mwh")]
        self._n_tgt = n_tgt
        self._ent_own = np.array([k for k, (kind_, _) in enumerate(self._ent_refs)
                                  if kind_ != "site"], np.intp)
        self._ent_site = ent_ix.get(("site", ""), -1)
        self._table = _FieldTable(refs)
        self._month = NONE

        # Allowance, comm loss, capture rate, reconciliation.
        self._allow_ix = np.array([ALLOWANCE_MEASURES.index(cfgs[i].measure)
                                   for i in rows["allowance_position"]], np.intp)
        self.devices = [d.id for d in plant.devices]
        dev_ix = {d: i for i, d in enumerate(self.devices)}
        self.fault = np.zeros(len(self.devices), np.bool_)
        self.fault_message = [""] * len(self.devices)
        self._comm_dev = np.array([dev_ix.get(cfgs[i].device, -1)
                                   for i in rows["comm_loss"]], np.intp)
        self._capture = _CaptureBank([cfgs[i] for i in rows["capture_rate"]],
                                     rows["capture_rate"])
        recon: dict[str, list[int]] = {}
        for i in rows["reconciliation_diff"]:
            recon.setdefault(cfgs[i].unit, []).append(int(i))
        self._recon = {u: np.array(r, np.intp) for u, r in recon.items()}

    def restore(self, row: int, level: int, suppressed: bool, t: datetime,
                value: float) -> None:
        """Hold rule `row` at `level` (suppressed or not) as its last journaled event, at `t`
        with `value`, left it before a restart; its delay timers start afresh.

        A stale rule in warning or alarm goes on counting from the minutes it had then, so
        that a value still stale after the restart does not return it to normal.
        """
        self.levels.reset(row, level)
        self.suppressed[row] = suppressed
        if level > 0 and self.specs[row].kind == "stale" and math.isfinite(value):
            pos = np.searchsorted(self._rows["stale"], row)
            self._stale_last[pos] = minute_index(t, self.clock.minute_seconds) - int(value)

    def take_over(self, old: RuleBank, kept: Sequence[tuple[int, int]]) -> None:
        """Continue where `old` (the bank before a change of rules) left off.

        Taken over: device faults, trailing emissions and the clock; the emission windows
        and closed hours of the entities both banks watch; and, for each (row, old row)
        in `kept` (rules whose definition did not change), levels, delay timers, last
        value, rate-of-change history and stale count.
        """
        self.last_m, self.trailing_30d_t, self._month = old.last_m, old.trailing_30d_t, old._month
        faults = dict(zip(old.devices, zip(old.fault.tolist(), old.fault_message, strict=True),
                          strict=True))
        for d, dev in enumerate(self.devices):
            self.fault[d], self.fault_message[d] = faults.get(dev, (False, ""))
        new = np.array([r for r, _ in kept], np.intp)
        was = np.array([r for _, r in kept], np.intp)
        self.levels.take_over(old.levels, new, was)
        self.value[new] = old.value[was]
        for g in self._roc_groups:
            og = next((o for o in old._roc_groups if o.over == g.over), None)
            if og is None:
                continue
            g.stamp[:] = og.stamp
            mine = np.isin(new, g.rows)
            g.ring[np.searchsorted(g.rows, new[mine])] = og.ring[np.searchsorted(og.rows,
                                                                                 was[mine])]
        stale, old_stale = self._rows["stale"], old._rows["stale"]
        mine = np.isin(new, stale)
        self._stale_last[np.searchsorted(stale, new[mine])] = old._stale_last[
            np.searchsorted(old_stale, was[mine])]
        for w in self._windows:
            ow = next((o for o in old._windows if o.window == w.window), None)
            if ow is None:
                continue
            at = {old._ent_refs[e]: j for j, e in enumerate(ow.entities.tolist())}
            pairs = [(j, at[self._ent_refs[e]]) for j, e in enumerate(w.entities.tolist())
                     if self._ent_refs[e] in at]
            if not pairs:
                continue
            nj, oj = (np.array(x, np.intp) for x in zip(*pairs, strict=True))
            w.sums[:, nj] = ow.sums[:, oj]
            if w.rolling is not None and ow.rolling is not None:
                w.rolling.take_over(ow.rolling, nj, oj)
        self._capture.take_over(old._capture)

    def _stopped(self, result: MinuteResult) -> B1:
        """Per plant unit whether it is stopped, plus a last False for rules without one."""
        stopped = np.zeros(len(self._unit_ix) + 1, np.bool_)
        for name in stopped_units(result):
            if name in self._unit_ix:
                stopped[self._unit_ix[name]] = True
        return stopped

    def minute(self, result: MinuteResult) -> Changes:
        """Evaluate every rule on one minute's results."""
        m = minute_index(result.t, self.clock.minute_seconds)
        self.last_m = max(self.last_m, m)
        new_supp = self._stopped(result)[self._area]
        supp_rows = np.flatnonzero(new_supp != self.suppressed)
        self.suppressed = new_supp

        value = np.full(self.n, math.nan)
        flat, good = self._table.load(result, need_good=len(self._rows["stale"]) > 0)
        tv = flat[:self._n_tgt]
        value[self._rows["threshold"]] = tv[self._is_tgt[self._rows["threshold"]]]
        for g in self._roc_groups:
            value[g.rows] = g.rate(tv[self._is_tgt[g.rows]], m)
        if len(self._rows["stale"]):
            pos = self._is_tgt[self._rows["stale"]]
            ok = good[pos] & np.isfinite(tv[pos])
            last = self._stale_last
            last[(last == NONE) | ok] = m
            value[self._rows["stale"]] = (m - last).astype(np.float64)
        if len(self._comm_dev):
            value[self._rows["comm_loss"]] = self.fault[self._comm_dev].astype(np.float64)
        if self._windows:
            self._intensity(flat, m, result.t, value)
        if len(self._allow_ix):
            end = result.t + timedelta(seconds=self.clock.minute_seconds)
            meas = allowance_measures(self.clock, end, result.site.co2_ytd_t,
                                      self.plant.allowance, self.trailing_30d_t)
            value[self._rows["allowance_position"]] = meas[self._allow_ix]

        # Period-driven rules (capture rate, reconciliation) keep their last value.
        keep = np.isnan(value)
        self.value = np.where(keep, self.value, value)
        rows, old, new = self.levels.step(slice(None), value, m)
        return Changes(result.t, supp_rows, new_supp[supp_rows], rows, old, new)

    def _intensity(self, flat: F64, m: int, t: datetime, value: F64) -> None:
        """The intensity rules' values: update each window's sums with this minute."""
        # (CO2 kg, output MWh) per entity; a pair with a missing value counts as (0, 0).
        pair = np.zeros((len(self._ent_refs), 2))
        pair[self._ent_own] = flat[self._n_tgt:self._site_ref0].reshape(-1, 2)
        if self._ent_site >= 0:
            su = flat[self._site_ref0:].reshape(-1, 2)
            pair[self._ent_site] = su[np.isfinite(su).all(axis=1)].sum(axis=0)
        ok = np.isfinite(pair).all(axis=1)
        co2 = np.where(ok, pair[:, 0] / 1000.0, 0.0)
        out = np.where(ok, pair[:, 1], 0.0)
        month = None
        for w in self._windows:
            c, o = co2[w.entities], out[w.entities]
            if w.rolling is not None:
                w.rolling.push(m, c, o)
                c, o = w.rolling.sums[0], w.rolling.sums[1]
            elif w.window == "month_to_date":
                if month is None:
                    month = month_key(self.clock, t)
                if month != self._month:
                    w.sums[:] = 0.0
                w.sums[0] += c
                w.sums[1] += o
                c, o = w.sums[0], w.sums[1]
            cr, orr = c[w.pick], o[w.pick]
            with np.errstate(divide="ignore", invalid="ignore"):
                value[w.rows] = np.where((orr > w.min_out) & (orr > 0.0), cr / orr, math.nan)
        if month is not None:
            self._month = month

    def device_event(self, event: DeviceEvent) -> Changes:
        """Take a device's fault or restoration: its comm-loss rules are evaluated at once."""
        d = self.devices.index(event.device) if event.device in self.devices else -1
        if d < 0:
            return Changes(event.t, _EMPTY_ROWS, np.zeros(0, np.bool_), _EMPTY_ROWS,
                           np.zeros(0, np.int8), np.zeros(0, np.int8))
        self.fault[d] = event.fault
        self.fault_message[d] = event.message
        rows = self._rows["comm_loss"][self._comm_dev == d]
        return self._step_rows(rows, np.full(len(rows), 1.0 if event.fault else 0.0), event.t)

    def note(self, row: int) -> str:
        """Extra text for a rule's condition message (a comm-loss rule's device fault)."""
        spec = self.specs[row]
        if spec.kind != "comm_loss":
            return ""
        d = self._comm_dev[np.searchsorted(self._rows["comm_loss"], row)]
        return self.fault_message[d] if d >= 0 and self.fault[d] else ""

    def period(self, records: PeriodRecords) -> Changes:
        """Take a closed hour (capture rates, the trailing emissions of the allowance)."""
        if records.allowance is not None:
            self.trailing_30d_t = records.allowance.trailing_30d_t
        if records.level != "hour" or not len(self._capture.rows):
            return self._step_rows(_EMPTY_ROWS, np.zeros(0), records.t_end)
        h = minute_index(records.t, self.clock.minute_seconds) // 60
        rates = self._capture.push(hour_codes(records), h)
        return self._step_rows(self._capture.rows, rates, records.t_end)

    def reconciliation(self, unit: str, t: datetime, diff_pct: float) -> Changes:
        """Take one day's CEMS vs factor-method difference of a unit."""
        rows = self._recon.get(unit, _EMPTY_ROWS)
        return self._step_rows(rows, np.full(len(rows), abs(diff_pct)), t)

    def _step_rows(self, rows: npt.NDArray[np.intp], value: F64, t: datetime) -> Changes:
        m = max(minute_index(t, self.clock.minute_seconds), self.last_m)
        self.value[rows] = value
        changed, old, new = self.levels.step(rows, value, m)
        return Changes(t, _EMPTY_ROWS, np.zeros(0, np.bool_), rows[changed], old, new)


@dataclass(slots=True, eq=False)
class _RocGroup:
    """The rate-of-change rules over the same number of minutes: one ring of past values."""

    rows: npt.NDArray[np.intp]
    over: int
    direction: npt.NDArray[np.int8]  # 0 rise, 1 fall, 2 both
    ring: F64 = dataclasses.field(init=False)
    stamp: I64 = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.ring = np.full((len(self.rows), self.over + 1), math.nan)
        self.stamp = np.full(self.over + 1, NONE, np.int64)

    def rate(self, x: F64, m: int) -> F64:
        """Record x at minute m; the watched rate per minute, NaN without x(m − over)."""
        size = self.over + 1
        self.ring[:, m % size] = x
        self.stamp[m % size] = m
        back = (m - self.over) % size
        if self.stamp[back] != m - self.over:
            return np.full(len(self.rows), math.nan)
        rate = (x - self.ring[:, back]) / self.over
        return np.where(self.direction == 0, rate,
                        np.where(self.direction == 1, -rate, np.abs(rate)))


@dataclass(slots=True, eq=False)
class _IntensityWindow:
    """The intensity rules of one window: their entities and the window's sums."""

    window: str
    rows: npt.NDArray[np.intp]  # rule rows
    entities: npt.NDArray[np.intp]  # into the bank's intensity entities
    pick: npt.NDArray[np.intp]  # per rule row: position in `entities`
    min_out: F64
    rolling: _RollingBank | None
    sums: F64  # month to date: (CO2, output) per entity


class _CaptureBank:
    """Codes of the last closed hours of the sources that capture-rate rules watch."""

    def __init__(self, configs: Sequence[CaptureRateRuleConfig],
                 rows: npt.NDArray[np.intp]) -> None:
        self.rows = rows
        self.sources = sorted({c.source for c in configs})
        where = {s: i for i, s in enumerate(self.sources)}
        self.src = np.array([where[c.source] for c in configs], np.intp)
        self.window = np.array([c.window_h for c in configs], np.int64)
        self.min_hours = np.array([c.min_hours for c in configs], np.int64)
        self.size = int(self.window.max(initial=1))
        self.codes = np.zeros((len(self.sources), self.size), np.int8)
        self.stamp = np.full(self.size, NONE, np.int64)

    def take_over(self, old: _CaptureBank) -> None:
        """The closed hours `old` holds of the sources both watch (as many as fit)."""
        where = {s: i for i, s in enumerate(old.sources)}
        common = [(i, where[s]) for i, s in enumerate(self.sources) if s in where]
        if not common:
            return
        mine, theirs = (np.array(x, np.intp) for x in zip(*common, strict=True))
        for col in np.argsort(old.stamp).tolist():  # oldest first: a later hour wins its slot
            h = int(old.stamp[col])
            if h != NONE:
                self.codes[mine, h % self.size] = old.codes[theirs, col]
                self.stamp[h % self.size] = h

    def push(self, codes: Mapping[str, int], h: int) -> F64:
        """Record closed hour h; every rule's capture rate %, NaN below its `min_hours`."""
        s = h % self.size
        self.codes[:, s] = [codes.get(src, HOUR_UNKNOWN) for src in self.sources]
        self.stamp[s] = h
        out = np.full(len(self.rows), math.nan)
        for w in np.unique(self.window):
            ago = np.arange(int(w))
            cols = (h - ago) % self.size
            current = self.stamp[cols] == h - ago
            block = np.where(current[None, :], self.codes[:, cols], HOUR_UNKNOWN)
            valid = (block == HOUR_VALID).sum(axis=1)
            counted = valid + (block == HOUR_INVALID).sum(axis=1)
            sel = self.window == w
            v, c = valid[self.src[sel]], counted[self.src[sel]]
            with np.errstate(divide="ignore", invalid="ignore"):
                out[sel] = np.where(c >= self.min_hours[sel], v / c * 100.0, math.nan)
        return out
