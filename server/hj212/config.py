"""Configuration schema of the HJ 212-2017 uplink: one entry per platform (monitoring point).

Each entry is one data logger (数采仪) of one CEMS source, as HJ 212 has it: one MN per
monitoring point. A plant with two stacks reporting to one platform has two entries with
two MNs (the same host and port). The pollutant-code map says which figure each HJ 212
code carries; the defaults follow HJ 212-2017 annex B's codes with the units named below.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, Literal, Protocol, TypeVar

from pydantic import Field, field_validator, model_validator

from alarms.config import AlarmPlantConfig, CommLossRuleConfig
from model.errors import ConfigError
from model.schema import ConfigModel, Identifier, Problems

# What a code can carry. Source results (one value per minute, from the minute's means):
SOURCE_FIELDS: Final = ("co2_mg_m3", "co2_dry_pct", "flow_std_dry_m3_h", "flow_act_m3_h")
# A CEMS input of the source (compute.config.CemsInputs), when it is a tag: its minute
# statistics (min, mean, max) are sent as x-Min, x-Avg, x-Max.
INPUT_FIELDS: Final = ("velocity_m_s", "temp_c", "static_pa", "baro_pa", "moisture_pct",
                       "o2_dry_pct", "o2_wet_pct", "co2_pct", "flow_act_m3_h_input",
                       "dynamic_pressure_pa")
Field_ = Literal["co2_mg_m3", "co2_dry_pct", "flow_std_dry_m3_h", "flow_act_m3_h",
                 "velocity_m_s", "temp_c", "static_pa", "baro_pa", "moisture_pct",
                 "o2_dry_pct", "o2_wet_pct", "co2_pct", "flow_act_m3_h_input",
                 "dynamic_pressure_pa"]
# x-Cou (the period's emitted amount): the CO2 mass in kg, or the standard dry gas volume.
Cou = Literal["co2_kg", "flow_std_dry_m3", "none"]
_CODE = r"^[a-z][0-9]{5}$"  # HJ 212-2017 pollutant codes: a05001, a00000, a01011 …


class CalculationLike(Protocol):
    """What source_tags reads of the plant (compute.config's calculation)."""

    def sources(self) -> Sequence[tuple[Any, Any]]:
        """(unit, source) pairs in configuration order."""
        ...


class PlantLike(CalculationLike, Protocol):
    """What check_plant reads of the plant (server.config.PlantConfig)."""

    @property
    def hj212(self) -> Sequence[Hj212Config]:
        """The plant's platforms."""
        ...


class CodeConfig(ConfigModel):
    """What one HJ 212 pollutant code carries: a figure, its unit and scale, its decimals."""

    field: Field_
    unit: str  # the unit on the wire, for people (HJ 212 frames carry no units)
    scale: float = Field(1.0, gt=0)  # wire value = our value (in the field's unit) × scale
    decimals: int = Field(3, ge=0, le=9)
    cou: Cou = "none"
    # False for a default a plant may lack (O2, humidity): left out where the source has no
    # tag for it; an entry of the plant file's own must exist (a ConfigError otherwise).
    required: bool = True


# The defaults. CO2 in mg/m³ at the standard state, dry (HJ 212-2017 gives gaseous
# pollutants' concentrations in mg/m³ and their emitted amounts in kg); flue-gas flow in
# m³/s at the standard state, dry, its amount in m³ (annex B: 废气 a00000, m³/s, m³);
# velocity m/s, temperature °C, pressure kPa (the static pressure; we keep Pa inside),
# moisture % (volume), O2 % dry.
DEFAULT_CODES: Final[dict[str, CodeConfig]] = {
    "a05001": CodeConfig(field="co2_mg_m3", unit="mg/m3 (standard, dry)", decimals=1,
                         cou="co2_kg"),
    "a00000": CodeConfig(field="flow_std_dry_m3_h", unit="m3/s (standard, dry)",
                         scale=1 / 3600, decimals=3, cou="flow_std_dry_m3"),
    "a01011": CodeConfig(field="velocity_m_s", unit="m/s", decimals=2, required=False),
    "a01012": CodeConfig(field="temp_c", unit="degC", decimals=1, required=False),
    "a01013": CodeConfig(field="static_pa", unit="kPa", scale=0.001, decimals=3,
                         required=False),
    "a01014": CodeConfig(field="moisture_pct", unit="% (volume)", decimals=2, required=False),
    "a19001": CodeConfig(field="o2_dry_pct", unit="% (dry)", decimals=2, required=False),
}


class Hj212Config(ConfigModel):
    """One HJ 212-2017 platform this plant uploads one source's data to, over TCP."""

    id: Identifier
    host: str
    port: int = Field(ge=1, le=65535)
    mn: str = Field(min_length=1, max_length=24, pattern=r"^[0-9A-Za-z]+$")  # device MN
    pw: str = Field(min_length=1, max_length=6, pattern=r"^[0-9A-Za-z]+$")
    st: str = Field("31", pattern=r"^[0-9]{2}$")  # 31: air-pollution source
    source: Identifier | None = None  # the source this MN is; None: the plant's only one
    ack: bool = True  # ask the platform for a 9014 acknowledgement of every upload
    overtime_s: float = Field(5.0, gt=0, le=600)  # HJ 212 OverTime: wait for an ack
    recount: int = Field(3, ge=0, le=20)  # HJ 212 ReCount: resends before reconnecting
    rtd_interval_s: float = Field(30.0, ge=0)  # CN 2011 real-time data; 0: none
    min_interval_min: int = Field(1, ge=1, le=60)  # CN 2051: every N minutes, aggregated
    hour: bool = True  # CN 2061
    day: bool = True  # CN 2031
    reconnect_max_s: float = Field(60.0, gt=0)  # the reconnection backoff's cap
    connect_timeout_s: float = Field(10.0, gt=0)
    outbox_path: str | None = None  # default var/hj212-<id>-outbox.sqlite
    # Caps of the outbox during a long outage; past either, the oldest uploads are dropped
    # (an error saying what went, and a row in the outbox's `dropped` table). The platform
    # can still ask for them again (history requests are answered from the historian).
    outbox_max_frames: int = Field(200_000, ge=1)
    outbox_max_age_h: float = Field(30 * 24.0, gt=0)
    # Overrides of DEFAULT_CODES by code; None removes one.
    codes: dict[str, CodeConfig | None] = Field(default_factory=dict)
    # Run a platform simulator (server/hj212/simulator.py) on host:port in this process, as
    # device `simulate: true` runs an instrument's: the demo's, never a real platform's.
    simulate: bool = False
    # The uplink's system alarm (a comm_loss rule on device hj212_<id>, added unless the
    # plant has one): raised once uploads have waited this long without the platform
    # taking any (unreachable, or not acknowledging), cleared when it takes them again.
    alarm_after_s: float = Field(600.0, gt=0, le=7 * 86400.0)

    @field_validator("codes")
    @classmethod
    def _code_names(cls, v: dict[str, CodeConfig | None]) -> dict[str, CodeConfig | None]:
        import re

        bad = [k for k in v if not re.match(_CODE, k)]
        if bad:
            raise ValueError(f"not an HJ 212 pollutant code: {', '.join(map(repr, bad))} "
                             "(a letter and five digits, e.g. a05001)")
        return v

    @model_validator(mode="after")
    def _intervals(self) -> Hj212Config:
        if 0 < self.rtd_interval_s < 1:
            raise ValueError("rtd_interval_s: give 0 (no real-time data) or at least 1 s")
        if self.simulate and self.host not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError(f"simulate: a simulated platform listens on loopback only "
                             f"(127.0.0.1, ::1 or localhost), not {self.host!r}")
        return self

    def code_map(self) -> dict[str, CodeConfig]:
        """The defaults with this entry's overrides applied (None removes a code)."""
        out: dict[str, CodeConfig] = dict(DEFAULT_CODES)
        for code, spec in self.codes.items():
            if spec is None:
                out.pop(code, None)
            else:
                out[code] = spec
        return out

    def outbox_file(self) -> str:
        """Where this platform's outbox lives."""
        return self.outbox_path or f"var/hj212-{self.id}-outbox.sqlite"


def input_attr(field: str) -> str:
    """The CemsInputs attribute a field names (flow_act_m3_h_input: the flow input)."""
    return "flow_act_m3_h" if field == "flow_act_m3_h_input" else field


def hj212_problems(platforms: list[Hj212Config], sources: dict[str, dict[str, str | None]],
                   ) -> Problems:
    """Checks across the plant: `sources` maps each source id to its inputs' tags (None
    for a constant). Duplicate ids / MNs, unknown sources, codes naming a missing tag."""
    problems: Problems = []
    seen_ids: set[str] = set()
    seen_mn: set[tuple[str, int, str]] = set()
    for i, p in enumerate(platforms):
        path = f"hj212[{i}]"
        if p.id in seen_ids:
            problems.append((f"{path}.id", f"{p.id!r} is used by another hj212 entry"))
        seen_ids.add(p.id)
        key = (p.host, p.port, p.mn)
        if key in seen_mn:
            problems.append((f"{path}.mn", f"{p.mn!r} is sent to {p.host}:{p.port} by another "
                             "hj212 entry: one MN per monitoring point"))
        seen_mn.add(key)
        if p.source is None:
            if len(sources) != 1:
                problems.append((f"{path}.source", "required: the plant has "
                                 f"{len(sources)} sources ({', '.join(sources)})"))
                continue
            source = next(iter(sources))
        elif p.source not in sources:
            problems.append((f"{path}.source", f"unknown source {p.source!r}"))
            continue
        else:
            source = p.source
        tags = sources[source]
        for code, spec in p.codes.items():
            if spec is None or spec.field in SOURCE_FIELDS or not spec.required:
                continue
            if tags.get(input_attr(spec.field)) is None:
                problems.append((f"{path}.codes.{code}.field", f"source {source!r} has no "
                                 f"tag for {spec.field!r} (set required: false to send it "
                                 "only where there is one)"))
    return problems


def check_hj212(platforms: list[Hj212Config], sources: dict[str, dict[str, str | None]],
                origin: str = "plant configuration") -> None:
    """Raise a ConfigError naming every problem `hj212_problems` finds."""
    problems = hj212_problems(platforms, sources)
    if problems:
        raise ConfigError.many(origin, problems)


def source_tags(cfg: CalculationLike) -> dict[str, dict[str, str | None]]:
    """Each source's id → its CEMS inputs' tags (None where an input is a constant)."""
    out: dict[str, dict[str, str | None]] = {}
    for _, src in cfg.sources():
        tags: dict[str, str | None] = {}
        for name in type(src.inputs).model_fields:
            inp = getattr(src.inputs, name)
            tags[name] = getattr(inp, "tag", None)
        out[src.id] = tags
    return out


def check_plant(cfg: PlantLike) -> None:
    """The runtime's (and check-config's) check of the plant's hj212 entries."""
    check_hj212(list(cfg.hj212), source_tags(cfg))


def uplink_device(platform_id: str) -> str:
    """The device id under which a platform's uplink reports its alarm (as drivers do)."""
    return f"hj212_{platform_id}"


def uplink_rule_id(platform_id: str) -> str:
    """The comm_loss rule added for a platform's uplink when the plant has none."""
    return f"hj212_{platform_id}_uplink"


_P = TypeVar("_P", bound=AlarmPlantConfig)


def with_uplink_alarms(cfg: _P, platforms: Sequence[Hj212Config]) -> _P:
    """`cfg` with a comm_loss rule per platform whose device the plant's rules do not
    name yet (as server.influx.config.with_outbox_alarm does for the InfluxDB outbox)."""
    rules = cfg.alarms.rules
    named = {r.device for r in rules if isinstance(r, CommLossRuleConfig)} | {
        r.id for r in rules}
    added = [CommLossRuleConfig(id=uplink_rule_id(p.id), kind="comm_loss",
                                device=uplink_device(p.id),
                                name=f"HJ 212 uplink {p.id}: the platform takes no data",
                                suppress_when_stopped=False)
             for p in platforms
             if uplink_device(p.id) not in named and uplink_rule_id(p.id) not in named]
    if not added:
        return cfg
    return cfg.model_copy(update={"alarms": cfg.alarms.model_copy(
        update={"rules": [*rules, *added]})})
