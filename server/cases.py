"""The abnormal-data case ledger (Hubei guide §6.2.3c): an invalid, substituted or corrected
period, an alarm or a ledger entry opens a case; what was done, who reviews it, the
reviewer's finding and the closure follow as events.

The ledger is the `case_event` table of the historian's SQLite file, append-only (triggers
refuse UPDATE and DELETE, like server/ledger.py and server/assets.py). Nothing about a case
is stored twice: its state, owner, reviewer, due date and finding derive from its events
(`fold`). Every event is checked (messages name the field), kept and audited (action
`case_<event>`, target `case:<id>`).

Events: `open` (subject, title, cause, due, owner), `action` (what was done, optionally the
cause found), `assign` (owner, reviewer, due), `review` (accepted, or returned with a
reason), `close` (a note; only after an accepted review later than the last action), and
`reopen` (a reason; only a closed case). A case is overdue while open past its due time.

The server opens cases itself as configured (`cases.auto`, `CaseSink`: a sink beside the
others, fed closed and recalculated periods and alarm events): user `system`, the cause
prefilled from the record ("day invalid: 18 valid hours < 20, flag D"), one case per period
ever and one open case per alarm rule at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from compute.clock import PlantClock
from compute.config import ClockConfig
from model.errors import CarbonScadaError, InvalidValueError
from model.records import (
    AlarmEvent,
    MinuteResult,
    PeriodRecords,
    PeriodResult,
    SampleBlock,
    StreamPeriod,
)
from model.schema import ConfigModel, Identifier, Problems
from server.audit import AuditLog
from server.ledger import Ledger
from server.tablefile import TableFile

EVENTS: tuple[str, ...] = ("open", "action", "assign", "review", "close", "reopen")
STATES: tuple[str, ...] = ("open", "closed", "overdue")
SUBJECT_KINDS: tuple[str, ...] = ("period", "alarm", "entry", "other")
# The stored rows a period case may name: `<table>:<id>:<ISO start>`.
PERIOD_TABLES: tuple[str, ...] = (
    "source_minute", "unit_minute",
    *(f"{k}_{lv}" for k in ("source", "stream", "unit") for lv in ("hour", "day")))
# What the case keeps of the period row it was opened on: what was found at the time.
_FOUND_COLUMNS = ("flag", "valid", "substituted", "substitution_rule", "n_substituted",
                  "n_missing", "co2_t", "co2_measured_t")
log = logging.getLogger(__name__)
ALARM_WINDOW = timedelta(seconds=1)  # how near the journal's transition the time must be
SYSTEM_USER = "system"  # who opens the cases the server opens by itself (`cases.auto`)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS case_event (
  id INTEGER PRIMARY KEY AUTOINCREMENT, case_id INTEGER NOT NULL, t_ms INTEGER NOT NULL,
  user TEXT NOT NULL, event TEXT NOT NULL, detail TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS case_event_case ON case_event (case_id, id);
CREATE UNIQUE INDEX IF NOT EXISTS case_event_one_open ON case_event (case_id)
  WHERE event = 'open';
CREATE TRIGGER IF NOT EXISTS case_event_no_update BEFORE UPDATE ON case_event
BEGIN SELECT RAISE(ABORT, 'the case ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS case_event_no_delete BEFORE DELETE ON case_event
BEGIN SELECT RAISE(ABORT, 'the case ledger is append-only'); END;
"""
_COLUMNS = "id, case_id, t_ms, user, event, detail"


class CaseError(InvalidValueError):
    """A case event is refused: names the field."""


class UnknownCaseError(CaseError, LookupError):
    """The event names a case that does not exist (a LookupError: the web answers 404)."""


class CaseFileError(CarbonScadaError):
    """The case ledger's file cannot be read or written; names the file."""


# ------------------------------------------------------------------ what may be recorded

