"""Plant configuration: YAML validated by pydantic, errors that name file and key path."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    TypeAdapter,
    ValidationError,
    field_validator,
)

from model.errors import ConfigError

if TYPE_CHECKING:
    from compute.factors import FactorTable, Method, QuantityUnit

WordOrder = Literal["ABCD", "CDAB", "BADC", "DCBA"]
RegisterType = Literal["int16", "uint16", "int32", "uint32", "float32", "float64"]
Identifier = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SiteConfig(_Model):
    """Identity of the site and its local time zone."""

    id: Identifier
    name: str
    name_zh: str = ""
    timezone: str = "Asia/Shanghai"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {v!r}") from exc
        return v


class ClockConfig(_Model):
    """Length of the calculation minute and the validity rules of minutes, hours and days."""

    minute_seconds: float = Field(60.0, gt=0, le=3600)
    min_samples_per_minute: int = Field(12, ge=1)
    min_valid_minutes_per_hour: int = Field(45, ge=1, le=60)  # HJ 75-2017
    min_valid_hours_per_day: int = Field(20, ge=1, le=24)


class ConstantsConfig(_Model):
    """Physical constants of DESIGN.md; all configurable."""

    t0_k: float = Field(273.15, gt=0)
    p0_pa: float = Field(101325.0, gt=0)
    co2_density_kg_m3: float = Field(1.964, gt=0)


class SimConfig(_Model):
    """How a simulated instrument produces a value.

    Either a constant `value`, or a value following the daily load curve between
    `min` (night trough) and `max` (day peak) plus gaussian `noise` (absolute, 1σ).
    All in the tag's engineering unit, after scale and offset: the simulator writes
    (value − offset) / scale to the registers. With `counter_start` the tag is a
    cumulative register (an energy or volume meter): it starts at that reading and
    grows by the value above per hour.
    """

    value: float | None = None
    min: float | None = None
    max: float | None = None
    noise: float = Field(0.0, ge=0)
    counter_start: float | None = Field(None, ge=0)

    def model_post_init(self, _ctx: Any) -> None:
        """Require exactly one way of producing the value."""
        constant = self.value is not None
        curve = self.min is not None and self.max is not None
        if constant == curve:
            raise ValueError("give either 'value' or both 'min' and 'max'")


class _TagBase(_Model):
    """What every field value has, whatever the protocol."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    id: Identifier
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""
    description: str = ""
    description_zh: str = ""
    sim: SimConfig | None = None


class ModbusTagConfig(_TagBase):
    """One value read from Modbus registers or bits.

    `function`: holding (FC 3), input (FC 4), coil (FC 1), discrete (FC 2). Bit tables
    give 0 or 1; `bit` takes one bit (0 = least significant) of a 16-bit register.
    """

    address: int = Field(alias="register", ge=0, le=65535)
    type: RegisterType = "float32"
    order: WordOrder = "ABCD"
    function: Literal["holding", "input", "coil", "discrete"] = "holding"
    bit: int | None = Field(None, ge=0, le=15)

    def model_post_init(self, _ctx: Any) -> None:
        """A bit field is one bit of one 16-bit register."""
        if self.bit is not None and (self.function in ("coil", "discrete")
                                     or self.type not in ("int16", "uint16")):
            raise ValueError("'bit' needs a holding or input register of type uint16 or int16")


class Dlt645TagConfig(_TagBase):
    """One data item of a DL/T 645 meter; `scale` is the CT × PT ratio where one applies."""

    di: str = Field(pattern=r"^([0-9A-Fa-f]{4}|[0-9A-Fa-f]{8})$")


Cjt188Field = Literal[
    "current_volume_m3", "settlement_volume_m3", "settlement_heat_kwh", "current_heat_kwh",
    "heat_power_kw", "flow_m3_h", "cumulative_volume_m3", "supply_temp_c", "return_temp_c",
    "working_hours_h", "status"]


class Cjt188TagConfig(_TagBase):
    """One field of a CJ/T 188 meter's 901F reply (volumes m³, heat kWh, status bits)."""

    field: Cjt188Field


TagConfig = ModbusTagConfig | Dlt645TagConfig | Cjt188TagConfig


class SerialLinkConfig(_Model):
    """A serial port (RS-485 / RS-232); every device that names it shares it."""

    serial: str = Field(min_length=1)
    baudrate: int | None = Field(None, gt=0)  # None: 9600 for Modbus RTU, 2400 for meters
    parity: Literal["N", "E", "O"] = "E"
    bytesize: Literal[7, 8] = 8
    stopbits: Literal[1, 2] = 1


class TcpLinkConfig(_Model):
    """A TCP endpoint: a transparent serial-to-Ethernet gateway."""

    host: str
    port: int = Field(ge=1, le=65535)


LinkConfig = SerialLinkConfig | TcpLinkConfig


class _DeviceBase(_Model):
    id: Identifier
    poll_interval_s: float = Field(1.0, gt=0)
    timeout_s: float = Field(1.0, gt=0)
    # Repeats of a request that got no reply, while the device is online: line noise on
    # RS-485 loses the odd frame. A device already known silent gets none.
    retries: int = Field(1, ge=0, le=5)
    simulate: bool = False


