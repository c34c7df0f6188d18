"""The vectorised rule bank: all alarm rules of a plant evaluated together on numpy arrays.

This is what the engine runs, with the level logic of `alarms.spec`; tests/alarms/reference.py
evaluates one rule at a time in plain Python, the reference the bank is tested against and
the bench's baseline.
"""

from __future__ import annotations

import dataclasses
import math
import operator
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import numpy.typing as npt

from alarms.config import (
    RULE_KINDS,
    AlarmPlantConfig,
    CaptureRateRuleConfig,
    IntensityRuleConfig,
    closed_hour_intensity,
    intensity_units,
    target_kind,
)
from alarms.context import (
    ALLOWANCE_MEASURES,
    F64,
    HOUR_INVALID,
    HOUR_UNKNOWN,
    HOUR_VALID,
    NONE,
    Record,
    allowance_measures,
    hour_codes,
    minute_index,
    month_key,
    stopped_units,
)
from alarms.spec import COVERED_NOTE, WINDOW_MINUTES, RuleSpec, plant_specs, target_id
from compute.clock import PlantClock
from model.flags import DataFlag
from model.records import DeviceEvent, MinuteResult, PeriodRecords, SourceColumns, TagColumns

if typing.TYPE_CHECKING:
    from alarms.config import CarbonPerformanceRuleConfig
    from compute.assets import CompliancePosition
    from compute.performance import Performance

I64 = npt.NDArray[np.int64]
B1 = npt.NDArray[np.bool_]
Rows = slice | npt.NDArray[np.intp]

CARBON_MEASURES = ("forecast_deficit_t", "deficit_t", "days_to_deadline")
"""The measures of carbon_position rules, in the order `carbon_measures` returns them."""


def carbon_measures(p: CompliancePosition) -> tuple[tuple[float, float, float], bool]:
    """(forecast deficit t, deficit t, days to the surrender deadline) of a compliance
    position, and whether its year is covered: no deficit and at least the year's
    emissions surrendered (then the deadline no longer matters)."""
    covered = not (p.deficit_t > 0.0 or p.surrendered_t < p.emissions_t)
    return (float(p.forecast_deficit_t), float(p.deficit_t), float(p.days_to_deadline)), covered



def performance_measure(perf: Performance, cfg: CarbonPerformanceRuleConfig) -> float:
    """The value a carbon_performance rule watches in a year's performance (NaN: none,
    e.g. no target or no output yet: the rule then keeps its level)."""
    row = perf.row(cfg.unit or "site")
    if row is None:
        return math.nan
    if cfg.measure == "target_deviation_pct":
        return float(row.deviation_ytd_pct)
    if cfg.measure == "quarter_deviation_pct":
        return float(row.deviation_qtd_pct)
    gaps = [b for b in perf.benchmarks if b.unit == (cfg.unit or "site")
            and cfg.benchmark_kind in (None, b.kind)]
    return float(gaps[0].gap_pct) if gaps else math.nan


class LevelBank:
    """The level logic of many rules on numpy arrays: one call per evaluation, any subset."""

    def __init__(self, specs: Sequence[RuleSpec]) -> None:
        n = len(specs)
        lv = np.array([s.norm_levels() for s in specs], np.float64).reshape(n, 2)
        self.lv1 = lv[:, 0].copy()
        self.lv2 = lv[:, 1].copy()
        self.db = np.array([s.deadband for s in specs], np.float64)
        self.on = np.array([s.on_delay for s in specs], np.int64)
        self.off = np.array([s.off_delay for s in specs], np.int64)
        self.sign = np.array([s.sign for s in specs], np.float64)
        self.level = np.zeros(n, np.int8)
        self.up1, self.up2, self.dn1, self.dn2 = (np.full(n, NONE, np.int64) for _ in range(4))

    def reset(self, i: int, level: int = 0) -> None:
        """At `level` with no timers running: normal for a rule returned to service, its
        alarm state's level for one restored or redefined."""
        self.level[i] = level
        for a in (self.up1, self.up2, self.dn1, self.dn2):
            a[i] = NONE

    def take_over(self, old: LevelBank, rows: npt.NDArray[np.intp],
                  old_rows: npt.NDArray[np.intp]) -> None:
        """Rows `rows` continue with the levels and delay timers of `old`'s `old_rows`."""
        for mine, theirs in ((self.level, old.level), (self.up1, old.up1), (self.up2, old.up2),
                             (self.dn1, old.dn1), (self.dn2, old.dn2)):
            mine[rows] = theirs[old_rows]

    def step(self, rows: Rows, value: F64, m: int) -> tuple[npt.NDArray[np.intp],
                                                             npt.NDArray[np.int8],
                                                             npt.NDArray[np.int8]]:
        """Evaluate `rows` on their values at minute m; (changed positions in rows, old, new)."""
        old = self.level[rows]
        x = value * self.sign[rows]
        ok = ~np.isnan(x)
        act = []
        for k, lv, up_a, dn_a in ((1, self.lv1, self.up1, self.dn1),
                                  (2, self.lv2, self.up2, self.dn2)):
            held = old >= k
            cond = x >= lv[rows] - self.db[rows] * held  # NaN level or value: False
            up, dn = up_a[rows], dn_a[rows]
            up = np.where(ok, np.where(cond, np.where(up == NONE, m, up), NONE), up)
            dn = np.where(ok, np.where(cond, NONE, np.where(dn == NONE, m, dn)), dn)
            up_a[rows], dn_a[rows] = up, dn
            act.append(np.where(held, (dn == NONE) | (m - dn < self.off[rows]),
                                (up != NONE) & (m - up >= self.on[rows])))
        new = np.where(ok, np.where(act[1], 2, np.where(act[0], 1, 0)), old).astype(np.int8)
        changed = np.flatnonzero(new != old)
        old_changed = old[changed]  # a copy: `old` may be a view of self.level
        self.level[rows] = new
        return changed, old_changed, new[changed]


