"""OPC UA Alarms & Conditions (Part 9): the condition objects, their events and fields.

Alarms: one AlarmConditionType object per alarm rule, ``<site id>/Alarms/<rule>`` (NodeId
``Alarms.<rule>``), with SuppressedState, OutOfServiceState and MessageZh (the Chinese
message) besides the mandatory children. Its SourceNode is the site object, its SourceName
what the rule watches ("source S1 co2_kg"). Every transition is an event notified by the
Server object and by the site object (Server HasNotifier site); a condition not back to
normal keeps Retain, so that ConditionRefresh / ConditionRefresh2 replay its last event.
The methods go to the alarm engine as "opcua:<session user>", audited like the web's
actions, and the new state comes back as an event: Acknowledge, AddComment and Confirm
(operator; the comment goes to Comment, Message stays the condition's), TimedShelve,
OneShotShelve and Unshelve on the ShelvingState object (operator), Disable / Enable =
out of service / back in service (engineer; EnabledState false and Retain false while
disabled, as Part 9 says). The engine has no one-shot shelf ("until it returns to normal"):
OneShotShelve shelves for the longest allowed time (alarms.state.MAX_SHELVE) and shows as
TimedShelved; nor a confirmed state: Confirm is an audited comment that sets ConfirmedState
(false again when the alarm rises). A rule removed at run time gets a final event (Retain
false) and its condition node is deleted. Not implemented: condition branches.
"""

from __future__ import annotations

import inspect
import logging
import uuid
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol, cast
from zoneinfo import ZoneInfo

from asyncua import ua
from asyncua.common.events import Event
from asyncua.server.server import Server
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes

from alarms.state import MAX_SHELVE
from model.accounts import has_role
from model.errors import AlarmActionError, SinkError, UnknownRuleError
from model.protocols import ActionAuditor, AlarmControl, Authenticator
from model.records import AlarmEvent, AuditRecord
from model.states import AckState, Condition
from server.opcua.layout import _GOOD, _READ_ONLY, _ns0, _status
from server.opcua.users import _CALLER, ACKNOWLEDGE_ROLE, _SessionUser

log = logging.getLogger(__name__)

SEVERITY: dict[str, int] = {Condition.ALARM: 800, Condition.WARNING: 500, Condition.NORMAL: 100}
"""OPC UA Severity (1-1000) of each alarm condition."""

_SERVER = _ns0(ObjectIds.Server)
_ALARM_CONDITION_TYPE = _ns0(ObjectIds.AlarmConditionType)
_ACKNOWLEDGE = _ns0(ObjectIds.AcknowledgeableConditionType_Acknowledge)
_CONFIRM = _ns0(ObjectIds.AcknowledgeableConditionType_Confirm)
_CONDITION_METHODS = {"Enable": ObjectIds.ConditionType_Enable,
                      "Disable": ObjectIds.ConditionType_Disable,
                      "AddComment": ObjectIds.ConditionType_AddComment}
"""The condition's own methods besides Acknowledge, by browse name (type method ids)."""
_SHELVING_METHODS = {"TimedShelve": ObjectIds.ShelvedStateMachineType_TimedShelve,
                     "OneShotShelve": ObjectIds.ShelvedStateMachineType_OneShotShelve,
                     "Unshelve": ObjectIds.ShelvedStateMachineType_Unshelve}
"""The ShelvingState object's methods, by browse name (type method ids)."""
_SHELVED_STATE_MACHINE_TYPE = _ns0(ObjectIds.ShelvedStateMachineType)
# What an operator's action leaves the condition's Message as: the condition's own (what
# is wrong), not "acknowledged by …"; the action's comment goes to Comment.
_KEEPS_MESSAGE = frozenset({"acknowledge", "comment", "confirm", "shelve", "unshelve",
                            "shelve_expired", "suppress", "unsuppress", "out_of_service"})
_REFRESH_METHODS = (ObjectIds.ConditionType_ConditionRefresh,
                    ObjectIds.ConditionType_ConditionRefresh2)


_Field = tuple[object, ua.VariantType]


