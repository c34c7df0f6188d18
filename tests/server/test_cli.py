"""The `carbonscada` command as an operator meets it: messages, exit codes, no tracebacks."""

from __future__ import annotations

import getpass
import hashlib
import os
import pty
import select
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import yaml

from server.audit import AuditLog
from server.users import UserStore
from tests.fixtures.plant import plant_dict

CARBONSCADA = str(Path(sys.executable).parent / "carbonscada")
REPO = Path(__file__).resolve().parents[2]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CARBONSCADA, *args], capture_output=True, text=True, timeout=60,
                          cwd=cwd, check=False)


def test_check_config_accepts_the_demo_plant() -> None:
    r = run("check-config", str(REPO / "config" / "demo-plant.yaml"))
    assert r.returncode == 0, r.stderr
    assert "OK — site demo, 7 devices, 31 tags, 2 units, 2 sources, 3 alarm rules" in r.stdout


def test_check_config_names_file_key_and_problem(tmp_path: Path) -> None:
    d = plant_dict()
    d["devices"][0]["protocol"] = "modbus_tpc"
    d["units"][0]["sources"][0].pop("area_m2")
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(d), encoding="utf-8")
    r = run("check-config", str(f))
    assert r.returncode == 2
    assert f"{f}: devices[0].protocol: unknown protocol 'modbus_tpc'" in r.stderr
    assert "Traceback" not in r.stderr


def test_run_refuses_a_bad_config_before_starting_anything(tmp_path: Path) -> None:
    d = plant_dict()
    d["devices"][0]["poll_interval_s"] = -1
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(d), encoding="utf-8")
    r = run("run", "-c", str(f), cwd=tmp_path)
    assert r.returncode == 2
    assert f"{f}: devices[0].poll_interval_s: Input should be greater than 0" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "var").exists()  # nothing was created


def test_missing_config_file() -> None:
    r = run("check-config", "/nonexistent/plant.yaml")
    assert r.returncode == 2
    assert "/nonexistent/plant.yaml: (file): cannot read: No such file or directory" in r.stderr


def run_with(*args: str, cwd: Path, password: str | None = None,
             stdin: str = "") -> subprocess.CompletedProcess[str]:
    """The console script with $CARBONSCADA_PASSWORD set (or not) and `stdin` piped in."""
    env = {k: v for k, v in os.environ.items() if k != "CARBONSCADA_PASSWORD"}
    if password is not None:
        env["CARBONSCADA_PASSWORD"] = password
    return subprocess.run([CARBONSCADA, *args], capture_output=True, text=True, timeout=60,
                          cwd=cwd, env=env, input=stdin, check=False)


def write_plant(tmp_path: Path, **site: str) -> Path:
    """A plant configuration in tmp_path/conf whose historian is var/historian.sqlite."""
    d = plant_dict()
    d["site"].update(site)
    (tmp_path / "conf").mkdir()
    f = tmp_path / "conf" / "plant.yaml"
    f.write_text(yaml.safe_dump(d, allow_unicode=True), encoding="utf-8")
    return f


