"""What people enter, not instruments: lab factors, period quantities, corrections and the
CEMS quality-assurance intervals, and how the calculation applies them. Pure, no I/O.

The record keeper (server/records.py) keeps every entry in an append-only ledger and turns
the ledger into one `Records` value; the live period stage, `carbonscada recalc` and the
recalculation after an entry all take the same `Records`, so a correction gives the same
numbers whichever way it is computed.

- A lab factor entry (monthly NCV and carbon content of a coal lot) becomes a dated factor
  version of its factor set, in force from its effective date; factors it does not give
  (e.g. the oxidation factor) are those of the version in force before it. An entry with the
  effective date of an existing version replaces that version (a correction of it).
- An override sets a value of one period: the CO2 concentration or flow of a source minute,
  a source hour's concentration, flow or CO2, a source day's CO2, a stream's quantity for an
  hour or a day (a weighbridge's daily fuel consumption), a unit's output. The value counts
  as valid and the record carries flag S ("manually set", HJ 212-2017), so every reader
  sees that it was set by hand; the measured value stays in `co2_measured_t` and the
  original row in the historian's revisions.
- Out-of-control intervals (HJ 75-2017: after a failed zero or span check until the next
  passed one) make a source's minutes invalid (flag D), so their hours are substituted.

Overrides of the same value apply in entry order: the latest one wins.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Literal

import numpy as np
import numpy.typing as npt

from compute.factors import FactorTable, FactorVersion
from model.errors import InvalidValueError
from model.flags import DataFlag
from model.times import as_utc

F64 = npt.NDArray[np.float64]
U8 = npt.NDArray[np.uint8]
B1 = npt.NDArray[np.bool_]

Kind = Literal["source", "stream", "unit"]
Level = Literal["minute", "hour", "day"]

# What may be set, per (kind, level), with the unit each value is in.
SETTABLE: Mapping[tuple[str, str], Mapping[str, str]] = MappingProxyType({
    ("source", "minute"): {"co2_dry_pct": "%", "flow_std_dry_m3_h": "m3/h"},
    ("source", "hour"): {"co2_dry_pct": "%", "flow_std_dry_m3_h": "m3/h", "co2_t": "t"},
    ("source", "day"): {"co2_t": "t"},
    ("stream", "hour"): {"quantity": "quantity_unit"},
    ("stream", "day"): {"quantity": "quantity_unit"},
    # output_t of a unit whose output is a product (t/h), output_mwh of the others
    ("unit", "hour"): {"output_mwh": "MWh", "output_t": "t"},
    ("unit", "day"): {"output_mwh": "MWh", "output_t": "t"},
})

OUT_OF_CONTROL_FLAG = DataFlag.D  # HJ 212 has no letter of its own; D: instrument fault
MANUAL_FLAG = DataFlag.S



@dataclass(frozen=True, slots=True)
class Override:
    """Values set by hand for one period of one source, stream or unit."""

    kind: Kind
    level: Level
    ident: str
    t: datetime  # period start, UTC
    values: Mapping[str, float] = field(hash=False)
    entry: int = 0  # ledger id of the entry that set them

    def __post_init__(self) -> None:
        where = f"{self.kind} {self.ident!r} {self.level}"
        allowed = SETTABLE.get((self.kind, self.level))
        if allowed is None:
            raise InvalidValueError(f"{where}: a {self.kind} {self.level} cannot be set "
                                    f"(settable: {', '.join(f'{k} {lv}' for k, lv in SETTABLE)})")
        object.__setattr__(self, "t", as_utc(self.t, where))
        if not self.values:
            raise InvalidValueError(f"{where}: no value given")
        checked: dict[str, float] = {}
        for name, value in self.values.items():
            if name not in allowed:
                raise InvalidValueError(f"{where}: {name!r} cannot be set "
                                        f"(settable: {', '.join(allowed)})")
            v = float(value)
            if not (math.isfinite(v) and v >= 0):
                raise InvalidValueError(f"{where}: {name} = {value!r} must be finite and >= 0")
            checked[name] = v
        object.__setattr__(self, "values", MappingProxyType(checked))


@dataclass(frozen=True, slots=True)
class LabFactor:
    """Factors from a lab report or document, in force from `effective_from`."""

    factors: str  # the factor set (a stream's `factors`) they belong to
    effective_from: datetime  # UTC
    values: Mapping[str, float] = field(hash=False)
    source: str  # the document: lab report number, certificate
    entry: int = 0

    @property
    def version_id(self) -> str:
        """Id of the factor version the entry becomes."""
        return f"{self.factors}@lab{self.entry}"


@dataclass(frozen=True, slots=True)
class Records:
    """Everything entered that the calculation applies; empty by default."""

    overrides: tuple[Override, ...] = ()
    lab_factors: tuple[LabFactor, ...] = ()
    # source id → [t0, t1) epoch-second intervals its analyser was out of control
    out_of_control: Mapping[str, tuple[tuple[float, float], ...]] = field(
        default_factory=lambda: MappingProxyType({}), hash=False)
    # (kind, level, period start in epoch seconds) → ident → the values set, latest entry
    # winning: the live stage looks up one minute or hour without scanning the ledger.
    _index: dict[tuple[str, str, float], dict[str, dict[str, float]]] = field(
        init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        index: dict[tuple[str, str, float], dict[str, dict[str, float]]] = {}
        for o in sorted(self.overrides, key=lambda o: o.entry):
            period = index.setdefault((o.kind, o.level, o.t.timestamp()), {})
            period.setdefault(o.ident, {}).update(o.values)
        object.__setattr__(self, "_index", index)

    @property
    def empty(self) -> bool:
        """Whether nothing was entered."""
        return not (self.overrides or self.lab_factors or self.out_of_control)

    def values(self, kind: Kind, level: Level, ident: str, t: datetime) -> Mapping[str, float]:
        """The values set for one period ({} when none)."""
        return self.at(kind, level, t).get(ident, {})

    def at(self, kind: Kind, level: Level, t: datetime | float
           ) -> Mapping[str, Mapping[str, float]]:
        """Every ident with values set for the period starting at `t` (UTC or epoch s)."""
        t_s = t if isinstance(t, float) else t.timestamp()
        return self._index.get((kind, level, t_s), {})

    def factor_table(self, base: FactorTable) -> FactorTable:
        """The configured factor versions with the lab entries' versions added."""
        if not self.lab_factors:
            return base
        by_set: dict[str, list[FactorVersion]] = {s: list(base.versions(s)) for s in base.streams}
        for lab in sorted(self.lab_factors, key=lambda x: x.entry):
            vs = by_set.setdefault(lab.factors, [])
            t = as_utc(lab.effective_from, f"lab factors of {lab.factors!r}")
            before = [v for v in vs if v.effective_from <= t]
            inherit = dict(max(before, key=lambda v: v.effective_from).values) if before else {}
            inherit.update(lab.values)
            vs[:] = [v for v in vs if v.effective_from != t]
            vs.append(FactorVersion(lab.version_id, lab.factors, t, inherit, lab.source))
        return FactorTable(v for vs in by_set.values() for v in vs)

    # ------------------------------------------------------------------ minutes

    def apply_minutes(self, t_s: F64, source_ids: Sequence[str], co2_dry_pct: F64,
                      flow_std_dry_m3_h: F64, flag: U8) -> tuple[F64, F64, U8, B1 | None]:
        """Minutes (minutes, sources) with the QA intervals and the minute overrides applied.

        Returns new arrays when anything applies (the inputs are left alone) and the mask
        of the minutes set by hand (None when none): those enter the hour as valid.
        """
        hits = [(k, ident, v) for k, t in enumerate(t_s.tolist())
                for ident, v in self.at("source", "minute", float(t)).items()]
        # Only the intervals that overlap these minutes: the ledger keeps years of them.
        first, last = (float(t_s[0]), float(t_s[-1])) if t_s.size else (0.0, -1.0)
        spans = [(source, t0, t1) for source, sp in self.out_of_control.items()
                 for t0, t1 in sp if t0 <= last and t1 > first]
        if not spans and not hits:
            return co2_dry_pct, flow_std_dry_m3_h, flag, None
        flag = flag.copy()
        pos = {s: i for i, s in enumerate(source_ids)}
        for source, t0, t1 in spans:
            i = pos.get(source)
            if i is None:
                continue
            inside = (t_s >= t0) & (t_s < t1)
            flag[inside, i] = np.maximum(flag[inside, i], np.uint8(OUT_OF_CONTROL_FLAG))
        if not hits:
            return co2_dry_pct, flow_std_dry_m3_h, flag, None
        co2, flow = co2_dry_pct.copy(), flow_std_dry_m3_h.copy()
        mask = np.zeros(flag.shape, np.bool_)
        for k, ident, v in hits:
            i = pos.get(ident)
            if i is None:
                continue
            co2[k, i] = v.get("co2_dry_pct", co2[k, i])
            flow[k, i] = v.get("flow_std_dry_m3_h", flow[k, i])
            flag[k, i] = 0
            mask[k, i] = True
        return co2, flow, flag, mask