@dataclass(slots=True)
class _Condition:
    """One rule's condition object and what its events carry between transitions."""

    rule: str
    node: ua.NodeId
    nodes: set[ua.NodeId]  # the condition object's own nodes (its state variables)
    last: AlarmEvent | None = None
    acked: bool = True
    active: bool = False
    severity: int = SEVERITY[Condition.NORMAL]
    last_severity: int = SEVERITY[Condition.NORMAL]
    active_t: datetime | None = None
    acked_t: datetime | None = None
    severity_t: datetime | None = None
    comment: str = ""
    user: str = ""
    comment_t: datetime | None = None
    message: str = ""  # the condition's own message (English / Chinese)
    message_zh: str = ""
    confirmed: bool = True  # nothing to confirm until the alarm rises
    confirmed_t: datetime | None = None
    # The EventIds of its latest notifications, each with its AckedState/Id.
    event_ids: dict[bytes, bool] = field(default_factory=dict)
    retained: list[Event] = field(default_factory=list)  # its last events while Retain

    def advance(self, ev: AlarmEvent) -> None:
        """Take one transition of the rule."""
        first = self.last is None
        acked = _acked_after(self.acked, ev, first=first)
        active = ev.state != Condition.NORMAL
        severity = SEVERITY.get(ev.state, SEVERITY[Condition.NORMAL])
        if first:
            self.last_severity = SEVERITY.get(ev.previous, SEVERITY[Condition.NORMAL])
            self.active_t = self.acked_t = self.severity_t = ev.t
        if acked != self.acked:
            self.acked_t = ev.t
        if active != self.active:
            self.active_t = ev.t
        if severity != self.severity:
            self.last_severity, self.severity_t = self.severity, ev.t
        if ev.comment:
            self.comment, self.user, self.comment_t = ev.comment, ev.user, ev.t
        # After a restart the first transition may be an action (an acknowledgement): its
        # text is not the alarm's; restore_messages has put the alarm's text in first.
        if (first and not self.message) or ev.cause not in _KEEPS_MESSAGE:
            self.message, self.message_zh = ev.message, ev.message_zh
        if ev.cause == "confirm":
            self.confirmed, self.confirmed_t = True, ev.t
        elif not acked and self.acked:  # it rose: a new alarm wants a new confirmation
            self.confirmed, self.confirmed_t = False, ev.t
        self.acked, self.active, self.severity, self.last = acked, active, severity, ev


class AlarmOrigins(Protocol):
    """The alarm journal's read of the transition that set an alarm's text."""

    async def last_alarm_event(self, rule: str, *, skip_causes: Collection[str] = (),
                               before: datetime | None = None) -> AlarmEvent | None:
        """The newest journaled transition of `rule` whose cause is not in `skip_causes`
        (with t < `before` if given)."""


async def restore_messages(conditions: dict[str, _Condition], current: Sequence[AlarmEvent],
                           journal: AlarmOrigins) -> None:
    """Give each condition whose current event (the alarm list taken at start, after a
    restart the last journaled transition; or the first transition of a HistoryRead) is
    an operator's action the text of the transition that raised or changed the alarm
    before it, from the journal, as its Message.

    Without this, an alarm acknowledged before a restart would show "acknowledged by …"
    as what is wrong. Call before the condition takes `current`."""
    for ev in current:
        cond = conditions.get(ev.rule)
        if cond is None or cond.last is not None or ev.cause not in _KEEPS_MESSAGE:
            continue
        # Strictly earlier: a transition in the same millisecond may have come after it.
        origin = await journal.last_alarm_event(ev.rule, skip_causes=_KEEPS_MESSAGE,
                                                before=ev.t)
        if origin is not None:
            cond.message, cond.message_zh = origin.message, origin.message_zh


@dataclass(frozen=True, slots=True)
class _RulesChange:
    """A change of alarm rules, queued with the transitions: the rules now configured."""

    rules: frozenset[str]
    user: str
    comment: str
    t: datetime