def test_user_accounts_are_managed_and_every_change_is_audited(tmp_path: Path) -> None:
    conf = str(write_plant(tmp_path))
    # the historian path is relative: to the working directory, as for `run`
    db = tmp_path / "var" / "historian.sqlite"
    r = run_with("user", "add", "alice", "--role", "operator", "-c", conf, cwd=tmp_path,
                 password="alice-pass-1")
    assert (r.returncode, r.stdout, r.stderr) == (
        0, "var/historian.sqlite: user alice added with role operator\n", "")
    r = run_with("user", "add", "bob", "--role", "admin", "-c", conf, cwd=tmp_path,
                 stdin="bob pass 1 \n")  # one line of stdin; inner and end spaces kept
    assert (r.returncode, r.stdout) == (0, "var/historian.sqlite: user bob added with role "
                                           "admin\n"), r.stderr
    store = UserStore(db)
    alice = store.authenticate("alice", "alice-pass-1")
    bob = store.authenticate("bob", "bob pass 1 ")
    assert alice is not None and alice.role == "operator"
    assert bob is not None and bob.role == "admin"

    r = run_with("user", "list", "-c", conf, cwd=tmp_path)
    assert r.returncode == 0, r.stderr

    def shanghai(t: datetime) -> str:
        return t.astimezone(ZoneInfo("Asia/Shanghai")).isoformat(timespec="seconds")
    assert r.stdout.splitlines() == [
        f"alice                operator  created {shanghai(alice.created)} Asia/Shanghai, "
        f"changed {shanghai(alice.changed)} Asia/Shanghai",
        f"bob                  admin     created {shanghai(bob.created)} Asia/Shanghai, "
        f"changed {shanghai(bob.changed)} Asia/Shanghai"]
    assert shanghai(alice.created).endswith("+08:00")

    r = run_with("user", "passwd", "alice", "-c", conf, cwd=tmp_path, stdin="alice-pass-2\n")
    assert (r.returncode, r.stdout) == (
        0, "var/historian.sqlite: password of user alice changed\n"), r.stderr
    r = run_with("user", "role", "Alice", "engineer", "-c", conf, cwd=tmp_path)
    assert (r.returncode, r.stdout) == (
        0, "var/historian.sqlite: role of user alice changed from operator to engineer\n")
    r = run_with("user", "remove", "bob", "-c", conf, cwd=tmp_path)
    assert (r.returncode, r.stdout) == (0, "var/historian.sqlite: user bob removed\n")

    assert store.authenticate("alice", "alice-pass-1") is None
    now = store.authenticate("alice", "alice-pass-2")
    assert now is not None and now.role == "engineer"
    assert [u.name for u in store.list()] == ["alice"]
    me = f"cli:{getpass.getuser()}"
    assert [(e.user, e.action, e.target, e.detail) for e in AuditLog(db).entries()] == [
        (me, "user_add", "user:alice", {"role": "operator"}),
        (me, "user_add", "user:bob", {"role": "admin"}),
        (me, "user_password", "user:alice", {}),
        (me, "user_role", "user:alice", {"from": "operator", "to": "engineer"}),
        (me, "user_remove", "user:bob", {"role": "admin"}),
    ]
    raw = b"".join(p.read_bytes() for p in db.parent.iterdir())  # the file, its WAL too
    for secret in (b"alice-pass-1", b"alice-pass-2", b"bob pass 1"):
        assert secret not in raw
    assert not (tmp_path / "conf" / "var").exists()


