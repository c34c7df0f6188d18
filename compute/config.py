"""Configuration schema of the calculation: site and clock, CEMS sources, factor-method
streams, substitution rules, the allowance and the factor table's versions.

compute/plan.py turns it into the plain plan the calculators take.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AwareDatetime, Field, field_validator

from compute.factors import (
    FactorTable,
    FactorVersion,
    Method,
    QuantityUnit,
    co2_t_per_unit,
    gas_factor_problem,
)
from compute.gasconfig import GwpConfig
from compute.qa import QaConfig
from compute.substitute import FACTOR_METHOD, MAX_PREVIOUS_N, MRR_MEAN_2SIGMA, SubstitutionRule
from model.errors import ConfigError, FactorVersionNotFound
from model.schema import ConfigModel, Identifier, Problems


class SiteConfig(ConfigModel):
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


class ClockConfig(ConfigModel):
    """Length of the calculation minute and the validity rules of minutes, hours and days."""

    minute_seconds: float = Field(60.0, gt=0, le=3600)
    min_samples_per_minute: int = Field(12, ge=1)
    min_valid_minutes_per_hour: int = Field(45, ge=1, le=60)  # HJ 75-2017
    min_valid_hours_per_day: int = Field(20, ge=1, le=24)
    # A minute closes as soon as every device has polled past its end; a device that has
    # not by then (a slow meter, a bus stalled in a timeout) is waited for this long at
    # most, and its later readings count as late.
    close_grace_s: float = Field(2.0, ge=0, le=30)


class ConstantsConfig(ConfigModel):
    """Physical constants of DESIGN.md; all configurable."""

    t0_k: float = Field(273.15, gt=0)
    p0_pa: float = Field(101325.0, gt=0)
    co2_density_kg_m3: float = Field(1.964, gt=0)


class Input(ConfigModel):
    """A calculation input: a tag, or a constant value."""

    tag: str | None = None
    value: float | None = None

    def model_post_init(self, _ctx: Any) -> None:
        """Require exactly one of tag and value."""
        if (self.tag is None) == (self.value is None):
            raise ValueError("give either 'tag' or 'value'")


FLOW_INPUTS = ("velocity_m_s", "flow_act_m3_h", "dynamic_pressure_pa")


class CemsInputs(ConfigModel):
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


class PitotConfig(ConfigModel):
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


class FFactorConfig(ConfigModel):
    """Fuel F-factors for CO2 from O2 while the CO2 analyser is out (US EPA Method 19).

    CO2 % dry = 100 · Fc/Fd · (20.9 − O2 % dry)/20.9. Only the ratio matters: give both
    in one unit. Defaults: bituminous coal, Method 19 table 19-2, Fd 9780 dscf/MMBtu
    and Fc 1800 scf/MMBtu (2.63e-7 dsm³/J and 0.484e-7 sm³/J).
    """

    fd: float = Field(9780.0, gt=0)
    fc: float = Field(1800.0, gt=0)


MAX_LOOKBACK_H = 8784  # one leap year of hours: the longest history a rule may look at


class NoSubstitution(ConfigModel):
    """Invalid hours stay without a value (they count as missing in the day)."""

    rule: Literal["none"]

    def plain(self) -> SubstitutionRule | None:
        """No substitute."""
        return None


class MrrSubstitution(ConfigModel):
    """EU MRR annex VIII eq. 4: mean + 2σ of the valid hours in the `lookback_h` before."""

    rule: Literal["mrr_mean_2sigma"]
    lookback_h: int = Field(ge=2, le=MAX_LOOKBACK_H)
    min_valid_hours: int = Field(2, ge=2)

    def plain(self) -> SubstitutionRule | None:
        """The rule object compute.substitute applies."""
        return SubstitutionRule(MRR_MEAN_2SIGMA, lookback_h=self.lookback_h,
                                min_valid=self.min_valid_hours)


class MaxPreviousSubstitution(ConfigModel):
    """The maximum of the last `n_hours` valid hours within the `lookback_h` before."""

    rule: Literal["max_previous_n"]
    n_hours: int = Field(ge=1, le=MAX_LOOKBACK_H)
    lookback_h: int = Field(ge=1, le=MAX_LOOKBACK_H)
    min_valid_hours: int | None = Field(None, ge=1)  # None: all n_hours

    def plain(self) -> SubstitutionRule | None:
        """The rule object compute.substitute applies."""
        return SubstitutionRule(MAX_PREVIOUS_N, n=self.n_hours, lookback_h=self.lookback_h,
                                min_valid=self.min_valid_hours)


class FactorMethodSubstitution(ConfigModel):
    """The hour's emission-factor-method CO2 of the unit's fuel and process streams."""

    rule: Literal["factor_method"]

    def plain(self) -> SubstitutionRule | None:
        """The rule object compute.substitute applies."""
        return SubstitutionRule(FACTOR_METHOD)


SubstitutionConfig = Annotated[
    NoSubstitution | MrrSubstitution | MaxPreviousSubstitution | FactorMethodSubstitution,
    Field(discriminator="rule")]


class SourceConfig(ConfigModel):
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
    # CEMS quality assurance (HJ 75-2017): calibration status tag, drift and RA limits.
    qa: QaConfig | None = None


OutputUnit = Literal["MWh", "t"]


class UnitOutputConfig(ConfigModel):
    """How a unit's product output is measured: electric power (MW, an hour's output in
    MWh, intensity t CO2/MWh) or a product rate (t/h of hot metal, lime, clinker …, an
    hour's output in t, intensity t CO2/t). Exactly one of them."""

    power_mw: Input | None = None
    rate_t_h: Input | None = None

    def model_post_init(self, _ctx: Any) -> None:
        """Require exactly one output measurement."""
        if (self.power_mw is None) == (self.rate_t_h is None):
            raise ValueError("give either 'power_mw' or 'rate_t_h'")

    @property
    def rate(self) -> Input:
        """The output's input: MW, or t/h (an hour's output is its mean × 1 h)."""
        rate = self.power_mw if self.power_mw is not None else self.rate_t_h
        assert rate is not None
        return rate

    @property
    def key(self) -> str:
        """The configured key of the output: power_mw or rate_t_h."""
        return "power_mw" if self.power_mw is not None else "rate_t_h"

    @property
    def unit(self) -> OutputUnit:
        """Unit of an hour's output: MWh (power) or t (product)."""
        return "MWh" if self.power_mw is not None else "t"


class CounterConfig(ConfigModel):
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
                     "process", "carbon_input", "carbon_output", "clinker", "lime",
                     "electricity_export", "heat_export", "ghg", "electricity_green"]