def _acked_after(acked: bool, ev: AlarmEvent, *, first: bool) -> bool:
    """Whether the alarm is acknowledged after `ev`.

    The four ISA-18.2 base states say it; a shelved, suppressed or out-of-service alarm's
    acknowledgement is followed through the transitions (a rise wants a new one).
    """
    now_acked = _acknowledged(ev.ack_state)
    if now_acked is not None:
        return now_acked
    if ev.cause in ("acknowledge", "return_to_service"):
        return True
    if ev.cause == "condition" and _level(ev.state) > _level(ev.previous):
        return False
    was_acked = _acknowledged(ev.previous_ack_state)
    if was_acked is not None and ev.cause in ("shelve", "suppress", "out_of_service"):
        return was_acked
    # First seen while masked (after a restart): what the base state can have been.
    return ev.state == Condition.NORMAL if first else acked


def _acknowledged(ack_state: str) -> bool | None:
    """AckState.acknowledged of an AlarmEvent's ack_state; None for any other text."""
    try:
        return AckState(ack_state).acknowledged
    except ValueError:
        return None


def _level(state: str) -> int:
    """Condition.level of an AlarmEvent's state; 0 for any other text."""
    try:
        return Condition(state).level
    except ValueError:
        return 0


def _two_state(name: str, value: bool, true: str, false: str) -> dict[str, _Field]:
    return {name: (ua.LocalizedText(true if value else false, "en"), ua.VariantType.LocalizedText),
            f"{name}/Id": (value, ua.VariantType.Boolean)}


def _condition_extras(cond: ua.NodeId, ns: int) -> list[ua.AddNodesItem]:
    """SuppressedState and OutOfServiceState (optional in AlarmConditionType) with their
    Id, and MessageZh: the Chinese message (an attribute holds one locale in asyncua)."""
    items: list[ua.AddNodesItem] = []

    def variable(parent: ua.NodeId, sub: str, name: ua.QualifiedName, value: ua.Variant,
                 datatype: int, typedef: int, ref: int) -> ua.NodeId:
        nid = ua.NodeId(cast("ua.String", f"{cast(str, parent.Identifier)}.{sub}"),
                        cast("ua.Int16", ns))
        attrs = ua.VariableAttributes(
            DisplayName=ua.LocalizedText(name.Name, "en"), Value=value, DataType=_ns0(datatype),
            ValueRank=ua.ValueRank.Scalar, AccessLevel=_READ_ONLY, UserAccessLevel=_READ_ONLY,
            Historizing=False)
        items.append(ua.AddNodesItem(
            ParentNodeId=parent, ReferenceTypeId=_ns0(ref), RequestedNewNodeId=nid,
            BrowseName=name, NodeClass=ua.NodeClass.Variable, NodeAttributes=attrs,
            TypeDefinition=_ns0(typedef)))
        return nid

    for state, false in (("SuppressedState", "Unsuppressed"),
                         ("OutOfServiceState", "In Service"), ("ConfirmedState", "Confirmed")):
        var = variable(cond, state, ua.QualifiedName(state, 0),
                       ua.Variant(ua.LocalizedText(false, "en"), ua.VariantType.LocalizedText),
                       ObjectIds.LocalizedText, ObjectIds.TwoStateVariableType,
                       ObjectIds.HasComponent)
        variable(var, "Id", ua.QualifiedName("Id", 0),
                 ua.Variant(state == "ConfirmedState", ua.VariantType.Boolean),
                 ObjectIds.Boolean, ObjectIds.PropertyType, ObjectIds.HasProperty)
    variable(cond, "MaxTimeShelved", ua.QualifiedName("MaxTimeShelved", 0),
             ua.Variant(MAX_SHELVE.total_seconds() * 1000.0, ua.VariantType.Double),
             ObjectIds.Duration, ObjectIds.PropertyType, ObjectIds.HasProperty)
    variable(cond, "MessageZh", ua.QualifiedName("MessageZh", cast("ua.UInt16", ns)),
             ua.Variant(ua.LocalizedText("", "zh-CN"), ua.VariantType.LocalizedText),
             ObjectIds.LocalizedText, ObjectIds.PropertyType, ObjectIds.HasProperty)
    return items


