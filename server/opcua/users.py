"""OPC UA identities: the user manager for user-name logins and the session of a method call.

Identities: anonymous sessions are accepted and read-only (browse, read, subscribe,
ConditionRefresh). Given a user store (`users`), the server also takes UserName tokens and
checks them there; a refused login is Bad_UserAccessDenied at ActivateSession, the same for
an unknown name as for a wrong password. Acknowledge needs a session user with role
operator or higher.

User-name logins go through the web's throttle (web/throttle.py: per address and name,
exponential delay, failures audited and summed up). asyncua calls the user manager
synchronously from ActivateSession, so the scrypt check cannot happen there without
holding the event loop: `_Processor` checks the token first, awaiting a worker thread,
and `get_user` only hands out the user it verified. `_Server` (asyncua's Server with
`_Processor` on every connection) must be the server the user manager serves.

The only endpoint is NoSecurity for now, and asyncua encrypts a password only under a
Sign or Sign&Encrypt policy: user names and passwords travel in clear text. The
Basic256Sha256 and Aes128_Sha256_RsaOaep Sign&Encrypt endpoints (with the server
certificate) are still to come.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, cast

from asyncua import ua
from asyncua.common.utils import Buffer
from asyncua.crypto import uacrypto
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.binary_server_asyncio import BinaryServer, OPCUAProtocol
from asyncua.server.internal_server import InternalServer
from asyncua.server.internal_session import InternalSession
from asyncua.server.server import Server
from asyncua.server.uaprocessor import UaProcessor
from asyncua.server.user_managers import UserManager
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.ua_binary import nodeid_from_binary, struct_from_binary

from model.protocols import Authenticator
from server.opcua.layout import _ns0
from web.throttle import FailureAuditor, LoginThrottle

log = logging.getLogger(__name__)

ACKNOWLEDGE_ROLE = "operator"
"""The least role (server.users.ROLES) that may acknowledge alarms through OPC UA."""


@dataclass
class _SessionUser(User):
    """An asyncua session user with its carbonscada role ("" for an anonymous session)."""

    rights: str = ""


@dataclass(frozen=True)
class _Verified:
    """A UserName token checked ahead of ActivateSession, and its outcome."""

    username: str | None
    password: str | None
    user: User | None


# The token `_Processor` verified for the ActivateSession being processed.
_VERIFIED: ContextVar[_Verified | None] = ContextVar("opcua_verified", default=None)


class _UserManager(UserManager):
    """asyncua user manager: anonymous sessions, and user names checked against `users`."""

    def __init__(self, users: Authenticator | None, audit: object = None,
                 throttle: LoginThrottle | None = None, *,
                 passwords_unencrypted: bool = False) -> None:
        self.users = users
        self.passwords_unencrypted = passwords_unencrypted
        # Failed logins are audited where the audit log can take them (server.audit.AuditLog).
        self.audit = audit if isinstance(audit, FailureAuditor) else None
        self.throttle = throttle if throttle is not None else LoginThrottle()

    async def verify(self, address: str, username: str | None, password: str | None
                     ) -> User | None:
        """Check a UserName token (throttled, scrypt in a worker thread); None refuses it."""
        if self.users is None:
            return None
        name = username or ""
        try:
            result = await self.throttle.check(self.users, self.audit, address, name,
                                               password or "", via="OPC UA",
                                               extra={"via": "opcua"})
        except Exception:
            log.exception("OPC UA login of %r: user store failed", username)
            return None
        account = result.user
        if account is None:
            if result.retry_after_s is not None:  # a flood: not a log line each
                log.debug("OPC UA login of %r from %s refused unchecked: too many failures "
                          "(wait %d s)", username, address, result.retry_after_s)
            else:
                log.warning("OPC UA login of %r from %s refused", username, address)
            return None
        return _SessionUser(role=UserRole.User, name=account.name, rights=account.role)

    def get_user(self, iserver: InternalServer, username: str | None = None,
                 password: str | None = None, certificate: object = None) -> User | None:
        """The session user of an ActivateSession; None refuses it (Bad_UserAccessDenied)."""
        # UserRole.User for every session: asyncua's SimpleRoleRuleset refuses the Anonymous
        # role every service, Read included, and Admin may add and delete nodes. A non-admin
        # writes only nodes with CurrentWrite access, and this address space has none.
        if username is None and password is None:  # an anonymous token
            return _SessionUser(role=UserRole.User)
        # Called synchronously by asyncua: only the user `_Processor` verified beforehand,
        # never a password check here (it would hold the event loop).
        verified = _VERIFIED.get()
        if verified is None or (verified.username, verified.password) != (username, password):
            log.error("OPC UA login of %r refused: its token was not verified beforehand "
                      "(is the server a server.opcua.users._Server?)", username)
            return None
        return verified.user


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


_ACTIVATE = _ns0(ObjectIds.ActivateSessionRequest_Encoding_DefaultBinary)


class _Processor(UaProcessor):
    """asyncua's message processor, verifying a UserName token before ActivateSession."""

    async def process_message(self, seqhdr: Any, body: Buffer) -> Any:
        """Process one message; an ActivateSession's user name is checked first, awaited."""
        manager = self.iserver.user_manager
        if not isinstance(manager, _UserManager) or nodeid_from_binary(body.copy()) != _ACTIVATE:
            return await super().process_message(seqhdr, body)  # type: ignore[no-untyped-call]
        token = _VERIFIED.set(await self._verify(manager, body.copy()))
        try:
            return await super().process_message(seqhdr, body)  # type: ignore[no-untyped-call]
        finally:
            _VERIFIED.reset(token)

    async def _verify(self, manager: _UserManager, body: Buffer) -> _Verified | None:
        """The outcome of the request's UserName token; None if it has none or is garbled
        (ActivateSession then answers as asyncua does)."""
        try:
            nodeid_from_binary(body)
            header = struct_from_binary(ua.RequestHeader, body)
            params = struct_from_binary(ua.ActivateSessionParameters, body)
            id_token = params.UserIdentityToken
            if not isinstance(id_token, ua.UserNameIdentityToken):
                return None
            # A reconnect activates a live session of another channel (as asyncua finds it).
            session = self.session or self.iserver.lookup_external_session(
                header.AuthenticationToken)
            if session is None:
                return None
            username, password = self.iserver.decrypt_user_token(session, id_token)
        except Exception:  # asyncua's own parsing and decryption answer it just the same
            return None
        address = str(self.name[0]) if isinstance(self.name, tuple) and self.name else ""
        mode = getattr(self._connection.security_policy, "Mode", ua.MessageSecurityMode.None_)
        if mode != ua.MessageSecurityMode.SignAndEncrypt and not manager.passwords_unencrypted:
            # The channel is not encrypted: the password may have been readable on the wire,
            # and whatever it grants would travel in clear. Refused before it is checked.
            log.warning("OPC UA login of %r from %s refused: user names only on a "
                        "SignAndEncrypt channel (opcua.passwords_on_unencrypted)", username,
                        address)
            return _Verified(username, password, None)
        return _Verified(username, password, await manager.verify(address, username, password))


