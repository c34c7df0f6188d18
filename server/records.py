"""The record keeper: entries people make, checked, kept in the ledger, audited, and applied.

An entry (lab factors, a day's quantity, a correction, a CEMS zero / span check or
comparison test, a period lock) is checked against the plant (what it names exists, its
period is aligned, not in the future, not locked; units match), appended to the ledger
(server/ledger.py) and the audit log, and then applied:

- the ledger becomes one `compute.entries.Records` (`records_of`), the plan the live
  period stage and `carbonscada recalc --entries` both take;
- the closed periods it changes are recalculated by the recalc path itself: the stored
  raw windows from the start of the first day it touches, through the minute calculator
  and a period stage restored from the stored hours and days before that day, up to the
  live open hour. The live stage then continues from the recalculation's closed hours and
  days (its year to date, its substitution lookback), so later hours and the allowance
  follow the correction;
- the recalculated hours and days replace the stored ones; every row that changes is kept
  in the historian's `revision` table with the entry that changed it, and the sinks (OPC UA,
  web, alarms) are handed the recalculated records in time order.

An entry that would change results whose raw samples are no longer kept (pruned after
`retention.raw_days`) is refused: a recalculation must be able to reproduce what it
replaces.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from compute import qa
from compute.cycle import PAIRED_CO2, PAIRED_OUTPUT, MinuteCycle
from compute.entries import LabFactor, Override, Records, changed_intervals
from compute.factors import FACTOR_UNITS, FactorTable
from compute.minute import MinuteCalculator
from compute.periods import PeriodCycle, windows_batch
from compute.plan import CalculationPlan, build_plan
from model.errors import CarbonScadaError, InvalidValueError, LockedPeriodError
from model.flags import DataFlag
from model.records import PeriodRecords, RevisedMinute, RevisedMinutes
from server.audit import AuditLog
from server.config import Plant
from server.historian import Historian, MinuteRevision
from server.ledger import Entry, Ledger

log = logging.getLogger("carbonscada")



class RecordsError(InvalidValueError):
    """An entry is refused: names the field or period and why (HTTP 400, CLI exit 2)."""


class LockedError(RecordsError, LockedPeriodError):
    """An entry would change a locked period (HTTP 409)."""


# ------------------------------------------------------------------ what may be entered


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FactorIn(_In):
    """Lab factors of a factor set, in force from a date (or a correction of a version)."""

    kind: Literal["factor"]
    factors: str = Field(min_length=1)
    effective_from: AwareDatetime
    values: dict[str, float] = Field(min_length=1)
    units: dict[str, str] = {}  # optional: each value's unit, checked against the name
    document: str = Field(min_length=1)
    reason: str = ""


class QuantityIn(_In):
    """A period's quantity of a stream or output of a unit that no instrument gives."""

    kind: Literal["quantity"]
    target: str  # stream:ID or unit:ID
    level: Literal["hour", "day"]
    t: AwareDatetime
    value: float
    unit: str = Field(min_length=1)
    document: str = Field(min_length=1)
    reason: str = ""


class CorrectionIn(_In):
    """A stored value corrected, with the mandatory reason."""

    kind: Literal["correction"]
    target: str  # source:ID, stream:ID or unit:ID
    level: Literal["minute", "hour", "day"]
    t: AwareDatetime
    values: dict[str, float] = Field(min_length=1)
    reason: str = Field(min_length=1)
    document: str = ""


class QaCheckIn(_In):
    """A daily zero or span check of a CEMS analyser (HJ 75-2017)."""

    kind: Literal["qa_check"]
    source: str
    t: AwareDatetime
    check: Literal["zero", "span"]
    parameter: str
    reference_value: float
    measured_value: float
    full_scale: float
    unit: str = Field(min_length=1)
    document: str = ""
    reason: str = ""


class RaTestIn(_In):
    """A periodic comparison test against a reference method (HJ 75-2017)."""

    kind: Literal["ra_test"]
    source: str
    t: AwareDatetime
    parameter: str
    reference: list[float] = Field(min_length=2)
    cems: list[float] = Field(min_length=2)
    unit: str = Field(min_length=1)
    document: str = Field(min_length=1)
    reason: str = ""


class LockIn(_In):
    """A period locked (e.g. a reported month): no corrections or entries into it."""

    kind: Literal["lock"]
    start: AwareDatetime
    end: AwareDatetime
    reason: str = Field(min_length=1)


class UnlockIn(_In):
    """A lock ended, with the reason."""

    kind: Literal["unlock"]
    lock: int
    reason: str = Field(min_length=1)


