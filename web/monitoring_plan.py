"""The monitoring plan generated from the plant configuration, and the daily check of the
data against it (Xinjiang guide §10.1.3, Hubei guide §6.2.3a). Pure: no I/O, no aiohttp.

Here, not in compute/, because a plan row needs the devices (the tag's driver and poll
interval, drivers/) and the instrument register (web/register.py) beside the calculation's
configuration (compute/): web is the lowest layer that sees all three.

One row per monitored parameter, with a stable id:
- `<source>.<input>`: every CEMS input of every source (velocity_m_s / flow_act_m3_h /
  dynamic_pressure_pa, co2_pct, temp_c, static_pa, baro_pa, moisture_pct, o2_*_pct);
- `<stream>.quantity`: every stream's quantity (fuel, electricity, heat, materials);
- `<stream>.<factor>`: every factor the stream's method needs (ncv_gj_t, cc_tc_gj, of,
  c_tc_t, …), from the factor version in force (a lab entry `set@labN`, or the table's);
- `<unit>.power_mw|rate_t_h`: every unit's output.

The plant file's optional `monitoring:` section sets what the configuration does not say
(the owner, the planned frequency of a measurement, the lab's frequency and method), per
parameter in `parameters:`; without it the owner is the site and a measurement's planned
frequency its device's poll interval.

The daily check (`conformity`) of a closed plant-local day, per parameter:
- capture rate of a measured parameter = readings received / readings planned · 100, from
  the historian's tag minutes (`count`: the valid samples of a minute). With e = minute
  length / planned interval readings planned per minute, a minute counts at most ⌈e⌉ of
  its readings (polling faster than planned makes up for nothing), the day plans n·e over
  its n minutes, and the rate is capped at 100 %. A 1-minute plan over 60 minutes of which
  45 have a reading: 45 / 60 = 75 %. Below the parameter's `min_capture_pct`: deviates.
- its instrument's calibration overdue at any time of the day: deviates;
- the source's substitution rule used that day (the day record's n_substituted): deviates
  when `substitution_is_deviation` (the data the plan asks for are missing);
- a factor: no version in force, or a lab factor older than its lab frequency allows
  (plus `lab_grace_days`): deviates. A constant conforms.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo

from pydantic import Field

from compute.config import (
    CalculationConfig,
    FactorMethodSubstitution,
    Input,
    MaxPreviousSubstitution,
    MrrSubstitution,
    SourceConfig,
    StreamConfig,
)
from compute.factors import FACTOR_UNITS, FactorTable, FactorVersion, required_factors
from drivers.config import DevicesConfig, InstrumentConfig, bus_key, device_address
from model.errors import FactorVersionNotFound, InvalidValueError
from model.records import PeriodRecords
from model.schema import ConfigModel, Problems
from web.register import RegisterPlantConfig, due_date, instruments_by_tag, overdue_from

LabFrequency = Literal["per_batch", "daily", "weekly", "monthly", "quarterly", "annual"]
# The longest a lab factor may stay in force, per frequency (days; per batch: no limit).
LAB_MAX_AGE_D: Final[Mapping[str, int | None]] = {
    "per_batch": None, "daily": 1, "weekly": 7, "monthly": 31, "quarterly": 92, "annual": 366}
Kind = Literal["cems", "quantity", "factor", "output"]
Obtained = Literal["measured", "constant", "lab", "factor_table", "none"]
Verdict = Literal["conforms", "deviates"]

# A CEMS input's unit of measure.
CEMS_UNITS: Final[Mapping[str, str]] = {
    "velocity_m_s": "m/s", "flow_act_m3_h": "m3/h", "dynamic_pressure_pa": "Pa",
    "co2_pct": "%", "temp_c": "°C", "static_pa": "Pa", "baro_pa": "Pa",
    "moisture_pct": "%", "o2_dry_pct": "% (dry)", "o2_wet_pct": "% (wet)"}
_QUANTITY_UNITS: Final[Mapping[str, str]] = {"t": "t", "1e4m3": "10⁴m³", "MWh": "MWh",
                                             "GJ": "GJ"}


class ParameterPlanConfig(ConfigModel):
    """What the plan says of one parameter beyond the configuration (all optional)."""

    parameter: str = Field(min_length=1)  # a plan row's id, e.g. S1.co2_pct, U1_coal.ncv_gj_t
    frequency_s: float | None = Field(None, gt=0)  # measured: planned interval of readings
    min_capture_pct: float | None = Field(None, ge=0, le=100)  # measured
    obtained: Literal["lab", "factor_table"] | None = None  # factors: how they are obtained
    lab_frequency: LabFrequency | None = None  # factors analysed by a lab
    lab_method: str = ""  # e.g. "GB/T 213-2008 (NCV)", "GB/T 476 (carbon)"
    owner: str = ""  # who answers for it (a department, a person)


class MonitoringConfig(ConfigModel):
    """The plant file's `monitoring:` section: the plan's settings and its daily check."""

    owner: str = ""  # the default owner of every parameter; empty: the site
    min_capture_pct: float = Field(90.0, ge=0, le=100)  # a measured parameter's minimum
    lab_frequency: LabFrequency = "monthly"  # of factors obtained by lab analysis
    lab_grace_days: int = Field(7, ge=0, le=366)  # a lab result may come this much later
    substitution_is_deviation: bool = True  # a day that used a source's substitution rule
    # A system alarm while the last checked day deviates (server/conformity.py). Off unless
    # asked for: a plant's first, partial day always deviates, and an alarm rule of its own
    # is one more rule in force that a plant should choose to have.
    alarm: bool = False
    parameters: list[ParameterPlanConfig] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class PlanRow:
    """One monitored parameter of the plan."""

    parameter: str  # stable id: <source>.<input>, <stream>.quantity|<factor>, <unit>.<output>
    kind: Kind
    unit: str  # the unit (accounting unit) it belongs to
    subject: str  # the source, stream or unit
    name: str  # the input, "quantity", the factor name or "power_mw"
    uom: str  # unit of measure
    obtained: Obtained
    how: str  # how it is obtained, in words
    tag: str | None  # measured: the tag
    device: str | None  # measured: the device
    frequency: str  # planned frequency, in words
    frequency_s: float | None  # measured: planned interval between readings (s)
    instrument: InstrumentConfig | None  # measured: the register's instrument
    missing_data_rule: str
    owner: str
    lab_method: str = ""
    min_capture_pct: float | None = None  # measured
    lab_frequency: str = ""  # factors analysed by a lab
    factor_version: str = ""  # factors: the version in force when the plan was made
    factor_value: float | None = None
    factor_source: str = ""  # the version's document or lab report

    @property
    def accuracy_pct(self) -> float | None:
        """The instrument's accuracy class (% of reading); None without one."""
        return None if self.instrument is None else self.instrument.accuracy_pct

    @property
    def calibration_due(self) -> date | None:
        """The plant-local date the next calibration is due; None without an instrument."""
        return None if self.instrument is None else due_date(self.instrument)