class _FieldTable:
    """Each minute, the record fields the rules read, gathered into one flat array.

    `refs` are (kind, id, field) triples; `load` returns their values (NaN where the
    record is absent) and whether each came from a good record.
    """

    def __init__(self, refs: Sequence[tuple[str, str, str]]) -> None:
        self.refs = list(refs)
        self.fields: dict[str, list[str]] = {
            k: sorted({f for kind, _, f in self.refs if kind == k})
            for k in ("source", "unit", "tag", "site")}
        self._ids: dict[str, tuple[str, ...]] = {}
        self._index = np.zeros(len(self.refs), np.intp)
        self._good_tmpl: B1 | None = None

    def load(self, result: MinuteResult, need_good: bool) -> tuple[F64, B1]:
        """The refs' values this minute, and whether each one's record is good."""
        parts: list[F64] = []
        goods: list[B1] = []
        ids: dict[str, tuple[str, ...]] = {}
        for kind in ("source", "unit", "tag"):
            fields = self.fields[kind]
            if not fields:  # no record of this kind is built for nothing
                continue
            ids[kind], columns, good = _entities(kind, result, fields, need_good)
            # Entity after entity, each one's fields side by side (as _reindex counts).
            parts.append(np.column_stack(columns).reshape(-1) if len(columns) > 1
                         else columns[0])
            if need_good:
                goods.append(np.repeat(good, len(fields)))
        site_fields = self.fields["site"]
        parts.append(np.array([getattr(result.site, f) for f in site_fields], np.float64))
        parts.append(np.array([math.nan]))
        if ids != self._ids:
            self._reindex(ids)
        flat = np.concatenate(parts)[self._index]
        if not need_good:
            return flat, np.zeros(0, np.bool_)
        goods.append(np.ones(len(site_fields), np.bool_))
        goods.append(np.zeros(1, np.bool_))
        return flat, np.concatenate(goods)[self._index]

    def _reindex(self, ids: dict[str, tuple[str, ...]]) -> None:
        """Where each ref sits in the flat array, for a new order of records."""
        self._ids = ids
        offset: dict[str, int] = {}
        pos: dict[str, dict[str, int]] = {}
        n = 0
        for kind in ("source", "unit", "tag"):
            if kind in ids:
                offset[kind] = n
                pos[kind] = {ident: i for i, ident in enumerate(ids[kind])}
                n += len(ids[kind]) * len(self.fields[kind])
        offset["site"] = n
        missing = n + len(self.fields["site"])
        index = []
        for kind, ident, field in self.refs:
            col = self.fields[kind].index(field)
            if kind == "site":
                index.append(offset["site"] + col)
                continue
            p = pos[kind].get(ident)
            index.append(missing if p is None
                         else offset[kind] + p * len(self.fields[kind]) + col)
        self._index = np.array(index, np.intp)


def _entities(kind: str, result: MinuteResult, fields: Sequence[str], need_good: bool
              ) -> tuple[tuple[str, ...], list[F64], B1]:
    """Ids, one column per field and goodness of the minute's entities of one kind: from
    the minute's columns when it has them (100 000 tags: no record each, no Python loop),
    else from its records."""
    cols: SourceColumns | TagColumns | None = (
        result.source_columns if kind == "source" else
        result.tag_columns if kind == "tag" else None)
    if cols is not None and all(hasattr(cols, f) for f in fields):
        columns = [np.asarray(getattr(cols, f), np.float64) for f in fields]
        if isinstance(cols, SourceColumns):
            return cols.sources, columns, cols.flag == DataFlag.N  # valid is flag N
        good: B1 = (cols.flag == DataFlag.N) & (cols.count > 0)
        return cols.tags, columns, good
    recs: Sequence[Record] = (result.sources if kind == "source" else
                              result.units if kind == "unit" else result.tags)
    idents = tuple(getattr(r, kind) for r in recs)
    n = len(recs)
    columns = [np.fromiter(map(operator.attrgetter(f), recs), np.float64, n) for f in fields]
    return idents, columns, _good_flags(kind, recs) if need_good else np.zeros(0, np.bool_)


