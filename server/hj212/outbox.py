"""The durable outbox of one HJ 212 platform: uploads not yet acknowledged, oldest first.

A SQLite file (WAL) used from one worker thread only, like the InfluxDB outbox
(server/influx/sink.py). An upload is appended when the minute (hour, day) is made and
deleted only when the platform acknowledged it (9014, when acknowledgements are on) or
took it whole onto the socket (when they are off): nothing sent is forgotten before, and a
restart sends what is left, in the order it was made.

During a long outage the outbox is capped (a number of uploads and an age): past either,
the oldest uploads are dropped, logged as an error by the caller with what went (CNs,
data times), and recorded in the `dropped` table. The historian keeps them all, and the
platform may ask for them again (history requests).
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Upload:
    """One upload waiting in the outbox: its QN (its identity for the 9014), CN and CP."""

    id: int
    qn: str
    cn: str
    cp: str
    data_ms: int | None  # the DataTime of what it carries, epoch ms (UTC)


@dataclass(frozen=True, slots=True)
class Dropped:
    """Uploads the outbox dropped at once because a cap was reached."""

    reason: str  # "count" or "age"
    uploads: int
    cns: str  # e.g. "2051×1200, 2061×20"
    first_data_ms: int | None
    last_data_ms: int | None

    def describe(self) -> str:
        """What was dropped, for the log."""
        def iso(ms: int | None) -> str:
            return "?" if ms is None else datetime.fromtimestamp(ms / 1e3, UTC).isoformat(
                timespec="seconds")
        return (f"{self.uploads} uploads ({self.cns}), data from {iso(self.first_data_ms)} "
                f"to {iso(self.last_data_ms)}")


class Outbox:
    """The SQLite file of one platform's unacknowledged uploads (one thread only)."""

    def __init__(self, path: str) -> None:
        """Open (or create) the outbox file."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        db = self._db
        db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a killed process loses nothing committed (a power loss may
        # lose the last uploads; the platform can ask the historian's copy again).
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE IF NOT EXISTS uploads (id INTEGER PRIMARY KEY AUTOINCREMENT,"
                   " qn TEXT NOT NULL, cn TEXT NOT NULL, cp TEXT NOT NULL, data_ms INTEGER,"
                   " created_ms INTEGER NOT NULL)")
        db.execute("CREATE INDEX IF NOT EXISTS uploads_qn ON uploads (qn)")
        db.execute("CREATE TABLE IF NOT EXISTS dropped (id INTEGER PRIMARY KEY AUTOINCREMENT,"
                   " dropped_at TEXT NOT NULL, reason TEXT NOT NULL, uploads INTEGER NOT NULL,"
                   " cns TEXT NOT NULL, first_data_ms INTEGER, last_data_ms INTEGER)")
        db.execute("CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT)")
        row = db.execute("SELECT count(*), MIN(created_ms) FROM uploads").fetchone()
        self.count = int(row[0])
        self.oldest_ms: int | None = None if row[1] is None else int(row[1])

    @staticmethod
    def now_ms() -> int:
        """Wall-clock epoch milliseconds (the ages of the caps)."""
        return time.time_ns() // 1_000_000

    def last_qn(self) -> str:
        """The last QN handed out (QNs stay unique and rising over restarts)."""
        row = self._db.execute("SELECT value FROM state WHERE key = 'last_qn'").fetchone()
        return "" if row is None else str(row[0])

    def last_data_ms(self, cn: str) -> int | None:
        """The latest DataTime (epoch ms) ever stored for CN `cn`; None if none was."""
        row = self._db.execute("SELECT value FROM state WHERE key = ?",
                               (f"last_data_{cn}",)).fetchone()
        return None if row is None else int(row[0])

    def append(self, uploads: list[tuple[str, str, str, int | None]]) -> None:
        """Store uploads (qn, cn, cp, data_ms), in order, in one transaction."""
        if not uploads:
            return
        now = self.now_ms()
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO uploads (qn, cn, cp, data_ms, created_ms) VALUES (?,?,?,?,?)",
                [(*u, now) for u in uploads])
            self._db.execute("INSERT OR REPLACE INTO state (key, value) VALUES ('last_qn', ?)",
                             (max(u[0] for u in uploads),))
            latest: dict[str, int] = {}
            for _, cn, _, data_ms in uploads:
                if data_ms is not None:
                    latest[cn] = max(latest.get(cn, data_ms), data_ms)
            self._db.executemany(
                "INSERT INTO state (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE"
                " SET value = max(CAST(value AS INTEGER), excluded.value)",
                [(f"last_data_{cn}", ms) for cn, ms in latest.items()])
        self.count += len(uploads)
        if self.oldest_ms is None:
            self.oldest_ms = now

    def oldest(self, after_id: int = 0) -> Upload | None:
        """The oldest upload (after `after_id`); None when there is none."""
        row = self._db.execute("SELECT id, qn, cn, cp, data_ms FROM uploads WHERE id > ?"
                               " ORDER BY id LIMIT 1", (after_id,)).fetchone()
        if row is None:
            return None
        return Upload(int(row[0]), str(row[1]), str(row[2]), str(row[3]),
                      None if row[4] is None else int(row[4]))

    def delete(self, upload_id: int) -> bool:
        """Forget an upload the platform took; False if it was not there (a cap dropped it)."""
        with self._db:
            self._db.execute("BEGIN")
            gone = self._db.execute("DELETE FROM uploads WHERE id = ?", (upload_id,)).rowcount
        if gone:
            self.count -= 1
            self._read_oldest()
        return bool(gone)

    def _read_oldest(self) -> None:
        row = self._db.execute("SELECT MIN(created_ms) FROM uploads").fetchone()
        self.oldest_ms = None if row[0] is None else int(row[0])

    def enforce(self, max_uploads: int, max_age_ms: int) -> list[Dropped]:
        """Drop the oldest uploads beyond the caps (age, then count); say what went."""
        drops = []
        cutoff = self.now_ms() - max_age_ms
        if self.oldest_ms is not None and self.oldest_ms < cutoff:
            row = self._db.execute("SELECT MAX(id) FROM uploads WHERE created_ms < ?",
                                   (cutoff,)).fetchone()
            if row[0] is not None:
                drops.append(self._drop_through("age", int(row[0])))
        if self.count > max_uploads:
            row = self._db.execute("SELECT id FROM uploads ORDER BY id LIMIT 1 OFFSET ?",
                                   (self.count - max_uploads - 1,)).fetchone()
            if row is not None:
                drops.append(self._drop_through("count", int(row[0])))
        return drops

    def _drop_through(self, reason: str, last_id: int) -> Dropped:
        """Delete every upload with id ≤ last_id and record it in `dropped`."""
        with self._db:
            self._db.execute("BEGIN")
            by_cn = self._db.execute(
                "SELECT cn, count(*), MIN(data_ms), MAX(data_ms) FROM uploads WHERE id <= ?"
                " GROUP BY cn ORDER BY cn", (last_id,)).fetchall()
            n = sum(int(r[1]) for r in by_cn)
            firsts = [int(r[2]) for r in by_cn if r[2] is not None]
            lasts = [int(r[3]) for r in by_cn if r[3] is not None]
            drop = Dropped(reason, n, ", ".join(f"{r[0]}×{r[1]}" for r in by_cn),
                           min(firsts, default=None), max(lasts, default=None))
            self._db.execute("DELETE FROM uploads WHERE id <= ?", (last_id,))
            self._db.execute(
                "INSERT INTO dropped (dropped_at, reason, uploads, cns, first_data_ms,"
                " last_data_ms) VALUES (?,?,?,?,?,?)",
                (datetime.now(UTC).isoformat(), reason, n, drop.cns, drop.first_data_ms,
                 drop.last_data_ms))
        self.count -= n
        self._read_oldest()
        return drop

    def close(self) -> None:
        """Close the file."""
        self._db.close()
