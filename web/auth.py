"""Logins for the web sink: in-memory sessions, CSRF protection, login throttling, roles.

A session is a random token in the HttpOnly cookie `carbonscada_session`; it ends after
`session_idle_min` without use, after `session_max_h` in any case, or at logout. Every
state-changing request must carry the session's CSRF token in the X-CSRF-Token header
(the HMI gets it from the login answer; a cross-site page cannot read it), and if it
has an Origin header, that must be the server's own origin. Logins are throttled per
client address and per user name (web/throttle.py, shared with OPC UA): failures from one
address never make the right password wait at another.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol

from aiohttp import web

from model.accounts import has_role
from model.errors import CarbonScadaError
from model.records import AuditRecord
from web.throttle import LoginThrottle as LoginThrottle  # re-exported: handlers, app

log = logging.getLogger(__name__)

COOKIE: Final = "carbonscada_session"
CSRF_HEADER: Final = "X-CSRF-Token"
LOGIN_PATH: Final = "/api/v1/login"
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})

Clock = Callable[[], float]


class ApiError(CarbonScadaError):
    """A client error answered as {"error": message, **extra} with an HTTP status."""

    def __init__(self, status: int, message: str, *, extra: Mapping[str, Any] | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = dict(extra or {})
        self.headers = dict(headers or {})


# ---------------------------------------------------------------- collaborators


class AuditEntryLike(Protocol):
    """One entry of the hash-chained audit log (server.audit.AuditEntry)."""

    @property
    def seq(self) -> int:
        """Position in the log, from 1."""
        ...

    @property
    def t(self) -> datetime:
        """When (UTC)."""
        ...

    @property
    def user(self) -> str:
        """Who."""
        ...

    @property
    def action(self) -> str:
        """What, e.g. "login" or "acknowledge"."""
        ...

    @property
    def target(self) -> str:
        """On what, e.g. an alarm rule."""
        ...

    @property
    def detail(self) -> Mapping[str, Any] | None:
        """More about the action."""
        ...

    @property
    def prev_hash(self) -> str:
        """The hash of the entry before."""
        ...

    @property
    def hash(self) -> str:
        """The hash of this entry (chained over prev_hash)."""
        ...


class AuditLogLike(Protocol):
    """The append-only audit log (server.audit.AuditLog); synchronous and thread-safe."""

    def append(self, user: str, action: str, target: str,
               detail: Mapping[str, Any] | None = None,
               t: datetime | None = None) -> AuditEntryLike:
        """Append one entry."""
        ...

    def append_record(self, rec: AuditRecord) -> AuditEntryLike:
        """Append an alarm action's audit record."""
        ...

    def entries(self, start: datetime | None = None, end: datetime | None = None,
                limit: int = 1000) -> Sequence[AuditEntryLike]:
        """Entries with start ≤ t < end, oldest first."""
        ...


# ---------------------------------------------------------------------- sessions


@dataclass(slots=True)
class Session:
    """One logged-in browser."""

    token: str
    user: str
    role: str
    csrf_token: str
    created: float  # SessionStore clock
    last_seen: float


