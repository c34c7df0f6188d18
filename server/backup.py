"""Online backups of the historian: copied, verified, kept in generations, audited, alarmed.

A backup is sqlite3's online backup (Connection.backup) of the historian file, made in a
worker thread in steps of `pages_per_step` pages with a sleep between them. The source
connection first opens a read transaction and counts every table's rows in it; the copy
is then made from that same snapshot (the backup steps use the open transaction, so
writes of the server meanwhile neither restart the copy nor are held: in WAL mode a
reader never blocks a writer). The copy therefore holds exactly every commit before its
time `t`, and its row counts must equal the counts taken. It is verified by opening it
read-only: PRAGMA integrity_check and those counts. Only then is it renamed from `.part`
to `<historian stem>-<UTC time>Z.sqlite`, so a file of that name is a verified backup.

Each backup (and each failure) is an audit-log entry ("backup" / "backup_failed"); the
newest "backup" entry whose file still exists is the last verified backup, which the
scheduler, pruning (server/retention.py) and the alarm read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from model.errors import AuditError, CarbonScadaError
from model.records import DeviceEvent
from server.audit import AuditLog, verify
from server.backupconfig import BACKUP_DEVICE, BackupConfig, RetentionConfig
from server.filelock import HistorianLock
from server.periodic import Periodic

log = logging.getLogger(__name__)

OnDeviceEvent = Callable[[DeviceEvent], None]


class BackupError(CarbonScadaError):
    """A backup or restore failed or was refused; names the files and why."""


class _Stopped(CarbonScadaError):
    """The server stops: the copy in progress is abandoned."""


@dataclass(frozen=True, slots=True)
class BackupResult:
    """A verified backup: its file, snapshot time, row counts and size."""

    path: Path
    t: datetime  # UTC: the copy holds every commit before this time
    counts: dict[str, int]
    bytes: int
    duration_s: float


def backup_name(historian: Path, t: datetime) -> str:
    """The file name of a backup of `historian` taken at `t` (UTC, milliseconds)."""
    stamp = t.astimezone(UTC).strftime("%Y%m%dT%H%M%S.") + f"{t.microsecond // 1000:03d}Z"
    return f"{historian.stem}-{stamp}.sqlite"


def _tables(db: sqlite3.Connection, schema: str = "main") -> list[str]:
    return [r[0] for r in db.execute(
        f"SELECT name FROM {schema}.sqlite_master WHERE type = 'table'"
        " AND name NOT LIKE 'sqlite_%' ORDER BY name")]


def row_counts(db: sqlite3.Connection) -> dict[str, int]:
    """Rows of every table of a connection's main database (in its current transaction)."""
    return {t: int(db.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0]) for t in _tables(db)}


def _ro(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10.0)


def check_copy(path: Path, expected: Mapping[str, int] | None = None) -> dict[str, int]:
    """Open a copy read-only: integrity_check must say ok, and its row counts equal
    `expected` when given; returns its counts. BackupError says what is wrong."""
    try:
        db = _ro(path)
    except sqlite3.Error as exc:
        raise BackupError(f"{path}: cannot open: {exc}") from None
    try:
        rows = [r[0] for r in db.execute("PRAGMA integrity_check(20)")]
        if rows != ["ok"]:
            raise BackupError(f"{path}: integrity_check failed: {'; '.join(map(str, rows))}")
        counts = row_counts(db)
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{path}: not a readable SQLite database: {exc}") from None
    finally:
        db.close()
    if expected is not None and counts != dict(expected):
        diff = [f"{t}: {counts.get(t)} rows, source {n}" for t, n in expected.items()
                if counts.get(t) != n] + [f"{t}: not in the source" for t in counts
                                          if t not in expected]
        raise BackupError(f"{path}: row counts differ from the source: {'; '.join(diff)}")
    return counts


def copy_historian(source: Path, dest_dir: Path, *, pages_per_step: int = 1024,
                   step_sleep_s: float = 0.005, stop: threading.Event | None = None,
                   ) -> BackupResult:
    """Copy and verify `source` into `dest_dir` (blocking: run it in a worker thread)."""
    began = time.perf_counter()
    if not source.is_file():
        raise BackupError(f"historian {source}: no such file")
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BackupError(f"backup directory {dest_dir}: cannot create: {exc.strerror}"
                          ) from None
    try:
        src = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True, timeout=10.0,
                              isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise BackupError(f"historian {source}: cannot open: {exc}") from None
    part: Path | None = None
    try:
        src.execute("BEGIN")
        t = datetime.now(UTC)  # before the snapshot's first read: every commit before t is in
        counts = row_counts(src)  # the read transaction's snapshot, which the copy is of
        part = dest_dir / (backup_name(source, t) + ".part")
        try:
            dst = sqlite3.connect(part, isolation_level=None)
        except sqlite3.Error as exc:
            raise BackupError(f"backup {part}: cannot create: {exc}") from None

        def progress(status: int, remaining: int, total: int) -> None:
            # Called after every step. sqlite3's own `sleep` only waits after a busy step,
            # so the pause between steps (and the stop) is here.
            if stop is not None and stop.is_set():
                raise _Stopped
            if remaining and step_sleep_s:
                time.sleep(step_sleep_s)
        try:
            src.backup(dst, pages=pages_per_step, progress=progress)
            # A self-contained file: readable without a -wal / -shm beside it.
            dst.execute("PRAGMA journal_mode=DELETE")
        finally:
            dst.close()
        src.execute("COMMIT")
        check_copy(part, counts)
        final = part.with_name(part.name.removesuffix(".part"))
        os.replace(part, final)
        part = None
        return BackupResult(final, t, counts, final.stat().st_size, time.perf_counter() - began)
    except _Stopped:
        raise BackupError("backup abandoned: the server is stopping") from None
    except sqlite3.Error as exc:
        raise BackupError(f"backup of {source} to {dest_dir} failed: {exc}") from None
    except OSError as exc:
        raise BackupError(f"backup of {source} to {dest_dir} failed: {exc}") from None
    finally:
        src.close()
        if part is not None:
            with contextlib.suppress(OSError):
                part.unlink()


