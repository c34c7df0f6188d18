"""Plant configuration: YAML validated by pydantic, errors that name file and key path."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from server.errors import ConfigError

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
    """Length of the calculation minute and the validity rule of a minute."""

    minute_seconds: float = Field(60.0, gt=0, le=3600)
    min_samples_per_minute: int = Field(12, ge=1)


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


class UnitOutputConfig(_Model):
    """How a unit's product output is measured (electric power, MW)."""

    power_mw: Input


class UnitConfig(_Model):
    """A generating / production unit with its emission sources."""

    id: Identifier
    name: str
    name_zh: str = ""
    output: UnitOutputConfig
    sources: list[SourceConfig] = Field(min_length=1)


class AllowanceConfig(_Model):
    """The site's annual allowance (t CO2)."""

    annual_t: float = Field(0.0, ge=0)


class Target(_Model):
    """What an alarm rule watches: a field of a source, a unit or the site."""

    source: str | None = None
    unit: str | None = None
    site: bool = False
    field: str

    def model_post_init(self, _ctx: Any) -> None:
        """Require exactly one kind of target."""
        if sum([self.source is not None, self.unit is not None, self.site]) != 1:
            raise ValueError("give exactly one of 'source', 'unit' or 'site: true'")


class ThresholdRuleConfig(_Model):
    """Warning (预警) and alarm (报警) levels on one value."""

    id: Identifier
    kind: Literal["threshold"] = "threshold"
    name: str = ""
    target: Target
    direction: Literal["high", "low"] = "high"
    warning: float | None = None
    alarm: float | None = None
    deadband: float = Field(0.0, ge=0)
    notify: list[str] = Field(default_factory=list)

    def model_post_init(self, _ctx: Any) -> None:
        """Require at least one level, in the right order."""
        if self.warning is None and self.alarm is None:
            raise ValueError("give 'warning', 'alarm' or both")
        if self.warning is not None and self.alarm is not None:
            bad = self.alarm < self.warning if self.direction == "high" else (
                self.alarm > self.warning)
            if bad:
                raise ValueError(
                    f"'alarm' level must be beyond 'warning' level for direction "
                    f"{self.direction!r}")


class EmailChannelConfig(_Model):
    """Notification by email over SMTP."""

    id: Identifier
    kind: Literal["email"]
    host: str
    port: int = Field(25, ge=1, le=65535)
    security: Literal["none", "starttls", "ssl"] = "none"
    username: str | None = None
    password_env: str | None = None  # name of the environment variable with the password
    sender: str
    to: list[str] = Field(min_length=1)
    timeout_s: float = Field(10.0, gt=0)


ChannelConfig = Annotated[EmailChannelConfig, Field(discriminator="kind")]


class AlarmsConfig(_Model):
    """Alarm rules and notification channels."""

    rules: list[ThresholdRuleConfig] = Field(default_factory=list)
    channels: list[ChannelConfig] = Field(default_factory=list)


class OpcUaConfig(_Model):
    """The OPC UA server."""

    enabled: bool = True
    endpoint: str = "opc.tcp://0.0.0.0:4840"


class WebConfig(_Model):
    """The web HMI and REST API."""

    enabled: bool = True
    host: str = "0.0.0.0"
    port: int = Field(8080, ge=0, le=65535)


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

    def tag_index(self) -> dict[str, tuple[DeviceConfig, TagConfig]]:
        """Map every tag id to its device and tag configuration."""
        return {t.id: (d, t) for d in self.devices for t in d.tags}

    def sources(self) -> list[tuple[UnitConfig, SourceConfig]]:
        """All sources with the unit they belong to, in configuration order."""
        return [(u, s) for u in self.units for s in u.sources]


_BRANCH_NAMES = {"modbus_tcp", "modbus_rtu", "dlt645", "cjt188", "email",
                 "SerialLinkConfig", "TcpLinkConfig"}


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

    channel_ids = {c.id for c in cfg.alarms.channels}
    source_ids = {s.id for _, s in cfg.sources()}
    unit_ids = {u.id for u in cfg.units}
    rule_ids: set[str] = set()
    for i, rule in enumerate(cfg.alarms.rules):
        rpath = f"alarms.rules[{i}]"
        if rule.id in rule_ids:
            problems.append((f"{rpath}.id", f"duplicate rule id {rule.id!r}"))
        rule_ids.add(rule.id)
        tgt = rule.target
        if tgt.source is not None and tgt.source not in source_ids:
            problems.append((f"{rpath}.target.source", f"unknown source {tgt.source!r}"))
        if tgt.unit is not None and tgt.unit not in unit_ids:
            problems.append((f"{rpath}.target.unit", f"unknown unit {tgt.unit!r}"))
        for k, ch in enumerate(rule.notify):
            if ch not in channel_ids:
                problems.append((f"{rpath}.notify[{k}]", f"unknown channel {ch!r}"))
    return problems


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


def parse_config(data: Any, origin: str) -> PlantConfig:
    """Validate already-loaded YAML data; `origin` names the file in errors."""
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
    return cfg


def load_config(path: str | os.PathLike[str]) -> PlantConfig:
    """Read and validate a plant configuration file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(p), "(file)", f"cannot read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"
        raise ConfigError(str(p), where, f"not valid YAML: {getattr(exc, 'problem', exc)}"
                          ) from None
    return parse_config(data, str(p))
