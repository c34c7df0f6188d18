"""The abnormal-data case ledger (server/cases.py, issue 18) on a real historian file: a case
opened on a substituted hour, acted on, returned, acted on again, accepted and closed; the
refusals naming the field; the table refusing UPDATE and DELETE; the audit chain; overdue."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from model.flags import DataFlag
from model.records import AlarmEvent, PeriodRecords, PeriodResult
from server.audit import AuditLog, verify
from server.cases import CaseError, CaseKeeper, UnknownCaseError
from server.historian import Historian
from server.ledger import Ledger

HOUR = datetime(2026, 3, 1, 8, tzinfo=UTC)
NOW = datetime(2026, 3, 1, 10, tzinfo=UTC)  # the hour was closed two hours ago
REF = "source_hour:S1:2026-03-01T08:00:00Z"
DUE = "2026-03-03T10:00:00+00:00"


class FixedKeeper(CaseKeeper):
    """A keeper whose clock the test sets."""

    t = NOW

    def now(self) -> datetime:
        return self.t


@dataclass
class Cases:
    keeper: FixedKeeper
    historian: Historian
    audit: AuditLog
    path: Path


def substituted_hour() -> PeriodResult:
    """S1's 08:00 hour: invalid (D), its mass a substitute (co2_t = 221.58251 t)."""
    return PeriodResult("S1", HOUR, 12.0, 300_000.0, math.nan, 221.58251, math.nan, False,
                        DataFlag.D, 0, substituted=True, substitution_rule="mrr_mean_2sigma")


@pytest.fixture
async def cases(tmp_path: Path) -> AsyncIterator[Cases]:
    path = tmp_path / "h.sqlite"
    historian = Historian(path)
    await historian.start()
    await historian.on_period(PeriodRecords("hour", HOUR, HOUR + timedelta(hours=1),
                                            (substituted_hour(),), (), ()))
    audit = AuditLog(path)
    keeper = FixedKeeper(path, historian, audit)
    await keeper.load()
    try:
        yield Cases(keeper, historian, audit, path)
    finally:
        await historian.stop()


def open_body(**more: Any) -> dict[str, Any]:
    return {"event": "open", "subject": {"kind": "period", "ref": REF},
            "title": "S1 08:00 substituted", "cause": "", "due": DUE, **more}


async def refused(keeper: CaseKeeper, user: str, body: dict[str, Any]) -> str:
    with pytest.raises(CaseError) as err:
        await keeper.record(user, body)
    return str(err.value)


async def test_a_case_on_a_substituted_hour_from_open_to_close(cases: Cases) -> None:
    k = cases.keeper
    got = (await k.record("operator", open_body()))["case"]
    assert (got["id"], got["state"], got["owner"], got["reviewer"]) == (1, "open", "operator",
                                                                          None)
    # What was found in the stored row when the case was opened (the row as stored: SQLite
    # keeps booleans as 0/1 and NaN as NULL).
    assert got["subject"] == {"kind": "period", "ref": "source_hour:S1:2026-03-01T08:00:00+00:00",
                              "found": {"flag": "D", "valid": 0, "substituted": 1,
                                        "substitution_rule": "mrr_mean_2sigma",
                                        "n_substituted": 0, "n_missing": 0,
                                        "co2_t": 221.58251, "co2_measured_t": None}}
    assert got["due"] == DUE and got["opened"] == NOW.isoformat()

    k.t = NOW + timedelta(minutes=10)
    await k.record("operator", {"event": "action", "case": 1,
                                "note": "analyser drift found; span check re-run",
                                "cause": "CO2 analyser drift"})
    await k.record("engineer", {"event": "assign", "case": 1, "reviewer": "engineer"})
    # the owner may not review the case; a returned review needs its reason
    assert "user: the case's reviewer is 'engineer'" in await refused(
        k, "operator", {"event": "review", "case": 1, "finding": "accepted"})
    assert "reason: a returned review needs the reason" in await refused(
        k, "engineer", {"event": "review", "case": 1, "finding": "returned"})
    k.t = NOW + timedelta(minutes=20)
    got = (await k.record("engineer", {"event": "review", "case": 1, "finding": "returned",
                                       "reason": "attach the span check record"}))["case"]
    assert (got["review"], got["state"]) == ("returned", "open")
    assert "review: the latest review returned the case" in await refused(
        k, "engineer", {"event": "close", "case": 1, "note": "done"})
    await k.record("operator", {"event": "action", "case": 1,
                                "note": "span check record QA-2026-031 attached"})
    await k.record("engineer", {"event": "review", "case": 1, "finding": "accepted"})
    k.t = NOW + timedelta(minutes=30)
    got = (await k.record("engineer", {"event": "close", "case": 1,
                                       "note": "substitute stands; analyser re-spanned"}))["case"]
    assert (got["state"], got["closed"], got["review"], got["actions"]) == (
        "closed", (NOW + timedelta(minutes=30)).isoformat(), "accepted", 2)
    assert got["cause"] == "CO2 analyser drift" and got["reviewer"] == "engineer"
    assert [(e["event"], e["user"]) for e in got["history"]] == [
        ("open", "operator"), ("action", "operator"), ("assign", "engineer"),
        ("review", "engineer"), ("action", "operator"), ("review", "engineer"),
        ("close", "engineer")]
    assert "case: the case is closed; reopen it first" in await refused(
        k, "operator", {"event": "action", "case": 1, "note": "more"})

    # Every step audited, the chain intact; the state derives from the events on reload.
    entries = cases.audit.entries()
    assert [(e.action, e.target) for e in entries] == [
        ("case_open", "case:1"), ("case_action", "case:1"), ("case_assign", "case:1"),
        ("case_review", "case:1"), ("case_action", "case:1"), ("case_review", "case:1"),
        ("case_close", "case:1")]
    assert entries[3].detail["reason"] == "attach the span check record"
    verdict = verify(cases.path)
    assert (verdict.ok, verdict.entries) == (True, 7)
    again = FixedKeeper(cases.path, cases.historian, cases.audit)
    await again.load()
    assert again.case(1) == k.case(1)
    assert again.cases("closed") == k.cases("closed") and again.cases("open") == []