def _reference(source: ua.NodeId, ref: int, target: ua.NodeId) -> ua.AddReferencesItem:
    return ua.AddReferencesItem(SourceNodeId=source, ReferenceTypeId=_ns0(ref), IsForward=True,
                                TargetNodeId=target, TargetNodeClass=ua.NodeClass.Object)


def _check(results: Sequence[ua.StatusCode], what: str) -> None:
    for res in results:
        if not res.is_good():
            raise SinkError(f"OPC UA: cannot add the nodes of {what}: {res.name}")


def _bad_arguments(code: int, ok: Sequence[bool]) -> ua.CallMethodResult:
    return ua.CallMethodResult(StatusCode=_status(code), InputArgumentResults=[
        _GOOD if good else _status(code) for good in ok])


def _refresh_event(etype: int, notifier: ua.NodeId) -> Event:
    now = datetime.now(UTC)
    vt = ua.VariantType
    return _new_event(notifier, {
        "EventId": (uuid.uuid4().bytes, vt.ByteString), "EventType": (_ns0(etype), vt.NodeId),
        "SourceNode": (_SERVER, vt.NodeId), "SourceName": ("Server", vt.String),
        "Time": (now, vt.DateTime), "ReceiveTime": (now, vt.DateTime),
        "Message": (ua.LocalizedText("", "en"), vt.LocalizedText),
        "Severity": (SEVERITY[Condition.NORMAL], vt.UInt16)})


def _new_event(notifier: ua.NodeId, fields: dict[str, _Field]) -> Event:
    ev = Event(notifier)
    for name, (value, vtype) in fields.items():
        ev.add_property(name, value, vtype)
    return ev


def _event_fields(cond: _Condition, site: ua.NodeId, site_id: str, zone: ZoneInfo,
                  event_id: bytes, now: datetime) -> dict[str, _Field]:
    """The condition's event fields, named by browse path (asyncua's event attributes)."""
    ev = cond.last
    mode = ev.ack_state if ev is not None else AckState.NORMAL
    shelved, suppressed = mode == AckState.SHELVED, mode == AckState.SUPPRESSED
    enabled = mode != AckState.OUT_OF_SERVICE
    t = ev.t if ev is not None else now
    unshelve_ms = None
    if shelved and ev is not None and ev.shelved_until is not None:
        unshelve_ms = max(0.0, (ev.shelved_until - now).total_seconds() * 1000.0)
    vt = ua.VariantType
    text, time, node = vt.LocalizedText, vt.DateTime, vt.NodeId
    return {
        "EventId": (event_id, vt.ByteString),
        "EventType": (_ALARM_CONDITION_TYPE, node),
        "SourceNode": (site, node),
        "SourceName": (ev.target if ev is not None and ev.target else site_id, vt.String),
        "Time": (t, time),
        "ReceiveTime": (now, time),
        "LocalTime": (_local_time(t, zone), vt.ExtensionObject),
        "Message": (ua.LocalizedText(cond.message, "en"), text),
        "MessageZh": (ua.LocalizedText(cond.message_zh, "zh-CN"), text),
        "Severity": (cond.severity, vt.UInt16),
        "ConditionClassId": (_ns0(ObjectIds.ProcessConditionClassType), node),
        "ConditionClassName": (ua.LocalizedText("Process", "en"), text),
        "ConditionName": (cond.rule, vt.String),
        "BranchId": (ua.NodeId(), node),
        # Part 9: a disabled condition is of no interest to clients (Retain false).
        "Retain": (mode != AckState.NORMAL and enabled, vt.Boolean),
        **_two_state("EnabledState", enabled, "Enabled", "Disabled"),
        "Quality": (_GOOD, vt.StatusCode),
        "Quality/SourceTimestamp": (t, time),
        "LastSeverity": (cond.last_severity, vt.UInt16),
        "LastSeverity/SourceTimestamp": (cond.severity_t, time),
        "Comment": (ua.LocalizedText(cond.comment), text),
        "Comment/SourceTimestamp": (cond.comment_t, time),
        "ClientUserId": (cond.user, vt.String),
        **_two_state("AckedState", cond.acked, "Acknowledged", "Unacknowledged"),
        "AckedState/TransitionTime": (cond.acked_t, time),
        **_two_state("ConfirmedState", cond.confirmed, "Confirmed", "Unconfirmed"),
        "ConfirmedState/TransitionTime": (cond.confirmed_t, time),
        **_two_state("ActiveState", cond.active, "Active", "Inactive"),
        "ActiveState/EffectiveDisplayName": (ua.LocalizedText(
            ev.state.capitalize() if cond.active and ev is not None else "Inactive", "en"),
            text),
        "ActiveState/TransitionTime": (cond.active_t, time),
        "InputNode": (ua.NodeId(), node),
        **_two_state("SuppressedState", suppressed, "Suppressed", "Unsuppressed"),
        **_two_state("OutOfServiceState", mode == AckState.OUT_OF_SERVICE, "Out of Service",
                     "In Service"),
        "SuppressedOrShelved": (suppressed or shelved, vt.Boolean),
        "ShelvingState/CurrentState": (ua.LocalizedText(
            "TimedShelved" if shelved else "Unshelved", "en"), text),
        "ShelvingState/CurrentState/Id": (_ns0(
            ObjectIds.ShelvedStateMachineType_TimedShelved if shelved
            else ObjectIds.ShelvedStateMachineType_Unshelved), node),
        "ShelvingState/UnshelveTime": (unshelve_ms, vt.Double),  # Duration, ms
        "NodeId": (cond.node, node),  # the ConditionId
    }