class ModbusTcpDeviceConfig(_DeviceBase):
    """A Modbus TCP device (or a gateway's unit id)."""

    protocol: Literal["modbus_tcp"]
    host: str = "127.0.0.1"
    port: int = Field(502, ge=1, le=65535)
    device_id: int = Field(1, ge=0, le=255)
    max_gap: int = Field(8, ge=0, le=125)
    tags: list[ModbusTagConfig] = Field(min_length=1)


class ModbusRtuDeviceConfig(_DeviceBase):
    """A Modbus RTU device on a serial bus or behind a transparent TCP gateway."""

    protocol: Literal["modbus_rtu"]
    link: LinkConfig
    device_id: int = Field(1, ge=1, le=247)
    max_gap: int = Field(8, ge=0, le=125)
    tags: list[ModbusTagConfig] = Field(min_length=1)


class Dlt645DeviceConfig(_DeviceBase):
    """A DL/T 645 electricity meter; `address` as printed on the meter (12 digits)."""

    protocol: Literal["dlt645"]
    link: LinkConfig
    address: str = Field(pattern=r"^([0-9]{2}|AA){6}$")
    version: Literal["2007", "1997"] = "2007"
    tags: list[Dlt645TagConfig] = Field(min_length=1)


class Cjt188DeviceConfig(_DeviceBase):
    """A CJ/T 188 water, heat or gas meter; `address` as printed (14 hex digits, A6..A0)."""

    protocol: Literal["cjt188"]
    link: LinkConfig
    meter_type: int = Field(ge=0, le=0xFF)
    address: str = Field(pattern=r"^[0-9A-Fa-f]{14}$")
    di_order: Literal["low_first", "high_first"] = "low_first"
    tags: list[Cjt188TagConfig] = Field(min_length=1)


DeviceConfig = Annotated[
    ModbusTcpDeviceConfig | ModbusRtuDeviceConfig | Dlt645DeviceConfig | Cjt188DeviceConfig,
    Field(discriminator="protocol")]


def bus_key(dev: DeviceConfig) -> str:
    """Name of the bus (serial port or TCP endpoint) a device is reached through."""
    if isinstance(dev, ModbusTcpDeviceConfig):
        return f"{dev.host}:{dev.port}"
    if isinstance(dev.link, SerialLinkConfig):
        return dev.link.serial
    return f"{dev.link.host}:{dev.link.port}"


def device_address(dev: DeviceConfig) -> str:
    """The device's address on its bus, as its protocol prints it."""
    if isinstance(dev, ModbusTcpDeviceConfig | ModbusRtuDeviceConfig):
        return f"unit {dev.device_id}"
    return f"address {dev.address}"


class Input(_Model):
    """A calculation input: a tag, or a constant value."""

    tag: str | None = None
    value: float | None = None

    def model_post_init(self, _ctx: Any) -> None:
        """Require exactly one of tag and value."""
        if (self.tag is None) == (self.value is None):
            raise ValueError("give either 'tag' or 'value'")


FLOW_INPUTS = ("velocity_m_s", "flow_act_m3_h", "dynamic_pressure_pa")


class CemsInputs(_Model):
    """Instruments of a CEMS source (all in SI / standard units).

    Flow: exactly one of a velocity, an actual flow, or a pitot's dynamic pressure
    (with the source's `pitot` coefficients). Moisture: `moisture_pct`, or both O2
    analysers (wet and dry), Xsw = 1 − O2 wet / O2 dry; a measured moisture takes
    precedence and the O2 inputs then serve the flue-gas density and `co2_from_o2`.
    """

    velocity_m_s: Input | None = None
    flow_act_m3_h: Input | None = None
    dynamic_pressure_pa: Input | None = None
    co2_pct: Input
    co2_basis: Literal["dry", "wet"] = "dry"
    temp_c: Input
    static_pa: Input = Input(value=0.0)
    baro_pa: Input = Input(value=101325.0)
    moisture_pct: Input | None = None
    o2_dry_pct: Input | None = None  # O2 % on a dry basis (extractive analyser)
    o2_wet_pct: Input | None = None  # O2 % on a wet basis (in-situ analyser)

    def model_post_init(self, _ctx: Any) -> None:
        """Require exactly one flow measurement and a way to know the moisture."""
        given = [k for k in FLOW_INPUTS if getattr(self, k) is not None]
        if len(given) != 1:
            got = " and ".join(repr(k) for k in given) if given else "none"
            raise ValueError("give exactly one flow input: 'velocity_m_s', 'flow_act_m3_h' "
                             f"or 'dynamic_pressure_pa' (got {got})")
        if self.moisture_pct is None and (self.o2_wet_pct is None or self.o2_dry_pct is None):
            raise ValueError("give 'moisture_pct', or both 'o2_wet_pct' and 'o2_dry_pct' "
                             "to derive the moisture from them")