def backups_in(dest_dir: Path, historian: Path) -> list[Path]:
    """The verified backups of `historian` in `dest_dir`, oldest first."""
    if not dest_dir.is_dir():
        return []
    return sorted(p for p in dest_dir.glob(f"{historian.stem}-*Z.sqlite") if p.is_file())


def prune_generations(dest_dir: Path, historian: Path, keep: int) -> list[Path]:
    """Remove all but the newest `keep` backups; returns the removed files."""
    removed = backups_in(dest_dir, historian)[:-keep]
    for p in removed:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    return removed


def last_verified(audit: AuditLog) -> tuple[datetime, Path] | None:
    """The newest verified backup whose file is still there: its snapshot time and file."""
    entry = audit.latest("backup")
    if entry is None:
        return None
    path = Path(str(entry.detail.get("file", "")))
    try:
        t = datetime.fromisoformat(str(entry.detail["t"]))
    except (KeyError, ValueError):
        return None
    return (t, path) if path.is_file() else None


def make_backup(historian: Path, dest_dir: Path, audit: AuditLog, user: str, *,
                keep: int | None = None, pages_per_step: int = 1024,
                step_sleep_s: float = 0.005, stop: threading.Event | None = None,
                ) -> BackupResult:
    """A verified backup, its audit entry and (with `keep`) the old generations removed;
    a failure is audited as "backup_failed" and raised as BackupError (blocking)."""
    try:
        result = copy_historian(historian, dest_dir, pages_per_step=pages_per_step,
                                step_sleep_s=step_sleep_s, stop=stop)
    except BackupError as exc:
        with contextlib.suppress(AuditError):
            audit.append(user, "backup_failed", f"historian:{historian}",
                         {"dir": str(dest_dir), "error": str(exc)})
        raise
    removed = [] if keep is None else prune_generations(dest_dir, historian, keep)
    audit.append(user, "backup", f"historian:{historian}", {
        "file": str(result.path.resolve()), "t": result.t.isoformat(), "bytes": result.bytes,
        "rows": result.counts, "integrity": "ok", "duration_s": round(result.duration_s, 3),
        "removed": [p.name for p in removed]})
    return result


def restore(historian: Path, copy: Path, user: str, now: datetime | None = None) -> Path | None:
    """Replace `historian` by the verified `copy`; returns where the replaced file was kept.

    Refuses (BackupError / HistorianLockedError) while a server holds the historian, when
    the copy fails integrity_check or its audit chain does not verify.
    """
    if not copy.is_file():
        raise BackupError(f"{copy}: no such file")
    check_copy(copy)
    try:
        verdict = verify(copy)
    except AuditError as exc:
        raise BackupError(f"{copy}: {exc}") from None
    if not verdict.ok:
        raise BackupError(f"{copy}: its audit log is broken at {verdict.problem}: not restored")
    lock = HistorianLock(historian)
    try:
        stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
        kept: Path | None = None
        if historian.exists():
            kept = historian.with_name(f"{historian.name}.replaced-{stamp}")
            os.replace(historian, kept)
            wal = historian.with_name(historian.name + "-wal")
            if wal.exists():  # the WAL belongs to the replaced file: it goes with it
                os.replace(wal, kept.with_name(kept.name + "-wal"))
            with contextlib.suppress(FileNotFoundError):
                historian.with_name(historian.name + "-shm").unlink()
        part = historian.with_name(historian.name + ".restore-part")
        try:
            with contextlib.closing(_ro(copy)) as src, \
                    contextlib.closing(sqlite3.connect(part)) as dst:
                src.backup(dst)
        except sqlite3.Error as exc:
            with contextlib.suppress(OSError):
                part.unlink()
            if kept is not None:
                os.replace(kept, historian)
            raise BackupError(f"restore of {copy} into {historian} failed: {exc}") from None
        os.replace(part, historian)
        AuditLog(historian).append(user, "restore", f"historian:{historian}", {
            "from": str(copy.resolve()), "entries_verified": verdict.entries,
            "replaced_kept_as": None if kept is None else str(kept)})
        return kept
    finally:
        lock.release()


