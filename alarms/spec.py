"""Alarm rule specs: what each kind measures, its levels, and its messages.

Every rule reduces to one measured value per evaluation, compared with a warning
(预警) and an alarm (报警) level — "high" rules at or above, "low" rules at or below —
with a deadband for leaving a level and on / off delays in plant minutes. The kinds
differ only in the value:

    threshold            a field of a source, unit, raw tag or the site
    rate_of_change       (x(m) − x(m−N)) / N per minute: its rise, fall or magnitude
    stale                minutes since the last good value (finite, flag N)
    comm_loss            1 while a device's communication has failed (DeviceEvent), else 0
    intensity            Σ CO2 / Σ output (t/MWh) over the minute, the last 60 or 1440
                         minutes, or the plant-local month to date; for a factor-method
                         or product (t/t) scope over the last closed hour, the last 24
                         closed hours or the month's closed hours (each closed hour)
    allowance_position   % of the annual allowance used, % of the pro-rated allowance,
                         forecast year-end % of allowance, forecast shortfall t or its cost
    capture_rate         valid / counted closed hours over a window, % (each closed hour)
    reconciliation_diff  |CEMS − factor method| / factor method, % (each closed day)
    carbon_position      the ledger's compliance position: forecast deficit t, deficit t,
                         or days to the surrender deadline while not covered (each position)

Level logic: level k (1 warning, 2 alarm) is entered once the value has been at or
beyond it for `on_delay` minutes (0: at once), and left once it has been back by more
than the deadband for `off_delay` minutes. A minute without a value (NaN) changes
nothing: the rule keeps its level and its delay timers.

`alarms.bank.RuleBank` evaluates all rules of a plant together on numpy arrays (what the
engine runs); tests/alarms/reference.py holds the scalar reference it is tested against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from alarms.config import (
    AlarmPlantConfig,
    AllowanceRuleConfig,
    CaptureRateRuleConfig,
    CarbonPerformanceRuleConfig,
    CarbonPositionRuleConfig,
    CommLossRuleConfig,
    IntensityRuleConfig,
    RateOfChangeRuleConfig,
    ReconciliationRuleConfig,
    RuleConfig,
    StaleRuleConfig,
    Target,
    ThresholdRuleConfig,
    closed_hour_intensity,
    intensity_output_unit,
    target_field_problem,
    target_kind,
)
from alarms.state import RuleInfo
from model.errors import InvalidValueError
from model.states import Condition

_LEVEL_EN = {1: "warning level", 2: "alarm level"}
_LEVEL_ZH = {1: "预警限值", 2: "报警限值"}
_STATE_ZH = {0: "正常", 1: "预警", 2: "报警"}

_ALLOWANCE_TEXT = {
    "used_pct": ("allowance used %", "配额使用率 %"),
    "prorated_pct": ("emissions / pro-rated allowance %", "排放量/按时间比例配额 %"),
    "forecast_pct": ("forecast year-end emissions / allowance %", "预测年末排放/配额 %"),
    "forecast_shortfall_t": ("forecast year-end shortfall t", "预测年末配额缺口 t"),
    "shortfall_cost_cny": ("forecast shortfall cost CNY", "预测配额缺口成本 元"),
}
_PERFORMANCE_TEXT = {
    "target_deviation_pct": ("CO2 year to date above the prorated target %",
                             "年累计排放超出按天折算目标 %"),
    "quarter_deviation_pct": ("CO2 quarter to date above the quarter's target %",
                              "季度累计排放超出季度目标 %"),
    "benchmark_gap_pct": ("intensity above the benchmark %", "排放强度高于标杆值 %"),
}
_CARBON_TEXT = {
    "forecast_deficit_t": ("forecast year-end compliance deficit t", "预测年末履约缺口 t"),
    "deficit_t": ("compliance deficit t", "履约缺口 t"),
    "days_to_deadline": ("days to the surrender deadline", "距配额清缴截止日天数"),
}
COVERED_NOTE = "covered"
"""The note of a deadline rule whose year is covered: its message says so, not a level."""
WINDOW_MINUTES = {"hour": 60, "day": 1440}
"""The width of the rolling intensity windows; the others are the minute or the month."""
_WINDOW_TEXT = {"minute": ("this minute", "本分钟"), "hour": ("last 60 min", "近 60 分钟"),
                "day": ("last 24 h", "近 24 小时"), "month_to_date": ("month to date", "本月累计")}
_HOURS_WINDOW_TEXT = {"minute": ("this minute", "本分钟"),  # refused by rule_problems
                      "hour": ("last closed hour", "上一完整小时"),
                      "day": ("last 24 closed hours", "近 24 个完整小时"),
                      "month_to_date": ("month to date, closed hours", "本月累计（完整小时）")}
"""The windows of an intensity on closed hours (alarms.config.closed_hour_intensity)."""
_ROC_TEXT = {"rise": ("rise", "上升"), "fall": ("fall", "下降"), "both": ("|change|", "变化绝对值")}


def target_id(target: Target) -> str:
    """The source, unit or tag a target names; "" for the site."""
    return target.source or target.unit or target.tag or ""


def target_label(target: Target) -> str:
    """The target as text, e.g. "source S1 co2_rate_t_h" or "site co2_today_t"."""
    kind = target_kind(target)
    if kind == "site":
        return f"site {target.field}"
    return f"{kind} {target_id(target)} {target.field}"


def check_target(target: Target, rule_id: str | None = None) -> None:
    """Raise InvalidValueError naming the rule and field if the target's field does not exist."""
    problem = target_field_problem(target, rule_id)
    if problem is not None:
        raise InvalidValueError(problem)


