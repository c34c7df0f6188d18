"""The ledger of entries people make: lab factors, quantities, corrections, CEMS QA checks
and comparison tests, period locks. Append-only, in the historian's SQLite file.

An entry is never changed or deleted (triggers refuse it, like the audit log's): a wrong
entry is put right by a later one (the latest value of a period wins; an unlock ends a
lock). Every call opens its own short-lived connection and appends under BEGIN IMMEDIATE,
like server/audit.py, so the CLI and the server may write one file at once.
"""

from __future__ import annotations

import contextlib
import csv
import json
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TextIO

from model.errors import CarbonScadaError

EntryKind = Literal["factor", "quantity", "correction", "qa_check", "ra_test", "lock",
                    "unlock"]
KINDS: tuple[str, ...] = ("factor", "quantity", "correction", "qa_check", "ra_test", "lock",
                          "unlock")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entry (
  id INTEGER PRIMARY KEY AUTOINCREMENT, entered_ms INTEGER NOT NULL, user TEXT NOT NULL,
  kind TEXT NOT NULL, target TEXT NOT NULL, level TEXT NOT NULL, t_ms INTEGER NOT NULL,
  t_end_ms INTEGER, fields TEXT NOT NULL, unit TEXT NOT NULL, document TEXT NOT NULL,
  reason TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS entry_kind ON entry (kind, t_ms);
CREATE TRIGGER IF NOT EXISTS entry_no_update BEFORE UPDATE ON entry
BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS entry_no_delete BEFORE DELETE ON entry
BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
"""


class LedgerError(CarbonScadaError):
    """The ledger cannot be read or written; names the file."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One ledger entry. `fields` holds its values by name (numbers, or text for QA)."""

    id: int
    entered: datetime  # UTC
    user: str
    kind: str
    target: str  # "source:S1", "stream:coal", "unit:U1", factor set name, "" for a lock
    level: str  # minute / hour / day for values, "" otherwise
    t: datetime  # period start, effective date, check time, lock start (UTC)
    t_end: datetime | None  # lock end
    fields: Mapping[str, Any]
    unit: str  # of a quantity; factor units are in the factor names
    document: str  # lab report, weighbridge ticket, delivery note …
    reason: str

    def as_json(self) -> dict[str, Any]:
        """The entry as a JSON-ready dict (times as ISO 8601 UTC)."""
        return {"id": self.id, "entered": self.entered.isoformat(), "user": self.user,
                "kind": self.kind, "target": self.target, "level": self.level,
                "t": self.t.isoformat(),
                "t_end": None if self.t_end is None else self.t_end.isoformat(),
                "fields": dict(self.fields), "unit": self.unit, "document": self.document,
                "reason": self.reason}


def _ms(t: datetime) -> int:
    return round(t.timestamp() * 1000)


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _entry(row: tuple[Any, ...]) -> Entry:
    (id_, entered, user, kind, target, level, t_ms, t_end_ms, fields, unit, document,
     reason) = row
    return Entry(int(id_), _dt(entered), user, kind, target, level, _dt(t_ms),
                 None if t_end_ms is None else _dt(t_end_ms), json.loads(fields), unit,
                 document, reason)


class Ledger:
    """The entries of one historian file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        with self._connect() as db:
            db.executescript(_SCHEMA)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise LedgerError(f"ledger {self.path}: cannot open: {exc}") from None
        try:
            yield db
        except sqlite3.Error as exc:
            raise LedgerError(f"ledger {self.path}: {exc}") from None
        finally:
            db.close()

    def append(self, user: str, kind: str, target: str, level: str, t: datetime,
               fields: Mapping[str, Any], *, t_end: datetime | None = None, unit: str = "",
               document: str = "", reason: str = "", now: datetime | None = None) -> Entry:
        """Append one entry; returns it with its id and time."""
        entered = _ms(datetime.now(UTC) if now is None else now)
        text = json.dumps(dict(fields), sort_keys=True, allow_nan=False)
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            cur = db.execute(
                "INSERT INTO entry (entered_ms, user, kind, target, level, t_ms, t_end_ms,"
                " fields, unit, document, reason) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (entered, user, kind, target, level, _ms(t),
                 None if t_end is None else _ms(t_end), text, unit, document, reason))
            db.execute("COMMIT")
            assert cur.lastrowid is not None
            row = db.execute("SELECT * FROM entry WHERE id = ?", (cur.lastrowid,)).fetchone()
        return _entry(row)

    def entries(self, kinds: tuple[str, ...] = KINDS) -> list[Entry]:
        """Every entry of the given kinds, in entry order."""
        marks = ",".join("?" * len(kinds))
        with self._connect() as db:
            rows = db.execute(f"SELECT * FROM entry WHERE kind IN ({marks}) ORDER BY id",
                              kinds).fetchall()
        return [_entry(r) for r in rows]

    def get(self, entry_id: int) -> Entry | None:
        """One entry by id, None if there is none."""
        with self._connect() as db:
            row = db.execute("SELECT * FROM entry WHERE id = ?", (entry_id,)).fetchone()
        return None if row is None else _entry(row)


# ------------------------------------------------------------------ the CSV an auditor gets

CSV_HEADER = ("id", "entered", "user", "kind", "target", "level", "t", "t_end", "fields",
              "unit", "document", "reason")


def write_entries_csv(out: TextIO, entries: Iterable[Entry]) -> int:
    """Entries as CSV (times ISO 8601 UTC, `fields` as JSON); returns how many."""
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_HEADER)
    n = 0
    for e in entries:
        w.writerow((e.id, e.entered.isoformat(), e.user, e.kind, e.target, e.level,
                    e.t.isoformat(), "" if e.t_end is None else e.t_end.isoformat(),
                    json.dumps(dict(e.fields), sort_keys=True), e.unit, e.document, e.reason))
        n += 1
    return n


def read_entries_csv(path: Path) -> list[Entry]:
    """Entries from a CSV `write_entries_csv` wrote; LedgerError naming file and line."""
    try:
        f = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise LedgerError(f"{path}: cannot read: {exc.strerror}") from None
    out: list[Entry] = []
    with f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or tuple(header) != CSV_HEADER:
            raise LedgerError(f"{path}: line 1: header must be {','.join(CSV_HEADER)}")
        for row in reader:
            line = reader.line_num
            if not row:
                continue
            if len(row) != len(CSV_HEADER):
                raise LedgerError(f"{path}: line {line}: expected {len(CSV_HEADER)} columns, "
                                  f"got {len(row)}")
            (id_, entered, user, kind, target, level, t, t_end, fields, unit, document,
             reason) = row
            try:
                e = Entry(int(id_), _aware(entered), user, kind, target, level, _aware(t),
                          _aware(t_end) if t_end else None, json.loads(fields), unit,
                          document, reason)
            except (ValueError, TypeError) as exc:
                raise LedgerError(f"{path}: line {line}: {exc}") from None
            if kind not in KINDS:
                raise LedgerError(f"{path}: line {line}: unknown kind {kind!r} "
                                  f"(kinds: {', '.join(KINDS)})")
            out.append(e)
    return out


def _aware(text: str) -> datetime:
    t = datetime.fromisoformat(text)
    if t.tzinfo is None:
        raise ValueError(f"time {text!r} has no UTC offset")
    return t.astimezone(UTC)
