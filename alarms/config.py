"""Configuration schema of the alarms: rules, notification channels, routes, delivery.

The checks of the rules against the plant (what a rule names must exist, a target's
field must be one its record has) live here, so that `check-config` refuses exactly
what the rule engine would; `with_alarm_rules` applies the same checks to rules an
engineer changes at run time.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Sequence
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BeforeValidator, Field, TypeAdapter, ValidationError, field_validator

from compute.config import MAX_LOOKBACK_H, CalculationConfig, UnitConfig
from compute.performance import PerformanceConfig
from drivers.config import DevicesConfig
from model.errors import ConfigError
from model.records import SiteMinute, SourceMinute, TagMinute, UnitMinute
from model.schema import ConfigModel, Identifier, Problems, validation_problems


class Target(ConfigModel):
    """What an alarm rule watches: a field of a source, a unit, a raw tag or the site."""

    source: str | None = None
    unit: str | None = None
    tag: str | None = None
    site: bool = False
    field: str

    def model_post_init(self, _ctx: Any) -> None:
        """Require exactly one kind of target."""
        given = [self.source is not None, self.unit is not None, self.tag is not None,
                 self.site]
        if sum(given) != 1:
            raise ValueError("give exactly one of 'source', 'unit', 'tag' or 'site: true'")


class Scope(ConfigModel):
    """Where an emission intensity is taken: one source, one unit or the whole site.

    A source's intensity is its CO2 over its unit's output.
    """

    source: str | None = None
    unit: str | None = None
    site: bool = False

    def model_post_init(self, _ctx: Any) -> None:
        """Require exactly one kind of scope."""
        if sum([self.source is not None, self.unit is not None, self.site]) != 1:
            raise ValueError("give exactly one of 'source', 'unit' or 'site: true'")


def _check_levels(warning: float | None, alarm: float | None, high: bool) -> None:
    """At least one level; the alarm level beyond the warning level."""
    if warning is None and alarm is None:
        raise ValueError("give 'warning', 'alarm' or both")
    if warning is not None and alarm is not None and (
            alarm < warning if high else alarm > warning):
        raise ValueError(f"'alarm' level must be beyond 'warning' level for direction "
                         f"{'high' if high else 'low'!r}")


class _RuleBase(ConfigModel):
    """What every alarm rule has. `suppress_when_stopped`: no annunciation while the
    rule's unit is stopped (its records carry flag F)."""

    id: Identifier
    name: str = ""
    notify: list[str] = Field(default_factory=list)
    suppress_when_stopped: bool = True


class _LevelRule(_RuleBase):
    """Warning (预警) and alarm (报警) levels with deadband and delays in plant minutes.

    A level is entered once the value has been at or beyond it for `on_delay_min`
    minutes, and left once it has been back by more than `deadband` for `off_delay_min`.
    """

    warning: float | None = None
    alarm: float | None = None
    deadband: float = Field(0.0, ge=0)
    on_delay_min: int = Field(0, ge=0, le=1440)
    off_delay_min: int = Field(0, ge=0, le=1440)


class ThresholdRuleConfig(_LevelRule):
    """Warning and alarm levels on one value, high or low."""

    kind: Literal["threshold"] = "threshold"
    target: Target
    direction: Literal["high", "low"] = "high"

    def model_post_init(self, _ctx: Any) -> None:
        """Require at least one level, in the right order."""
        _check_levels(self.warning, self.alarm, self.direction == "high")


class RateOfChangeRuleConfig(_LevelRule):
    """Levels on a value's rate of change per minute, taken over `over_min` minutes.

    `direction`: "rise" watches increases, "fall" decreases (as a positive rate),
    "both" the magnitude. Levels are positive rates per minute.
    """

    kind: Literal["rate_of_change"]
    target: Target
    over_min: int = Field(1, ge=1, le=240)
    direction: Literal["rise", "fall", "both"] = "both"

    def model_post_init(self, _ctx: Any) -> None:
        """Require at least one positive level, in the right order."""
        _check_levels(self.warning, self.alarm, True)
        if any(x is not None and x <= 0 for x in (self.warning, self.alarm)):
            raise ValueError("rate-of-change levels are positive rates per minute")


