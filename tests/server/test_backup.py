"""Backups of the historian (issue 15): taken while the real server writes its minutes,
restored into a new directory and compared row by row; restore refuses a running server's
file, a damaged copy and a broken audit chain; a failed or overdue backup is a system alarm
in the alarm list of the web API, cleared by the next verified backup."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from model.errors import ConfigError
from model.records import DeviceEvent
from server.audit import AuditLog, verify
from server.backup import BackupScheduler, make_backup
from server.backupconfig import BACKUP_RULE_ID, BackupConfig, RetentionConfig
from server.cli import main
from server.config import parse_plant
from server.filelock import HistorianLock, HistorianLockedError
from server.historian import Historian
from server.runtime import Runtime
from tests.conftest import free_port
from tests.fixtures.plant import plant_dict

MINUTE_S = 0.5  # 0.2 s would take the sped-up calendar past year 9999


def _plant(tmp_path: Path, **backup: Any) -> dict[str, Any]:
    d = plant_dict(free_port(), web_port=free_port(), var_dir=str(tmp_path / "var"),
                   minute_seconds=MINUTE_S)
    d["clock"]["min_samples_per_minute"] = 1
    d["opcua"]["enabled"] = False
    d["backup"] = {"dir": str(tmp_path / "backups"), "check_interval_s": 0.2, **backup}
    return d


def _write_config(path: Path, d: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(d), encoding="utf-8")
    return path


async def until(what: str, cond: Callable[[], Awaitable[bool]], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await cond():
        assert time.monotonic() < deadline, f"not in {timeout_s} s: {what}"
        await asyncio.sleep(0.05)


def _count(path: Path, table: str) -> int:
    with sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True) as db:
        return int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


def _rows(path: Path, table: str) -> set[tuple[Any, ...]]:
    with sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True) as db:
        return set(db.execute(f"SELECT * FROM {table}").fetchall())


TIMED = ("source_minute", "unit_minute", "tag_minute", "raw_window")


async def test_backup_while_the_server_writes_restored_equal(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = _plant(tmp_path)
    runtime = Runtime(parse_plant(d, "test_backup"))
    src = Path(d["historian"]["path"])
    await runtime.start()
    try:
        async def minutes() -> bool:
            return await asyncio.to_thread(_count, src, "source_minute") >= 6
        await until("6 minutes stored", minutes)
        before = await asyncio.to_thread(_count, src, "source_minute")
        # One page a step, a sleep between: the copy spans many of the server's minutes.
        result = await asyncio.to_thread(
            make_backup, src, tmp_path / "manual", runtime.audit, "test",
            pages_per_step=1, step_sleep_s=0.1)
        after = await asyncio.to_thread(_count, src, "source_minute")
        assert result.duration_s > 3 * MINUTE_S, result.duration_s
        # Named by its UTC snapshot time, to the millisecond.
        stamp = datetime.strptime(result.path.name, "historian-%Y%m%dT%H%M%S.%fZ.sqlite")
        assert abs(stamp.replace(tzinfo=UTC) - result.t) < timedelta(milliseconds=1)
        assert after >= before + 3, (before, after)  # the server wrote during the copy
        # The copy holds its snapshot: counted in the copy's read transaction.
        assert result.counts["source_minute"] == _count(result.path, "source_minute")
        assert before <= result.counts["source_minute"] < after
        cfg_file = _write_config(tmp_path / "plant.yaml", d)
        # `carbonscada backup` while the server runs.
        assert await asyncio.to_thread(main, ["backup", "-c", str(cfg_file)]) == 0
        assert "integrity ok" in capsys.readouterr().out
        # A running server's file is not restored over.
        assert main(["restore", "-c", str(cfg_file), str(result.path)]) == 2
        err = capsys.readouterr().err
        assert "is held by a running server or a restore (pid" in err
        assert "stop it first" in err
        assert "Traceback" not in err
    finally:
        await runtime.stop()
    # Restored into a new directory, as a new plant's historian.
    d2 = dict(d, historian={"path": str(tmp_path / "new" / "historian.sqlite")})
    cfg2 = _write_config(tmp_path / "plant2.yaml", d2)
    assert main(["restore", "-c", str(cfg2), str(result.path)]) == 0
    out = capsys.readouterr().out
    assert "restored from" in out and "audit chain ok" in out
    restored = Path(d2["historian"]["path"])
    # Every table: the counts of the snapshot; every row the source's, and the source's
    # rows of the minutes closed before the copy began are all there.
    for table, n in result.counts.items():
        if table != "audit_log":  # the restore adds its own audit entry
            assert _count(restored, table) == n, table
    closed_ms = round((result.t.timestamp() - 3 * MINUTE_S) * 1000)
    for table in TIMED:
        got, full = _rows(restored, table), _rows(src, table)
        assert got <= full, table
        t_col = 1 if table != "raw_window" else 0
        t_col = 2 if table == "source_minute" else t_col
        old = {r for r in full if r[t_col] < closed_ms}
        assert old and old <= got, table
        assert len(full) > len(got), table  # the source went on after the copy
    chain = verify(restored)
    assert chain.ok and chain.entries == result.counts["audit_log"] + 1
    last = AuditLog(restored).latest("restore")
    assert last is not None and last.detail["from"] == str(result.path.resolve())
    # The audit log of the source has the backup's entry with the verified counts.
    entry, cli = [e for e in AuditLog(src).entries() if e.action == "backup"][-2:]
    assert entry.user == "test" and cli.user.startswith("cli:")
    assert entry.detail["file"] == str(result.path.resolve())
    assert entry.detail["rows"] == result.counts and entry.detail["integrity"] == "ok"


def test_restore_refuses_a_damaged_copy_and_a_broken_chain(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = _plant(tmp_path)
    cfg = _write_config(tmp_path / "plant.yaml", d)
    src = Path(d["historian"]["path"])
    audit = AuditLog(src)
    for i in range(3):
        audit.append("alice", "user_add", f"user:u{i}", {"role": "viewer"})
    result = make_backup(src, tmp_path / "b", audit, "test")
    original = src.read_bytes()
    # A file that is not SQLite.
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database" * 100)
    assert main(["restore", "-c", str(cfg), str(junk)]) == 2
    err = capsys.readouterr().err
    assert "not a readable SQLite database" in err and "Traceback" not in err
    # An audit entry changed around the triggers: its hash no longer matches.
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(result.path.read_bytes())
    with sqlite3.connect(bad) as db:
        db.execute("DROP TRIGGER audit_log_no_update")
        db.execute("UPDATE audit_log SET user = 'mallory' WHERE seq = 2")
    assert main(["restore", "-c", str(cfg), str(bad)]) == 2
    err = capsys.readouterr().err
    assert "its audit log is broken at entry 2: hash mismatch" in err
    assert main(["restore", "-c", str(cfg), str(tmp_path / "missing.sqlite")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert src.read_bytes() == original  # nothing was replaced
    assert not list(src.parent.glob("*.replaced-*"))
    # A good copy: the replaced file is kept aside.
    assert main(["restore", "-c", str(cfg), str(result.path)]) == 0
    kept = list(src.parent.glob("historian.sqlite.replaced-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == original


def test_backup_cli_generations_and_bad_input(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    d = _plant(tmp_path, keep=2)
    cfg = _write_config(tmp_path / "plant.yaml", d)
    assert main(["backup", "-c", str(cfg)]) == 2  # no historian yet
    assert "no such file" in capsys.readouterr().err
    src = Path(d["historian"]["path"])
    AuditLog(src).append("alice", "user_add", "user:x", {})
    for _ in range(3):
        assert main(["backup", "-c", str(cfg)]) == 0
        time.sleep(0.002)  # file names carry milliseconds
    out = capsys.readouterr().out
    assert out.count("verified backup of") == 3 and "integrity ok" in out
    assert len(list((tmp_path / "backups").glob("historian-*Z.sqlite"))) == 2  # keep: 2
    assert main(["backup", "-c", str(cfg), "--to", str(tmp_path / "elsewhere")]) == 0
    assert len(list((tmp_path / "elsewhere").glob("historian-*Z.sqlite"))) == 1
    entries = [e for e in AuditLog(src).entries() if e.action == "backup"]
    assert len(entries) == 4 and all(e.user.startswith("cli:") for e in entries)
    assert len(entries[2].detail["removed"]) == 1
    # Without backup.dir and without --to.
    d.pop("backup")
    assert main(["backup", "-c", str(_write_config(tmp_path / "p2.yaml", d))]) == 2
    assert "no backup.dir configured: give --to DIR" in capsys.readouterr().err


def test_config_limits(tmp_path: Path) -> None:
    d = _plant(tmp_path, interval_h=200)
    with pytest.raises(ConfigError, match=r"backup\.interval_h: 200 h is more than 168 h: the "
                                          "standard asks for a backup at least every 7 days"):
        parse_plant(d, "p.yaml")
    d = _plant(tmp_path)
    d["retention"] = {"results_years": 3}
    with pytest.raises(ConfigError, match=r"retention\.results_years: 3 years is less than 5"):
        parse_plant(d, "p.yaml")
    d = _plant(tmp_path)
    d["devices"][0]["id"] = "backup"
    d["alarms"] = {"rules": []}
    with pytest.raises(ConfigError, match="'backup' is the backups' id in alarm rules"):
        parse_plant(d, "p.yaml")
    assert BackupConfig(dir="x").interval_h == 24.0  # daily by default
    assert RetentionConfig().results_years == 5 and RetentionConfig().raw_days == 400


async def test_lock_held_while_running(tmp_path: Path) -> None:
    d = _plant(tmp_path)
    path = Path(d["historian"]["path"])
    runtime = Runtime(parse_plant(d, "test_backup"))
    await runtime.start()
    try:
        with pytest.raises(HistorianLockedError, match=r"held by a running server .*\(pid "):
            HistorianLock(path)
        # A second server on the same historian does not start.
        with pytest.raises(HistorianLockedError, match="held by a running server"):
            await Runtime(parse_plant(d, "test_backup")).start()
    finally:
        await runtime.stop()
    HistorianLock(path).release()  # free once it stopped
    lock = HistorianLock(path)  # a restore in progress: no start
    try:
        with pytest.raises(HistorianLockedError, match="or a restore"):
            await Runtime(parse_plant(d, "test_backup")).start()
    finally:
        lock.release()


async def test_failed_backup_alarm_in_the_alarm_list_and_cleared(tmp_path: Path) -> None:
    d = _plant(tmp_path, retry_s=0.2)
    (tmp_path / "backups").write_text("a file in the way of the backup directory")
    runtime = Runtime(parse_plant(d, "test_backup"))
    base = f"http://127.0.0.1:{d['web']['port']}"
    await runtime.start()
    try:
        async with aiohttp.ClientSession() as http:
            async def listed() -> list[dict[str, Any]]:
                async with http.get(f"{base}/api/v1/alarms") as r:
                    assert r.status == 200
                    body: list[dict[str, Any]] = await r.json()
                    return [a for a in body if a["rule"] == BACKUP_RULE_ID]

            async def active() -> bool:
                return any(a["state"] == "alarm" for a in await listed())
            await until("backup alarm listed", active)
            alarm, = await listed()
            assert alarm["kind"] == "comm_loss"
            assert "historian backup failed: backup directory" in alarm["message"]
            assert "cannot create" in alarm["message"]
            assert "last verified backup: none yet" in alarm["message"]
            failed = AuditLog(d["historian"]["path"]).latest("backup_failed")
            assert failed is not None and "cannot create" in failed.detail["error"]
            (tmp_path / "backups").unlink()  # the directory can be made again

            async def cleared() -> bool:
                return all(a["state"] == "normal" for a in await listed())
            await until("backup alarm cleared", cleared)
            assert runtime.backups is not None and runtime.backups.backups >= 1
            assert list((tmp_path / "backups").glob("historian-*Z.sqlite"))
    finally:
        await runtime.stop()


async def test_overdue_and_failing_then_cleared(tmp_path: Path) -> None:
    src = tmp_path / "var" / "historian.sqlite"
    h = Historian(src)
    await h.start()
    await h.stop()
    audit = AuditLog(src)
    first = make_backup(src, tmp_path / "old", audit, "test")
    events: list[DeviceEvent] = []
    cfg = BackupConfig(dir=str(tmp_path / "dir"), interval_h=24, overdue_grace_h=1,
                       retry_s=0.01)
    (tmp_path / "dir").write_text("in the way")
    sched = BackupScheduler(cfg, RetentionConfig(), src, audit, events.append)
    await sched.check(now=first.t + timedelta(hours=1))  # not due: only the state is sent
    assert [(e.device, e.fault) for e in events] == [("backup", False)]
    assert events[0].message.startswith(f"historian backup verified: {first.path.name}")
    await sched.check(now=first.t + timedelta(hours=30))  # due, fails, and 30 h > 24 + 1
    assert events[-1].fault
    assert events[-1].message.startswith("historian backup overdue (every 24 h); failed: "
                                         "backup directory")
    assert "30.0 h ago" in events[-1].message
    await sched.check(now=first.t + timedelta(hours=30))  # the same state: not sent again
    assert len(events) == 2
    # `carbonscada backup` while the server runs: the next check clears the alarm.
    (tmp_path / "dir").unlink()
    second = make_backup(src, tmp_path / "dir", audit, "cli:test")
    await sched.check()
    assert not events[-1].fault and len(events) == 3
    assert events[-1].message.startswith(f"historian backup verified: {second.path.name}")
    assert sched.backups == 0  # the scheduler made none itself
    assert datetime.now(UTC) - second.t < timedelta(minutes=1)
