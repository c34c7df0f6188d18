"""Logins, sessions, CSRF, roles, alarm actions, rule changes and the logs over the REST
API, against a real server on loopback with the real user store, audit log, alarm sink
and historian on tmp SQLite files."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from alarms.engine import AlarmSink
from model.errors import ConfigError
from model.records import AlarmEvent, DeliveryRecord
from server.audit import AuditEntry, AuditLog
from server.config import PlantConfig, parse_config
from server.historian import Historian
from server.users import UserStore
from tests.alarms.test_rules import record
from tests.fixtures.plant import plant_dict
from web.app import WebSink

S1_RATE = {"id": "s1_rate", "name": "S1 rate", "target": {"source": "S1", "field": "co2_kg"},
           "warning": 4000.0, "alarm": 5000.0}
T0 = datetime(2024, 5, 1, 0, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def plant(port: int, **web: Any) -> PlantConfig:
    d = plant_dict(web_port=port)
    d["alarms"] = {"rules": [dict(S1_RATE)], "channels": []}
    d["web"].update(web)
    return parse_config(d, "test_auth")


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Plant:
    """A running web sink with every collaborator real."""

    sink: WebSink
    alarms: AlarmSink
    audit: AuditLog
    historian: Historian
    journal: list[AlarmEvent]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.sink.port}"

    def audit_rows(self) -> list[tuple[str, str, str, dict[str, Any]]]:
        return [(e.user, e.action, e.target, e.detail) for e in self.audit.entries()]


@pytest.fixture(scope="module")
def users(tmp_path_factory: pytest.TempPathFactory) -> UserStore:
    store = UserStore(tmp_path_factory.mktemp("users") / "users.sqlite")
    assert store.ensure_demo_users() == ["viewer", "operator", "engineer", "admin"]
    return store


async def start_plant(port: int, tmp_path: Path, users: UserStore | None,
                      config: PlantConfig | None = None) -> Plant:
    cfg = config or plant(port)
    historian = Historian(tmp_path / "h.sqlite")
    await historian.start()
    audit = AuditLog(tmp_path / "h.sqlite")
    alarms = AlarmSink(cfg)
    journal: list[AlarmEvent] = []
    sink = WebSink(cfg, users=users, audit=audit, alarms=alarms, journal=historian)
    # As the runtime does: every alarm event to the web sink and the journal.
    alarms.subscribe(sink.on_alarm)
    alarms.subscribe(journal.append)
    await alarms.start()
    await sink.start()
    return Plant(sink, alarms, audit, historian, journal)


async def stop_plant(pl: Plant) -> None:
    await pl.sink.stop()
    await pl.alarms.stop()
    await pl.historian.stop()


@pytest.fixture
async def p(port: int, tmp_path: Path, users: UserStore) -> AsyncIterator[Plant]:
    pl = await start_plant(port, tmp_path, users)
    yield pl
    await stop_plant(pl)


Client = aiohttp.ClientSession
NewClient = Callable[[], Awaitable[Client]]


@pytest.fixture
async def new_client() -> AsyncIterator[NewClient]:
    """Browsers: each its own cookie jar (unsafe=True: cookies of 127.0.0.1 are kept)."""
    made: list[Client] = []

    async def make() -> Client:
        c = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True),
                                  timeout=aiohttp.ClientTimeout(total=10))
        made.append(c)
        return c

    yield make
    for c in made:
        await c.close()


async def call(c: Client, method: str, url: str, status: int, *, body: Any = None,
               headers: dict[str, str] | None = None, raw: str | bytes | None = None) -> Any:
    kw: dict[str, Any] = {"headers": headers or {}}
    if raw is not None:
        kw["data"] = raw
    elif body is not None:
        kw["json"] = body
    async with c.request(method, url, **kw) as r:
        text = await r.text()
        assert r.status == status, text
        assert r.content_type == "application/json"
        return json.loads(text)


async def login(p: Plant, c: Client, role: str) -> dict[str, Any]:
    body: dict[str, Any] = await call(c, "POST", f"{p.base}/api/v1/login", 200,
                                      body={"user": role, "password": f"demo-{role}"})
    return body


def csrf(session: dict[str, Any]) -> dict[str, str]:
    return {"X-CSRF-Token": session["csrf_token"]}


async def raise_alarm(p: Plant, minute: int = 0) -> None:
    """S1 at 5200 kg in a minute: rule s1_rate (alarm ≥ 5000) goes into alarm."""
    await p.alarms.on_minute(record(at(minute), s1_kg=5200.0))


# ------------------------------------------------------------------- logins


async def test_login_session_logout(p: Plant, new_client: NewClient) -> None:
    c = await new_client()
    async with c.post(f"{p.base}/api/v1/login",
                      json={"user": "operator", "password": "demo-operator"}) as r:
        assert r.status == 200
        body = await r.json()
        cookie = r.headers["Set-Cookie"]
        assert r.headers["Cache-Control"] == "no-store"
    assert (body["user"], body["role"], body["idle_timeout_s"]) == ("operator", "operator", 1800)
    assert len(body["csrf_token"]) == 43  # token_urlsafe(32)
    expires = datetime.fromisoformat(body["expires"])
    assert abs(expires - (datetime.now(UTC) + timedelta(hours=12))) < timedelta(seconds=5)
    assert cookie.startswith("carbonscada_session=")
    attrs = {a.strip().split("=")[0].lower(): a.strip() for a in cookie.split(";")}
    assert attrs["httponly"] == "HttpOnly" and attrs["samesite"] == "SameSite=Strict"
    assert attrs["path"] == "Path=/" and attrs["max-age"] == "Max-Age=43200"
    assert "secure" not in attrs  # plain HTTP
    token = cookie.split(";")[0].split("=", 1)[1]
    assert len(token) == 43 and token != body["csrf_token"]

    same = await call(c, "GET", f"{p.base}/api/v1/session", 200)
    assert (same["user"], same["role"], same["csrf_token"]) == (
        "operator", "operator", body["csrf_token"])
    assert len(p.sink.sessions) == 1

    assert await call(c, "POST", f"{p.base}/api/v1/logout", 200, headers=csrf(body)) == {
        "user": None}
    assert len(p.sink.sessions) == 0
    assert await call(c, "GET", f"{p.base}/api/v1/session", 401) == {"error": "not logged in"}
    # The old cookie is worth nothing any more, even sent by hand.
    other = await new_client()
    assert await call(other, "GET", f"{p.base}/api/v1/session", 401,
                      headers={"Cookie": f"carbonscada_session={token}"}) == {
        "error": "not logged in"}

    assert p.audit_rows() == [
        ("operator", "login", "user:operator", {"remote": "127.0.0.1", "role": "operator"}),
        ("operator", "logout", "user:operator", {"remote": "127.0.0.1"})]


async def test_login_as_another_user_ends_the_first_session(
        p: Plant, new_client: NewClient) -> None:
    c = await new_client()
    first = await login(p, c, "operator")
    second = await login(p, c, "engineer")
    assert len(p.sink.sessions) == 1 and first["csrf_token"] != second["csrf_token"]
    assert (await call(c, "GET", f"{p.base}/api/v1/session", 200))["user"] == "engineer"


async def test_logout_without_session_is_harmless(p: Plant, new_client: NewClient) -> None:
    c = await new_client()
    assert await call(c, "POST", f"{p.base}/api/v1/logout", 200) == {"user": None}
    assert p.audit_rows() == []


async def test_wrong_password_and_unknown_user_answer_alike(
        p: Plant, new_client: NewClient) -> None:
    c = await new_client()
    for user, password in (("operator", "demo-engineer"), ("nobody", "demo-operator")):
        assert await call(c, "POST", f"{p.base}/api/v1/login", 401,
                          body={"user": user, "password": password}) == {
            "error": "wrong user name or password"}
    assert await call(c, "GET", f"{p.base}/api/v1/session", 401) == {"error": "not logged in"}
    # Issue 11: one entry per address per window, written when the window closes.
    assert p.audit_rows() == []
    await p.sink.throttle.flush()
    [(user, action, target, detail)] = p.audit_rows()
    assert (user, action, target) == ("*", "login_failed", "remote:127.0.0.1")
    assert {k: v for k, v in detail.items() if k not in ("from", "to")} == {
        "remote": "127.0.0.1", "count": 2, "failed": 2, "refused": 0,
        "users": ["operator", "nobody"], "users_total": 2}
    assert detail["from"] <= detail["to"]
    text = json.dumps([e.detail for e in p.audit.entries()])
    assert "demo-" not in text  # never a password


@pytest.mark.parametrize(("body", "message"), [
    ({"password": "x"}, "'user' is required"),
    ({"user": "operator"}, "'password' is required"),
    ({"user": 7, "password": "x"}, "'user' must be a string"),
    ({"user": "operator", "password": ["demo-operator"]}, "'password' must be a string"),
    ({"user": "u" * 65, "password": "x"}, "'user' is longer than 64 characters"),
])
async def test_bad_login_requests(p: Plant, new_client: NewClient, body: dict[str, Any],
                                  message: str) -> None:
    c = await new_client()
    assert await call(c, "POST", f"{p.base}/api/v1/login", 400, body=body) == {
        "error": message}


async def test_bad_json_bodies(p: Plant, new_client: NewClient) -> None:
    c = await new_client()
    url = f"{p.base}/api/v1/login"
    assert await call(c, "POST", url, 400, raw="{user: operator}") == {
        "error": "request body is not valid JSON"}
    assert await call(c, "POST", url, 400, raw='{"user": NaN}') == {
        "error": "request body is not valid JSON"}
    assert await call(c, "POST", url, 400, raw='["operator", "demo-operator"]') == {
        "error": "request body must be a JSON object"}
    assert await call(c, "POST", url, 400, raw=b'{"user": "\xff"}') == {
        "error": "request body is not valid JSON"}


async def test_login_throttled_after_five_failures(p: Plant, new_client: NewClient) -> None:
    clock = Clock()
    p.sink.throttle.clock = clock
    c = await new_client()
    url = f"{p.base}/api/v1/login"
    for _ in range(5):
        await call(c, "POST", url, 401, body={"user": "operator", "password": "guess"})
        clock.now += 10
    # Blocked for 60 s from the fifth failure, even with the right password and
    # whatever the case of the name.
    for user in ("operator", "OPERATOR"):
        async with c.post(url, json={"user": user, "password": "demo-operator"}) as r:
            assert r.status == 429
            assert r.headers["Retry-After"] == "50"
            assert await r.json() == {
                "error": f"too many failed logins for {user!r}: try again in 50 s"}
    # Another name is not blocked.
    await login(p, await new_client(), "engineer")
    clock.now += 49
    async with c.post(url, json={"user": "operator", "password": "demo-operator"}) as r:
        assert (r.status, r.headers["Retry-After"]) == (429, "1")
    clock.now += 1
    assert (await login(p, c, "operator"))["user"] == "operator"

    # The failures' window is still open: only the two logins are in the audit log yet.
    assert [e.action for e in p.audit.entries()] == ["login", "login"]
    await p.sink.throttle.flush()
    failed = [e for e in p.audit.entries() if e.action == "login_failed"]
    assert len(failed) == 1 and failed[0].detail is not None
    assert (failed[0].user, failed[0].target) == ("*", "remote:127.0.0.1")
    # 5 wrong passwords checked; 3 refused unchecked (operator, OPERATOR, then at +49 s).
    assert {k: failed[0].detail[k] for k in (
        "count", "failed", "refused", "users", "users_total", "blocked_s")} == {
        "count": 8, "failed": 5, "refused": 3, "users": ["operator", "OPERATOR"],
        "users_total": 2, "blocked_s": 60.0}


async def test_failures_older_than_five_minutes_do_not_count(
        p: Plant, new_client: NewClient) -> None:
    clock = Clock()
    p.sink.throttle.clock = clock
    c = await new_client()
    for _ in range(4):
        await call(c, "POST", f"{p.base}/api/v1/login", 401,
                   body={"user": "viewer", "password": "guess"})
    clock.now += 300
    await call(c, "POST", f"{p.base}/api/v1/login", 401,
               body={"user": "viewer", "password": "guess"})
    assert (await login(p, c, "viewer"))["role"] == "viewer"


def client_from(address: str) -> Client:
    """A browser whose connections come from `address` (another loopback address)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(address, 0)),
                                 cookie_jar=aiohttp.CookieJar(unsafe=True),
                                 timeout=aiohttp.ClientTimeout(total=10))