class StaleRuleConfig(_RuleBase):
    """A value without a good reading (finite, flag N) for `warning_min` / `alarm_min`."""

    kind: Literal["stale"]
    target: Target
    warning_min: int | None = Field(None, ge=1, le=10080)
    alarm_min: int | None = Field(None, ge=1, le=10080)

    def model_post_init(self, _ctx: Any) -> None:
        """Require at least one level, the alarm no sooner than the warning."""
        if self.warning_min is None and self.alarm_min is None:
            raise ValueError("give 'warning_min', 'alarm_min' or both")
        if (self.warning_min is not None and self.alarm_min is not None
                and self.alarm_min < self.warning_min):
            raise ValueError("'alarm_min' must not be shorter than 'warning_min'")


class CommLossRuleConfig(_RuleBase):
    """An alarm while a field device's communication has failed (its driver's DeviceEvent)."""

    kind: Literal["comm_loss"]
    device: str
    on_delay_min: int = Field(0, ge=0, le=1440)
    off_delay_min: int = Field(0, ge=0, le=1440)


class IntensityRuleConfig(_LevelRule):
    """Emission intensity (t CO2/MWh, or t CO2/t for a product output) over a window against
    levels or a benchmark.

    `window`: "minute" (this minute), "hour" and "day" (the last 60 / 1440 minutes),
    "month_to_date" (the plant-local month so far). Levels are either absolute
    (`warning`, `alarm` in t/MWh or t/t) or percentages of the benchmark
    (`benchmark_t_mwh`, or `benchmark_t_t` for a product output: a sector benchmark or
    the plant's target). Below `min_output_mwh` (`min_output_t`) of output in the window
    the intensity is not evaluated.

    A scope whose CO2 or output has no minute value — a unit accounted by the factor
    method (its CO2 comes with the closed hour) or with a product output in t (no minute
    output) — is evaluated on closed hours (`closed_hour_intensity`): "hour" is the last
    closed hour, "day" the last 24 closed hours, "month_to_date" the month's closed hours;
    "minute" has no value there and is refused (`rule_problems`).
    """

    kind: Literal["intensity"]
    scope: Scope
    window: Literal["minute", "hour", "day", "month_to_date"]
    benchmark_t_mwh: float | None = Field(None, gt=0)
    benchmark_t_t: float | None = Field(None, gt=0)
    warning_pct: float | None = Field(None, gt=0)
    alarm_pct: float | None = Field(None, gt=0)
    min_output_mwh: float = Field(0.0, ge=0)
    min_output_t: float | None = Field(None, ge=0)

    def model_post_init(self, _ctx: Any) -> None:
        """Require absolute levels or a benchmark with percentages, not both, and keys of
        one output unit (MWh or t)."""
        if self.output_unit_of_keys() == "both":
            raise ValueError("give the benchmark and minimum output in one unit: "
                             "'benchmark_t_mwh' / 'min_output_mwh' (power) or "
                             "'benchmark_t_t' / 'min_output_t' (product in t), not both")
        pct = self.warning_pct is not None or self.alarm_pct is not None
        if self.benchmark is None:
            if pct:
                raise ValueError("'warning_pct' / 'alarm_pct' need 'benchmark_t_mwh' "
                                 "(or 'benchmark_t_t')")
            _check_levels(self.warning, self.alarm, True)
            return
        key = "benchmark_t_mwh" if self.benchmark_t_mwh is not None else "benchmark_t_t"
        if self.warning is not None or self.alarm is not None:
            raise ValueError(f"give levels either as 'warning' / 'alarm' (t/MWh) or as "
                             f"'warning_pct' / 'alarm_pct' of '{key}', not both")
        if not pct:
            raise ValueError(f"give 'warning_pct', 'alarm_pct' or both (of '{key}')")
        _check_levels(self.warning_pct, self.alarm_pct, True)

    @property
    def benchmark(self) -> float | None:
        """The benchmark intensity in the scope's terms (t/MWh or t/t), or None."""
        return self.benchmark_t_mwh if self.benchmark_t_mwh is not None else self.benchmark_t_t

    @property
    def min_output(self) -> float:
        """The minimum output of the window in the scope's output unit (MWh or t)."""
        return self.min_output_t if self.min_output_t is not None else self.min_output_mwh

    def output_unit_of_keys(self) -> str | None:
        """The output unit the rule's benchmark and minimum-output keys are in: "MWh", "t",
        "both" (an error), or None when it gives none of them."""
        # min_output_mwh 0 (its default) says nothing: a dumped rule holds it explicitly.
        mwh = self.benchmark_t_mwh is not None or self.min_output_mwh > 0
        t = self.benchmark_t_t is not None or self.min_output_t is not None
        return "both" if mwh and t else "MWh" if mwh else "t" if t else None

    def levels(self) -> tuple[float | None, float | None]:
        """(warning, alarm) in t/MWh (t/t for a product output)."""
        b = self.benchmark
        if b is None:
            return self.warning, self.alarm
        return (None if self.warning_pct is None else b * self.warning_pct / 100.0,
                None if self.alarm_pct is None else b * self.alarm_pct / 100.0)


