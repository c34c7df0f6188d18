"""Retention of the historian: pruning what is past its time, and the storage report.

Pruning runs after a verified backup (server/backup.py) in a worker thread, in DELETE
transactions of `chunk_rows` rows with a sleep between them, so the server's writer waits
for one small chunk at most. It deletes a row only if all of these hold:
- it is older than its retention (results: `results_years`, raw windows: `raw_days`);
- it is older than the backup's snapshot time and the very row is in that backup (the
  backup file is attached read-only and each deleted row's key is looked up in it), so a
  period not yet contained in a verified backup is never deleted;
- it is in no locked period. Locking (an admin locks a reported month) is another bullet
  of issue 15: until it exists, callers pass `locked` ranges (none yet); the locking code
  hands its locked periods here (BackupScheduler's `locked` callable).
Factor versions, saved alarm rules, accounts and the audit log are never pruned.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from model.errors import AuditError, CarbonScadaError
from server.audit import AuditLog
from server.backupconfig import MIN_RESULTS_YEARS, RetentionConfig

YEAR_DAYS = 365.25


class RetentionError(CarbonScadaError):
    """Pruning or the storage report failed; names the file and why."""


@dataclass(frozen=True, slots=True)
class Pruned:
    """How a table is pruned: the columns naming a row, and which retention applies."""

    table: str
    key: str | None  # the identifier column before t_ms in the primary key, if any
    row: str  # what names one row (for the look-up in the backup)
    raw: bool = False  # kept raw_days, else results_years


_KEYED = {"source_minute": "source", "unit_minute": "unit", "tag_minute": "tag",
          "source_hour": "source", "source_day": "source", "stream_hour": "stream",
          "stream_day": "stream", "unit_hour": "unit", "unit_day": "unit", "period": "level"}
PRUNED: tuple[Pruned, ...] = (
    Pruned("raw_window", None, "t_ms", raw=True),
    *(Pruned(t, k, "t_ms") for t, k in _KEYED.items()),
    Pruned("alarm_journal", None, "id"),
    Pruned("delivery_log", None, "rowid"),
)
"""Every table pruning touches; any other table is kept whole."""


def _ms(t: datetime) -> int:
    return round(t.timestamp() * 1000)


def cutoffs(retention: RetentionConfig, now: datetime) -> tuple[datetime, datetime]:
    """(results, raw) times before which rows are past their retention."""
    return (now - timedelta(days=YEAR_DAYS * retention.results_years),
            now - timedelta(days=retention.raw_days))


def _prune_table(db: sqlite3.Connection, spec: Pruned, before_ms: int,
                 locked: Sequence[tuple[int, int]], retention: RetentionConfig,
                 stop: threading.Event | None) -> int:
    t = spec.table
    if not db.execute("SELECT 1 FROM bk.sqlite_master WHERE type='table' AND name=?",
                      (t,)).fetchone():
        return 0  # not in the backup: nothing of it is known to be backed up
    lock_sql = "".join(" AND NOT (m.t_ms >= ? AND m.t_ms < ?)" for _ in locked)
    lock_args = [x for r in locked for x in r]
    if spec.key is None:
        match = f"b.{spec.row} = m.{spec.row}"
        select = (f"SELECT m.{spec.row} FROM main.{t} m WHERE m.t_ms < ?{lock_sql} AND EXISTS"
                  f" (SELECT 1 FROM bk.{t} b WHERE {match}) ORDER BY m.t_ms LIMIT ?")
        keys: list[object] = [None]
        sql = f"DELETE FROM main.{t} WHERE {spec.row} IN ({select})"
    else:
        k = spec.key
        select = (f"SELECT m.t_ms FROM main.{t} m WHERE m.{k} = ? AND m.t_ms < ?{lock_sql}"
                  f" AND EXISTS (SELECT 1 FROM bk.{t} b WHERE b.{k} = m.{k} AND"
                  " b.t_ms = m.t_ms) ORDER BY m.t_ms LIMIT ?")
        sql = f"DELETE FROM main.{t} WHERE {k} = ? AND t_ms IN ({select})"
        keys = []
        row = db.execute(f"SELECT MIN({k}) FROM main.{t}").fetchone()
        while row is not None and row[0] is not None:  # a skip scan along the primary key
            keys.append(row[0])
            row = db.execute(f"SELECT MIN({k}) FROM main.{t} WHERE {k} > ?", (row[0],)
                             ).fetchone()
    deleted = 0
    for key in keys:
        while True:
            if stop is not None and stop.is_set():
                return deleted
            args = ([] if key is None else [key, key]) + [before_ms, *lock_args,
                                                          retention.chunk_rows]
            n = db.execute(sql, args).rowcount  # autocommit: one short transaction each
            deleted += n
            if n < retention.chunk_rows:
                break
            if retention.chunk_sleep_s:
                time.sleep(retention.chunk_sleep_s)
    return deleted


def prune(historian: Path, backup: Path, backup_t: datetime, retention: RetentionConfig, *,
          now: datetime | None = None, locked: Sequence[tuple[datetime, datetime]] = (),
          stop: threading.Event | None = None, audit: AuditLog | None = None,
          ) -> dict[str, int]:
    """Delete what is past its retention and contained in `backup` (taken at `backup_t`),
    outside the `locked` ranges [start, end); returns the rows deleted per table (blocking).
    """
    now = now or datetime.now(UTC)
    results_cut, raw_cut = cutoffs(retention, now)
    if not backup.is_file():
        raise RetentionError(f"pruning {historian}: backup {backup} is gone: nothing pruned")
    ranges = [(_ms(a), _ms(b)) for a, b in locked]
    try:
        db = sqlite3.connect(f"{historian.resolve().as_uri()}?mode=rw", uri=True,
                             timeout=10.0, isolation_level=None)
    except sqlite3.Error as exc:
        raise RetentionError(f"pruning {historian}: cannot open: {exc}") from None
    deleted: dict[str, int] = {}
    try:
        db.execute("ATTACH DATABASE ? AS bk", (f"{backup.resolve().as_uri()}?mode=ro",))
        for spec in PRUNED:
            cut = raw_cut if spec.raw else results_cut
            before_ms = min(_ms(cut), _ms(backup_t))
            n = _prune_table(db, spec, before_ms, ranges, retention, stop)
            if n:
                deleted[spec.table] = n
    except sqlite3.Error as exc:
        raise RetentionError(f"pruning {historian}: {exc}") from None
    finally:
        db.close()
    if deleted and audit is not None:
        try:
            audit.append("system", "retention_prune", f"historian:{historian}", {
                "deleted": deleted, "results_before": results_cut.isoformat(),
                "raw_before": raw_cut.isoformat(), "backup": str(backup),
                "locked": [[a.isoformat(), b.isoformat()] for a, b in locked]})
        except AuditError as exc:
            raise RetentionError(f"pruned {deleted}, but the audit log was not written: {exc}"
                                 ) from None
    return deleted


@dataclass(frozen=True, slots=True)
class TableSize:
    """One table's storage: rows, bytes (with its indexes), the span of its data."""

    table: str
    rows: int
    bytes: int
    first: datetime | None
    last: datetime | None
    keep_days: float | None  # None: kept whole (not pruned)

    def growth_bytes_day(self) -> float | None:
        """Bytes a day, from its size over the span of its data (None without a span)."""
        if self.first is None or self.last is None or self.last <= self.first:
            return None
        return self.bytes / ((self.last - self.first).total_seconds() / 86400)

    def projected_bytes(self, years: float = MIN_RESULTS_YEARS) -> float:
        """Its size after `years` of growth at the current rate, its retention applied."""
        rate = self.growth_bytes_day()
        if rate is None:
            return float(self.bytes)
        days = YEAR_DAYS * years
        if self.keep_days is not None:
            days = min(days, self.keep_days)
        return rate * days