async def test_wrong_passwords_from_one_address_do_not_lock_out_another(
        p: Plant, new_client: NewClient) -> None:
    """Issue 11: five wrong passwords for admin made the right one get 429 from anywhere."""
    p.sink.throttle.clock = Clock()  # standing still: the delay never ends by itself
    c = await new_client()
    url = f"{p.base}/api/v1/login"
    for _ in range(5):
        await call(c, "POST", url, 401, body={"user": "admin", "password": "guess"})
    async with c.post(url, json={"user": "admin", "password": "demo-admin"}) as r:
        assert (r.status, r.headers["Retry-After"]) == (429, "60")
    async with client_from("127.0.0.2") as other:
        assert (await login(p, other, "admin"))["user"] == "admin"
    assert p.audit_rows()[-1] == ("admin", "login", "user:admin",
                                  {"remote": "127.0.0.2", "role": "admin"})


async def test_a_flood_of_names_is_throttled_and_audited_in_one_entry(
        p: Plant, new_client: NewClient) -> None:
    """Issue 11: 300 logins with different names were never throttled, each audited."""
    p.sink.throttle.clock = Clock()
    c = await new_client()
    url = f"{p.base}/api/v1/login"

    async def attempt(i: int) -> int:
        async with c.post(url, json={"user": f"guess{i}", "password": "x"}) as r:
            return r.status

    statuses = await asyncio.gather(*(attempt(i) for i in range(60)))
    # At most 20 failures from one address are checked before it has to wait.
    assert (statuses.count(401), statuses.count(429)) == (20, 40)
    async with c.post(url, json={"user": "admin", "password": "demo-admin"}) as r:
        assert r.status == 429
        assert await r.json() == {
            "error": "too many failed logins from this address: try again in 1 s"}
    async with client_from("127.0.0.2") as other:
        await login(p, other, "admin")
    await p.sink.stop()  # writes the summed-up entry
    failed = [e for e in p.audit.entries() if e.action == "login_failed"]
    assert len(failed) == 1  # one entry for the address's window, not one per name
    summary = failed[0]
    assert (summary.user, summary.target) == ("*", "remote:127.0.0.1")
    assert summary.detail is not None
    # 20 checked + 40 refused + admin's refused attempt; 60 guess names + admin.
    assert {k: summary.detail[k] for k in ("count", "failed", "refused", "users_total")} == {
        "count": 61, "failed": 20, "refused": 41, "users_total": 61}
    assert len(summary.detail["users"]) == 10