AllowanceMeasure = Literal["used_pct", "prorated_pct", "forecast_pct", "forecast_shortfall_t",
                           "shortfall_cost_cny"]


class AllowanceRuleConfig(_LevelRule):
    """The site's allowance position against levels (`allowance.annual_t` is the allowance).

    `measure`: used_pct (year-to-date / annual · 100, e.g. warning 80, alarm 90),
    prorated_pct (year-to-date / pro-rated allowance · 100), forecast_pct (forecast
    year-end / annual · 100), forecast_shortfall_t, shortfall_cost_cny (at
    `allowance.carbon_price_cny_t`).
    """

    kind: Literal["allowance_position"]
    measure: AllowanceMeasure
    suppress_when_stopped: bool = False

    def model_post_init(self, _ctx: Any) -> None:
        """Require at least one level, in the right order."""
        _check_levels(self.warning, self.alarm, True)


CarbonPositionMeasure = Literal["forecast_deficit_t", "deficit_t", "days_to_deadline"]


class CarbonPositionRuleConfig(_LevelRule):
    """The compliance position of the carbon asset ledger (server/assets.py) against levels,
    evaluated each time a position is computed (after every closed hour and day).

    `measure`: forecast_deficit_t (forecast year-end emissions not covered by allowances
    held and eligible offsets, t; high levels), deficit_t (the deficit now, t; high
    levels), days_to_deadline (days left to the surrender deadline; low levels, e.g.
    warning 30, alarm 7). A deadline rule warns only while the year is not covered (a
    deficit, or less surrendered than emitted); once covered it returns to normal.
    """

    kind: Literal["carbon_position"]
    measure: CarbonPositionMeasure
    suppress_when_stopped: bool = False

    @property
    def high(self) -> bool:
        """Whether the levels are high levels (every measure but days_to_deadline)."""
        return self.measure != "days_to_deadline"

    def model_post_init(self, _ctx: Any) -> None:
        """Require at least one level, in the right order for the measure's direction."""
        _check_levels(self.warning, self.alarm, self.high)


PerformanceMeasure = Literal["target_deviation_pct", "quarter_deviation_pct",
                             "benchmark_gap_pct"]


class CarbonPerformanceRuleConfig(_LevelRule):
    """The carbon performance (compute/performance.py) of a unit or the site against
    levels, evaluated each time a day closes.

    `measure`: target_deviation_pct (year to date above the target prorated by days, %),
    quarter_deviation_pct (quarter to date above the quarter's target prorated by its
    days, %), benchmark_gap_pct (intensity to date above the benchmark value, %; of the
    first benchmark of the unit, of `benchmark_kind` if given). High levels; `unit` None:
    the site.
    """

    kind: Literal["carbon_performance"]
    measure: PerformanceMeasure
    unit: str | None = None
    benchmark_kind: Literal["benchmark", "best_in_class", "advanced"] | None = None
    suppress_when_stopped: bool = False

    def model_post_init(self, _ctx: Any) -> None:
        """Require at least one level, in order; a benchmark kind only for its measure."""
        _check_levels(self.warning, self.alarm, True)
        if self.benchmark_kind is not None and self.measure != "benchmark_gap_pct":
            raise ValueError("'benchmark_kind' is only for measure benchmark_gap_pct")


class CaptureRateRuleConfig(_LevelRule):
    """A source's valid-hour capture rate (%) over the last `window_h` closed hours.

    Hours the unit was stopped (flag F) do not count. Levels are low levels (alarm ≤
    warning); the rate is evaluated once `min_hours` hours were counted.
    """

    kind: Literal["capture_rate"]
    source: str
    window_h: int = Field(720, ge=1, le=MAX_LOOKBACK_H)
    min_hours: int = Field(24, ge=1, le=MAX_LOOKBACK_H)
    suppress_when_stopped: bool = False

    def model_post_init(self, _ctx: Any) -> None:
        """Require low levels in order and a window that can hold `min_hours`."""
        _check_levels(self.warning, self.alarm, False)
        if self.min_hours > self.window_h:
            raise ValueError(f"'min_hours' ({self.min_hours}) is more than 'window_h' "
                             f"({self.window_h})")


