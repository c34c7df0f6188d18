"""Web sink: REST API under /api/v1, live WebSocket /ws and the static control-room HMI.

The sink keeps the latest minute of every source and unit, the site totals and the
listed alarms, serves them as JSON and pushes every new minute and alarm to connected
WebSocket clients. Each client has its own bounded queue and sender task, so a slow or
dead client is dropped without delaying the minute cycle or the other clients.

Reading live values, periods and the alarm journal needs no login (wall displays);
alarm actions, rule changes, deliveries and the audit log need a session of a high
enough role (web/auth.py), and every login, logout and alarm action is audited.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import ssl
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Protocol

from aiohttp import WSCloseCode, web

from model.errors import AlarmActionError, ConfigError, UnknownRuleError
from model.protocols import AlarmControl, Authenticator
from model.records import (
    AlarmEvent,
    AllowancePosition,
    AuditRecord,
    DeliveryRecord,
    MinuteResult,
    PeriodRecords,
    Sample,
    SiteMinute,
    SourceMinute,
    UnitMinute,
)
from server.config import PlantConfig
from web.auth import (
    SECURE_COOKIES,
    SESSIONS,
    THROTTLE,
    ApiError,
    AuditEntryLike,
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

log = logging.getLogger(__name__)

STATIC_DIR: Final = Path(__file__).resolve().parent / "static"
API_PREFIX: Final = "/api/v1"

Json = dict[str, Any]

SOURCE_FIELDS: Final = (
    "flow_act_m3_h", "flow_std_dry_m3_h", "co2_dry_pct", "co2_mg_m3", "co2_rate_kg_h",
    "co2_rate_t_h", "co2_kg", "co2_hour_t", "co2_today_t", "co2_ytd_t",
)
UNIT_FIELDS: Final = (
    "output_mwh", "co2_kg", "intensity_t_mwh", "co2_today_t", "output_today_mwh",
    "intensity_today_t_mwh", "co2_ytd_t",
)
SITE_FIELDS: Final = (
    "co2_kg", "co2_today_t", "co2_ytd_t", "allowance_annual_t", "allowance_used_pct",
    "allowance_headroom_t",
)
_SEVERITY: Final = {"alarm": 0, "warning": 1}
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


# --------------------------------------------------------------------------- JSON


def dumps(obj: Any) -> str:
    """Encode JSON for clients; refuses NaN/Infinity, which the serializers turn into null."""
    return json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def iso_utc(t: datetime | None) -> str | None:
    """ISO 8601 UTC with a "Z" suffix (milliseconds only when the time has them)."""
    if t is None:
        return None
    spec = "milliseconds" if t.microsecond else "seconds"
    return t.astimezone(UTC).replace(tzinfo=None).isoformat(timespec=spec) + "Z"


def num(x: float | None) -> float | None:
    """A finite float, or None for missing, NaN and infinite values (JSON null)."""
    if x is None or not math.isfinite(x):
        return None
    return float(x)


def alarm_json(event: AlarmEvent) -> Json:
    """JSON form of an alarm event."""
    return {
        "rule": event.rule,
        "t": iso_utc(event.t),
        "state": event.state,
        "previous": event.previous,
        "value": num(event.value),
        "limit": num(event.limit),
        "target": event.target,
        "message": event.message,
        "message_zh": event.message_zh,
        "ack_state": event.ack_state,
        "previous_ack_state": event.previous_ack_state,
        "cause": event.cause,
        "kind": event.kind,
        "area": event.area,
        "user": event.user,
        "comment": event.comment,
        "shelved_until": iso_utc(event.shelved_until),
    }


def listed(event: AlarmEvent) -> bool:
    """Whether the HMI lists the alarm: every ISA-18.2 state but normal.

    Returned-unacknowledged, shelved, suppressed and out-of-service stay listed. An
    event without an ISA-18.2 state is listed while its condition is not normal.
    """
    if event.ack_state:
        return event.ack_state != "normal"
    return event.state != "normal"


def audit_record_json(rec: AuditRecord) -> Json:
    """JSON form of an alarm action's audit record."""
    return {"t": iso_utc(rec.t), "user": rec.user, "action": rec.action, "rule": rec.rule,
            "comment": rec.comment, "until": iso_utc(rec.until)}


