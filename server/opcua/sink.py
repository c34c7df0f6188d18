"""The OPC UA sink: publishes minute results and raw tag values to DCS / SCADA clients."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar, cast
from zoneinfo import ZoneInfo

from asyncua import ua
from asyncua.common.instantiate_util import instantiate
from asyncua.server.server import Server
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes

from alarms.state import MAX_SHELVE
from model.accounts import has_role
from model.errors import AlarmActionError, SinkError, UnknownRuleError, os_error_text
from model.flags import DataFlag
from model.protocols import ActionAuditor, AlarmControl, Authenticator
from model.records import (
    AlarmEvent,
    AuditRecord,
    MinuteResult,
    PeriodRecords,
    Sample,
    SourceMinute,
    UnitMinute,
)
from model.states import AckState
from server.config import PlantConfig
from server.opcua.conditions import (
    _ACKNOWLEDGE,
    _ALARM_CONDITION_TYPE,
    _CONDITION_METHODS,
    _CONFIRM,
    _REFRESH_METHODS,
    _SERVER,
    _SHELVED_STATE_MACHINE_TYPE,
    _SHELVING_METHODS,
    _bad_arguments,
    _check,
    _Condition,
    _condition_extras,
    _event_fields,
    _Field,
    _new_event,
    _reference,
    _refresh_event,
    _RulesChange,
)
from server.opcua.history import (
    MinuteHistory,
    historized_series,
    install,
    mark_event_history,
    mark_historized,
)
from server.opcua.layout import (
    _GOOD,
    _WAITING,
    _Layout,
    _ns0,
    _status,
    _ts,
    build_layout,
    hour_status,
    site_namespace,
    status_of,
    total_status_of,
    value_status,
)
from server.opcua.locales import _LocaleInternalServer, set_build_info
from server.opcua.pki import ClientValidator, Pki, host_names
from server.opcua.users import (
    _CALLER,
    ACKNOWLEDGE_ROLE,
    _Server,
    _SessionUser,
    _UserManager,
)

log = logging.getLogger(__name__)


class _DropFailureReports(logging.Filter):
    """Drops records that carry an exception: the exception itself is raised, and said."""

    def filter(self, record: logging.LogRecord) -> bool:
        """False (drop) for a record with exc_info."""
        return record.exc_info is None


@contextlib.contextmanager
def _quiet_start_failure() -> Iterator[None]:
    """While asyncua's Server.start runs: not its own traceback of a failed start.

    asyncua logs "error starting server" with the traceback and re-raises; start()
    turns a failed bind into one SinkError line naming the endpoint, so the record
    would only put a traceback before it. Other failures still propagate.
    """
    logger = logging.getLogger("asyncua.server.server")
    drop = _DropFailureReports()
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)

_SERVICE_ROLE = "engineer"  # Enable / Disable: as the web's out-of-service actions
_EVENT_IDS_KEPT = 32  # EventIds per condition that Acknowledge accepts
_QUEUE_SIZE = 10_000  # alarm transitions waiting to be published
_Rec = TypeVar("_Rec", SourceMinute, UnitMinute)
_CallResult = ua.CallMethodResult | ua.StatusCode


def _event_and_comment(args: Sequence[ua.Variant]) -> tuple[bytes, str] | ua.CallMethodResult:
    """The (EventId, Comment) arguments of Acknowledge, AddComment and Confirm, or the
    BadTypeMismatch result naming the argument that is wrong."""
    event_id, comment = args[0].Value, args[1].Value
    if isinstance(comment, ua.LocalizedText):
        comment = comment.Text or ""
    if not isinstance(event_id, bytes) or not isinstance(comment, str):
        return _bad_arguments(StatusCodes.BadTypeMismatch,
                              [isinstance(event_id, bytes), isinstance(comment, str)])
    return event_id, comment


class OpcUaSink:
    """Sink that serves the plant's results, raw tags and alarms over OPC UA (asyncua server).

    `alarms` answers the condition methods (conditions.py) and gives the current alarms
    at start and every change of rules; `audit` receives the audit record of every action
    made through OPC UA. The runtime hands every alarm transition to `on_alarm`. `users`
    checks user-name logins; only a user with role operator or higher may acknowledge,
    comment, confirm or shelve, engineer or higher Enable / Disable, so without `users`
    (anonymous sessions only) every method is refused with Bad_UserAccessDenied.
    `history` (the historian) answers HistoryRead of the result variables and of the alarm
    journal (history.py); without it no variable is Historizing.
    """

    name = "opcua"

    def __init__(self, config: PlantConfig, *, alarms: AlarmControl | None = None,
                 audit: ActionAuditor | None = None, users: Authenticator | None = None,
                 history: MinuteHistory | None = None) -> None:
        self.config = config
        self.namespace_uri = site_namespace(config)
        self.application_uri = f"{self.namespace_uri}:server"  # also in the certificate
        self.alarms = alarms
        self.audit = audit
        self.users = users
        self.history = history  # answers HistoryRead; without it nothing is historized
        # A dry run, so that clashing NodeIds are reported before anything starts.
        self._layout = build_layout(config, ns=0)
        self._server: Server | None = None
        self._zone = ZoneInfo(config.site.timezone)
        self._conditions: dict[str, _Condition] = {}
        self._by_node: dict[ua.NodeId, _Condition] = {}
        # Set while events are taken; rule changes go in order with the transitions.
        self._queue: asyncio.Queue[AlarmEvent | _RulesChange] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._alarm_error = ""  # the last alarm-publishing failure logged
        self._unsubscribe_rules: Callable[[], None] | None = None

    @property
    def server(self) -> Server | None:
        """The running asyncua server, None before start() and after stop()."""
        return self._server

    async def start(self) -> None:
        """Build the address space and the alarm conditions, and listen on the endpoint."""
        # _Server: user-name tokens are checked (scrypt in a thread) before ActivateSession.
        iserver = _LocaleInternalServer(
            user_manager=_UserManager(
            self.users, self.audit,
            passwords_unencrypted=self.config.opcua.passwords_on_unencrypted))
        server = _Server(iserver=iserver)
        await server.init()
        await set_build_info(server)
        server.set_endpoint(self.config.opcua.endpoint)
        server.set_server_name(f"carbonscada {self.config.site.name}")
        await server.set_application_uri(self.application_uri)
        await self._configure_security(server)
        layout = build_layout(self.config, await server.register_namespace(self.namespace_uri))
        if self.history is not None:
            mark_historized(layout, historized_series(layout).keys())
            mark_event_history(layout)
        iserver.texts = layout.texts  # DisplayName and Description in the session's language
        results = await server.iserver.isession.add_nodes(layout.items)
        for item, res in zip(layout.items, results, strict=True):
            if not res.StatusCode.is_good():
                raise SinkError(f"OPC UA: cannot add node {item.RequestedNewNodeId.to_string()}: "
                                f"{res.StatusCode.name}")
        now = _ts(datetime.now(UTC))
        for nid, initial in layout.initial:
            await server.write_attribute_value(nid, ua.DataValue(initial, _WAITING,
                                                                 ServerTimestamp=now))
        if self.history is not None:
            await install(server.iserver, layout, self.history, self.config.site.id, self._zone)
        await self._start_alarms(server, layout)
        try:
            with _quiet_start_failure():
                await server.start()
        except OSError as exc:
            await self._stop_alarms()
            raise SinkError(f"OPC UA: cannot listen on {self.config.opcua.endpoint}: "
                            f"{os_error_text(exc)}") from None
        self._layout = layout
        self._server = server

    async def _configure_security(self, server: Server) -> None:
        """Endpoints, the server certificate, the client trust list and the identities.

        Every configured policy in every configured mode; None only where the file allows
        it. The certificate is made on first run (pki.py) for the server's ApplicationUri.
        """
        cfg = self.config.opcua
        policies = [getattr(ua.SecurityPolicyType, f"{p.replace('_', '')}_{m}")
                    for p in cfg.security_policies for m in cfg.security_modes]
        if cfg.allow_none:
            policies.append(ua.SecurityPolicyType.NoSecurity)
        server.set_security_policy(policies)
        pki = Pki(Path(cfg.pki_dir))
        own = await asyncio.to_thread(pki.own_certificate, self.application_uri,
                                      f"carbonscada {self.config.site.id}",
                                      host_names(cfg.endpoint_host()))
        await server.load_certificate(str(own.cert))
        await server.load_private_key(str(own.key))
        server.set_certificate_validator(ClientValidator(pki, cfg.trust_all_clients))
        tokens: list[type] = [ua.AnonymousIdentityToken] if cfg.anonymous else []
        if self.users is not None:
            tokens.append(ua.UserNameIdentityToken)
        server.set_identity_tokens(tokens)

    def _running(self) -> Server:
        if self._server is None:
            raise SinkError("OPC UA sink is not started")
        return self._server

    async def on_minute(self, result: MinuteResult) -> None:
        """Write every source and unit variable of one minute result."""
        server = self._running()
        layout = self._layout
        t = _ts(result.t)
        now = _ts(datetime.now(UTC))

        def dv(value: float, status: ua.StatusCode) -> ua.DataValue:
            return ua.DataValue(ua.Variant(float(value), ua.VariantType.Double),
                                value_status(value, status), SourceTimestamp=t,
                                ServerTimestamp=now)

        def flag_dv(flag: DataFlag) -> ua.DataValue:
            # The flag is always a good value: it is what explains the others' status.
            return ua.DataValue(ua.Variant(flag.name, ua.VariantType.String), _GOOD,
                                SourceTimestamp=t, ServerTimestamp=now)

        async def write(entry: tuple[list[tuple[ua.NodeId, Callable[[_Rec], float], bool]],
                                     ua.NodeId] | None, record: _Rec) -> None:
            if entry is None:  # not in this server's address space
                return
            writes, flag_node = entry
            status, total = status_of(record.flag), total_status_of(record.flag)
            for nid, get, is_total in writes:
                await server.write_attribute_value(
                    nid, dv(get(record), total if is_total else status))
            await server.write_attribute_value(flag_node, flag_dv(record.flag))

        for src in result.sources:
            await write(layout.sources.get(src.source), src)
        for unit in result.units:
            await write(layout.units.get(unit.unit), unit)

    async def on_period(self, records: PeriodRecords) -> None:
        """Write a closed hour's CO2Hour and allowance position, or a closed day's unit values."""
        server = self._running()
        layout = self._layout
        now = _ts(datetime.now(UTC))

        def dv(value: float, status: ua.StatusCode, t: datetime) -> ua.DataValue:
            # A NaN (e.g. ForecastYearEnd before 30 days of data) is never Good.
            return ua.DataValue(ua.Variant(float(value), ua.VariantType.Double),
                                value_status(value, status), SourceTimestamp=_ts(t),
                                ServerTimestamp=now)

        if records.level == "hour":
            for src in records.sources:
                nid = layout.hours.get(src.source)
                if nid is not None:
                    await server.write_attribute_value(nid, dv(src.co2_t, hour_status(src),
                                                               records.t))
            if records.allowance is not None:
                # An accounting figure without a flag, as of the end of the hour.
                for anid, aget in layout.allowance:
                    await server.write_attribute_value(
                        anid, dv(aget(records.allowance), _GOOD, records.t_end))
            return
        for unit in records.units:
            status = total_status_of(unit.flag)
            for unid, uget, is_diff in layout.unit_days.get(unit.unit, ()):
                code = (_status(StatusCodes.UncertainEngineeringUnitsExceeded)
                        if is_diff and unit.reconciliation_exceeded else status)
                await server.write_attribute_value(unid, dv(uget(unit), code, records.t))

    async def on_samples(self, samples: Sequence[Sample]) -> None:
        """Write the latest value of each raw tag in the batch; unknown tags are ignored."""
        server = self._running()
        tags = self._layout.tags
        now = _ts(datetime.now(UTC))
        for tag, sample in {s.tag: s for s in samples}.items():
            nid = tags.get(tag)
            if nid is None:
                continue
            await server.write_attribute_value(nid, ua.DataValue(
                ua.Variant(float(sample.value), ua.VariantType.Double),
                value_status(sample.value, status_of(sample.flag)),
                SourceTimestamp=_ts(sample.t), ServerTimestamp=now))

    async def stop(self) -> None:
        """Stop the server and release its port."""
        await self._stop_alarms()
        server, self._server = self._server, None
        if server is not None:
            await server.stop()

    # --- alarms ---------------------------------------------------------------------------

    def on_alarm(self, event: AlarmEvent) -> None:
        """Publish one alarm transition as an OPC UA event: queued, never blocks or raises.

        Call from the event loop. Before start() and after stop() the event is dropped:
        start() takes the current alarms from `alarms`.
        """
        queue = self._queue
        if queue is None:
            return
        try:
            queue.put_nowait(event)
        except Exception as exc:  # QueueFull: the publisher is stuck
            self._alarm_failed(event.rule, f"event dropped: {type(exc).__name__} {exc}")

    async def _start_alarms(self, server: Server, layout: _Layout) -> None:
        """The site as notifier, the method handlers, a condition per rule, the current
        alarms queued first, and the worker that publishes the queue in order."""
        isession = server.iserver.isession
        _check(await isession.add_references(
            [_reference(_SERVER, ObjectIds.HasNotifier, layout.site)]), "Server HasNotifier site")
        for method in _REFRESH_METHODS:
            isession.add_method_callback(_ns0(method), self._condition_refresh)
        isession.add_method_callback(_ACKNOWLEDGE, self._acknowledge)
        isession.add_method_callback(_CONFIRM, self._method("Confirm"))
        for name, method in (*_CONDITION_METHODS.items(), *_SHELVING_METHODS.items()):
            isession.add_method_callback(_ns0(method), self._method(name))
        if self.alarms is not None:
            self._unsubscribe_rules = self.alarms.on_rules_changed(self._rules_changed)
        current = self.alarms.alarm_list() if self.alarms is not None else []
        queue: asyncio.Queue[AlarmEvent | _RulesChange] = asyncio.Queue(maxsize=_QUEUE_SIZE)
        for event in current:
            queue.put_nowait(event)
        # From here on every transition is newer than the list just taken.
        self._queue = queue
        try:
            for rule in dict.fromkeys([*layout.conditions, *(e.rule for e in current)]):
                await self._add_condition(server, layout, rule)
        except BaseException:
            await self._stop_alarms()
            raise
        self._worker = asyncio.create_task(self._publish_all(server, layout, queue),
                                           name="opcua-alarms")

    async def _stop_alarms(self) -> None:
        self._queue = None
        unsubscribe, self._unsubscribe_rules = self._unsubscribe_rules, None
        if unsubscribe is not None:
            unsubscribe()
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)
        self._conditions.clear()
        self._by_node.clear()

    async def _add_condition(self, server: Server, layout: _Layout, rule: str) -> _Condition:
        """Instantiate AlarmConditionType for `rule` below the Alarms folder."""
        ns = layout.ns
        nid = layout.conditions.get(rule) or ua.NodeId(cast("ua.String", f"Alarms.{rule}"),
                                                      cast("ua.Int16", ns))
        name = layout.rule_names.get(rule) or rule
        isession = server.iserver.isession
        try:
            nodes = await instantiate(
                server.get_node(layout.alarms), server.get_node(_ALARM_CONDITION_TYPE),
                nodeid=nid, bname=ua.QualifiedName(rule, cast("ua.UInt16", ns)),
                dname=ua.LocalizedText(name, "en"), instantiate_optional=False)
        except Exception as exc:
            raise SinkError(f"OPC UA: cannot add the condition of alarm rule {rule!r}: "
                            f"{exc}") from exc
        created = {n.nodeid for n in nodes}
        if nid not in created:
            raise SinkError(f"OPC UA: cannot add the condition of alarm rule {rule!r}: "
                            f"NodeId {nid.to_string()} is taken")
        extras = _condition_extras(nid, ns)
        _check([r.StatusCode for r in await isession.add_nodes(extras)], f"alarm rule {rule!r}")
        created |= {item.RequestedNewNodeId for item in extras}
        prefix = cast(str, nid.Identifier)
        # ShelvingState (optional in the type): the object its shelve methods are called on.
        shelving = ua.NodeId(cast("ua.String", f"{prefix}.ShelvingState"), cast("ua.Int16", ns))
        try:
            created |= {n.nodeid for n in await instantiate(
                server.get_node(nid), server.get_node(_SHELVED_STATE_MACHINE_TYPE),
                nodeid=shelving, bname=ua.QualifiedName("ShelvingState", 0),
                dname=ua.LocalizedText("ShelvingState", "en"), instantiate_optional=False)}
        except Exception as exc:
            raise SinkError(f"OPC UA: cannot add the ShelvingState of alarm rule {rule!r}: "
                            f"{exc}") from exc
        _check(await isession.add_references(
            [_reference(layout.site, ObjectIds.HasCondition, nid)]), f"alarm rule {rule!r}")
        for method, callback in (("Acknowledge", self._acknowledge),
                                 *((m, self._method(m)) for m in _CONDITION_METHODS),
                                 *((f"ShelvingState.{m}", self._method(m))
                                   for m in _SHELVING_METHODS)):
            mid = ua.NodeId(cast("ua.String", f"{prefix}.{method}"), cast("ua.Int16", ns))
            if mid in created:
                isession.add_method_callback(mid, callback)
        cond = _Condition(rule, nid, created)
        self._conditions[rule] = cond
        self._by_node[nid] = cond
        self._by_node[shelving] = cond  # the shelve methods' ObjectId
        await self._write_condition(server, cond, _event_fields(
            cond, layout.site, self.config.site.id, self._zone, b"", datetime.now(UTC)))
        return cond

    async def _publish_all(self, server: Server, layout: _Layout,
                           queue: asyncio.Queue[AlarmEvent | _RulesChange]) -> None:
        while True:
            event = await queue.get()
            try:
                if isinstance(event, _RulesChange):
                    await self._drop_removed(server, layout, event)
                else:
                    await self._publish(server, layout, event)
            except Exception as exc:  # one bad event must not stop the others
                self._alarm_failed(event.rule if isinstance(event, AlarmEvent) else "*",
                                   f"{type(exc).__name__}: {exc}")
            else:
                if self._alarm_error:
                    log.info("OPC UA alarm events are published again")
                    self._alarm_error = ""

    def _alarm_failed(self, rule: str, text: str) -> None:
        if text != self._alarm_error:
            log.error("OPC UA alarm event of rule %s failed: %s", rule, text)
            self._alarm_error = text

    async def _publish(self, server: Server, layout: _Layout, event: AlarmEvent) -> None:
        """One transition: the condition's variables, then its event from both notifiers."""
        cond = self._conditions.get(event.rule) or await self._add_condition(server, layout,
                                                                             event.rule)
        cond.advance(event)
        event_id = uuid.uuid4().bytes
        cond.event_ids[event_id] = cond.acked
        while len(cond.event_ids) > _EVENT_IDS_KEPT:
            del cond.event_ids[next(iter(cond.event_ids))]
        fields = _event_fields(cond, layout.site, self.config.site.id, self._zone, event_id,
                              datetime.now(UTC))
        await self._write_condition(server, cond, fields)
        # asyncua delivers an event only to the monitored items of its emitting node: one
        # copy for clients of the Server object, one for clients of the site object.
        events = [_new_event(notifier, fields) for notifier in (_SERVER, layout.site)]
        cond.retained = events if event.ack_state != AckState.NORMAL else []
        for ev in events:
            await server.iserver.subscription_service.trigger_event(ev)
        if event.cause == "removed":  # the rule's final event: its condition goes
            await self._delete_condition(server, layout, cond)

    def _rules_changed(self, rules: list[dict[str, Any]], user: str, comment: str,
                       t: datetime) -> None:
        """AlarmSink.on_rules_changed listener: queued after the removed rules' events."""
        queue = self._queue
        if queue is None:
            return
        try:
            queue.put_nowait(_RulesChange(frozenset(str(r.get("id")) for r in rules), user,
                                          comment, t))
        except Exception as exc:  # QueueFull: the publisher is stuck
            self._alarm_failed("*", f"rules change dropped: {type(exc).__name__} {exc}")

    async def _drop_removed(self, server: Server, layout: _Layout, change: _RulesChange) -> None:
        """The conditions of rules no longer configured: a final event, then deleted.

        A rule removed while not normal had its "removed" event (and is gone already); one
        removed while normal gets the same event here, so that every client sees it go.
        """
        for rule, cond in list(self._conditions.items()):
            if rule in change.rules:
                continue
            last = cond.last
            await self._publish(server, layout, AlarmEvent(
                rule=rule, t=change.t, state="normal", previous="normal", value=math.nan,
                limit=None, target=last.target if last is not None else "",
                message=f"rule removed by {change.user}: {change.comment} [rule {rule}]",
                message_zh=f"规则已由 {change.user} 删除：{change.comment}［规则 {rule}］",
                ack_state=AckState.NORMAL, previous_ack_state=AckState.NORMAL,
                cause="removed", user=change.user, comment=change.comment))

    async def _delete_condition(self, server: Server, layout: _Layout, cond: _Condition) -> None:
        """Delete a condition's nodes and the references to it (its own set: no scan of the
        whole address space, as asyncua's DeleteTargetReferences does for each node)."""
        self._conditions.pop(cond.rule, None)
        for nid, other in list(self._by_node.items()):
            if other is cond:
                del self._by_node[nid]
        isession = server.iserver.isession
        await isession.delete_references([ua.DeleteReferencesItem(
            SourceNodeId=source, ReferenceTypeId=_ns0(ref), IsForward=True,
            TargetNodeId=cond.node, DeleteBidirectional=True)
            # instantiate puts it below the folder by Organizes (HasComponent elsewhere).
            for source, ref in ((layout.alarms, ObjectIds.Organizes),
                                (layout.alarms, ObjectIds.HasComponent),
                                (layout.site, ObjectIds.HasCondition))])
        await isession.delete_nodes(ua.DeleteNodesParameters(NodesToDelete=[
            ua.DeleteNodesItem(NodeId=nid, DeleteTargetReferences=False) for nid in cond.nodes]))

    async def _write_condition(self, server: Server, cond: _Condition,
                               fields: dict[str, _Field]) -> None:
        """Write the fields that the condition object has as variables (browse path = id)."""
        prefix, ns = cast(str, cond.node.Identifier), cond.node.NamespaceIndex
        now = _ts(datetime.now(UTC))
        for name, (value, vtype) in fields.items():
            nid = ua.NodeId(cast("ua.String", f"{prefix}.{name.replace('/', '.')}"), ns)
            if value is not None and nid in cond.nodes:
                await server.write_attribute_value(nid, ua.DataValue(
                    ua.Variant(value, vtype), _GOOD, ServerTimestamp=now))

    async def _acknowledge(self, parent: ua.NodeId, *args: ua.Variant) -> _CallResult:
        """Acknowledge(EventId, Comment) of a condition; a status code, never an exception."""
        try:
            return await self._acknowledge_call(parent, args)
        except Exception:
            log.exception("OPC UA Acknowledge on %s failed", parent.to_string())
            return _status(StatusCodes.BadInternalError)

    async def _acknowledge_call(self, parent: ua.NodeId,
                                args: tuple[ua.Variant, ...]) -> _CallResult:
        caller = _CALLER.get()
        # Checked first, so that a refused caller learns nothing about conditions or events.
        if (self.users is None or not isinstance(caller, _SessionUser) or caller.name is None
                or not has_role(caller.rights, ACKNOWLEDGE_ROLE)):
            return _status(StatusCodes.BadUserAccessDenied)
        cond = self._by_node.get(parent)
        if cond is None:  # not a condition (Part 9: also when called on the type)
            return _status(StatusCodes.BadNodeIdUnknown)
        if len(args) != 2:
            return _status(StatusCodes.BadArgumentsMissing if len(args) < 2
                           else StatusCodes.BadTooManyArguments)
        parsed = _event_and_comment(args)
        if not isinstance(parsed, tuple):
            return parsed
        event_id, comment = parsed
        if event_id not in cond.event_ids:
            return _status(StatusCodes.BadEventIdUnknown)
        if cond.event_ids[event_id]:  # that notification showed it acknowledged
            return _status(StatusCodes.BadConditionBranchAlreadyAcked)
        if not comment.strip():  # this plant's rule: an acknowledgement says why
            return _bad_arguments(StatusCodes.BadInvalidArgument, [True, False])
        if self.alarms is None:
            return _status(StatusCodes.BadNotSupported)
        try:
            rec = self.alarms.acknowledge(cond.rule, f"opcua:{caller.name}", comment)
        except UnknownRuleError:
            return _status(StatusCodes.BadNodeIdUnknown)
        except AlarmActionError:
            if cond.last is not None and cond.last.ack_state == AckState.OUT_OF_SERVICE:
                return _status(StatusCodes.BadConditionDisabled)
            return _status(StatusCodes.BadConditionBranchAlreadyAcked if cond.acked
                           else StatusCodes.BadInvalidState)
        await self._record(rec)
        return _status(StatusCodes.Good)

    async def _record(self, rec: AuditRecord) -> None:
        if self.audit is None:
            return
        try:
            result = self.audit.append_record(rec)
            if inspect.isawaitable(result):
                await result
        except Exception:  # the acknowledgement stands; the lost record must be seen
            log.exception("audit record of an OPC UA acknowledgement failed: %s", rec)

    def _method(self, name: str) -> Callable[..., Awaitable[_CallResult]]:
        """The callback of one condition or shelving method (type's and instances')."""
        async def call(parent: ua.NodeId, *args: ua.Variant) -> _CallResult:
            try:
                return await self._method_call(name, parent, args)
            except Exception:
                log.exception("OPC UA %s on %s failed", name, parent.to_string())
                return _status(StatusCodes.BadInternalError)
        return call

    async def _method_call(self, name: str, parent: ua.NodeId,
                           args: tuple[ua.Variant, ...]) -> _CallResult:
        """AddComment / Confirm (EventId, Comment), Enable, Disable, TimedShelve
        (ShelvingTime, ms), OneShotShelve, Unshelve: mapped to the alarm engine."""
        caller = _CALLER.get()
        needed = _SERVICE_ROLE if name in ("Enable", "Disable") else ACKNOWLEDGE_ROLE
        # Checked first, so that a refused caller learns nothing about conditions or events.
        if (self.users is None or not isinstance(caller, _SessionUser) or caller.name is None
                or not has_role(caller.rights, needed)):
            return _status(StatusCodes.BadUserAccessDenied)
        cond = self._by_node.get(parent)
        if cond is None:
            return _status(StatusCodes.BadNodeIdUnknown)
        wanted = 2 if name in ("AddComment", "Confirm") else 1 if name == "TimedShelve" else 0
        if len(args) != wanted:
            return _status(StatusCodes.BadArgumentsMissing if len(args) < wanted
                           else StatusCodes.BadTooManyArguments)
        if self.alarms is None:
            return _status(StatusCodes.BadNotSupported)
        mode = cond.last.ack_state if cond.last is not None else AckState.NORMAL
        disabled, shelved = mode == AckState.OUT_OF_SERVICE, mode == AckState.SHELVED
        alarms, user, rule = self.alarms, f"opcua:{caller.name}", cond.rule
        act: Callable[[], AuditRecord]
        if name in ("AddComment", "Confirm"):
            parsed = _event_and_comment(args)
            if not isinstance(parsed, tuple):
                return parsed
            event_id, comment = parsed
            if event_id not in cond.event_ids:
                return _status(StatusCodes.BadEventIdUnknown)
            if disabled:
                return _status(StatusCodes.BadConditionDisabled)
            if name == "Confirm" and cond.confirmed:
                return _status(StatusCodes.BadConditionBranchAlreadyConfirmed)
            if not comment.strip():  # as for Acknowledge: the comment is the point
                return _bad_arguments(StatusCodes.BadInvalidArgument, [True, False])
            note = alarms.confirm if name == "Confirm" else alarms.add_comment
            act = lambda: note(rule, user, comment)  # noqa: E731
        elif name == "Disable":
            if disabled:
                return _status(StatusCodes.BadConditionAlreadyDisabled)
            act = lambda: alarms.remove_from_service(  # noqa: E731
                rule, user, "disabled through OPC UA (Disable)")
        elif name == "Enable":
            if not disabled:
                return _status(StatusCodes.BadConditionAlreadyEnabled)
            act = lambda: alarms.return_to_service(  # noqa: E731
                rule, user, "enabled through OPC UA (Enable)")
        elif disabled:
            return _status(StatusCodes.BadConditionDisabled)
        elif name == "Unshelve":
            if not shelved:
                return _status(StatusCodes.BadConditionNotShelved)
            act = lambda: alarms.unshelve(rule, user, "unshelved through OPC UA")  # noqa: E731
        else:
            if shelved:  # Part 9: no Timed → Timed; a one-shot shelf is a timed one here
                return _status(StatusCodes.BadConditionAlreadyShelved)
            if name == "TimedShelve":
                ms = args[0].Value
                if isinstance(ms, bool) or not isinstance(ms, int | float):
                    return _bad_arguments(StatusCodes.BadTypeMismatch, [False])
                if not 0 < ms <= MAX_SHELVE.total_seconds() * 1000.0:
                    return _status(StatusCodes.BadShelvingTimeOutOfRange)
                span, text = timedelta(milliseconds=ms), "timed shelve through OPC UA"
            else:
                # No shelf here ends at return to normal: the longest one allowed instead.
                span, text = MAX_SHELVE, "one-shot shelve through OPC UA (held the longest allowed)"
            until = datetime.now(UTC) + span
            act = lambda: alarms.shelve(rule, user, f"{text} until "  # noqa: E731
                                        f"{until:%Y-%m-%d %H:%M:%S} UTC", until)
        try:
            rec = act()
        except UnknownRuleError:
            return _status(StatusCodes.BadNodeIdUnknown)
        except AlarmActionError:
            return _status(StatusCodes.BadInvalidState)
        await self._record(rec)
        return _status(StatusCodes.Good)

    async def _condition_refresh(self, parent: ua.NodeId, *args: ua.Variant) -> ua.StatusCode:
        """ConditionRefresh(SubscriptionId) and ConditionRefresh2(SubscriptionId,
        MonitoredItemId): RefreshStart, every retained condition's last event, RefreshEnd."""
        try:
            return await self._refresh(args)
        except Exception:
            log.exception("OPC UA ConditionRefresh failed")
            return _status(StatusCodes.BadInternalError)

    async def _refresh(self, args: tuple[ua.Variant, ...]) -> ua.StatusCode:
        server = self._server
        if server is None:
            return _status(StatusCodes.BadInvalidState)
        try:
            sub_id = int(args[0].Value)
            mid = int(args[1].Value) if len(args) > 1 else None
        except (IndexError, TypeError, ValueError):
            return _status(StatusCodes.BadInvalidArgument)
        sub = server.iserver.subscription_service.subscriptions.get(sub_id)
        if sub is None:
            return _status(StatusCodes.BadSubscriptionIdInvalid)
        items = sub.monitored_item_srv
        notifiers = [_SERVER, self._layout.site]
        if mid is not None:
            # asyncua has no public view of a subscription's items; its own
            # condition_refresh reads the same dictionary.
            data = items._monitored_items.get(mid)
            if data is None:
                return _status(StatusCodes.BadMonitoredItemIdInvalid)
            watched = data.read_value_id.NodeId if data.read_value_id is not None else None
            notifiers = [n for n in notifiers if n == watched]
        for notifier in notifiers:
            await items.trigger_event(_refresh_event(ObjectIds.RefreshStartEventType, notifier),
                                      mid)
        for cond in list(self._conditions.values()):
            for ev in cond.retained:
                if ev.emitting_node in notifiers:
                    await items.trigger_event(ev, mid)
        for notifier in notifiers:
            await items.trigger_event(_refresh_event(ObjectIds.RefreshEndEventType, notifier), mid)
        return _status(StatusCodes.Good)