async def test_session_idle_and_absolute_expiry(p: Plant, new_client: NewClient) -> None:
    clock = Clock()
    p.sink.sessions.clock = clock
    c = await new_client()
    await login(p, c, "viewer")
    # Used every 29 minutes it lives on, up to 12 hours after the login.
    for _ in range(24):
        clock.now += 29 * 60
        await call(c, "GET", f"{p.base}/api/v1/session", 200)
    clock.now = 1000.0 + 12 * 3600 - 1
    await call(c, "GET", f"{p.base}/api/v1/session", 200)
    clock.now += 1
    assert await call(c, "GET", f"{p.base}/api/v1/session", 401) == {"error": "not logged in"}

    await login(p, c, "viewer")
    clock.now += 30 * 60 - 1
    await call(c, "GET", f"{p.base}/api/v1/session", 200)
    clock.now += 30 * 60
    assert await call(c, "GET", f"{p.base}/api/v1/session", 401) == {"error": "not logged in"}
    assert len(p.sink.sessions) == 0


async def test_no_user_store(port: int, tmp_path: Path, new_client: NewClient) -> None:
    pl = await start_plant(port, tmp_path, None)
    try:
        c = await new_client()
        assert await call(c, "POST", f"{pl.base}/api/v1/login", 503,
                          body={"user": "admin", "password": "demo-admin"}) == {
            "error": "no user store"}
        # Public reads need no login.
        assert await call(c, "GET", f"{pl.base}/api/v1/alarms", 200) == []
    finally:
        await stop_plant(pl)


# -------------------------------------------------------------- roles and CSRF


async def test_roles(p: Plant, new_client: NewClient) -> None:
    await raise_alarm(p)
    anon, viewer, operator = await new_client(), await new_client(), await new_client()
    v = await login(p, viewer, "viewer")
    o = await login(p, operator, "operator")
    ack = f"{p.base}/api/v1/alarms/s1_rate/acknowledge"
    q = "?from=2024-05-01T00:00:00Z&to=2024-05-02T00:00:00Z"
    assert await call(anon, "POST", ack, 401, body={"comment": "x"}) == {
        "error": "not logged in"}
    assert await call(viewer, "POST", ack, 403, body={"comment": "x"}, headers=csrf(v)) == {
        "error": "needs the operator role or higher (user 'viewer' is viewer)"}
    assert await call(operator, "POST", f"{p.base}/api/v1/alarms/s1_rate/out-of-service",
                      403, body={"comment": "x"}, headers=csrf(o)) == {
        "error": "needs the engineer role or higher (user 'operator' is operator)"}
    assert await call(anon, "GET", f"{p.base}/api/v1/alarm-rules", 401) == {
        "error": "not logged in"}
    assert await call(viewer, "GET", f"{p.base}/api/v1/deliveries{q}", 403) == {
        "error": "needs the operator role or higher (user 'viewer' is viewer)"}
    assert await call(operator, "GET", f"{p.base}/api/v1/audit{q}", 403) == {
        "error": "needs the engineer role or higher (user 'operator' is operator)"}
    assert await call(anon, "GET", f"{p.base}/api/v1/deliveries{q}", 401) == {
        "error": "not logged in"}
    # Nothing was acknowledged.
    (listed,) = await call(anon, "GET", f"{p.base}/api/v1/alarms", 200)
    assert listed["ack_state"] == "active-unacknowledged"