def changed_intervals(old: Mapping[str, tuple[tuple[float, float], ...]],
                      new: Mapping[str, tuple[tuple[float, float], ...]],
                      ) -> dict[str, tuple[tuple[float, float], ...]]:
    """Per source, the [t0, t1) epoch-second spans inside exactly one of `old` and `new`
    out-of-control intervals: the minutes an entry moved into or out of control."""
    out: dict[str, tuple[tuple[float, float], ...]] = {}
    for source in sorted(set(old) | set(new)):
        a, b = old.get(source, ()), new.get(source, ())
        if a == b:
            continue
        points = sorted({x for span in (*a, *b) for x in span})
        diff: list[tuple[float, float]] = []
        for p, q in itertools.pairwise(points):
            inside_a = any(t0 <= p < t1 for t0, t1 in a)
            if inside_a != any(t0 <= p < t1 for t0, t1 in b):
                if diff and diff[-1][1] == p:
                    diff[-1] = (diff[-1][0], q)
                else:
                    diff.append((p, q))
        if diff:
            out[source] = tuple(diff)
    return out


def merge(records: Records, *, overrides: Iterable[Override] = (),
          lab_factors: Iterable[LabFactor] = (),
          out_of_control: Mapping[str, tuple[tuple[float, float], ...]] | None = None,
          ) -> Records:
    """`records` with more entries (and, when given, other out-of-control intervals)."""
    return Records(records.overrides + tuple(overrides),
                   records.lab_factors + tuple(lab_factors),
                   MappingProxyType(dict(records.out_of_control if out_of_control is None
                                         else out_of_control)))
