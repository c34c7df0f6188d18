"""The hash-chained audit log in a real SQLite file: appends, triggers, tampering, verify."""

from __future__ import annotations

import hashlib
import math
import sqlite3
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from model.errors import AuditError, CarbonScadaError
from model.records import AlarmEvent, AuditRecord
from server.audit import GENESIS, AuditEntry, AuditLog, AuditVerdict, verify
from server.historian import Historian
from server.users import UserStore

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)
T0_MS = 1_795_248_000_000  # 2026-11-21T08:00:00Z


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_entries_are_hashed_and_chained_as_specified(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "var" / "h.sqlite")
    first = log.append("alice", "acknowledge", "alarm:S1_rate", {"comment": "已确认 ok"}, T0)
    second = log.append("cli:root", "user_role", "user:bob", {"to": "admin", "from": "viewer"},
                        T0 + timedelta(seconds=1.5))
    # canonical JSON written out by hand: keys sorted, no spaces, UTF-8 kept as is
    h1 = sha256('[1,1795248000000,"alice","acknowledge","alarm:S1_rate",'
                '{"comment":"已确认 ok"},"' + "0" * 64 + '"]')
    h2 = sha256('[2,1795248001500,"cli:root","user_role","user:bob",'
                '{"from":"viewer","to":"admin"},"' + h1 + '"]')
    assert first == AuditEntry(1, T0, "alice", "acknowledge", "alarm:S1_rate",
                               {"comment": "已确认 ok"}, "0" * 64, h1)
    assert second == AuditEntry(2, T0 + timedelta(seconds=1.5), "cli:root", "user_role",
                                "user:bob", {"from": "viewer", "to": "admin"}, h1, h2)
    assert GENESIS == "0" * 64
    assert log.entries() == [first, second]
    assert verify(tmp_path / "var" / "h.sqlite") == AuditVerdict(True, 2, "", h2)


def test_an_entry_without_detail_or_time(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "h.sqlite")
    before = datetime.now(UTC)
    e = log.append("cli:root", "user_password", "user:alice")
    after = datetime.now(UTC)
    assert e.detail == {}
    assert before - timedelta(milliseconds=1) <= e.t <= after + timedelta(milliseconds=1)
    t_ms = round(e.t.timestamp() * 1000)
    assert e.hash == sha256(f'[1,{t_ms},"cli:root","user_password","user:alice",{{}},'
                            f'"{GENESIS}"]')


def test_alarm_actions_are_logged_from_their_records(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "h.sqlite")
    shelve = log.append_record(AuditRecord(T0, "op1", "shelve", "S1_rate", "sensor work",
                                           until=datetime(2026, 11, 21, 18, 30,
                                                          tzinfo=UTC)))
    ack = log.append_record(AuditRecord(T0 + timedelta(minutes=1), "op2", "acknowledge",
                                        "U1_intensity", ""))
    assert (shelve.user, shelve.action, shelve.target, shelve.detail) == (
        "op1", "shelve", "alarm:S1_rate",
        {"comment": "sensor work", "until": "2026-11-21T18:30:00+00:00"})
    assert (ack.user, ack.action, ack.target, ack.detail, ack.t) == (
        "op2", "acknowledge", "alarm:U1_intensity", {"comment": ""}, T0 + timedelta(minutes=1))
    assert ack.prev_hash == shelve.hash


def test_entries_by_time(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "h.sqlite")
    for i in range(5):
        log.append("u", f"a{i}", "t", {"i": i}, T0 + timedelta(minutes=i))
    got = log.entries(T0 + timedelta(minutes=1), T0 + timedelta(minutes=4))
    assert [(e.seq, e.action) for e in got] == [(2, "a1"), (3, "a2"), (4, "a3")]
    assert [e.seq for e in log.entries(start=T0 + timedelta(minutes=3))] == [4, 5]
    assert [e.seq for e in log.entries(end=T0 + timedelta(minutes=1))] == [1]
    assert [e.seq for e in log.entries(limit=2)] == [1, 2]
    assert log.entries(T0 + timedelta(hours=1)) == []