async def test_csrf_and_origin(p: Plant, new_client: NewClient) -> None:
    await raise_alarm(p)
    c = await new_client()
    s = await login(p, c, "operator")
    ack = f"{p.base}/api/v1/alarms/s1_rate/acknowledge"
    body = {"comment": "seen"}
    assert await call(c, "POST", ack, 403, body=body) == {"error": "missing X-CSRF-Token header"}
    assert await call(c, "POST", ack, 403, body=body,
                      headers={"X-CSRF-Token": s["csrf_token"][:-1] + "x"}) == {
        "error": "wrong X-CSRF-Token header"}
    evil = {**csrf(s), "Origin": "http://evil.example"}
    assert await call(c, "POST", ack, 403, body=body, headers=evil) == {
        "error": f"cross-origin request refused: Origin 'http://evil.example' is not "
                 f"'http://127.0.0.1:{p.sink.port}'"}
    # Logging out from another site is refused too; the session lives on.
    await call(c, "POST", f"{p.base}/api/v1/logout", 403)
    assert (await call(c, "GET", f"{p.base}/api/v1/session", 200))["user"] == "operator"
    # A login form posted from another site.
    await call(await new_client(), "POST", f"{p.base}/api/v1/login", 403,
               body={"user": "operator", "password": "demo-operator"},
               headers={"Origin": "null"})
    assert [e.action for e in p.audit.entries()] == ["login"]
    assert p.alarms.alarm_list()[0].ack_state == "active-unacknowledged"

    ok = {**csrf(s), "Origin": p.base}
    done = await call(c, "POST", ack, 200, body=body, headers=ok)
    assert done["alarm"]["ack_state"] == "active-acknowledged"


# ------------------------------------------------------------- alarm actions


async def test_acknowledge(p: Plant, new_client: NewClient) -> None:
    await raise_alarm(p)
    anon = await new_client()
    (listed,) = await call(anon, "GET", f"{p.base}/api/v1/alarms", 200)
    assert {k: listed[k] for k in ("rule", "state", "ack_state", "previous_ack_state",
                                   "cause", "kind", "area", "user", "comment",
                                   "shelved_until", "value", "limit", "t")} == {
        "rule": "s1_rate", "state": "alarm", "ack_state": "active-unacknowledged",
        "previous_ack_state": "normal", "cause": "condition", "kind": "threshold",
        "area": "U1", "user": "", "comment": "", "shelved_until": None, "value": 5200.0,
        "limit": 5000.0, "t": "2024-05-01T00:00:00Z"}

    c = await new_client()
    s = await login(p, c, "operator")
    url = f"{p.base}/api/v1/alarms/s1_rate/acknowledge"
    done = await call(c, "POST", url, 200, body={"comment": "  load ramp, expected "},
                      headers=csrf(s))
    assert done["audit"]["t"].endswith("Z")
    assert {**done["audit"], "t": None} == {
        "t": None, "user": "operator", "action": "acknowledge", "rule": "s1_rate",
        "comment": "load ramp, expected", "until": None}
    a = done["alarm"]
    assert (a["state"], a["ack_state"], a["previous_ack_state"], a["cause"], a["user"],
            a["comment"]) == ("alarm", "active-acknowledged", "active-unacknowledged",
                              "acknowledge", "operator", "load ramp, expected")
    (listed,) = await call(anon, "GET", f"{p.base}/api/v1/alarms", 200)
    assert listed == a
    assert [(e.cause, e.user) for e in p.journal] == [("condition", ""),
                                                      ("acknowledge", "operator")]
    entry = p.audit.entries()[-1]
    assert (entry.user, entry.action, entry.target, entry.detail) == (
        "operator", "acknowledge", "alarm:s1_rate", {"comment": "load ramp, expected"})
    # Both to the millisecond: the JSON truncates, the audit log rounds.
    assert abs(entry.t - datetime.fromisoformat(done["audit"]["t"])) <= timedelta(milliseconds=1)

    # Nothing left to acknowledge: 409 with the engine's words; nothing audited.
    n = len(p.audit.entries())
    assert await call(c, "POST", url, 409, body={"comment": "again"}, headers=csrf(s)) == {
        "error": "alarm rule 's1_rate' has nothing to acknowledge (state active-acknowledged)"}
    assert await call(c, "POST", f"{p.base}/api/v1/alarms/nope/acknowledge", 404,
                      body={"comment": "x"}, headers=csrf(s)) == {
        "error": "unknown alarm rule 'nope'"}
    assert len(p.audit.entries()) == n


@pytest.mark.parametrize(("raw", "message"), [
    ("{}", "'comment' is required"),
    ('{"comment": null}', "'comment' is required"),
    ('{"comment": "   "}', "'comment' must not be empty"),
    ('{"comment": 42}', "'comment' must be a string"),
    (json.dumps({"comment": "x" * 1001}), "'comment' is longer than 1000 characters"),
    ("comment=seen", "request body is not valid JSON"),
    ('"seen"', "request body must be a JSON object"),
])
async def test_bad_action_requests(p: Plant, new_client: NewClient, raw: str,
                                   message: str) -> None:
    await raise_alarm(p)
    c = await new_client()
    s = await login(p, c, "operator")
    assert await call(c, "POST", f"{p.base}/api/v1/alarms/s1_rate/acknowledge", 400, raw=raw,
                      headers={**csrf(s), "Content-Type": "application/json"}) == {
        "error": message}
    assert p.alarms.alarm_list()[0].ack_state == "active-unacknowledged"


