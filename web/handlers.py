"""The aiohttp application: REST API under /api/v1, the WebSocket /ws and the HMI page.

Reading live values, periods and the alarm journal needs no login (wall displays);
alarm actions, rule changes, deliveries and the audit log need a session of a high
enough role (web/auth.py), and every login, logout and alarm action is audited.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from model.errors import AlarmActionError, ConfigError, UnknownRuleError
from model.protocols import AlarmControl, Authenticator
from model.records import AuditRecord
from model.times import TimeRangeError, later_by
from web.admin import add_admin_routes
from web.assets import add_asset_routes
from web.auth import (
    SECURE_COOKIES,
    SESSIONS,
    THROTTLE,
    ApiError,
    AuditLogLike,
    LoginThrottle,
    Session,
    SessionStore,
    clear_session_cookie,
    csrf_middleware,
    current_session,
    require,
    set_session_cookie,
)
from web.boundaries import add_boundary_routes
from web.cases import add_case_routes
from web.collaborators import AlarmHistory, DeviceStatus, MinuteHistory, PeriodHistory
from web.devices import add_device_routes
from web.history import HistoryContext, add_history_routes
from web.hub import Client, Hub
from web.instruments import add_instrument_routes
from web.live import LiveState
from web.monitoring import add_monitoring_routes
from web.monitoring_plan_api import add_monitoring_plan_routes
from web.openapi import add_openapi_routes
from web.params import json_body, text_field
from web.params import parse_user_time as _parse_time
from web.params import span as _span
from web.performance import add_performance_routes
from web.records import add_record_routes
from web.reports import add_report_routes
from web.serialize import (
    Json,
    alarm_json,
    audit_entry_json,
    audit_record_json,
    delivery_json,
    dumps,
    iso_utc,
    row_json,
)
from web.uncertainty import add_uncertainty_routes

log = logging.getLogger(__name__)

STATIC_DIR: Final = Path(__file__).resolve().parent / "static"
API_PREFIX: Final = "/api/v1"

# Longest span one request may ask for, per level.
MAX_SPAN: Final = {"hours": timedelta(days=31), "days": timedelta(days=3660)}
MAX_LOG_SPAN: Final = timedelta(days=366)  # alarm journal, deliveries, audit log
MAX_LOG_ROWS: Final = 10_000
MAX_COMMENT: Final = 1000  # characters
MAX_NAME: Final = 64  # of a user name, as written to the audit log

_SECURITY_HEADERS: Final = {
    # Same-origin only: the control room has no network, and nothing may be loaded from outside.
    "Content-Security-Policy": (
        "default-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


LIVE: Final = web.AppKey("live", LiveState)
HUB: Final = web.AppKey("hub", Hub)
HISTORY: Final[web.AppKey[PeriodHistory | None]] = web.AppKey("history")
DEVICES: Final[web.AppKey[DeviceStatus | None]] = web.AppKey("devices")
USERS: Final[web.AppKey[Authenticator | None]] = web.AppKey("users")
AUDIT: Final[web.AppKey[AuditLogLike | None]] = web.AppKey("audit")
ALARMS: Final[web.AppKey[AlarmControl | None]] = web.AppKey("alarms")
JOURNAL: Final[web.AppKey[AlarmHistory | None]] = web.AppKey("journal")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str, headers: Mapping[str, str] | None = None,
           extra: Mapping[str, Any] | None = None) -> web.Response:
    return web.Response(text=dumps({"error": message, **(extra or {})}), status=status,
                        content_type="application/json", headers=headers)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=dumps(data), status=status, content_type="application/json")


@web.middleware
async def _errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """One error shape for clients; no traceback ever reaches them."""
    try:
        return await handler(request)
    except ApiError as exc:
        return _error(exc.status, exc.message, exc.headers, exc.extra)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return _error(exc.status, (exc.reason or "error").lower(), headers)
    except asyncio.CancelledError:
        raise
    except OSError as exc:
        # aiohttp's static files stat the name asked for: one longer than a file name can
        # be (ENAMETOOLONG) is no such file, not a fault of the server.
        if request.path.startswith("/static/") and exc.errno in (errno.ENAMETOOLONG,
                                                                  errno.EINVAL):
            return web.Response(status=404)
        log.exception("unhandled error in %s %s", request.method, request.path)
        return _error(500, "internal error")
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return _error(500, "internal error")


async def _close_websockets(app: web.Application) -> None:
    # on_shutdown runs after the listening socket is closed, so no client joins afterwards.
    await app[HUB].close_all()


async def _security_headers(_request: web.Request, response: web.StreamResponse) -> None:
    for name, value in _SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


# -- request parsing


def _object(body: Json, name: str) -> Json:
    """An object field of a request body (400 naming it if missing or not an object)."""
    value = body.get(name)
    if value is None:
        raise ApiError(400, f"'{name}' is required")
    if not isinstance(value, dict):
        raise ApiError(400, f"'{name}' must be an object")
    return value


# -- live values and stored periods


async def _get_sources(request: web.Request) -> web.Response:
    return _json(request.app[LIVE].sources_json())


async def _get_source(request: web.Request) -> web.Response:
    live = request.app[LIVE]
    source_id = request.match_info["id"]
    if not live.has_source(source_id):
        raise ApiError(404, f"unknown source {source_id!r}")
    return _json(live.source_json(source_id))


def _periods_handler(kind: str, level: str) -> Handler:
    """GET /api/v1/{kind}s/{id}/{level}?from=…&to=…: stored hours or days, oldest first."""
    async def handler(request: web.Request) -> web.Response:
        ident = request.match_info["id"]
        if not request.app[LIVE].has(kind, ident):
            raise ApiError(404, f"unknown {kind} {ident!r}")
        start, end = _span(request, MAX_SPAN[level], level)
        history = request.app[HISTORY]
        if history is None:
            raise ApiError(503, "no historian: stored hours and days are not available")
        rows = await history.period_rows(kind, level.removesuffix("s"), ident, start, end)
        return _json([period_json(r) for r in rows])
    return handler


# compute.periods.NOT_RUNNING (not imported: compute pulls in numba). A source's hour or day
# the server did not run for keeps HJ 212 flag B, which would read "communication failure".
_MISSING_TEXT: Final = {"not_running": {"zh": "服务器未运行", "en": "server not running"}}


def period_json(row: dict[str, Any]) -> dict[str, Any]:
    """A stored period row as JSON, with `missing_text` (zh and en) saying why a period
    without data has none when that is not its flag's meaning (None otherwise)."""
    out = row_json(row)
    if "missing_reason" in row:
        out["missing_text"] = _MISSING_TEXT.get(row["missing_reason"])
    return out


