"""Per-session languages, BuildInfo and the server diagnostics summary of the OPC UA sink.

asyncua stores one LocalizedText per attribute and ignores the LocaleIds a client sends
with ActivateSession. `_LocaleSession` keeps the language those LocaleIds choose (OPC UA
Part 4, 5.6.3: the first one the server has, a language alone matching its regions) and
answers Read and Browse with the DisplayName and Description in it; the stored text is
the English one. `_LocaleInternalServer` makes such sessions and keeps the counts of
Server.ServerDiagnostics.ServerDiagnosticsSummary, written once a second.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.metadata
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from asyncua import ua
from asyncua.common.utils import ServiceError
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.internal_session import InternalSession, SessionState
from asyncua.server.server import Server
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes

from server.opcua.layout import EN, ZH, NodeTexts, _ns0
from server.opcua.users import _CallerSession, _InternalServer

log = logging.getLogger(__name__)

PRODUCT_NAME = "carbonscada"
PRODUCT_URI = "urn:carbonscada"
MANUFACTURER_NAME = "carbonscada project"

_DISPLAY_NAME = AttributeIds.DisplayName
_DESCRIPTION = AttributeIds.Description
# Refusals for who the client is rather than what it sent (counted as security rejections).
_SECURITY_REJECTIONS = frozenset({StatusCodes.BadUserAccessDenied,
                                  StatusCodes.BadIdentityTokenRejected,
                                  StatusCodes.BadIdentityTokenInvalid,
                                  StatusCodes.BadSecurityChecksFailed})
_DIAGNOSTICS_PERIOD_S = 1.0
_SUMMARY = "Server_ServerDiagnostics_ServerDiagnosticsSummary"  # ObjectIds name prefix


def choose_locale(locale_ids: Sequence[str]) -> str:
    """EN or ZH: the first of the client's LocaleIds whose language the server has."""
    for locale_id in locale_ids:
        language = locale_id.split("-")[0].split("_")[0].lower()
        if language == "zh":
            return ZH
        if language == "en":
            return EN
    return EN


def _software_version() -> str:
    try:
        return importlib.metadata.version(PRODUCT_NAME)
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "0+unknown"


async def set_build_info(server: Server) -> None:
    """Server.ServerStatus.BuildInfo: carbonscada, its installed version, the start date.

    BuildDate is when the installed package was built, taken as the time its metadata
    was written; without it, the start of the server.
    """
    version = _software_version()
    built = datetime.now(UTC)
    try:
        dist = importlib.metadata.distribution(PRODUCT_NAME)
        path = getattr(dist, "_path", None)  # the .dist-info directory, when installed
        if path is not None:
            built = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    except (importlib.metadata.PackageNotFoundError, OSError):
        pass
    await server.set_build_info(PRODUCT_URI, MANUFACTURER_NAME, PRODUCT_NAME, version,
                                version, built)


class _LocaleSession(_CallerSession):
    """A client session answering DisplayName and Description in its LocaleIds' language."""

    locale: str = EN

    @property
    def _server(self) -> _LocaleInternalServer | None:
        iserver = self.iserver
        return iserver if isinstance(iserver, _LocaleInternalServer) else None

    def activate_session(self, params: ua.ActivateSessionParameters,
                         peer_certificate: bytes | None) -> ua.ActivateSessionResult:
        """Activate as asyncua does, keep the chosen language, count a refusal."""
        first = self.state == SessionState.Created
        try:
            result = super().activate_session(params, peer_certificate)
        except ServiceError as exc:
            if first and (server := self._server) is not None:
                server.session_rejected(exc.code in _SECURITY_REJECTIONS)
            raise
        self.locale = choose_locale(params.LocaleIds or [])
        return result

    async def close_session(self, delete_subs: bool = True) -> None:
        """Close as asyncua does; a close by the idle watchdog counts as a timeout."""
        timed_out = (self.state != SessionState.Closed and self._timeout_task is not None
                     and self._timeout_task is asyncio.current_task())
        await super().close_session(delete_subs)
        if timed_out and (server := self._server) is not None:
            server.diagnostics.SessionTimeoutCount += 1

    async def read(self, params: ua.ReadParameters) -> list[ua.DataValue]:
        """Read, with DisplayName and Description in the session's language."""
        results = await super().read(params)
        server = self._server
        if self.locale == EN or server is None:  # the stored text is the English one
            return results
        out = list(results)
        for i, (rv, dv) in enumerate(zip(params.NodesToRead, results, strict=True)):
            if rv.AttributeId not in (_DISPLAY_NAME, _DESCRIPTION) or not (dv.StatusCode is None
                                                                 or dv.StatusCode.is_good()):
                continue
            texts = server.texts.get(rv.NodeId)
            if texts is None:
                continue
            text = (texts.display(self.locale) if rv.AttributeId == _DISPLAY_NAME
                    else texts.description(self.locale))
            # A new DataValue: the stored one is shared by every session.
            out[i] = dataclasses.replace(dv, Value=ua.Variant(text, ua.VariantType.LocalizedText))
        return out

    async def browse(self, params: ua.BrowseParameters) -> list[ua.BrowseResult]:
        """Browse, with the references' DisplayName in the session's language."""
        results = await super().browse(params)
        server = self._server
        if self.locale == EN or server is None:
            return results
        texts = server.texts
        # New results and references: asyncua hands out the stored ReferenceDescriptions.
        return [dataclasses.replace(res, References=[
            dataclasses.replace(ref, DisplayName=texts[ref.NodeId].display(self.locale))
            if ref.NodeId in texts else ref for ref in res.References]) for res in results]

    async def create_subscription(self, params: ua.CreateSubscriptionParameters,
                                  callback: Any, request_callback: Any = None
                                  ) -> ua.CreateSubscriptionResult:
        """Create as asyncua does, and count it."""
        result = await super().create_subscription(params, callback, request_callback)
        if (server := self._server) is not None:
            server.diagnostics.CumulatedSubscriptionCount += 1
        return result


