"""Web login accounts in a real SQLite file: roles, scrypt hashes, the store's rules."""

from __future__ import annotations

import base64
import hashlib
import re
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from model.accounts import ROLES, User, has_role
from model.errors import CarbonScadaError, UserError
from server.users import UserStore, check_password, hash_password

# RFC 7914 section 12, the third scrypt test vector (N = 16384, r = 8, p = 1).
RFC_KEY = bytes.fromhex(
    "7023bdcb3afd7348461c06cd81fd38ebfda8fbba904f8e3ea9b543f6545da1f2"
    "d5432955613f0fcf62d49705242a9af9e61e85dc0d651e40dfcf017b45575887")
RFC_ENCODED = (f"scrypt$16384$8$1${base64.b64encode(b'SodiumChloride').decode()}$"
               f"{base64.b64encode(RFC_KEY).decode()}")


def test_roles_rank_in_ascending_rights() -> None:
    assert ROLES == ("viewer", "operator", "engineer", "admin")
    assert has_role("admin", "viewer") and has_role("admin", "admin")
    assert has_role("engineer", "operator") and has_role("operator", "operator")
    assert not has_role("viewer", "operator")
    assert not has_role("operator", "engineer")
    assert not has_role("root", "viewer")
    assert not has_role("admin", "superuser")
    assert not has_role("", "")


def test_a_password_hash_is_scrypt_with_a_random_salt() -> None:
    encoded = hash_password("correct horse")
    m = re.fullmatch(r"scrypt\$16384\$8\$1\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)", encoded)
    assert m is not None, encoded
    salt, key = base64.b64decode(m[1]), base64.b64decode(m[2])
    assert len(salt) == 16 and len(key) == 32
    assert key == hashlib.scrypt(b"correct horse", salt=salt, n=16384, r=8, p=1, dklen=32)
    assert hash_password("correct horse") != encoded  # another salt
    assert check_password("correct horse", encoded)
    assert not check_password("correct hors", encoded)


def test_check_password_against_the_rfc_7914_vector() -> None:
    assert check_password("pleaseletmein", RFC_ENCODED)
    assert not check_password("pleaseletmeout", RFC_ENCODED)


@pytest.mark.parametrize("encoded", [
    "", "scrypt", "plain-text-password", "bcrypt$16384$8$1$AAAA$AAAA",
    "scrypt$16384$8$1$not base64!$AAAA", "scrypt$16384$8$1$AAAA$",
    "scrypt$abc$8$1$AAAA$AAAA", "scrypt$16383$8$1$AAAA$AAAA",
    "scrypt$1099511627776$8$1$AAAA$AAAA",  # would need terabytes: refused, not attempted
    RFC_ENCODED + "$extra",
])
def test_a_malformed_hash_never_matches(encoded: str) -> None:
    assert check_password("pleaseletmein", encoded) is False


def test_accounts_are_added_read_and_listed_by_name(tmp_path: Path) -> None:
    path = tmp_path / "var" / "historian.sqlite"  # the directory does not exist yet
    store = UserStore(path)
    before = datetime.now(UTC)
    zoe = store.add("zoe", "viewer", "zoe-password")
    store.add("Alice.W", "engineer", "alice-password")
    store.add("bob_2", "operator", "bob-password")
    after = datetime.now(UTC)
    assert (zoe.name, zoe.role) == ("zoe", "viewer")
    assert zoe.created == zoe.changed
    assert before - timedelta(milliseconds=1) <= zoe.created <= after
    assert zoe.created.tzinfo is UTC
    assert store.get("zoe") == zoe
    assert store.get("nobody") is None
    assert [(u.name, u.role) for u in store.list()] == [
        ("Alice.W", "engineer"), ("bob_2", "operator"), ("zoe", "viewer")]
    # another store on the same file (e.g. another process) sees the same accounts
    assert UserStore(path).get("bob_2") == store.get("bob_2")
    with sqlite3.connect(path) as db:
        (stored,) = db.execute("SELECT password FROM users WHERE name = 'zoe'").fetchone()
    assert stored.startswith("scrypt$16384$8$1$") and "zoe-password" not in stored
    assert check_password("zoe-password", stored)


@pytest.mark.parametrize(("name", "role", "password", "problem"), [
    ("1abc", "viewer", "password1", "a name starts with a letter"),
    ("a b", "viewer", "password1", "a name starts with a letter"),
    ("a" * 65, "viewer", "password1", "at most 64 characters"),
    ("ok\n", "viewer", "password1", "a name starts with a letter"),
    ("", "viewer", "password1", "a name starts with a letter"),
    ("carol", "root", "password1", "unknown role 'root' (one of viewer, operator, engineer, "
                                   "admin)"),
    ("carol", "viewer", "1234567", "a password needs at least 8 characters"),
])
def test_bad_accounts_are_refused_with_the_user_and_the_problem(
        tmp_path: Path, name: str, role: str, password: str, problem: str) -> None:
    store = UserStore(tmp_path / "h.sqlite")
    with pytest.raises(UserError) as err:
        store.add(name, role, password)
    assert str(err.value).startswith(f"user {name!r}: ")
    assert problem in str(err.value)
    assert isinstance(err.value, CarbonScadaError)
    assert store.list() == []