# Per kind: the unit of the quantity, and the factor method (fuels may use measured carbon).
# carbon_input / carbon_output: the materials of a carbon balance (factor c_tc_t; outputs
# count negative); clinker / lime: carbonate CO2 from the product's CaO / MgO content;
# electricity_export / heat_export: exports, counted negative (net purchase accounted).
STREAM_KINDS: dict[str, tuple[QuantityUnit, Method]] = {
    "solid_fuel": ("t", "ncv_cc_of"),
    "liquid_fuel": ("t", "ncv_cc_of"),
    "gaseous_fuel": ("1e4m3", "ncv_cc_of"),
    "electricity": ("MWh", "electricity"),
    "heat": ("GJ", "heat"),
    "process": ("t", "process"),
    "carbon_input": ("t", "carbon_input"),
    "carbon_output": ("t", "carbon_output"),
    "clinker": ("t", "carbonate_oxides"),
    "lime": ("t", "carbonate_oxides"),
    "electricity_export": ("MWh", "electricity_export"),
    "heat_export": ("GJ", "heat_export"),
    # Green electricity bought, kept apart from the grid purchase (its own factor, 0 where
    # the rules count it zero-emission); not part of the net grid purchase.
    "electricity_green": ("MWh", "electricity_green"),
    # Another greenhouse gas (`gas`: CH4, CH4_fossil, N2O or one of gwp.gases), in t of an
    # activity × ef_t_gas_t, or measured itself in t/h with ef_t_gas_t 1; no CO2.
    "ghg": ("t", "ghg"),
}
INDIRECT_KINDS = ("electricity", "heat", "electricity_export", "heat_export",
                  "electricity_green")