class SessionStore:
    """The live sessions, in memory: a restart logs everybody out."""

    def __init__(self, idle: timedelta, lifetime: timedelta, clock: Clock = time.monotonic,
                 ) -> None:
        self.idle_s = idle.total_seconds()
        self.lifetime_s = lifetime.total_seconds()
        self.clock = clock
        self._sessions: dict[str, Session] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def create(self, user: str, role: str) -> Session:
        """A new session for `user` (expired ones are forgotten on the way)."""
        now = self.clock()
        for token in [k for k, s in self._sessions.items() if self._expired(s, now)]:
            del self._sessions[token]
        session = Session(secrets.token_urlsafe(32), user, role, secrets.token_urlsafe(32),
                          now, now)
        self._sessions[session.token] = session
        return session

    def get(self, token: str | None, *, touch: bool = True) -> Session | None:
        """The live session of `token`, its idle time restarted; None if none or expired."""
        if not token:
            return None
        session = self._sessions.get(token)
        if session is None:
            return None
        now = self.clock()
        if self._expired(session, now):
            del self._sessions[token]
            return None
        if touch:
            session.last_seen = now
        return session

    def delete(self, token: str) -> Session | None:
        """End a session (logout); the session, or None if there was none."""
        return self._sessions.pop(token, None)

    def end_user(self, user: str, *, keep: str | None = None) -> int:
        """End every session of `user` but the one of token `keep`; how many ended.

        Names compare without regard to case, as the accounts do. Used when an admin
        changes or removes an account: a session keeps the role it logged in with.
        """
        ended = [t for t, s in self._sessions.items()
                 if s.user.lower() == user.lower() and t != keep]
        for token in ended:
            del self._sessions[token]
        return len(ended)

    def expires(self, session: Session) -> datetime:
        """The latest the session can last (wall clock, UTC); unused for `idle_s` it ends
        sooner."""
        return datetime.now(UTC) + timedelta(
            seconds=session.created + self.lifetime_s - self.clock())

    def _expired(self, s: Session, now: float) -> bool:
        return now - s.last_seen >= self.idle_s or now - s.created >= self.lifetime_s


# ---------------------------------------------------------------- app and checks

SESSIONS: Final = web.AppKey("sessions", SessionStore)
THROTTLE: Final = web.AppKey("throttle", LoginThrottle)
SECURE_COOKIES: Final = web.AppKey("secure_cookies", bool)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def own_origin(request: web.Request) -> str:
    """The origin the browser loaded this server from, e.g. "https://scada:8443"."""
    return f"{request.scheme}://{request.host}"


def current_session(request: web.Request, *, touch: bool = True) -> Session | None:
    """The request's live session, or None."""
    return request.app[SESSIONS].get(request.cookies.get(COOKIE), touch=touch)


@web.middleware
async def csrf_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse (403) a state-changing request from another origin or without the token.

    Login has no session yet: only its Origin is checked. A request without a session
    goes on to its handler, which answers 401 where a login is needed.
    """
    if request.method not in SAFE_METHODS:
        origin = request.headers.get("Origin")
        if origin is not None and origin != own_origin(request):
            raise ApiError(403, f"cross-origin request refused: Origin {origin!r} is not "
                                f"{own_origin(request)!r}")
        if request.path != LOGIN_PATH:
            session = current_session(request, touch=False)
            if session is not None:
                sent = request.headers.get(CSRF_HEADER, "")
                if not sent:
                    raise ApiError(403, f"missing {CSRF_HEADER} header")
                if not secrets.compare_digest(sent.encode(), session.csrf_token.encode()):
                    raise ApiError(403, f"wrong {CSRF_HEADER} header")
    return await handler(request)


def require(request: web.Request, needed: str) -> Session:
    """The request's session if its role is `needed` or higher; else 401 or 403."""
    session = current_session(request)
    if session is None:
        raise ApiError(401, "not logged in")
    if not has_role(session.role, needed):
        raise ApiError(403, f"needs the {needed} role or higher (user {session.user!r} is "
                            f"{session.role})")
    return session


def set_session_cookie(request: web.Request, response: web.StreamResponse,
                       session: Session) -> None:
    """Give the browser the session cookie (Secure over TLS)."""
    sessions = request.app[SESSIONS]
    response.set_cookie(COOKIE, session.token, path="/", httponly=True, samesite="Strict",
                        secure=_secure(request), max_age=int(sessions.lifetime_s))


def clear_session_cookie(request: web.Request, response: web.StreamResponse) -> None:
    """Make the browser forget the session cookie."""
    response.del_cookie(COOKIE, path="/", secure=_secure(request), httponly=True,
                        samesite="Strict")


def _secure(request: web.Request) -> bool:
    return request.secure or request.app[SECURE_COOKIES]