async def test_shelve_and_unshelve(p: Plant, new_client: NewClient) -> None:
    await raise_alarm(p)
    c = await new_client()
    s = await login(p, c, "operator")
    url = f"{p.base}/api/v1/alarms/s1_rate"
    before = datetime.now(UTC)
    done = await call(c, "POST", f"{url}/shelve", 200,
                      body={"comment": "analyser drift, tech called", "minutes": 30},
                      headers=csrf(s))
    until = datetime.fromisoformat(done["audit"]["until"])  # to the millisecond
    ms = timedelta(milliseconds=1)
    assert before + timedelta(minutes=30) - ms <= until <= datetime.now(UTC) + timedelta(
        minutes=30)
    a = done["alarm"]
    assert (a["ack_state"], a["cause"], a["shelved_until"]) == (
        "shelved", "shelve", done["audit"]["until"])
    entry = p.audit.entries()[-1]
    assert (entry.action, entry.target) == ("shelve", "alarm:s1_rate")
    assert entry.detail["comment"] == "analyser drift, tech called"
    assert abs(datetime.fromisoformat(entry.detail["until"]) - until) < ms

    done = await call(c, "POST", f"{url}/unshelve", 200, body={"comment": "tech done"},
                      headers=csrf(s))
    assert (done["alarm"]["ack_state"], done["alarm"]["cause"]) == (
        "active-unacknowledged", "unshelve")
    assert await call(c, "POST", f"{url}/unshelve", 409, body={"comment": "again"},
                      headers=csrf(s)) == {"error": "alarm rule 's1_rate' is not shelved"}

    # An ISO time with offset instead of minutes.
    until = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)
    text = until.astimezone(timezone(timedelta(hours=8))).isoformat()
    done = await call(c, "POST", f"{url}/shelve", 200,
                      body={"comment": "night shift", "until": text}, headers=csrf(s))
    assert done["alarm"]["shelved_until"] == until.isoformat().replace("+00:00", "Z")
    assert [e.action for e in p.audit.entries()] == ["login", "shelve", "unshelve", "shelve"]


@pytest.mark.parametrize(("extra", "status", "message"), [
    ({}, 400, "'minutes' or 'until' is required"),
    ({"minutes": 10, "until": "2030-01-01T00:00:00Z"}, 400,
     "give 'minutes' or 'until', not both"),
    ({"minutes": "ten"}, 400, "'minutes' must be a number"),
    ({"minutes": True}, 400, "'minutes' must be a number"),
    ({"minutes": 0}, 400, "'minutes' must be more than 0"),
    ({"minutes": -5}, 400, "'minutes' must be more than 0"),
    ({"minutes": 1e300}, 400, "'minutes' is too large: 1e+300"),
    ({"until": 5}, 400, "'until' must be a string (ISO 8601 with offset)"),
    ({"until": "tomorrow"}, 400, "'until': 'tomorrow' is not an ISO 8601 time"),
    ({"until": "2030-01-01T00:00:00"}, 400,
     "'until': '2030-01-01T00:00:00' needs a UTC offset, e.g. 2030-01-01T00:00:00+08:00"),
    ({"minutes": 24 * 60 + 1}, 409, "at most 1 day, 0:00:00 ahead"),
    ({"until": "2020-01-01T00:00:00Z"}, 409, "is not after"),
])
async def test_bad_shelve(p: Plant, new_client: NewClient, extra: dict[str, Any], status: int,
                          message: str) -> None:
    await raise_alarm(p)
    c = await new_client()
    s = await login(p, c, "operator")
    body = await call(c, "POST", f"{p.base}/api/v1/alarms/s1_rate/shelve", status,
                      body={"comment": "x", **extra}, headers=csrf(s))
    if status == 400:
        assert body == {"error": message}
    else:
        assert set(body) == {"error"} and message in body["error"]
        assert body["error"].startswith("shelve alarm rule 's1_rate': ")
    assert p.alarms.alarm_list()[0].ack_state == "active-unacknowledged"


async def test_out_of_service_and_back(p: Plant, new_client: NewClient) -> None:
    await raise_alarm(p)
    c = await new_client()
    s = await login(p, c, "engineer")
    url = f"{p.base}/api/v1/alarms/s1_rate"
    done = await call(c, "POST", f"{url}/out-of-service", 200,
                      body={"comment": "analyser maintenance"}, headers=csrf(s))
    assert (done["alarm"]["ack_state"], done["alarm"]["user"]) == ("out-of-service", "engineer")
    # Out of service is still listed.
    (listed,) = await call(c, "GET", f"{p.base}/api/v1/alarms", 200)
    assert listed["ack_state"] == "out-of-service"
    assert await call(c, "POST", f"{url}/acknowledge", 409, body={"comment": "x"},
                      headers=csrf(s)) == {
        "error": "alarm rule 's1_rate' is out of service: nothing to acknowledge"}
    done = await call(c, "POST", f"{url}/return-to-service", 200,
                      body={"comment": "maintenance done"}, headers=csrf(s))
    assert done["alarm"] is None  # back in service, normal: not listed
    assert await call(c, "GET", f"{p.base}/api/v1/alarms", 200) == []
    assert [(e.action, e.target, e.detail) for e in p.audit.entries()[1:]] == [
        ("out_of_service", "alarm:s1_rate", {"comment": "analyser maintenance"}),
        ("return_to_service", "alarm:s1_rate", {"comment": "maintenance done"})]