class ReconciliationRuleConfig(_LevelRule):
    """A unit's daily CEMS vs emission-factor difference |diff| (%) against levels."""

    kind: Literal["reconciliation_diff"]
    unit: str
    suppress_when_stopped: bool = False

    def model_post_init(self, _ctx: Any) -> None:
        """Require at least one level, in the right order."""
        _check_levels(self.warning, self.alarm, True)


RULE_KINDS = ("threshold", "rate_of_change", "stale", "comm_loss", "intensity",
              "allowance_position", "capture_rate", "reconciliation_diff", "carbon_position",
              "carbon_performance")


def _default_rule_kind(v: Any) -> Any:
    """A rule without `kind` is a threshold rule (the first and most common kind)."""
    if isinstance(v, dict) and "kind" not in v:
        return {**v, "kind": "threshold"}
    return v


RuleConfig = Annotated[
    ThresholdRuleConfig | RateOfChangeRuleConfig | StaleRuleConfig | CommLossRuleConfig
    | IntensityRuleConfig | AllowanceRuleConfig | CaptureRateRuleConfig
    | ReconciliationRuleConfig | CarbonPositionRuleConfig | CarbonPerformanceRuleConfig,
    Field(discriminator="kind"), BeforeValidator(_default_rule_kind)]


class RateLimitConfig(ConfigModel):
    """Token bucket of one channel: up to `burst` messages at once, refilled at `per_minute`."""

    burst: int = Field(10, ge=1)
    per_minute: float = Field(6.0, gt=0)


class _ChannelBase(ConfigModel):
    """What every notification channel has.

    A secret is never written in the file: `<name>_env` names the environment variable
    and `<name>_file` the file (readable by the service only) that holds it.
    """

    id: Identifier
    timeout_s: float = Field(10.0, gt=0)
    rate_limit: RateLimitConfig = RateLimitConfig()

    def _secret_keys(self, name: str, required: bool) -> None:
        """Require at most one source of the secret `name`, and one if it is `required`."""
        env, file = getattr(self, f"{name}_env"), getattr(self, f"{name}_file")
        if env is not None and file is not None:
            raise ValueError(f"give either '{name}_env' or '{name}_file', not both")
        if required and env is None and file is None:
            raise ValueError(f"give '{name}_env' (an environment variable) or '{name}_file' "
                             f"(a file) holding the {name}")


WebUrl = Annotated[str, Field(pattern=r"^https?://[^\s?#]+$")]  # no query: keys go elsewhere


class EmailChannelConfig(_ChannelBase):
    """Notification by email over SMTP (plain, STARTTLS or SSL; optional login)."""

    kind: Literal["email"]
    host: str
    port: int = Field(25, ge=1, le=65535)
    security: Literal["none", "starttls", "ssl"] = "none"
    username: str | None = None
    password_env: str | None = None  # name of the environment variable with the password
    password_file: str | None = None  # or a file holding it
    ca_file: str | None = None  # PEM bundle to verify the server with (default: system CAs)
    sender: str
    to: list[str] = Field(min_length=1)

    def model_post_init(self, _ctx: Any) -> None:
        """At most one source of the password."""
        self._secret_keys("password", required=False)


class WebhookChannelConfig(_ChannelBase):
    """The event as JSON POSTed to a URL, signed with HMAC-SHA256 when a secret is given."""

    kind: Literal["webhook"]
    url: WebUrl
    secret_env: str | None = None
    secret_file: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)  # extra headers, not secret

    def model_post_init(self, _ctx: Any) -> None:
        """At most one source of the signing secret."""
        self._secret_keys("secret", required=False)


class WecomChannelConfig(_ChannelBase):
    """A WeCom (企业微信) group robot; the robot's `key` is a secret."""

    kind: Literal["wecom"]
    url: WebUrl = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send"
    key_env: str | None = None
    key_file: str | None = None
    msgtype: Literal["markdown", "text"] = "markdown"
    mentioned_mobiles: list[str] = Field(default_factory=list)  # msgtype text only

    def model_post_init(self, _ctx: Any) -> None:
        """Require the robot key."""
        self._secret_keys("key", required=True)