class PitotConfig(_Model):
    """Coefficients of a pitot flow measurement: v = Kv·Kp·sqrt(2·Pd/ρs).

    `kp` is the probe's calibrated coefficient (nominally 0.84 for an S-type pitot
    meeting US EPA Method 2's geometry, ≈ 0.99 for a standard L-type); `kv` the
    velocity field coefficient of the measuring point (HJ 75: reference-method velocity
    over the CEMS reading, from the comparison tests).
    `dry_molar_mass_g_mol` sets the flue-gas density only for a source without an O2
    input; with one, the dry molar mass is computed every minute from CO2 and O2
    (US EPA Method 3). 30.0 g/mol is a coal flue gas (12 % CO2, 6 % O2 → 30.16).
    """

    kp: float = Field(gt=0, le=2)
    kv: float = Field(1.0, gt=0, le=2)
    dry_molar_mass_g_mol: float = Field(30.0, ge=18, le=44)


class FFactorConfig(_Model):
    """Fuel F-factors for CO2 from O2 while the CO2 analyser is out (US EPA Method 19).

    CO2 % dry = 100 · Fc/Fd · (20.9 − O2 % dry)/20.9. Only the ratio matters: give both
    in one unit. Defaults: bituminous coal, Method 19 table 19-2, Fd 9780 dscf/MMBtu
    and Fc 1800 scf/MMBtu (2.63e-7 dsm³/J and 0.484e-7 sm³/J).
    """

    fd: float = Field(9780.0, gt=0)
    fc: float = Field(1800.0, gt=0)


MAX_LOOKBACK_H = 8784  # one leap year of hours: the longest history a rule may look at


class NoSubstitution(_Model):
    """Invalid hours stay without a value (they count as missing in the day)."""

    rule: Literal["none"]


class MrrSubstitution(_Model):
    """EU MRR annex VIII eq. 4: mean + 2σ of the valid hours in the `lookback_h` before."""

    rule: Literal["mrr_mean_2sigma"]
    lookback_h: int = Field(ge=2, le=MAX_LOOKBACK_H)
    min_valid_hours: int = Field(2, ge=2)


class MaxPreviousSubstitution(_Model):
    """The maximum of the last `n_hours` valid hours within the `lookback_h` before."""

    rule: Literal["max_previous_n"]
    n_hours: int = Field(ge=1, le=MAX_LOOKBACK_H)
    lookback_h: int = Field(ge=1, le=MAX_LOOKBACK_H)
    min_valid_hours: int | None = Field(None, ge=1)  # None: all n_hours


class FactorMethodSubstitution(_Model):
    """The hour's emission-factor-method CO2 of the unit's fuel and process streams."""

    rule: Literal["factor_method"]


SubstitutionConfig = Annotated[
    NoSubstitution | MrrSubstitution | MaxPreviousSubstitution | FactorMethodSubstitution,
    Field(discriminator="rule")]


class SourceConfig(_Model):
    """An emission source (stack) measured by CEMS."""

    id: Identifier
    name: str
    name_zh: str = ""
    kind: Literal["cems"] = "cems"
    area_m2: float | None = Field(None, gt=0)
    pitot: PitotConfig | None = None
    co2_from_o2: FFactorConfig | None = None
    inputs: CemsInputs
    substitution: SubstitutionConfig = NoSubstitution(rule="none")


class UnitOutputConfig(_Model):
    """How a unit's product output is measured (electric power, MW)."""

    power_mw: Input


class CounterConfig(_Model):
    """A cumulative register (meter counter) measuring a stream.

    The register wraps to 0 at `rollover_count`; an increase above `max_jump_per_h`
    (counts per wall-clock hour) is implausible and flagged. One count is
    `quantity_per_count` of the stream's quantity (e.g. 0.001 for kWh into MWh).
    """

    tag: str
    rollover_count: float = Field(gt=0)
    max_jump_per_h: float = Field(gt=0)
    quantity_per_count: float = Field(1.0, gt=0)


StreamKind = Literal["solid_fuel", "liquid_fuel", "gaseous_fuel", "electricity", "heat",
                     "process"]
# Per kind: the unit of the quantity, and the factor method (fuels may use measured carbon).
STREAM_KINDS: dict[str, tuple[QuantityUnit, Method]] = {
    "solid_fuel": ("t", "ncv_cc_of"),
    "liquid_fuel": ("t", "ncv_cc_of"),
    "gaseous_fuel": ("1e4m3", "ncv_cc_of"),
    "electricity": ("MWh", "electricity"),
    "heat": ("GJ", "heat"),
    "process": ("t", "process"),
}