def substitution_text(src: SourceConfig) -> str:
    """A source's missing-data rule, in words (the rule's name first)."""
    sub = src.substitution
    if isinstance(sub, MrrSubstitution):
        text = (f"mrr_mean_2sigma: an invalid hour takes the mean + 2σ of the valid hours of "
                f"the {sub.lookback_h} h before (at least {sub.min_valid_hours} of them)")
    elif isinstance(sub, MaxPreviousSubstitution):
        text = (f"max_previous_n: an invalid hour takes the largest of the last {sub.n_hours} "
                f"valid hours within {sub.lookback_h} h")
    elif isinstance(sub, FactorMethodSubstitution):
        text = ("factor_method: an invalid hour takes the emission-factor-method CO2 of the "
                "unit's fuel and process streams")
    else:
        text = "none: an invalid hour stays without a value (counted missing)"
    if src.co2_from_o2 is not None:
        text += "; CO2 from O2 (F-factors, US EPA Method 19) while the CO2 analyser is out"
    return text


def _stream_rule(stream: StreamConfig) -> str:
    if stream.counter is not None:
        return ("meter counter: a delta across invalid readings counts in the hour it ends "
                "in (nothing is lost); a reset or an implausible jump is flagged; a missing "
                "quantity is entered by hand (hour or day, flag S)")
    return ("rate: hour = mean of the valid minutes' rates × 1 h; an hour without a valid "
            "minute has no quantity (no CO2): enter the hour's or day's quantity by hand "
            "(flag S)")


