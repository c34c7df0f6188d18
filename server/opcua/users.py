"""OPC UA identities: the user manager for user-name logins and the session of a method call.

Identities: anonymous sessions are accepted and read-only (browse, read, subscribe,
ConditionRefresh). Given a user store (`users`), the server also takes UserName tokens and
checks them there; a refused login is Bad_UserAccessDenied at ActivateSession, the same for
an unknown name as for a wrong password. Acknowledge needs a session user with role
operator or higher. The only endpoint is NoSecurity for now, and asyncua encrypts a
password only under a Sign or Sign&Encrypt policy: user names and passwords travel in
clear text. The Basic256Sha256 and Aes128_Sha256_RsaOaep Sign&Encrypt endpoints (with the
server certificate) are still to come.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from dataclasses import dataclass

from asyncua import ua
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.internal_server import InternalServer
from asyncua.server.internal_session import InternalSession
from asyncua.server.user_managers import UserManager

from model.protocols import Authenticator

log = logging.getLogger(__name__)

ACKNOWLEDGE_ROLE = "operator"
"""The least role (server.users.ROLES) that may acknowledge alarms through OPC UA."""


@dataclass
class _SessionUser(User):
    """An asyncua session user with its carbonscada role ("" for an anonymous session)."""

    rights: str = ""


class _UserManager(UserManager):
    """asyncua user manager: anonymous sessions, and user names checked against `users`."""

    def __init__(self, users: Authenticator | None) -> None:
        self.users = users

    def get_user(self, iserver: InternalServer, username: str | None = None,
                 password: str | None = None, certificate: object = None) -> User | None:
        """The session user of an ActivateSession; None refuses it (Bad_UserAccessDenied)."""
        # UserRole.User for every session: asyncua's SimpleRoleRuleset refuses the Anonymous
        # role every service, Read included, and Admin may add and delete nodes. A non-admin
        # writes only nodes with CurrentWrite access, and this address space has none.
        if username is None and password is None:  # an anonymous token
            return _SessionUser(role=UserRole.User)
        if self.users is None:
            return None
        try:
            # Called synchronously by asyncua: the scrypt check (~50 ms) holds the loop.
            account = self.users.authenticate(username or "", password or "")
        except Exception:
            log.exception("OPC UA login of %r: user store failed", username)
            return None
        if account is None:
            log.warning("OPC UA login of %r refused", username)
            return None
        return _SessionUser(role=UserRole.User, name=account.name, rights=account.role)


# The user of the session whose method call is running (asyncua hands a method callback
# only the object and the arguments, not the session).
_CALLER: ContextVar[User | None] = ContextVar("opcua_caller", default=None)


class _CallerSession(InternalSession):
    """A client session that makes its user known to the method callbacks it runs."""

    async def call(self, params: list[ua.CallMethodRequest]) -> list[ua.CallMethodResult]:
        """Run the calls with this session's user in `_CALLER`."""
        token = _CALLER.set(self.user)
        try:
            return await super().call(params)
        finally:
            _CALLER.reset(token)


class _InternalServer(InternalServer):
    """asyncua's internal server with `_CallerSession` client sessions."""

    def create_session(self, name: str, user: User | None = None,
                       external: bool = False) -> InternalSession:
        """A session for a client connection."""
        return _CallerSession(self, self.aspace, self.subscription_service, name,
                              user=user or User(role=UserRole.Anonymous), external=external)