Text = Annotated[str, Field(min_length=1, max_length=2000)]
Name = Annotated[str, Field(min_length=1, max_length=64)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class PeriodSubject(_Strict):
    """A stored period (or minute) row: `<table>:<id>:<ISO start>`."""

    kind: Literal["period"]
    ref: Annotated[str, Field(min_length=5, max_length=200)]


class AlarmSubject(_Strict):
    """An alarm transition in the journal: its rule and time."""

    kind: Literal["alarm"]
    rule: Name
    t: AwareDatetime


class EntrySubject(_Strict):
    """A ledger entry (a correction, a QA check …) by its id."""

    kind: Literal["entry"]
    entry: int = Field(ge=1)


class OtherSubject(_Strict):
    """Anything else, described in words."""

    kind: Literal["other"]
    ref: Annotated[str, Field(min_length=1, max_length=200)]


Subject = Annotated[PeriodSubject | AlarmSubject | EntrySubject | OtherSubject,
                    Field(discriminator="kind")]


class OpenIn(_Strict):
    """Open a case."""

    event: Literal["open"]
    subject: Subject
    title: Annotated[str, Field(min_length=1, max_length=200)]
    cause: Annotated[str, Field(max_length=2000)] = ""
    due: AwareDatetime
    owner: Name | None = None  # default: who opens it


class _OnCase(_Strict):
    case: int = Field(ge=1)


class ActionIn(_OnCase):
    """What was done (and, once known, the cause)."""

    event: Literal["action"]
    note: Text
    cause: Annotated[str, Field(min_length=1, max_length=2000)] | None = None


class AssignIn(_OnCase):
    """A new owner, reviewer or due time (at least one)."""

    event: Literal["assign"]
    owner: Name | None = None
    reviewer: Name | None = None
    due: AwareDatetime | None = None


class ReviewIn(_OnCase):
    """The reviewer's finding: accepted, or returned with a reason."""

    event: Literal["review"]
    finding: Literal["accepted", "returned"]
    reason: Annotated[str, Field(max_length=2000)] = ""


class CloseIn(_OnCase):
    """Close the case (after an accepted review)."""

    event: Literal["close"]
    note: Text


class ReopenIn(_OnCase):
    """Reopen a closed case."""

    event: Literal["reopen"]
    reason: Text
    due: AwareDatetime | None = None


CaseIn = Annotated[OpenIn | ActionIn | AssignIn | ReviewIn | CloseIn | ReopenIn,
                   Field(discriminator="event")]
_CASE = TypeAdapter(CaseIn)
AnyIn = OpenIn | ActionIn | AssignIn | ReviewIn | CloseIn | ReopenIn


def parse_case_event(body: Any) -> AnyIn:
    """A case event from its JSON body; CaseError naming the field otherwise."""
    try:
        return _CASE.validate_python(body)
    except ValidationError as exc:
        problems = []
        for e in exc.errors():
            loc = [str(p) for p in e["loc"]]
            if loc and loc[0] in EVENTS:  # the union's tag: not a field
                loc = loc[1:]
            if len(loc) >= 2 and loc[0] == "subject" and loc[1] in SUBJECT_KINDS:
                loc = [loc[0], *loc[2:]]
            if e["type"] in ("union_tag_invalid", "union_tag_not_found"):  # name the tag
                loc = [*loc, "kind" if loc == ["subject"] else "event"]
            problems.append(f"{'.'.join(loc) or 'body'}: {e['msg']}")
        what = body.get("event") if isinstance(body, dict) else None
        head = f"case {what}" if isinstance(what, str) and what in EVENTS else "case event"
        raise CaseError(f"{head}: {'; '.join(problems)}") from None


# ------------------------------------------------------------------ events and the fold


@dataclass(frozen=True, slots=True)
class CaseEvent:
    """One stored event of a case."""

    id: int
    case: int
    t: datetime  # UTC, when it was recorded
    user: str
    event: str
    detail: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        """The event as a JSON-ready dict (times ISO 8601 UTC)."""
        return {"id": self.id, "case": self.case, "t": self.t.isoformat(), "user": self.user,
                "event": self.event, **self.detail}


@dataclass(slots=True)
class CaseState:
    """A case as its events make it."""

    id: int
    subject: dict[str, Any]
    title: str
    cause: str
    opened: datetime
    opened_by: str
    owner: str
    due: datetime
    reviewer: str | None = None
    state: str = "open"  # open | closed
    closed: datetime | None = None
    finding: str | None = None  # the latest review since the last reopen
    finding_id: int | None = None  # the event id of that review
    last_action_id: int | None = None
    actions: int = 0
    events: list[CaseEvent] = field(default_factory=list)

    def overdue(self, now: datetime) -> bool:
        """Open past its due time."""
        return self.state == "open" and now > self.due

    def as_json(self, now: datetime, *, history: bool = False) -> dict[str, Any]:
        """The case as a JSON-ready dict; with `history`, every event, oldest first."""
        out: dict[str, Any] = {
            "id": self.id, "state": self.state, "overdue": self.overdue(now),
            "subject": dict(self.subject), "title": self.title, "cause": self.cause,
            "opened": self.opened.isoformat(), "opened_by": self.opened_by,
            "owner": self.owner, "reviewer": self.reviewer, "due": self.due.isoformat(),
            "closed": None if self.closed is None else self.closed.isoformat(),
            "review": self.finding, "actions": self.actions, "events": len(self.events),
            "updated": self.events[-1].t.isoformat()}
        if history:
            out["history"] = [e.as_json() for e in self.events]
        return out


def _dt(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def fold(events: Sequence[CaseEvent]) -> CaseState:
    """The state of one case from its events (the first is its `open`)."""
    first = events[0]
    d = first.detail
    c = CaseState(first.case, dict(d["subject"]), d["title"], d.get("cause", ""), first.t,
                  first.user, d["owner"], _dt(d["due"]))
    for e in events:
        c.events.append(e)
        d = e.detail
        if e.event == "action":
            c.actions += 1
            c.last_action_id = e.id
            if d.get("cause"):
                c.cause = d["cause"]
        elif e.event == "assign":
            c.owner = d.get("owner") or c.owner
            c.reviewer = d.get("reviewer") or c.reviewer
            if d.get("due"):
                c.due = _dt(d["due"])
        elif e.event == "review":
            c.finding, c.finding_id = d["finding"], e.id
            if c.reviewer is None:
                c.reviewer = e.user
        elif e.event == "close":
            c.state, c.closed = "closed", e.t
        elif e.event == "reopen":
            c.state, c.closed, c.finding, c.finding_id = "open", None, None, None
            if d.get("due"):
                c.due = _dt(d["due"])
    return c


# ------------------------------------------------------------------ the table


def _ms(t: datetime) -> int:
    return round(t.timestamp() * 1000)


def _event(row: Sequence[Any]) -> CaseEvent:
    id_, case, t_ms, user, event, detail = row
    return CaseEvent(int(id_), int(case), datetime.fromtimestamp(t_ms / 1000, UTC), user,
                     event, json.loads(detail))


class CaseTable:
    """The `case_event` table of one SQLite file."""

    def __init__(self, path: str | Path) -> None:
        self._file = TableFile(path, _SCHEMA, "case ledger", CaseFileError)
        self.path = self._file.path

    def append(self, case: int | None, user: str, event: str, detail: dict[str, Any],
               now: datetime) -> CaseEvent:
        """Append one event; `case` None opens a new case (the next case number)."""
        text = json.dumps(detail, sort_keys=True, ensure_ascii=False, allow_nan=False)
        with self._file.connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                if case is None:
                    (case,) = db.execute(
                        "SELECT COALESCE(MAX(case_id), 0) + 1 FROM case_event").fetchone()
                cur = db.execute("INSERT INTO case_event (case_id, t_ms, user, event, detail)"
                                 " VALUES (?,?,?,?,?)", (case, _ms(now), user, event, text))
                row = db.execute(f"SELECT {_COLUMNS} FROM case_event WHERE id = ?",
                                 (cur.lastrowid,)).fetchone()
                db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise
        return _event(row)

    def events(self) -> list[CaseEvent]:
        """Every event, in the order recorded."""
        with self._file.connect() as db:
            rows = db.execute(f"SELECT {_COLUMNS} FROM case_event ORDER BY id").fetchall()
        return [_event(r) for r in rows]


# ------------------------------------------------------------------ the keeper


class CaseSources(Protocol):
    """What a case's subject is checked against (server/historian.py Historian fits it)."""

    async def current_row(self, table: str, ident: str, t: datetime) -> dict[str, Any] | None:
        """The stored row of a result table by identifier and start, None if none."""
        ...

    async def alarm_journal(self, start: datetime, end: datetime, rule: str | None = None,
                            limit: int = 10000) -> list[AlarmEvent]:
        """Journaled alarm transitions with start ≤ t < end, oldest first."""
        ...


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat()


def _finite(x: Any) -> Any:
    """A value as JSON can hold it: NaN and infinities as None."""
    return None if isinstance(x, float) and not math.isfinite(x) else x


class CaseKeeper:
    """Checks, keeps and audits case events; the cases as their events make them."""

    def __init__(self, path: str | Path, historian: CaseSources, audit: AuditLog) -> None:
        self.table = CaseTable(path)
        self.entries = Ledger(path)  # the entries a case may name
        self.historian = historian
        self.audit = audit
        self._cases: dict[int, CaseState] = {}
        self._lock = asyncio.Lock()  # one event checked and kept at a time

    async def load(self) -> None:
        """Read the ledger (at start)."""
        events = await asyncio.to_thread(self.table.events)
        by_case: dict[int, list[CaseEvent]] = {}
        for e in events:
            by_case.setdefault(e.case, []).append(e)
        self._cases = {k: fold(v) for k, v in by_case.items() if v[0].event == "open"}

    def now(self) -> datetime:
        """The current time (UTC); tests may replace it."""
        return datetime.now(UTC)

    # -------------------------------------------------------------- reading

    def cases(self, state: str | None = None) -> list[dict[str, Any]]:
        """Every case (open, closed, overdue: open past due; None: all), oldest first."""
        if state is not None and state not in STATES:
            raise CaseError(f"state: must be one of {', '.join(STATES)}, not {state!r}")
        now = self.now()
        out = []
        for c in sorted(self._cases.values(), key=lambda c: c.id):
            if (state is None or (state == "overdue" and c.overdue(now))
                    or c.state == state):
                out.append(c.as_json(now))
        return out

    def case(self, case_id: int) -> dict[str, Any] | None:
        """One case with its full history, None if there is none."""
        c = self._cases.get(case_id)
        return None if c is None else c.as_json(self.now(), history=True)

    # -------------------------------------------------------------- recording

    async def record(self, user: str, body: Any) -> dict[str, Any]:
        """Check, keep and audit one event; `{"case": …}` with its history as now."""
        item = parse_case_event(body)
        async with self._lock:
            now = self.now()
            if isinstance(item, OpenIn):
                case_id, detail = None, await self._check_open(item, user, now)
            else:
                case_id = item.case
                current = self._cases.get(case_id)
                if current is None:
                    raise UnknownCaseError(f"case {item.event}: case: there is no case "
                                           f"{case_id}")
                detail = self._check(item, user, current, now)
            e = await self._keep(case_id, user, item.event, detail, now)
        return {"case": self.case(e.case)}

    async def _keep(self, case_id: int | None, user: str, event: str, detail: dict[str, Any],
                    now: datetime) -> CaseEvent:
        """Store and audit one checked event and fold it in (under the lock); the SQLite
        writes run in a thread, off the event loop."""
        e = await asyncio.to_thread(self.table.append, case_id, user, event, detail, now)
        await asyncio.to_thread(self.audit.append, user, f"case_{e.event}",
                                f"case:{e.case}", {"event_id": e.id, **detail}, now)
        if e.event == "open":
            self._cases[e.case] = fold([e])
        else:
            self._cases[e.case] = fold([*self._cases[e.case].events, e])
        return e

    def _has_case(self, subject: dict[str, Any]) -> bool:
        """Whether `subject` already has its case: a period any case on it (open or closed:
        one case per period, however often it is recalculated), an alarm an open case on
        its rule (a rule raised again while its case is open is the same case)."""
        for c in self._cases.values():
            s = c.subject
            if s.get("kind") != subject["kind"]:
                continue
            if subject["kind"] == "period" and s.get("ref") == subject["ref"]:
                return True
            if subject["kind"] == "alarm" and s.get("rule") == subject["rule"] \
                    and c.state == "open":
                return True
        return False

    async def open_system(self, subject: dict[str, Any], title: str, cause: str,
                          due_days: float, owner: str = SYSTEM_USER) -> dict[str, Any] | None:
        """Open a case as user `system` on what the server itself saw (a period record, an
        alarm event, already in the form `_check_subject` keeps); None if the subject has
        its case already (`_has_case`)."""
        async with self._lock:  # the check and the open as one: no duplicate in between
            if self._has_case(subject):
                return None
            now = self.now()
            detail = {"subject": subject, "title": title[:200], "cause": cause[:2000],
                      "due": _iso(now + timedelta(days=due_days)), "owner": owner}
            e = await self._keep(None, SYSTEM_USER, "open", detail, now)
        return self.case(e.case)

    async def _check_open(self, item: OpenIn, user: str, now: datetime) -> dict[str, Any]:
        if item.due <= now:
            raise CaseError(f"case open: due: {_iso(item.due)} is not after the opening "
                            f"({now.isoformat()})")
        subject = await self._check_subject(item)
        return {"subject": subject, "title": item.title, "cause": item.cause,
                "due": _iso(item.due), "owner": item.owner or user}

    async def _check_subject(self, item: OpenIn) -> dict[str, Any]:
        """The subject as kept; CaseError naming subject.<field> if it names nothing."""
        s = item.subject
        if isinstance(s, PeriodSubject):
            table, ident, t = self._period_ref(s.ref)
            row = await self.historian.current_row(table, ident, t)
            if row is None:
                raise CaseError(f"case open: subject.ref: no stored {table} row of {ident} "
                                f"at {t.isoformat()}")
            found = {k: _finite(row[k]) for k in _FOUND_COLUMNS if k in row}
            return {"kind": "period", "ref": f"{table}:{ident}:{_iso(t)}", "found": found}
        if isinstance(s, AlarmSubject):
            t = s.t.astimezone(UTC)
            near = await self.historian.alarm_journal(t - ALARM_WINDOW, t + ALARM_WINDOW,
                                                      s.rule, limit=100)
            if not near:
                raise CaseError(f"case open: subject.t: the alarm journal has no transition "
                                f"of rule {s.rule!r} within {ALARM_WINDOW.total_seconds():g} s"
                                f" of {t.isoformat()}")
            ev = min(near, key=lambda a: abs((a.t - t).total_seconds()))
            return {"kind": "alarm", "rule": s.rule, "t": _iso(ev.t),
                    "found": {"state": ev.state, "value": _finite(ev.value),
                              "limit": _finite(ev.limit),
                              "target": ev.target, "message": ev.message}}
        if isinstance(s, EntrySubject):
            entry = await asyncio.to_thread(self.entries.get, s.entry)
            if entry is None:
                raise CaseError(f"case open: subject.entry: there is no ledger entry "
                                f"{s.entry}")
            return {"kind": "entry", "entry": s.entry,
                    "found": {"kind": entry.kind, "target": entry.target,
                              "t": entry.t.isoformat()}}
        return {"kind": "other", "ref": s.ref}

    @staticmethod
    def _period_ref(ref: str) -> tuple[str, str, datetime]:
        parts = ref.split(":", 2)
        if len(parts) != 3 or not parts[1]:
            raise CaseError(f"case open: subject.ref: {ref[:80]!r} is not "
                            "<table>:<id>:<ISO start>, e.g. "
                            "source_hour:S1:2026-03-01T08:00:00Z")
        table, ident, text = parts
        if table not in PERIOD_TABLES:
            raise CaseError(f"case open: subject.ref: table must be one of "
                            f"{', '.join(PERIOD_TABLES)}, not {table[:40]!r}")
        try:
            t = datetime.fromisoformat(text)
        except ValueError:
            raise CaseError(f"case open: subject.ref: {text[:40]!r} is not an ISO 8601 "
                            "time") from None
        if t.tzinfo is None:
            raise CaseError(f"case open: subject.ref: time {text[:40]!r} has no UTC offset")
        return table, ident, t.astimezone(UTC)

    def _check(self, item: AnyIn, user: str, c: CaseState, now: datetime) -> dict[str, Any]:
        """The detail `item` keeps, checked against the case; CaseError naming the field."""
        head = f"case {c.id} {item.event}"
        if isinstance(item, ReopenIn):
            if c.state != "closed":
                raise CaseError(f"{head}: case: the case is open; only a closed case is "
                                "reopened")
            self._check_due(head, item.due, c)
            return {"reason": item.reason,
                    **({} if item.due is None else {"due": _iso(item.due)})}
        if c.state == "closed":
            raise CaseError(f"{head}: case: the case is closed; reopen it first")
        if isinstance(item, ActionIn):
            return {"note": item.note, **({} if item.cause is None else {"cause": item.cause})}
        if isinstance(item, AssignIn):
            if item.owner is None and item.reviewer is None and item.due is None:
                raise CaseError(f"{head}: owner: give an owner, a reviewer or a due time")
            self._check_due(head, item.due, c)
            who = item.reviewer
            if who is not None and who.casefold() == (item.owner or c.owner).casefold():
                raise CaseError(f"{head}: reviewer: {who!r} is the case's owner; the "
                                "reviewer must be someone else")
            return {k: v for k, v in (("owner", item.owner), ("reviewer", item.reviewer),
                                      ("due", None if item.due is None else _iso(item.due)))
                    if v is not None}
        if isinstance(item, ReviewIn):
            if c.last_action_id is None:
                raise CaseError(f"{head}: case: no action has been recorded to review")
            if c.reviewer is not None and user.casefold() != c.reviewer.casefold():
                raise CaseError(f"{head}: user: the case's reviewer is {c.reviewer!r}, "
                                f"not {user!r}")
            if user.casefold() == c.owner.casefold():
                raise CaseError(f"{head}: user: {user!r} owns the case and cannot review it")
            if item.finding == "returned" and not item.reason:
                raise CaseError(f"{head}: reason: a returned review needs the reason")
            return {"finding": item.finding, "reason": item.reason}
        assert isinstance(item, CloseIn)
        if c.finding != "accepted" or c.finding_id is None:
            why = ("the latest review returned the case" if c.finding == "returned"
                   else "the case has no review")
            raise CaseError(f"{head}: review: {why}; a case is closed only after an "
                            "accepted review")
        if c.last_action_id is not None and c.last_action_id > c.finding_id:
            raise CaseError(f"{head}: review: an action was recorded after the accepted "
                            "review; it needs a review again")
        return {"note": item.note}

    @staticmethod
    def _check_due(head: str, due: datetime | None, c: CaseState) -> None:
        if due is not None and due <= c.opened:
            raise CaseError(f"{head}: due: {_iso(due)} is not after the opening "
                            f"({c.opened.isoformat()})")


# ------------------------------------------------------------------ cases opened by the server


class AutoCasesConfig(ConfigModel):
    """What opens a case by itself (`cases.auto`): invalid or substituted periods of the
    sources (CEMS) and streams (factor method), and alarms of the rules named."""

    invalid_hour: bool = False
    invalid_day: bool = False
    substituted_hour: bool = False
    substituted_day: bool = False  # a day with substituted hours
    # Rule ids or rule kinds (threshold, capture_rate …) whose raised alarms open a case.
    alarms: tuple[Identifier, ...] = ()
    # Periods with these flags are not abnormal data (F: the unit stopped): no case.
    ignore_flags: tuple[Literal["N", "S", "T", "B", "D", "C", "M", "F"], ...] = ("F",)
    due_days: float = Field(7.0, gt=0, le=366)
    owner: Identifier = SYSTEM_USER  # who the case is for until it is assigned

    @property
    def enabled(self) -> bool:
        """Whether anything opens a case by itself."""
        return (self.invalid_hour or self.invalid_day or self.substituted_hour
                or self.substituted_day or bool(self.alarms))


class CasesConfig(ConfigModel):
    """The case ledger's section of the plant file (`cases:`)."""

    auto: AutoCasesConfig = AutoCasesConfig()


class _Rule(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def kind(self) -> str: ...


def case_problems(cases: CasesConfig, rules: Sequence[_Rule]) -> Problems:
    """`cases.auto.alarms[i]` naming neither a configured rule nor a rule kind."""
    from alarms.config import RULE_KINDS

    ids = {r.id for r in rules}
    return [(f"cases.auto.alarms[{i}]",
             f"{name!r} is neither an alarm rule id nor a rule kind "
             f"({', '.join(RULE_KINDS)})")
            for i, name in enumerate(cases.auto.alarms)
            if name not in ids and name not in RULE_KINDS]


def _g(x: float) -> str:
    return "nan" if not math.isfinite(x) else f"{x:g}"


class CaseSink:
    """A sink that opens the cases of `cases.auto` as closed periods and alarm events
    reach it (user `system`, the cause prefilled, one case per subject)."""

    name = "cases"

    def __init__(self, keeper: CaseKeeper, auto: AutoCasesConfig, clock: ClockConfig,
                 timezone: str) -> None:
        self.keeper = keeper
        self.auto = auto
        self.clock = clock
        # Periods are named as the (possibly sped-up) plant clock shows them.
        self.plant = PlantClock(clock.minute_seconds, timezone)
        self._tasks: set[asyncio.Task[None]] = set()
        self.opened = 0  # cases opened so far
        self._last_error = ""

    async def start(self) -> None:
        """Nothing to open: the keeper is loaded by the runtime."""

    async def on_samples(self, block: SampleBlock) -> None:
        """Raw readings open no case."""

    async def on_minute(self, result: MinuteResult) -> None:
        """Minutes open no case (their hour does)."""

    async def stop(self) -> None:
        """Let the cases of alarms raised so far be opened."""
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)

    def _when(self, t: datetime, level: str) -> str:
        local = self.plant.scaled_local(t)
        return local.strftime("%Y-%m-%d" if level == "day" else "%Y-%m-%d %H:%M")

    def _period_cause(self, level: str, r: PeriodResult) -> str | None:
        """Why a source's period opens a case, None if it opens none."""
        a = self.auto
        if r.flag.name in a.ignore_flags:
            return None
        why: list[str] = []
        if not r.valid and (a.invalid_hour if level == "hour" else a.invalid_day):
            least = (self.clock.min_valid_minutes_per_hour if level == "hour"
                     else self.clock.min_valid_hours_per_day)
            what = "minutes" if level == "hour" else "hours"
            text = f"{level} invalid: {r.n_valid} valid {what}"
            text += f" < {least}" if r.n_valid < least else ""
            text += f", flag {r.flag.name}"
            if r.missing_reason == "not_running":
                text += ", the server was not running"
            why.append(text)
        if level == "hour" and a.substituted_hour and r.substituted:
            why.append(f"hour substituted by {r.substitution_rule or 'a substitute'}"
                       f" (co2_t {_g(r.co2_t)})")
        if level == "day" and a.substituted_day and r.n_substituted > 0:
            why.append(f"day with {r.n_substituted} substituted hour"
                       f"{'s' if r.n_substituted != 1 else ''}")
        if r.substitution_note and why:
            why.append(r.substitution_note)
        return "; ".join(why) or None

    def _stream_cause(self, level: str, r: StreamPeriod) -> str | None:
        a = self.auto
        if r.valid or r.flag.name in a.ignore_flags or not (
                a.invalid_hour if level == "hour" else a.invalid_day):
            return None
        what = "minutes or readings" if level == "hour" else "hours"
        return (f"{level} invalid: {r.n_valid} valid {what}, flag {r.flag.name}"
                + (f"; {r.note}" if r.note else ""))

    async def on_period(self, records: PeriodRecords) -> None:
        """Open a case on each source or stream period `cases.auto` names."""
        level = records.level
        for r in records.sources:
            cause = self._period_cause(level, r)
            if cause is not None:
                found = {"flag": r.flag.name, "valid": r.valid, "substituted": r.substituted,
                         "substitution_rule": r.substitution_rule,
                         "n_substituted": r.n_substituted, "n_missing": r.n_missing,
                         "co2_t": _finite(r.co2_t), "co2_measured_t": _finite(r.co2_measured_t)}
                kind = "invalid" if cause.startswith(f"{level} invalid") else "substituted"
                await self._open(f"source_{level}", r.source, r.t, found,
                                 f"source {r.source} {level} {self._when(r.t, level)} {kind}",
                                 cause)
        for st in records.streams:
            cause = self._stream_cause(level, st)
            if cause is not None:
                found = {"flag": st.flag.name, "valid": st.valid, "co2_t": _finite(st.co2_t),
                         "quantity": _finite(st.quantity), "method": st.method}
                await self._open(f"stream_{level}", st.stream, st.t, found,
                                 f"stream {st.stream} {level} {self._when(st.t, level)} "
                                 "invalid", cause)

    async def _open(self, table: str, ident: str, t: datetime, found: dict[str, Any],
                    title: str, cause: str) -> None:
        subject = {"kind": "period", "ref": f"{table}:{ident}:{_iso(t)}", "found": found}
        await self._open_subject(subject, title, cause)

    async def _open_subject(self, subject: dict[str, Any], title: str, cause: str) -> None:
        got = await self.keeper.open_system(subject, title, cause, self.auto.due_days,
                                            self.auto.owner)
        if got is not None:
            self.opened += 1
            log.info("case %d opened: %s (%s)", got["id"], title, cause)

    def wants_alarm(self, event: AlarmEvent) -> bool:
        """A raise (warning or alarm) of a rule `cases.auto.alarms` names, by id or kind."""
        return (event.cause == "condition" and event.state in ("warning", "alarm")
                and (event.rule in self.auto.alarms or event.kind in self.auto.alarms))

    def on_alarm(self, event: AlarmEvent) -> None:
        """Take one alarm transition at once; its case is opened in a task of its own."""
        if not self.wants_alarm(event):
            return
        task = asyncio.get_running_loop().create_task(self._alarm_case(event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _alarm_case(self, event: AlarmEvent) -> None:
        subject = {"kind": "alarm", "rule": event.rule, "t": _iso(event.t),
                   "found": {"state": event.state, "value": _finite(event.value),
                             "limit": _finite(event.limit), "target": event.target,
                             "message": event.message}}
        limit = "" if event.limit is None else f" (limit {_g(event.limit)})"
        cause = (f"alarm {event.rule} {event.state}: {event.target} {_g(event.value)}"
                 f"{limit}; {event.message}")
        try:
            await self._open_subject(subject, f"alarm {event.rule}: {event.message}", cause)
        except Exception as exc:  # logged once per kind of error; the alarms go on
            text = f"{type(exc).__name__}: {exc}"
            if text != self._last_error:
                log.error("case for alarm %s not opened: %s", event.rule, text)
                self._last_error = text
