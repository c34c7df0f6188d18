"""The boundary tree site → process (accounting unit) → facility, and the roll-up of the
stored unit results up that tree: pure, no I/O.

The tree comes from the calculation config: each unit is a facility (its CEMS sources and
factor-method streams the emission points under it), `processes:` names the processes and
each unit's `process:` the one it belongs to; without `processes:` every unit is its own
process (plants configured before boundaries existed).

The roll-up of some periods (hours, or the days of a month or year) per node:

- CO2 and CO2e: Σ over the facilities below and the periods of each facility's accounted
  value (`accounted_co2_t`, `accounted_co2e_t`), over the values it has;
- a node is `complete` when every facility below has a value in every period; a facility
  without a record or with a NaN value (an invalid hour without a substitute) makes every
  node above it incomplete and is listed in `missing`: its total is then the sum of what is
  known, flagged, never silently smaller. "Every period" is every period handed in: a day
  the historian holds no record of at all is not one (web/boundaries.py says how many of
  the span's periods are stored);
- shares in %: node / parent · 100 and node / site · 100, of CO2 and of CO2e; a share is
  NaN unless both the node and the denominator are complete and the denominator is > 0 (a
  share of a partial total is not the node's share);
- output: Σ of the facilities' output in MWh (power) and in t (product) kept apart, since
  the two do not add up;
- `n_valid` / `n_invalid`: the node's children that are valid in every period (a process:
  its facilities; the site: its processes; a facility: its emission points).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from compute.config import CalculationConfig, UnitConfig
from model.records import PeriodRecords, UnitPeriod

SITE, PROCESS, FACILITY = "site", "process", "facility"


@dataclass(frozen=True, slots=True)
class Facility:
    """A facility (a configured unit) and its emission points."""

    id: str
    name: str
    name_zh: str
    output_unit: str  # MWh or t: the unit of the facility's output
    sources: tuple[str, ...]
    streams: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Process:
    """A process (accounting unit) and its facilities."""

    id: str
    name: str
    name_zh: str
    kind: str  # e.g. ironmaking, lime, power; "" when not given
    facilities: tuple[Facility, ...]
    implicit: bool = False  # a unit's own process (no `processes:` in the plant file)


@dataclass(frozen=True, slots=True)
class BoundaryTree:
    """The site and its processes, in configuration order."""

    id: str
    name: str
    name_zh: str
    processes: tuple[Process, ...]

    def facilities(self) -> list[tuple[Process, Facility]]:
        """Every facility with its process, in configuration order."""
        return [(p, f) for p in self.processes for f in p.facilities]


def _output_unit(unit: UnitConfig) -> str:
    # UnitOutputConfig.unit (MWh or t) where the config has product outputs; power before.
    return str(getattr(unit.output, "unit", "MWh"))


def _facility(unit: UnitConfig) -> Facility:
    return Facility(unit.id, unit.name, unit.name_zh, _output_unit(unit),
                    tuple(s.id for s in unit.sources), tuple(s.id for s in unit.streams))


def tree_of(cfg: CalculationConfig) -> BoundaryTree:
    """The boundary tree of a (validated) calculation config."""
    if cfg.processes is None:
        procs = tuple(Process(u.id, u.name, u.name_zh, "", (_facility(u),), implicit=True)
                      for u in cfg.units)
    else:
        procs = tuple(Process(p.id, p.name, p.name_zh, p.kind or "",
                              tuple(_facility(u) for u in cfg.units if u.process == p.id))
                      for p in cfg.processes)
    return BoundaryTree(cfg.site.id, cfg.site.name, cfg.site.name_zh, procs)


def accounted_co2_t(u: UnitPeriod) -> float:
    """The unit's accounted CO2 of the period: its `co2_t` (CEMS or factor method, as the
    unit is accounted); for a record without one (stored before co2_t existed, or model
    records that lack the field) the CEMS CO2, or the factor-method CO2 of a factor unit."""
    if math.isfinite(u.co2_t):
        return u.co2_t
    return u.co2_factor_t if u.basis == "factor" else u.co2_cems_t


def accounted_co2e_t(u: UnitPeriod) -> float:
    """The unit's CO2 equivalent of the period: its `co2e_t` (NaN when a gas is unknown);
    a record from before CO2e existed (no GWP set) has no other gas: CO2e = CO2."""
    return u.co2e_t if u.gwp_set else accounted_co2_t(u)


def _output_t(u: UnitPeriod) -> float:
    return u.output_t


@dataclass(frozen=True, slots=True)
class Node:
    """One node of the rolled-up tree: its totals, shares and the state of what is below."""

    level: str  # site | process | facility
    id: str
    name: str
    name_zh: str
    kind: str  # a process's kind; "" otherwise
    co2_t: float  # NaN when nothing below has a value
    co2e_t: float
    output_mwh: float  # Σ of the power outputs below; NaN without any
    output_t: float  # Σ of the product outputs below; NaN without any
    share_of_parent_pct: float  # CO2; NaN for the site and unless complete (module doc)
    share_of_site_pct: float
    co2e_share_of_parent_pct: float
    co2e_share_of_site_pct: float
    complete: bool  # every facility below has a value in every period
    valid: bool  # and every one is valid in every period
    n_valid: int  # children valid in every period
    n_invalid: int
    missing: tuple[str, ...]  # facilities below lacking a value in some period
    children: tuple[Node, ...] = ()

    def walk(self) -> Iterable[tuple[Node, Node | None]]:
        """This node and every node below it, depth first, each with its parent."""
        stack: list[tuple[Node, Node | None]] = [(self, None)]
        while stack:
            node, parent = stack.pop()
            yield node, parent
            stack.extend((c, node) for c in reversed(node.children))


def _fsum(values: Iterable[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return math.fsum(finite) if finite else math.nan


def _share(part: float, part_complete: bool, whole: float, whole_complete: bool) -> float:
    if not (part_complete and whole_complete and math.isfinite(part) and whole > 0):
        return math.nan
    return part / whole * 100.0


@dataclass(frozen=True, slots=True)
class _Sum:
    """A node's totals before its shares are known."""

    level: str
    id: str
    name: str
    name_zh: str
    kind: str
    co2_t: float
    co2e_t: float
    output_mwh: float
    output_t: float
    complete: bool
    valid: bool
    n_valid: int
    n_invalid: int
    missing: tuple[str, ...]
    children: tuple[_Sum, ...] = ()