def _local_time(t: datetime, zone: ZoneInfo) -> ua.TimeZoneDataType:
    local = t.astimezone(zone)
    offset, dst = local.utcoffset(), local.dst()
    minutes = int(offset.total_seconds()) // 60 if offset is not None else 0
    return ua.TimeZoneDataType(Offset=cast("ua.Int16", minutes),
                               DaylightSavingInOffset=bool(dst))


_SERVICE_ROLE = "engineer"  # Enable / Disable: as the web's out-of-service actions
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


@dataclass(slots=True)
class ConditionMethods:
    """The A&C method callbacks of the conditions (Acknowledge, AddComment, Confirm,
    Enable / Disable, the shelving methods, ConditionRefresh / ConditionRefresh2).

    Each checks the session user's role first, then goes to the alarm engine as
    "opcua:<user>" and writes the audit record; the new state comes back as an event
    through the sink. `by_node` and `conditions` are the sink's own (live) dictionaries;
    `server` and `site` give the running server and the alarms' notifier.
    """

    users: Authenticator | None
    alarms: AlarmControl | None
    audit: ActionAuditor | None
    by_node: dict[ua.NodeId, _Condition]  # condition or ShelvingState node → condition
    conditions: dict[str, _Condition]  # rule → condition
    server: Callable[[], Server | None]
    site: Callable[[], ua.NodeId]

    async def acknowledge(self, parent: ua.NodeId, *args: ua.Variant) -> _CallResult:
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
        cond = self.by_node.get(parent)
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

    def method(self, name: str) -> Callable[..., Awaitable[_CallResult]]:
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
        cond = self.by_node.get(parent)
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

    async def condition_refresh(self, parent: ua.NodeId, *args: ua.Variant) -> ua.StatusCode:
        """ConditionRefresh(SubscriptionId) and ConditionRefresh2(SubscriptionId,
        MonitoredItemId): RefreshStart, every retained condition's last event, RefreshEnd."""
        try:
            return await self._refresh(args)
        except Exception:
            log.exception("OPC UA ConditionRefresh failed")
            return _status(StatusCodes.BadInternalError)

    async def _refresh(self, args: tuple[ua.Variant, ...]) -> ua.StatusCode:
        server = self.server()
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
        notifiers = [_SERVER, self.site()]
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
        for cond in list(self.conditions.values()):
            for ev in cond.retained:
                if ev.emitting_node in notifiers:
                    await items.trigger_event(ev, mid)
        for notifier in notifiers:
            await items.trigger_event(_refresh_event(ObjectIds.RefreshEndEventType, notifier), mid)
        return _status(StatusCodes.Good)
