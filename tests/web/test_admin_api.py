"""User accounts over the REST API (issue 14, view 7): admin only, CSRF, audited, no
self-demotion, 4xx messages naming the field. A real server on loopback with the real
user store, audit log and alarm sink on tmp SQLite files."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from server.users import UserStore
from tests.web.test_auth import (
    Client,
    NewClient,
    Plant,
    call,
    csrf,
    login,
    new_client,  # noqa: F401  (the fixture)
    start_plant,
    stop_plant,
)


@pytest.fixture
def store(tmp_path: Path) -> UserStore:
    s = UserStore(tmp_path / "users.sqlite")
    s.ensure_demo_users()
    return s


@pytest.fixture
async def p(port: int, tmp_path: Path, store: UserStore) -> AsyncIterator[Plant]:
    pl = await start_plant(port, tmp_path, store)
    yield pl
    await stop_plant(pl)


async def _admin(p: Plant, new_client: NewClient) -> tuple[Client, dict[str, str]]:  # noqa: F811
    c = await new_client()
    return c, csrf(await login(p, c, "admin"))


def _user_entries(p: Plant) -> list[tuple[str, str, str, dict[str, Any] | None]]:
    return [(e.user, e.action, e.target, dict(e.detail) if e.detail is not None else None)
            for e in p.audit.entries() if e.target.startswith("user:")
            and e.action not in ("login", "logout")]


async def test_admin_lists_adds_changes_and_removes(p: Plant, new_client: NewClient,  # noqa: F811
                                                    store: UserStore) -> None:
    c, h = await _admin(p, new_client)
    users = f"{p.base}/api/v1/users"
    before = datetime.now(UTC).replace(microsecond=0)
    listed = await call(c, "GET", users, 200)
    assert [(u["name"], u["role"]) for u in listed] == [
        ("admin", "admin"), ("engineer", "engineer"), ("operator", "operator"),
        ("viewer", "viewer")]
    assert set(listed[0]) == {"name", "role", "created", "updated"}  # never the hash
    assert all(u["created"].endswith("Z") for u in listed)

    made = await call(c, "POST", users, 201, headers=h,
                      body={"user": "li.wei", "role": "operator", "password": "s3cret-pass"})
    assert (made["name"], made["role"]) == ("li.wei", "operator")
    created = datetime.fromisoformat(made["created"])
    assert created >= before and made["updated"] == made["created"]
    assert "li.wei" in [u["name"] for u in await call(c, "GET", users, 200)]
    # The new account logs in with its password.
    other = await new_client()
    got = await call(other, "POST", f"{p.base}/api/v1/login", 200,
                     body={"user": "li.wei", "password": "s3cret-pass"})
    assert got["role"] == "operator"

    # Promoting it ends its session: a session keeps the role it logged in with.
    changed = await call(c, "PUT", f"{users}/li.wei", 200, headers=h,
                         body={"role": "engineer"})
    assert changed["role"] == "engineer" and store.get("li.wei").role == "engineer"  # type: ignore[union-attr]
    await call(other, "GET", f"{p.base}/api/v1/session", 401)
    # A password reset: the old one no longer works, the new one does.
    await call(c, "PUT", f"{users}/li.wei", 200, headers=h, body={"password": "new-pass-42"})
    assert store.authenticate("li.wei", "s3cret-pass") is None
    assert store.authenticate("li.wei", "new-pass-42") is not None

    assert await call(c, "DELETE", f"{users}/li.wei", 200, headers=h) == {"removed": "li.wei"}
    assert store.get("li.wei") is None
    assert "li.wei" not in [u["name"] for u in await call(c, "GET", users, 200)]

    # Every change is in the audit log, by the admin, without a password in it.
    assert _user_entries(p) == [
        ("admin", "user_add", "user:li.wei", {"role": "operator"}),
        ("admin", "user_role", "user:li.wei",
         {"from": "operator", "to": "engineer", "sessions_ended": 1}),
        ("admin", "user_password", "user:li.wei", {"sessions_ended": 0}),
        ("admin", "user_remove", "user:li.wei", {"role": "engineer", "sessions_ended": 0}),
    ]
    assert "pass" not in repr([e.detail for e in p.audit.entries()])


async def test_only_admins(p: Plant, new_client: NewClient) -> None:  # noqa: F811
    users = f"{p.base}/api/v1/users"
    anon = await new_client()
    assert (await call(anon, "GET", users, 401))["error"] == "not logged in"
    await call(anon, "POST", users, 401, body={"user": "x1", "role": "viewer",
                                               "password": "12345678"})
    for role in ("viewer", "operator", "engineer"):
        c = await new_client()
        h = csrf(await login(p, c, role))
        err = await call(c, "GET", users, 403)
        assert err["error"] == f"needs the admin role or higher (user {role!r} is {role})"
        await call(c, "POST", users, 403, headers=h,
                   body={"user": "x1", "role": "admin", "password": "12345678"})
        await call(c, "PUT", f"{users}/viewer", 403, headers=h, body={"role": "admin"})
        await call(c, "DELETE", f"{users}/viewer", 403, headers=h)
    assert _user_entries(p) == []


async def test_csrf(p: Plant, new_client: NewClient, store: UserStore) -> None:  # noqa: F811
    c, h = await _admin(p, new_client)
    users = f"{p.base}/api/v1/users"
    body = {"user": "x1", "role": "viewer", "password": "12345678"}
    err = await call(c, "POST", users, 403, body=body)
    assert err["error"] == "missing X-CSRF-Token header"
    await call(c, "POST", users, 403, body=body, headers={"X-CSRF-Token": "forged"})
    await call(c, "DELETE", f"{users}/viewer", 403)
    await call(c, "PUT", f"{users}/viewer", 403, body={"role": "admin"},
               headers={**h, "Origin": "http://evil.example"})
    assert store.get("x1") is None and store.get("viewer").role == "viewer"  # type: ignore[union-attr]
    assert _user_entries(p) == []


async def test_an_admin_cannot_remove_or_demote_themselves(
        p: Plant, new_client: NewClient, store: UserStore) -> None:  # noqa: F811
    c, h = await _admin(p, new_client)
    users = f"{p.base}/api/v1/users"
    err = await call(c, "PUT", f"{users}/admin", 409, headers=h, body={"role": "engineer"})
    assert "your own role" in err["error"] and "always keeps an admin" in err["error"]
    err = await call(c, "PUT", f"{users}/ADMIN", 409, headers=h, body={"role": "viewer"})
    assert "your own role" in err["error"]  # the same account in another case
    err = await call(c, "DELETE", f"{users}/Admin", 409, headers=h)
    assert "your own account" in err["error"]
    assert store.get("admin").role == "admin"  # type: ignore[union-attr]
    # Their own password they may change, and they stay logged in.
    await call(c, "PUT", f"{users}/admin", 200, headers=h,
               body={"password": "another-admin-pw", "role": "admin"})
    assert (await call(c, "GET", f"{p.base}/api/v1/session", 200))["role"] == "admin"
    # A second admin may demote the first.
    await call(c, "POST", users, 201, headers=h,
               body={"user": "chief", "role": "admin", "password": "chief-pass-1"})
    c2 = await new_client()
    s2 = await call(c2, "POST", f"{p.base}/api/v1/login", 200,
                    body={"user": "chief", "password": "chief-pass-1"})
    await call(c2, "PUT", f"{users}/admin", 200, headers=csrf(s2), body={"role": "engineer"})
    assert store.get("admin").role == "engineer"  # type: ignore[union-attr]
    await call(c, "GET", users, 401)  # the demoted admin's session has ended


@pytest.mark.parametrize(("method", "path", "body", "status", "message"), [
    ("POST", "", {"role": "viewer", "password": "12345678"}, 400, "'user' is required"),
    ("POST", "", {"user": "x1", "password": "12345678"}, 400, "'role' is required"),
    ("POST", "", {"user": "x1", "role": "boss", "password": "12345678"}, 400,
     "'role' must be one of viewer, operator, engineer, admin, not 'boss'"),
    ("POST", "", {"user": "x1", "role": "viewer"}, 400, "'password' is required"),
    ("POST", "", {"user": "x1", "role": "viewer", "password": "short"}, 400,
     "user 'x1': a password needs at least 8 characters"),
    ("POST", "", {"user": "x1", "role": "viewer", "password": "x" * 1025}, 400,
     "'password' is longer than 1024 characters"),
    ("POST", "", {"user": "1x", "role": "viewer", "password": "12345678"}, 400,
     "user '1x': a name starts with a letter"),
    ("POST", "", {"user": "x" * 65, "role": "viewer", "password": "12345678"}, 400,
     "'user' is longer than 64 characters"),
    ("POST", "", {"user": 5, "role": "viewer", "password": "12345678"}, 400,
     "'user' must be a string"),
    ("POST", "", {"user": "Operator", "role": "viewer", "password": "12345678"}, 409,
     "user 'Operator': already exists (as 'operator')"),
    ("PUT", "/viewer", {}, 400, "give 'role', 'password' or both"),
    ("PUT", "/viewer", {"role": "root"}, 400, "'role' must be one of"),
    ("PUT", "/viewer", {"password": "1234567"}, 400,
     "user 'viewer': a password needs at least 8 characters"),
    ("PUT", "/nobody", {"role": "viewer"}, 404, "unknown user 'nobody'"),
    ("DELETE", "/nobody", None, 404, "unknown user 'nobody'"),
])
async def test_bad_requests_name_the_field(p: Plant, new_client: NewClient,  # noqa: F811
                                           store: UserStore, method: str, path: str,
                                           body: dict[str, Any] | None, status: int,
                                           message: str) -> None:
    c, h = await _admin(p, new_client)
    err = await call(c, method, f"{p.base}/api/v1/users{path}", status, headers=h, body=body)
    assert err["error"].startswith(message), err
    assert [u.name for u in store.list()] == ["admin", "engineer", "operator", "viewer"]
    assert store.get("viewer").role == "viewer"  # type: ignore[union-attr]
    assert _user_entries(p) == []


async def test_not_json(p: Plant, new_client: NewClient) -> None:  # noqa: F811
    c, h = await _admin(p, new_client)
    err = await call(c, "POST", f"{p.base}/api/v1/users", 400, headers=h, raw="{user")
    assert err["error"] == "request body is not valid JSON"


async def test_hashing_runs_off_the_event_loop(p: Plant, new_client: NewClient,  # noqa: F811
                                               store: UserStore,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """scrypt (~50 ms) in a worker thread: the loop's thread never runs the store."""
    loop_thread = threading.get_ident()
    seen: list[int] = []
    real_add, real_set = store.add, store.set_password

    def add(name: str, role: str, password: str) -> Any:
        seen.append(threading.get_ident())
        return real_add(name, role, password)

    def set_password(name: str, password: str) -> None:
        seen.append(threading.get_ident())
        real_set(name, password)

    monkeypatch.setattr(store, "add", add)
    monkeypatch.setattr(store, "set_password", set_password)
    c, h = await _admin(p, new_client)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    ticker = asyncio.ensure_future(tick())
    try:
        await call(c, "POST", f"{p.base}/api/v1/users", 201, headers=h,
                   body={"user": "zhang", "role": "viewer", "password": "12345678"})
        await call(c, "PUT", f"{p.base}/api/v1/users/zhang", 200, headers=h,
                   body={"password": "87654321"})
    finally:
        ticker.cancel()
    assert len(seen) == 2 and loop_thread not in seen
    assert ticks > 0


async def test_no_user_store(port: int, tmp_path: Path, new_client: NewClient) -> None:  # noqa: F811
    pl = await start_plant(port, tmp_path, None)
    try:
        c = await new_client()
        await call(c, "GET", f"{pl.base}/api/v1/users", 401)
    finally:
        await stop_plant(pl)