EntryIn = Annotated[FactorIn | QuantityIn | CorrectionIn | QaCheckIn | RaTestIn | LockIn
                    | UnlockIn, Field(discriminator="kind")]
_ENTRY = TypeAdapter(EntryIn)


def parse_entry(body: Any) -> FactorIn | QuantityIn | CorrectionIn | QaCheckIn | RaTestIn \
        | LockIn | UnlockIn:
    """An entry from its JSON body; RecordsError naming the field otherwise."""
    try:
        return _ENTRY.validate_python(body)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
                             for e in exc.errors())
        raise RecordsError(f"entry: {problems}") from None


# ------------------------------------------------------------------ ledger → Records


def _target(text: str) -> tuple[str, str]:
    kind, _, ident = text.partition(":")
    return kind, ident


def qa_checks(entries: Iterable[Entry]) -> list[qa.QaCheck]:
    """The zero and span checks of the ledger."""
    return [qa.QaCheck(e.target, e.t, e.fields["check"], e.fields["parameter"],
                       float(e.fields["reference_value"]), float(e.fields["measured_value"]),
                       float(e.fields["full_scale"]), e.unit, e.id)
            for e in entries if e.kind == "qa_check"]


def records_of(entries: Iterable[Entry], qa_limits: Mapping[str, qa.QaConfig]) -> Records:
    """What the calculation applies of the ledger's entries (entry order kept)."""
    entries = list(entries)
    overrides: list[Override] = []
    labs: list[LabFactor] = []
    for e in entries:
        if e.kind == "factor":
            labs.append(LabFactor(e.target, e.t, {k: float(v) for k, v in e.fields.items()},
                                  e.document, e.id))
        elif e.kind in ("quantity", "correction"):
            kind, ident = _target(e.target)
            overrides.append(Override(kind, e.level, ident, e.t,  # type: ignore[arg-type]
                                      {k: float(v) for k, v in e.fields.items()}, e.id))
    ooc = qa.out_of_control(qa_checks(entries), qa_limits)
    return Records(tuple(overrides), tuple(labs), MappingProxyType(ooc))


def qa_limits(config: Any) -> dict[str, qa.QaConfig]:
    """Each source's QA limits: its `qa:` block, else the standard's."""
    return {s.id: s.qa or qa.DEFAULT_QA for _, s in config.sources()}


@dataclass(frozen=True, slots=True)
class Lock:
    """A locked period [start, end) and the entry that locked it."""

    entry: Entry

    @property
    def start(self) -> datetime:
        """Start of the locked period (UTC)."""
        return self.entry.t

    @property
    def end(self) -> datetime:
        """End of the locked period (UTC, exclusive)."""
        assert self.entry.t_end is not None
        return self.entry.t_end


def active_locks(entries: Iterable[Entry]) -> list[Lock]:
    """The locks of the ledger that no unlock ended, oldest first."""
    locks: dict[int, Lock] = {}
    for e in entries:
        if e.kind == "lock":
            locks[e.id] = Lock(e)
        elif e.kind == "unlock":
            locks.pop(int(e.fields["lock"]), None)
    return list(locks.values())


# ------------------------------------------------------------------ the keeper


# The recalculated hours and days, oldest first, for the sinks (the runtime decides which).
_SOURCE_VALUES = ("flow_act_m3_h", "flow_std_dry_m3_h", "co2_dry_pct", "co2_mg_m3",
                  "co2_rate_kg_h", "co2_kg")


def _kg(x: float | None) -> float:
    """A stored amount as the running sums count it: none (NULL, NaN) adds nothing."""
    return 0.0 if x is None or not math.isfinite(x) else float(x)


Publish = Callable[[Sequence[PeriodRecords]], None]