async def _get_allowance(request: web.Request) -> web.Response:
    # The same object /site embeds as "allowance": one answer to one question.
    return _json(request.app[LIVE].allowance_json())


async def _get_units(request: web.Request) -> web.Response:
    return _json(request.app[LIVE].units_json())


async def _get_site(request: web.Request) -> web.Response:
    return _json(request.app[LIVE].site_json())


async def _get_alarms(request: web.Request) -> web.Response:
    return _json(request.app[LIVE].alarms_json())


async def _get_devices(request: web.Request) -> web.Response:
    status = request.app[DEVICES]
    return _json({"buses": status() if status is not None else []})


# -- login


def _session_json(request: web.Request, session: Session) -> Json:
    sessions = request.app[SESSIONS]
    return {"user": session.user, "role": session.role, "csrf_token": session.csrf_token,
            "expires": iso_utc(sessions.expires(session)),
            "idle_timeout_s": sessions.idle_s}


def _no_store(response: web.Response) -> web.Response:
    response.headers["Cache-Control"] = "no-store"  # it holds the CSRF token
    return response


async def _login(request: web.Request) -> web.Response:
    users = request.app[USERS]
    if users is None:
        raise ApiError(503, "no user store")
    body = await json_body(request)
    name = text_field(body, "user", max_len=MAX_NAME, blank_ok=True)
    password = text_field(body, "password", max_len=1024, blank_ok=True)
    throttle, audit = request.app[THROTTLE], request.app[AUDIT]
    remote = request.remote or ""
    # Throttled per address and name; the password is checked in a worker thread.
    result = await throttle.check(users, audit, remote, name, password)
    wait = result.retry_after_s
    if wait is not None:
        what = f"for {name!r}" if result.refused_for == "name" else "from this address"
        raise ApiError(429, f"too many failed logins {what}: try again in {wait} s",
                       headers={"Retry-After": str(wait)})
    user = result.user
    if user is None:
        raise ApiError(401, "wrong user name or password")
    if audit is not None:
        await asyncio.to_thread(audit.append, user.name, "login", f"user:{user.name}",
                                {"remote": remote, "role": user.role})
    sessions = request.app[SESSIONS]
    previous = current_session(request, touch=False)
    if previous is not None:  # another user at the same browser: the old session ends
        sessions.delete(previous.token)
    session = sessions.create(user.name, user.role)
    log.info("web login: %s (%s) from %s", user.name, user.role, remote)
    response = _no_store(_json(_session_json(request, session)))
    set_session_cookie(request, response, session)
    return response