def _good_flags(kind: str, recs: Sequence[Record]) -> B1:
    """`good_record` of many records of one kind at once."""
    n = len(recs)
    if kind != "tag":
        return np.fromiter(map(operator.attrgetter("valid"), recs), np.bool_, n)
    flag = np.fromiter(map(operator.attrgetter("flag"), recs), np.int64, n)
    count = np.fromiter(map(operator.attrgetter("count"), recs), np.int64, n)
    good: B1 = (flag == DataFlag.N) & (count > 0)
    return good


_PAIR = 4  # refs per intensity entity: CO2 kg, output MWh, CO2's flag, output's flag


def _pair_ok(rows: F64) -> B1:
    """Per (CO2, output, CO2 flag, output flag) row: both values finite, both flags N."""
    ok: B1 = np.isfinite(rows[:, :2]).all(axis=1) & (rows[:, 2] == 0) & (rows[:, 3] == 0)
    return ok


class _RollingBank:
    """Running sums of (CO2, output) of many entities over the last `width` minutes."""

    def __init__(self, n: int, width: int) -> None:
        self.width = width
        self.ring = np.zeros((2, n, width))
        self.sums = np.zeros((2, n))
        self.last = NONE
        self._pushes = 0

    def take_over(self, old: _RollingBank, mine: npt.NDArray[np.intp],
                  theirs: npt.NDArray[np.intp]) -> None:
        """Entities `mine` continue with `old`'s `theirs`; the others start from zero."""
        self.ring[:, mine] = old.ring[:, theirs]
        self.sums[:, mine] = old.sums[:, theirs]
        self.last, self._pushes = old.last, old._pushes

    def push(self, m: int, co2: F64, out: F64) -> None:
        if m <= self.last:
            return
        if m - self.last >= self.width:
            self.ring[:] = 0.0
            self.sums[:] = 0.0
        elif m - self.last > 1:  # minutes without a result drop out of the window as zeros
            gap = np.arange(self.last + 1, m) % self.width
            self.sums -= self.ring[:, :, gap].sum(axis=2)
            self.ring[:, :, gap] = 0.0
        self.last = m
        s = m % self.width
        new = np.stack([co2, out])
        self.sums += new - self.ring[:, :, s]
        self.ring[:, :, s] = new
        self._pushes += 1
        if self._pushes % self.width == 0:  # no drift from adding and subtracting
            self.sums = self.ring.sum(axis=2)


@dataclass(slots=True)
class Changes:
    """What one evaluation changed: suppression flags, then condition levels, by row."""

    t: datetime
    suppress_rows: npt.NDArray[np.intp]
    suppress_on: B1
    rows: npt.NDArray[np.intp]
    old: npt.NDArray[np.int8]
    new: npt.NDArray[np.int8]


_EMPTY_ROWS = np.zeros(0, np.intp)