async def test_close_before_review_refused_and_reopen(cases: Cases) -> None:
    k = cases.keeper
    await k.record("operator", open_body())
    assert "review: the case has no review; a case is closed only after an accepted review" \
        in await refused(k, "engineer", {"event": "close", "case": 1, "note": "done"})
    assert "case: no action has been recorded to review" in await refused(
        k, "engineer", {"event": "review", "case": 1, "finding": "accepted"})
    await k.record("operator", {"event": "action", "case": 1, "note": "checked"})
    await k.record("engineer", {"event": "review", "case": 1, "finding": "accepted"})
    # an action after the accepted review needs a review again
    await k.record("operator", {"event": "action", "case": 1, "note": "one more thing"})
    assert "review: an action was recorded after the accepted review" in await refused(
        k, "engineer", {"event": "close", "case": 1, "note": "done"})
    await k.record("engineer", {"event": "review", "case": 1, "finding": "accepted"})
    assert "case 1 reopen: case: the case is open" in await refused(
        k, "engineer", {"event": "reopen", "case": 1, "reason": "x"})
    await k.record("engineer", {"event": "close", "case": 1, "note": "done"})
    got = (await k.record("engineer", {"event": "reopen", "case": 1,
                                       "reason": "the verifier asked"}))["case"]
    assert (got["state"], got["review"], got["closed"]) == ("open", None, None)
    # reopened: closing again needs a new accepted review
    assert "review: the case has no review" in await refused(
        k, "engineer", {"event": "close", "case": 1, "note": "done"})
    with pytest.raises(UnknownCaseError, match="case: there is no case 7"):
        await k.record("engineer", {"event": "action", "case": 7, "note": "x"})