class StreamConfig(ConfigModel):
    """A fuel, material or energy stream of a unit, accounted by the emission-factor method.

    The quantity is in t (solid and liquid fuels, process, carbon-balance materials,
    clinker and lime), 10⁴ m³ (gaseous fuels), MWh (electricity purchased or exported)
    or GJ (heat purchased or exported), always ≥ 0; carbon outputs and exports give a
    negative CO2. It is measured by `rate_per_h`
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
    gas: Identifier | None = None  # kind ghg: the gas (CH4, CH4_fossil, N2O, gwp.gases)

    def model_post_init(self, _ctx: Any) -> None:
        """Require exactly one measurement, a fuel method only on fuels, a gas on ghg."""
        if (self.rate_per_h is None) == (self.counter is None):
            raise ValueError("give either 'rate_per_h' or 'counter'")
        if self.method is not None and not self.kind.endswith("_fuel"):
            raise ValueError(f"'method' only applies to fuels, not to kind {self.kind!r}")
        if (self.gas is None) == (self.kind == "ghg"):
            raise ValueError("kind 'ghg' needs 'gas' (e.g. CH4, N2O, SF6)" if self.gas is None
                             else f"'gas' only applies to kind 'ghg', not to {self.kind!r}")

    @property
    def quantity_unit(self) -> QuantityUnit:
        """Unit of the stream's quantity: t, 1e4m3, MWh or GJ."""
        return STREAM_KINDS[self.kind][0]

    @property
    def calc_method(self) -> Method:
        """The compute.factors method of the stream's kind (fuels: ncv_cc_of or measured)."""
        return self.method or STREAM_KINDS[self.kind][1]

    @property
    def direct(self) -> bool:
        """Whether the stream's CO2 is the unit's own (fuels, process, carbon balance,
        carbonates), not electricity or heat purchased or exported."""
        return self.kind not in INDIRECT_KINDS


class UnitConfig(ConfigModel):
    """A generating / production unit with its emission sources and factor-method streams.

    `basis` is how the unit's CO2 is accounted (UnitPeriod.co2_t): `cems`, its sources'
    measured CO2; `factor`, its direct streams by the emission-factor method (a blast
    furnace's carbon balance, a lime kiln's carbonates: no stack monitor). Default: cems
    with sources, else factor. A factor unit may have no sources.
    """

    id: Identifier
    name: str
    name_zh: str = ""
    output: UnitOutputConfig
    basis: Literal["cems", "factor"] | None = None
    sources: list[SourceConfig] = Field(default_factory=list)
    streams: list[StreamConfig] = Field(default_factory=list)
    # The process (accounting unit) this facility belongs to: one of `processes`; required
    # when `processes` is given, else the unit is its own process.
    process: Identifier | None = None

    @property
    def accounting_basis(self) -> Literal["cems", "factor"]:
        """The configured basis, or its default: cems with sources, else factor."""
        if self.basis is not None:
            return self.basis
        return "cems" if self.sources else "factor"


class ProcessConfig(ConfigModel):
    """A process (accounting unit) of the site: the units naming it are its facilities."""

    id: Identifier
    name: str
    name_zh: str = ""
    kind: Identifier | None = None  # e.g. ironmaking, lime, power


class AllowanceConfig(ConfigModel):
    """The site's annual allowance (t CO2) and the carbon price a shortfall would cost."""

    annual_t: float = Field(0.0, ge=0)
    carbon_price_cny_t: float = Field(0.0, ge=0)


class ReconciliationConfig(ConfigModel):
    """Daily CEMS vs emission-factor method check: |CEMS − factor| / factor beyond the limit."""

    limit_pct: float = Field(gt=0, le=100)