class RuleBank:
    """All alarm rules of a plant evaluated together on numpy arrays.

    Per minute the cost is a handful of numpy operations over all rules, whatever
    their number; only the rules whose condition or suppression changed come back
    for the Python state machine. `value` holds every rule's latest measured value.
    """

    def __init__(self, plant: AlarmPlantConfig, specs: Sequence[RuleSpec] | None = None) -> None:
        self.plant = plant
        self.specs = list(specs) if specs is not None else plant_specs(plant)
        self.clock = PlantClock(plant.clock.minute_seconds, plant.site.timezone)
        n = len(self.specs)
        self.n = n
        self.levels = LevelBank(self.specs)
        self.value = np.full(n, math.nan)
        self.trailing_30d_t = math.nan
        self.last_m = NONE
        kind = np.array([s.kind for s in self.specs], dtype=object)
        rows = {k: np.flatnonzero(kind == k) for k in RULE_KINDS}
        self._rows = rows
        cfgs: list[typing.Any] = [s.config for s in self.specs]

        # Suppression: the rule's unit (index into plant.units) or -1.
        self._unit_ix = {u.id: i for i, u in enumerate(plant.units)}
        self._area = np.array([self._unit_ix.get(s.area, -1) if s.suppress else -1
                               for s in self.specs], np.intp)
        self.suppressed = np.zeros(n, np.bool_)

        # Rules on a record field: threshold, rate of change, stale.
        refs: list[tuple[str, str, str]] = []
        self._tgt_rows = np.concatenate([rows["threshold"], rows["rate_of_change"],
                                         rows["stale"]])
        for i in self._tgt_rows:
            tgt = cfgs[i].target
            refs.append((target_kind(tgt), target_id(tgt), tgt.field))
        n_tgt = len(refs)
        self._is_tgt = np.zeros(n, np.intp)  # rule row → position in the target refs
        self._is_tgt[self._tgt_rows] = np.arange(n_tgt)
        self._roc_groups = []
        for over in sorted({cfgs[i].over_min for i in rows["rate_of_change"]}):
            r = np.array([i for i in rows["rate_of_change"] if cfgs[i].over_min == over],
                         np.intp)
            direction = np.array([{"rise": 0, "fall": 1, "both": 2}[cfgs[i].direction]
                                  for i in r], np.int8)
            self._roc_groups.append(_RocGroup(r, over, direction))
        self._stale_last = np.full(len(rows["stale"]), NONE, np.int64)

        # Intensity: per window, the entities (source / unit / site) the rules look at.
        src_unit = {s.id: u.id for u, s in plant.sources()}
        self._ent_refs: list[tuple[str, str]] = []  # (kind, id); "site" once at most
        ent_ix: dict[tuple[str, str], int] = {}
        per_window: dict[str, list[int]] = {}
        # A factor-method or product-output scope has no minute ratio: on closed hours.
        by_hour = np.array([closed_hour_intensity(cfgs[i].scope, plant)
                            for i in rows["intensity"]], np.bool_)
        minute_int = rows["intensity"][~by_hour]
        self._hour_int = _HourIntensity([cfgs[i] for i in rows["intensity"][by_hour]],
                                        rows["intensity"][by_hour], plant)
        for i in minute_int:
            sc = cfgs[i].scope
            key = (("source", sc.source) if sc.source else ("unit", sc.unit) if sc.unit
                   else ("site", ""))
            per_window.setdefault(cfgs[i].window, []).append(ent_ix.setdefault(key, len(ent_ix)))
        self._ent_refs = list(ent_ix)
        self._windows: list[_IntensityWindow] = []
        for window, ents in per_window.items():
            r = np.array([i for i in minute_int if cfgs[i].window == window], np.intp)
            used = sorted(set(ents))
            where = {e: j for j, e in enumerate(used)}
            width = WINDOW_MINUTES.get(window)
            self._windows.append(_IntensityWindow(
                window, r, np.array(used, np.intp), np.array([where[e] for e in ents], np.intp),
                np.array([cfgs[i].min_output_mwh for i in r], np.float64),
                _RollingBank(len(used), width) if width is not None else None,
                np.zeros((2, len(used)))))
        # CO2 and output refs of the intensity entities, after the target refs, each with
        # the two flags that must be N for the pair to count (_PAIR refs per entity): the
        # CO2's (the source's, or the unit's, which includes its output's) and the output's.
        self._site_units = [u.id for u in plant.units]
        for kind_, ident in self._ent_refs:
            if kind_ == "source":
                unit_id = src_unit.get(ident, "")
                refs += [("source", ident, "co2_kg"), ("unit", unit_id, "output_mwh"),
                         ("source", ident, "flag"), ("unit", unit_id, "output_flag")]
            elif kind_ == "unit":
                refs += [("unit", ident, "co2_kg"), ("unit", ident, "output_mwh"),
                         ("unit", ident, "flag"), ("unit", ident, "output_flag")]
        self._site_ref0 = len(refs)
        if ("site", "") in ent_ix:
            for u in self._site_units:
                refs += [("unit", u, "co2_kg"), ("unit", u, "output_mwh"),
                         ("unit", u, "flag"), ("unit", u, "output_flag")]
        self._n_tgt = n_tgt
        self._ent_own = np.array([k for k, (kind_, _) in enumerate(self._ent_refs)
                                  if kind_ != "site"], np.intp)
        self._ent_site = ent_ix.get(("site", ""), -1)
        self._table = _FieldTable(refs)
        self._month = NONE

        # Allowance, comm loss, capture rate, reconciliation.
        self._allow_ix = np.array([ALLOWANCE_MEASURES.index(cfgs[i].measure)
                                   for i in rows["allowance_position"]], np.intp)
        self.devices = [d.id for d in plant.devices] + list(plant.system_device_ids())
        dev_ix = {d: i for i, d in enumerate(self.devices)}
        self._dev_ix = dev_ix  # a device event finds its row in O(1), not by list search
        self.fault = np.zeros(len(self.devices), np.bool_)
        self.fault_message = [""] * len(self.devices)
        self._comm_dev = np.array([dev_ix.get(cfgs[i].device, -1)
                                   for i in rows["comm_loss"]], np.intp)
        self._capture = _CaptureBank([cfgs[i] for i in rows["capture_rate"]],
                                     rows["capture_rate"])
        recon: dict[str, list[int]] = {}
        for i in rows["reconciliation_diff"]:
            recon.setdefault(cfgs[i].unit, []).append(int(i))
        self._recon = {u: np.array(r, np.intp) for u, r in recon.items()}
        carbon = rows["carbon_position"]
        self._carbon_ix = np.array([CARBON_MEASURES.index(cfgs[i].measure) for i in carbon],
                                   np.intp)
        self._carbon_days = self._carbon_ix == CARBON_MEASURES.index("days_to_deadline")
        self.carbon_covered = False  # of the last position taken

    def restore(self, row: int, level: int, suppressed: bool, t: datetime,
                value: float) -> None:
        """Hold rule `row` at `level` (suppressed or not) as its last journaled event, at `t`
        with `value`, left it before a restart; its delay timers start afresh.

        A stale rule in warning or alarm goes on counting from the minutes it had then, so
        that a value still stale after the restart does not return it to normal.
        """
        self.levels.reset(row, level)
        self.suppressed[row] = suppressed
        if level > 0 and self.specs[row].kind == "stale" and math.isfinite(value):
            pos = np.searchsorted(self._rows["stale"], row)
            self._stale_last[pos] = minute_index(t, self.clock.minute_seconds) - int(value)

    def take_over(self, old: RuleBank, kept: Sequence[tuple[int, int]]) -> None:
        """Continue where `old` (the bank before a change of rules) left off.

        Taken over: device faults, trailing emissions and the clock; the emission windows
        and closed hours of the entities both banks watch; and, for each (row, old row)
        in `kept` (rules whose definition did not change), levels, delay timers, last
        value, rate-of-change history and stale count.
        """
        self.last_m, self.trailing_30d_t, self._month = old.last_m, old.trailing_30d_t, old._month
        self.carbon_covered = old.carbon_covered
        faults = dict(zip(old.devices, zip(old.fault.tolist(), old.fault_message, strict=True),
                          strict=True))
        for d, dev in enumerate(self.devices):
            self.fault[d], self.fault_message[d] = faults.get(dev, (False, ""))
        new = np.array([r for r, _ in kept], np.intp)
        was = np.array([r for _, r in kept], np.intp)
        self.levels.take_over(old.levels, new, was)
        self.value[new] = old.value[was]
        for g in self._roc_groups:
            og = next((o for o in old._roc_groups if o.over == g.over), None)
            if og is None:
                continue
            g.stamp[:] = og.stamp
            mine = np.isin(new, g.rows)
            g.ring[np.searchsorted(g.rows, new[mine])] = og.ring[np.searchsorted(og.rows,
                                                                                 was[mine])]
        stale, old_stale = self._rows["stale"], old._rows["stale"]
        mine = np.isin(new, stale)
        self._stale_last[np.searchsorted(stale, new[mine])] = old._stale_last[
            np.searchsorted(old_stale, was[mine])]
        for w in self._windows:
            ow = next((o for o in old._windows if o.window == w.window), None)
            if ow is None:
                continue
            at = {old._ent_refs[e]: j for j, e in enumerate(ow.entities.tolist())}
            pairs = [(j, at[self._ent_refs[e]]) for j, e in enumerate(w.entities.tolist())
                     if self._ent_refs[e] in at]
            if not pairs:
                continue
            nj, oj = (np.array(x, np.intp) for x in zip(*pairs, strict=True))
            w.sums[:, nj] = ow.sums[:, oj]
            if w.rolling is not None and ow.rolling is not None:
                w.rolling.take_over(ow.rolling, nj, oj)
        self._capture.take_over(old._capture)
        self._hour_int.take_over(old._hour_int)

    def _stopped(self, result: MinuteResult) -> B1:
        """Per plant unit whether it is stopped, plus a last False for rules without one."""
        stopped = np.zeros(len(self._unit_ix) + 1, np.bool_)
        for name in stopped_units(result):
            if name in self._unit_ix:
                stopped[self._unit_ix[name]] = True
        return stopped

    def minute(self, result: MinuteResult) -> Changes:
        """Evaluate every rule on one minute's results."""
        m = minute_index(result.t, self.clock.minute_seconds)
        self.last_m = max(self.last_m, m)
        new_supp = self._stopped(result)[self._area]
        supp_rows = np.flatnonzero(new_supp != self.suppressed)
        self.suppressed = new_supp

        value = np.full(self.n, math.nan)
        flat, good = self._table.load(result, need_good=len(self._rows["stale"]) > 0)
        tv = flat[:self._n_tgt]
        value[self._rows["threshold"]] = tv[self._is_tgt[self._rows["threshold"]]]
        for g in self._roc_groups:
            value[g.rows] = g.rate(tv[self._is_tgt[g.rows]], m)
        if len(self._rows["stale"]):
            pos = self._is_tgt[self._rows["stale"]]
            ok = good[pos] & np.isfinite(tv[pos])
            last = self._stale_last
            last[(last == NONE) | ok] = m
            value[self._rows["stale"]] = (m - last).astype(np.float64)
        if len(self._comm_dev):
            value[self._rows["comm_loss"]] = self.fault[self._comm_dev].astype(np.float64)
        if self._windows:
            self._intensity(flat, m, result.t, value)
        if len(self._allow_ix):
            end = result.t + timedelta(seconds=self.clock.minute_seconds)
            meas = allowance_measures(self.clock, end, result.site.co2_ytd_t,
                                      self.plant.allowance, self.trailing_30d_t)
            value[self._rows["allowance_position"]] = meas[self._allow_ix]

        # Period-driven rules (capture rate, reconciliation) keep their last value.
        keep = np.isnan(value)
        self.value = np.where(keep, self.value, value)
        rows, old, new = self.levels.step(slice(None), value, m)
        return Changes(result.t, supp_rows, new_supp[supp_rows], rows, old, new)

    def _intensity(self, flat: F64, m: int, t: datetime, value: F64) -> None:
        """The intensity rules' values: update each window's sums with this minute."""
        # (CO2 kg, output MWh) per entity. A pair counts only when both values are there
        # and valid (flags N); otherwise as (0, 0), i.e. that minute is left out of the
        # window's numerator and denominator alike. So a lost power meter (or analyser)
        # never makes the ratio drift: the window's value is over its valid minutes, and a
        # window without any is NaN, on which every rule holds its level and timers (no
        # new alarm, no clear) — alarms.spec's "a minute without a value changes nothing".
        pair = np.zeros((len(self._ent_refs), 2))
        own = flat[self._n_tgt:self._site_ref0].reshape(-1, _PAIR)
        pair[self._ent_own] = np.where(_pair_ok(own)[:, None], own[:, :2], np.nan)
        if self._ent_site >= 0:
            su = flat[self._site_ref0:].reshape(-1, _PAIR)
            pair[self._ent_site] = su[_pair_ok(su), :2].sum(axis=0)
        ok = np.isfinite(pair).all(axis=1)
        co2 = np.where(ok, pair[:, 0] / 1000.0, 0.0)
        out = np.where(ok, pair[:, 1], 0.0)
        month = None
        for w in self._windows:
            c, o = co2[w.entities], out[w.entities]
            if w.rolling is not None:
                w.rolling.push(m, c, o)
                c, o = w.rolling.sums[0], w.rolling.sums[1]
            elif w.window == "month_to_date":
                if month is None:
                    month = month_key(self.clock, t)
                if month != self._month:
                    w.sums[:] = 0.0
                w.sums[0] += c
                w.sums[1] += o
                c, o = w.sums[0], w.sums[1]
            cr, orr = c[w.pick], o[w.pick]
            with np.errstate(divide="ignore", invalid="ignore"):
                value[w.rows] = np.where((orr > w.min_out) & (orr > 0.0), cr / orr, math.nan)
        if month is not None:
            self._month = month

    def device_event(self, event: DeviceEvent) -> Changes:
        """Take a device's fault or restoration: its comm-loss rules are evaluated at once."""
        d = self._dev_ix.get(event.device, -1)
        if d < 0:
            return Changes(event.t, _EMPTY_ROWS, np.zeros(0, np.bool_), _EMPTY_ROWS,
                           np.zeros(0, np.int8), np.zeros(0, np.int8))
        self.fault[d] = event.fault
        self.fault_message[d] = event.message
        rows = self._rows["comm_loss"][self._comm_dev == d]
        return self._step_rows(rows, np.full(len(rows), 1.0 if event.fault else 0.0), event.t)

    def note(self, row: int) -> str:
        """Extra text for a rule's condition message (a comm-loss rule's device fault)."""
        spec = self.specs[row]
        if spec.kind == "carbon_position":
            days = self._carbon_days[np.searchsorted(self._rows["carbon_position"], row)]
            return COVERED_NOTE if self.carbon_covered and days else ""
        if spec.kind != "comm_loss":
            return ""
        d = self._comm_dev[np.searchsorted(self._rows["comm_loss"], row)]
        return self.fault_message[d] if d >= 0 and self.fault[d] else ""

    def period(self, records: PeriodRecords) -> Changes:
        """Take a closed hour (capture rates, the closed-hour intensities, the trailing
        emissions of the allowance)."""
        if records.allowance is not None:
            self.trailing_30d_t = records.allowance.trailing_30d_t
        hi = self._hour_int
        if records.level != "hour" or not (len(self._capture.rows) or len(hi.rows)):
            return self._step_rows(_EMPTY_ROWS, np.zeros(0), records.t_end)
        h = minute_index(records.t, self.clock.minute_seconds) // 60
        rates = self._capture.push(hour_codes(records), h)
        ratios = hi.push(records, h, month_key(self.clock, records.t))
        rows = np.concatenate([self._capture.rows, hi.rows])
        value = np.concatenate([rates, ratios])
        m = max(minute_index(records.t_end, self.clock.minute_seconds), self.last_m)
        changed, old, new = self.levels.step(rows, value, m)
        # An intensity without a value (no valid hour, too little output) keeps its last one,
        # as the minute windows do; a capture rate below its minimum hours is NaN.
        hold = np.zeros(len(rows), np.bool_)
        hold[len(self._capture.rows):] = np.isnan(ratios)
        self.value[rows] = np.where(hold, self.value[rows], value)
        return Changes(records.t_end, _EMPTY_ROWS, np.zeros(0, np.bool_), rows[changed], old,
                       new)

    def reconciliation(self, unit: str, t: datetime, diff_pct: float) -> Changes:
        """Take one day's CEMS vs factor-method difference of a unit."""
        rows = self._recon.get(unit, _EMPTY_ROWS)
        return self._step_rows(rows, np.full(len(rows), abs(diff_pct)), t)

    def carbon_position(self, p: CompliancePosition, t: datetime,
                        deadline: CompliancePosition | None = None) -> Changes:
        """Take a compliance position computed at `t`: the carbon_position rules.

        Deficit and forecast deficit are `p`'s (the current year's); the days to the
        deadline are those of `deadline` (the year being surrendered, whose deadline
        falls in the current year), `p`'s if None. A deadline rule of a covered year is
        evaluated as if infinitely far from its (low) levels, so that it returns to
        normal; its value stays the days left.
        """
        rows = self._rows["carbon_position"]
        meas, _ = carbon_measures(p)
        days, covered = carbon_measures(p if deadline is None else deadline)
        self.carbon_covered = covered
        value = np.array([meas[0], meas[1], days[2]], np.float64)[self._carbon_ix]
        step = np.where(self._carbon_days & covered, math.inf, value)
        m = max(minute_index(t, self.clock.minute_seconds), self.last_m)
        changed, old, new = self.levels.step(rows, step, m)
        self.value[rows] = value
        return Changes(t, _EMPTY_ROWS, np.zeros(0, np.bool_), rows[changed], old, new)

    def carbon_performance(self, perf: Performance, t: datetime) -> Changes:
        """Take a year's carbon performance computed at `t`: the carbon_performance rules."""
        rows = self._rows["carbon_performance"]
        value = np.array([performance_measure(perf, typing.cast(
            "CarbonPerformanceRuleConfig", self.specs[i].config)) for i in rows], np.float64)
        return self._step_rows(rows, value, t)

    def _step_rows(self, rows: npt.NDArray[np.intp], value: F64, t: datetime) -> Changes:
        m = max(minute_index(t, self.clock.minute_seconds), self.last_m)
        self.value[rows] = value
        changed, old, new = self.levels.step(rows, value, m)
        return Changes(t, _EMPTY_ROWS, np.zeros(0, np.bool_), rows[changed], old, new)