def delivery_json(rec: DeliveryRecord) -> Json:
    """JSON form of one line of the notification delivery log."""
    return {"t": iso_utc(rec.t), "channel": rec.channel, "rule": rec.rule, "state": rec.state,
            "kind": rec.kind, "outcome": rec.outcome, "attempt": rec.attempt,
            "error": rec.error}


def audit_entry_json(entry: AuditEntryLike) -> Json:
    """JSON form of one audit log entry."""
    return {"seq": entry.seq, "t": iso_utc(entry.t), "user": entry.user,
            "action": entry.action, "target": entry.target,
            "detail": dict(entry.detail) if entry.detail is not None else None,
            "prev_hash": entry.prev_hash, "hash": entry.hash}


@dataclass(frozen=True, slots=True)
class _Meta:
    """Display identity of a source or unit, taken from the configuration."""

    id: str
    name: str
    name_zh: str
    unit: str = ""  # the unit a source belongs to
    sources: tuple[str, ...] = ()  # the sources of a unit


class PeriodHistory(Protocol):
    """Where stored hours and days come from (the historian)."""

    async def period_rows(self, kind: str, level: str, ident: str, start: datetime,
                          end: datetime) -> list[dict[str, Any]]:
        """Stored rows of one source, stream or unit with start ≤ t < end, oldest first."""
        ...


class AlarmHistory(Protocol):
    """Where the alarm journal and the notification delivery log come from (historian)."""

    async def alarm_journal(self, start: datetime, end: datetime, rule: str | None = None,
                            limit: int = 10_000) -> list[AlarmEvent]:
        """Alarm events with start ≤ t < end, oldest first."""
        ...

    async def deliveries(self, start: datetime, end: datetime,
                         limit: int = 10_000) -> list[DeliveryRecord]:
        """Delivery log lines with start ≤ t < end, oldest first."""
        ...


def row_json(row: dict[str, Any]) -> Json:
    """JSON form of a stored hour or day row: ISO times, null for missing numbers."""
    out: Json = {}
    for key, value in row.items():
        if isinstance(value, datetime):
            out[key] = iso_utc(value)
        elif isinstance(value, float):
            out[key] = num(value)
        else:
            out[key] = value
    return out


def allowance_json(t: datetime | None, pos: AllowancePosition | None) -> Json:
    """JSON form of the allowance position at `t` (nulls before the first closed hour)."""
    fields = {k: num(v) for k, v in asdict(pos).items()} if pos is not None else {}
    return {"t": iso_utc(t), **fields}