class StreamConfig(_Model):
    """A fuel or energy stream of a unit, accounted by the emission-factor method.

    The quantity is in t (solid and liquid fuels, process), 10⁴ m³ (gaseous fuels),
    MWh (purchased electricity) or GJ (purchased heat); it is measured by `rate_per_h`
    (that unit per hour, e.g. a coal feeder in t/h) or by a meter `counter`. `factors`
    names the stream of the factor table whose dated versions apply.
    """

    id: Identifier
    name: str = ""
    name_zh: str = ""
    kind: StreamKind
    method: Literal["ncv_cc_of", "measured_carbon"] | None = None  # fuels; default ncv_cc_of
    factors: Identifier
    rate_per_h: Input | None = None
    counter: CounterConfig | None = None

    def model_post_init(self, _ctx: Any) -> None:
        """Require exactly one measurement, and a fuel method only on fuels."""
        if (self.rate_per_h is None) == (self.counter is None):
            raise ValueError("give either 'rate_per_h' or 'counter'")
        if self.method is not None and not self.kind.endswith("_fuel"):
            raise ValueError(f"'method' only applies to fuels, not to kind {self.kind!r}")

    @property
    def quantity_unit(self) -> QuantityUnit:
        """Unit of the stream's quantity: t, 1e4m3, MWh or GJ."""
        return STREAM_KINDS[self.kind][0]

    @property
    def calc_method(self) -> Method:
        """The compute.factors method: ncv_cc_of, measured_carbon, electricity, heat, process."""
        return self.method or STREAM_KINDS[self.kind][1]

    @property
    def direct(self) -> bool:
        """Whether the stream's CO2 leaves through the unit's stacks (fuels and process)."""
        return self.kind not in ("electricity", "heat")


class UnitConfig(_Model):
    """A generating / production unit with its emission sources and factor-method streams."""

    id: Identifier
    name: str
    name_zh: str = ""
    output: UnitOutputConfig
    sources: list[SourceConfig] = Field(min_length=1)
    streams: list[StreamConfig] = Field(default_factory=list)


class AllowanceConfig(_Model):
    """The site's annual allowance (t CO2) and the carbon price a shortfall would cost."""

    annual_t: float = Field(0.0, ge=0)
    carbon_price_cny_t: float = Field(0.0, ge=0)


class ReconciliationConfig(_Model):
    """Daily CEMS vs emission-factor method check: |CEMS − factor| / factor beyond the limit."""

    limit_pct: float = Field(gt=0, le=100)


class Target(_Model):
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


class Scope(_Model):
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


class _RuleBase(_Model):
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
    """Emission intensity (t CO2/MWh) over a window against levels or a benchmark.

    `window`: "minute" (this minute), "hour" and "day" (the last 60 / 1440 minutes),
    "month_to_date" (the plant-local month so far). Levels are either absolute
    (`warning`, `alarm` in t/MWh) or percentages of `benchmark_t_mwh` (a sector
    benchmark or the plant's target). Below `min_output_mwh` of output in the window
    the intensity is not evaluated.
    """

    kind: Literal["intensity"]
    scope: Scope
    window: Literal["minute", "hour", "day", "month_to_date"]
    benchmark_t_mwh: float | None = Field(None, gt=0)
    warning_pct: float | None = Field(None, gt=0)
    alarm_pct: float | None = Field(None, gt=0)
    min_output_mwh: float = Field(0.0, ge=0)

    def model_post_init(self, _ctx: Any) -> None:
        """Require absolute levels or a benchmark with percentages, not both."""
        pct = self.warning_pct is not None or self.alarm_pct is not None
        if self.benchmark_t_mwh is None:
            if pct:
                raise ValueError("'warning_pct' / 'alarm_pct' need 'benchmark_t_mwh'")
            _check_levels(self.warning, self.alarm, True)
            return
        if self.warning is not None or self.alarm is not None:
            raise ValueError("give levels either as 'warning' / 'alarm' (t/MWh) or as "
                             "'warning_pct' / 'alarm_pct' of 'benchmark_t_mwh', not both")
        if not pct:
            raise ValueError("give 'warning_pct', 'alarm_pct' or both (of 'benchmark_t_mwh')")
        _check_levels(self.warning_pct, self.alarm_pct, True)

    def levels(self) -> tuple[float | None, float | None]:
        """(warning, alarm) in t/MWh."""
        b = self.benchmark_t_mwh
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
              "allowance_position", "capture_rate", "reconciliation_diff")


def _default_rule_kind(v: Any) -> Any:
    """A rule without `kind` is a threshold rule (the first and most common kind)."""
    if isinstance(v, dict) and "kind" not in v:
        return {**v, "kind": "threshold"}
    return v


RuleConfig = Annotated[
    ThresholdRuleConfig | RateOfChangeRuleConfig | StaleRuleConfig | CommLossRuleConfig
    | IntensityRuleConfig | AllowanceRuleConfig | CaptureRateRuleConfig
    | ReconciliationRuleConfig,
    Field(discriminator="kind"), BeforeValidator(_default_rule_kind)]


class RateLimitConfig(_Model):
    """Token bucket of one channel: up to `burst` messages at once, refilled at `per_minute`."""

    burst: int = Field(10, ge=1)
    per_minute: float = Field(6.0, gt=0)


class _ChannelBase(_Model):
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


class RouteConfig(_Model):
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