async def _logout(request: web.Request) -> web.Response:
    session = current_session(request)
    if session is not None:
        request.app[SESSIONS].delete(session.token)
        audit = request.app[AUDIT]
        if audit is not None:
            await asyncio.to_thread(audit.append, session.user, "logout",
                                    f"user:{session.user}", {"remote": request.remote or ""})
    response = _json({"user": None})
    clear_session_cookie(request, response)
    return response


async def _get_session(request: web.Request) -> web.Response:
    session = current_session(request)
    if session is None:
        raise ApiError(401, "not logged in")
    return _no_store(_json(_session_json(request, session)))


# -- alarm actions and rules


def _alarm_control(request: web.Request) -> AlarmControl:
    control = request.app[ALARMS]
    if control is None:
        raise ApiError(503, "no alarm engine")
    return control


def _shelve_until(body: Json) -> datetime:
    minutes, until = body.get("minutes"), body.get("until")
    if minutes is not None and until is not None:
        raise ApiError(400, "give 'minutes' or 'until', not both")
    if until is not None:
        if not isinstance(until, str):
            raise ApiError(400, "'until' must be a string (ISO 8601 with offset)")
        return _parse_time(until, "'until'")
    if minutes is None:
        raise ApiError(400, "'minutes' or 'until' is required")
    if isinstance(minutes, bool) or not isinstance(minutes, int | float):
        raise ApiError(400, "'minutes' must be a number")
    if not minutes > 0:
        raise ApiError(400, "'minutes' must be more than 0")
    try:
        duration = timedelta(minutes=minutes)
    except OverflowError:
        raise ApiError(400, f"'minutes' is too large: {minutes}") from None
    try:
        return later_by(datetime.now(UTC), duration, "'minutes'")
    except TimeRangeError as exc:
        raise ApiError(400, str(exc)) from None


AlarmAction = Callable[[AlarmControl, str, str, str, Json], AuditRecord]
_ALARM_ACTIONS: Final[dict[str, tuple[str, AlarmAction]]] = {
    "acknowledge": ("operator", lambda c, rule, user, comment, _b:
                    c.acknowledge(rule, user, comment)),
    "shelve": ("operator", lambda c, rule, user, comment, b:
               c.shelve(rule, user, comment, _shelve_until(b))),
    "unshelve": ("operator", lambda c, rule, user, comment, _b:
                 c.unshelve(rule, user, comment)),
    "out-of-service": ("engineer", lambda c, rule, user, comment, _b:
                       c.remove_from_service(rule, user, comment)),
    "return-to-service": ("engineer", lambda c, rule, user, comment, _b:
                          c.return_to_service(rule, user, comment)),
}


def _alarm_action_handler(needed: str, act: AlarmAction) -> Handler:
    """POST /api/v1/alarms/{rule}/<action> {"comment", …}: the audit record and the alarm
    as listed now (null once it is back to normal)."""
    async def handler(request: web.Request) -> web.Response:
        session = require(request, needed)
        control = _alarm_control(request)
        rule = request.match_info["rule"]
        body = await json_body(request)
        comment = text_field(body, "comment", max_len=MAX_COMMENT)
        try:
            rec = act(control, rule, session.user, comment, body)
        except UnknownRuleError:
            raise ApiError(404, f"unknown alarm rule {rule!r}") from None
        except AlarmActionError as exc:
            raise ApiError(409, str(exc)) from None
        audit = request.app[AUDIT]
        if audit is not None:
            try:
                await asyncio.to_thread(audit.append_record, rec)
            except Exception:
                log.error("audit log write failed for %s", rec)  # the action itself is done
                raise
        now = next((e for e in control.alarm_list() if e.rule == rule), None)
        return _json({"audit": audit_record_json(rec),
                      "alarm": request.app[LIVE].alarm_row_json(request.app[LIVE].display(now))
                      if now is not None else None})
    return handler


def _change_rules(request: web.Request, control: AlarmControl, rules: list[Json],
                  session: Session, comment: str) -> list[Json]:
    try:
        return control.change_rules(rules, session.user, comment)
    except ConfigError as exc:
        first = "; ".join(f"{path}: {problem}" for path, problem in exc.problems[:3])
        more = f" (and {len(exc.problems) - 3} more)" if len(exc.problems) > 3 else ""
        raise ApiError(400, f"alarm rules not changed: {first}{more}", extra={
            "problems": [{"path": p, "problem": q} for p, q in exc.problems]}) from None
    except AlarmActionError as exc:
        raise ApiError(409, str(exc)) from None


