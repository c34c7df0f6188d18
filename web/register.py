"""The instrument register: every tag with its instrument, calibration state and the CO2
uncertainty of each CEMS source from the instruments entering it. No I/O, no aiohttp.

The instrument fields come from each tag's `instrument:` block (drivers/config.py); the
register's own settings from the plant's `instruments:` section (InstrumentRegisterConfig).
Dates at the edges are plant-local calendar dates (the calibration certificate's date, the
due date an engineer plans by); inside, "overdue" is a UTC instant: the start of the
plant-local day after the due date (`overdue_from`). On the due date itself an instrument
is `due_soon` (0 days left); from the next day on it is `overdue`.

Uncertainty (convention, sensitivity table and the math in compute/uncertainty.py, which
the unit and site totals share; here the configuration's instruments are fed to it):
accuracy class a → u = a/√3, combined as the root-sum-square of sensitivity × u over the
inputs of G = C·ρ·Q_sd. Sensitivities (the input's exponent in the product):
  co2_pct 1; velocity_m_s 1 and flow_act_m3_h 1; dynamic_pressure_pa ½ (v ∝ √Pd);
  temp_c, static_pa, baro_pa 1, moisture_pct 1 and o2_wet_pct / o2_dry_pct 1 (when the
  moisture is derived from them). The last five are upper bounds, taken on purpose: an
  accuracy of % of reading on t (°C) inside T0+t, on Ps inside Ba+Ps or on Xsw inside
  1−Xsw moves G by less than the same % (exactly t/(T0+t), Ps/(Ba+Ps), Xsw/(1−Xsw)
  times it), and a conservative stated figure beats one that depends on the load.
  With CO2 read wet the moisture cancels (C_d·(1−Xsw) = C_w) and does not enter.
A constant input (`value:`) has no instrument and adds nothing; a tag input without an
`instrument:` block makes the source's uncertainty unknown (null, the tag listed missing).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo

from pydantic import Field

from compute.config import CalculationConfig, Input, SourceConfig
from compute.uncertainty import (
    K_EXPANDED,
    Components,
    components_rel_pct,
    plant_components,
    source_components,
    source_inputs,
    std_rel_from_accuracy_pct,
)
from drivers.config import DevicesConfig, InstrumentConfig
from model.schema import ConfigModel

State = Literal["ok", "due_soon", "overdue", "unregistered"]
STATES: Final[tuple[State, ...]] = ("ok", "due_soon", "overdue", "unregistered")


class InstrumentRegisterConfig(ConfigModel):
    """Settings of the instrument register and its overdue-calibration alarm."""

    due_soon_days: int = Field(14, ge=0, le=366)  # `due_soon` this many days before the due date
    alarm: bool = True  # a system alarm per instrument once its calibration is overdue
    check_interval_h: float = Field(24.0, gt=0, le=24)  # and at each plant-local midnight


class RegisterPlantConfig(DevicesConfig, CalculationConfig):
    """What the register reads of a plant (the web's plant config is one)."""

    instruments: InstrumentRegisterConfig = InstrumentRegisterConfig()


def due_date(inst: InstrumentConfig) -> date:
    """The plant-local date by which the next calibration is due."""
    return inst.calibrated_on + timedelta(days=inst.calibration_interval_days)


def overdue_from(inst: InstrumentConfig, tz: ZoneInfo) -> datetime:
    """The UTC instant the calibration becomes overdue: plant-local midnight after due."""
    return datetime.combine(due_date(inst) + timedelta(days=1), time(0), tz).astimezone(UTC)


def local_today(now: datetime, tz: ZoneInfo) -> date:
    """The plant-local date at the UTC instant `now`."""
    return now.astimezone(tz).date()


def state_of(inst: InstrumentConfig | None, today: date, due_soon_days: int) -> State:
    """ok, due_soon (≤ due_soon_days left, the due date included) or overdue (past it)."""
    if inst is None:
        return "unregistered"
    left = (due_date(inst) - today).days
    if left < 0:
        return "overdue"
    return "due_soon" if left <= due_soon_days else "ok"


@dataclass(frozen=True, slots=True)
class Registered:
    """One instrument with a calibration date, as the alarm monitor sees it."""

    device: str
    tag: str
    description: str
    instrument: InstrumentConfig


def registered(cfg: DevicesConfig) -> list[Registered]:
    """Every tag that has an `instrument:` block, in configuration order."""
    return [Registered(d.id, t.id, t.description or t.description_zh, t.instrument)
            for d in cfg.devices for t in d.tags if t.instrument is not None]


def _users(cfg: CalculationConfig) -> dict[str, list[str]]:
    """Tag id → the sources, streams and unit outputs whose calculation reads it."""
    out: dict[str, list[str]] = {}

    def add(tag: str | None, who: str) -> None:
        if tag is not None and who not in out.setdefault(tag, []):
            out[tag].append(who)

    for unit in cfg.units:
        add(unit.output.rate.tag, unit.id)
        for src in unit.sources:
            for name in type(src.inputs).model_fields:
                inp = getattr(src.inputs, name)
                if isinstance(inp, Input):
                    add(inp.tag, src.id)
        for stream in unit.streams:
            add(stream.rate_per_h.tag if stream.rate_per_h is not None else None, stream.id)
            add(stream.counter.tag if stream.counter is not None else None, stream.id)
    return out


def _instrument_json(inst: InstrumentConfig | None, today: date, soon: int) -> dict[str, Any]:
    if inst is None:
        return {"serial": None, "model": None, "accuracy_pct": None, "calibrated_on": None,
                "calibration_interval_days": None, "verified_by": None, "certificate": None,
                "calibration_due": None, "days_to_due": None, "state": "unregistered"}
    due = due_date(inst)
    return {"serial": inst.serial, "model": inst.model, "accuracy_pct": inst.accuracy_pct,
            "calibrated_on": inst.calibrated_on.isoformat(),
            "calibration_interval_days": inst.calibration_interval_days,
            "verified_by": inst.verified_by, "certificate": inst.certificate,
            "calibration_due": due.isoformat(), "days_to_due": (due - today).days,
            "state": state_of(inst, today, soon)}


def instruments_by_tag(cfg: DevicesConfig) -> dict[str, InstrumentConfig | None]:
    """Every tag id → its instrument block (None when unregistered)."""
    return {t.id: t.instrument for d in cfg.devices for t in d.tags}


def source_uncertainty(cfg: RegisterPlantConfig, src: SourceConfig, unit_id: str,
                       today: date, by_tag: dict[str, InstrumentConfig | None] | None = None,
                       ) -> dict[str, Any]:
    """The source's CO2 relative uncertainty (standard and k=2, %) with the inputs used.

    `by_tag`: instruments_by_tag(cfg), when the caller has it (one pass over the tags).
    """
    by_tag = instruments_by_tag(cfg) if by_tag is None else by_tag
    soon = cfg.instruments.due_soon_days
    rows: list[dict[str, Any]] = []
    missing: list[str] = []
    for name, inp, c in source_inputs(src):
        if inp.tag is None:
            rows.append({"input": name, "tag": None, "constant": inp.value, "accuracy_pct": None,
                         "rel_std_uncertainty_pct": 0.0, "sensitivity": c, "state": None})
            continue
        inst = by_tag.get(inp.tag)
        u = None if inst is None else std_rel_from_accuracy_pct(inst.accuracy_pct)
        if u is None:
            missing.append(inp.tag)
        rows.append({"input": name, "tag": inp.tag, "constant": None,
                     "accuracy_pct": None if inst is None else inst.accuracy_pct,
                     "rel_std_uncertainty_pct": u, "sensitivity": c,
                     "state": state_of(inst, today, soon)})
    # compute/uncertainty.py: the same figure the unit and site totals are combined from.
    accuracy = {r["tag"]: r["accuracy_pct"] for r in rows if r["tag"] is not None}
    u_c = components_rel_pct(source_components(src, accuracy))
    return {"source": src.id, "unit": unit_id, "co2_rel_uncertainty_pct": u_c,
            "co2_rel_expanded_uncertainty_pct": None if u_c is None else K_EXPANDED * u_c,
            "coverage_factor": K_EXPANDED, "inputs": rows, "missing": missing,
            "periods": ["hour", "day", "month", "year"]}


def accuracies_pct(by_tag: dict[str, InstrumentConfig | None]) -> dict[str, float | None]:
    """Tag id → its instrument's accuracy class (% of reading), None when unregistered."""
    return {t: None if i is None else i.accuracy_pct for t, i in by_tag.items()}


def source_components_of(cfg: RegisterPlantConfig) -> dict[str, tuple[str, Components]]:
    """Source id → (unit id, the instruments' shares of its CO2 uncertainty), for
    compute.uncertainty.total_uncertainty (unit and site totals)."""
    return plant_components(cfg, accuracies_pct(instruments_by_tag(cfg)))


def co2_rel_uncertainties_pct(cfg: RegisterPlantConfig) -> dict[str, float | None]:
    """Each source's CO2 relative standard uncertainty (%, k = 1); None while unknown."""
    return {s: components_rel_pct(c) for s, (_u, c) in source_components_of(cfg).items()}


def register_json(cfg: RegisterPlantConfig, now: datetime) -> dict[str, Any]:
    """The whole register at the UTC instant `now`: instruments, then sources' uncertainty."""
    tz = ZoneInfo(cfg.site.timezone)
    today = local_today(now, tz)
    soon = cfg.instruments.due_soon_days
    users = _users(cfg)
    by_tag = instruments_by_tag(cfg)
    rows: list[dict[str, Any]] = []
    for d in cfg.devices:
        for t in d.tags:
            rows.append({"tag": t.id, "device": d.id, "protocol": d.protocol, "unit": t.unit,
                         "description": t.description, "description_zh": t.description_zh,
                         "used_by": users.get(t.id, []),
                         **_instrument_json(t.instrument, today, soon)})
    counts = {s: sum(1 for r in rows if r["state"] == s) for s in STATES}
    return {"t": now.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "date": today.isoformat(), "timezone": cfg.site.timezone,
            "due_soon_days": soon, "counts": counts, "instruments": rows,
            "sources": [source_uncertainty(cfg, s, u.id, today, by_tag)
                        for u, s in cfg.sources()]}