class CalculationConfig(ConfigModel):
    """The calculation's part of a plant file: site, clock, constants, units and their
    sources and streams, the allowance, the factor table and the daily reconciliation."""

    site: SiteConfig
    clock: ClockConfig = ClockConfig()
    constants: ConstantsConfig = ConstantsConfig()
    units: list[UnitConfig] = Field(default_factory=list)
    # site → process → facility (compute/boundaries.py); None: each unit its own process.
    processes: list[ProcessConfig] | None = None
    allowance: AllowanceConfig = AllowanceConfig()
    factor_table: str | None = None  # YAML of factor versions, relative to the plant file
    reconciliation: ReconciliationConfig | None = None
    gwp: GwpConfig = GwpConfig()  # CO2e: GWP sets in force, other gases (compute/gasconfig.py)

    def sources(self) -> list[tuple[UnitConfig, SourceConfig]]:
        """All sources with the unit they belong to, in configuration order."""
        return [(u, s) for u in self.units for s in u.sources]

    def streams(self) -> list[tuple[UnitConfig, StreamConfig]]:
        """All factor-method streams with the unit they belong to, in configuration order."""
        return [(u, s) for u in self.units for s in u.streams]

    def input_tags(self) -> list[tuple[str, str]]:
        """(key path, tag id) of every input that names a tag: what the drivers must provide."""
        out: list[tuple[str, str]] = []

        def add(path: str, inp: Input | None) -> None:
            if inp is not None and inp.tag is not None:
                out.append((f"{path}.tag", inp.tag))

        for i, unit in enumerate(self.units):
            upath = f"units[{i}]"
            add(f"{upath}.output.{unit.output.key}", unit.output.rate)
            for j, src in enumerate(unit.sources):
                for name in CemsInputs.model_fields:
                    inp = getattr(src.inputs, name)
                    if isinstance(inp, Input):
                        add(f"{upath}.sources[{j}].inputs.{name}", inp)
                if src.qa is not None and src.qa.calibration_tag is not None:
                    out.append((f"{upath}.sources[{j}].qa.calibration_tag",
                                src.qa.calibration_tag))
                for a, auto in enumerate(src.qa.auto if src.qa is not None else ()):
                    apath = f"{upath}.sources[{j}].qa.auto[{a}]"
                    out.append((f"{apath}.reading_tag", auto.reading_tag))
                    if auto.status_tag is not None:
                        out.append((f"{apath}.status_tag", auto.status_tag))
            for j, stream in enumerate(unit.streams):
                tpath = f"{upath}.streams[{j}]"
                add(f"{tpath}.rate_per_h", stream.rate_per_h)
                if stream.counter is not None:
                    out.append((f"{tpath}.counter.tag", stream.counter.tag))
        return out


def calculation_problems(cfg: CalculationConfig) -> Problems:
    """Checks between the parts of the calculation's configuration; (key path, problem)."""
    problems: Problems = []
    ids: dict[str, str] = {}

    def unique(path: str, ident: str) -> None:
        if ident in ids:
            problems.append((f"{path}.id", f"duplicate id {ident!r} (also {ids[ident]})"))
        ids.setdefault(ident, path)

    for i, unit in enumerate(cfg.units):
        upath = f"units[{i}]"
        unique(upath, unit.id)
        for j, src in enumerate(unit.sources):
            spath = f"{upath}.sources[{j}]"
            unique(spath, src.id)
            problems.extend(_cems_source_problems(spath, src))
            problems.extend(_substitution_problems(f"{spath}.substitution", src, unit))
        for j, stream in enumerate(unit.streams):
            unique(f"{upath}.streams[{j}]", stream.id)
            problems.extend(_gas_problems(f"{upath}.streams[{j}]", stream, cfg))
        direct = any(s.direct for s in unit.streams)
        if unit.accounting_basis == "cems" and not unit.sources:
            problems.append((f"{upath}.basis", f"unit {unit.id!r} is accounted by CEMS but "
                             "has no 'sources': add its stacks, or set 'basis: factor'"))
        elif unit.accounting_basis == "factor" and not direct:
            problems.append((f"{upath}.streams", f"unit {unit.id!r} is accounted by the "
                             "emission-factor method ('basis: factor') but has no fuel, "
                             "process, carbon-balance or carbonate stream"))
        kinds = {s.kind for s in unit.streams}
        if "carbon_output" in kinds and "carbon_input" not in kinds:
            j = next(j for j, s in enumerate(unit.streams) if s.kind == "carbon_output")
            problems.append((f"{upath}.streams[{j}].kind", "a carbon_output stream needs a "
                             f"carbon_input stream on unit {unit.id!r}: the carbon balance "
                             "is Σ carbon in − Σ carbon out"))
        if cfg.reconciliation is None and direct and unit.sources:
            problems.append(("reconciliation", f"unit {unit.id!r} has CEMS sources and fuel "
                             "or process streams, reconciled daily: set "
                             "'reconciliation.limit_pct'"))
    problems.extend(_process_problems(cfg))
    if cfg.streams() and cfg.factor_table is None:
        problems.append(("factor_table", "streams need a factor table: set 'factor_table' to "
                         "a YAML file of factor versions (e.g. factors.yaml)"))
    return problems