def test_user_errors_are_one_line_without_a_traceback(tmp_path: Path) -> None:
    conf = str(write_plant(tmp_path))
    r = run_with("user", "list", "-c", conf, cwd=tmp_path)
    assert (r.returncode, r.stderr) == (
        1, "carbonscada user: var/historian.sqlite: no historian file here, so no users yet\n")
    assert not (tmp_path / "var").exists()  # a failed command creates nothing
    ok = run_with("user", "add", "alice", "--role", "viewer", "-c", conf, cwd=tmp_path,
                  password="long-enough")
    assert ok.returncode == 0, ok.stderr
    cases = [
        (("user", "add", "alice", "--role", "admin"), "long-enough", "",
         "carbonscada user: user 'alice': already exists\n"),
        (("user", "add", "carol", "--role", "admin"), "short", "",
         "carbonscada user: user 'carol': a password needs at least 8 characters\n"),
        (("user", "add", "carol", "--role", "admin"), None, "",
         "carbonscada user: user 'carol': no password on standard input (or set "
         "CARBONSCADA_PASSWORD)\n"),
        (("user", "add", "9lives", "--role", "viewer"), "long-enough", "",
         "carbonscada user: user '9lives': a name starts with a letter and holds only "
         "letters, digits, '_', '.' and '-', at most 64 characters\n"),
        (("user", "remove", "carol"), None, "",
         "carbonscada user: user 'carol': no such user in var/historian.sqlite\n"),
        (("user", "passwd", "carol"), None, "long-enough\n",
         "carbonscada user: user 'carol': no such user in var/historian.sqlite\n"),
        (("user", "role", "carol", "admin"), None, "",
         "carbonscada user: user 'carol': no such user in var/historian.sqlite\n"),
    ]
    for args, password, stdin, stderr in cases:
        r = run_with(*args, "-c", conf, cwd=tmp_path, password=password, stdin=stdin)
        assert (r.returncode, r.stdout, r.stderr) == (1, "", stderr), args
    for args in (("user", "add", "carol", "--role", "boss", "-c", conf),
                 ("user", "role", "alice", "boss", "-c", conf),
                 ("user", "add", "carol", "--role", "viewer"),  # no -c
                 ("user", "rename", "alice", "-c", conf),
                 ("audit", "list", "-c", conf, "--from", "yesterday")):
        r = run_with(*args, cwd=tmp_path, password="long-enough")
        assert r.returncode == 2, args
        assert "Traceback" not in r.stderr
    # nothing of all that reached the accounts or the audit log
    db = tmp_path / "var" / "historian.sqlite"
    assert [(u.name, u.role) for u in UserStore(db).list()] == [("alice", "viewer")]
    assert [e.action for e in AuditLog(db).entries()] == ["user_add"]


T0 = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)


def test_audit_verify_and_list(tmp_path: Path) -> None:
    conf = str(write_plant(tmp_path, timezone="Europe/Berlin"))
    db = tmp_path / "var" / "historian.sqlite"
    r = run_with("audit", "verify", "-c", conf, cwd=tmp_path)
    assert (r.returncode, r.stdout, r.stderr) == (
        1, "", "carbonscada audit: audit log var/historian.sqlite: no such file\n")
    log = AuditLog(db)
    log.append("op1", "acknowledge", "alarm:S1_rate", {"comment": "已确认"}, T0)
    log.append("eng1", "set_limit", "alarm:S1_rate", {"from": 200, "to": 180},
               T0 + timedelta(hours=1, milliseconds=250))
    log.append("op1", "shelve", "alarm:S1_rate", {"comment": "检修"}, T0 + timedelta(days=1))
    # the chain written out by hand (times in ms since the epoch)
    h1 = hashlib.sha256(('[1,1795248000000,"op1","acknowledge","alarm:S1_rate",'
                         '{"comment":"已确认"},"' + "0" * 64 + '"]').encode()).hexdigest()
    h2 = hashlib.sha256(('[2,1795251600250,"eng1","set_limit","alarm:S1_rate",'
                         '{"from":200,"to":180},"' + h1 + '"]').encode()).hexdigest()
    h3 = hashlib.sha256(('[3,1795334400000,"op1","shelve","alarm:S1_rate",'
                         '{"comment":"检修"},"' + h2 + '"]').encode()).hexdigest()
    r = run_with("audit", "verify", "-c", conf, cwd=tmp_path)
    assert (r.returncode, r.stdout, r.stderr) == (
        0, f"audit log var/historian.sqlite: OK, 3 entries, last hash {h3[:16]}\n", "")

    r = run_with("audit", "list", "-c", conf, cwd=tmp_path)
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout.splitlines() == [  # plant local time: CET in November
        '     1  2026-11-21T09:00:00.000+01:00 Europe/Berlin  op1  acknowledge  alarm:S1_rate'
        '  {"comment":"已确认"}',
        '     2  2026-11-21T10:00:00.250+01:00 Europe/Berlin  eng1  set_limit  alarm:S1_rate'
        '  {"from":200,"to":180}',
        '     3  2026-11-22T09:00:00.000+01:00 Europe/Berlin  op1  shelve  alarm:S1_rate'
        '  {"comment":"检修"}']
    r = run_with("audit", "list", "-c", conf, "--from", "2026-11-21T10:00:00.250+01:00",
                 "--to", "2026-11-22T08:00:00.001Z", cwd=tmp_path)
    assert [line.split()[0] for line in r.stdout.splitlines()] == ["2", "3"]
    r = run_with("audit", "list", "-c", conf, "--from", "2026-11-21T10:00:00.250+01:00",
                 "--to", "2026-11-22T08:00:00Z", cwd=tmp_path)  # --to is exclusive
    assert [line.split()[0] for line in r.stdout.splitlines()] == ["2"]
    r = run_with("audit", "list", "-c", conf, "--to", "2026-11-21T09:00:00.250+01:00",
                 cwd=tmp_path)
    assert [line.split()[0] for line in r.stdout.splitlines()] == ["1"]

    with sqlite3.connect(db) as raw:  # someone edits the file around the triggers
        raw.execute("DROP TRIGGER audit_log_no_update")
        raw.execute("UPDATE audit_log SET detail = '{\"from\":200,\"to\":250}' WHERE seq = 2")
    r = run_with("audit", "verify", "-c", conf, cwd=tmp_path)
    assert r.returncode == 1
    assert r.stdout.startswith("audit log var/historian.sqlite: BROKEN at entry 2: hash "
                               f"mismatch: stored {h2[:16]}…, computed ")
    assert len(r.stdout.splitlines()) == 1 and "Traceback" not in r.stderr