class _LocaleInternalServer(_InternalServer):
    """asyncua's internal server with `_LocaleSession` sessions and real diagnostics."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.texts: dict[ua.NodeId, NodeTexts] = {}  # set by the sink from its layout
        self.diagnostics = ua.ServerDiagnosticsSummaryDataType()
        self._sessions: list[_LocaleSession] = []
        self._diagnostics_task: asyncio.Task[None] | None = None

    def create_session(self, name: str, user: User | None = None,
                       external: bool = False) -> InternalSession:
        """A client session for a connection, counted."""
        session = _LocaleSession(self, self.aspace, self.subscription_service, name,
                                 user=user or User(role=UserRole.Anonymous), external=external)
        self.diagnostics.CumulatedSessionCount += 1
        self._sessions.append(session)
        return session

    def session_rejected(self, security: bool) -> None:
        """Count an ActivateSession refused (for security when `security`)."""
        self.diagnostics.RejectedSessionCount += 1
        if security:
            self.diagnostics.SecurityRejectedSessionCount += 1

    def _update_counts(self) -> ua.ServerDiagnosticsSummaryDataType:
        d = self.diagnostics
        self._sessions = [s for s in self._sessions if s.state != SessionState.Closed]
        d.CurrentSessionCount = sum(s.state == SessionState.Activated for s in self._sessions)
        subs = list(self.subscription_service.subscriptions.values())
        d.CurrentSubscriptionCount = len(subs)
        d.PublishingIntervalCount = len({s.data.RevisedPublishingInterval for s in subs})
        return d

    async def write_diagnostics(self) -> None:
        """Write ServerDiagnosticsSummary and its component variables."""
        d = self._update_counts()
        await self.write_attribute_value(
            _ns0(ObjectIds.Server_ServerDiagnostics_ServerDiagnosticsSummary),
            ua.DataValue(ua.Variant(dataclasses.replace(d), ua.VariantType.ExtensionObject)))
        for f in dataclasses.fields(d):
            ident = getattr(ObjectIds, f"{_SUMMARY}_{f.name}", None)
            if ident is not None:
                await self.write_attribute_value(_ns0(ident), ua.DataValue(
                    ua.Variant(getattr(d, f.name), ua.VariantType.UInt32)))

    async def start(self) -> None:
        """Start as asyncua does; diagnostics on, written once a second."""
        await super().start()
        await self.write_attribute_value(
            _ns0(ObjectIds.Server_ServerDiagnostics_EnabledFlag),
            ua.DataValue(ua.Variant(True, ua.VariantType.Boolean)))
        await self.write_diagnostics()
        self._diagnostics_task = asyncio.create_task(self._diagnostics_loop(),
                                                     name="opcua-diagnostics")

    async def stop(self) -> None:
        """Stop the diagnostics, then as asyncua does."""
        task, self._diagnostics_task = self._diagnostics_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await super().stop()

    async def _diagnostics_loop(self) -> None:
        while True:
            await asyncio.sleep(_DIAGNOSTICS_PERIOD_S)
            try:
                await self.write_diagnostics()
            except Exception:  # a diagnostics failure must not stop the server
                log.exception("OPC UA diagnostics update failed")