def _owners(cfg: CalculationConfig, monitoring: MonitoringConfig) -> str:
    return monitoring.owner or cfg.site.name_zh or cfg.site.name


@dataclass(frozen=True, slots=True)
class _Device:
    id: str
    where: str  # "modbus_tcp 127.0.0.1:15020 unit 1"
    poll_interval_s: float


def _devices(cfg: DevicesConfig) -> dict[str, _Device]:
    """Tag id → the device that reads it."""
    out: dict[str, _Device] = {}
    for d in cfg.devices:
        dev = _Device(d.id, f"{d.protocol} {bus_key(d)} {device_address(d)}", d.poll_interval_s)
        for t in d.tags:
            out[t.id] = dev
    return out


def _interval_text(seconds: float) -> str:
    if seconds >= 60 and math.isclose(seconds % 60, 0.0, abs_tol=1e-9):
        return f"every {seconds / 60:g} min"
    return f"every {seconds:g} s"


def monitoring_plan(cfg: RegisterPlantConfig, monitoring: MonitoringConfig,
                    factors: FactorTable, at: datetime) -> tuple[PlanRow, ...]:
    """The plan's rows in configuration order (per unit: output, sources' inputs, streams'
    quantities and factors); the factors as the versions in force at the UTC instant `at`."""
    owner = _owners(cfg, monitoring)
    overrides = {p.parameter: p for p in monitoring.parameters}
    devices = _devices(cfg)
    instruments = instruments_by_tag(cfg)
    rows: list[PlanRow] = []

    def measured(parameter: str, kind: Kind, unit: str, subject: str, name: str, uom: str,
                 inp: Input | None, tag: str | None, rule: str) -> None:
        o = overrides.get(parameter)
        who = (o.owner if o is not None and o.owner else owner)
        if tag is None:
            value = inp.value if inp is not None and inp.value is not None else math.nan
            rows.append(PlanRow(parameter, kind, unit, subject, name, uom, "constant",
                                f"constant {value:g} {uom}", None, None, "—", None, None,
                                "none needed: a configured constant", who))
            return
        dev = devices.get(tag)
        freq_s = o.frequency_s if o is not None and o.frequency_s is not None else (
            dev.poll_interval_s if dev is not None else None)
        how = (f"measured: tag {tag} on device {dev.id} ({dev.where})" if dev is not None
               else f"measured: tag {tag}")
        planned = "—" if freq_s is None else (
            _interval_text(freq_s) + (" (planned)" if o is not None and o.frequency_s
                                      else " (device poll)"))
        capture = (o.min_capture_pct if o is not None and o.min_capture_pct is not None
                   else monitoring.min_capture_pct)
        rows.append(PlanRow(parameter, kind, unit, subject, name, uom, "measured", how, tag,
                            None if dev is None else dev.id, planned, freq_s,
                            instruments.get(tag), rule, who,
                            lab_method=o.lab_method if o is not None else "",
                            min_capture_pct=capture))

    for u in cfg.units:
        out, key = u.output.rate, u.output.key
        measured(f"{u.id}.{key}", "output", u.id, u.id, key,
                 "MW" if key == "power_mw" else "t/h", out, out.tag,
                 "intensity not evaluated without a valid output; the hour's or day's "
                 "output is entered by hand (flag S)")
        for src in u.sources:
            rule = substitution_text(src)
            for name in type(src.inputs).model_fields:
                inp = getattr(src.inputs, name)
                if not isinstance(inp, Input):
                    continue
                uom = CEMS_UNITS.get(name, "")
                if name == "co2_pct":
                    uom = f"% ({src.inputs.co2_basis})"
                measured(f"{src.id}.{name}", "cems", u.id, src.id, name, uom, inp, inp.tag,
                         rule)
        for st in u.streams:
            q_uom = _QUANTITY_UNITS[st.quantity_unit]
            if st.rate_per_h is not None:
                measured(f"{st.id}.quantity", "quantity", u.id, st.id, "quantity",
                         f"{q_uom}/h", st.rate_per_h, st.rate_per_h.tag, _stream_rule(st))
            elif st.counter is not None:
                measured(f"{st.id}.quantity", "quantity", u.id, st.id, "quantity",
                         f"{q_uom} (counter × {st.counter.quantity_per_count:g})", None,
                         st.counter.tag, _stream_rule(st))
            rows.extend(_factor_rows(st, u.id, factors, at, monitoring, overrides, owner))
    return tuple(rows)