def test_latest_of_an_action(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "h.sqlite")
    assert log.latest("config_changed") is None
    log.append("system", "config_changed", "site:a", {"sha256": "1"}, T0)
    log.append("alice", "acknowledge", "alarm:r", {"comment": "seen"}, T0)
    log.append("system", "config_changed", "site:a", {"sha256": "2"}, T0)
    log.append("bob", "acknowledge", "alarm:r", {"comment": "again"}, T0)
    newest = log.latest("config_changed")
    assert newest is not None and (newest.seq, newest.detail) == (3, {"sha256": "2"})


def test_what_cannot_be_hashed_or_timed_is_refused(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "h.sqlite")
    with pytest.raises(ValueError, match=r"^audit entry set_limit alarm:S1: detail is not JSON"):
        log.append("u", "set_limit", "alarm:S1", {"limit": math.nan})
    with pytest.raises(ValueError, match=r"^audit entry set_limit alarm:S1: detail is not JSON"):
        log.append("u", "set_limit", "alarm:S1", {"limit": object()})
    with pytest.raises(ValueError, match=r"^audit entry x y: time 2026-11-21 08:00:00 has no "):
        log.append("u", "x", "y", t=datetime(2026, 11, 21, 8))
    assert log.entries() == []
    # an aware datetime in the detail is kept as ISO text in UTC
    e = log.append("u", "x", "y", {"at": datetime(2026, 11, 21, 16, tzinfo=UTC)})
    assert e.detail == {"at": "2026-11-21T16:00:00+00:00"}
    assert log.entries() == [e]