async def test_returned_unacknowledged_stays_listed_until_acknowledged(
        p: Plant, new_client: NewClient) -> None:
    c = await new_client()
    async with c.ws_connect(f"{p.base}/ws") as ws:
        assert (await ws.receive_json(timeout=5))["alarms"] == []
        await raise_alarm(p, 0)
        pushed = await ws.receive_json(timeout=5)
        assert (pushed["type"], pushed["ack_state"]) == ("alarm", "active-unacknowledged")
        await p.alarms.on_minute(record(at(1), s1_kg=100.0))
        pushed = await ws.receive_json(timeout=5)
        assert (pushed["state"], pushed["ack_state"], pushed["previous_ack_state"]) == (
            "normal", "returned-unacknowledged", "active-unacknowledged")
        (listed,) = await call(c, "GET", f"{p.base}/api/v1/alarms", 200)
        assert (listed["state"], listed["ack_state"]) == ("normal", "returned-unacknowledged")

        s = await login(p, c, "admin")
        done = await call(c, "POST", f"{p.base}/api/v1/alarms/s1_rate/acknowledge", 200,
                          body={"comment": "seen"}, headers=csrf(s))
        assert done["alarm"] is None
        pushed = await ws.receive_json(timeout=5)
        assert (pushed["ack_state"], pushed["user"], pushed["comment"]) == (
            "normal", "admin", "seen")
        assert await call(c, "GET", f"{p.base}/api/v1/alarms", 200) == []


async def test_alarm_list_seeded_at_start(port: int, tmp_path: Path, users: UserStore,
                                          new_client: NewClient) -> None:
    cfg = plant(port)
    alarms = AlarmSink(cfg)
    await alarms.on_minute(record(at(0), s1_kg=5200.0))
    await alarms.on_minute(record(at(1), s1_kg=100.0))  # returned, unacknowledged
    sink = WebSink(cfg, users=users, alarms=alarms)
    await sink.start()
    try:
        c = await new_client()
        (listed,) = await call(c, "GET", f"http://127.0.0.1:{port}/api/v1/alarms", 200)
        assert (listed["rule"], listed["ack_state"], listed["t"]) == (
            "s1_rate", "returned-unacknowledged", "2024-05-01T00:01:00Z")
    finally:
        await sink.stop()


async def test_no_alarm_engine(port: int, users: UserStore, new_client: NewClient) -> None:
    sink = WebSink(plant(port), users=users)
    await sink.start()
    try:
        c = await new_client()
        base = f"http://127.0.0.1:{port}"
        s = await call(c, "POST", f"{base}/api/v1/login", 200,
                       body={"user": "operator", "password": "demo-operator"})
        assert await call(c, "POST", f"{base}/api/v1/alarms/s1_rate/acknowledge", 503,
                          body={"comment": "x"}, headers=csrf(s)) == {
            "error": "no alarm engine"}
        q = "?from=2024-05-01T00:00:00Z&to=2024-05-02T00:00:00Z"
        assert await call(c, "GET", f"{base}/api/v1/alarms/journal{q}", 503) == {
            "error": "no historian: the alarm journal and delivery log are not available"}
    finally:
        await sink.stop()


# -------------------------------------------------------------------- rules

S1_RATE_STORED = {"id": "s1_rate", "name": "S1 rate", "notify": [],
                  "suppress_when_stopped": True, "warning": 4000.0, "alarm": 5000.0,
                  "deadband": 0.0, "on_delay_min": 0, "off_delay_min": 0, "kind": "threshold",
                  "target": {"source": "S1", "unit": None, "tag": None, "site": False,
                             "field": "co2_kg"},
                  "direction": "high"}
S1_CO2_LOW = {"id": "s1_co2_low", "kind": "threshold", "direction": "low",
              "target": {"source": "S1", "field": "co2_dry_pct"}, "warning": 5.0, "alarm": 2.0}


async def test_rules_read_and_changed(p: Plant, new_client: NewClient) -> None:
    changes: list[tuple[str, str, int]] = []
    p.alarms.on_rules_changed(lambda rules, user, comment, _t: changes.append(
        (user, comment, len(rules))))
    viewer, eng = await new_client(), await new_client()
    await login(p, viewer, "viewer")
    e = await login(p, eng, "engineer")
    url = f"{p.base}/api/v1/alarm-rules"
    assert await call(viewer, "GET", url, 200) == [S1_RATE_STORED]

    # One rule changed: its alarm level moves to 6000 kg, so 5200 kg is a warning now.
    rule = {**S1_RATE_STORED, "alarm": 6000.0}
    del rule["id"]  # the address names it
    assert await call(eng, "PUT", f"{url}/s1_rate", 200, headers=csrf(e),
                      body={"rule": rule, "comment": "new permit limit"}) == [
        {**S1_RATE_STORED, "alarm": 6000.0}]
    await raise_alarm(p)
    assert p.alarms.alarm_list()[0].state == "warning"

    added = await call(eng, "POST", url, 201, headers=csrf(e),
                       body={"rule": S1_CO2_LOW, "comment": "analyser check"})
    assert [r["id"] for r in added] == ["s1_rate", "s1_co2_low"]
    assert added[1]["direction"] == "low" and added[1]["alarm"] == 2.0
    assert await call(eng, "POST", url, 409, headers=csrf(e),
                      body={"rule": S1_CO2_LOW, "comment": "again"}) == {
        "error": "alarm rule 's1_co2_low' already exists"}

    left = await call(eng, "DELETE", f"{url}/s1_co2_low", 200, headers=csrf(e),
                      body={"comment": "not needed"})
    assert [r["id"] for r in left] == ["s1_rate"]
    assert await call(eng, "DELETE", f"{url}/nope", 404, headers=csrf(e),
                      body={"comment": "x"}) == {"error": "unknown alarm rule 'nope'"}
    assert await call(eng, "PUT", f"{url}/nope", 404, headers=csrf(e),
                      body={"rule": rule, "comment": "x"}) == {
        "error": "unknown alarm rule 'nope'"}

    # The whole list at once.
    assert await call(eng, "PUT", url, 200, headers=csrf(e),
                      body={"rules": [S1_RATE, S1_CO2_LOW], "comment": "back to the permit"}
                      ) == await call(viewer, "GET", url, 200)
    assert [r["alarm"] for r in await call(viewer, "GET", url, 200)] == [5000.0, 2.0]

    assert changes == [("engineer", "new permit limit", 1), ("engineer", "analyser check", 2),
                       ("engineer", "not needed", 1), ("engineer", "back to the permit", 2)]
    # The runtime audits rule changes (on_rules_changed): the web does not write them twice.
    assert [x.action for x in p.audit.entries()] == ["login", "login"]


