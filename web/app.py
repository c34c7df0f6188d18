"""Web sink: REST API under /api/v1, live WebSocket /ws and the static control-room HMI.

The sink keeps the latest minute of every source and unit, the site totals and the
active alarms, serves them as JSON and pushes every new minute and alarm to connected
WebSocket clients. Each client has its own bounded queue and sender task, so a slow or
dead client is dropped without delaying the minute cycle or the other clients.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Protocol

from aiohttp import WSCloseCode, web

from server.config import PlantConfig
from server.records import (
    AlarmEvent,
    AllowancePosition,
    MinuteResult,
    PeriodRecords,
    Sample,
    SiteMinute,
    SourceMinute,
    UnitMinute,
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

_SECURITY_HEADERS: Final = {
    # Same-origin only: the control room has no network, and nothing may be loaded from outside.
    "Content-Security-Policy": (
        "default-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class ApiError(Exception):
    """A client error answered as {"error": message} with an HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


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
    }


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
        """Replace the active alarms (events whose state is not "normal")."""
        self._alarms = {e.rule: e for e in events if e.state != "normal"}

    def apply_alarm(self, event: AlarmEvent) -> None:
        """Record an alarm transition: a return to "normal" clears the rule."""
        if event.state == "normal":
            self._alarms.pop(event.rule, None)
        else:
            self._alarms[event.rule] = event

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
        """Active alarms, alarms before warnings, newest first."""
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

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(text=dumps({"error": message}), status=status,
                        content_type="application/json", headers=headers)


def _json(data: Any) -> web.Response:
    return web.Response(text=dumps(data), content_type="application/json")


@web.middleware
async def _errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """One error shape for clients; no traceback ever reaches them."""
    try:
        return await handler(request)
    except ApiError as exc:
        return _error(exc.status, exc.message)
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


async def _get_sources(request: web.Request) -> web.Response:
    return _json(request.app[LIVE].sources_json())


async def _get_source(request: web.Request) -> web.Response:
    live = request.app[LIVE]
    source_id = request.match_info["id"]
    if not live.has_source(source_id):
        raise ApiError(404, f"unknown source {source_id!r}")
    return _json(live.source_json(source_id))


def _time_param(request: web.Request, name: str) -> datetime:
    text = request.query.get(name)
    if not text:
        raise ApiError(400, f"query parameter '{name}' is required (ISO 8601 with offset, "
                            "e.g. 2026-11-21T00:00:00+08:00)")
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise ApiError(400, f"query parameter '{name}': {text!r} is not an ISO 8601 time"
                       ) from None
    if t.tzinfo is None:
        raise ApiError(400, f"query parameter '{name}': {text!r} needs a UTC offset, e.g. "
                            f"{text}+08:00")
    return t.astimezone(UTC)


def _periods_handler(kind: str, level: str) -> Handler:
    """GET /api/v1/{kind}s/{id}/{level}?from=…&to=…: stored hours or days, oldest first."""
    async def handler(request: web.Request) -> web.Response:
        ident = request.match_info["id"]
        if not request.app[LIVE].has(kind, ident):
            raise ApiError(404, f"unknown {kind} {ident!r}")
        start, end = _time_param(request, "from"), _time_param(request, "to")
        if end <= start:
            raise ApiError(400, "'to' must be after 'from'")
        if end - start > MAX_SPAN[level]:
            raise ApiError(400, f"at most {MAX_SPAN[level].days} days of {level} per request")
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
              devices: DeviceStatus | None = None) -> web.Application:
    """The aiohttp application serving `live` and `history`, fanning out through `hub`."""
    app = web.Application(middlewares=[_errors_middleware], client_max_size=64 * 1024)
    app[LIVE] = live
    app[HUB] = hub
    app[HISTORY] = history
    app[DEVICES] = devices
    app.on_response_prepare.append(_security_headers)
    app.on_shutdown.append(_close_websockets)
    app.router.add_get("/", _index)
    app.router.add_get(f"{API_PREFIX}/sources", _get_sources)
    app.router.add_get(f"{API_PREFIX}/sources/{{id}}", _get_source)
    app.router.add_get(f"{API_PREFIX}/units", _get_units)
    app.router.add_get(f"{API_PREFIX}/site", _get_site)
    app.router.add_get(f"{API_PREFIX}/alarms", _get_alarms)
    app.router.add_get(f"{API_PREFIX}/allowance", _get_allowance)
    app.router.add_get(f"{API_PREFIX}/devices", _get_devices)
    for kind in ("source", "unit", "stream"):
        for level in ("hours", "days"):
            app.router.add_get(f"{API_PREFIX}/{kind}s/{{id}}/{level}",
                               _periods_handler(kind, level))
    app.router.add_get("/ws", _websocket)
    app.router.add_static("/static/", STATIC_DIR)
    return app


class WebSink:
    """The web sink: REST API, WebSocket push and HMI page on config.web.host:port."""

    name = "web"

    def __init__(self, config: PlantConfig, *, history: PeriodHistory | None = None,
                 devices: DeviceStatus | None = None, send_timeout_s: float = 5.0,
                 client_queue_size: int = 256, close_timeout_s: float = 2.0) -> None:
        self.config = config
        self.live = LiveState(config)
        self._history = history
        self._devices = devices
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
        """Bind config.web.host:port and serve."""
        if self._runner is not None:
            return
        runner = web.AppRunner(build_app(self.live, self._hub, self._history, self._devices),
                               shutdown_timeout=self._close_timeout_s)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.config.web.host, self.config.web.port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        log.info("web HMI on http://%s:%d/", self.config.web.host, self._port)

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
        self.live.apply_alarm(event)
        self._hub.broadcast(dumps({"type": "alarm", **alarm_json(event)}))

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