def test_the_file_refuses_updates_and_deletes(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    AuditLog(path).append("u", "a", "t", {"k": 1}, T0)
    with sqlite3.connect(path) as db:
        with pytest.raises(sqlite3.DatabaseError, match=r"^audit log is append-only$"):
            db.execute("UPDATE audit_log SET detail = '{\"k\":2}'")
        with pytest.raises(sqlite3.DatabaseError, match=r"^audit log is append-only$"):
            db.execute("DELETE FROM audit_log")
    assert verify(path).ok


def three_entries(path: Path) -> list[AuditEntry]:
    log = AuditLog(path)
    return [log.append("op1", "acknowledge", "alarm:S1", {"comment": "one"}, T0),
            log.append("op2", "shelve", "alarm:S2", {"comment": "two"}, T0 + timedelta(1)),
            log.append("op3", "unshelve", "alarm:S2", {"comment": "three"}, T0 + timedelta(2))]


def tamper(path: Path, sql: str, *args: object) -> None:
    """Change the file behind the log's back, as someone with file access could."""
    db = sqlite3.connect(path)
    try:
        db.execute("DROP TRIGGER audit_log_no_update")
        db.execute("DROP TRIGGER audit_log_no_delete")
        db.execute(sql, args)
        db.commit()
    finally:
        db.close()


def test_verify_names_a_changed_entry(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    entries = three_entries(path)
    assert verify(path) == AuditVerdict(True, 3, "", entries[2].hash)
    tamper(path, "UPDATE audit_log SET detail = ? WHERE seq = 2", '{"comment":"TWO"}')
    computed = sha256(f'[2,{T0_MS + 86_400_000},"op2","shelve","alarm:S2",{{"comment":"TWO"}},'
                      f'"{entries[0].hash}"]')
    assert verify(path) == AuditVerdict(
        False, 3, f"entry 2: hash mismatch: stored {entries[1].hash[:16]}…, "
                  f"computed {computed[:16]}…")


def test_verify_names_the_entry_after_one_rewritten_with_its_hash(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    entries = three_entries(path)
    forged = sha256(f'[2,{T0_MS + 86_400_000},"op2","shelve","alarm:S2",{{"comment":"TWO"}},'
                    f'"{entries[0].hash}"]')
    tamper(path, "UPDATE audit_log SET detail = '{\"comment\":\"TWO\"}', hash = ? WHERE seq = 2",
           forged)
    assert verify(path) == AuditVerdict(
        False, 3, f"entry 3: broken link: prev_hash {entries[1].hash[:16]}… is not the hash "
                  f"of entry 2 ({forged[:16]}…)")


def test_verify_names_a_gap(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    three_entries(path)
    tamper(path, "DELETE FROM audit_log WHERE seq = ?", 2)
    assert verify(path) == AuditVerdict(False, 2, "entry 3: gap in seq (entry 2 is missing)")


def test_verify_names_a_changed_first_link(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    three_entries(path)
    tamper(path, "UPDATE audit_log SET prev_hash = ? WHERE seq = 1", "1" * 64)
    assert verify(path) == AuditVerdict(
        False, 3, "entry 1: broken link: prev_hash 1111111111111111… is not the genesis hash "
                  "(64 zeros)")


def test_verify_of_a_file_without_entries_and_of_no_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.sqlite"
    sqlite3.connect(empty).close()
    assert verify(empty) == AuditVerdict(True, 0, "", GENESIS)
    with pytest.raises(AuditError) as err:
        verify(tmp_path / "none.sqlite")
    assert str(err.value) == f"audit log {tmp_path / 'none.sqlite'}: no such file"
    assert not (tmp_path / "none.sqlite").exists()
    not_sqlite = tmp_path / "notes.txt"
    not_sqlite.write_text("not a database, just text that is long enough to look like one\n")
    with pytest.raises(AuditError) as err:
        verify(not_sqlite)
    assert str(err.value) == f"audit log {not_sqlite}: cannot read: file is not a database"
    assert issubclass(AuditError, CarbonScadaError)


def test_a_file_that_cannot_be_written_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "var"
    blocker.write_text("x")
    with pytest.raises(AuditError) as err:
        AuditLog(blocker / "h.sqlite")
    assert str(err.value) == (f"audit log {blocker / 'h.sqlite'}: cannot create directory "
                              f"{blocker}: a file is in the way")


APPENDER = """
import sys
from server.audit import AuditLog
log = AuditLog(sys.argv[1])
for i in range(25):
    log.append(f"proc{sys.argv[2]}", "test", f"n:{i}", {"i": i})
"""


def test_threads_and_processes_append_to_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    log = AuditLog(path)
    procs = [subprocess.Popen([sys.executable, "-c", APPENDER, str(path), str(k)], cwd=REPO)
             for k in range(3)]

    def thread_appends(k: int) -> None:
        for i in range(25):
            log.append(f"thread{k}", "test", f"n:{i}", {"i": i})
    threads = [threading.Thread(target=thread_appends, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0]
    entries = log.entries(limit=1000)
    assert [e.seq for e in entries] == list(range(1, 126))
    for k in range(3):  # each writer's own entries stay in its order
        assert [e.detail["i"] for e in entries if e.user == f"proc{k}"] == list(range(25))
    assert verify(path) == AuditVerdict(True, 125, "", entries[-1].hash)


async def test_the_historian_users_and_audit_log_share_one_file(tmp_path: Path) -> None:
    path = tmp_path / "var" / "historian.sqlite"
    h = Historian(path)
    await h.start()
    try:
        users = UserStore(path)
        log = AuditLog(path)
        users.add("alice", "operator", "password-1")
        await h.record_alarm(AlarmEvent("S1_rate", T0, "alarm", "normal", 250.0, 200.0,
                                        "source S1 co2_rate_t_h", "high", "高"))
        log.append("alice", "acknowledge", "alarm:S1_rate", {"comment": ""}, T0)
        assert len(await h.alarm_journal(T0, T0 + timedelta(1))) == 1
    finally:
        await h.stop()
    assert verify(path) == AuditVerdict(True, 1, "", log.entries()[0].hash)
    assert UserStore(path).authenticate("alice", "password-1") is not None
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