class _Protocol(OPCUAProtocol):
    """asyncua's connection protocol with a `_Processor`."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Accept the connection as asyncua does, then put in the processor."""
        super().connection_made(transport)
        if self.processor is not None:  # None: refused at max_connections
            processor = _Processor(self.iserver, self.transport, self.limits)
            processor.set_policies(self.policies)  # type: ignore[no-untyped-call]
            self.processor = processor


class _BinaryServer(BinaryServer):
    """asyncua's TCP server making `_Protocol` connections."""

    def _make_protocol(self) -> OPCUAProtocol:
        return _Protocol(iserver=self.iserver, policies=self._policies, clients=self.clients,
                         closing_tasks=self.closing_tasks, limits=self.limits)


class _Server(Server):
    """asyncua's Server listening with `_BinaryServer`; stop writes the pending audit."""

    async def start(self) -> None:
        """asyncua's Server.start (2.1), with `_BinaryServer` in place of BinaryServer."""
        if self.iserver.certificate is not None:
            uacrypto.check_certificate(self.iserver.certificate, self._application_uri,
                                       socket.gethostname())
        await self._setup_server_nodes()
        await self.iserver.start()
        try:
            host, port = self._get_bind_socket_info()
            # None as asyncua passes it: create_server then binds every interface/a free port.
            self.bserver = _BinaryServer(self.iserver, cast(str, host), cast(int, port),
                                         self.limits)
            self.bserver.set_policies(self._policies)
            await self.bserver.start()
        except Exception:  # the caller says what failed (the sink: a SinkError naming it)
            await self.iserver.stop()
            raise

    async def stop(self) -> None:
        """Stop as asyncua does, then write the failed logins still being summed up."""
        await super().stop()
        manager = self.iserver.user_manager
        if isinstance(manager, _UserManager):
            await manager.throttle.flush()