class LiveState:
    """The latest minute of every source and unit, the site totals and the active alarms."""

    def __init__(self, config: PlantConfig) -> None:
        self.config = config
        self._source_meta = {
            s.id: _Meta(s.id, s.name, s.name_zh, unit=u.id) for u, s in config.sources()
        }
        self._unit_meta = {
            u.id: _Meta(u.id, u.name, u.name_zh, sources=tuple(s.id for s in u.sources))
            for u in config.units
        }
        self._sources: dict[str, SourceMinute] = {}
        self._units: dict[str, UnitMinute] = {}
        self._site: SiteMinute | None = None
        self._alarms: dict[str, AlarmEvent] = {}
        self._condition_text: dict[str, tuple[str, str]] = {}  # rule → what is wrong (en, zh)
        self.t: datetime | None = None
        self.streams = {s.id for _, s in config.streams()}
        self.allowance: tuple[datetime, AllowancePosition] | None = None  # at an hour's end

    # -- updates

    def update(self, result: MinuteResult) -> None:
        """Take a minute result as the latest values."""
        for s in result.sources:
            self._sources[s.source] = s
        for u in result.units:
            self._units[u.unit] = u
        self._site = result.site
        self.t = result.t

    def update_period(self, records: PeriodRecords) -> None:
        """Take a closed hour's allowance position as the latest (not an older one)."""
        if records.allowance is not None and (
                self.allowance is None or records.t_end >= self.allowance[0]):
            self.allowance = (records.t_end, records.allowance)

    def set_alarms(self, events: Iterable[AlarmEvent]) -> None:
        """Replace the listed alarms (events whose ISA-18.2 state is not normal)."""
        self._alarms = {e.rule: e for e in events if listed(e)}

    def display(self, event: AlarmEvent) -> AlarmEvent:
        """The event as its row shows it: after an operator's action (acknowledge,
        shelve …) the row keeps saying what is wrong; `user` and `comment` say who did what."""
        said = self._condition_text.get(event.rule)
        if event.cause == "condition" or said is None:
            return event
        return dataclasses.replace(event, message=said[0], message_zh=said[1])

    def apply_alarm(self, event: AlarmEvent) -> AlarmEvent:
        """Record an alarm transition (back to the normal state clears the rule); the
        event as the row shows it."""
        if event.cause == "condition":
            self._condition_text[event.rule] = (event.message, event.message_zh)
        event = self.display(event)
        if listed(event):
            self._alarms[event.rule] = event
        else:
            self._condition_text.pop(event.rule, None)
            self._alarms.pop(event.rule, None)
        return event

    # -- views

    def has_source(self, source_id: str) -> bool:
        """Whether the source is configured."""
        return source_id in self._source_meta

    def has(self, kind: str, ident: str) -> bool:
        """Whether a source, unit or stream of that id is configured."""
        known = {"source": self._source_meta, "unit": self._unit_meta, "stream": self.streams}
        return ident in known[kind]

    def source_json(self, source_id: str) -> Json:
        """Latest values of one source (nulls before its first minute)."""
        rec = self._sources.get(source_id)
        meta = self._source_meta[source_id]
        out: Json = {"id": meta.id, "name": meta.name, "name_zh": meta.name_zh,
                     "unit": meta.unit, "t": iso_utc(rec.t) if rec else None}
        for name in SOURCE_FIELDS:
            out[name] = num(getattr(rec, name)) if rec else None
        out["valid"] = rec.valid if rec else None
        out["flag"] = rec.flag.name if rec else None
        return out

    def sources_json(self) -> list[Json]:
        """Latest values of every configured source, in configuration order."""
        return [self.source_json(i) for i in self._source_meta]

    def unit_json(self, unit_id: str) -> Json:
        """Latest values of one unit (nulls before its first minute)."""
        rec = self._units.get(unit_id)
        meta = self._unit_meta[unit_id]
        out: Json = {"id": meta.id, "name": meta.name, "name_zh": meta.name_zh,
                     "sources": list(meta.sources), "t": iso_utc(rec.t) if rec else None}
        for name in UNIT_FIELDS:
            out[name] = num(getattr(rec, name)) if rec else None
        out["valid"] = rec.valid if rec else None
        out["flag"] = rec.flag.name if rec else None
        return out

    def units_json(self) -> list[Json]:
        """Latest values of every configured unit, in configuration order."""
        return [self.unit_json(i) for i in self._unit_meta]

    def site_json(self) -> Json:
        """Site identity, local time zone and the latest totals and allowance position."""
        cfg = self.config
        site = self._site
        out: Json = {
            "id": cfg.site.id, "name": cfg.site.name, "name_zh": cfg.site.name_zh,
            "timezone": cfg.site.timezone, "minute_seconds": cfg.clock.minute_seconds,
            "t": iso_utc(site.t) if site else None,
        }
        for name in SITE_FIELDS:
            out[name] = num(getattr(site, name)) if site else None
        if site is None:
            out["allowance_annual_t"] = num(cfg.allowance.annual_t)
        return out

    def alarms_json(self) -> list[Json]:
        """Listed alarms: alarms, then warnings, then returned ones; newest first in each."""
        events = sorted(self._alarms.values(), key=lambda e: e.t, reverse=True)
        events.sort(key=lambda e: _SEVERITY.get(e.state, 2))
        return [alarm_json(e) for e in events]

    def snapshot(self) -> Json:
        """Everything a newly connected HMI needs."""
        return {
            "type": "snapshot", "server_time": iso_utc(datetime.now(UTC)),
            "t": iso_utc(self.t), "site": self.site_json(), "units": self.units_json(),
            "sources": self.sources_json(), "alarms": self.alarms_json(),
        }

    def minute_message(self, result: MinuteResult) -> Json:
        """The push message of one minute: the sources and units it reported, and the site."""
        return {
            "type": "minute", "t": iso_utc(result.t),
            "sources": [self.source_json(s.source) for s in result.sources],
            "units": [self.unit_json(u.unit) for u in result.units],
            "site": self.site_json(),
        }


