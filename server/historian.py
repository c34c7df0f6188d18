"""The embedded historian: SQLite in WAL mode, the system of record.

All SQLite work runs on one dedicated thread so the event loop never waits on disk.
Times are stored as integer milliseconds since the Unix epoch (UTC).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from server.errors import SinkError
from server.records import AlarmEvent, DataFlag, MinuteResult, RawWindow, Sample

SCHEMA = """
CREATE TABLE IF NOT EXISTS source_minute (
  source TEXT NOT NULL, unit TEXT NOT NULL, t_ms INTEGER NOT NULL,
  flow_act_m3_h REAL, flow_std_dry_m3_h REAL, co2_dry_pct REAL, co2_mg_m3 REAL,
  co2_rate_kg_h REAL, co2_kg REAL, valid INTEGER NOT NULL, flag TEXT NOT NULL,
  substitution TEXT NOT NULL DEFAULT '',
  PRIMARY KEY (source, t_ms)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS unit_minute (
  unit TEXT NOT NULL, t_ms INTEGER NOT NULL, output_mwh REAL, co2_kg REAL,
  intensity_t_mwh REAL, valid INTEGER NOT NULL, flag TEXT NOT NULL,
  PRIMARY KEY (unit, t_ms)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tag_minute (
  tag TEXT NOT NULL, t_ms INTEGER NOT NULL, mean REAL, min REAL, max REAL,
  count INTEGER NOT NULL, flag TEXT NOT NULL,
  PRIMARY KEY (tag, t_ms)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS raw_window (
  t_ms INTEGER PRIMARY KEY, tags TEXT NOT NULL, counts BLOB NOT NULL, times BLOB NOT NULL,
  vals BLOB NOT NULL, flags BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS alarm_journal (
  id INTEGER PRIMARY KEY AUTOINCREMENT, t_ms INTEGER NOT NULL, rule TEXT NOT NULL,
  state TEXT NOT NULL, previous TEXT NOT NULL, value REAL, limit_value REAL,
  target TEXT NOT NULL, message TEXT NOT NULL);
"""

# Columns added after a table was first shipped: (table, column, definition).
_ADDED_COLUMNS = (("source_minute", "substitution", "TEXT NOT NULL DEFAULT ''"),)

_SOURCE_FIELDS = ("flow_act_m3_h", "flow_std_dry_m3_h", "co2_dry_pct", "co2_mg_m3",
                  "co2_rate_kg_h", "co2_kg")


def to_ms(t: datetime) -> int:
    """UTC datetime → integer epoch milliseconds."""
    return round(t.timestamp() * 1000)


def from_ms(ms: int) -> datetime:
    """Integer epoch milliseconds → UTC datetime."""
    return datetime.fromtimestamp(ms / 1000, UTC)


def _nan_to_null(x: float) -> float | None:
    return None if x != x else x


class Historian:
    """Minute results, tag statistics and the alarm journal in one SQLite file."""

    name = "historian"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="historian")
        self._db: sqlite3.Connection | None = None

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(SCHEMA)
            for table, column, definition in _ADDED_COLUMNS:
                have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
                if column not in have:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
        except (OSError, sqlite3.Error) as exc:
            raise SinkError(f"historian {self.path}: cannot open: {exc}") from None
        self._db = db

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise SinkError("historian is not open")
        return self._db

    async def start(self) -> None:
        """Open (and create) the database."""
        await self._run(self._open)

    async def stop(self) -> None:
        """Checkpoint and close the database, then end its thread."""
        def close() -> None:
            if self._db is not None:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                self._db.close()
                self._db = None
        await self._run(close)
        self._pool.shutdown(wait=True)

    async def on_samples(self, samples: Sequence[Sample]) -> None:
        """Raw samples are kept as minute statistics only (see on_minute)."""

    async def on_minute(self, result: MinuteResult) -> None:
        """Store one minute's results in one transaction."""
        await self._run(self._write, result)

    def _write(self, r: MinuteResult) -> None:
        db = self._conn()
        with db:
            db.executemany(
                "INSERT OR REPLACE INTO source_minute VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                [(s.source, s.unit, to_ms(s.t),
                  *(_nan_to_null(getattr(s, f)) for f in _SOURCE_FIELDS),
                  int(s.valid), s.flag.name, s.substitution) for s in r.sources])
            db.executemany(
                "INSERT OR REPLACE INTO unit_minute VALUES (?,?,?,?,?,?,?)",
                [(u.unit, to_ms(u.t), _nan_to_null(u.output_mwh), _nan_to_null(u.co2_kg),
                  _nan_to_null(u.intensity_t_mwh), int(u.valid), u.flag.name)
                 for u in r.units])
            if r.raw is not None:
                w = r.raw
                db.execute("INSERT OR REPLACE INTO raw_window VALUES (?,?,?,?,?,?)",
                           (to_ms(r.t), "\n".join(w.tags), w.counts.astype("<i8").tobytes(),
                            w.times.astype("<f8").tobytes(), w.values.astype("<f8").tobytes(),
                            w.flags.astype("u1").tobytes()))
            db.executemany(
                "INSERT OR REPLACE INTO tag_minute VALUES (?,?,?,?,?,?,?)",
                [(g.tag, to_ms(g.t), _nan_to_null(g.mean), _nan_to_null(g.min),
                  _nan_to_null(g.max), g.count, g.flag.name) for g in r.tags])

    async def raw_windows(self, start: datetime, end: datetime) -> list[tuple[datetime, RawWindow]]:
        """The raw windows of the minutes with start ≤ t < end, oldest first."""
        def query() -> list[tuple[datetime, RawWindow]]:
            rows = self._conn().execute(
                "SELECT t_ms, tags, counts, times, vals, flags FROM raw_window"
                " WHERE t_ms >= ? AND t_ms < ? ORDER BY t_ms", (to_ms(start), to_ms(end)))
            return [(from_ms(t_ms), RawWindow(
                tuple(tags.split("\n")) if tags else (),
                np.frombuffer(counts, "<i8").astype(np.int64),
                np.frombuffer(times, "<f8").astype(np.float64),
                np.frombuffer(vals, "<f8").astype(np.float64),
                np.frombuffer(flags, "u1").astype(np.uint8)))
                for t_ms, tags, counts, times, vals, flags in rows]
        windows: list[tuple[datetime, RawWindow]] = await self._run(query)
        return windows

    async def record_alarm(self, event: AlarmEvent) -> None:
        """Append an alarm transition to the journal."""
        def write() -> None:
            db = self._conn()
            with db:
                db.execute(
                    "INSERT INTO alarm_journal (t_ms, rule, state, previous, value,"
                    " limit_value, target, message) VALUES (?,?,?,?,?,?,?,?)",
                    (to_ms(event.t), event.rule, event.state, event.previous,
                     _nan_to_null(event.value), event.limit, event.target, event.message))
        await self._run(write)

    async def period_sums(self, table: str, column: str, starts: Sequence[datetime],
                          ) -> dict[str, tuple[float, ...]]:
        """Per source or unit: the sums of `column` from each of `starts` on, in one scan.

        Used after a restart to continue the hour / day / year totals.
        """
        if table not in ("source_minute", "unit_minute"):
            raise ValueError(f"unknown table {table!r}")
        if column not in {*_SOURCE_FIELDS, "output_mwh"}:
            raise ValueError(f"unknown column {column!r}")
        ident = "source" if table == "source_minute" else "unit"
        ms = [to_ms(t) for t in starts]
        sums = ", ".join(f"TOTAL(CASE WHEN t_ms >= ? THEN {column} END)" for _ in ms)

        def query() -> dict[str, tuple[float, ...]]:
            rows = self._conn().execute(
                f"SELECT {ident}, {sums} FROM {table} WHERE t_ms >= ? GROUP BY {ident}",
                (*ms, min(ms))).fetchall()
            return {row[0]: tuple(float(x) for x in row[1:]) for row in rows}
        result: dict[str, tuple[float, ...]] = await self._run(query)
        return result

    async def source_minutes(self, source: str, start: datetime,
                             end: datetime) -> list[dict[str, Any]]:
        """Stored minute results of one source with start ≤ t < end, oldest first."""
        def query() -> list[dict[str, Any]]:
            cur = self._conn().execute(
                "SELECT * FROM source_minute WHERE source = ? AND t_ms >= ? AND t_ms < ?"
                " ORDER BY t_ms", (source, to_ms(start), to_ms(end)))
            names = [d[0] for d in cur.description]
            rows = []
            for row in cur.fetchall():
                rec = dict(zip(names, row, strict=True))
                rec["t"] = from_ms(rec.pop("t_ms"))
                rec["valid"] = bool(rec["valid"])
                rec["flag"] = DataFlag[rec["flag"]]
                rows.append(rec)
            return rows
        rows: list[dict[str, Any]] = await self._run(query)
        return rows