async def test_refusals_name_the_field(cases: Cases) -> None:
    k = cases.keeper
    assert "case open: due: 2026-03-01T09:00:00+00:00 is not after the opening" in \
        await refused(k, "operator", open_body(due="2026-03-01T09:00:00Z"))
    assert "case open: subject.ref: no stored source_hour row of S1 at " \
        "2026-03-01T09:00:00+00:00" in await refused(
            k, "operator", open_body(subject={"kind": "period",
                                              "ref": "source_hour:S1:2026-03-01T09:00:00Z"}))
    assert "subject.ref: table must be one of" in await refused(
        k, "operator", open_body(subject={"kind": "period", "ref": "users:S1:2026-03-01T08:00Z"}))
    assert "case open: title:" in await refused(k, "operator", open_body(title=""))
    assert "case open: due: Field required" in await refused(
        k, "operator", {"event": "open", "subject": {"kind": "other", "ref": "x"}, "title": "t"})
    assert "case open: subject.entry: there is no ledger entry 5" in await refused(
        k, "operator", open_body(subject={"kind": "entry", "entry": 5}))
    assert "case open: subject.t: the alarm journal has no transition of rule 's1_rate'" in \
        await refused(k, "operator", open_body(subject={"kind": "alarm", "rule": "s1_rate",
                                                        "t": "2026-03-01T08:30:00Z"}))
    # an alarm in the journal and a ledger entry can be the subject
    alarm_t = datetime(2026, 3, 1, 8, 30, tzinfo=UTC)
    await cases.historian.record_alarm(AlarmEvent(
        "s1_rate", alarm_t, "alarm", "normal", 5200.0, 5000.0, "source S1 co2_kg",
        "S1 CO2 rate high", "S1 CO2 排放速率高"))
    got = (await k.record("operator", open_body(subject={
        "kind": "alarm", "rule": "s1_rate", "t": "2026-03-01T16:30:00.400+08:00"})))["case"]
    assert got["subject"] == {"kind": "alarm", "rule": "s1_rate",
                              "t": "2026-03-01T08:30:00+00:00",
                              "found": {"state": "alarm", "value": 5200.0, "limit": 5000.0,
                                        "target": "source S1 co2_kg",
                                        "message": "S1 CO2 rate high"}}
    entry = Ledger(cases.path).append("engineer", "correction", "source:S1", "hour", HOUR,
                                      {"co2_t": 200.0}, reason="drift")
    got = (await k.record("operator", open_body(subject={"kind": "entry",
                                                         "entry": entry.id})))["case"]
    assert got["subject"]["found"] == {"kind": "correction", "target": "source:S1",
                                       "t": HOUR.isoformat()}
    await k.record("operator", open_body())
    assert "case 3 assign: owner: give an owner, a reviewer or a due time" in await refused(
        k, "engineer", {"event": "assign", "case": 3})
    assert "case 3 assign: due: 2026-03-01T09:00:00+00:00 is not after the opening" in \
        await refused(k, "engineer", {"event": "assign", "case": 3, "due": "2026-03-01T09:00Z"})
    assert "case 3 assign: reviewer: 'operator' is the case's owner" in await refused(
        k, "engineer", {"event": "assign", "case": 3, "reviewer": "operator"})
    assert "case review: finding: Input should be 'accepted' or 'returned'" in await refused(
        k, "engineer", {"event": "review", "case": 3, "finding": "fine"})
    assert "case event: event: Input tag 'delete' found using 'event' does not match" in \
        await refused(k, "engineer", {"event": "delete", "case": 3})
    assert "case open: subject.kind: Input tag 'hour'" in await refused(
        k, "operator", open_body(subject={"kind": "hour", "ref": REF}))
    assert [c["id"] for c in k.cases()] == [1, 2, 3]


async def test_the_table_refuses_update_and_delete(cases: Cases) -> None:
    await cases.keeper.record("operator", open_body())
    db = sqlite3.connect(cases.path)
    try:
        for sql in ("UPDATE case_event SET user = 'mallory'", "DELETE FROM case_event",
                    "UPDATE case_event SET detail = '{}' WHERE id = 1"):
            with pytest.raises(sqlite3.IntegrityError, match="the case ledger is append-only"):
                db.execute(sql)
        # a second open of case 1 is refused by the table too
        with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
            db.execute("INSERT INTO case_event (case_id, t_ms, user, event, detail) "
                       "VALUES (1, 0, 'x', 'open', '{}')")
        assert db.execute("SELECT COUNT(*), MIN(user) FROM case_event").fetchone() == (
            1, "operator")
    finally:
        db.close()


async def test_overdue_past_the_due_date(cases: Cases) -> None:
    k = cases.keeper
    await k.record("operator", open_body(due="2026-03-01T12:00:00Z"))  # due in 2 h
    await k.record("operator", open_body(due="2026-03-05T00:00:00Z", title="later"))
    assert k.cases("overdue") == [] and [c["id"] for c in k.cases("open")] == [1, 2]
    k.t = datetime(2026, 3, 1, 12, tzinfo=UTC)  # at the due time: not yet overdue
    assert k.cases("overdue") == []
    k.t = datetime(2026, 3, 1, 12, 0, 1, tzinfo=UTC)  # 1 s past it
    over = k.cases("overdue")
    assert [(c["id"], c["overdue"], c["due"]) for c in over] == [
        (1, True, "2026-03-01T12:00:00+00:00")]
    assert [c["overdue"] for c in k.cases("open")] == [True, False]
    # a new due time moves it off the list; a closed case is never overdue
    await k.record("engineer", {"event": "assign", "case": 1, "due": "2026-03-02T12:00:00Z"})
    assert k.cases("overdue") == []
    await k.record("operator", {"event": "action", "case": 2, "note": "done"})
    await k.record("engineer", {"event": "review", "case": 2, "finding": "accepted"})
    await k.record("engineer", {"event": "close", "case": 2, "note": "ok"})
    k.t = datetime(2026, 3, 6, tzinfo=UTC)
    assert [c["id"] for c in k.cases("overdue")] == [1]
    assert [c["id"] for c in k.cases("closed")] == [2] and not k.cases("closed")[0]["overdue"]
    with pytest.raises(CaseError, match="state: must be one of open, closed, overdue"):
        k.cases("late")