class DeliveryConfig(_Model):
    """How notifications are delivered: retries with capped backoff, dedupe, bounds."""

    retries: int = Field(3, ge=0, le=10)  # tries after the first
    backoff_initial_s: float = Field(2.0, gt=0)
    backoff_max_s: float = Field(60.0, gt=0)
    dedupe_window_s: float = Field(300.0, ge=0)  # same rule and state again within: sent once
    queue_size: int = Field(1000, ge=1)  # per channel; beyond it the oldest is dropped (logged)
    log_size: int = Field(5000, ge=1)  # delivery log records kept in memory


class AlarmsConfig(_Model):
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


class OpcUaConfig(_Model):
    """The OPC UA server."""

    enabled: bool = True
    endpoint: str = "opc.tcp://0.0.0.0:4840"


class WebConfig(_Model):
    """The web HMI and REST API, its sessions and TLS."""

    enabled: bool = True
    host: str = "0.0.0.0"
    port: int = Field(8080, ge=0, le=65535)
    # Sessions end after this long without a request, and after session_max_h in any case.
    session_idle_min: float = Field(30.0, gt=0, le=24 * 60)
    session_max_h: float = Field(12.0, gt=0, le=24 * 7)
    # PEM files; with both the HMI is served over HTTPS and session cookies are Secure.
    tls_cert: str | None = None
    tls_key: str | None = None
    # Create the demo accounts (viewer, operator, engineer, admin; password "demo-<role>").
    # Only a demo plant may do this: every device simulated.
    demo_users: bool = False

    def model_post_init(self, _ctx: Any) -> None:
        """TLS needs both the certificate and its key."""
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("give both 'tls_cert' and 'tls_key', or neither")


class HistorianConfig(_Model):
    """The embedded SQLite historian, the system of record."""

    path: str = "var/historian.sqlite"


class InfluxConfig(_Model):
    """An InfluxDB v2 write-API server (InfluxDB 2/3, Cloud, VictoriaMetrics)."""

    url: str
    org: str = "carbonscada"
    bucket: str = "carbonscada"
    token_env: str | None = None  # environment variable holding the token
    batch_lines: int = Field(5000, ge=1, le=100_000)
    flush_interval_s: float = Field(5.0, gt=0)
    outbox_path: str = "var/influx-outbox.sqlite"
    raw_samples: bool = True


class PlantConfig(_Model):
    """The whole configuration of one site."""

    site: SiteConfig
    clock: ClockConfig = ClockConfig()
    constants: ConstantsConfig = ConstantsConfig()
    devices: list[DeviceConfig] = Field(default_factory=list)
    units: list[UnitConfig] = Field(default_factory=list)
    allowance: AllowanceConfig = AllowanceConfig()
    alarms: AlarmsConfig = AlarmsConfig()
    opcua: OpcUaConfig = OpcUaConfig()
    web: WebConfig = WebConfig()
    historian: HistorianConfig = HistorianConfig()
    influx: InfluxConfig | None = None
    factor_table: str | None = None  # YAML of factor versions, relative to this file
    reconciliation: ReconciliationConfig | None = None
    _factors: FactorTable | None = PrivateAttr(default=None)

    def tag_index(self) -> dict[str, tuple[DeviceConfig, TagConfig]]:
        """Map every tag id to its device and tag configuration."""
        return {t.id: (d, t) for d in self.devices for t in d.tags}

    def sources(self) -> list[tuple[UnitConfig, SourceConfig]]:
        """All sources with the unit they belong to, in configuration order."""
        return [(u, s) for u in self.units for s in u.sources]

    def streams(self) -> list[tuple[UnitConfig, StreamConfig]]:
        """All factor-method streams with the unit they belong to, in configuration order."""
        return [(u, s) for u in self.units for s in u.streams]

    @property
    def factors(self) -> FactorTable:
        """The factor versions of `factor_table` (empty without one)."""
        from compute.factors import FactorTable

        return self._factors if self._factors is not None else FactorTable(())


_BRANCH_NAMES = {"modbus_tcp", "modbus_rtu", "dlt645", "cjt188",
                 "email", "webhook", "wecom", "dingtalk", "feishu", "sms", "mqtt",
                 "SerialLinkConfig", "TcpLinkConfig",
                 "none", "mrr_mean_2sigma", "max_previous_n", "factor_method"}
_BRANCH_NAMES |= set(RULE_KINDS)  # alarm rule kinds are union branches too


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in _BRANCH_NAMES:  # union branch names add nothing
            continue
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _path(err: Any) -> str:
    loc = _loc(tuple(err["loc"]))
    if err["type"] == "union_tag_invalid":
        return f"{loc}.{str(err['ctx']['discriminator']).strip(chr(39))}"
    return loc


def _message(err: Any) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "union_tag_invalid":
        return (f"unknown {ctx.get('discriminator', 'kind').strip(chr(39))} "
                f"{ctx.get('tag')!r} (known: {ctx.get('expected_tags')})")
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    msg = str(err["msg"])
    return msg.removeprefix("Value error, ")