@dataclass(slots=True, eq=False)
class _RocGroup:
    """The rate-of-change rules over the same number of minutes: one ring of past values."""

    rows: npt.NDArray[np.intp]
    over: int
    direction: npt.NDArray[np.int8]  # 0 rise, 1 fall, 2 both
    ring: F64 = dataclasses.field(init=False)
    stamp: I64 = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.ring = np.full((len(self.rows), self.over + 1), math.nan)
        self.stamp = np.full(self.over + 1, NONE, np.int64)

    def rate(self, x: F64, m: int) -> F64:
        """Record x at minute m; the watched rate per minute, NaN without x(m − over)."""
        size = self.over + 1
        self.ring[:, m % size] = x
        self.stamp[m % size] = m
        back = (m - self.over) % size
        if self.stamp[back] != m - self.over:
            return np.full(len(self.rows), math.nan)
        rate = (x - self.ring[:, back]) / self.over
        return np.where(self.direction == 0, rate,
                        np.where(self.direction == 1, -rate, np.abs(rate)))


@dataclass(slots=True, eq=False)
class _IntensityWindow:
    """The intensity rules of one window: their entities and the window's sums."""

    window: str
    rows: npt.NDArray[np.intp]  # rule rows
    entities: npt.NDArray[np.intp]  # into the bank's intensity entities
    pick: npt.NDArray[np.intp]  # per rule row: position in `entities`
    min_out: F64
    rolling: _RollingBank | None
    sums: F64  # month to date: (CO2, output) per entity