def answer_prompts(args: list[str], cwd: Path, answers: list[str]) -> tuple[int, str, str]:
    """Run the console script on a pseudo-terminal; type each answer after its prompt."""
    env = {k: v for k, v in os.environ.items() if k != "CARBONSCADA_PASSWORD"}
    master, slave = pty.openpty()
    # a new session has no controlling terminal, so getpass prompts on stderr and reads
    # the terminal that stdin is
    p = subprocess.Popen([CARBONSCADA, *args], stdin=slave, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, cwd=cwd, env=env, start_new_session=True)
    os.close(slave)
    assert p.stderr is not None and p.stdout is not None
    err = b""
    try:
        for n, answer in enumerate(answers, start=1):
            while err.count(b": ") < n:  # the n-th prompt is out: input is read from now on
                ready, _, _ = select.select([p.stderr], [], [], 30)
                assert ready, f"no prompt {n}; stderr so far {err!r}"
                chunk = os.read(p.stderr.fileno(), 4096)
                assert chunk, f"stderr closed before prompt {n}: {err!r}"
                err += chunk
            os.write(master, answer.encode() + b"\n")
        out, rest = p.communicate(timeout=60)
    finally:
        os.close(master)
        if p.poll() is None:
            p.kill()
    return p.returncode, out.decode(), (err + rest).decode()


def test_a_password_is_asked_twice_on_a_terminal(tmp_path: Path) -> None:
    conf = str(write_plant(tmp_path))
    rc, out, err = answer_prompts(["user", "add", "alice", "--role", "viewer", "-c", conf],
                                  tmp_path, ["tty-pass-1", "tty-pass-1"])
    assert (rc, out) == (0, "var/historian.sqlite: user alice added with role viewer\n"), err
    assert err == "new password of alice: \nthe new password of alice again: \n"
    rc, out, err = answer_prompts(["user", "passwd", "alice", "-c", conf], tmp_path,
                                  ["tty-pass-2", "tty-pass-3"])
    assert (rc, out) == (1, "")
    assert err.endswith("\ncarbonscada user: user 'alice': the two passwords differ\n")
    store = UserStore(tmp_path / "var" / "historian.sqlite")
    assert store.authenticate("alice", "tty-pass-1") is not None
    assert [e.action for e in AuditLog(tmp_path / "var" / "historian.sqlite").entries()] == [
        "user_add"]