class DingtalkChannelConfig(_ChannelBase):
    """A DingTalk (钉钉) group robot: `token` is its access_token, `secret` its 加签 secret."""

    kind: Literal["dingtalk"]
    url: WebUrl = "https://oapi.dingtalk.com/robot/send"
    token_env: str | None = None
    token_file: str | None = None
    secret_env: str | None = None
    secret_file: str | None = None
    msgtype: Literal["markdown", "text"] = "markdown"
    at_mobiles: list[str] = Field(default_factory=list)
    at_all: bool = False

    def model_post_init(self, _ctx: Any) -> None:
        """Require the access token; the signing secret is optional."""
        self._secret_keys("token", required=True)
        self._secret_keys("secret", required=False)


class FeishuChannelConfig(_ChannelBase):
    """A Feishu (飞书) group robot: `token` ends the hook URL, `secret` is its 签名校验 secret."""

    kind: Literal["feishu"]
    url: WebUrl = "https://open.feishu.cn/open-apis/bot/v2/hook"
    token_env: str | None = None
    token_file: str | None = None
    secret_env: str | None = None
    secret_file: str | None = None

    def model_post_init(self, _ctx: Any) -> None:
        """Require the hook token; the signing secret is optional."""
        self._secret_keys("token", required=True)
        self._secret_keys("secret", required=False)


