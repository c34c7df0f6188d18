"""The embedded historian: SQLite in WAL mode, the system of record.

All SQLite work runs on one dedicated thread so the event loop never waits on disk;
modules that read the file on threads of their own (conformity, performance, assets) do so
through `read_only`. Times are stored as integer milliseconds since the Unix epoch (UTC).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import sqlite3
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from itertools import repeat
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from model.errors import InvalidValueError, SinkError
from model.flags import DataFlag
from model.records import (
    AlarmEvent,
    AllowancePosition,
    DeliveryRecord,
    MinuteResult,
    PeriodRecords,
    PeriodResult,
    RawWindow,
    SampleBlock,
    SourceMinute,
    StreamPeriod,
    UnitMinute,
    UnitPeriod,
)
from model.schema import ConfigModel
from server import rawcodec

if TYPE_CHECKING:
    from compute.factors import FactorTable


class HistorianConfig(ConfigModel):
    """The embedded SQLite historian, the system of record."""

    path: str = "var/historian.sqlite"


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
CREATE TABLE IF NOT EXISTS period (
  level TEXT NOT NULL, t_ms INTEGER NOT NULL, t_end_ms INTEGER NOT NULL,
  annual_t REAL, ytd_t REAL, year_fraction REAL, days_left REAL, trailing_30d_t REAL,
  prorated_t REAL, used_pct REAL, headroom_t REAL, forecast_year_end_t REAL,
  forecast_shortfall_t REAL, carbon_price_cny_t REAL, shortfall_cost_cny REAL,
  PRIMARY KEY (level, t_ms)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS factor_version (
  id TEXT PRIMARY KEY, stream TEXT NOT NULL, effective_from_ms INTEGER NOT NULL,
  factors TEXT NOT NULL, source TEXT NOT NULL, first_seen_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS alarm_journal (
  id INTEGER PRIMARY KEY AUTOINCREMENT, t_ms INTEGER NOT NULL, rule TEXT NOT NULL,
  state TEXT NOT NULL, previous TEXT NOT NULL, value REAL, limit_value REAL,
  target TEXT NOT NULL, message TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS alarm_journal_t ON alarm_journal (t_ms);
CREATE INDEX IF NOT EXISTS alarm_journal_rule ON alarm_journal (rule, id);
CREATE TABLE IF NOT EXISTS delivery_log (
  t_ms INTEGER NOT NULL, channel TEXT NOT NULL, rule TEXT NOT NULL, state TEXT NOT NULL,
  kind TEXT NOT NULL, outcome TEXT NOT NULL, attempt INTEGER NOT NULL, error TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS delivery_log_t ON delivery_log (t_ms);
CREATE TABLE IF NOT EXISTS revision (
  tbl TEXT NOT NULL, ident TEXT NOT NULL, t_ms INTEGER NOT NULL, rev INTEGER NOT NULL,
  entry INTEGER NOT NULL, replaced_ms INTEGER NOT NULL, row TEXT NOT NULL,
  PRIMARY KEY (tbl, ident, t_ms, rev)) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS revision_no_update BEFORE UPDATE ON revision
BEGIN SELECT RAISE(ABORT, 'revisions are kept as they were'); END;
CREATE TRIGGER IF NOT EXISTS revision_no_delete BEFORE DELETE ON revision
BEGIN SELECT RAISE(ABORT, 'revisions are kept as they were'); END;
CREATE TABLE IF NOT EXISTS alarm_rule_set (
  id INTEGER PRIMARY KEY AUTOINCREMENT, t_ms INTEGER NOT NULL, user TEXT NOT NULL,
  comment TEXT NOT NULL, config_hash TEXT NOT NULL, rules_json TEXT NOT NULL);
"""

# Hour and day tables share their columns: one definition per kind, two tables each.
_PERIOD_COLUMNS = {
    "source": """
  source TEXT NOT NULL, t_ms INTEGER NOT NULL, co2_dry_pct REAL, flow_std_dry_m3_h REAL,
  co2_rate_kg_h REAL, co2_t REAL, co2_measured_t REAL, valid INTEGER NOT NULL,
  flag TEXT NOT NULL, n_valid INTEGER NOT NULL, substituted INTEGER NOT NULL,
  substitution_rule TEXT NOT NULL, n_substituted INTEGER NOT NULL, n_missing INTEGER NOT NULL,
  substitution_note TEXT NOT NULL,
  PRIMARY KEY (source, t_ms)""",
    "stream": """
  stream TEXT NOT NULL, unit TEXT NOT NULL, t_ms INTEGER NOT NULL, t_end_ms INTEGER NOT NULL,
  quantity REAL, quantity_unit TEXT NOT NULL, co2_t REAL, factor_version TEXT NOT NULL,
  method TEXT NOT NULL, valid INTEGER NOT NULL, flag TEXT NOT NULL, n_valid INTEGER NOT NULL,
  note TEXT NOT NULL,
  PRIMARY KEY (stream, t_ms)""",
    "unit": """
  unit TEXT NOT NULL, t_ms INTEGER NOT NULL, co2_cems_t REAL, co2_factor_t REAL,
  output_mwh REAL, intensity_t_mwh REAL, valid INTEGER NOT NULL, flag TEXT NOT NULL,
  reconciliation_diff_pct REAL, reconciliation_exceeded INTEGER NOT NULL,
  PRIMARY KEY (unit, t_ms)""",
}
SCHEMA += "".join(f"CREATE TABLE IF NOT EXISTS {kind}_{level} ({cols}) WITHOUT ROWID;\n"
                  for kind, cols in _PERIOD_COLUMNS.items() for level in ("hour", "day"))