def _rule_index(rules: list[Json], rule_id: str) -> int:
    for i, r in enumerate(rules):
        if r.get("id") == rule_id:
            return i
    raise ApiError(404, f"unknown alarm rule {rule_id!r}")


async def _get_rules(request: web.Request) -> web.Response:
    require(request, "viewer")
    return _json(_alarm_control(request).rules_config())


async def _put_rules(request: web.Request) -> web.Response:
    session = require(request, "engineer")
    control = _alarm_control(request)
    body = await json_body(request)
    rules = body.get("rules")
    if rules is None:
        raise ApiError(400, "'rules' is required")
    if not isinstance(rules, list):
        raise ApiError(400, "'rules' must be a list")
    for i, r in enumerate(rules):
        if not isinstance(r, dict):
            raise ApiError(400, f"'rules[{i}]' must be an object")
    comment = text_field(body, "comment", max_len=MAX_COMMENT)
    return _json(_change_rules(request, control, rules, session, comment))


async def _put_rule(request: web.Request) -> web.Response:
    session = require(request, "engineer")
    control = _alarm_control(request)
    rule_id = request.match_info["id"]
    body = await json_body(request)
    rule = _object(body, "rule")
    comment = text_field(body, "comment", max_len=MAX_COMMENT)
    if rule.setdefault("id", rule_id) != rule_id:
        raise ApiError(400, f"'rule.id' is {rule['id']!r} but the address names {rule_id!r}")
    # No await from reading the rules to changing them: no other change comes between.
    rules = list(control.rules_config())
    rules[_rule_index(rules, rule_id)] = rule
    return _json(_change_rules(request, control, rules, session, comment))


async def _post_rule(request: web.Request) -> web.Response:
    session = require(request, "engineer")
    control = _alarm_control(request)
    body = await json_body(request)
    rule = _object(body, "rule")
    comment = text_field(body, "comment", max_len=MAX_COMMENT)
    rule_id = rule.get("id")
    if not isinstance(rule_id, str) or not rule_id.strip():
        raise ApiError(400, "'rule.id' is required (a string)")
    rules = list(control.rules_config())
    if any(r.get("id") == rule_id for r in rules):
        raise ApiError(409, f"alarm rule {rule_id!r} already exists")
    return _json(_change_rules(request, control, [*rules, rule], session, comment), 201)


async def _delete_rule(request: web.Request) -> web.Response:
    session = require(request, "engineer")
    control = _alarm_control(request)
    rule_id = request.match_info["id"]
    comment = text_field(await json_body(request), "comment", max_len=MAX_COMMENT)
    rules = list(control.rules_config())
    del rules[_rule_index(rules, rule_id)]
    return _json(_change_rules(request, control, rules, session, comment))


# -- logs


def _journal(request: web.Request) -> AlarmHistory:
    journal = request.app[JOURNAL]
    if journal is None:
        raise ApiError(503, "no historian: the alarm journal and delivery log are not "
                            "available")
    return journal


async def _get_journal(request: web.Request) -> web.Response:
    start, end = _span(request, MAX_LOG_SPAN, "alarm journal")
    rule = request.query.get("rule") or None
    events = await _journal(request).alarm_journal(start, end, rule, MAX_LOG_ROWS)
    return _json([alarm_json(e) for e in events])


async def _get_deliveries(request: web.Request) -> web.Response:
    require(request, "operator")
    start, end = _span(request, MAX_LOG_SPAN, "deliveries")
    rows = await _journal(request).deliveries(start, end, MAX_LOG_ROWS)
    return _json([delivery_json(r) for r in rows])


async def _get_audit(request: web.Request) -> web.Response:
    require(request, "engineer")
    start, end = _span(request, MAX_LOG_SPAN, "audit log")
    audit = request.app[AUDIT]
    if audit is None:
        raise ApiError(503, "no audit log")
    entries = await asyncio.to_thread(audit.entries, start, end, MAX_LOG_ROWS)
    return _json([audit_entry_json(e) for e in entries])


# -- page and WebSocket


async def _index(_request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


async def _websocket(request: web.Request) -> web.WebSocketResponse:
    hub = request.app[HUB]
    # The HMI only listens; tiny inbound limit. Heartbeat finds half-open connections.
    ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=4096, timeout=2.0)
    await ws.prepare(request)
    peer = request.remote or "?"
    client = Client(ws, request.transport, peer, asyncio.Queue(hub.queue_size))
    # No await between the snapshot and joining: no minute is lost or sent twice.
    hub.join(client, dumps(request.app[LIVE].snapshot()))
    try:
        async for _msg in ws:
            pass  # read-only: whatever a client sends is ignored
    finally:
        await hub.leave(client)
    return ws