def _cross_check(cfg: PlantConfig) -> list[tuple[str, str]]:
    """Checks that span several parts of the file; returns (key path, problem)."""
    problems: list[tuple[str, str]] = []
    seen_tags = _device_problems(cfg.devices, problems)

    def check_input(path: str, inp: Input | None) -> None:
        if inp is not None and inp.tag is not None and inp.tag not in seen_tags:
            problems.append((f"{path}.tag", f"unknown tag {inp.tag!r}"))

    ids: dict[str, str] = {}
    for i, unit in enumerate(cfg.units):
        upath = f"units[{i}]"
        if unit.id in ids:
            problems.append((f"{upath}.id", f"duplicate id {unit.id!r} (also {ids[unit.id]})"))
        ids.setdefault(unit.id, upath)
        check_input(f"{upath}.output.power_mw", unit.output.power_mw)
        for j, src in enumerate(unit.sources):
            spath = f"{upath}.sources[{j}]"
            if src.id in ids:
                problems.append((f"{spath}.id", f"duplicate id {src.id!r} (also {ids[src.id]})"))
            ids.setdefault(src.id, spath)
            problems.extend(_cems_source_problems(spath, src))
            for name in CemsInputs.model_fields:
                inp = getattr(src.inputs, name)
                if isinstance(inp, Input):
                    check_input(f"{spath}.inputs.{name}", inp)
            problems.extend(_substitution_problems(f"{spath}.substitution", src, unit))
        for j, stream in enumerate(unit.streams):
            tpath = f"{upath}.streams[{j}]"
            if stream.id in ids:
                problems.append((f"{tpath}.id",
                                 f"duplicate id {stream.id!r} (also {ids[stream.id]})"))
            ids.setdefault(stream.id, tpath)
            check_input(f"{tpath}.rate_per_h", stream.rate_per_h)
            if stream.counter is not None and stream.counter.tag not in seen_tags:
                problems.append((f"{tpath}.counter.tag",
                                 f"unknown tag {stream.counter.tag!r}"))
        if (cfg.reconciliation is None and any(s.direct for s in unit.streams)):
            problems.append(("reconciliation", f"unit {unit.id!r} has CEMS sources and fuel "
                             "or process streams, reconciled daily: set "
                             "'reconciliation.limit_pct'"))
    if cfg.streams() and cfg.factor_table is None:
        problems.append(("factor_table", "streams need a factor table: set 'factor_table' to "
                         "a YAML file of factor versions (e.g. factors.yaml)"))

    problems.extend(_rule_problems(cfg, set(seen_tags)))
    real = [d.id for d in cfg.devices if not d.simulate]
    if cfg.web.demo_users and (real or not cfg.devices):
        problems.append(("web.demo_users", "demo accounts have known passwords and are only "
                         "for a demo plant whose devices are all simulated"
                         + (f"; real device(s): {', '.join(real)}" if real else "")
                         + ": create users with 'carbonscada user add'"))
    return problems


def _rule_problems(cfg: PlantConfig, tag_ids: set[str]) -> list[tuple[str, str]]:
    """Checks of the alarm rules against the plant: what they name must exist."""
    problems: list[tuple[str, str]] = []
    channel_ids = {c.id for c in cfg.alarms.channels}
    known = {"source": {s.id for _, s in cfg.sources()}, "unit": {u.id for u in cfg.units},
             "tag": tag_ids, "device": {d.id for d in cfg.devices}}

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
        elif isinstance(rule, IntensityRuleConfig):
            check(f"{rpath}.scope.source", "source", rule.scope.source)
            check(f"{rpath}.scope.unit", "unit", rule.scope.unit)
        elif isinstance(rule, CommLossRuleConfig):
            check(f"{rpath}.device", "device", rule.device)
        elif isinstance(rule, CaptureRateRuleConfig):
            check(f"{rpath}.source", "source", rule.source)
        elif isinstance(rule, ReconciliationRuleConfig):
            check(f"{rpath}.unit", "unit", rule.unit)
            if cfg.reconciliation is None:
                problems.append((f"{rpath}.kind", "reconciliation_diff rules need the daily "
                                 "reconciliation: set 'reconciliation.limit_pct'"))
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


def with_alarm_rules(cfg: PlantConfig, rules: list[Any], origin: str) -> PlantConfig:
    """`cfg` with its alarm rules replaced by `rules` (plain data), validated as the file's.

    Raises ConfigError naming `origin` and the key path (alarms.rules[i]...) of each problem.
    """
    try:
        parsed = TypeAdapter(list[RuleConfig]).validate_python(rules)
    except ValidationError as exc:
        raise ConfigError.many(origin, [(_rules_path(e), _message(e)) for e in exc.errors()]
                               ) from None
    new = cfg.model_copy(update={"alarms": cfg.alarms.model_copy(update={"rules": parsed})})
    problems = _rule_problems(new, set(cfg.tag_index()))
    if problems:
        raise ConfigError.many(origin, problems)
    return new