def _factor_rows(st: StreamConfig, unit: str, factors: FactorTable, at: datetime,
                 monitoring: MonitoringConfig, overrides: Mapping[str, ParameterPlanConfig],
                 owner: str) -> list[PlanRow]:
    """A row per factor the stream's method needs, from the version in force at `at`."""
    version: FactorVersion | None
    try:
        version = factors.at(st.factors, at)
    except FactorVersionNotFound:
        version = None
    rows: list[PlanRow] = []
    for name in required_factors(st.calc_method, st.quantity_unit, stream=st.id):
        parameter = f"{st.id}.{name}"
        o = overrides.get(parameter)
        lab_entry = version is not None and "@lab" in version.id
        obtained: Obtained = ("none" if version is None else
                              "lab" if lab_entry or (o is not None and o.obtained == "lab")
                              else "factor_table")
        value = None if version is None else version.values.get(name)
        if version is None:
            how = f"no version of factor set {st.factors!r} in force"
        elif lab_entry:
            how = f"lab entry {version.id} ({version.source})"
        elif value is None:
            how = f"factor table {version.id}: method default (not in the version)"
        else:
            how = f"factor table {version.id} ({version.source})"
        lab_freq = ""
        if obtained == "lab":
            lab_freq = (o.lab_frequency if o is not None and o.lab_frequency is not None
                        else monitoring.lab_frequency)
            frequency = lab_freq.replace("_", " ")
        else:
            frequency = "per factor version (when the table changes)"
        rows.append(PlanRow(
            parameter, "factor", unit, st.id, name, FACTOR_UNITS.get(name, ""), obtained, how,
            None, None, frequency, None, None,
            "the version in force before stays in force until a newer one (the factor "
            "table's, or a lab entry's factors it does not give)",
            o.owner if o is not None and o.owner else owner,
            lab_method=o.lab_method if o is not None else "", lab_frequency=lab_freq,
            factor_version="" if version is None else version.id, factor_value=value,
            factor_source="" if version is None else version.source))
    return rows


def monitoring_problems(cfg: RegisterPlantConfig, monitoring: MonitoringConfig,
                        factors: FactorTable | None = None) -> Problems:
    """Checks of `monitoring.parameters` against the plan: each names a parameter of it
    once, with settings that apply to its kind."""
    # The ids do not depend on the versions in force: any instant does.
    if not monitoring.parameters:
        return []
    plan = {r.parameter: r for r in monitoring_plan(
        cfg, MonitoringConfig(), factors or FactorTable(()), datetime(2000, 1, 1, tzinfo=UTC))}
    problems: Problems = []
    seen: dict[str, int] = {}
    for i, p in enumerate(monitoring.parameters):
        path = f"monitoring.parameters[{i}]"
        row = plan.get(p.parameter)
        if row is None:
            some = ", ".join(list(plan)[:8])
            problems.append((f"{path}.parameter", f"no parameter {p.parameter!r} in the plan "
                             f"(<source>.<input>, <stream>.quantity, <stream>.<factor>, "
                             f"<unit>.power_mw|rate_t_h; e.g. {some})"))
            continue
        if p.parameter in seen:
            problems.append((f"{path}.parameter", f"{p.parameter!r} is planned twice (also "
                             f"monitoring.parameters[{seen[p.parameter]}])"))
        seen.setdefault(p.parameter, i)
        factor = row.kind == "factor"
        for key in ("frequency_s", "min_capture_pct"):
            if getattr(p, key) is not None and (factor or row.obtained == "constant"):
                problems.append((f"{path}.{key}", f"only for a measured parameter; "
                                 f"{p.parameter} is {'a factor' if factor else 'a constant'}"))
        for key in ("obtained", "lab_frequency"):
            if getattr(p, key) is not None and not factor:
                problems.append((f"{path}.{key}", f"only for a factor; {p.parameter} is "
                                 f"{'measured' if row.obtained == 'measured' else 'a constant'}"))
    return problems


# ---------------------------------------------------------------------------- conformity


