"""The audit log: append-only and hash-chained, in the historian's SQLite file.

Entry `seq` holds `hash` = sha256 hex of the canonical JSON (keys sorted, UTF-8,
no spaces) of `[seq, t_ms, user, action, target, detail, prev_hash]`, and `prev_hash`
= the hash of entry `seq - 1` (64 zeros for entry 1). Triggers refuse UPDATE and DELETE;
`verify` recomputes the chain, so a change made around the triggers is found. (Removing
the newest entries leaves a valid, shorter chain: only the triggers guard against that.)

Every call opens its own short-lived connection and appends under BEGIN IMMEDIATE, so
threads and processes may append to one file at the same time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from model.errors import AuditError, InvalidValueError
from model.records import AuditRecord
from server.tablefile import TableFile

GENESIS = "0" * 64  # prev_hash of the first entry

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_log (
  seq INTEGER PRIMARY KEY, t_ms INTEGER NOT NULL, user TEXT NOT NULL, action TEXT NOT NULL,
  target TEXT NOT NULL, detail TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS audit_log_t ON audit_log (t_ms);
CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
"""
_COLUMNS = "seq, t_ms, user, action, target, detail, prev_hash, hash"


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One entry of the audit log."""

    seq: int  # 1, 2, 3 … without gaps
    t: datetime  # UTC, millisecond resolution
    user: str
    action: str
    target: str  # what was acted on, e.g. "alarm:S1_rate", "user:alice"
    detail: dict[str, Any]
    prev_hash: str
    hash: str


@dataclass
class AuditVerdict:
    """The outcome of `verify`: `problem` names the first bad entry and why ("" if ok)."""

    ok: bool
    entries: int
    problem: str
    last_hash: str = ""  # hash of the newest entry (GENESIS when empty); "" when broken


def _json_value(x: Any) -> Any:
    if isinstance(x, datetime) and x.tzinfo is not None:
        return x.astimezone(UTC).isoformat()
    raise TypeError(f"{type(x).__name__} {x!r} is not JSON")


def canonical_json(value: Any) -> str:
    """The canonical JSON text the chain hashes: keys sorted, UTF-8, no spaces, no NaN."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                      allow_nan=False, default=_json_value)


def entry_hash(seq: int, t_ms: int, user: str, action: str, target: str,
               detail: Mapping[str, Any], prev_hash: str) -> str:
    """The sha256 hex an entry with these fields must hold."""
    text = canonical_json([seq, t_ms, user, action, target, detail, prev_hash])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _ms(t: datetime) -> int:
    return round(t.timestamp() * 1000)


def _entry(row: tuple[Any, ...]) -> AuditEntry:
    seq, t_ms, user, action, target, detail, prev_hash, hash_ = row
    return AuditEntry(seq, datetime.fromtimestamp(t_ms / 1000, UTC), user, action, target,
                      json.loads(detail), prev_hash, hash_)