def _rules_path(err: Any) -> str:
    """The key path of a rule-list validation error, as in the file: alarms.rules[i].key."""
    loc = _path(err)
    return "alarms.rules" if loc == "(top level)" else f"alarms.rules{loc}"


def _substitution_problems(path: str, src: SourceConfig,
                           unit: UnitConfig) -> list[tuple[str, str]]:
    """Checks of a source's substitution rule against its parameters and its unit."""
    sub = src.substitution
    if isinstance(sub, MrrSubstitution) and sub.min_valid_hours > sub.lookback_h:
        return [(f"{path}.min_valid_hours",
                 f"{sub.min_valid_hours} valid hours can never be found in a "
                 f"lookback of {sub.lookback_h} h")]
    if isinstance(sub, MaxPreviousSubstitution):
        if sub.lookback_h < sub.n_hours:
            return [(f"{path}.lookback_h", f"shorter than n_hours ({sub.n_hours}): the "
                     f"{sub.n_hours} previous valid hours are looked for in the lookback")]
        if sub.min_valid_hours is not None and sub.min_valid_hours > sub.n_hours:
            return [(f"{path}.min_valid_hours",
                     f"more than n_hours ({sub.n_hours}), the most the rule looks at")]
    if isinstance(sub, FactorMethodSubstitution):
        if len(unit.sources) != 1:
            return [(f"{path}.rule", f"factor_method needs a unit whose emissions all leave "
                     f"through this one source; unit {unit.id!r} has {len(unit.sources)}")]
        if not any(s.direct for s in unit.streams):
            return [(f"{path}.rule", f"factor_method needs fuel or process streams on unit "
                     f"{unit.id!r} ('streams')")]
    return []


def _device_problems(devices: list[DeviceConfig],
                     problems: list[tuple[str, str]]) -> dict[str, str]:
    """Checks between devices and buses; returns tag id → key path of every tag."""
    seen_tags: dict[str, str] = {}
    seen_devices: dict[str, int] = {}
    buses: dict[str, tuple[int, DeviceConfig]] = {}  # bus → first device on it
    addresses: dict[tuple[str, str], str] = {}
    for i, dev in enumerate(devices):
        path = f"devices[{i}]"
        if dev.id in seen_devices:
            problems.append((f"{path}.id", f"duplicate device id {dev.id!r} "
                             f"(also devices[{seen_devices[dev.id]}])"))
        seen_devices.setdefault(dev.id, i)
        bus = bus_key(dev)
        first_i, first = buses.setdefault(bus, (i, dev))
        link = getattr(dev, "link", None)
        where = f"{path}.link" if link is not None else path
        if first.protocol != dev.protocol:
            problems.append((f"{path}.protocol", f"bus {bus} already speaks {first.protocol} "
                             f"(device {first.id!r}, devices[{first_i}]); one protocol a bus"))
        elif isinstance(link, SerialLinkConfig) and link != getattr(first, "link", None):
            problems.append((where, f"serial settings differ from device {first.id!r} "
                             f"(devices[{first_i}]) on the same port {bus}"))
        key = (bus, device_address(dev))
        if key in addresses:
            problems.append((path, f"same bus {bus} and {key[1]} as device {addresses[key]!r}"))
        addresses.setdefault(key, dev.id)
        if dev.simulate:
            host = link.host if isinstance(link, TcpLinkConfig) else getattr(dev, "host", None)
            if host is not None and not _is_loopback(host):
                problems.append((f"{where}.host",
                                 f"simulated device must be on loopback, not {host!r}"))
        if isinstance(dev, Dlt645DeviceConfig):
            width = 8 if dev.version == "2007" else 4
            for j, meter_tag in enumerate(dev.tags):
                if len(meter_tag.di) != width:
                    problems.append((f"{path}.tags[{j}].di", f"DL/T 645-{dev.version} DI has "
                                     f"{width} hex digits (DI3..DI0), not {meter_tag.di!r}"))
        for j, tag in enumerate(dev.tags):
            tpath = f"{path}.tags[{j}]"
            if tag.id in seen_tags:
                problems.append((f"{tpath}.id",
                                 f"duplicate tag id {tag.id!r} (first at {seen_tags[tag.id]})"))
            else:
                seen_tags[tag.id] = tpath
            if dev.simulate and tag.sim is None:
                problems.append((f"{tpath}.sim", "simulated device needs 'sim' on every tag"))
    return seen_tags