class BackupScheduler:
    """The server's backups on a schedule, pruning after each, and their system alarm.

    The alarm (device BACKUP_DEVICE, rule BACKUP_RULE_ID, see backupconfig.with_backup_alarm)
    is active while the last attempt failed or the newest verified backup is overdue
    (older than interval_h + overdue_grace_h), and cleared once a backup is verified,
    also one made by `carbonscada backup` while the server runs (read from the audit log).
    """

    def __init__(self, config: BackupConfig, retention: RetentionConfig, historian: Path,
                 audit: AuditLog, on_event: OnDeviceEvent | None,
                 locked: Callable[[], list[tuple[datetime, datetime]]] | None = None) -> None:
        self.config = config
        self.retention = retention
        self.historian = historian
        self.dir = Path(config.dir)
        self.audit = audit
        self.on_event = on_event
        self.locked = locked
        self._stop = threading.Event()
        self._periodic = Periodic("historian-backup", self.check,
                                 lambda: self.config.check_interval_s, log,
                                 "historian backup check failed")
        self._started = datetime.now(UTC)
        self.last_error: str | None = None
        self._failed_at: float | None = None  # monotonic time of the last failed attempt
        self._sent: tuple[bool, bool] | None = None  # (overdue, failed) as last sent
        self.backups = 0  # made by this scheduler
        self.pruned: dict[str, int] = {}  # rows deleted by the last pruning

    async def start(self) -> None:
        """Start the schedule's task (the first check runs at once)."""
        self._periodic.start()

    async def stop(self) -> None:
        """Stop the task; a copy or pruning in progress is abandoned at its next step."""
        self._stop.set()
        await self._periodic.stop()

    async def check(self, now: datetime | None = None) -> None:
        """Back up if due (then prune), and send the alarm state if it changed."""
        last = await asyncio.to_thread(last_verified, self.audit)
        t = now or datetime.now(UTC)
        interval = timedelta(hours=self.config.interval_h)
        due = last is None or t >= last[0] + interval
        retry_wait = (self._failed_at is not None
                      and time.monotonic() - self._failed_at < self.config.retry_s)
        if due and not retry_wait:
            try:
                result = await asyncio.to_thread(
                    make_backup, self.historian, self.dir, self.audit, "system",
                    keep=self.config.keep, pages_per_step=self.config.pages_per_step,
                    step_sleep_s=self.config.step_sleep_s, stop=self._stop)
            except (BackupError, AuditError) as exc:
                if self._stop.is_set():
                    return
                self.last_error, self._failed_at = str(exc), time.monotonic()
                log.error("historian backup failed: %s", exc)
            else:
                self.last_error, self._failed_at = None, None
                self.backups += 1
                last = (result.t, result.path)
                log.info("historian backup %s verified (%d bytes, %.2f s)", result.path,
                         result.bytes, result.duration_s)
                await self._prune(result)
        elif not due:
            self.last_error = None  # a good backup since (e.g. `carbonscada backup`)
        self._send_state(last, t)

    async def _prune(self, result: BackupResult) -> None:
        from server.retention import prune

        locked = self.locked() if self.locked is not None else []
        try:
            self.pruned = await asyncio.to_thread(
                prune, self.historian, result.path, result.t, self.retention,
                locked=locked, stop=self._stop, audit=self.audit)
        except CarbonScadaError as exc:
            log.error("historian pruning failed: %s", exc)

    def _send_state(self, last: tuple[datetime, Path] | None, now: datetime) -> None:
        ref = last[0] if last is not None else self._started
        age_h = (now - ref).total_seconds() / 3600
        overdue = age_h > self.config.interval_h + self.config.overdue_grace_h
        what = ("none yet" if last is None else
                f"{last[1].name} of {last[0].isoformat(timespec='seconds')}, {age_h:.1f} h ago")
        parts = []
        if overdue:
            parts.append(f"overdue (every {self.config.interval_h:g} h)")
        if self.last_error is not None:
            parts.append(f"failed: {self.last_error}")
        fault = bool(parts)
        message = (f"historian backup {'; '.join(parts)}; last verified backup: {what}"
                   if fault else f"historian backup verified: {what}")
        state = (overdue, self.last_error is not None)
        if state == self._sent or self.on_event is None:
            return  # the same state: the age in the text changes every check
        self._sent = state
        try:
            self.on_event(DeviceEvent(BACKUP_DEVICE, str(self.dir), now, fault, message))
        except Exception:  # the schedule goes on whatever the alarm path does
            log.exception("backup alarm not delivered: %s", message)


def describe(result: BackupResult) -> dict[str, Any]:
    """What the CLI prints of a backup."""
    return {"file": str(result.path), "t": result.t.isoformat(), "bytes": result.bytes,
            "rows": sum(result.counts.values()), "tables": len(result.counts)}
