"""The OPC UA sink: publishes minute results and raw tag values to DCS / SCADA clients."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, cast
from zoneinfo import ZoneInfo

from asyncua import ua
from asyncua.common.instantiate_util import instantiate
from asyncua.server.server import Server
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes

from compute.assets import CompliancePosition
from compute.boundaries import rollup, tree_of
from compute.clock import PlantClock
from compute.co2e_today import CO2eToday
from compute.performance import Performance
from model.errors import SinkError, os_error_text
from model.flags import DataFlag
from model.protocols import ActionAuditor, AlarmControl, Authenticator
from model.records import (
    AlarmEvent,
    MinuteResult,
    PeriodRecords,
    SampleBlock,
    SourceMinute,
    UnitMinute,
)
from model.states import AckState
from server.config import PlantConfig
from server.opcua.bulk import add_nodes_bulk, write_initial
from server.opcua.conditions import (
    _ACKNOWLEDGE,
    _ALARM_CONDITION_TYPE,
    _CONDITION_METHODS,
    _CONFIRM,
    _REFRESH_METHODS,
    _SERVER,
    _SHELVED_STATE_MACHINE_TYPE,
    _SHELVING_METHODS,
    ConditionMethods,
    _check,
    _Condition,
    _condition_extras,
    _event_fields,
    _Field,
    _new_event,
    _reference,
    _RulesChange,
    restore_messages,
)
from server.opcua.history import (
    MinuteHistory,
    historize,
    install,
)
from server.opcua.layout import (
    _GOOD,
    _SUBNORMAL,
    _WAITING,
    _Layout,
    _ns0,
    _status,
    _ts,
    build_layout,
    build_layout_async,
    hour_status,
    site_namespace,
    status_of,
    total_status_of,
    value_status,
)
from server.opcua.locales import _LocaleInternalServer, set_build_info
from server.opcua.minutes import SourceColumnWriter
from server.opcua.pki import ClientValidator, Pki, host_names
from server.opcua.uncertainty import total_items, write_source_uncertainty
from server.opcua.users import (
    _Server,
    _UserManager,
)
from server.opcua.writer import SampleWriter, ValueWriter

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

_EVENT_IDS_KEPT = 32  # EventIds per condition that Acknowledge accepts
_QUEUE_SIZE = 10_000  # alarm transitions waiting to be published
_Rec = TypeVar("_Rec", SourceMinute, UnitMinute)



def _figure(value: float, ts: ua.DateTime, now: ua.DateTime) -> ua.DataValue:
    """An accounting figure (no flag of its own) as a DataValue: Good unless NaN."""
    return ua.DataValue(ua.Variant(float(value), ua.VariantType.Double),
                        value_status(float(value), _GOOD), SourceTimestamp=ts,
                        ServerTimestamp=now)

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
        self._tree = tree_of(config)  # the boundaries the processes' values roll up
        self._server: Server | None = None
        # Value writes without asyncua's per-write deepcopy (writer.py); set by start().
        self._writer: ValueWriter | None = None
        self._samples: SampleWriter | None = None
        self._minute_sources: SourceColumnWriter | None = None
        # The sources' running year totals of the latest minute (ids, t): the masses of
        # the year-to-date uncertainty written with each closed hour (uncertainty.py).
        self._ytd_t: tuple[tuple[str, ...], list[float]] | None = None
        self._zone = ZoneInfo(config.site.timezone)
        # The units' CO2eToday: CO2Today + their closed hours' other gases of the day, and
        # the latest minute's units, to write it again when an hour of the day closes.
        self.co2e_today = CO2eToday(PlantClock(config.clock.minute_seconds,
                                                config.site.timezone))
        self._last_units: tuple[UnitMinute, ...] = ()
        self._conditions: dict[str, _Condition] = {}
        self._by_node: dict[ua.NodeId, _Condition] = {}
        # The condition methods (conditions.py) share these dictionaries with the sink.
        self._methods = ConditionMethods(users, alarms, audit, self._by_node, self._conditions,
                                         lambda: self._server, lambda: self._layout.site)
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
        layout = await build_layout_async(
            self.config, await server.register_namespace(self.namespace_uri))
        series = await historize(layout) if self.history is not None else {}
        iserver.texts = layout.texts  # DisplayName and Description in the session's language
        results = await add_nodes_bulk(server.iserver, layout.items)  # linear, yields
        for item, res in zip(layout.items, results, strict=True):
            if not res.StatusCode.is_good():
                raise SinkError(f"OPC UA: cannot add node {item.RequestedNewNodeId.to_string()}: "
                                f"{res.StatusCode.name}")
        now = _ts(datetime.now(UTC))
        await write_initial(server.iserver, layout.initial, _WAITING, now)
        writer = ValueWriter(server)
        await write_source_uncertainty(writer, layout, now)  # the sources' own figures
        if self.history is not None:
            await install(server.iserver, layout, self.history, series, self.config.site.id,
                          self._zone)
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
        self._writer = writer
        self._samples = SampleWriter(self._writer, layout.tags)
        self._minute_sources = SourceColumnWriter(self._writer, layout)

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

    def _value_writer(self) -> ValueWriter:
        if self._server is None or self._writer is None:
            raise SinkError("OPC UA sink is not started")
        return self._writer

    async def on_minute(self, result: MinuteResult) -> None:
        """Write every source and unit variable of one minute result."""
        writer = self._value_writer()
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

        items: list[tuple[ua.NodeId, ua.DataValue]] = []

        def write(entry: tuple[list[tuple[ua.NodeId, Callable[[_Rec], float], bool]],
                               ua.NodeId] | None, record: _Rec) -> None:
            if entry is None:  # not in this server's address space
                return
            writes, flag_node = entry
            status, total = status_of(record.flag), total_status_of(record.flag)
            for nid, get, is_total in writes:
                items.append((nid, dv(get(record), total if is_total else status)))
            items.append((flag_node, flag_dv(record.flag)))

        cols = result.source_columns
        if cols is not None:  # the minute cycle's columns: no record per source
            assert self._minute_sources is not None  # set with the writer
            await self._minute_sources.write(cols, t, now)
            self._ytd_t = (cols.sources, cols.co2_ytd_t.tolist())  # a copy: arrays are reused
        else:
            for src in result.sources:
                write(layout.sources.get(src.source), src)
            if result.sources:
                self._ytd_t = (tuple(s.source for s in result.sources),
                               [s.co2_ytd_t for s in result.sources])
        co2e = self.co2e_today
        for unit in result.units:
            write(layout.units.get(unit.unit), unit)
            nid = layout.unit_co2e_today.get(unit.unit)
            if nid is not None:  # with CO2Today's status: the same running total's
                items.append((nid, dv(co2e.today_t(unit.unit, unit.t, unit.co2_today_t),
                                      total_status_of(unit.flag))))
        self._last_units = result.units
        await writer.write_nodes(items)

    async def on_period(self, records: PeriodRecords) -> None:
        """Write a closed hour's CO2Hour and allowance position, or a closed day's unit values."""
        writer = self._value_writer()
        layout = self._layout
        now = _ts(datetime.now(UTC))

        def dv(value: float, status: ua.StatusCode, t: datetime) -> ua.DataValue:
            # A NaN (e.g. ForecastYearEnd before 30 days of data) is never Good.
            return ua.DataValue(ua.Variant(float(value), ua.VariantType.Double),
                                value_status(value, status), SourceTimestamp=_ts(t),
                                ServerTimestamp=now)

        # The units' and the site's uncertainty of the period (and, with an hour, of the
        # year to date) go in the same block as its other values; computed off the loop.
        masses = {src.source: src.co2_t for src in records.sources}
        ytd = self._ytd_t if records.level == "hour" else None
        ts, ts_end = _ts(records.t), _ts(records.t_end)

        def totals() -> list[tuple[ua.NodeId, ua.DataValue]]:
            out = total_items(layout, records.level, masses, ts, now)
            if ytd is not None:  # as of the end of the hour, as the allowance position
                out += total_items(layout, "ytd", dict(zip(*ytd, strict=True)), ts_end, now)
            return out

        items = await asyncio.to_thread(totals)
        items += self._process_items(records, dv)
        if records.level == "hour":
            for src in records.sources:
                nid = layout.hours.get(src.source)
                if nid is not None:
                    items.append((nid, dv(src.co2_t, hour_status(src), records.t)))
            for unit in records.units:  # the unit's flag says how good its hour is
                status = total_status_of(unit.flag)
                items += [(unid, dv(hget(unit), status, records.t))
                          for unid, hget in layout.unit_hours.get(unit.unit, ())]
            if records.allowance is not None:
                # An accounting figure without a flag, as of the end of the hour.
                items += [(anid, dv(aget(records.allowance), _GOOD, records.t_end))
                          for anid, aget in layout.allowance]
            if self.co2e_today.add_hour(records):
                # The hour's other gases count at once, not from the next minute: the latest
                # minute's CO2Today again, if that minute is of the hour's day (the hour that
                # ends a day closes after the next day's first minute, which starts at 0).
                co2e = self.co2e_today
                for last in self._last_units:
                    nid = layout.unit_co2e_today.get(last.unit)
                    if nid is not None and co2e.covers(last.t):
                        items.append((nid, dv(co2e.today_t(last.unit, last.t, last.co2_today_t),
                                              total_status_of(last.flag), last.t)))
            await writer.write_nodes(items)
            return
        for unit in records.units:
            status = total_status_of(unit.flag)
            for unid, uget, is_diff in layout.unit_days.get(unit.unit, ()):
                code = (_status(StatusCodes.UncertainEngineeringUnitsExceeded)
                        if is_diff and unit.reconciliation_exceeded else status)
                items.append((unid, dv(uget(unit), code, records.t)))
        await writer.write_nodes(items)

    def _process_items(self, records: PeriodRecords,
                       dv: Callable[[float, ua.StatusCode, datetime], ua.DataValue],
                       ) -> list[tuple[ua.NodeId, ua.DataValue]]:
        """The processes' CO2, CO2e and share of the site in this closed hour or day: Good
        when every facility below is valid, Uncertain when some is not, Bad without a value."""
        pvars = self._layout.processes.get(records.level, {})
        if not pvars:
            return []
        out: list[tuple[ua.NodeId, ua.DataValue]] = []
        for node in rollup(self._tree, [records]).children:
            status = _GOOD if node.valid else _SUBNORMAL
            out += [(nid, dv(get(node), status, records.t)) for nid, get in pvars[node.id]]
        return out

    async def on_carbon_position(self, position: CompliancePosition,
                                 t: datetime | None = None) -> None:
        """Write the ledger's compliance position (Allowance.Holdings, .Deficit …), as of
        `t` (default now), in one block. An accounting figure: Good unless missing (NaN,
        e.g. CarbonPrice before any price was entered)."""
        writer = self._value_writer()
        now = _ts(datetime.now(UTC))
        ts = _ts(t) if t is not None else now
        await writer.write_nodes((nid, _figure(get(position), ts, now))
                                 for nid, get in self._layout.carbon)

    async def on_carbon_performance(self, perf: Performance, t: datetime | None = None) -> None:
        """Write the year's carbon performance (the units' and the site's Performance
        objects), as of `t` (default now), in one block: Good unless missing (NaN: no
        target or baseline configured, no output to date)."""
        writer = self._value_writer()
        now = _ts(datetime.now(UTC))
        ts = _ts(t) if t is not None else now
        await writer.write_nodes(
            (nid, _figure(get(row), ts, now))
            for ident, writes in self._layout.performance.items()
            if (row := perf.row(ident)) is not None for nid, get in writes)

    async def on_samples(self, block: SampleBlock) -> None:
        """Write the latest value of each raw tag in the block; unknown tags are ignored."""
        self._value_writer()
        assert self._samples is not None  # set with the writer
        await self._samples.write(block, _ts(datetime.now(UTC)))

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
            isession.add_method_callback(_ns0(method), self._methods.condition_refresh)
        isession.add_method_callback(_ACKNOWLEDGE, self._methods.acknowledge)
        isession.add_method_callback(_CONFIRM, self._methods.method("Confirm"))
        for name, method in (*_CONDITION_METHODS.items(), *_SHELVING_METHODS.items()):
            isession.add_method_callback(_ns0(method), self._methods.method(name))
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
            if self.history is not None:  # an acknowledged alarm keeps its text as Message
                await restore_messages(self._conditions, current, self.history)
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
        methods = self._methods
        for method, callback in (("Acknowledge", methods.acknowledge),
                                 *((m, methods.method(m)) for m in _CONDITION_METHODS),
                                 *((f"ShelvingState.{m}", methods.method(m))
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