def _cems_source_problems(spath: str, src: SourceConfig) -> list[tuple[str, str]]:
    """Checks between a CEMS source's parameters and its inputs; (key path, problem)."""
    problems: list[tuple[str, str]] = []
    inp = src.inputs
    if inp.velocity_m_s is not None and src.area_m2 is None:
        problems.append((f"{spath}.area_m2",
                         "CEMS source with a velocity input needs the duct area 'area_m2'"))
    if inp.dynamic_pressure_pa is not None:
        if src.area_m2 is None:
            problems.append((f"{spath}.area_m2", "CEMS source with a dynamic pressure input "
                             "needs the duct area 'area_m2'"))
        if src.pitot is None:
            problems.append((f"{spath}.pitot", "CEMS source with a dynamic pressure input needs "
                             "'pitot' with the pitot coefficient 'kp' (from the probe's "
                             "calibration; nominally 0.84 for an S-type pitot)"))
    elif src.pitot is not None:
        problems.append((f"{spath}.pitot",
                         "only used with a 'dynamic_pressure_pa' input; remove it"))
    has_o2 = inp.o2_dry_pct is not None or inp.o2_wet_pct is not None
    if (src.pitot is not None and has_o2
            and "dry_molar_mass_g_mol" in src.pitot.model_fields_set):
        problems.append((f"{spath}.pitot.dry_molar_mass_g_mol",
                         "not used: with an O2 input the dry molar mass is computed every "
                         "minute from CO2 and O2; remove it"))
    if src.co2_from_o2 is not None and not has_o2:
        problems.append((f"{spath}.co2_from_o2",
                         "CO2 from O2 needs an O2 input: 'inputs.o2_dry_pct', or "
                         "'inputs.o2_wet_pct' with 'inputs.moisture_pct'"))
    return problems


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class FactorVersionConfig(_Model):
    """One dated set of emission factors of one factor stream."""

    id: str = Field(min_length=1)
    stream: Identifier
    effective_from: AwareDatetime
    source: str = Field(min_length=1)  # the document or lab report the values come from
    factors: dict[str, float] = Field(min_length=1)  # names of compute.factors.FACTOR_UNITS


class FactorFileConfig(_Model):
    """A factor table file: every version of every factor stream."""

    versions: list[FactorVersionConfig] = Field(min_length=1)


def load_factor_table(path: Path) -> FactorTable:
    """Read and validate a factor table YAML; errors name that file and the key path."""
    from compute.factors import FactorTable, FactorVersion

    data = _read_yaml(path)
    origin = str(path)
    if not isinstance(data, dict):
        raise ConfigError(origin, "(top level)", "expected a mapping of keys")
    try:
        parsed = FactorFileConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError.many(origin, [(_path(e), _message(e)) for e in exc.errors()]
                               ) from None
    versions = []
    problems: list[tuple[str, str]] = []
    for i, v in enumerate(parsed.versions):
        try:
            versions.append(FactorVersion(v.id, v.stream, v.effective_from, v.factors, v.source))
        except ValueError as exc:
            problems.append((f"versions[{i}].factors", str(exc)))
    if problems:
        raise ConfigError.many(origin, problems)
    try:
        return FactorTable(versions)
    except ValueError as exc:
        raise ConfigError(origin, "versions", str(exc)) from None


def _stream_factor_problems(cfg: PlantConfig, table: FactorTable,
                            table_path: Path) -> list[tuple[str, str]]:
    """Each stream's factor stream must exist and every version hold the factors it needs."""
    from model.errors import FactorVersionNotFound

    problems: list[tuple[str, str]] = []
    for i, unit in enumerate(cfg.units):
        for j, stream in enumerate(unit.streams):
            path = f"units[{i}].streams[{j}].factors"
            try:
                versions = table.versions(stream.factors)
            except FactorVersionNotFound:
                problems.append((path, f"no factor stream {stream.factors!r} in {table_path} "
                                 f"(it has: {', '.join(table.streams) or 'none'})"))
                continue
            for v in versions:
                try:
                    v.factors(stream.calc_method, stream.quantity_unit)
                except ValueError as exc:
                    problems.append((path, f"{table_path}: {exc}"))
                    break
    return problems


def parse_config(data: Any, origin: str, base_dir: Path | None = None) -> PlantConfig:
    """Validate already-loaded YAML data; `origin` names the file in errors.

    `factor_table` is read relative to `base_dir` (default: the directory of `origin`).
    """
    if not isinstance(data, dict):
        raise ConfigError(origin, "(top level)", "expected a mapping of keys")
    try:
        cfg = PlantConfig.model_validate(data)
    except ValidationError as exc:
        problems = [(_path(e), _message(e)) for e in exc.errors()]
        raise ConfigError.many(origin, problems) from None
    problems = _cross_check(cfg)
    if problems:
        raise ConfigError.many(origin, problems)
    if cfg.factor_table is not None:
        table_path = (base_dir if base_dir is not None else Path(origin).parent
                      ) / cfg.factor_table
        table = load_factor_table(table_path)
        problems = _stream_factor_problems(cfg, table, table_path)
        if problems:
            raise ConfigError.many(origin, problems)
        cfg._factors = table
    return cfg


def _read_yaml(p: Path) -> Any:
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(p), "(file)", f"cannot read: {exc.strerror}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"
        raise ConfigError(str(p), where, f"not valid YAML: {getattr(exc, 'problem', exc)}"
                          ) from None


def load_config(path: str | os.PathLike[str]) -> PlantConfig:
    """Read and validate a plant configuration file (and the factor table it names)."""
    p = Path(path)
    return parse_config(_read_yaml(p), str(p))