@dataclass(frozen=True, slots=True)
class ConformityRow:
    """One parameter's check on one plant-local day."""

    parameter: str
    kind: str
    subject: str
    tag: str | None
    frequency_s: float | None
    expected_n: float | None  # readings planned in the day
    received_n: float | None  # readings counted (each minute at most ⌈e⌉)
    capture_pct: float | None
    min_capture_pct: float | None
    instrument_state: str  # ok, overdue, unregistered, or "" (no instrument needed)
    substituted_hours_h: int
    substitution_rule: str
    factor_version: str
    verdict: Verdict
    reasons: tuple[str, ...]  # why it deviates (empty when it conforms)


@dataclass(frozen=True, slots=True)
class DayConformity:
    """The check of one closed plant-local day against the plan."""

    day: date  # plant-local
    start: datetime  # UTC
    end: datetime  # UTC, exclusive
    minutes: int  # calculation minutes in the day
    rows: tuple[ConformityRow, ...]

    @property
    def deviations(self) -> tuple[ConformityRow, ...]:
        """The rows that deviate."""
        return tuple(r for r in self.rows if r.verdict == "deviates")

    @property
    def conforms(self) -> bool:
        """Whether every parameter conforms."""
        return not self.deviations

    def summary(self) -> str:
        """One line: the day's verdict and its first deviations."""
        dev = self.deviations
        if not dev:
            return f"monitoring plan: {self.day.isoformat()} conforms ({len(self.rows)} parameters)"
        first = "; ".join(f"{r.parameter}: {r.reasons[0]}" for r in dev[:3])
        more = f"; and {len(dev) - 3} more" if len(dev) > 3 else ""
        return (f"monitoring plan: {self.day.isoformat()} deviates in {len(dev)} of "
                f"{len(self.rows)} parameters: {first}{more}")


def capture(counts: Mapping[int, int], minutes: int, minute_s: float,
            frequency_s: float) -> tuple[float, float, float]:
    """(received, expected, capture %) of one tag over `minutes` calculation minutes.

    `counts`: valid samples of a stored minute → how many minutes had that many (minutes
    not stored count as 0). e = minute_s / frequency_s readings are planned per minute;
    a minute counts at most ⌈e⌉ readings; the rate is capped at 100 %.
    """
    per_minute = minute_s / frequency_s
    cap = math.ceil(per_minute - 1e-9)
    received = float(sum(min(c, cap) * n for c, n in counts.items() if c > 0))
    expected = minutes * per_minute
    pct = 0.0 if expected <= 0 else min(100.0, 100.0 * received / expected)
    return received, expected, pct


def _substitutions(day: PeriodRecords | None) -> dict[str, tuple[int, str]]:
    if day is None:
        return {}
    return {s.source: (s.n_substituted, s.substitution_rule) for s in day.sources}