def test_limits_of_names_and_passwords_are_inclusive(tmp_path: Path) -> None:
    store = UserStore(tmp_path / "h.sqlite")
    store.add("a" * 64, "viewer", "12345678")
    store.add("x", "viewer", "12345678")
    assert store.authenticate("a" * 64, "12345678") is not None


def test_a_duplicate_name_is_refused_whatever_its_case(tmp_path: Path) -> None:
    store = UserStore(tmp_path / "h.sqlite")
    store.add("alice", "operator", "first-password")
    with pytest.raises(UserError, match=r"^user 'alice': already exists$"):
        store.add("alice", "admin", "second-password")
    with pytest.raises(UserError, match=r"^user 'ALICE': already exists \(as 'alice'\)$"):
        store.add("ALICE", "admin", "second-password")
    assert [(u.name, u.role) for u in store.list()] == [("alice", "operator")]
    assert store.authenticate("alice", "first-password") is not None


def test_authenticate(tmp_path: Path) -> None:
    store = UserStore(tmp_path / "h.sqlite")
    alice = store.add("alice", "operator", "s3cret-pass")
    assert store.authenticate("alice", "s3cret-pass") == alice
    assert store.authenticate("Alice", "s3cret-pass") == alice  # stored spelling back
    assert store.authenticate("alice", "s3cret-Pass") is None
    assert store.authenticate("alice", "") is None
    assert store.authenticate("mallory", "s3cret-pass") is None


def test_an_unknown_name_costs_one_scrypt_like_a_known_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = UserStore(tmp_path / "h.sqlite")
    store.add("alice", "operator", "s3cret-pass")
    store.authenticate("warm-up", "x")  # the stand-in hash is made once per process
    calls: list[int] = []
    real = hashlib.scrypt

    def counting(*args: Any, **kw: Any) -> bytes:
        calls.append(1)
        return real(*args, **kw)

    monkeypatch.setattr(hashlib, "scrypt", counting)
    assert store.authenticate("mallory", "s3cret-pass") is None
    assert len(calls) == 1
    assert store.authenticate("alice", "wrong-pass") is None
    assert len(calls) == 2


def test_password_and_role_changes(tmp_path: Path) -> None:
    store = UserStore(tmp_path / "h.sqlite")
    created = store.add("alice", "operator", "old-password")
    time.sleep(0.01)
    store.set_password("alice", "new-password")
    assert store.authenticate("alice", "old-password") is None
    changed = store.authenticate("alice", "new-password")
    assert changed is not None and changed.created == created.created
    assert changed.changed > created.changed
    store.set_role("ALICE", "engineer")
    now = store.get("alice")
    assert now is not None
    assert now == User("alice", "engineer", created.created, now.changed)
    assert now.changed >= changed.changed
    with pytest.raises(UserError, match=r"^user 'alice': a password needs at least 8"):
        store.set_password("alice", "short")
    with pytest.raises(UserError, match=r"^user 'alice': unknown role 'boss'"):
        store.set_role("alice", "boss")
    with pytest.raises(UserError, match=r"^user 'bob': no such user$"):
        store.set_password("bob", "long-enough")
    with pytest.raises(UserError, match=r"^user 'bob': no such user$"):
        store.set_role("bob", "admin")
    assert store.authenticate("alice", "new-password") == now


def test_remove(tmp_path: Path) -> None:
    store = UserStore(tmp_path / "h.sqlite")
    store.add("alice", "operator", "password-a")
    store.add("bob", "viewer", "password-b")
    store.remove("alice")
    assert [u.name for u in store.list()] == ["bob"]
    assert store.authenticate("alice", "password-a") is None
    with pytest.raises(UserError, match=r"^user 'alice': no such user$"):
        store.remove("alice")


def test_demo_users_are_created_once(tmp_path: Path) -> None:
    store = UserStore(tmp_path / "h.sqlite")
    store.add("viewer", "viewer", "my-own-password")  # an existing one is left alone
    assert store.ensure_demo_users() == ["operator", "engineer", "admin"]
    assert store.ensure_demo_users() == []
    for role in ROLES[1:]:
        user = store.authenticate(role, f"demo-{role}")
        assert user is not None and user.role == role
    assert store.authenticate("viewer", "demo-viewer") is None
    store.remove("engineer")
    assert store.ensure_demo_users() == ["engineer"]


def test_threads_share_one_store(tmp_path: Path) -> None:
    store = UserStore(tmp_path / "h.sqlite")
    errors: list[BaseException] = []

    def add(i: int) -> None:
        try:
            store.add(f"user{i}", ROLES[i % 4], f"password-{i}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
    threads = [threading.Thread(target=add, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(u.name for u in store.list()) == [f"user{i}" for i in range(8)]
    assert store.authenticate("user5", "password-5") is not None


def test_a_file_that_cannot_be_created_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with pytest.raises(UserError) as err:
        UserStore(blocker / "h.sqlite")
    assert str(err.value) == (f"user store {blocker / 'h.sqlite'}: cannot create directory "
                              f"{blocker}: a file is in the way")