def fmt_number(x: float) -> str:
    """A number for a message: 2 decimals (4 below 1), trailing zeros dropped."""
    text = f"{x:.{2 if abs(x) >= 1 else 4}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


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
    # A comm_loss rule on a system device (the InfluxDB outbox, the backups, an instrument's
    # calibration): its messages name the rule and say what happened, not "communication".
    system: bool = False

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
        if self.kind == "comm_loss" and self.system:
            # The suffix the engine adds names the rule: "[rule id: name]".
            if new > old:
                return None, note or self.name, note or self.name
            return None, "cleared", "已恢复"
        if self.kind == "comm_loss":
            what = f": {note}" if note else ""
            what_zh = f"：{note}" if note else ""
            if new > old:
                return None, f"{self.subject} communication lost{what}", \
                    f"{self.subject_zh} 通信中断{what_zh}"
            return None, f"{self.subject} communication restored", f"{self.subject_zh} 通信恢复"
        v = fmt_number(value)
        if self.kind == "carbon_position" and note == COVERED_NOTE and new < old:
            # Not back beyond a level: the year's deficit is covered, whatever days are left.
            back_en = "back to normal" if new == 0 else f"back to {Condition.of_level(new)}"
            back_zh = "恢复正常" if new == 0 else f"降为{_STATE_ZH[new]}"
            return (self.limit(old), f"{self.subject} = {v}: the year is covered, {back_en}",
                    f"{self.subject_zh} = {v}：本年度已足额覆盖，{back_zh}")
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
        back_en = "back to normal" if new == 0 else f"back to {Condition.of_level(new)}"
        back_zh = "恢复正常" if new == 0 else f"降为{_STATE_ZH[new]}"
        return (level,
                f"{self.subject} = {v} {sign} {_LEVEL_EN[crossed]} {fmt_number(level)}"
                f"{db_en}, {back_en}",
                f"{self.subject_zh} = {v} {sign} {_LEVEL_ZH[crossed]} {fmt_number(level)}"
                f"{db_zh}，{back_zh}")


def tag_units(plant: AlarmPlantConfig) -> dict[str, set[str]]:
    """The units whose calculation reads each tag."""
    out: dict[str, set[str]] = {}
    for unit in plant.units:
        tags = [unit.output.rate.tag]
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

    def __init__(self, plant: AlarmPlantConfig) -> None:
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
        if isinstance(config, CarbonPerformanceRuleConfig):
            return config.unit or "site"
        return "site"