class _CaptureBank:
    """Codes of the last closed hours of the sources that capture-rate rules watch."""

    def __init__(self, configs: Sequence[CaptureRateRuleConfig],
                 rows: npt.NDArray[np.intp]) -> None:
        self.rows = rows
        self.sources = sorted({c.source for c in configs})
        where = {s: i for i, s in enumerate(self.sources)}
        self.src = np.array([where[c.source] for c in configs], np.intp)
        self.window = np.array([c.window_h for c in configs], np.int64)
        self.min_hours = np.array([c.min_hours for c in configs], np.int64)
        self.size = int(self.window.max(initial=1))
        self.codes = np.zeros((len(self.sources), self.size), np.int8)
        self.stamp = np.full(self.size, NONE, np.int64)

    def take_over(self, old: _CaptureBank) -> None:
        """The closed hours `old` holds of the sources both watch (as many as fit)."""
        where = {s: i for i, s in enumerate(old.sources)}
        common = [(i, where[s]) for i, s in enumerate(self.sources) if s in where]
        if not common:
            return
        mine, theirs = (np.array(x, np.intp) for x in zip(*common, strict=True))
        for col in np.argsort(old.stamp).tolist():  # oldest first: a later hour wins its slot
            h = int(old.stamp[col])
            if h != NONE:
                self.codes[mine, h % self.size] = old.codes[theirs, col]
                self.stamp[h % self.size] = h

    def push(self, codes: Mapping[str, int], h: int) -> F64:
        """Record closed hour h; every rule's capture rate %, NaN below its `min_hours`."""
        s = h % self.size
        self.codes[:, s] = [codes.get(src, HOUR_UNKNOWN) for src in self.sources]
        self.stamp[s] = h
        out = np.full(len(self.rows), math.nan)
        for w in np.unique(self.window):
            ago = np.arange(int(w))
            cols = (h - ago) % self.size
            current = self.stamp[cols] == h - ago
            block = np.where(current[None, :], self.codes[:, cols], HOUR_UNKNOWN)
            valid = (block == HOUR_VALID).sum(axis=1)
            counted = valid + (block == HOUR_INVALID).sum(axis=1)
            sel = self.window == w
            v, c = valid[self.src[sel]], counted[self.src[sel]]
            with np.errstate(divide="ignore", invalid="ignore"):
                out[sel] = np.where(c >= self.min_hours[sel], v / c * 100.0, math.nan)
        return out


