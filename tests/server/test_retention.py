"""Retention (issue 15): pruning deletes only what is past its time, in the last verified
backup and not locked; with the real server it runs after the scheduled backup; `carbonscada
storage` prints every table and the projected size at 5 years."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from server.audit import AuditLog
from server.backup import make_backup
from server.backupconfig import RetentionConfig
from server.cli import main
from server.config import parse_plant
from server.historian import Historian
from server.retention import TableSize, prune
from server.runtime import Runtime
from tests.conftest import free_port
from tests.fixtures.plant import plant_dict

NOW = datetime(2026, 12, 1, tzinfo=UTC)
DAY_MS = 86_400_000


def _ms(t: datetime) -> int:
    return round(t.timestamp() * 1000)


async def _historian(path: Path) -> None:
    h = Historian(path)
    await h.start()
    await h.stop()


def _raw(db: sqlite3.Connection, t: datetime) -> None:
    db.execute("INSERT INTO raw_window VALUES (?, 'a', x'00', x'00', x'00', x'00')", (_ms(t),))


def _minute(db: sqlite3.Connection, source: str, t: datetime) -> None:
    db.execute("INSERT INTO source_minute VALUES (?, 'U1', ?, 1, 1, 1, 1, 1, 1, 1, 'N', '')",
               (source, _ms(t)))


def _times(path: Path, sql: str) -> list[int]:
    with sqlite3.connect(path) as db:
        return [int(r[0]) for r in db.execute(sql)]


async def test_prune_keeps_unbacked_up_locked_and_recent_rows(tmp_path: Path) -> None:
    src = tmp_path / "historian.sqlite"
    await _historian(src)
    days = (500, 499, 498, 497, 496, 300, 1)  # raw windows, days before NOW
    with sqlite3.connect(src) as db:
        for n in days:
            _raw(db, NOW - timedelta(days=n))
        for source in ("S1", "S2"):
            for years in (7, 6, 4):  # 6 and 7 years: past 5; 4: kept
                _minute(db, source, NOW - timedelta(days=365.25 * years))
        db.execute("INSERT INTO alarm_journal (t_ms, rule, state, previous, target, message)"
                   " VALUES (?, 'r', 'alarm', 'normal', 't', 'm')",
                   (_ms(NOW - timedelta(days=6 * 365.25)),))
    audit = AuditLog(src)
    backup = make_backup(src, tmp_path / "b", audit, "test")
    with sqlite3.connect(src) as db:  # written after the backup: not in it
        _raw(db, NOW - timedelta(days=450))
        _minute(db, "S3", NOW - timedelta(days=365.25 * 6))
    # Locked: the hours around the 7-year-old minutes (a locked period is never pruned).
    seven = NOW - timedelta(days=365.25 * 7)
    locked = [(seven - timedelta(hours=1), seven + timedelta(hours=1))]
    retention = RetentionConfig(raw_days=400, chunk_rows=2, chunk_sleep_s=0)
    deleted = prune(src, backup.path, NOW, retention, now=NOW, locked=locked, audit=audit)
    # Raw: the five windows 496..500 days old go (in chunks of 2); the one of 450 days was
    # written after the backup and stays, as do those of 300 and 1 days.
    # Minutes: S1's and S2's of 6 years (those of 7 years are locked); S3 not backed up.
    assert deleted == {"raw_window": 5, "source_minute": 2, "alarm_journal": 1}
    raw_days = sorted((_ms(NOW) - t) // DAY_MS for t in _times(src, "SELECT t_ms FROM "
                                                                   "raw_window"))
    assert raw_days == [1, 300, 450]
    with sqlite3.connect(src) as db:
        left = sorted(db.execute("SELECT source, t_ms FROM source_minute").fetchall())
    ages = sorted((s, round((_ms(NOW) - t) / DAY_MS / 365.25)) for s, t in left)
    assert ages == [("S1", 4), ("S1", 7), ("S2", 4), ("S2", 7), ("S3", 6)]
    entry = audit.latest("retention_prune")
    assert entry is not None and entry.detail["deleted"] == deleted
    # The backup time bounds it too: a backup older than the rows prunes none of them.
    retention2 = RetentionConfig(raw_days=1, chunk_sleep_s=0)
    assert prune(src, backup.path, NOW - timedelta(days=400), retention2, now=NOW,
                 locked=locked) == {}
    # Unlocked, the 7-year-old minutes go.
    assert prune(src, backup.path, NOW, retention, now=NOW) == {"source_minute": 2}


async def test_the_server_prunes_raw_windows_after_its_backup(tmp_path: Path) -> None:
    d = plant_dict(free_port(), web_port=free_port(), var_dir=str(tmp_path / "var"),
                   minute_seconds=0.5)
    d["clock"]["min_samples_per_minute"] = 1
    d["opcua"]["enabled"] = False
    d["web"]["enabled"] = False
    d["backup"] = {"dir": str(tmp_path / "backups"), "check_interval_s": 3600}
    raw_days = 2.0 / 86400  # 2 s: the raw windows of the first minutes are past it
    d["retention"] = {"raw_days": raw_days, "chunk_rows": 2}
    src = Path(d["historian"]["path"])
    runtime = Runtime(parse_plant(d, "test_retention"))
    await runtime.start()
    try:
        sched = runtime.backups
        assert sched is not None
        deadline = time.monotonic() + 30
        while len(await asyncio.to_thread(_times, src, "SELECT t_ms FROM raw_window")) < 8:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        # The next backup as due a day later: backed up, then pruned.
        await sched.check(now=datetime.now(UTC) + timedelta(days=1))
        assert sched.backups == 2  # the one at start and this one
        newest = sorted((tmp_path / "backups").glob("historian-*Z.sqlite"))[-1]
        backed = set(_times(newest, "SELECT t_ms FROM raw_window"))
        entry = runtime.audit.latest("backup")
        assert entry is not None
        backup_ms = _ms(datetime.fromisoformat(entry.detail["t"]))
        await asyncio.sleep(2.0)  # the server goes on writing minutes
    finally:
        await runtime.stop()
    left = set(_times(src, "SELECT t_ms FROM raw_window"))
    n_pruned = sched.pruned.get("raw_window", 0)
    assert n_pruned >= 5
    # What was pruned was in the backup; what is left that the backup holds is newer than
    # 2 s before the pruning; everything written after the backup is still there.
    assert len(backed - left) == n_pruned
    assert all(t >= backup_ms - 2000 - 1000 for t in backed & left)
    after = left - backed
    assert after and all(t > backup_ms - 2000 for t in after)
    # Results are kept 5 years: every minute is still there.
    assert len(_times(src, "SELECT t_ms FROM source_minute")) >= len(left | backed)


def test_projection_worked_example() -> None:
    first = datetime(2026, 1, 1, tzinfo=UTC)
    # 1 000 000 bytes over 2 days: 500 000 bytes a day.
    results = TableSize("source_minute", 10, 1_000_000, first, first + timedelta(days=2),
                        5 * 365.25)
    raw = TableSize("raw_window", 10, 1_000_000, first, first + timedelta(days=2), 400)
    whole = TableSize("audit_log", 10, 1_000_000, None, None, None)
    assert results.growth_bytes_day() == 500_000
    assert results.projected_bytes() == pytest.approx(500_000 * 1826.25)  # 913.125 MB
    assert raw.projected_bytes() == pytest.approx(500_000 * 400)  # kept 400 days: 200 MB
    assert whole.projected_bytes() == 1_000_000  # no time column: as it is


async def test_storage_cli_prints_every_table(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "var" / "historian.sqlite"
    await _historian(src)
    with sqlite3.connect(src) as db:
        for n in range(10):
            _raw(db, NOW - timedelta(days=n))
            _minute(db, "S1", NOW - timedelta(days=n))
    d: dict[str, Any] = plant_dict(free_port(), var_dir=str(tmp_path / "var"))
    cfg = tmp_path / "plant.yaml"
    cfg.write_text(yaml.safe_dump(d), encoding="utf-8")
    assert main(["storage", "-c", str(cfg)]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line.split() for line in out.splitlines()[2:]}
    assert "sizes per table: dbstat" in out and "MB at 5 y" in out
    for table in ("raw_window", "source_minute", "unit_minute", "alarm_journal", "period"):
        assert table in lines
    assert lines["raw_window"][1] == "10" and lines["source_minute"][1] == "10"
    assert lines["raw_window"][4:6] == ["400", "d"]
    assert lines["source_minute"][4:6] == ["1826.25", "d"]
    # raw_window: its pages over the 9 days of its data, kept 400 days.
    with sqlite3.connect(src) as db:
        (pages_b,) = db.execute("SELECT SUM(pgsize) FROM dbstat WHERE name = 'raw_window'"
                                ).fetchone()
    assert float(lines["raw_window"][2]) == pytest.approx(pages_b / 1e6, abs=0.0005)
    assert float(lines["raw_window"][6]) == pytest.approx(pages_b / 9 * 400 / 1e6, abs=0.0005)
    assert "projected at 5 years from the growth over 9.00 days of data" in out
    assert main(["storage", "-c", str(cfg.with_name("none.yaml"))]) == 2