# The alarm journal's columns after the nine it was first shipped with, in table order.
# A stored minute row set by hand: (table, source or unit id, minute start, {column: value}).
MinuteRevision = tuple[str, str, datetime, Mapping[str, Any]]
_JOURNAL_TEXT = ("message_zh", "ack_state", "previous_ack_state", "cause", "kind", "area",
                 "user", "comment")
# Columns added after a table was first shipped: (table, column, definition).
_ADDED_COLUMNS = (("source_minute", "substitution", "TEXT NOT NULL DEFAULT ''"),
                  *(("alarm_journal", c, "TEXT NOT NULL DEFAULT ''") for c in _JOURNAL_TEXT),
                  ("alarm_journal", "shelved_until_ms", "INTEGER"),
                  *((f"source_{lv}", "missing_reason", "TEXT NOT NULL DEFAULT ''")
                    for lv in ("hour", "day")),
                  *((f"source_{lv}", c, "REAL") for lv in ("hour", "day")
                    for c in ("substitute_co2_dry_pct", "substitute_flow_std_dry_m3_h")),
                  *((f"unit_{lv}", c, d) for lv in ("hour", "day") for c, d in (
                      ("intensity_flag", "TEXT NOT NULL DEFAULT 'N'"),
                      ("intensity_n_valid", "INTEGER NOT NULL DEFAULT 0"),
                      # the accounted CO2 and its basis, a product output (issue 18)
                      ("co2_t", "REAL"), ("basis", "TEXT NOT NULL DEFAULT 'cems'"),
                      ("output_t", "REAL"), ("intensity_t_t", "REAL"))),
                  # CO2e and the other gases (compute/gases.py; issue 18): rows stored before
                  # had no gas accounted (0 t) and no CO2e (NULL).
                  *((f"stream_{lv}", c, d) for lv in ("hour", "day") for c, d in (
                      ("ch4_t", "REAL DEFAULT 0"), ("n2o_t", "REAL DEFAULT 0"),
                      ("gas", "TEXT NOT NULL DEFAULT ''"), ("gas_t", "REAL DEFAULT 0"),
                      ("co2e_t", "REAL"), ("gwp_set", "TEXT NOT NULL DEFAULT ''"))),
                  *((f"unit_{lv}", c, d) for lv in ("hour", "day") for c, d in (
                      ("co2e_t", "REAL"), ("gwp_set", "TEXT NOT NULL DEFAULT ''"),
                      # hours holding a substitute (rows stored before: not counted, 0)
                      ("n_substituted", "INTEGER NOT NULL DEFAULT 0"))))
_JOURNAL_COLUMNS = ("t_ms", "rule", "state", "previous", "value", "limit_value", "target",
                    "message", *_JOURNAL_TEXT, "shelved_until_ms")
_DELIVERY_COLUMNS = ("t_ms", "channel", "rule", "state", "kind", "outcome", "attempt", "error")

_SOURCE_FIELDS = ("flow_act_m3_h", "flow_std_dry_m3_h", "co2_dry_pct", "co2_mg_m3",
                  "co2_rate_kg_h", "co2_kg")

# Columns of the hour / day tables after the identifier and t_ms, in table order.
_PERIOD_SOURCE = ("co2_dry_pct", "flow_std_dry_m3_h", "co2_rate_kg_h", "co2_t",
                  "co2_measured_t", "valid", "flag", "n_valid", "substituted",
                  "substitution_rule", "n_substituted", "n_missing", "substitution_note",
                  "missing_reason", "substitute_co2_dry_pct", "substitute_flow_std_dry_m3_h")
_PERIOD_STREAM = ("unit", "t_end_ms", "quantity", "quantity_unit", "co2_t", "factor_version",
                  "method", "valid", "flag", "n_valid", "note", "ch4_t", "n2o_t", "gas", "gas_t",
                  "co2e_t", "gwp_set")
_PERIOD_UNIT = ("co2_cems_t", "co2_factor_t", "output_mwh", "intensity_t_mwh", "valid", "flag",
                "reconciliation_diff_pct", "reconciliation_exceeded", "intensity_flag",
                "intensity_n_valid", "co2_t", "basis", "output_t", "intensity_t_t", "co2e_t",
                "gwp_set", "n_substituted")
_ALLOWANCE = tuple(f.name for f in dataclasses.fields(AllowancePosition))
# What OPC UA HistoryRead may read: table → its identifier column.
_HISTORY_TABLES = {"source_minute": "source", "unit_minute": "unit", "source_hour": "source",
                   "unit_day": "unit", "period": "level", "tag_minute": "tag"}
# What the web API and restarts may read: (kind, level) → (table, identifier column).
PERIOD_TABLES = {(kind, level): (f"{kind}_{level}", kind)
                 for kind in ("source", "stream", "unit") for level in ("hour", "day")}


def to_ms(t: datetime) -> int:
    """UTC datetime → integer epoch milliseconds."""
    return round(t.timestamp() * 1000)


def from_ms(ms: int) -> datetime:
    """Integer epoch milliseconds → UTC datetime."""
    return datetime.fromtimestamp(ms / 1000, UTC)


READ_TIMEOUT_S = 5.0  # how long a reader waits on a lock the historian's thread holds


@contextlib.contextmanager
def read_only(path: str | Path, error: Callable[[str], Exception]) -> Iterator[sqlite3.Connection]:
    """The historian's file on a read-only connection of its own, closed after (for reading
    off the historian's thread); an SQLite error opening or reading it raises
    `error("historian <path>: ...")`, `path` as given."""
    # mode=ro: a reader can never write the system of record, nor create a missing file.
    try:
        db = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True,
                             timeout=READ_TIMEOUT_S)
    except sqlite3.Error as exc:
        raise error(f"historian {path}: cannot open: {exc}") from None
    try:
        yield db
    except sqlite3.Error as exc:
        raise error(f"historian {path}: {exc}") from None
    finally:
        db.close()