class AuditLog:
    """The `audit_log` table of one SQLite file (created with its directory if missing)."""

    def __init__(self, path: str | Path) -> None:
        self._file = TableFile(path, _SCHEMA, "audit log", AuditError)
        self.path = self._file.path
        self._db = self._file.connect

    def append(self, user: str, action: str, target: str,
               detail: Mapping[str, Any] | None = None, t: datetime | None = None,
               ) -> AuditEntry:
        """Add an entry (at `t`, default now) chained to the newest one; returns it."""
        if t is None:
            t = datetime.now(UTC)
        elif t.tzinfo is None:
            raise InvalidValueError(f"audit entry {action} {target}: time {t} has no time zone")
        try:
            # round trip: what is returned is what is stored and hashed (e.g. datetimes
            # become ISO text)
            stored = canonical_json(dict(detail or {}))
        except (TypeError, ValueError) as exc:
            raise InvalidValueError(f"audit entry {action} {target}: detail is not JSON: {exc}"
                                    ) from None
        values: dict[str, Any] = json.loads(stored)
        t_ms = _ms(t)
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                last = db.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1"
                                  ).fetchone()
                seq, prev = (1, GENESIS) if last is None else (last[0] + 1, last[1])
                digest = entry_hash(seq, t_ms, user, action, target, values, prev)
                db.execute(f"INSERT INTO audit_log ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?)",
                           (seq, t_ms, user, action, target, stored, prev, digest))
                db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise
        return AuditEntry(seq, datetime.fromtimestamp(t_ms / 1000, UTC), user, action, target,
                          values, prev, digest)

    def append_record(self, rec: AuditRecord) -> AuditEntry:
        """Add an operator's alarm action: target "alarm:<rule>", detail comment and until."""
        detail: dict[str, Any] = {"comment": rec.comment}
        if rec.until is not None:
            detail["until"] = rec.until.astimezone(UTC).isoformat()
        return self.append(rec.user, rec.action, f"alarm:{rec.rule}", detail, rec.t)

    def entries(self, start: datetime | None = None, end: datetime | None = None,
                limit: int = 1000) -> list[AuditEntry]:
        """Entries with start ≤ t < end (either bound optional), oldest first, at most limit."""
        lo = -(2**63) if start is None else _ms(start)
        hi = 2**63 - 1 if end is None else _ms(end)
        with self._db() as db:
            rows = db.execute(f"SELECT {_COLUMNS} FROM audit_log WHERE t_ms >= ? AND t_ms < ?"
                              " ORDER BY seq LIMIT ?", (lo, hi, limit)).fetchall()
        return [_entry(row) for row in rows]

    def latest(self, action: str) -> AuditEntry | None:
        """The newest entry of one action (e.g. the last "config_changed"), or None."""
        with self._db() as db:
            row = db.execute(f"SELECT {_COLUMNS} FROM audit_log WHERE action = ?"
                             " ORDER BY seq DESC LIMIT 1", (action,)).fetchone()
        return None if row is None else _entry(row)


def _check(row: tuple[Any, ...], seq_expected: int, prev_expected: str) -> str:
    """Why one entry breaks the chain, "" if it does not."""
    seq, t_ms, user, action, target, detail, prev_hash, hash_ = row
    if seq != seq_expected:
        missing = (f"entry {seq_expected} is missing" if seq == seq_expected + 1
                   else f"entries {seq_expected} to {seq - 1} are missing")
        return f"gap in seq ({missing})"
    if prev_hash != prev_expected:
        before = ("the genesis hash (64 zeros)" if seq == 1
                  else f"the hash of entry {seq - 1} ({str(prev_expected)[:16]}…)")
        return f"broken link: prev_hash {str(prev_hash)[:16]}… is not {before}"
    try:
        values = json.loads(detail)
        if not isinstance(values, dict):
            return "hash mismatch: detail is not a JSON object"
        computed = entry_hash(seq, t_ms, user, action, target, values, prev_hash)
    except (TypeError, ValueError):
        return "hash mismatch: the entry holds a value that is not JSON text"
    if computed != hash_:
        return f"hash mismatch: stored {str(hash_)[:16]}…, computed {computed[:16]}…"
    return ""


def verify(path: str | Path) -> AuditVerdict:
    """Recompute the whole chain of the audit log in `path` (read only)."""
    p = Path(path)
    if not p.is_file():
        raise AuditError(f"audit log {p}: no such file")
    try:
        db = sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro", uri=True, timeout=5.0)
    except sqlite3.Error as exc:
        raise AuditError(f"audit log {p}: cannot open: {exc}") from None
    try:
        if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'audit_log'"
                      ).fetchone() is None:
            return AuditVerdict(True, 0, "", GENESIS)
        (count,) = db.execute("SELECT COUNT(*) FROM audit_log").fetchone()
        seq, prev = 1, GENESIS
        for row in db.execute(f"SELECT {_COLUMNS} FROM audit_log ORDER BY seq"):
            why = _check(row, seq, prev)
            if why:
                return AuditVerdict(False, count, f"entry {row[0]}: {why}")
            seq, prev = row[0] + 1, row[7]
        return AuditVerdict(True, count, "", prev)
    except sqlite3.Error as exc:
        raise AuditError(f"audit log {p}: cannot read: {exc}") from None
    finally:
        db.close()