def build_app(live: LiveState, hub: Hub, history: PeriodHistory | None = None,
              devices: DeviceStatus | None = None, *, sessions: SessionStore | None = None,
              throttle: LoginThrottle | None = None, users: Authenticator | None = None,
              audit: AuditLogLike | None = None, alarms: AlarmControl | None = None,
              journal: AlarmHistory | None = None, minutes: MinuteHistory | None = None,
              secure_cookies: bool = False) -> web.Application:
    """The aiohttp application serving `live`, `history` and the logged-in actions.

    Stored minutes come from `minutes`, or from `history` when it serves them too (the
    historian does).
    """
    if minutes is None and isinstance(history, MinuteHistory):
        minutes = history
    web_cfg = live.config.web
    app = web.Application(middlewares=[_errors_middleware, csrf_middleware],
                          client_max_size=64 * 1024)
    app[LIVE] = live
    app[HUB] = hub
    app[HISTORY] = history
    app[DEVICES] = devices
    if sessions is None:
        sessions = SessionStore(timedelta(minutes=web_cfg.session_idle_min),
                                timedelta(hours=web_cfg.session_max_h))
    app[SESSIONS] = sessions
    app[THROTTLE] = throttle if throttle is not None else LoginThrottle()
    app[SECURE_COOKIES] = secure_cookies
    app[USERS] = users
    app[AUDIT] = audit
    app[ALARMS] = alarms
    app[JOURNAL] = journal
    app.on_response_prepare.append(_security_headers)
    app.on_shutdown.append(_close_websockets)
    api = API_PREFIX
    app.router.add_get("/", _index)
    app.router.add_get(f"{api}/sources", _get_sources)
    app.router.add_get(f"{api}/sources/{{id}}", _get_source)
    app.router.add_get(f"{api}/units", _get_units)
    app.router.add_get(f"{api}/site", _get_site)
    app.router.add_get(f"{api}/alarms", _get_alarms)
    app.router.add_get(f"{api}/allowance", _get_allowance)
    app.router.add_get(f"{api}/devices", _get_devices)
    add_device_routes(app, api)  # /api/v1/devices/{id}/tags: raw readings
    add_instrument_routes(app, api, live.config)  # /api/v1/instruments: the register
    add_uncertainty_routes(app, api, live.config, history)  # /api/v1/uncertainty: totals
    add_boundary_routes(app, api, live.config, history)  # /api/v1/boundaries: the tree
    add_record_routes(app, api)  # /api/v1/entries, locks, qa, revisions
    add_asset_routes(app, api)  # /api/v1/carbon/…: position, trend, ledger
    add_case_routes(app, api)  # /api/v1/cases: the abnormal-data case ledger
    add_performance_routes(app, api)  # /api/v1/performance: baseline, targets, benchmarks
    add_monitoring_plan_routes(app, api)  # /api/v1/monitoring-plan: plan, conformity
    add_report_routes(app, api)  # /api/v1/reports/{kind}: report files
    for kind in ("source", "unit", "stream"):
        for level in ("hours", "days"):
            app.router.add_get(f"{api}/{kind}s/{{id}}/{level}", _periods_handler(kind, level))
    add_history_routes(app, HistoryContext(live, minutes, history), api)
    add_openapi_routes(app, api)  # /api/v1/openapi.json and /api/v1/docs
    app.router.add_post(f"{api}/login", _login)
    app.router.add_post(f"{api}/logout", _logout)
    app.router.add_get(f"{api}/session", _get_session)
    app.router.add_get(f"{api}/alarms/journal", _get_journal)
    for action, (needed, act) in _ALARM_ACTIONS.items():
        app.router.add_post(f"{api}/alarms/{{rule}}/{action}",
                            _alarm_action_handler(needed, act))
    app.router.add_get(f"{api}/alarm-rules", _get_rules)
    app.router.add_put(f"{api}/alarm-rules", _put_rules)
    app.router.add_post(f"{api}/alarm-rules", _post_rule)
    app.router.add_put(f"{api}/alarm-rules/{{id}}", _put_rule)
    app.router.add_delete(f"{api}/alarm-rules/{{id}}", _delete_rule)
    app.router.add_get(f"{api}/deliveries", _get_deliveries)
    app.router.add_get(f"{api}/audit", _get_audit)
    add_admin_routes(app, api, USERS, AUDIT)  # /api/v1/users: accounts, for admins
    app.router.add_get("/ws", _websocket)
    add_monitoring_routes(app)  # /metrics, /health, /ready
    app.router.add_static("/static/", STATIC_DIR)
    return app