def storage(historian: Path, retention: RetentionConfig) -> tuple[list[TableSize], int, bool]:
    """Every table's storage, the file's bytes and whether sizes are exact (dbstat)."""
    if not historian.is_file():
        raise RetentionError(f"historian {historian}: no such file")
    keep = {s.table: retention.raw_days if s.raw else YEAR_DAYS * retention.results_years
            for s in PRUNED}
    try:
        db = sqlite3.connect(f"{historian.resolve().as_uri()}?mode=ro", uri=True, timeout=10.0)
    except sqlite3.Error as exc:
        raise RetentionError(f"historian {historian}: cannot open: {exc}") from None
    try:
        owner = dict(db.execute("SELECT name, tbl_name FROM sqlite_master"
                                " WHERE type IN ('table', 'index')").fetchall())
        page = int(db.execute("PRAGMA page_size").fetchone()[0])
        total = page * int(db.execute("PRAGMA page_count").fetchone()[0])
        sizes: dict[str, int] = {}
        try:
            for name, size in db.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name"):
                tbl = owner.get(name, name)
                sizes[tbl] = sizes.get(tbl, 0) + int(size)
            exact = True
        except sqlite3.OperationalError:  # SQLite built without the dbstat virtual table
            exact = False
        out = []
        for t in sorted(n for n, o in owner.items() if n == o and not n.startswith("sqlite_")):
            rows = int(db.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0])
            cols = {r[1] for r in db.execute(f'PRAGMA table_info("{t}")')}
            first = last = None
            if "t_ms" in cols and rows:
                lo, hi = db.execute(f'SELECT MIN(t_ms), MAX(t_ms) FROM "{t}"').fetchone()
                first = datetime.fromtimestamp(lo / 1000, UTC)
                last = datetime.fromtimestamp(hi / 1000, UTC)
            out.append(TableSize(t, rows, sizes.get(t, 0), first, last, keep.get(t)))
        if not exact:  # page counts unknown per table: share the file by rows
            all_rows = sum(s.rows for s in out) or 1
            out = [TableSize(s.table, s.rows, total * s.rows // all_rows, s.first, s.last,
                             s.keep_days) for s in out]
        return out, total, exact
    except sqlite3.Error as exc:
        raise RetentionError(f"historian {historian}: cannot read: {exc}") from None
    finally:
        db.close()