class RecordKeeper:
    """Checks, keeps and applies entries for one running server."""

    def __init__(self, plant: Plant, historian: Historian, audit: AuditLog,
                 live: PeriodCycle, calc: MinuteCalculator, publish: Publish,
                 minutes: MinuteCycle | None = None,
                 publish_minutes: Callable[[RevisedMinutes], None] | None = None,
                 settled: Callable[[], Awaitable[None]] | None = None) -> None:
        self.plant = plant
        self.config = plant.config
        self.historian = historian
        self.audit = audit
        self.ledger = Ledger(plant.config.historian.path)
        self.live = live
        self.minutes = minutes  # the live minute cycle: flags D while out of control
        self.calc = calc
        self._publish = publish
        self._publish_minutes = publish_minutes  # corrected minutes, to InfluxDB
        # Until the historian stored what the live server handed it: a recalculation reads
        # the raw windows back, and one still queued (the last minute of an hour closed
        # just before the entry, a loaded machine) would be left out of the revised hour.
        self._settled = settled
        self._lock = asyncio.Lock()  # one entry applied at a time
        self._entries: list[Entry] = []
        self.plan: CalculationPlan = plant.plan()
        self._qa_limits = qa_limits(self.config)
        self._sources = {s.id: u.id for u, s in self.config.sources()}
        self._unit_sources = {u.id: [s.id for s in u.sources] for u in self.config.units}
        self._streams = {s.id: s for _, s in self.config.streams()}
        self._units = {u.id: u.output.unit for u in self.config.units}  # id → MWh | t

    # -------------------------------------------------------------- start

    async def load(self) -> CalculationPlan:
        """Read the ledger; the plan with its entries (before the period stage restores)."""
        self._entries = await asyncio.to_thread(self.ledger.entries)
        self.plan = self._plan(self._entries)
        self._use(self.plan)
        return self.plan

    def _use(self, plan: CalculationPlan) -> None:
        self.live.use(plan)
        if self.minutes is not None:
            self.minutes.use_records(plan.records)

    def _plan(self, entries: Sequence[Entry]) -> CalculationPlan:
        return build_plan(self.config, self.plan.tag_ids, self.plant.factors,
                          records_of(entries, self._qa_limits))

    @property
    def factors(self) -> FactorTable:
        """The factor table in force: the configured versions and the lab entries'."""
        return self.plan.factors

    def locked_ranges(self) -> list[tuple[datetime, datetime]]:
        """The locked periods, for retention (never pruned)."""
        return [(lk.start, lk.end) for lk in active_locks(self._entries)]

    # -------------------------------------------------------------- reading

    def entries(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Every entry (of one kind), oldest first, as JSON-ready dicts."""
        return [self._entry_json(e) for e in self._entries if kind is None or e.kind == kind]

    def _entry_json(self, e: Entry) -> dict[str, Any]:
        out = e.as_json()
        if e.kind == "qa_check":
            c = qa_checks([e])[0]
            r = qa.judge_check(c, self._qa_limits.get(c.source, qa.DEFAULT_QA))
            out["result"] = {"drift_pct_fs": r.drift_pct_fs, "status": r.status,
                             "requirement_pct_fs": r.requirement_pct_fs,
                             "out_of_control_pct_fs": r.out_of_control_pct_fs}
        elif e.kind == "ra_test":
            t = qa.RaTest(e.target, e.t, e.fields["parameter"],
                          tuple(e.fields["reference"]), tuple(e.fields["cems"]), e.unit, e.id)
            ra = qa.judge_ra(t, self._qa_limits.get(e.target, qa.DEFAULT_QA))
            out["result"] = {"n": ra.n, "ra_pct": ra.ra_pct, "re_pct": ra.re_pct,
                             "mean_reference": ra.mean_reference, "mean_cems": ra.mean_cems,
                             "cc": ra.cc, "ra_limit_pct": ra.ra_limit_pct,
                             "re_limit_pct": ra.re_limit_pct, "min_pairs": ra.min_pairs,
                             "passed": ra.passed}
        elif e.kind == "factor":
            out["factor_version"] = f"{e.target}@lab{e.id}"
        return out

    def locks(self) -> list[dict[str, Any]]:
        """The locks in force."""
        return [self._entry_json(lk.entry) for lk in active_locks(self._entries)]

    def out_of_control(self) -> dict[str, list[dict[str, str | None]]]:
        """Per source, the intervals its analyser was out of control (open: end null)."""
        def iso(t: float) -> str | None:
            return None if math.isinf(t) else datetime.fromtimestamp(t, UTC).isoformat()
        return {s: [{"start": iso(a), "end": iso(b)} for a, b in spans]
                for s, spans in self.plan.records.out_of_control.items()}

    async def history(self, table: str, ident: str, t: datetime) -> dict[str, Any]:
        """Every version of one stored row: the earlier ones with the entry that replaced
        each, and the current one."""
        current = await self.historian.current_row(table, ident, t)
        by_id = {e.id: e for e in self._entries}
        versions = []
        for r in await self.historian.revisions(table, ident, t):
            e = by_id.get(r["entry"])
            versions.append({"rev": r["rev"], "row": r["row"],
                             "replaced": r["replaced"].isoformat(),
                             "replaced_by": None if e is None else self._entry_json(e)})
        return {"table": table, "id": ident, "t": t.isoformat(), "versions": versions,
                "current": current}

    # -------------------------------------------------------------- entering

    async def enter(self, user: str, body: Any) -> dict[str, Any]:
        """Check, keep, audit and apply one entry; what it changed."""
        item = parse_entry(body)
        async with self._lock:
            kind, target, level, t, t_end, fields, unit, since = self._check(item)
            if kind == "correction" and level == "minute":
                await self._check_minute_row(target, t, fields)
            e = await asyncio.to_thread(
                self.ledger.append, user, kind, target, level, t, fields, t_end=t_end,
                unit=unit, document=getattr(item, "document", ""), reason=item.reason)
            await asyncio.to_thread(self.audit.append, user, f"entry_{kind}",
                                    f"entry:{e.id}", e.as_json())
            self._entries.append(e)
            applied: dict[str, Any] = {"recalculated_from": None, "hours": 0, "days": 0,
                                       "rows_revised": 0}
            if since is not None:
                applied = await self._apply(e, since)
            return {"entry": self._entry_json(e), **applied}

    def _check(self, item: Any) -> tuple[str, str, str, datetime, datetime | None,
                                         dict[str, Any], str, datetime | None]:
        """(kind, target, level, t, t_end, fields, unit, recalculate from) of an entry."""
        clock = self.live.clock
        now = datetime.now(UTC)
        if isinstance(item, LockIn):
            start, end = item.start.astimezone(UTC), item.end.astimezone(UTC)
            if end <= start:
                raise RecordsError(f"lock: end {end.isoformat()} is not after start "
                                   f"{start.isoformat()}")
            return "lock", "", "", start, end, {}, "", None
        if isinstance(item, UnlockIn):
            if item.lock not in {lk.entry.id for lk in active_locks(self._entries)}:
                raise RecordsError(f"unlock: entry {item.lock} is not a lock in force")
            lk = next(x for x in active_locks(self._entries) if x.entry.id == item.lock)
            return "unlock", "", "", lk.start, lk.end, {"lock": item.lock}, "", None
        if isinstance(item, FactorIn):
            t = item.effective_from.astimezone(UTC)
            known = set(self.plant.factors.streams) | {s.factors for s in self._streams.values()}
            if item.factors not in known:
                raise RecordsError(f"factor: factors {item.factors!r} is no factor set of "
                                   f"the plant (known: {', '.join(sorted(known))})")
            for name, u in item.units.items():
                if FACTOR_UNITS.get(name, u) != u:
                    raise RecordsError(f"factor: {name} is in {FACTOR_UNITS[name]}, not {u}")
            replaces = [v.id for v in self.factors.versions(item.factors)
                        if v.effective_from == t] if item.factors in self.factors.streams else []
            if replaces and not item.reason:
                raise RecordsError(f"factor: version {replaces[0]!r} is in force from "
                                   f"{t.isoformat()}; correcting it needs a reason")
            # The values are checked as the version they become.
            trial = Records(lab_factors=(LabFactor(item.factors, t, item.values, item.document),))
            try:
                trial.factor_table(self.plant.factors)
            except InvalidValueError as exc:
                raise RecordsError(f"factor: {exc}") from None
            self._check_time(t, now, "factor: effective_from")
            self._check_unlocked(t, None, "factor")
            return ("factor", item.factors, "", t, None, dict(item.values), "", t)
        if isinstance(item, QuantityIn | CorrectionIn):
            kind, ident = _target(item.target)
            what = f"{item.kind} of {item.target} {item.level}"
            if isinstance(item, QuantityIn):
                out_unit = self._units.get(ident, "MWh")
                field = ("quantity" if kind == "stream"
                         else "output_t" if out_unit == "t" else "output_mwh")
                values = {field: item.value}
                want = (self._streams[ident].quantity_unit if kind == "stream"
                        and ident in self._streams else out_unit)
                if kind in ("stream", "unit") and item.unit != want:
                    raise RecordsError(f"{what}: the quantity is in {want}, not {item.unit!r}")
                if kind not in ("stream", "unit"):
                    raise RecordsError(f"{what}: target must be stream:ID or unit:ID")
            else:
                values = dict(item.values)
            self._check_target(kind, ident, what)
            if kind == "unit":  # a product unit's output is in t, a power unit's in MWh
                wrong = "output_mwh" if self._units[ident] == "t" else "output_t"
                if wrong in values:
                    raise RecordsError(f"{what}: unit {ident!r} has its output in "
                                       f"{self._units[ident]}: set "
                                       f"{'output_t' if wrong == 'output_mwh' else 'output_mwh'}, "
                                       f"not {wrong}")
            t = item.t.astimezone(UTC)
            start = {"minute": clock.minute_start, "hour": clock.hour_start,
                     "day": clock.day_start}[item.level](t)
            if start != t:
                raise RecordsError(f"{what}: {item.t.isoformat()} is not the start of a plant "
                                   f"{item.level} (that one starts {start.isoformat()})")
            end = {"minute": clock.next_minute, "hour": clock.next_hour,
                   "day": clock.next_day}[item.level](t)
            try:
                Override(kind, item.level, ident, t, values)  # type: ignore[arg-type]
            except InvalidValueError as exc:
                raise RecordsError(str(exc)) from None
            self._check_time(t, now, f"{what}: t")
            if item.level == "minute" and end > now - timedelta(
                    seconds=self.config.clock.minute_seconds):
                raise RecordsError(f"{what}: the minute {t.isoformat()} is not closed yet")
            self._check_unlocked(t, end, what)
            return (item.kind, item.target, item.level, t, None, values,
                    getattr(item, "unit", ""), t)
        if isinstance(item, QaCheckIn | RaTestIn):
            if item.source not in self._sources:
                raise RecordsError(f"{item.kind}: source {item.source!r} is not configured "
                                   f"(sources: {', '.join(self._sources)})")
            t = item.t.astimezone(UTC)
            self._check_time(t, now, f"{item.kind}: t")
            try:
                if isinstance(item, QaCheckIn):
                    fields: dict[str, Any] = {
                        "check": item.check, "parameter": item.parameter,
                        "reference_value": item.reference_value,
                        "measured_value": item.measured_value, "full_scale": item.full_scale}
                    qa.QaCheck(item.source, t, item.check, item.parameter,  # type: ignore[arg-type]
                               item.reference_value, item.measured_value, item.full_scale,
                               item.unit)
                else:
                    fields = {"parameter": item.parameter, "reference": list(item.reference),
                              "cems": list(item.cems)}
                    qa.judge_ra(qa.RaTest(item.source, t, item.parameter,  # type: ignore[arg-type]
                                          tuple(item.reference), tuple(item.cems), item.unit),
                                self._qa_limits[item.source])
            except InvalidValueError as exc:
                raise RecordsError(f"{item.kind}: {exc}") from None
            if isinstance(item, RaTestIn):
                return "ra_test", item.source, "", t, None, fields, item.unit, None
            self._check_unlocked(t, None, "qa_check")
            return "qa_check", item.source, "", t, None, fields, item.unit, t
        raise RecordsError(f"entry kind {getattr(item, 'kind', '?')!r} is not handled")

    def _check_target(self, kind: str, ident: str, what: str) -> None:
        known: Iterable[str] | None = {"source": list(self._sources),
                                       "stream": list(self._streams),
                                       "unit": sorted(self._units)}.get(kind)
        if known is None:
            raise RecordsError(f"{what}: target must be source:ID, stream:ID or unit:ID")
        if ident not in known:
            raise RecordsError(f"{what}: {kind} {ident!r} is not configured "
                               f"({kind}s: {', '.join(known)})")

    @staticmethod
    def _check_time(t: datetime, now: datetime, what: str) -> None:
        if t > now:
            raise RecordsError(f"{what} {t.isoformat()} is in the future")

    def _check_unlocked(self, start: datetime, end: datetime | None, what: str) -> None:
        """Refuse an entry that changes a locked period (a day from `start` on, or [start, end))."""
        for lk in active_locks(self._entries):
            if lk.end > start and (end is None or lk.start < end):
                raise LockedError(
                    f"{what}: {lk.start.isoformat()} – {lk.end.isoformat()} is locked (entry "
                    f"{lk.entry.id} by {lk.entry.user}: {lk.entry.reason}); an admin must "
                    "unlock it first")

    # -------------------------------------------------------------- applying

    async def _apply(self, e: Entry, since: datetime) -> dict[str, Any]:
        """Recalculate what the entry changes, store it with revisions and publish it."""
        before = self.plan.records
        plan = self._plan(self._entries)
        self.plan = plan
        self._use(plan)  # the open hour closes with the entry applied
        open_hour = self.live.open_hour
        if open_hour is None or since >= open_hour:
            return {"recalculated_from": None, "hours": 0, "days": 0, "rows_revised": 0}
        d0 = self.live.clock.day_start(since)
        await self._check_raw_kept(d0)
        cycle, closed = await self._recalculate(plan, d0)
        if cycle is not None:
            self.live.adopt_closed(cycle)
        stored: dict[tuple[str, str, datetime], DataFlag] = {}  # each revised row's flag
        minutes, deltas = await self._set_minutes(e, stored)
        reflagged, moved = await self._reflag(before, plan.records, stored)
        minutes += reflagged
        revised = await self.historian.write_revised(closed, e.id, minutes)
        if self.minutes is not None:  # today's and the year's running sums, as stored now
            for key, delta in deltas:
                self.minutes.totals.correct(key, e.t, delta)
            for key, t, delta in moved:
                self.minutes.totals.correct(key, t, delta)
        if minutes and self._publish_minutes is not None:
            self._publish_minutes(RevisedMinutes(tuple(
                RevisedMinute(table.split("_")[0], ident, self._unit_of(table, ident), t,
                              old, DataFlag[str(values["flag"])],
                              {k: v for k, v in values.items() if k not in ("flag", "valid")},
                              e.id)
                for table, ident, t, values in minutes
                for old in (stored[(table, ident, t)],))))
        self._publish(closed)
        n_h = sum(r.level == "hour" for r in closed)
        log.info("entry %d (%s %s): %d hours and %d days recalculated from %s, %d stored rows "
                 "revised", e.id, e.kind, e.target, n_h, len(closed) - n_h, d0.isoformat(),
                 revised)
        return {"recalculated_from": d0.isoformat(), "hours": n_h, "days": len(closed) - n_h,
                "rows_revised": revised}

    async def _set_minutes(self, e: Entry,
                           stored: dict[tuple[str, str, datetime], DataFlag],
                           ) -> tuple[list[MinuteRevision],
                                                    list[tuple[str, float]]]:
        """A minute correction's stored rows and what it moves the running totals by.

        The source_minute row gets the values set, the concentration, rate and mass they
        give by the minute formulas (compute/kernels.py), flag S; its unit_minute row the
        unit's mass again as the sum of its sources' (NaN if one has none, as the kernel
        sums) and the worst of their flags, unless the unit's own output meter flagged it
        worse. The deltas are (totals key, kg or MWh) of compute/cycle.py's running sums.
        """
        kind, ident = _target(e.target)
        if e.level != "minute" or kind != "source":
            return [], []
        h = self.historian
        row = await h.current_row("source_minute", ident, e.t)
        if row is None:
            return [], []
        v = self.plan.records.values("source", "minute", ident, e.t)
        rho = self.config.constants.co2_density_kg_m3
        c = float(v.get("co2_dry_pct", row["co2_dry_pct"]))
        q = float(v.get("flow_std_dry_m3_h", row["flow_std_dry_m3_h"]))
        rate = c / 100.0 * rho * q
        kg = rate * self.config.clock.minute_seconds / 3600.0
        out: list[MinuteRevision] = [("source_minute", ident, e.t, {
            "co2_dry_pct": c, "flow_std_dry_m3_h": q, "co2_mg_m3": c * rho * 1e4,
            "co2_rate_kg_h": rate, "co2_kg": kg, "valid": 1, "flag": "S"})]
        stored[("source_minute", ident, e.t)] = DataFlag[row["flag"]]
        deltas = [(f"{ident}.co2_kg", kg - _kg(row["co2_kg"]))]
        unit_id = self._sources[ident]
        unit = await h.current_row("unit_minute", unit_id, e.t)
        if unit is None:
            return out, deltas
        masses, old_worst, new_worst = [], DataFlag.N, DataFlag.N
        for sid in self._unit_sources[unit_id]:
            r = row if sid == ident else await h.current_row("source_minute", sid, e.t)
            flag = DataFlag[r["flag"]] if r is not None else DataFlag.B
            old_worst = max(old_worst, flag)
            new_worst = max(new_worst, DataFlag.S if sid == ident else flag)
            masses.append(kg if sid == ident else (
                math.nan if r is None or r["co2_kg"] is None else float(r["co2_kg"])))
        co2 = math.fsum(masses) if all(math.isfinite(m) for m in masses) else math.nan
        was = DataFlag[unit["flag"]]
        flag = was if was > old_worst else new_worst  # the output meter's flag stays
        valid = flag in (DataFlag.N, DataFlag.S)
        out_mwh = unit["output_mwh"]
        paired = valid and math.isfinite(co2) and out_mwh is not None
        intensity = co2 / 1000.0 / out_mwh if paired and out_mwh > 0 else None
        stored[("unit_minute", unit_id, e.t)] = DataFlag[unit["flag"]]
        out.append(("unit_minute", unit_id, e.t, {
            "co2_kg": co2 if math.isfinite(co2) else None, "flag": flag.name,
            "valid": int(valid), "intensity_t_mwh": intensity}))
        was_paired = (was is DataFlag.N and unit["co2_kg"] is not None
                      and out_mwh is not None)
        deltas += [(f"{unit_id}.co2_kg", _kg(co2) - _kg(unit["co2_kg"])),
                   (f"{unit_id}.{PAIRED_CO2}", (co2 if paired else 0.0)
                    - (_kg(unit["co2_kg"]) if was_paired else 0.0)),
                   (f"{unit_id}.{PAIRED_OUTPUT}", (_kg(out_mwh) if paired else 0.0)
                    - (_kg(out_mwh) if was_paired else 0.0))]
        return out, deltas

    async def _reflag(self, old: Records, new: Records,
                      stored: dict[tuple[str, str, datetime], DataFlag],
                      ) -> tuple[list[MinuteRevision], list[tuple[str, datetime, float]]]:
        """The stored minutes a QA entry moved into or out of control, flagged again.

        The live minute cycle flagged D only what was out of control when it ran; a check
        entered later (a failed one found at the morning review, a pass that ends an
        interval) changes minutes already stored. Their flags come again from their raw
        windows (the instrument's own flags, C while calibrating) with the intervals now in
        force; a minute set by hand keeps S; a unit minute takes the worst of its sources'
        flags unless its output meter's was worse (as stored). Also (totals key, minute,
        change) of the running sums of valid minutes behind today's intensity.
        """
        changed = changed_intervals(old.out_of_control, new.out_of_control)
        bounds = await self.historian.minute_bounds()
        if not changed or bounds is None:
            return [], []
        end_s = bounds[1].timestamp() + 1.0
        spans = {s: [(a, min(b, end_s)) for a, b in v if a < end_s] for s, v in changed.items()
                 if s in self._sources}
        spans = {s: v for s, v in spans.items() if v}
        if not spans:
            return [], []
        a0 = datetime.fromtimestamp(min(a for v in spans.values() for a, _ in v), UTC)
        a1 = datetime.fromtimestamp(max(b for v in spans.values() for _, b in v), UTC)
        tag_ids = tuple(self.calc.tag_ids)
        windows = [w for w in await self.historian.raw_windows(a0, a1) if w[1].tags == tag_ids]
        if not windows:
            return [], []
        batch = await asyncio.to_thread(windows_batch, self.calc, windows, ())
        t_s = batch.t_s
        pos = {sid: i for i, sid in enumerate(self.live.source_ids)}
        units = sorted({self._sources[s] for s in spans})
        ids = [sid for u in units for sid in self._unit_sources[u]]
        src_rows = await self.historian.minute_rows("source_minute", ids, a0, a1)
        unit_rows = await self.historian.minute_rows("unit_minute", units, a0, a1)
        out: list[MinuteRevision] = []
        moved: list[tuple[str, datetime, float]] = []
        new_flag: dict[tuple[str, datetime], DataFlag] = {}
        for sid, v in spans.items():
            i = pos[sid]
            for k in np.flatnonzero(np.logical_or.reduce(
                    [(t_s >= a) & (t_s < b) for a, b in v])).tolist():
                t = windows[k][0]
                row = src_rows.get((sid, t))
                if row is None or row["flag"] == "S":
                    continue
                flag = DataFlag(int(batch.source_flag[k, i]))
                if any(t0 <= t_s[k] < t1 for t0, t1 in new.out_of_control.get(sid, ())):
                    flag = max(flag, DataFlag.D)
                new_flag[(sid, t)] = flag
                if flag.name != row["flag"]:  # the values with it: a sink writes them anew
                    stored[("source_minute", sid, t)] = DataFlag[row["flag"]]
                    out.append(("source_minute", sid, t, {
                        **{c: row[c] for c in _SOURCE_VALUES}, "flag": flag.name,
                        "valid": int(flag in (DataFlag.N, DataFlag.S))}))
        for unit in units:
            for t in sorted({t for (sid, t) in new_flag if self._sources[sid] == unit}):
                urow = unit_rows.get((unit, t))
                if urow is None:
                    continue
                sources_were = [DataFlag[r["flag"]] for sid in self._unit_sources[unit]
                                if (r := src_rows.get((sid, t))) is not None]
                now = [new_flag.get((sid, t), DataFlag[r["flag"]])
                       for sid in self._unit_sources[unit]
                       if (r := src_rows.get((sid, t))) is not None]
                was = DataFlag[urow["flag"]]
                flag = was if was > max(sources_were, default=DataFlag.N) else max(
                    now, default=DataFlag.N)
                if flag is was:
                    continue
                valid = flag in (DataFlag.N, DataFlag.S)
                co2, mwh = urow["co2_kg"], urow["output_mwh"]
                intensity = (co2 / 1000.0 / mwh if valid and co2 is not None and mwh
                             and mwh > 0 else None)
                stored[("unit_minute", unit, t)] = DataFlag[urow["flag"]]
                out.append(("unit_minute", unit, t, {
                    "output_mwh": mwh, "co2_kg": co2, "intensity_t_mwh": intensity,
                    "flag": flag.name, "valid": int(valid)}))
                # the minute enters or leaves the valid sums (compute/cycle.py pairs them)
                was_paired = was in (DataFlag.N, DataFlag.S)
                if co2 is not None and mwh is not None and was_paired != valid:
                    sign = 1.0 if valid else -1.0
                    moved += [(f"{unit}.{PAIRED_CO2}", t, sign * co2),
                              (f"{unit}.{PAIRED_OUTPUT}", t, sign * mwh)]
        return out, moved

    def _unit_of(self, table: str, ident: str) -> str:
        return self._sources[ident] if table == "source_minute" else ident

    async def _check_minute_row(self, target: str, t: datetime, fields: Mapping[str, Any],
                                ) -> None:
        """Refuse (before it is kept) a minute correction that leaves the stored minute
        without a concentration or a flow: its mass could not be worked out."""
        kind, ident = _target(target)
        row = (await self.historian.current_row("source_minute", ident, t)
               if kind == "source" else None)
        if row is None:
            return
        missing = [n for n in ("co2_dry_pct", "flow_std_dry_m3_h")
                   if n not in fields and row[n] is None]
        if missing:
            raise RecordsError(f"correction of {target} minute {t.isoformat()}: the stored "
                               f"minute has no {' and no '.join(missing)}; set "
                               f"{' and '.join(missing)} too")

    async def _check_raw_kept(self, d0: datetime) -> None:
        """Refuse when results from d0 on exist whose raw samples were pruned."""
        bounds = await self.historian.minute_bounds()
        first_raw = await self.historian.first_raw_window()
        if bounds is None:
            return
        if first_raw is None or (first_raw > d0 and bounds[0] < first_raw):
            kept = "none" if first_raw is None else f"from {first_raw.isoformat()} on"
            raise RecordsError(
                f"the raw samples of {d0.isoformat()} and later are no longer kept (raw "
                f"samples kept: {kept}); a recalculation could not reproduce the results it "
                "replaces")

    async def _recalculate(self, plan: CalculationPlan, d0: datetime,
                           ) -> tuple[PeriodCycle | None, list[PeriodRecords]]:
        """The hours and days from d0 to the live open hour, recalculated by `plan`."""
        h, clock = self.historian, self.live.clock
        hour_s = 60 * self.config.clock.minute_seconds
        cycle = PeriodCycle(plan)
        hours = await h.periods("hour", d0 - timedelta(
            seconds=(cycle.lookback_h + 26) * hour_s), d0)
        since = min(clock.year_bounds(d0)[0], d0 - timedelta(seconds=31 * 24 * hour_s))
        days = await h.periods("day", since, d0)
        cycle.restore(hours, days)
        for i, tag in enumerate(cycle.counter_tags):
            reading = await h.last_reading(tag, d0)
            if reading is not None:
                cycle.restore_counter(i, *reading)
        tag_ids = tuple(self.calc.tag_ids)
        closed: list[PeriodRecords] = []
        a = d0
        for _ in range(10):  # the live stage may close an hour meanwhile: catch up with it
            end = self.live.open_hour
            assert end is not None
            if self._settled is not None:  # every minute before `end` stored
                await self._settled()
            while a < end:
                b = min(clock.next_day(a), end)
                windows = [w for w in await h.raw_windows(a, b) if w[1].tags == tag_ids]
                if windows:
                    closed.extend(await asyncio.to_thread(self._add, cycle, windows))
                a = b
            closed.extend(cycle.close_before(end))
            if cycle.open_hour is None:  # nothing stored from d0 on: nothing to recalculate
                return None, closed
            if self.live.open_hour == cycle.open_hour:
                return cycle, closed
        raise CarbonScadaError("the recalculation could not catch up with the live hours")

    def _add(self, cycle: PeriodCycle, windows: list[tuple[datetime, Any]]) -> list[PeriodRecords]:
        """Stored raw windows through the minute calculator into `cycle` (a worker thread)."""
        return cycle.add(windows_batch(self.calc, windows, cycle.counter_tags))