async def test_rule_change_refused_with_problems(p: Plant, new_client: NewClient) -> None:
    eng = await new_client()
    e = await login(p, eng, "engineer")
    url = f"{p.base}/api/v1/alarm-rules"
    bad = {**S1_RATE, "target": {"source": "S9", "field": "co2_kg"}}
    assert await call(eng, "PUT", url, 400, headers=csrf(e),
                      body={"rules": [bad, {"id": "x"}], "comment": "typo"}) == {
        "error": "alarm rules not changed: alarms.rules[1].target: required key is missing",
        "problems": [{"path": "alarms.rules[1].target", "problem": "required key is missing"}]}
    assert await call(eng, "PUT", f"{url}/s1_rate", 400, headers=csrf(e),
                      body={"rule": bad, "comment": "typo"}) == {
        "error": "alarm rules not changed: alarms.rules[0].target.source: unknown source 'S9'",
        "problems": [{"path": "alarms.rules[0].target.source",
                      "problem": "unknown source 'S9'"}]}
    many = [{**S1_RATE, "id": f"r{i}", "warning": "high"} for i in range(5)]
    body = await call(eng, "PUT", url, 400, headers=csrf(e),
                      body={"rules": many, "comment": "five bad"})
    assert len(body["problems"]) == 5
    assert body["error"].endswith(" (and 2 more)") and body["error"].count("warning") == 3
    assert await call(eng, "GET", url, 200) == [S1_RATE_STORED]


@pytest.mark.parametrize(("method", "path", "body", "message"), [
    ("PUT", "", {"comment": "x"}, "'rules' is required"),
    ("PUT", "", {"rules": {"id": "a"}, "comment": "x"}, "'rules' must be a list"),
    ("PUT", "", {"rules": [S1_RATE, "s1"], "comment": "x"}, "'rules[1]' must be an object"),
    ("PUT", "", {"rules": [S1_RATE]}, "'comment' is required"),
    ("PUT", "/s1_rate", {"comment": "x"}, "'rule' is required"),
    ("PUT", "/s1_rate", {"rule": [], "comment": "x"}, "'rule' must be an object"),
    ("PUT", "/s1_rate", {"rule": {**S1_RATE, "id": "other"}, "comment": "x"},
     "'rule.id' is 'other' but the address names 's1_rate'"),
    ("POST", "", {"rule": {"kind": "threshold"}, "comment": "x"},
     "'rule.id' is required (a string)"),
    ("POST", "", {"rule": S1_CO2_LOW, "comment": ""}, "'comment' must not be empty"),
    ("DELETE", "/s1_rate", {}, "'comment' is required"),
])
async def test_bad_rule_requests(p: Plant, new_client: NewClient, method: str, path: str,
                                 body: dict[str, Any], message: str) -> None:
    eng = await new_client()
    e = await login(p, eng, "engineer")
    assert await call(eng, method, f"{p.base}/api/v1/alarm-rules{path}", 400, headers=csrf(e),
                      body=body) == {"error": message}
    assert await call(eng, "GET", f"{p.base}/api/v1/alarm-rules", 200) == [S1_RATE_STORED]


async def test_rule_changes_need_an_engineer(p: Plant, new_client: NewClient) -> None:
    op = await new_client()
    o = await login(p, op, "operator")
    url = f"{p.base}/api/v1/alarm-rules"
    refused = {"error": "needs the engineer role or higher (user 'operator' is operator)"}
    assert await call(op, "PUT", url, 403, headers=csrf(o),
                      body={"rules": [], "comment": "x"}) == refused
    assert await call(op, "POST", url, 403, headers=csrf(o),
                      body={"rule": S1_CO2_LOW, "comment": "x"}) == refused
    assert await call(op, "DELETE", f"{url}/s1_rate", 403, headers=csrf(o),
                      body={"comment": "x"}) == refused
    e = await login(p, await new_client(), "engineer")
    assert await call(op, "DELETE", f"{url}/s1_rate", 403, headers=csrf(e),
                      body={"comment": "x"}) == {"error": "wrong X-CSRF-Token header"}
    assert await call(op, "GET", url, 200) == [S1_RATE_STORED]


async def test_removing_an_active_rule_unlists_its_alarm(p: Plant,
                                                         new_client: NewClient) -> None:
    await raise_alarm(p)
    eng = await new_client()
    e = await login(p, eng, "engineer")
    (listed,) = await call(eng, "GET", f"{p.base}/api/v1/alarms", 200)
    assert listed["rule"] == "s1_rate"
    assert await call(eng, "DELETE", f"{p.base}/api/v1/alarm-rules/s1_rate", 200,
                      headers=csrf(e), body={"comment": "stack demolished"}) == []
    assert await call(eng, "GET", f"{p.base}/api/v1/alarms", 200) == []
    assert p.journal[-1].rule == "s1_rate" and p.journal[-1].ack_state == "normal"


# --------------------------------------------------------------------- logs