# ----------------------------------------------------------------------- WebSocket


@dataclass(eq=False, slots=True)
class _Client:
    """One connected WebSocket with its outgoing queue and sender task."""

    ws: web.WebSocketResponse
    transport: asyncio.Transport | None
    peer: str
    queue: asyncio.Queue[str]
    sender: asyncio.Task[None] | None = field(default=None)

    def abort(self) -> None:
        """Drop the connection at once, without a closing handshake."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()


class _Hub:
    """The connected WebSocket clients and the fan-out of messages to them."""

    def __init__(self, send_timeout_s: float, queue_size: int, close_timeout_s: float) -> None:
        self.send_timeout_s = send_timeout_s
        self.queue_size = queue_size
        self.close_timeout_s = close_timeout_s
        self.clients: set[_Client] = set()

    def join(self, client: _Client, first: str) -> None:
        """Queue the client's first message and start sending it everything broadcast."""
        client.queue.put_nowait(first)
        self.clients.add(client)
        client.sender = asyncio.create_task(self._send_loop(client), name=f"ws:{client.peer}")

    async def leave(self, client: _Client) -> None:
        """Forget a client and end its sender task."""
        self.clients.discard(client)
        if client.sender is not None:
            client.sender.cancel()
            await asyncio.wait([client.sender])

    def broadcast(self, text: str) -> None:
        """Queue a message for every client; a client whose queue is full is dropped."""
        for client in list(self.clients):
            try:
                client.queue.put_nowait(text)
            except asyncio.QueueFull:
                log.warning("dropping WebSocket client %s: %d messages not taken",
                            client.peer, self.queue_size)
                self.clients.discard(client)
                client.abort()

    async def _send_loop(self, client: _Client) -> None:
        while True:
            text = await client.queue.get()
            try:
                await asyncio.wait_for(client.ws.send_str(text), self.send_timeout_s)
            except TimeoutError:
                log.warning("dropping WebSocket client %s: a send took over %.1f s",
                            client.peer, self.send_timeout_s)
            except Exception as exc:  # closed or reset connection: nothing more to send
                log.debug("WebSocket client %s gone: %s", client.peer, exc)
            else:
                continue
            self.clients.discard(client)
            client.abort()
            return

    async def close_all(self) -> None:
        """Close every connection with "going away"; abort those that do not finish in time."""
        clients = list(self.clients)
        self.clients.clear()
        for c in clients:
            if c.sender is not None:
                c.sender.cancel()

        async def close(c: _Client) -> None:
            try:
                await asyncio.wait_for(
                    c.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server stopping"),
                    self.close_timeout_s)
            except Exception:
                c.abort()

        await asyncio.gather(*(close(c) for c in clients))


