"""The case ledger over HTTP (web/cases.py, issue 18) on a real web sink on loopback with a
real historian, audit log, user store and case keeper: roles (401 without a session, 403
below the event's role), 400 naming the field, 404 for an unknown case, the listing by
state, and 503 without a keeper."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from model.records import PeriodRecords
from server.audit import AuditLog, verify
from server.config import parse_plant
from server.historian import Historian
from server.users import UserStore
from tests.fixtures.plant import plant_dict
from tests.server.test_cases import DUE, HOUR, REF, FixedKeeper, substituted_hour
from tests.web.test_auth import Client, NewClient, call, csrf
from tests.web.test_auth import new_client as new_client  # the fixture
from tests.web.test_auth import users as users  # the fixture
from web.app import WebSink


@dataclass
class Site:
    """A running web sink with a case keeper."""

    sink: WebSink
    keeper: FixedKeeper
    path: Path

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.sink.port}/api/v1"


@pytest.fixture
async def site(port: int, tmp_path: Path, users: UserStore) -> AsyncIterator[Site]:
    plant = parse_plant(plant_dict(web_port=port, var_dir=str(tmp_path)), "test_cases")
    path = Path(plant.config.historian.path)
    historian = Historian(path)
    await historian.start()
    await historian.on_period(PeriodRecords("hour", HOUR, HOUR + timedelta(hours=1),
                                            (substituted_hour(),), (), ()))
    audit = AuditLog(path)
    keeper = FixedKeeper(path, historian, audit)
    await keeper.load()
    sink = WebSink(plant.config, users=users, audit=audit, journal=historian, cases=keeper)
    await sink.start()
    try:
        yield Site(sink, keeper, path)
    finally:
        await sink.stop()
        await historian.stop()


async def login(c: Client, api: str, role: str) -> dict[str, str]:
    s = await call(c, "POST", f"{api}/login", 200,
                   body={"user": role, "password": f"demo-{role}"})
    return csrf(s)


OPEN: dict[str, Any] = {"subject": {"kind": "period", "ref": REF},
                        "title": "S1 08:00 substituted", "due": DUE}


async def test_a_case_over_http(site: Site, new_client: NewClient) -> None:
    op, eng, viewer, anon = [await new_client() for _ in range(4)]
    h_op = await login(op, site.api, "operator")
    h_eng = await login(eng, site.api, "engineer")
    h_view = await login(viewer, site.api, "viewer")
    # who may open: 401 without a session (whatever the body), 403 for a viewer
    err = await call(anon, "POST", f"{site.api}/cases", 401, raw=b"{not json",
                     headers={"Content-Type": "application/json"})
    assert err["error"] == "not logged in"
    err = await call(viewer, "POST", f"{site.api}/cases", 403, body=OPEN, headers=h_view)
    assert "needs the operator role" in err["error"]
    # 400 naming the field
    err = await call(op, "POST", f"{site.api}/cases", 400,
                     body={**OPEN, "due": "2026-03-01T09:00:00Z"}, headers=h_op)
    assert err["error"].startswith("case open: due: 2026-03-01T09:00:00+00:00 is not after")
    err = await call(op, "POST", f"{site.api}/cases", 400,
                     body={**OPEN, "subject": {"kind": "period", "ref": "source_hour:S9:"
                                                                         "2026-03-01T08:00Z"}},
                     headers=h_op)
    assert err["error"] == ("case open: subject.ref: no stored source_hour row of S9 at "
                            "2026-03-01T08:00:00+00:00")
    err = await call(op, "POST", f"{site.api}/cases", 400,
                     body={**OPEN, "event": "close"}, headers=h_op)
    assert "'event' must be open here" in err["error"]

    got = (await call(op, "POST", f"{site.api}/cases", 201, body=OPEN, headers=h_op))["case"]
    assert (got["id"], got["owner"], got["subject"]["found"]["flag"]) == (1, "operator", "D")
    ev = f"{site.api}/cases/1/events"
    # an action is the operator's; assign, review and close the engineer's
    await call(op, "POST", ev, 201, body={"event": "action", "note": "re-spanned"},
               headers=h_op)
    err = await call(op, "POST", ev, 403, body={"event": "review", "finding": "accepted"},
                     headers=h_op)
    assert "needs the engineer role" in err["error"]
    err = await call(viewer, "POST", ev, 403, body={"event": "action", "note": "x"},
                     headers=h_view)
    assert "needs the operator role" in err["error"]
    await call(anon, "POST", ev, 401, body={"event": "action", "note": "x"})
    err = await call(eng, "POST", ev, 400, body={"event": "close", "note": "done"},
                     headers=h_eng)
    assert "case 1 close: review: the case has no review" in err["error"]
    err = await call(eng, "POST", ev, 400, body={"event": "review", "finding": "returned"},
                     headers=h_eng)
    assert err["error"] == "case 1 review: reason: a returned review needs the reason"
    err = await call(eng, "POST", ev, 400, body={"event": "open", **OPEN}, headers=h_eng)
    assert "'event' must be one of action, assign, review, close, reopen" in err["error"]
    err = await call(eng, "POST", ev, 400, body={"event": "action", "case": 2, "note": "x"},
                     headers=h_eng)
    assert "'case' '2' is not the case of the path (1)" in err["error"]
    err = await call(op, "POST", ev, 400, body={"event": "action"}, headers=h_op)
    assert err["error"] == "case action: note: Field required"
    await call(eng, "POST", ev, 201, body={"event": "review", "finding": "accepted"},
               headers=h_eng)
    got = (await call(eng, "POST", ev, 201, body={"event": "close", "note": "ok"},
                      headers=h_eng))["case"]
    assert got["state"] == "closed"
    assert [e["event"] for e in got["history"]] == ["open", "action", "review", "close"]

    # reading needs no login
    assert await call(anon, "GET", f"{site.api}/cases/1", 200) == got
    assert [c["id"] for c in await call(anon, "GET", f"{site.api}/cases?state=closed",
                                        200)] == [1]
    assert await call(anon, "GET", f"{site.api}/cases?state=open", 200) == []
    assert await call(anon, "GET", f"{site.api}/cases?state=overdue", 200) == []
    err = await call(anon, "GET", f"{site.api}/cases?state=late", 400)
    assert err["error"] == "'state' must be one of open, closed, overdue, not 'late'"
    err = await call(anon, "GET", f"{site.api}/cases/9", 404)
    assert err["error"] == "there is no case 9"
    err = await call(anon, "GET", f"{site.api}/cases/x1", 400)
    assert "case id must be a whole number" in err["error"]
    err = await call(eng, "POST", f"{site.api}/cases/9/events", 404,
                     body={"event": "action", "note": "x"}, headers=h_eng)
    assert err["error"] == "case action: case: there is no case 9"
    # every step audited by the user who made it
    v = verify(site.path)
    assert v.ok and v.entries >= 4
    acts = [(e.action, e.user) for e in AuditLog(site.path).entries()
            if e.action.startswith("case_")]
    assert acts == [("case_open", "operator"), ("case_action", "operator"),
                    ("case_review", "engineer"), ("case_close", "engineer")]


async def test_without_a_keeper_503(port: int, tmp_path: Path, new_client: NewClient) -> None:
    plant = parse_plant(plant_dict(web_port=port, var_dir=str(tmp_path)), "test_cases")
    sink = WebSink(plant.config)
    await sink.start()
    try:
        c = await new_client()
        err = await call(c, "GET", f"http://127.0.0.1:{sink.port}/api/v1/cases", 503)
        assert err["error"] == "this server keeps no cases (no case keeper)"
    finally:
        await sink.stop()


async def test_the_runtime_serves_and_keeps_cases(tmp_path: Path, new_client: NewClient
                                                  ) -> None:
    """Wired into server/runtime.py: opened over the server's own HTTP, kept across a
    restart (the state derives from the stored events)."""
    from server import runtime as rt
    from tests.conftest import free_port

    web_port = free_port()
    d = plant_dict(free_port(), opcua_port=free_port(), web_port=web_port,
                   var_dir=str(tmp_path / "var"))
    runtime = rt.Runtime(parse_plant(d, "test"))
    await runtime.start()
    api = f"http://127.0.0.1:{web_port}/api/v1"
    try:
        runtime.users.ensure_demo_users()
        c = await new_client()
        h = await login(c, api, "operator")
        body = {"subject": {"kind": "other", "ref": "S1 analyser cabinet"},
                "title": "cabinet door found open", "due": "2100-01-01T00:00:00Z"}
        got = (await call(c, "POST", f"{api}/cases", 201, body=body, headers=h))["case"]
        assert (got["id"], got["state"], got["opened_by"]) == (1, "open", "operator")
    finally:
        await runtime.stop()
    again = rt.Runtime(parse_plant(d, "test"))
    await again.cases.load()
    assert [(x["id"], x["title"], x["state"]) for x in again.cases.cases("open")] == [
        (1, "cabinet door found open", "open")]