def storage_report(historian: Path, retention: RetentionConfig) -> str:
    """The `carbonscada storage` text: sizes per table and the projection at 5 years."""
    tables, total, exact = storage(historian, retention)
    how = "dbstat" if exact else "shared by rows (no dbstat in this SQLite)"
    lines = [f"historian {historian}: {total / 1e6:.3f} MB (sizes per table: {how})",
             f"{'table':<16} {'rows':>10} {'MB':>10} {'MB/day':>10} {'kept':>10} "
             f"{'MB at 5 y':>10}  data from"]
    projected = 0.0
    for s in tables:
        rate = s.growth_bytes_day()
        at5 = s.projected_bytes()
        projected += at5
        kept = "all" if s.keep_days is None else f"{s.keep_days:g} d"
        span = ("" if s.first is None or s.last is None else
                f"{s.first.isoformat(timespec='seconds')} to "
                f"{s.last.isoformat(timespec='seconds')}")
        lines.append(f"{s.table:<16} {s.rows:>10} {s.bytes / 1e6:>10.3f} "
                     f"{'-' if rate is None else f'{rate / 1e6:.3f}':>10} {kept:>10} "
                     f"{at5 / 1e6:>10.3f}  {span}")
    spans = [s.last - s.first for s in tables if s.first and s.last and s.last > s.first]
    basis = max(spans, default=timedelta(0))
    lines.append(f"{'total':<16} {sum(s.rows for s in tables):>10} "
                 f"{sum(s.bytes for s in tables) / 1e6:>10.3f} {'':>10} {'':>10} "
                 f"{projected / 1e6:>10.3f}  projected at 5 years from the growth over "
                 f"{basis.total_seconds() / 86400:.2f} days of data")
    return "\n".join(lines)