def rule_area(config: RuleConfig, plant: AlarmPlantConfig) -> str:
    """The unit a rule belongs to (what suppresses it when stopped), "site", or ""."""
    return Areas(plant)(config)


def rule_spec(config: RuleConfig, area: str = "", system: bool = False, *,
              output_unit: str = "MWh", closed_hours: bool = False) -> RuleSpec:
    """The evaluation and message view of one configured rule (`system`: a comm_loss rule
    on a system device; an intensity rule's `output_unit`, MWh or t, and whether it is
    evaluated on `closed_hours`); ValueError on a bad field."""

    def spec(target: str, subject: str, subject_zh: str, high: bool, warning: float | None,
             alarm: float | None) -> RuleSpec:
        delays = ((config.on_delay_min, config.off_delay_min)
                  if not isinstance(config, StaleRuleConfig) else (0, 0))
        return RuleSpec(
            id=config.id, kind=config.kind, name=config.name, target=target, subject=subject,
            subject_zh=subject_zh, area=area, high=high, warning=warning, alarm=alarm,
            deadband=getattr(config, "deadband", 0.0), on_delay=delays[0], off_delay=delays[1],
            notify=tuple(config.notify),
            suppress=config.suppress_when_stopped and area not in ("", "site"), config=config,
            system=system)

    if isinstance(config, CommLossRuleConfig):
        return spec(f"device {config.device}", f"device {config.device}",
                    f"设备 {config.device}", True, None, 1.0)
    if isinstance(config, ThresholdRuleConfig | RateOfChangeRuleConfig | StaleRuleConfig):
        check_target(config.target, config.id)
        ident = target_id(config.target)
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
        en, zh = (_HOURS_WINDOW_TEXT if closed_hours else _WINDOW_TEXT)[config.window]
        per = f"t/{output_unit}"
        return spec(f"{label} intensity {config.window}",
                    f"{who or 'site'} intensity {per} ({en})",
                    f"{who or '全厂'} 排放强度 {per}（{zh}）", True, *config.levels())
    if isinstance(config, AllowanceRuleConfig):
        en, zh = _ALLOWANCE_TEXT[config.measure]
        return spec(f"site allowance {config.measure}", f"site {en}", f"全厂 {zh}", True,
                    config.warning, config.alarm)
    if isinstance(config, CarbonPositionRuleConfig):
        en, zh = _CARBON_TEXT[config.measure]
        return spec(f"site carbon {config.measure}", f"site {en}", f"全厂 {zh}", config.high,
                    config.warning, config.alarm)
    if isinstance(config, CarbonPerformanceRuleConfig):
        en, zh = _PERFORMANCE_TEXT[config.measure]
        who = f"unit {config.unit}" if config.unit else "site"
        kind = f" ({config.benchmark_kind})" if config.benchmark_kind else ""
        return spec(f"{who} performance {config.measure}", f"{config.unit or 'site'} {en}{kind}",
                    f"{config.unit or '全厂'} {zh}{kind}", True, config.warning, config.alarm)
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
               "source", "window_h", "unit", "benchmark_kind")


def definition(config: RuleConfig) -> tuple[object, ...]:
    """What a rule measures (kind, target, window …), without its levels, delays, name and
    channels: a rule changed only in those keeps its evaluation state."""
    fields = vars(config)  # not getattr: a missing attribute costs pydantic a slow miss
    return tuple(fields.get(name) for name in _DEFINITION)


def plant_specs(plant: AlarmPlantConfig) -> list[RuleSpec]:
    """The specs of every rule of a plant, in configuration order."""
    area = Areas(plant)
    system = set(plant.system_device_ids())
    out = []
    for r in plant.alarms.rules:
        if isinstance(r, IntensityRuleConfig):
            out.append(rule_spec(r, area(r), output_unit=intensity_output_unit(r.scope, plant),
                                 closed_hours=closed_hour_intensity(r.scope, plant)))
        else:
            out.append(rule_spec(r, area(r),
                                 isinstance(r, CommLossRuleConfig) and r.device in system))
    return out