def _nan_to_null(x: float) -> float | None:
    return None if x != x else x


_FLAG_NAMES = tuple(DataFlag(i).name for i in range(len(DataFlag)))  # by flag value


def _nullable(column: npt.NDArray[np.float64]) -> list[float | None]:
    """The column as Python values, None for NaN (SQL NULL)."""
    out = column.astype(object)
    out[np.isnan(column)] = None
    values: list[float | None] = out.tolist()
    return values


def _source_rows(r: MinuteResult) -> Iterable[tuple[object, ...]]:
    """source_minute rows of a minute: from its columns when it has them (16 700 sources:
    no record each, which cost the event loop its share of the GIL), else its records."""
    cols = r.source_columns
    if cols is None:
        return [(s.source, s.unit, to_ms(s.t),
                 *(_nan_to_null(getattr(s, f)) for f in _SOURCE_FIELDS),
                 int(s.valid), s.flag.name, s.substitution) for s in r.sources]
    flags = cols.flag.tolist()
    return zip(cols.sources, cols.units, repeat(to_ms(r.t)),
               *(_nullable(getattr(cols, f)) for f in _SOURCE_FIELDS),
               [int(f == 0) for f in flags], [_FLAG_NAMES[f] for f in flags],
               [cols.rules[i] for i in cols.substitution.tolist()], strict=False)


def _tag_rows(r: MinuteResult) -> Iterable[tuple[object, ...]]:
    """tag_minute rows of a minute, from its columns when it has them (see _source_rows)."""
    cols = r.tag_columns
    if cols is None:
        return [(g.tag, to_ms(g.t), _nan_to_null(g.mean), _nan_to_null(g.min),
                 _nan_to_null(g.max), g.count, g.flag.name) for g in r.tags]
    return zip(cols.tags, repeat(to_ms(r.t)), _nullable(cols.mean), _nullable(cols.min),
               _nullable(cols.max), cols.count.tolist(),
               [_FLAG_NAMES[f] for f in cols.flag.tolist()], strict=False)


def _null_to_nan(x: float | None) -> float:
    return math.nan if x is None else float(x)


def _cell(record: Any, name: str) -> Any:
    """A record's field as stored: NaN as NULL, flags by letter, times in ms, bools as 0/1."""
    if name == "t_end_ms":
        return to_ms(record.t_end)
    value = getattr(record, name)
    if isinstance(value, DataFlag):
        return value.name
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float):
        return _nan_to_null(value)
    return value


@dataclasses.dataclass
class StoredMinute:
    """One stored minute as read back: its source and unit rows and its raw window."""

    t: datetime  # minute start, UTC
    sources: list[SourceMinute] = dataclasses.field(default_factory=list)
    units: list[UnitMinute] = dataclasses.field(default_factory=list)
    raw: RawWindow | None = None


@dataclasses.dataclass(frozen=True)
class StoredRules:
    """The alarm rules an engineer last saved through the API."""

    rules: list[dict[str, Any]]
    config_hash: str
    user: str
    comment: str
    t: datetime  # UTC