# ------------------------------------------------------------------------- the app

LIVE: Final = web.AppKey("live", LiveState)
HUB: Final = web.AppKey("hub", _Hub)
HISTORY: Final[web.AppKey[PeriodHistory | None]] = web.AppKey("history")
DeviceStatus = Callable[[], list[dict[str, Any]]]
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


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


async def _body(request: web.Request) -> Json:
    """The request's JSON object (400 if it is not one)."""
    try:
        body = json.loads(await request.text(), parse_constant=_refuse_constant)
    except ValueError:  # also bad UTF-8
        raise ApiError(400, "request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object")
    return body


def _text(body: Json, name: str, *, max_len: int, blank_ok: bool = False) -> str:
    """A string field of a request body (400 naming it if missing, not a string, blank or
    too long)."""
    value = body.get(name)
    if value is None:
        raise ApiError(400, f"'{name}' is required")
    if not isinstance(value, str):
        raise ApiError(400, f"'{name}' must be a string")
    if not blank_ok and not value.strip():
        raise ApiError(400, f"'{name}' must not be empty")
    if len(value) > max_len:
        raise ApiError(400, f"'{name}' is longer than {max_len} characters")
    return value if blank_ok else value.strip()


def _object(body: Json, name: str) -> Json:
    """An object field of a request body (400 naming it if missing or not an object)."""
    value = body.get(name)
    if value is None:
        raise ApiError(400, f"'{name}' is required")
    if not isinstance(value, dict):
        raise ApiError(400, f"'{name}' must be an object")
    return value


def _parse_time(text: str, what: str) -> datetime:
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise ApiError(400, f"{what}: {text!r} is not an ISO 8601 time") from None
    if t.tzinfo is None:
        raise ApiError(400, f"{what}: {text!r} needs a UTC offset, e.g. {text}+08:00")
    return t.astimezone(UTC)


def _time_param(request: web.Request, name: str) -> datetime:
    text = request.query.get(name)
    if not text:
        raise ApiError(400, f"query parameter '{name}' is required (ISO 8601 with offset, "
                            "e.g. 2026-11-21T00:00:00+08:00)")
    return _parse_time(text, f"query parameter '{name}'")


def _span(request: web.Request, longest: timedelta, what: str) -> tuple[datetime, datetime]:
    """The ?from=…&to=… of a request, checked."""
    start, end = _time_param(request, "from"), _time_param(request, "to")
    if end <= start:
        raise ApiError(400, "'to' must be after 'from'")
    if end - start > longest:
        raise ApiError(400, f"at most {longest.days} days of {what} per request")
    return start, end


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
        return _json([row_json(r) for r in rows])
    return handler


async def _get_allowance(request: web.Request) -> web.Response:
    latest = request.app[LIVE].allowance
    return _json(allowance_json(*latest) if latest else allowance_json(None, None))


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
    body = await _body(request)
    name = _text(body, "user", max_len=MAX_NAME, blank_ok=True)
    password = _text(body, "password", max_len=1024, blank_ok=True)
    throttle, audit = request.app[THROTTLE], request.app[AUDIT]
    remote = request.remote or ""
    wait = throttle.begin(name)
    if wait is not None:
        raise ApiError(429, f"too many failed logins for {name!r}: try again in {wait} s",
                       headers={"Retry-After": str(wait)})
    try:
        user = await asyncio.to_thread(users.authenticate, name, password)
    except BaseException:
        throttle.cancel(name)
        raise
    if user is None:
        blocked = throttle.failed(name)
        detail: Json = {"remote": remote}
        if blocked:
            detail["blocked_s"] = throttle.block_s
            log.warning("logins as %r blocked for %.0f s after %d failures (last from %s)",
                        name, throttle.block_s, throttle.max_failures, remote)
        if audit is not None:
            await asyncio.to_thread(audit.append, name, "login_failed", f"user:{name}", detail)
        raise ApiError(401, "wrong user name or password")
    throttle.succeeded(name)
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
        return datetime.now(UTC) + timedelta(minutes=minutes)
    except OverflowError:
        raise ApiError(400, f"'minutes' is too large: {minutes}") from None


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
        body = await _body(request)
        comment = _text(body, "comment", max_len=MAX_COMMENT)
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
                      "alarm": alarm_json(request.app[LIVE].display(now))
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
    body = await _body(request)
    rules = body.get("rules")
    if rules is None:
        raise ApiError(400, "'rules' is required")
    if not isinstance(rules, list):
        raise ApiError(400, "'rules' must be a list")
    for i, r in enumerate(rules):
        if not isinstance(r, dict):
            raise ApiError(400, f"'rules[{i}]' must be an object")
    comment = _text(body, "comment", max_len=MAX_COMMENT)
    return _json(_change_rules(request, control, rules, session, comment))