def _process_problems(cfg: CalculationConfig) -> Problems:
    """Checks of the boundary tree: unique processes, each unit in a known one, none empty."""
    if cfg.processes is None:
        return [(f"units[{i}].process", f"unit {u.id!r} names process {u.process!r} but "
                 "there is no top-level 'processes' list: add it, or remove 'process'")
                for i, u in enumerate(cfg.units) if u.process is not None]
    problems: Problems = []
    known: dict[str, int] = {}
    for k, proc in enumerate(cfg.processes):
        if proc.id in known:
            problems.append((f"processes[{k}].id", f"duplicate process id {proc.id!r} (also "
                             f"processes[{known[proc.id]}])"))
        known.setdefault(proc.id, k)
    names = ", ".join(known) or "none"
    for i, unit in enumerate(cfg.units):
        if unit.process is None:
            problems.append((f"units[{i}].process", f"unit {unit.id!r} must name its process: "
                             f"one of the 'processes' ids ({names})"))
        elif unit.process not in known:
            problems.append((f"units[{i}].process", f"unknown process {unit.process!r} "
                             f"(processes: {names})"))
    used = {u.process for u in cfg.units}
    problems.extend((f"processes[{k}]", f"process {p.id!r} has no units: name it in a unit's "
                     "'process', or remove it") for k, p in enumerate(cfg.processes)
                    if p.id not in used and known[p.id] == k)
    return problems


def _gas_problems(path: str, stream: StreamConfig, cfg: CalculationConfig) -> Problems:
    """A ghg stream's gas must be known and have a GWP in every set in use."""
    if stream.gas is None:
        return []
    if stream.gas not in cfg.gwp.gas_ids:
        return [(f"{path}.gas", f"unknown gas {stream.gas!r}: one of "
                 f"{', '.join(cfg.gwp.gas_ids)}, or list it in 'gwp.gases' with its GWPs")]
    k = next((k for k, g in enumerate(cfg.gwp.gases) if g.gas == stream.gas), None)
    missing = cfg.gwp.missing_gwp(stream.gas)
    if k is not None and missing:
        return [(f"gwp.gases[{k}].gwp", f"gas {stream.gas!r} (stream {stream.id!r}) has no "
                 f"GWP for set(s) {', '.join(missing)} in use")]
    return []


def _substitution_problems(path: str, src: SourceConfig,
                           unit: UnitConfig) -> Problems:
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


def _cems_source_problems(spath: str, src: SourceConfig) -> Problems:
    """Checks between a CEMS source's parameters and its inputs; (key path, problem)."""
    problems: Problems = []
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


class FactorVersionConfig(ConfigModel):
    """One dated set of emission factors of one factor stream."""

    id: str = Field(min_length=1)
    stream: Identifier
    effective_from: AwareDatetime
    source: str = Field(min_length=1)  # the document or lab report the values come from
    factors: dict[str, float] = Field(min_length=1)  # names of compute.factors.FACTOR_UNITS


class FactorFileConfig(ConfigModel):
    """A factor table file: every version of every factor stream."""

    versions: list[FactorVersionConfig] = Field(min_length=1)


def factor_table(parsed: FactorFileConfig, origin: str) -> FactorTable:
    """The FactorTable of a validated factor file; ConfigError naming `origin` and the key."""
    versions = []
    problems: Problems = []
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


def stream_factor_problems(cfg: CalculationConfig, table: FactorTable,
                           table_path: Path) -> Problems:
    """Each stream's factor stream must exist and every version hold the factors it needs."""

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
                try:  # the factors the method needs, and their values together (CaO ≥ CaO_raw)
                    co2_t_per_unit(v, stream.calc_method, stream.quantity_unit)
                except ValueError as exc:
                    problems.append((path, f"{table_path}: {exc}"))
                    break
                gas_problem = gas_factor_problem(v, stream.calc_method, stream.quantity_unit)
                if gas_problem is not None:  # CH4 / N2O per TJ need the fuel's NCV
                    problems.append((path, f"{table_path}: {gas_problem}"))
                    break
    return problems