class Historian:
    """Minute, hour and day results, tag statistics, factor versions, the allowance ledger,
    the alarm journal, the notification delivery log and saved alarm rules in one SQLite
    file."""

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
                    if column == "co2_t" and table.startswith("unit_"):
                        # Before units had a basis every unit was accounted by its CEMS:
                        # the stored rows keep that figure as their accounted CO2.
                        db.execute(f"UPDATE {table} SET co2_t = co2_cems_t")
            db.commit()  # the UPDATE opened a transaction: close it before anything else
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

    async def on_samples(self, block: SampleBlock) -> None:
        """Raw samples are kept as minute statistics only (see on_minute)."""

    async def on_minute(self, result: MinuteResult) -> None:
        """Store one minute's results in one transaction."""
        await self._run(self._write, result)

    def _write(self, r: MinuteResult) -> None:
        db = self._conn()
        with db:
            db.executemany(
                "INSERT OR REPLACE INTO source_minute VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                _source_rows(r))
            db.executemany(
                "INSERT OR REPLACE INTO unit_minute VALUES (?,?,?,?,?,?,?)",
                [(u.unit, to_ms(u.t), _nan_to_null(u.output_mwh), _nan_to_null(u.co2_kg),
                  _nan_to_null(u.intensity_t_mwh), int(u.valid), u.flag.name)
                 for u in r.units])
            if r.raw is not None:
                w = r.raw
                db.execute("INSERT OR REPLACE INTO raw_window VALUES (?,?,?,?,?,?)",
                           (to_ms(r.t), *rawcodec.encode_row(w)))
            db.executemany("INSERT OR REPLACE INTO tag_minute VALUES (?,?,?,?,?,?,?)",
                           _tag_rows(r))

    async def on_period(self, rec: PeriodRecords) -> None:
        """Store one closed hour or day (its sources, streams, units, allowance position)."""
        await self._run(self._write_period, rec)

    def _write_period(self, rec: PeriodRecords) -> None:
        db = self._conn()
        with db:
            for table, rows in _period_rows(rec).items():
                db.executemany(
                    f"INSERT OR REPLACE INTO {table} VALUES ({','.join('?' * len(rows[0]))})",
                    rows)

    async def write_revised(self, records: Sequence[PeriodRecords], entry: int,
                            minutes: Sequence[MinuteRevision] = (),
                            ) -> int:
        """Store recalculated hours and days (and minutes set by hand) over the stored ones,
        keeping every row that changes or goes in `revision`, naming the ledger `entry` that
        caused it. Returns how many stored rows were replaced or removed.

        `minutes`: (table, source or unit, minute start, {column: value}) to set in
        source_minute and unit_minute rows.
        """
        def write() -> int:
            db = self._conn()
            now = to_ms(datetime.now(UTC))
            changed = 0
            with db:
                for rec in records:
                    t0, t1 = to_ms(rec.t), to_ms(rec.t_end)
                    for table, rows in _period_rows(rec).items():
                        if table == "period":
                            old = db.execute("SELECT * FROM period WHERE level = ? AND t_ms = ?",
                                             (rec.level, t0))
                        else:
                            old = db.execute(f"SELECT * FROM {table} WHERE t_ms >= ? AND t_ms < ?",
                                             (t0, t1))
                        at = 2 if table.startswith("stream_") else 1
                        names = [d[0] for d in old.description]
                        new = {(r[0], r[at]): r for r in rows}
                        gone = []
                        for row in old.fetchall():
                            key = (row[0], row[at])
                            if new.get(key) == tuple(row):
                                continue
                            changed += 1
                            _keep_revision(db, table, key, dict(zip(names, row, strict=True)),
                                           entry, now)
                            if key not in new:
                                gone.append(key)
                        id_col = names[0]
                        db.executemany(f"DELETE FROM {table} WHERE {id_col} = ? AND t_ms = ?",
                                       gone)
                        marks = ",".join("?" * len(rows[0]))
                        db.executemany(f"INSERT OR REPLACE INTO {table} VALUES ({marks})", rows)
                for table, ident, t, values in minutes:
                    column = table.split("_")[0]
                    cur = db.execute(f"SELECT * FROM {table} WHERE {column} = ? AND t_ms = ?",
                                     (ident, to_ms(t)))
                    names = [d[0] for d in cur.description]
                    row = cur.fetchone()
                    if row is None:
                        continue
                    old_row = dict(zip(names, row, strict=True))
                    merged = {**old_row, **values}
                    if merged == old_row:
                        continue
                    changed += 1
                    _keep_revision(db, table, (ident, to_ms(t)), old_row, entry, now)
                    db.execute(f"INSERT OR REPLACE INTO {table} VALUES "
                               f"({','.join('?' * len(names))})", [merged[n] for n in names])
            return changed
        n: int = await self._run(write)
        return n

    async def revisions(self, table: str, ident: str, t: datetime) -> list[dict[str, Any]]:
        """Earlier versions of one stored row, oldest first: rev, entry, replaced time, row."""
        def query() -> list[dict[str, Any]]:
            rows = self._conn().execute(
                "SELECT rev, entry, replaced_ms, row FROM revision WHERE tbl = ? AND ident = ?"
                " AND t_ms = ? ORDER BY rev", (table, ident, to_ms(t))).fetchall()
            return [{"rev": r[0], "entry": r[1], "replaced": from_ms(r[2]),
                     "row": json.loads(r[3])} for r in rows]
        out: list[dict[str, Any]] = await self._run(query)
        return out

    async def current_row(self, table: str, ident: str, t: datetime) -> dict[str, Any] | None:
        """The stored row of a result table by identifier and start, None if none."""
        column = {"period": "level"}.get(table, table.split("_")[0])
        if table not in _REVISED_TABLES:
            raise InvalidValueError(f"no rows of {table!r}")

        def query() -> dict[str, Any] | None:
            cur = self._conn().execute(
                f"SELECT * FROM {table} WHERE {column} = ? AND t_ms = ?", (ident, to_ms(t)))
            row = cur.fetchone()
            return None if row is None else dict(
                zip([d[0] for d in cur.description], row, strict=True))
        out: dict[str, Any] | None = await self._run(query)
        return out

    async def minute_rows(self, table: str, idents: Sequence[str], start: datetime,
                          end: datetime) -> dict[tuple[str, datetime], dict[str, Any]]:
        """Stored source or unit minutes of `idents` with start ≤ t < end, by (id, t)."""
        if table not in ("source_minute", "unit_minute"):
            raise InvalidValueError(f"no minute rows of {table!r}")
        column = table.split("_")[0]

        def query() -> dict[tuple[str, datetime], dict[str, Any]]:
            out: dict[tuple[str, datetime], dict[str, Any]] = {}
            db = self._conn()
            for ident in idents:
                cur = db.execute(f"SELECT * FROM {table} WHERE {column} = ? AND t_ms >= ? "
                                 "AND t_ms < ? ORDER BY t_ms", (ident, to_ms(start), to_ms(end)))
                names = [d[0] for d in cur.description]
                for row in cur:
                    r = dict(zip(names, row, strict=True))
                    out[(ident, from_ms(r["t_ms"]))] = r
            return out
        rows: dict[tuple[str, datetime], dict[str, Any]] = await self._run(query)
        return rows

    async def period_rows(self, kind: str, level: str, ident: str, start: datetime,
                          end: datetime) -> list[dict[str, Any]]:
        """Stored hours or days of one source, stream or unit with start ≤ t < end, oldest
        first, as JSON-ready dicts (NULL for NaN, ISO times left to the caller as datetimes)."""
        table, column = PERIOD_TABLES[(kind, level)]

        def query() -> list[dict[str, Any]]:
            cur = self._conn().execute(
                f"SELECT * FROM {table} WHERE {column} = ? AND t_ms >= ? AND t_ms < ?"
                " ORDER BY t_ms", (ident, to_ms(start), to_ms(end)))
            names = [d[0] for d in cur.description]
            out = []
            for row in cur.fetchall():
                rec = dict(zip(names, row, strict=True))
                rec["t"] = from_ms(rec.pop("t_ms"))
                if "t_end_ms" in rec:
                    rec["t_end"] = from_ms(rec.pop("t_end_ms"))
                for key in ("valid", "substituted", "reconciliation_exceeded"):
                    if key in rec:
                        rec[key] = bool(rec[key])
                out.append(rec)
            return out
        rows: list[dict[str, Any]] = await self._run(query)
        return rows

    async def periods(self, level: str, start: datetime, end: datetime) -> list[PeriodRecords]:
        """The stored hours or days with start ≤ t < end as records, oldest first."""
        def query() -> list[PeriodRecords]:
            db = self._conn()
            bounds = (level, to_ms(start), to_ms(end))
            heads = db.execute(
                "SELECT * FROM period WHERE level = ? AND t_ms >= ? AND t_ms < ? ORDER BY t_ms",
                bounds).fetchall()
            by_t: dict[int, dict[str, list[Any]]] = {
                row[1]: {"sources": [], "streams": [], "units": []} for row in heads}
            sql = f"SELECT * FROM {{}}_{level} WHERE t_ms >= ? AND t_ms < ?"
            for row in db.execute(sql.format("source"), bounds[1:]):
                if row[1] in by_t:
                    by_t[row[1]]["sources"].append(_source_period(row))
            for row in db.execute(sql.format("stream"), bounds[1:]):
                day_of = _owner_ms(by_t, row[2])
                if day_of is not None:
                    by_t[day_of]["streams"].append(_stream_period(row))
            for row in db.execute(sql.format("unit"), bounds[1:]):
                if row[1] in by_t:
                    by_t[row[1]]["units"].append(_unit_period(row))
            out = []
            for row in heads:
                parts = by_t[row[1]]
                allowance = (None if row[3] is None else AllowancePosition(
                    *(_null_to_nan(x) for x in row[3:])))
                out.append(PeriodRecords(row[0], from_ms(row[1]), from_ms(row[2]),
                                         tuple(parts["sources"]), tuple(parts["streams"]),
                                         tuple(parts["units"]), allowance))
            return out
        records: list[PeriodRecords] = await self._run(query)
        return records

    async def last_period(self, level: str) -> datetime | None:
        """Start of the latest stored hour or day; None when none is stored."""
        def query() -> int | None:
            row = self._conn().execute("SELECT MAX(t_ms) FROM period WHERE level = ?",
                                       (level,)).fetchone()
            return None if row is None or row[0] is None else int(row[0])
        t_ms: int | None = await self._run(query)
        return None if t_ms is None else from_ms(t_ms)

    async def record_factor_versions(self, table: FactorTable) -> None:
        """Keep every factor version the results refer to (the first text seen of each id)."""
        now = to_ms(datetime.now(UTC))
        rows = [(v.id, v.stream, to_ms(v.effective_from), json.dumps(dict(v.values)), v.source,
                 now) for stream in table.streams for v in table.versions(stream)]

        def write() -> None:
            db = self._conn()
            with db:
                db.executemany("INSERT OR IGNORE INTO factor_version VALUES (?,?,?,?,?,?)", rows)
        await self._run(write)

    async def last_reading(self, tag: str, before: datetime,
                           max_windows: int = 7 * 24 * 60) -> tuple[float, float] | None:
        """(epoch s, value) of the tag's last valid (N, finite) sample before `before`,
        looking back at most `max_windows` stored minutes; None if there is none."""
        def query() -> tuple[float, float] | None:
            cur = self._conn().execute(
                "SELECT tags, counts, times, vals, flags FROM raw_window WHERE t_ms < ?"
                " ORDER BY t_ms DESC LIMIT ?", (to_ms(before), max_windows))
            for row in cur:
                w = rawcodec.decode_row(*row)
                if tag not in w.tags:
                    continue
                i = w.tags.index(tag)
                a = int(w.counts[:i].sum())
                t = w.times[a:a + int(w.counts[i])]
                v = w.values[a:a + int(w.counts[i])]
                f = w.flags[a:a + int(w.counts[i])]
                ok = np.flatnonzero((f == 0) & np.isfinite(v))
                if ok.size:
                    return float(t[ok[-1]]), float(v[ok[-1]])
            return None
        found: tuple[float, float] | None = await self._run(query)
        return found

    async def raw_windows(self, start: datetime, end: datetime) -> list[tuple[datetime, RawWindow]]:
        """The raw windows of the minutes with start ≤ t < end, oldest first."""
        def query() -> list[tuple[datetime, RawWindow]]:
            rows = self._conn().execute(
                "SELECT t_ms, tags, counts, times, vals, flags FROM raw_window"
                " WHERE t_ms >= ? AND t_ms < ? ORDER BY t_ms", (to_ms(start), to_ms(end)))
            return [(from_ms(t_ms), rawcodec.decode_row(tags, counts, times, vals, flags))
                    for t_ms, tags, counts, times, vals, flags in rows]
        windows: list[tuple[datetime, RawWindow]] = await self._run(query)
        return windows

    async def record_alarm(self, event: AlarmEvent) -> None:
        """Append an alarm transition (every field of the event) to the journal."""
        e = event
        row = (to_ms(e.t), e.rule, e.state, e.previous, _nan_to_null(e.value),
               None if e.limit is None else _nan_to_null(e.limit), e.target, e.message,
               *(getattr(e, c) for c in _JOURNAL_TEXT),
               None if e.shelved_until is None else to_ms(e.shelved_until))

        def write() -> None:
            db = self._conn()
            with db:
                db.execute(f"INSERT INTO alarm_journal ({','.join(_JOURNAL_COLUMNS)})"
                           f" VALUES ({','.join('?' * len(_JOURNAL_COLUMNS))})", row)
        await self._run(write)

    async def alarm_journal(self, start: datetime, end: datetime, rule: str | None = None,
                            limit: int = 10000) -> list[AlarmEvent]:
        """Journaled transitions with start ≤ t < end (of one rule, or all), oldest first."""
        where = "t_ms >= ? AND t_ms < ?" + ("" if rule is None else " AND rule = ?")
        params = (to_ms(start), to_ms(end), *(() if rule is None else (rule,)), limit)

        def query() -> list[AlarmEvent]:
            rows = self._conn().execute(
                f"SELECT {','.join(_JOURNAL_COLUMNS)} FROM alarm_journal WHERE {where}"
                " ORDER BY t_ms, id LIMIT ?", params).fetchall()
            return [_alarm_event(row) for row in rows]
        events: list[AlarmEvent] = await self._run(query)
        return events

    async def last_alarm_events(self) -> list[AlarmEvent]:
        """The newest journaled transition of every rule, by rule (to restore alarm states
        after a restart)."""
        def query() -> list[AlarmEvent]:
            rows = self._conn().execute(
                f"SELECT {','.join(_JOURNAL_COLUMNS)} FROM alarm_journal WHERE id IN"
                " (SELECT MAX(id) FROM alarm_journal GROUP BY rule) ORDER BY rule").fetchall()
            return [_alarm_event(row) for row in rows]
        events: list[AlarmEvent] = await self._run(query)
        return events

    async def last_alarm_event(self, rule: str, *, skip_causes: Collection[str] = (),
                               before: datetime | None = None) -> AlarmEvent | None:
        """The newest journaled transition of `rule` whose cause is not in `skip_causes`
        (e.g. the one that set the alarm's text, behind later acknowledgements), only
        those with t < `before` if given; None if there is none."""
        skip = sorted(skip_causes)
        before_ms = to_ms(before) if before is not None else 2**62

        def query() -> AlarmEvent | None:
            # Newest first along the (rule, id) index: stops at the first row that fits.
            row = self._conn().execute(
                f"SELECT {','.join(_JOURNAL_COLUMNS)} FROM alarm_journal WHERE rule = ?"
                f" AND cause NOT IN ({','.join('?' * len(skip))}) AND t_ms < ?"
                " ORDER BY id DESC LIMIT 1", (rule, *skip, before_ms)).fetchone()
            return None if row is None else _alarm_event(row)
        event: AlarmEvent | None = await self._run(query)
        return event

    async def record_delivery(self, rec: DeliveryRecord) -> None:
        """Append a notification attempt (or a decision not to send) to the delivery log."""
        row = (to_ms(rec.t), rec.channel, rec.rule, rec.state, rec.kind, rec.outcome,
               rec.attempt, rec.error)

        def write() -> None:
            db = self._conn()
            with db:
                db.execute(f"INSERT INTO delivery_log ({','.join(_DELIVERY_COLUMNS)})"
                           f" VALUES ({','.join('?' * len(_DELIVERY_COLUMNS))})", row)
        await self._run(write)

    async def deliveries(self, start: datetime, end: datetime,
                         limit: int = 10000) -> list[DeliveryRecord]:
        """Delivery-log lines with start ≤ t < end, oldest first."""
        def query() -> list[DeliveryRecord]:
            rows = self._conn().execute(
                f"SELECT {','.join(_DELIVERY_COLUMNS)} FROM delivery_log"
                " WHERE t_ms >= ? AND t_ms < ? ORDER BY t_ms, rowid LIMIT ?",
                (to_ms(start), to_ms(end), limit)).fetchall()
            return [DeliveryRecord(from_ms(row[0]), *row[1:]) for row in rows]
        records: list[DeliveryRecord] = await self._run(query)
        return records

    async def save_alarm_rules(self, rules: list[dict[str, Any]], config_hash: str, user: str,
                               comment: str, t: datetime) -> None:
        """Keep a new set of alarm rules (the newest set is the one in force)."""
        try:
            text = json.dumps(rules, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidValueError(f"alarm rules saved by {user!r}: not JSON: {exc}") from None
        row = (to_ms(t), user, comment, config_hash, text)

        def write() -> None:
            db = self._conn()
            with db:
                db.execute("INSERT INTO alarm_rule_set (t_ms, user, comment, config_hash,"
                           " rules_json) VALUES (?,?,?,?,?)", row)
        await self._run(write)

    async def load_alarm_rules(self) -> StoredRules | None:
        """The newest saved set of alarm rules; None when none was ever saved."""
        def query() -> tuple[Any, ...] | None:
            row: tuple[Any, ...] | None = self._conn().execute(
                "SELECT t_ms, user, comment, config_hash, rules_json FROM alarm_rule_set"
                " ORDER BY id DESC LIMIT 1").fetchone()
            return row
        row: tuple[Any, ...] | None = await self._run(query)
        if row is None:
            return None
        t_ms, user, comment, config_hash, text = row
        return StoredRules(json.loads(text), config_hash, user, comment, from_ms(t_ms))

    async def period_sums(self, table: str, column: str, starts: Sequence[datetime],
                          end: datetime | None = None, valid_only: bool = False,
                          ) -> dict[str, tuple[float, ...]]:
        """Per source or unit: the sums of `column` from each of `starts` on (up to `end`,
        excluded, if given), in one scan; with `valid_only`, of the valid minutes only.

        Used after a restart to continue the hour / day / year totals.
        """
        if table not in ("source_minute", "unit_minute"):
            raise InvalidValueError(f"unknown table {table!r}")
        if column not in {*_SOURCE_FIELDS, "output_mwh"}:
            raise InvalidValueError(f"unknown column {column!r}")
        ident = "source" if table == "source_minute" else "unit"
        ms = [to_ms(t) for t in starts]
        only = " AND valid = 1" if valid_only else ""
        sums = ", ".join(f"TOTAL(CASE WHEN t_ms >= ?{only} THEN {column} END)" for _ in ms)

        # No end: every stored minute (ms fit far below 2**62).
        end_ms = 2**62 if end is None else to_ms(end)

        def query() -> dict[str, tuple[float, ...]]:
            rows = self._conn().execute(
                f"SELECT {ident}, {sums} FROM {table} WHERE t_ms >= ? AND t_ms < ?"
                f" GROUP BY {ident}", (*ms, min(ms), end_ms)).fetchall()
            return {row[0]: tuple(float(x) for x in row[1:]) for row in rows}
        result: dict[str, tuple[float, ...]] = await self._run(query)
        return result

    async def first_raw_window(self) -> datetime | None:
        """Start of the oldest stored raw window; None when none is stored."""
        def query() -> int | None:
            row = self._conn().execute("SELECT MIN(t_ms) FROM raw_window").fetchone()
            return None if row is None or row[0] is None else int(row[0])
        t_ms: int | None = await self._run(query)
        return None if t_ms is None else from_ms(t_ms)

    async def minute_bounds(self) -> tuple[datetime, datetime] | None:
        """Start of the first and of the last stored minute (results or raw window); None
        when no minute is stored."""
        def query() -> tuple[int, int] | None:
            row = self._conn().execute(
                "SELECT MIN(a), MAX(b) FROM (SELECT MIN(t_ms) a, MAX(t_ms) b FROM source_minute"
                " UNION ALL SELECT MIN(t_ms), MAX(t_ms) FROM unit_minute"
                " UNION ALL SELECT MIN(t_ms), MAX(t_ms) FROM raw_window)").fetchone()
            return None if row is None or row[0] is None else (int(row[0]), int(row[1]))
        bounds: tuple[int, int] | None = await self._run(query)
        return None if bounds is None else (from_ms(bounds[0]), from_ms(bounds[1]))

    async def stored_minutes(self, after: datetime | None, limit: int) -> list[StoredMinute]:
        """Up to `limit` stored minutes later than `after` (all if None), oldest first: their
        source and unit rows (totals left at 0) and raw window, to re-send them (InfluxDB
        outbox refill after a kill)."""
        def query() -> list[StoredMinute]:
            db = self._conn()
            after_ms = -(2**62) if after is None else to_ms(after)
            times = [int(r[0]) for r in db.execute(
                "SELECT t_ms FROM source_minute WHERE t_ms > ? UNION"
                " SELECT t_ms FROM unit_minute WHERE t_ms > ? ORDER BY 1 LIMIT ?",
                (after_ms, after_ms, limit))]
            if not times:
                return []
            bounds = (times[0], times[-1])
            by_t = {t: StoredMinute(from_ms(t)) for t in times}
            for row in db.execute(
                    "SELECT * FROM source_minute WHERE t_ms >= ? AND t_ms <= ?"
                    " ORDER BY t_ms, source", bounds):
                (source, unit, t_ms, flow_act, flow_sd, conc, mg, rate, co2, valid, flag,
                 substitution) = row
                by_t[t_ms].sources.append(SourceMinute(
                    source, unit, by_t[t_ms].t, _null_to_nan(flow_act), _null_to_nan(flow_sd),
                    _null_to_nan(conc), _null_to_nan(mg), _null_to_nan(rate), _null_to_nan(co2),
                    bool(valid), DataFlag[flag], substitution))
            for row in db.execute(
                    "SELECT * FROM unit_minute WHERE t_ms >= ? AND t_ms <= ? ORDER BY t_ms, unit",
                    bounds):
                unit, t_ms, output, co2, intensity, valid, flag = row
                by_t[t_ms].units.append(UnitMinute(
                    unit, by_t[t_ms].t, _null_to_nan(output), _null_to_nan(co2),
                    _null_to_nan(intensity), bool(valid), DataFlag[flag]))
            for t_ms, tags, counts, times_b, vals, flags in db.execute(
                    "SELECT t_ms, tags, counts, times, vals, flags FROM raw_window"
                    " WHERE t_ms >= ? AND t_ms <= ?", bounds):
                if t_ms in by_t:
                    by_t[t_ms].raw = rawcodec.decode_row(tags, counts, times_b, vals, flags)
            return list(by_t.values())
        minutes: list[StoredMinute] = await self._run(query)
        return minutes

    async def history_rows(self, table: str, ident: str, start: datetime, end: datetime, *,
                           time_column: str = "t_ms", limit: int | None = None,
                           newest_first: bool = False) -> list[dict[str, Any]]:
        """Rows of one source or unit (for `period`: level) of a result table with
        start ≤ time < end, oldest first (newest first if `newest_first`), at most `limit`
        (all if None); the time in "t", flags as DataFlag. For OPC UA HistoryRead."""
        column = _HISTORY_TABLES.get(table)
        if column is None or time_column not in ("t_ms", "t_end_ms"):
            raise InvalidValueError(f"no history of {table!r} by {time_column!r}")
        order = "DESC" if newest_first else "ASC"
        limit_rows = -1 if limit is None else limit  # SQLite: a negative LIMIT is none

        def query() -> list[dict[str, Any]]:
            cur = self._conn().execute(
                f"SELECT * FROM {table} WHERE {column} = ? AND {time_column} >= ?"
                f" AND {time_column} < ? ORDER BY {time_column} {order} LIMIT ?",
                (ident, to_ms(start), to_ms(end), limit_rows))
            names = [d[0] for d in cur.description]
            rows = []
            for row in cur.fetchall():
                rec = dict(zip(names, row, strict=True))
                rec["t"] = from_ms(rec[time_column])
                if "flag" in rec:
                    rec["flag"] = DataFlag[rec["flag"]]
                rows.append(rec)
            return rows
        rows: list[dict[str, Any]] = await self._run(query)
        return rows

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


_REVISED_TABLES = ("source_minute", "unit_minute",
                   *(f"{k}_{lv}" for k in ("source", "stream", "unit") for lv in ("hour", "day")),
                   "period")


def _period_rows(rec: PeriodRecords) -> dict[str, list[tuple[Any, ...]]]:
    """The rows one closed hour or day stores, by table (the period row always, the others
    when the record has any)."""
    level, a = rec.level, rec.allowance
    out: dict[str, list[tuple[Any, ...]]] = {"period": [
        (level, to_ms(rec.t), to_ms(rec.t_end),
         *(_nan_to_null(getattr(a, f)) if a is not None else None for f in _ALLOWANCE))]}
    parts = {
        f"source_{level}": [(s.source, to_ms(s.t), *(_cell(s, f) for f in _PERIOD_SOURCE))
                            for s in rec.sources],
        f"stream_{level}": [(s.stream, s.unit, to_ms(s.t),
                             *(_cell(s, f) for f in _PERIOD_STREAM[1:])) for s in rec.streams],
        f"unit_{level}": [(u.unit, to_ms(u.t), *(_cell(u, f) for f in _PERIOD_UNIT))
                          for u in rec.units]}
    out.update({table: rows for table, rows in parts.items() if rows})
    return out


def _keep_revision(db: sqlite3.Connection, table: str, key: tuple[Any, Any],
                   row: dict[str, Any], entry: int, now_ms: int) -> None:
    """Keep a stored row as the next revision of its (table, identifier, start)."""
    ident, t_ms = key
    rev = db.execute("SELECT COALESCE(MAX(rev), 0) + 1 FROM revision WHERE tbl = ? AND"
                     " ident = ? AND t_ms = ?", (table, ident, t_ms)).fetchone()[0]
    db.execute("INSERT INTO revision VALUES (?,?,?,?,?,?,?)",
               (table, ident, t_ms, rev, entry, now_ms, json.dumps(row, allow_nan=False)))


def _alarm_event(row: Any) -> AlarmEvent:
    (t_ms, rule, state, previous, value, limit, target, message, message_zh, ack_state,
     previous_ack_state, cause, kind, area, user, comment, shelved_until_ms) = row
    # Rows from before the journal knew causes were all condition changes.
    return AlarmEvent(rule, from_ms(t_ms), state, previous, _null_to_nan(value),
                      None if limit is None else float(limit), target, message, message_zh,
                      ack_state, previous_ack_state, cause or "condition", kind, area, user,
                      comment, None if shelved_until_ms is None else from_ms(shelved_until_ms))


def _owner_ms(by_t: dict[int, Any], t_ms: int) -> int | None:
    """The period (start ms) a row starting at t_ms belongs to: a day's factor versions
    start within the day."""
    if t_ms in by_t:
        return t_ms
    earlier = [t for t in by_t if t <= t_ms]
    return max(earlier) if earlier else None


def _source_period(row: Any) -> PeriodResult:
    (source, t_ms, conc, flow, rate, co2, measured, valid, flag, n_valid, substituted, rule,
     n_sub, n_miss, note, reason, sub_conc, sub_flow) = row
    return PeriodResult(source, from_ms(t_ms), _null_to_nan(conc), _null_to_nan(flow),
                        _null_to_nan(rate), _null_to_nan(co2), _null_to_nan(measured),
                        bool(valid), DataFlag[flag], n_valid, bool(substituted), rule, n_sub,
                        n_miss, note, reason, _null_to_nan(sub_conc), _null_to_nan(sub_flow))


def _stream_period(row: Any) -> StreamPeriod:
    (stream, unit, t_ms, t_end_ms, quantity, quantity_unit, co2, version, method, valid, flag,
     n_valid, note, ch4, n2o, gas, gas_t, co2e, gwp_set) = row[:19]
    return StreamPeriod(stream, unit, from_ms(t_ms), from_ms(t_end_ms), _null_to_nan(quantity),
                        quantity_unit, _null_to_nan(co2), version, method, bool(valid),
                        DataFlag[flag], n_valid, note, _null_to_nan(ch4), _null_to_nan(n2o),
                        gas, _null_to_nan(gas_t), _null_to_nan(co2e), gwp_set)


def _unit_period(row: Any) -> UnitPeriod:
    (unit, t_ms, cems, factor, output, intensity, valid, flag, diff, exceeded, i_flag,
     i_n, co2, basis, output_t, intensity_t_t) = row[:16]
    return UnitPeriod(unit, from_ms(t_ms), _null_to_nan(cems), _null_to_nan(factor),
                      _null_to_nan(output), _null_to_nan(intensity), bool(valid),
                      DataFlag[flag], _null_to_nan(diff), bool(exceeded), DataFlag[i_flag],
                      i_n, _null_to_nan(co2), basis, _null_to_nan(output_t),
                      _null_to_nan(intensity_t_t), _null_to_nan(row[16]), row[17], row[18])
