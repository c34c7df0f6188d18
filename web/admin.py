"""User accounts for admins: GET/POST /api/v1/users, PUT/DELETE /api/v1/users/{name}.

Admin role only (401 without a session, 403 below admin); changes carry the CSRF token
like every write (web/auth.py's middleware). Every change is an audit-log entry by the
admin who made it, target "user:<name>", never with the password; the actions and details
are those of `carbonscada user` (server/cli.py): user_add, user_role, user_password,
user_remove. The store is slow (SQLite, and scrypt at ~50 ms per hash), so it is always
called in a worker thread.

An admin may not remove or demote themselves (409): whoever changes accounts stays an
admin, so the site is never left without one. A changed or removed account's sessions
end, since a session keeps the role it logged in with.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web

from model.accounts import ROLES, User
from model.errors import UserError
from model.protocols import Authenticator
from web.auth import SESSIONS, ApiError, AuditLogLike, Session, require
from web.collaborators import UserAccounts
from web.params import json_body, text_field
from web.serialize import Json, dumps, iso_utc

MAX_NAME: Final = 64  # the user store's longest name
MAX_PASSWORD: Final = 1024  # as at login: longer is refused before it is hashed



@dataclass(frozen=True, slots=True)
class _Admin:
    """The account store (None if the server's cannot be managed) and the app key of the
    audit log the changes go to (the app's AUDIT, read at each change)."""

    accounts: UserAccounts | None
    audit: web.AppKey[AuditLogLike | None]


_ADMIN: Final = web.AppKey("admin", _Admin)


def user_json(user: User) -> Json:
    """An account as the API shows it: name, role, created and updated (ISO UTC); no hash."""
    return {"name": user.name, "role": user.role, "created": iso_utc(user.created),
            "updated": iso_utc(user.changed)}


def _optional(body: Json, name: str, max_len: int, *, blank_ok: bool = False) -> str | None:
    """A string field, None if absent (400 naming it if not a string, empty or too long)."""
    return (None if body.get(name) is None
            else text_field(body, name, max_len=max_len, blank_ok=blank_ok))


def _role(body: Json) -> str | None:
    """The 'role' field, None if absent (400 if it is not a role)."""
    role = _optional(body, "role", 32)
    if role is not None and role not in ROLES:
        raise ApiError(400, f"'role' must be one of {', '.join(ROLES)}, not {role!r}")
    return role


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=dumps(data), status=status, content_type="application/json")


def _accounts(request: web.Request) -> UserAccounts:
    accounts = request.app[_ADMIN].accounts
    if accounts is None:
        raise ApiError(503, "no user store that accounts can be managed in")
    return accounts


async def _audit(request: web.Request, session: Session, action: str, name: str,
                 detail: Json) -> None:
    audit = request.app[request.app[_ADMIN].audit]
    if audit is not None:
        await asyncio.to_thread(audit.append, session.user, action, f"user:{name}", detail)


async def _existing(accounts: UserAccounts, name: str) -> User:
    user = await asyncio.to_thread(accounts.get, name)
    if user is None:
        raise ApiError(404, f"unknown user {name!r}")
    return user


def _is_self(session: Session, user: User) -> bool:
    return session.user.lower() == user.name.lower()  # names are one account in any case


async def _get_users(request: web.Request) -> web.Response:
    require(request, "admin")
    users = await asyncio.to_thread(_accounts(request).list)
    return _json([user_json(u) for u in users])


async def _post_user(request: web.Request) -> web.Response:
    session = require(request, "admin")
    accounts = _accounts(request)
    body = await json_body(request)
    name = text_field(body, "user", max_len=MAX_NAME)
    role = _role(body)
    if role is None:
        raise ApiError(400, "'role' is required")
    password = text_field(body, "password", max_len=MAX_PASSWORD, blank_ok=True)
    try:
        user = await asyncio.to_thread(accounts.add, name, role, password)
    except UserError as exc:
        exists = await asyncio.to_thread(accounts.get, name) is not None
        raise ApiError(409 if exists else 400, str(exc)) from None
    await _audit(request, session, "user_add", user.name, {"role": user.role})
    return _json(user_json(user), 201)


async def _put_user(request: web.Request) -> web.Response:
    session = require(request, "admin")
    accounts = _accounts(request)
    body = await json_body(request)
    role = _role(body)
    password = _optional(body, "password", MAX_PASSWORD, blank_ok=True)
    if role is None and password is None:
        raise ApiError(400, "give 'role', 'password' or both")
    user = await _existing(accounts, request.match_info["name"])
    if role is not None and role != user.role and _is_self(session, user):
        raise ApiError(409, f"you cannot change your own role ({user.role} to {role}): another "
                            "admin must, so that the site always keeps an admin")
    try:
        if password is not None:
            await asyncio.to_thread(accounts.set_password, user.name, password)
        if role is not None and role != user.role:
            await asyncio.to_thread(accounts.set_role, user.name, role)
    except UserError as exc:
        gone = await asyncio.to_thread(accounts.get, user.name) is None
        raise ApiError(404 if gone else 400, str(exc)) from None
    # The changed account logs in again (with its new role or password); the admin
    # changing their own password keeps this session.
    ended = request.app[SESSIONS].end_user(user.name, keep=session.token)
    if password is not None:
        await _audit(request, session, "user_password", user.name,
                     {"sessions_ended": ended})
    if role is not None and role != user.role:
        await _audit(request, session, "user_role", user.name,
                     {"from": user.role, "to": role, "sessions_ended": ended})
    return _json(user_json(await _existing(accounts, user.name)))


async def _delete_user(request: web.Request) -> web.Response:
    session = require(request, "admin")
    accounts = _accounts(request)
    user = await _existing(accounts, request.match_info["name"])
    if _is_self(session, user):
        raise ApiError(409, "you cannot remove your own account: another admin must, so "
                            "that the site always keeps an admin")
    try:
        await asyncio.to_thread(accounts.remove, user.name)
    except UserError:  # removed by someone else meanwhile
        raise ApiError(404, f"unknown user {user.name!r}") from None
    ended = request.app[SESSIONS].end_user(user.name)
    await _audit(request, session, "user_remove", user.name,
                 {"role": user.role, "sessions_ended": ended})
    return _json({"removed": user.name})


def add_admin_routes(app: web.Application, prefix: str,
                     users: web.AppKey[Authenticator | None],
                     audit: web.AppKey[AuditLogLike | None]) -> None:
    """Add the account routes under `prefix`; they manage app[users] when it can be
    managed (the runtime passes its UserStore there) and write to app[audit]."""
    store = app[users]
    app[_ADMIN] = _Admin(store if isinstance(store, UserAccounts) else None, audit)
    app.router.add_get(f"{prefix}/users", _get_users)
    app.router.add_post(f"{prefix}/users", _post_user)
    app.router.add_put(f"{prefix}/users/{{name}}", _put_user)
    app.router.add_delete(f"{prefix}/users/{{name}}", _delete_user)