_DAY_HOURS = 24  # the "day" window of a closed-hour intensity: the last 24 closed hours


class _HourIntensity:
    """The intensity rules evaluated on closed hours (alarms.config.closed_hour_intensity).

    Per entity (source, unit, site) the accounted (CO2 t, output MWh or t) of each of its
    last 24 closed hours that is valid for intensity — (0, 0) for one that is not, so that
    it is left out of numerator and denominator alike, as compute/periods.py's day
    intensity leaves it — and the sums of the plant-local month's. "hour" is the last
    closed hour, "day" Σ CO2 / Σ output of the last 24, "month_to_date" of the month's.
    """

    def __init__(self, configs: Sequence[IntensityRuleConfig], rows: npt.NDArray[np.intp],
                 plant: AlarmPlantConfig) -> None:
        self.rows = rows
        keys = [("source", c.scope.source) if c.scope.source else
                ("unit", c.scope.unit or "") if c.scope.unit else ("site", "") for c in configs]
        self.entities = sorted(set(keys))
        where = {e: i for i, e in enumerate(self.entities)}
        self.ent = np.array([where[k] for k in keys], np.intp)
        self.window = [c.window for c in configs]
        self.min_out = np.array([c.min_output for c in configs], np.float64)
        # Per entity: the units whose output divides, and whether each one's is in t.
        self._units = {e: [(u.id, u.output.unit == "t") for u in intensity_units(c.scope, plant)]
                       for e, c in zip(keys, configs, strict=True)}
        n = len(self.entities)
        self.ring = np.zeros((2, n, _DAY_HOURS))
        self.stamp = np.full(_DAY_HOURS, NONE, np.int64)
        self.month = NONE
        self.month_sums = np.zeros((2, n))
        self.last_h = NONE

    def take_over(self, old: _HourIntensity) -> None:
        """The closed hours and month sums `old` holds of the entities both watch."""
        at = {e: j for j, e in enumerate(old.entities)}
        common = [(i, at[e]) for i, e in enumerate(self.entities) if e in at]
        self.stamp[:], self.month, self.last_h = old.stamp, old.month, old.last_h
        if not common:
            return
        mine, theirs = (np.array(x, np.intp) for x in zip(*common, strict=True))
        self.ring[:, mine] = old.ring[:, theirs]
        self.month_sums[:, mine] = old.month_sums[:, theirs]

    def _entity_hour(self, entity: tuple[str, str], records: PeriodRecords) -> tuple[float,
                                                                                    float]:
        """(CO2 t, output) of an entity's closed hour; (NaN, NaN) unless valid for intensity:
        the unit hour's intensity flag N (a valid output hour and every part of its CO2)
        with CO2 and output finite; a site hour is Σ over its units valid so."""
        units = {u.unit: u for u in records.units}
        co2 = out = 0.0
        counted = False
        for uid, in_t in self._units[entity]:
            u = units.get(uid)
            if u is None or u.intensity_flag is not DataFlag.N:
                continue
            o = u.output_t if in_t else u.output_mwh
            c = u.co2_t
            if entity[0] == "source":  # its stack's CO2 over its unit's output
                c = next((s.co2_t for s in records.sources if s.source == entity[1]),
                         math.nan)
            if math.isfinite(c) and math.isfinite(o):
                co2, out, counted = co2 + c, out + o, True
        return (co2, out) if counted else (math.nan, math.nan)

    def push(self, records: PeriodRecords, h: int, month: int) -> F64:
        """Take closed hour h (of plant-local `month`): every rule's intensity, NaN without
        a valid hour or at or below its minimum output (then the rule keeps its level)."""
        out = np.full(len(self.rows), math.nan)
        if not len(self.rows) or h <= self.last_h:  # an hour already taken: no change
            return out
        self.last_h = h
        pairs = np.array([self._entity_hour(e, records) for e in self.entities],
                         np.float64).reshape(-1, 2).T
        ok: B1 = np.asarray(np.isfinite(pairs).all(axis=0), np.bool_)
        hour = np.where(ok[None, :], pairs, 0.0)
        s = h % _DAY_HOURS
        self.ring[:, :, s] = hour
        self.stamp[s] = h
        if month != self.month:
            self.month, self.month_sums[:] = month, 0.0
        self.month_sums += hour
        ago = np.arange(_DAY_HOURS)
        current = self.stamp[(h - ago) % _DAY_HOURS] == h - ago
        day = self.ring[:, :, (h - ago) % _DAY_HOURS][:, :, current].sum(axis=2)
        for k, (e, w) in enumerate(zip(self.ent.tolist(), self.window, strict=True)):
            if w == "hour" and not ok[e]:
                continue
            c, o = (hour if w == "hour" else day if w == "day" else self.month_sums)[:, e]
            if o > self.min_out[k] and o > 0.0:
                out[k] = c / o
        return out