async def _put_rule(request: web.Request) -> web.Response:
    session = require(request, "engineer")
    control = _alarm_control(request)
    rule_id = request.match_info["id"]
    body = await _body(request)
    rule = _object(body, "rule")
    comment = _text(body, "comment", max_len=MAX_COMMENT)
    if rule.setdefault("id", rule_id) != rule_id:
        raise ApiError(400, f"'rule.id' is {rule['id']!r} but the address names {rule_id!r}")
    # No await from reading the rules to changing them: no other change comes between.
    rules = list(control.rules_config())
    rules[_rule_index(rules, rule_id)] = rule
    return _json(_change_rules(request, control, rules, session, comment))


async def _post_rule(request: web.Request) -> web.Response:
    session = require(request, "engineer")
    control = _alarm_control(request)
    body = await _body(request)
    rule = _object(body, "rule")
    comment = _text(body, "comment", max_len=MAX_COMMENT)
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
    comment = _text(await _body(request), "comment", max_len=MAX_COMMENT)
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
    client = _Client(ws, request.transport, peer, asyncio.Queue(hub.queue_size))
    # No await between the snapshot and joining: no minute is lost or sent twice.
    hub.join(client, dumps(request.app[LIVE].snapshot()))
    try:
        async for _msg in ws:
            pass  # read-only: whatever a client sends is ignored
    finally:
        await hub.leave(client)
    return ws


def build_app(live: LiveState, hub: _Hub, history: PeriodHistory | None = None,
              devices: DeviceStatus | None = None, *, sessions: SessionStore | None = None,
              throttle: LoginThrottle | None = None, users: Authenticator | None = None,
              audit: AuditLogLike | None = None, alarms: AlarmControl | None = None,
              journal: AlarmHistory | None = None,
              secure_cookies: bool = False) -> web.Application:
    """The aiohttp application serving `live`, `history` and the logged-in actions."""
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
    for kind in ("source", "unit", "stream"):
        for level in ("hours", "days"):
            app.router.add_get(f"{api}/{kind}s/{{id}}/{level}", _periods_handler(kind, level))
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
    app.router.add_get("/ws", _websocket)
    app.router.add_static("/static/", STATIC_DIR)
    return app


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    """A server TLS context from PEM files; ConfigError naming the file that is wrong."""
    for option, path, marker in (("web.tls_cert", cert, "CERTIFICATE-----"),
                                 ("web.tls_key", key, "PRIVATE KEY-----")):
        try:
            text = Path(path).read_bytes()
        except OSError as exc:
            raise ConfigError(path, option, f"cannot read it: {exc.strerror or exc}") from None
        if marker.encode() not in text:
            raise ConfigError(path, option, f"not a PEM file with a {marker.rstrip('-')}")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except (ssl.SSLError, ValueError) as exc:
        raise ConfigError(cert, "web.tls_cert / web.tls_key",
                          f"certificate and key {key} do not load together: {exc}") from None
    return ctx