def _points_valid(f: Facility, periods: Sequence[PeriodRecords]) -> tuple[int, int]:
    """(valid, invalid) emission points of a facility: valid in every period."""
    ok = dict.fromkeys((*f.sources, *f.streams), bool(periods))
    for p in periods:
        seen: set[str] = set()
        for s in p.sources:
            if s.source in ok:
                seen.add(s.source)
                ok[s.source] = ok[s.source] and s.valid
        for st in p.streams:  # a day holds one part per factor version in force
            if st.stream in ok:
                seen.add(st.stream)
                ok[st.stream] = ok[st.stream] and st.valid
        for ident in ok.keys() - seen:
            ok[ident] = False
    n_valid = sum(ok.values())
    return n_valid, len(ok) - n_valid


def _facility_sum(f: Facility, periods: Sequence[PeriodRecords]) -> _Sum:
    ups = [u for p in periods for u in p.units if u.unit == f.id]
    co2 = [accounted_co2_t(u) for u in ups]
    co2e = [accounted_co2e_t(u) for u in ups]
    complete = (bool(periods) and len(ups) == len(periods)
                and all(math.isfinite(v) for v in (*co2, *co2e)))
    valid = complete and all(u.valid for u in ups)
    n_valid, n_invalid = _points_valid(f, periods)
    return _Sum(FACILITY, f.id, f.name, f.name_zh, "", _fsum(co2), _fsum(co2e),
                _fsum(u.output_mwh for u in ups), _fsum(_output_t(u) for u in ups), complete,
                valid, n_valid, n_invalid, () if complete else (f.id,))


def _parent_sum(level: str, ident: str, name: str, name_zh: str, kind: str,
                children: tuple[_Sum, ...]) -> _Sum:
    n_valid = sum(c.valid for c in children)
    return _Sum(level, ident, name, name_zh, kind, _fsum(c.co2_t for c in children),
                _fsum(c.co2e_t for c in children), _fsum(c.output_mwh for c in children),
                _fsum(c.output_t for c in children), all(c.complete for c in children),
                all(c.valid for c in children), n_valid, len(children) - n_valid,
                tuple(m for c in children for m in c.missing), children)


def _node(s: _Sum, parent: _Sum | None, site: _Sum) -> Node:
    if parent is None:
        of_parent = of_parent_e = math.nan
    else:
        of_parent = _share(s.co2_t, s.complete, parent.co2_t, parent.complete)
        of_parent_e = _share(s.co2e_t, s.complete, parent.co2e_t, parent.complete)
    return Node(s.level, s.id, s.name, s.name_zh, s.kind, s.co2_t, s.co2e_t, s.output_mwh,
                s.output_t, of_parent, _share(s.co2_t, s.complete, site.co2_t, site.complete),
                of_parent_e, _share(s.co2e_t, s.complete, site.co2e_t, site.complete),
                s.complete, s.valid, s.n_valid, s.n_invalid, s.missing,
                tuple(_node(c, s, site) for c in s.children))


def rollup(tree: BoundaryTree, periods: Sequence[PeriodRecords]) -> Node:
    """The tree rolled up over `periods` (the stored hours, or days, of the span asked
    for): the site node, its processes below it, their facilities below them."""
    procs = tuple(_parent_sum(PROCESS, p.id, p.name, p.name_zh, p.kind,
                              tuple(_facility_sum(f, periods) for f in p.facilities))
                  for p in tree.processes)
    site = _parent_sum(SITE, tree.id, tree.name, tree.name_zh, "", procs)
    return _node(site, None, site)