def _placeholders(value: Any) -> set[str]:
    """The {names} used in the strings of a (nested) template."""
    import string

    if isinstance(value, str):
        try:
            return {f for _, f, _, _ in string.Formatter().parse(value) if f is not None}
        except ValueError as exc:
            raise ValueError(f"bad template text {value!r}: {exc}") from None
    if isinstance(value, dict):
        return set().union(*(_placeholders(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(_placeholders(v) for v in value))
    return set()


class SmsChannelConfig(_ChannelBase):
    """SMS through an HTTP gateway: one request per number, built from `template`.

    Strings of `template` and `headers` may hold {phone}, {text} and {secret}. POST sends
    the template as JSON or as a form; GET as query parameters (form and GET: flat only).
    """

    kind: Literal["sms"]
    url: WebUrl
    method: Literal["POST", "GET"] = "POST"
    encoding: Literal["json", "form"] = "json"
    template: dict[str, Any] = Field(min_length=1)
    headers: dict[str, str] = Field(default_factory=dict)
    numbers: list[str] = Field(min_length=1)
    secret_env: str | None = None
    secret_file: str | None = None
    success_text: str = ""  # when set, the gateway's reply must contain it

    def model_post_init(self, _ctx: Any) -> None:
        """Check the template's placeholders and shape."""
        self._secret_keys("secret", required=False)
        used = _placeholders(self.template) | _placeholders(self.headers)
        unknown = used - {"phone", "text", "secret"}
        if unknown:
            raise ValueError(f"unknown placeholder(s) {sorted(unknown)}; "
                             "known: {phone}, {text}, {secret}")
        if "secret" in used and self.secret_env is None and self.secret_file is None:
            raise ValueError("{secret} is used: give 'secret_env' or 'secret_file'")
        if "phone" not in _placeholders(self.template):
            raise ValueError("the template must contain {phone}")
        flat = all(isinstance(v, str | int | float | bool) for v in self.template.values())
        if (self.method == "GET" or self.encoding == "form") and not flat:
            raise ValueError("a form or GET template holds plain values only, not nested ones")


class MqttChannelConfig(_ChannelBase):
    """The event as JSON published to an MQTT broker (QoS 1 by default)."""

    kind: Literal["mqtt"]
    host: str
    port: int = Field(1883, ge=1, le=65535)
    topic: str = "carbonscada/{site}/alarms/{rule}"  # also {state}
    qos: Literal[0, 1, 2] = 1
    retain: bool = False
    username: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    client_id: str = ""  # default: carbonscada-<site>-<channel id>

    def model_post_init(self, _ctx: Any) -> None:
        """Check the topic template."""
        self._secret_keys("password", required=False)
        unknown = _placeholders(self.topic) - {"site", "rule", "state"}
        if unknown:
            raise ValueError(f"topic: unknown placeholder(s) {sorted(unknown)}; "
                             "known: {site}, {rule}, {state}")
        if "+" in self.topic or "#" in self.topic or not self.topic:
            raise ValueError("topic: a publish topic has no wildcards (+ #) and is not empty")


ChannelConfig = Annotated[
    EmailChannelConfig | WebhookChannelConfig | WecomChannelConfig | DingtalkChannelConfig
    | FeishuChannelConfig | SmsChannelConfig | MqttChannelConfig,
    Field(discriminator="kind")]

AlarmSeverity = Literal["warning", "alarm", "normal"]
_SEVERITIES: tuple[AlarmSeverity, ...] = ("warning", "alarm", "normal")


class RouteConfig(ConfigModel):
    """Which channels get an alarm event: by severity, area and plant-local time of day.

    `start`/`end` ("HH:MM", end exclusive) limit the route to part of the day; a window
    may pass midnight ("20:00"–"08:00"). While a rule stays in warning or alarm and is not
    acknowledged, `escalate_to` is notified after `escalate_after_min`, and the event is
    sent again every `repeat_min`.
    """

    name: str = ""
    severities: list[AlarmSeverity] = Field(default_factory=lambda: list(_SEVERITIES),
                                            min_length=1)
    areas: list[str] = Field(default_factory=list)  # empty: every area
    start: str | None = Field(None, pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
    end: str | None = Field(None, pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
    channels: list[str] = Field(min_length=1)
    escalate_after_min: float | None = Field(None, gt=0)
    escalate_to: list[str] = Field(default_factory=list)
    repeat_min: float | None = Field(None, gt=0)

    @field_validator("start", "end", mode="before")
    @classmethod
    def _quoted_time(cls, v: Any) -> Any:
        if v is not None and not isinstance(v, str):
            # YAML 1.1 reads an unquoted 20:00 as the number 1200.
            raise ValueError("write the time of day quoted, e.g. '20:00'")
        return v

    def model_post_init(self, _ctx: Any) -> None:
        """Require a complete time window and a complete escalation."""
        if (self.start is None) != (self.end is None):
            raise ValueError("give both 'start' and 'end', or neither")
        if self.start is not None and self.start == self.end:
            raise ValueError("'start' equals 'end': leave both out for the whole day")
        if bool(self.escalate_to) != (self.escalate_after_min is not None):
            raise ValueError("give both 'escalate_to' and 'escalate_after_min', or neither")


class DeliveryConfig(ConfigModel):
    """How notifications are delivered: retries with capped backoff, dedupe, bounds."""

    retries: int = Field(3, ge=0, le=10)  # tries after the first
    backoff_initial_s: float = Field(2.0, gt=0)
    backoff_max_s: float = Field(60.0, gt=0)
    dedupe_window_s: float = Field(300.0, ge=0)  # same rule and state again within: sent once
    queue_size: int = Field(1000, ge=1)  # per channel; beyond it the oldest is dropped (logged)
    log_size: int = Field(5000, ge=1)  # delivery log records kept in memory


class AlarmsConfig(ConfigModel):
    """Alarm rules, notification channels, routes and delivery settings."""

    rules: list[RuleConfig] = Field(default_factory=list)
    channels: list[ChannelConfig] = Field(default_factory=list)
    routes: list[RouteConfig] = Field(default_factory=list)
    delivery: DeliveryConfig = DeliveryConfig()

    def model_post_init(self, _ctx: Any) -> None:
        """Channel ids are unique and routes name existing channels."""
        ids: set[str] = set()
        for i, ch in enumerate(self.channels):
            if ch.id in ids:
                raise ValueError(f"channels[{i}].id: duplicate channel id {ch.id!r}")
            ids.add(ch.id)
        for i, route in enumerate(self.routes):
            for key in ("channels", "escalate_to"):
                for k, name in enumerate(getattr(route, key)):
                    if name not in ids:
                        raise ValueError(f"routes[{i}].{key}[{k}]: unknown channel {name!r}")


class AlarmPlantConfig(DevicesConfig, CalculationConfig):
    """The plant as the alarm stage sees it: devices, the calculation and the alarms."""

    alarms: AlarmsConfig = AlarmsConfig()

    def system_device_ids(self) -> tuple[str, ...]:
        """Ids that comm_loss rules may name besides the field devices: the server's own
        parts reporting faults as DeviceEvents (the InfluxDB outbox: server/config.py)."""
        return ()


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


def target_field_problem(target: Target, rule_id: str | None = None) -> str | None:
    """Why the target's field does not exist on its record (naming the rule), or None."""
    kind = target_kind(target)
    if target.field in FIELDS[kind]:
        return None
    who = "alarm target" if rule_id is None else f"alarm rule {rule_id!r}"
    return (f"{who}: unknown {kind} field {target.field!r}; "
            f"valid {kind} fields: {', '.join(FIELDS[kind])}")


def intensity_units(scope: Scope, cfg: CalculationConfig) -> list[UnitConfig]:
    """The units whose output an intensity scope divides by: a source's unit, the unit, or
    every unit of the site (none for a name the plant lacks)."""
    if scope.site:
        return list(cfg.units)
    if scope.source is not None:
        return [u for u, s in cfg.sources() if s.id == scope.source]
    return [u for u in cfg.units if u.id == scope.unit]


def closed_hour_intensity(scope: Scope, cfg: CalculationConfig) -> bool:
    """Whether an intensity scope is evaluated on closed hours rather than minutes.

    So it is when a minute lacks its ratio's numerator or denominator: a unit (or a site
    unit) accounted by the factor method has no minute CO2, a product output (t) has no
    minute output (compute/minute.py). A source's CO2 is its stack's, whatever the basis.
    """
    units = intensity_units(scope, cfg)
    if scope.source is not None:
        return any(u.output.unit == "t" for u in units)
    return any(u.output.unit == "t" or u.accounting_basis == "factor" for u in units)


def intensity_output_unit(scope: Scope, cfg: CalculationConfig) -> str:
    """The output unit of an intensity scope's denominator: "MWh" or "t" (of its first
    unit; `rule_problems` refuses a site whose units differ)."""
    units = intensity_units(scope, cfg)
    return units[0].output.unit if units else "MWh"


def _intensity_problems(rpath: str, rule: IntensityRuleConfig,
                        cfg: AlarmPlantConfig) -> Problems:
    """An intensity rule's checks against its units' output units and accounting basis."""
    units = intensity_units(rule.scope, cfg)
    if not units:
        return []
    who = f"alarm rule {rule.id!r}"
    outputs = sorted({u.output.unit for u in units})
    if len(outputs) > 1:
        listed = ", ".join(f"{u.id} ({u.output.unit})" for u in units)
        return [(f"{rpath}.scope.site", f"{who}: a site intensity over units with different "
                 f"output units is meaningless (t CO2 over MWh and t together): {listed}; "
                 "give one intensity rule per unit (scope: unit)")]
    problems: Problems = []
    out = outputs[0]
    keys = rule.output_unit_of_keys()
    if keys is not None and keys != out:
        names = ", ".join(u.id for u in units)
        want = "'benchmark_t_t' / 'min_output_t'" if out == "t" else \
            "'benchmark_t_mwh' / 'min_output_mwh'"
        problems.append((rpath, f"{who}: the output of {names} is in {out}, the rule's "
                         f"benchmark / minimum output in {keys}: use {want}"))
    if rule.window == "minute" and closed_hour_intensity(rule.scope, cfg):
        why = "; ".join(
            f"{u.id}: " + ("output in t, no minute output" if u.output.unit == "t" else
                           "factor-method CO2, known when its hour closes")
            for u in units if u.output.unit == "t"
            or (rule.scope.source is None and u.accounting_basis == "factor"))
        problems.append((f"{rpath}.window", f"{who}: window 'minute' has no value ({why}): "
                         "use 'hour' (the last closed hour), 'day' (the last 24 closed "
                         "hours) or 'month_to_date'"))
    return problems


def rule_problems(cfg: AlarmPlantConfig) -> Problems:
    """Checks of the alarm rules against the plant: what they name must exist."""
    problems: Problems = []
    channel_ids = {c.id for c in cfg.alarms.channels}
    known = {"source": {s.id for _, s in cfg.sources()}, "unit": {u.id for u in cfg.units},
             "tag": set(cfg.tag_ids()),
             "device": {d.id for d in cfg.devices} | set(cfg.system_device_ids())}

    def check(path: str, what: str, name: str | None) -> None:
        if name is not None and name not in known[what]:
            problems.append((path, f"unknown {what} {name!r}"))

    rule_ids: set[str] = set()
    for i, rule in enumerate(cfg.alarms.rules):
        rpath = f"alarms.rules[{i}]"
        if rule.id in rule_ids:
            problems.append((f"{rpath}.id", f"duplicate rule id {rule.id!r}"))
        rule_ids.add(rule.id)
        if isinstance(rule, ThresholdRuleConfig | RateOfChangeRuleConfig | StaleRuleConfig):
            for what in ("source", "unit", "tag"):
                check(f"{rpath}.target.{what}", what, getattr(rule.target, what))
            field_problem = target_field_problem(rule.target, rule.id)
            if field_problem is not None:
                problems.append((f"{rpath}.target.field", field_problem))
        elif isinstance(rule, IntensityRuleConfig):
            check(f"{rpath}.scope.source", "source", rule.scope.source)
            check(f"{rpath}.scope.unit", "unit", rule.scope.unit)
            problems += _intensity_problems(rpath, rule, cfg)
        elif isinstance(rule, CommLossRuleConfig):
            check(f"{rpath}.device", "device", rule.device)
        elif isinstance(rule, CaptureRateRuleConfig):
            check(f"{rpath}.source", "source", rule.source)
        elif isinstance(rule, ReconciliationRuleConfig):
            check(f"{rpath}.unit", "unit", rule.unit)
            if cfg.reconciliation is None:
                problems.append((f"{rpath}.kind", "reconciliation_diff rules need the daily "
                                 "reconciliation: set 'reconciliation.limit_pct'"))
        elif isinstance(rule, CarbonPerformanceRuleConfig):
            check(f"{rpath}.unit", "unit", rule.unit)
        elif isinstance(rule, AllowanceRuleConfig):
            if cfg.allowance.annual_t <= 0:
                problems.append((f"{rpath}.kind", "allowance_position rules need the annual "
                                 "allowance: set 'allowance.annual_t'"))
            if rule.measure == "shortfall_cost_cny" and cfg.allowance.carbon_price_cny_t <= 0:
                problems.append((f"{rpath}.measure", "shortfall_cost_cny needs the carbon "
                                 "price: set 'allowance.carbon_price_cny_t'"))
        for k, ch in enumerate(rule.notify):
            if ch not in channel_ids:
                problems.append((f"{rpath}.notify[{k}]", f"unknown channel {ch!r}"))
    return problems


def performance_rule_problems(rules: Sequence[Any], perf: PerformanceConfig) -> Problems:
    """Checks of carbon_performance rules against `performance:`: a target of some year for
    the deviation measures, a benchmark of the unit (and kind) for the benchmark gap."""
    problems: Problems = []
    for i, rule in enumerate(rules):
        if not isinstance(rule, CarbonPerformanceRuleConfig):
            continue
        path = f"alarms.rules[{i}]"
        who = f"unit {rule.unit}" if rule.unit else "the site"
        if rule.measure == "benchmark_gap_pct":
            if not any(b.unit == rule.unit and rule.benchmark_kind in (None, b.kind)
                       for b in perf.benchmarks):
                kind = f" of kind {rule.benchmark_kind}" if rule.benchmark_kind else ""
                problems.append((f"{path}.measure", f"no benchmark{kind} of {who} in "
                                 "performance.benchmarks"))
        elif not perf.targets:
            problems.append((f"{path}.measure", f"{rule.measure} needs a target: set "
                             "performance.targets"))
    return problems


P = TypeVar("P", bound=AlarmPlantConfig)


def with_alarm_rules(cfg: P, rules: list[Any], origin: str) -> P:
    """`cfg` with its alarm rules replaced by `rules` (plain data), validated as the file's.

    Raises ConfigError naming `origin` and the key path (alarms.rules[i]...) of each problem.
    """
    try:
        parsed = _RULES.validate_python(rules)
    except ValidationError as exc:
        raise ConfigError.many(origin, validation_problems(exc, list[RuleConfig],
                                                           "alarms.rules")) from None
    new = cfg.model_copy(update={"alarms": cfg.alarms.model_copy(update={"rules": parsed})})
    problems = rule_problems(new)
    perf = getattr(new, "performance", None)  # the whole plant's (server/config.py)
    if isinstance(perf, PerformanceConfig):
        problems += performance_rule_problems(parsed, perf)
    if problems:
        raise ConfigError.many(origin, problems)
    return new


_RULES: TypeAdapter[list[RuleConfig]] = TypeAdapter(list[RuleConfig])