async def test_journal_deliveries_and_audit(p: Plant, new_client: NewClient) -> None:
    await raise_alarm(p, 0)
    c = await new_client()
    s = await login(p, c, "operator")
    await call(c, "POST", f"{p.base}/api/v1/alarms/s1_rate/acknowledge", 200,
               body={"comment": "seen"}, headers=csrf(s))
    await p.alarms.on_minute(record(at(1), s1_kg=100.0))
    for event in p.journal:
        await p.historian.record_alarm(event)
    await p.historian.record_delivery(DeliveryRecord(at(0), "mail", "s1_rate", "alarm",
                                                     "event", "sent", 1))
    await p.historian.record_delivery(DeliveryRecord(at(2), "sms", "s1_rate", "alarm",
                                                     "repeat", "failed", 3, "timeout"))
    anon = await new_client()
    # The journal is public, like the other reads; the ack's time is now, not 2024.
    q = "?from=2024-05-01T08:00:00%2B08:00&to=2024-05-01T00:05:00Z"
    rows = await call(anon, "GET", f"{p.base}/api/v1/alarms/journal{q}", 200)
    assert [(r["t"], r["cause"], r["state"], r["ack_state"]) for r in rows] == [
        ("2024-05-01T00:00:00Z", "condition", "alarm", "active-unacknowledged"),
        ("2024-05-01T00:01:00Z", "condition", "normal", "normal")]
    now = datetime.now(UTC)
    q2 = (f"?from={(now - timedelta(hours=1)).isoformat().replace('+00:00', 'Z')}"
          f"&to={(now + timedelta(hours=1)).isoformat().replace('+00:00', 'Z')}&rule=s1_rate")
    (ack,) = await call(anon, "GET", f"{p.base}/api/v1/alarms/journal{q2}", 200)
    assert (ack["cause"], ack["user"], ack["comment"]) == ("acknowledge", "operator", "seen")
    q3 = "?from=2024-05-01T00:00:00Z&to=2024-05-02T00:00:00Z&rule=other"
    assert await call(anon, "GET", f"{p.base}/api/v1/alarms/journal{q3}", 200) == []
    assert await call(anon, "GET", f"{p.base}/api/v1/alarms/journal", 400) == {
        "error": "query parameter 'from' is required (ISO 8601 with offset, e.g. "
                 "2026-11-21T00:00:00+08:00)"}
    long = "?from=2024-01-01T00:00:00Z&to=2025-06-01T00:00:00Z"
    assert await call(anon, "GET", f"{p.base}/api/v1/alarms/journal{long}", 400) == {
        "error": "at most 366 days of alarm journal per request"}

    day = "?from=2024-05-01T00:00:00Z&to=2024-05-02T00:00:00Z"
    assert await call(c, "GET", f"{p.base}/api/v1/deliveries{day}", 200) == [
        {"t": "2024-05-01T00:00:00Z", "channel": "mail", "rule": "s1_rate", "state": "alarm",
         "kind": "event", "outcome": "sent", "attempt": 1, "error": ""},
        {"t": "2024-05-01T00:02:00Z", "channel": "sms", "rule": "s1_rate", "state": "alarm",
         "kind": "repeat", "outcome": "failed", "attempt": 3, "error": "timeout"}]

    e = await new_client()
    await login(p, e, "engineer")
    q4 = q2.split("&rule")[0]
    entries = await call(e, "GET", f"{p.base}/api/v1/audit{q4}", 200)
    stored: list[AuditEntry] = p.audit.entries()
    assert [(x["seq"], x["user"], x["action"], x["target"], x["detail"]) for x in entries] == [
        (1, "operator", "login", "user:operator", {"remote": "127.0.0.1", "role": "operator"}),
        (2, "operator", "acknowledge", "alarm:s1_rate", {"comment": "seen"}),
        (3, "engineer", "login", "user:engineer", {"remote": "127.0.0.1", "role": "engineer"})]
    assert [(x["hash"], x["prev_hash"]) for x in entries] == [
        (x.hash, x.prev_hash) for x in stored]
    assert entries[0]["prev_hash"] == "0" * 64 and entries[1]["prev_hash"] == entries[0]["hash"]
    assert all(x["t"].endswith("Z") for x in entries)
    assert await call(e, "GET", f"{p.base}/api/v1/audit{day}", 200) == []


# ---------------------------------------------------------------------- TLS


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "web.crt", tmp_path / "web.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


async def test_https_and_secure_cookie(port: int, tmp_path: Path, users: UserStore) -> None:
    cert, key = self_signed(tmp_path)
    sink = WebSink(plant(port, tls_cert=str(cert), tls_key=str(key)), users=users)
    await sink.start()
    ctx = ssl.create_default_context(cafile=str(cert))
    try:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as c:
            base = f"https://127.0.0.1:{port}"
            async with c.post(f"{base}/api/v1/login", ssl=ctx,
                              json={"user": "viewer", "password": "demo-viewer"}) as r:
                assert r.status == 200
                cookie = r.headers["Set-Cookie"]
            attrs = [a.strip().lower() for a in cookie.split(";")]
            assert "secure" in attrs and "httponly" in attrs and "samesite=strict" in attrs
            async with c.get(f"{base}/api/v1/session", ssl=ctx) as r:
                assert r.status == 200 and (await r.json())["user"] == "viewer"
            # The origin check knows it is served over https.
            async with c.post(f"{base}/api/v1/logout", ssl=ctx,
                              headers={"Origin": f"http://127.0.0.1:{port}"}) as r:
                assert r.status == 403
            async with aiohttp.ClientSession() as plain:
                with pytest.raises(aiohttp.ClientError):
                    await plain.get(f"http://127.0.0.1:{port}/api/v1/site")
    finally:
        await sink.stop()


async def test_tls_files_that_do_not_work(port: int, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    (tmp_path / "other").mkdir()
    other_cert, _ = self_signed(tmp_path / "other")
    missing = tmp_path / "missing.key"
    cases = [
        (str(cert), str(missing), f"{missing}: web.tls_key: cannot read it: "
                                  "No such file or directory"),
        (str(key), str(key), f"{key}: web.tls_cert: not a PEM file with a CERTIFICATE"),
        (str(cert), str(cert), f"{cert}: web.tls_key: not a PEM file with a PRIVATE KEY"),
        (str(other_cert), str(key), f"{other_cert}: web.tls_cert / web.tls_key: "
                                    f"certificate and key {key} do not load together"),
    ]
    for c, k, message in cases:
        sink = WebSink(plant(port, tls_cert=c, tls_key=k))
        with pytest.raises(ConfigError) as err:
            await sink.start()
        assert str(err.value).startswith(message)
        with pytest.raises(RuntimeError):
            _ = sink.port  # nothing was started
