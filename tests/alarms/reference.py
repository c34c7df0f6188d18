"""The scalar reference of the rule bank: one rule evaluated on its own in plain Python.

The same arithmetic as `alarms.bank.RuleBank`, written the plain way: the tests compare
the bank against it and the bench measures the bank against it.
"""

from __future__ import annotations

import math
import typing
from collections import deque
from datetime import datetime

from alarms.config import (
    AllowanceRuleConfig,
    CaptureRateRuleConfig,
    CarbonPositionRuleConfig,
    CommLossRuleConfig,
    IntensityRuleConfig,
    RateOfChangeRuleConfig,
    ReconciliationRuleConfig,
    RuleConfig,
    StaleRuleConfig,
    ThresholdRuleConfig,
    target_kind,
)
from alarms.context import (
    HOUR_INVALID,
    HOUR_UNKNOWN,
    HOUR_VALID,
    NONE,
    MinuteContext,
    Record,
    good_record,
    hour_codes,
    intensity_pair_ok,
    minute_index,
)
from alarms.spec import COVERED_NOTE, WINDOW_MINUTES, Areas, rule_spec, target_id
from alarms.state import AlarmState
from model.flags import DataFlag
from model.records import AlarmEvent, DeviceEvent, PeriodRecords
from model.states import Condition
from server.config import PlantConfig

if typing.TYPE_CHECKING:
    from compute.assets import CompliancePosition


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
    def state(self) -> Condition:
        """The condition: "normal", "warning" or "alarm"."""
        return Condition.of_level(self.level)

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
        self._ident = target_id(config.target)
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
        width = WINDOW_MINUTES.get(config.window)
        self._rolling = _Rolling(width) if width is not None else None
        self._month = NONE
        self._co2 = self._out = 0.0
        self._min_out = config.min_output_mwh

    def minute_values(self, ctx: MinuteContext) -> tuple[float, float]:
        """This minute's CO2 (t) and output (MWh) of the scope; (0, 0) if either is missing."""
        sc = self.config.scope
        if sc.site:
            return ctx.site_co2_output
        co2_flag = DataFlag.N
        if sc.source is not None:
            src = ctx.sources.get(sc.source)
            unit = ctx.units.get(src.unit) if src is not None else None
            co2 = src.co2_kg / 1000.0 if src is not None else math.nan
            co2_flag = src.flag if src is not None else DataFlag.N
        else:
            unit = ctx.units.get(sc.unit or "")
            co2 = unit.co2_kg / 1000.0 if unit is not None else math.nan
            co2_flag = unit.flag if unit is not None else DataFlag.N
        out = unit.output_mwh if unit is not None else math.nan
        out_flag = unit.output_flag if unit is not None else DataFlag.N
        # A pair with a missing or invalid part counts as neither CO2 nor output.
        if intensity_pair_ok(co2, out, co2_flag, out_flag):
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


class CarbonPositionRule(ScalarRule):
    """The ledger's compliance position: forecast deficit, deficit or days to the deadline."""

    config: CarbonPositionRuleConfig
    covered = False

    def note(self) -> str:
        """"covered" for a deadline rule whose year is covered."""
        days = self.config.measure == "days_to_deadline"
        return COVERED_NOTE if days and self.covered else ""

    def on_carbon_position(self, p: CompliancePosition, t: datetime,
                           deadline: CompliancePosition | None = None) -> AlarmEvent | None:
        """Take a position (the deadline rules: `deadline`'s year if given); the event."""
        days = self.config.measure == "days_to_deadline"
        src = deadline if days and deadline is not None else p
        value = float(getattr(src, self.config.measure))
        self.covered = not (src.deficit_t > 0.0 or src.surrendered_t < src.emissions_t)
        old = self.level
        # A covered year: far from any (low) deadline level, whatever days are left.
        new = self.next_level(math.inf if days and self.covered else value,
                              minute_index(t, self.minute_seconds))
        if new == old or self.alarm.out_of_service:
            return None
        limit, en, zh = self.spec.message(new, old, value, self.note())
        return self.alarm.condition(new, value, limit, t, en, zh)


_SCALAR: dict[str, type[ScalarRule]] = {
    "threshold": ThresholdRule, "rate_of_change": RateOfChangeRule, "stale": StaleRule,
    "comm_loss": CommLossRule, "intensity": IntensityRule,
    "allowance_position": AllowanceRule, "capture_rate": CaptureRateRule,
    "reconciliation_diff": ReconciliationRule, "carbon_position": CarbonPositionRule}


def scalar_rules(plant: PlantConfig) -> list[ScalarRule]:
    """Every rule of a plant as a scalar rule (the reference and the bench baseline)."""
    ms = plant.clock.minute_seconds
    area = Areas(plant)
    return [_SCALAR[r.kind](r, area=area(r), minute_seconds=ms)
            for r in plant.alarms.rules]