class WebSink:
    """The web sink: REST API, WebSocket push and HMI page on config.web.host:port.

    Over HTTPS when config.web.tls_cert and tls_key are set. `alarms` is only acted on
    and read: alarm events reach the sink through `on_alarm`, which the runtime
    subscribes to the alarm sink.
    """

    name = "web"

    def __init__(self, config: PlantConfig, *, history: PeriodHistory | None = None,
                 devices: DeviceStatus | None = None, users: Authenticator | None = None,
                 audit: AuditLogLike | None = None, alarms: AlarmControl | None = None,
                 journal: AlarmHistory | None = None, send_timeout_s: float = 5.0,
                 client_queue_size: int = 256, close_timeout_s: float = 2.0) -> None:
        self.config = config
        self.live = LiveState(config)
        self._history = history
        self._devices = devices
        self._users = users
        self._audit = audit
        self._alarms = alarms
        self._journal = journal
        self.sessions = SessionStore(timedelta(minutes=config.web.session_idle_min),
                                     timedelta(hours=config.web.session_max_h))
        self.throttle = LoginThrottle()
        self._hub = _Hub(send_timeout_s, client_queue_size, close_timeout_s)
        self._close_timeout_s = close_timeout_s
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        """The TCP port actually bound (useful with port 0); only while started."""
        if self._port is None:
            raise RuntimeError("web sink is not started")
        return self._port

    @property
    def client_count(self) -> int:
        """How many WebSocket clients are connected."""
        return len(self._hub.clients)

    async def start(self) -> None:
        """List the alarms the engine has now, bind config.web.host:port and serve.

        Raises ConfigError naming the file if the TLS certificate or key is unusable.
        """
        if self._runner is not None:
            return
        cfg = self.config.web
        ctx = None
        if cfg.tls_cert is not None and cfg.tls_key is not None:
            ctx = tls_context(cfg.tls_cert, cfg.tls_key)
        if self._alarms is not None:
            self.live.set_alarms(self._alarms.alarm_list())
        app = build_app(self.live, self._hub, self._history, self._devices,
                        sessions=self.sessions, throttle=self.throttle, users=self._users,
                        audit=self._audit, alarms=self._alarms, journal=self._journal,
                        secure_cookies=ctx is not None)
        runner = web.AppRunner(app, shutdown_timeout=self._close_timeout_s)
        await runner.setup()
        try:
            site = web.TCPSite(runner, cfg.host, cfg.port, ssl_context=ctx)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        log.info("web HMI on %s://%s:%d/", "https" if ctx else "http", cfg.host, self._port)

    async def on_samples(self, samples: Sequence[Sample]) -> None:
        """Raw samples are not shown by the HMI."""

    async def on_minute(self, result: MinuteResult) -> None:
        """Keep the minute as the latest values and push it to every WebSocket client."""
        self.live.update(result)
        self._hub.broadcast(dumps(self.live.minute_message(result)))

    async def on_period(self, records: PeriodRecords) -> None:
        """Keep the latest allowance position (hours and days themselves are read back)."""
        self.live.update_period(records)

    def on_alarm(self, event: AlarmEvent) -> None:
        """Record an alarm transition and push it as {"type": "alarm", ...} (never blocks)."""
        shown = self.live.apply_alarm(event)
        self._hub.broadcast(dumps({"type": "alarm", **alarm_json(shown)}))

    def set_active_alarms(self, events: Iterable[AlarmEvent]) -> None:
        """Replace the active alarms and push them as {"type": "alarms", "alarms": [...]}."""
        self.live.set_alarms(events)
        self._hub.broadcast(dumps({"type": "alarms", "alarms": self.live.alarms_json()}))

    async def stop(self) -> None:
        """Stop listening, close every WebSocket ("going away"), then release everything."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        await runner.cleanup()  # stops the site, then on_shutdown closes the WebSockets
        self._port = None
