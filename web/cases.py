"""Abnormal-data cases over HTTP (the case ledger of server/cases.py).

- GET  /api/v1/cases[?state=open|closed|overdue]   every case, oldest first
- GET  /api/v1/cases/{id}                          one case with its full history
- POST /api/v1/cases                               open a case (operator); 201
- POST /api/v1/cases/{id}/events                   action (operator), assign, review,
                                                   close, reopen (engineer); 201

The case keeper checks, keeps and audits; this module only speaks HTTP. Reading needs no
login, like the rest of the API; a refused event is a 400 naming the field, an unknown
case a 404.
"""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from model.errors import InvalidValueError
from web.auth import ApiError, require
from web.collaborators import CaseLedger
from web.params import json_body
from web.serialize import dumps

CASES: Final[web.AppKey[CaseLedger | None]] = web.AppKey("cases")

OPEN_ROLE: Final = "operator"  # who may open a case
ROLE_OF_EVENT: Final = {"action": "operator", "assign": "engineer", "review": "engineer",
                        "close": "engineer", "reopen": "engineer"}
LEAST_ROLE: Final = "operator"  # the lowest of ROLE_OF_EVENT's
STATES: Final = ("open", "closed", "overdue")
MAX_CASE_ID: Final = 2**62


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=dumps(data), status=status, content_type="application/json")


def _keeper(request: web.Request) -> CaseLedger:
    keeper = request.app.get(CASES)
    if keeper is None:
        raise ApiError(503, "this server keeps no cases (no case keeper)")
    return keeper


def _case_id(request: web.Request) -> int:
    text = request.match_info["id"]
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_CASE_ID:
        shown = text if len(text) <= 20 else text[:20] + "…"
        raise ApiError(400, f"case id must be a whole number from 1, not {shown!r}")
    return int(text)


async def _record(keeper: CaseLedger, user: str, body: dict[str, Any]) -> web.Response:
    try:
        return _json(await keeper.record(user, body), status=201)
    except LookupError as exc:  # no such case (server/cases.py UnknownCaseError)
        raise ApiError(404, str(exc)) from None
    except InvalidValueError as exc:
        raise ApiError(400, str(exc)) from None


async def _get_cases(request: web.Request) -> web.Response:
    keeper = _keeper(request)
    state = request.query.get("state")
    if state is not None and state not in STATES:
        raise ApiError(400, f"'state' must be one of {', '.join(STATES)}, not {state[:40]!r}")
    return _json(keeper.cases(state))


async def _get_case(request: web.Request) -> web.Response:
    keeper = _keeper(request)
    case_id = _case_id(request)
    case = keeper.case(case_id)
    if case is None:
        raise ApiError(404, f"there is no case {case_id}")
    return _json(case)


async def _open_case(request: web.Request) -> web.Response:
    keeper = _keeper(request)
    session = require(request, OPEN_ROLE)  # before the body is read
    body = await json_body(request)
    event = body.get("event", "open")
    if event != "open":
        raise ApiError(400, f"'event' must be open here (other events go to "
                            f"/cases/{{id}}/events), not {str(event)[:40]!r}")
    return await _record(keeper, session.user, {**body, "event": "open"})


async def _post_event(request: web.Request) -> web.Response:
    keeper = _keeper(request)
    require(request, LEAST_ROLE)  # who may post at all, before the body is read
    case_id = _case_id(request)
    body = await json_body(request)
    event = body.get("event")
    if event not in ROLE_OF_EVENT:
        raise ApiError(400, f"'event' must be one of {', '.join(ROLE_OF_EVENT)}, not "
                            f"{str(event)[:40]!r}")
    if "case" in body and body["case"] != case_id:
        raise ApiError(400, f"'case' {str(body['case'])[:20]!r} is not the case of the "
                            f"path ({case_id})")
    session = require(request, ROLE_OF_EVENT[str(event)])
    return await _record(keeper, session.user, {**body, "case": case_id})


def add_case_routes(app: web.Application, api: str) -> None:
    """Add the case-ledger routes under `api`."""
    app.router.add_get(f"{api}/cases", _get_cases)
    app.router.add_post(f"{api}/cases", _open_case)
    app.router.add_get(f"{api}/cases/{{id}}", _get_case)
    app.router.add_post(f"{api}/cases/{{id}}/events", _post_event)