def conformity(cfg: RegisterPlantConfig, monitoring: MonitoringConfig,
               plan: Sequence[PlanRow], day: date, start: datetime, end: datetime,
               minute_s: float, tag_counts: Mapping[str, Mapping[int, int]],
               day_record: PeriodRecords | None, factors: FactorTable) -> DayConformity:
    """Check the day [start, end) (UTC; plant-local `day`) against the plan.

    `tag_counts`: per tag, the histogram of its stored minutes' valid-sample counts;
    `day_record`: the stored day (its sources' n_substituted); `factors`: the factor table
    with the lab entries (the versions in force at the day's last instant are checked).
    """
    tz = ZoneInfo(cfg.site.timezone)
    minutes = round((end - start).total_seconds() / minute_s)
    subs = _substitutions(day_record)
    last = end - timedelta(microseconds=1)
    rows: list[ConformityRow] = []
    for r in plan:
        reasons: list[str] = []
        expected = received = pct = None
        state = ""
        n_sub, rule = subs.get(r.subject, (0, "")) if r.kind == "cems" else (0, "")
        version = ""
        if r.obtained == "measured" and r.tag is not None:
            if r.frequency_s is not None:
                received, expected, pct = capture(tag_counts.get(r.tag, {}), minutes,
                                                  minute_s, r.frequency_s)
                limit = r.min_capture_pct if r.min_capture_pct is not None else 0.0
                if pct < limit:
                    reasons.append(f"capture {pct:.1f} % below the planned {limit:g} % "
                                   f"({received:g} of {expected:g} readings, "
                                   f"{_interval_text(r.frequency_s)})")
            if r.instrument is None:
                state = "unregistered"
            elif overdue_from(r.instrument, tz) < end:
                state = "overdue"
                reasons.append(f"instrument {r.instrument.serial} calibration overdue (due "
                               f"{due_date(r.instrument).isoformat()})")
            else:
                state = "ok"
            if n_sub > 0 and monitoring.substitution_is_deviation:
                reasons.append(f"source {r.subject}: {n_sub} h substituted ({rule or 'rule'})")
        elif r.kind == "factor":
            stream = r.subject
            factor_set = next((s.factors for _, s in cfg.streams() if s.id == stream), "")
            try:
                v = factors.at(factor_set, last)
            except FactorVersionNotFound:
                reasons.append(f"no version of factor set {factor_set!r} in force")
            else:
                version = v.id
                max_age = LAB_MAX_AGE_D.get(r.lab_frequency) if r.obtained == "lab" else None
                if max_age is not None:
                    age_d = (end - v.effective_from).total_seconds() / 86400.0
                    allowed = max_age + monitoring.lab_grace_days
                    if age_d > allowed:
                        reasons.append(f"lab analysis {r.lab_frequency}: version {v.id} in "
                                       f"force since {v.effective_from.astimezone(tz).date()} "
                                       f"is {age_d:.0f} d old (at most {allowed} d)")
        rows.append(ConformityRow(r.parameter, r.kind, r.subject, r.tag, r.frequency_s,
                                  expected, received, pct, r.min_capture_pct, state, n_sub,
                                  rule, version, "deviates" if reasons else "conforms",
                                  tuple(reasons)))
    return DayConformity(day, start, end, minutes, tuple(rows))


# ---------------------------------------------------------------------------- JSON


def parse_day(text: str) -> date:
    """A plant-local date YYYY-MM-DD; InvalidValueError naming the text otherwise."""
    shown = text if len(text) <= 20 else text[:20] + "…"
    try:
        if len(text) != 10:
            raise ValueError(text)
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidValueError(f"day must be a plant-local date YYYY-MM-DD, not {shown!r}"
                                ) from None


def plan_row_json(r: PlanRow) -> dict[str, Any]:
    """A plan row as the API answers it."""
    inst = r.instrument
    return {"parameter": r.parameter, "kind": r.kind, "unit": r.unit, "subject": r.subject,
            "name": r.name, "uom": r.uom, "obtained": r.obtained, "how": r.how, "tag": r.tag,
            "device": r.device, "frequency": r.frequency, "frequency_s": r.frequency_s,
            "instrument": None if inst is None else {
                "serial": inst.serial, "model": inst.model, "accuracy_pct": inst.accuracy_pct,
                "calibrated_on": inst.calibrated_on.isoformat(),
                "calibration_due": due_date(inst).isoformat()},
            "missing_data_rule": r.missing_data_rule, "owner": r.owner,
            "lab_method": r.lab_method, "lab_frequency": r.lab_frequency,
            "min_capture_pct": r.min_capture_pct, "factor_version": r.factor_version,
            "factor_value": r.factor_value, "factor_source": r.factor_source}


def conformity_json(c: DayConformity) -> dict[str, Any]:
    """A day's check as the API answers it."""
    def utc(t: datetime) -> str:
        return t.isoformat().replace("+00:00", "Z")

    return {"day": c.day.isoformat(), "start": utc(c.start), "end": utc(c.end),
            "minutes": c.minutes, "conforms": c.conforms, "deviations": len(c.deviations),
            "summary": c.summary(),
            "parameters": [{
                "parameter": r.parameter, "kind": r.kind, "subject": r.subject, "tag": r.tag,
                "frequency_s": r.frequency_s, "expected_n": r.expected_n,
                "received_n": r.received_n, "capture_pct": r.capture_pct,
                "min_capture_pct": r.min_capture_pct, "instrument_state": r.instrument_state,
                "substituted_hours_h": r.substituted_hours_h,
                "substitution_rule": r.substitution_rule, "factor_version": r.factor_version,
                "verdict": r.verdict, "reasons": list(r.reasons)} for r in c.rows]}
