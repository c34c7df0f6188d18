"""OPC UA Alarms & Conditions: a real AlarmSink wired to the OPC UA sink, a real asyncua
client over TCP subscribing to events, acknowledging and refreshing, with logins checked
against a real UserStore."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.events import get_filter_from_event_type
from asyncua.common.node import Node
from asyncua.common.subscription import Subscription
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaStatusCodeError

from alarms.engine import AlarmSink
from model.errors import ConfigError
from model.records import AlarmEvent, AuditRecord
from server.config import PlantConfig, parse_config
from server.opcua.sink import OpcUaSink
from server.users import UserStore
from tests.alarms.test_rules import record
from tests.fixtures.plant import plant_dict

NS_URI = "urn:carbonscada:testsite"
T0 = datetime(2024, 5, 1, 0, 0, tzinfo=UTC)
RULE = {"id": "s1_rate", "name": "S1 rate", "target": {"source": "S1", "field": "co2_kg"},
        "warning": 4000.0, "alarm": 5000.0}
ALARM_TYPE = ua.NodeId(ObjectIds.AlarmConditionType)
REFRESH_START = ua.NodeId(ObjectIds.RefreshStartEventType)
REFRESH_END = ua.NodeId(ObjectIds.RefreshEndEventType)
COMMENT = "load ramp, expected"
OPERATOR, VIEWER = ("olga", "olga-pass-1"), ("vera", "vera-pass-1")
ENGINEER = ("erin", "erin-pass-1")


def plant(port: int) -> PlantConfig:
    d = plant_dict(opcua_port=port)
    d["alarms"] = {"rules": [RULE]}
    return parse_config(d, "test_opcua_alarms")


class RecordingAudit:
    """The Auditor double: keeps what it was given."""

    def __init__(self) -> None:
        self.records: list[AuditRecord] = []

    def append_record(self, rec: AuditRecord) -> None:
        self.records.append(rec)


class Events:
    """asyncua subscription handler collecting event notifications."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue()

    def event_notification(self, event: Any) -> None:
        self.queue.put_nowait(event)

    async def next(self) -> Any:
        return await asyncio.wait_for(self.queue.get(), 5)

    async def none_within(self, seconds: float = 0.4) -> bool:
        await asyncio.sleep(seconds)
        return self.queue.empty()


def f(event: Any, name: str) -> Any:
    """An event field by its browse path, e.g. "AckedState/Id"."""
    return getattr(event, name)


async def acknowledge(cond: Node, event_id: bytes, comment: str) -> None:
    await cond.call_method("0:Acknowledge", ua.Variant(event_id, ua.VariantType.ByteString),
                           ua.Variant(ua.LocalizedText(comment), ua.VariantType.LocalizedText))


async def refused(call: Any) -> int:
    with pytest.raises(UaStatusCodeError) as info:
        await call
    return int(info.value.code)


@pytest.fixture
def users(tmp_path: Path) -> UserStore:
    store = UserStore(tmp_path / "users.sqlite")
    store.add(OPERATOR[0], "operator", OPERATOR[1])
    store.add(VIEWER[0], "viewer", VIEWER[1])
    store.add(ENGINEER[0], "engineer", ENGINEER[1])
    return store


def client_as(port: int, login: tuple[str, str] | None = None) -> Client:
    """A client for the sink on `port`, anonymous unless given (name, password)."""
    client = Client(f"opc.tcp://127.0.0.1:{port}")
    if login is not None:
        client.set_user(login[0])
        client.set_password(login[1])
    return client


async def last_event_id(cond: Node) -> bytes:
    """The EventId of the condition's last notification, read from the condition object."""
    for _ in range(100):
        event_id = await (await cond.get_child("0:EventId")).read_value()
        if event_id:
            return bytes(event_id)
        await asyncio.sleep(0.05)
    raise AssertionError("the condition got no notification")


@dataclass
class Rig:
    alarms: AlarmSink | None
    sink: OpcUaSink
    audit: RecordingAudit
    client: Client
    ns: int

    def node(self, ident: str) -> Node:
        return self.client.get_node(ua.NodeId(ident, self.ns))

    async def subscribe(self, source: Node, evtypes: list[ua.NodeId],
                        extra: Sequence[str] = ()) -> tuple[Subscription, Events, int]:
        handler = Events()
        sub = await self.client.create_subscription(20, handler)
        evfilter = await get_filter_from_event_type([self.client.get_node(t) for t in evtypes])
        for name in extra:  # fields beyond the standard type's, e.g. our MessageZh
            evfilter.SelectClauses.append(ua.SimpleAttributeOperand(
                TypeDefinitionId=ALARM_TYPE, BrowsePath=[ua.QualifiedName(name, self.ns)],
                AttributeId=ua.AttributeIds.Value))
        mid = await sub.subscribe_events(source, evfilter=evfilter)
        return sub, handler, mid


async def started(port: int, alarms: AlarmSink | None = None, users: UserStore | None = None,
                  cfg: PlantConfig | None = None) -> tuple[OpcUaSink, AlarmSink, RecordingAudit]:
    cfg = cfg or plant(port)
    alarms = alarms or AlarmSink(cfg)
    audit = RecordingAudit()
    sink = OpcUaSink(cfg, alarms=alarms, audit=audit, users=users)
    alarms.subscribe(sink.on_alarm)
    await sink.start()
    return sink, alarms, audit


@pytest_asyncio.fixture
async def rig(port: int, users: UserStore) -> AsyncIterator[Rig]:
    """The sink with the user store, and a client logged in as the operator."""
    sink, alarms, audit = await started(port, users=users)
    try:
        async with client_as(port, OPERATOR) as client:
            yield Rig(alarms, sink, audit, client, await client.get_namespace_index(NS_URI))
    finally:
        await sink.stop()


async def test_alarm_acknowledged_from_opc_ua_and_cleared(rig: Rig) -> None:
    client = rig.client
    site = rig.node("testsite")
    _, on_server, _ = await rig.subscribe(client.nodes.server, [ALARM_TYPE])
    _, on_site, _ = await rig.subscribe(site, [ALARM_TYPE], extra=["MessageZh"])
    cond = rig.node("Alarms.s1_rate")

    # S1 emits 5200 kg in a minute, over the 5000 kg alarm level.
    await rig.alarms.on_minute(record(T0, s1_kg=5200.0))
    ev = await on_server.next()
    assert (f(ev, "EventType"), f(ev, "NodeId"), f(ev, "ConditionName")) == (
        ALARM_TYPE, ua.NodeId("Alarms.s1_rate", rig.ns), "s1_rate")
    assert (f(ev, "Severity"), f(ev, "ActiveState/Id"), f(ev, "AckedState/Id"),
            f(ev, "Retain")) == (800, True, False, True)
    assert f(ev, "ActiveState").Text == "Active"
    assert f(ev, "AckedState").Text == "Unacknowledged"
    assert f(ev, "Message") == ua.LocalizedText(
        "S1 co2_kg = 5200 ≥ alarm level 5000 [rule s1_rate: S1 rate]", "en")
    assert f(ev, "SourceName") == "source S1 co2_kg"
    assert f(ev, "SourceNode") == ua.NodeId("testsite", rig.ns)
    assert f(ev, "Time") == T0
    assert f(ev, "LocalTime").Offset == 8 * 60  # Asia/Shanghai
    # The same notification through the site object, with the Chinese message.
    site_ev = await on_site.next()
    assert f(site_ev, "EventId") == f(ev, "EventId")
    assert f(site_ev, "MessageZh") == ua.LocalizedText(
        "S1 co2_kg = 5200 ≥ 报警限值 5000［规则 s1_rate：S1 rate］", "zh-CN")
    # The condition object holds the state too.
    assert await (await cond.get_child(["0:ActiveState", "0:Id"])).read_value() is True
    assert await (await cond.get_child(["0:AckedState", "0:Id"])).read_value() is False
    assert await (await cond.get_child("0:Severity")).read_value() == 800

    # Refused: no comment, an unknown EventId. Nothing changes, no event.
    assert await refused(acknowledge(cond, f(ev, "EventId"), "  ")) == (
        StatusCodes.BadInvalidArgument)
    assert await refused(acknowledge(cond, b"not an event", COMMENT)) == (
        StatusCodes.BadEventIdUnknown)
    assert [(e.state, e.ack_state) for e in rig.alarms.alarm_list()] == [
        ("alarm", "active-unacknowledged")]
    assert rig.audit.records == []
    assert await on_server.none_within()

    before = datetime.now(UTC)
    await acknowledge(cond, f(ev, "EventId"), COMMENT)
    acked = await on_server.next()
    assert (f(acked, "Severity"), f(acked, "ActiveState/Id"), f(acked, "AckedState/Id"),
            f(acked, "Retain")) == (800, True, True, True)
    assert (f(acked, "Comment").Text, f(acked, "ClientUserId")) == (COMMENT, "opcua:olga")
    assert f(acked, "EventId") != f(ev, "EventId")
    assert [(e.state, e.ack_state) for e in rig.alarms.alarm_list()] == [
        ("alarm", "active-acknowledged")]
    (rec,) = rig.audit.records
    assert (rec.user, rec.action, rec.rule, rec.comment, rec.until) == (
        "opcua:olga", "acknowledge", "s1_rate", COMMENT, None)
    assert before <= rec.t <= datetime.now(UTC)
    assert await (await cond.get_child(["0:AckedState", "0:Id"])).read_value() is True
    # Nothing left to acknowledge, whichever notification is named.
    for event_id in (f(ev, "EventId"), f(acked, "EventId")):
        assert await refused(acknowledge(cond, event_id, "again")) == (
            StatusCodes.BadConditionBranchAlreadyAcked)
    assert len(rig.audit.records) == 1

    # Back to 3000 kg: inactive, acknowledged, no longer retained.
    await rig.alarms.on_minute(record(T0 + timedelta(minutes=1), s1_kg=3000.0))
    cleared = await on_server.next()
    assert (f(cleared, "Severity"), f(cleared, "LastSeverity"), f(cleared, "ActiveState/Id"),
            f(cleared, "AckedState/Id"), f(cleared, "Retain")) == (100, 800, False, True, False)
    assert [f(e, "AckedState/Id") for e in
            [await on_site.next(), await on_site.next()]] == [True, True]


async def test_condition_refresh_replays_alarms_raised_before_start(
        port: int, users: UserStore) -> None:
    cfg = plant(port)
    alarms = AlarmSink(cfg)
    # A warning (4500 kg ≥ 4000) raised while no OPC UA server runs, as before a restart.
    await alarms.on_minute(record(T0, s1_kg=4500.0))
    sink, alarms, _ = await started(port, alarms, users)
    try:
        async with client_as(port, OPERATOR) as client:
            r = Rig(alarms, sink, RecordingAudit(), client,
                    await client.get_namespace_index(NS_URI))
            types = [ALARM_TYPE, REFRESH_START, REFRESH_END]
            sub, on_server, _ = await r.subscribe(client.nodes.server, types)
            assert await on_server.none_within()  # emitted at start, before this client

            refresh = ua.NodeId(ObjectIds.ConditionType_ConditionRefresh)
            await client.nodes.server.call_method(
                refresh, ua.Variant(sub.subscription_id, ua.VariantType.UInt32))
            start, ev, end = [await on_server.next() for _ in range(3)]
            assert [f(e, "EventType") for e in (start, ev, end)] == [
                REFRESH_START, ALARM_TYPE, REFRESH_END]
            assert (f(ev, "ConditionName"), f(ev, "Severity"), f(ev, "ActiveState/Id"),
                    f(ev, "AckedState/Id"), f(ev, "Retain"), f(ev, "Time")) == (
                "s1_rate", 500, True, False, True, T0)
            assert f(ev, "Message").Text == (
                "S1 co2_kg = 4500 ≥ warning level 4000 [rule s1_rate: S1 rate]")

            # ConditionRefresh2: only the named monitored item (on the site object) gets it.
            sub2, on_site, mid = await r.subscribe(r.node("testsite"), types)
            await client.nodes.server.call_method(
                ua.NodeId(ObjectIds.ConditionType_ConditionRefresh2),
                ua.Variant(sub2.subscription_id, ua.VariantType.UInt32),
                ua.Variant(mid, ua.VariantType.UInt32))
            got = [await on_site.next() for _ in range(3)]
            assert [f(e, "EventType") for e in got] == [REFRESH_START, ALARM_TYPE, REFRESH_END]
            assert f(got[1], "EventId") == f(ev, "EventId")
            assert await on_server.none_within()

            assert await refused(client.nodes.server.call_method(
                refresh, ua.Variant(987_654, ua.VariantType.UInt32))) == (
                StatusCodes.BadSubscriptionIdInvalid)

            # The refreshed notification can be acknowledged, here through the method of
            # the type called on the condition (Part 9: ObjectId = ConditionId).
            await r.node("Alarms.s1_rate").call_method(
                ua.NodeId(ObjectIds.AcknowledgeableConditionType_Acknowledge),
                ua.Variant(f(ev, "EventId"), ua.VariantType.ByteString),
                ua.Variant(ua.LocalizedText("seen after restart"), ua.VariantType.LocalizedText))
            assert f(await on_server.next(), "AckedState/Id") is True
            assert [e.ack_state for e in alarms.alarm_list()] == ["active-acknowledged"]
    finally:
        await sink.stop()


def extra_event(state: str, previous: str, ack_state: str, minute: int) -> AlarmEvent:
    return AlarmEvent(rule="extra", t=T0 + timedelta(minutes=minute), state=state,
                      previous=previous, value=1.0, limit=1.0, target="site co2_kg",
                      message=f"extra {state}", message_zh=f"额外 {state}", ack_state=ack_state)


async def test_on_alarm_in_order_for_any_rule_and_harmless_when_not_running(
        port: int, users: UserStore) -> None:
    sink = OpcUaSink(plant(port), users=users)  # no alarm control: Acknowledge not supported
    sink.on_alarm(extra_event("alarm", "normal", "active-unacknowledged", 0))  # not started
    await sink.start()
    try:
        async with client_as(port, OPERATOR) as client:
            r = Rig(None, sink, RecordingAudit(), client, await client.get_namespace_index(NS_URI))
            _, on_server, _ = await r.subscribe(client.nodes.server, [ALARM_TYPE])
            assert await on_server.none_within()
            # Three transitions handed over in one go, of a rule not in the configuration.
            sink.on_alarm(extra_event("warning", "normal", "active-unacknowledged", 1))
            sink.on_alarm(extra_event("alarm", "warning", "active-unacknowledged", 2))
            sink.on_alarm(extra_event("normal", "alarm", "returned-unacknowledged", 3))
            got = [await on_server.next() for _ in range(3)]
            assert [(f(e, "ConditionName"), f(e, "Severity"), f(e, "ActiveState/Id"),
                     f(e, "Retain")) for e in got] == [
                ("extra", 500, True, True), ("extra", 800, True, True),
                ("extra", 100, False, True)]
            assert (await r.node("Alarms.extra").read_browse_name()).Name == "extra"
            assert await refused(acknowledge(r.node("Alarms.extra"), f(got[2], "EventId"),
                                             COMMENT)) == StatusCodes.BadNotSupported
    finally:
        await sink.stop()
    sink.on_alarm(extra_event("normal", "alarm", "normal", 4))  # stopped: dropped quietly


async def test_anonymous_session_reads_but_may_not_acknowledge(port: int,
                                                              users: UserStore) -> None:
    sink, alarms, audit = await started(port, users=users)
    try:
        async with client_as(port) as client:
            r = Rig(alarms, sink, audit, client, await client.get_namespace_index(NS_URI))
            _, on_server, _ = await r.subscribe(client.nodes.server, [ALARM_TYPE])
            minute = record(T0, s1_kg=5200.0)
            await sink.on_minute(minute)
            await alarms.on_minute(minute)
            ev = await on_server.next()
            assert (f(ev, "ActiveState/Id"), f(ev, "AckedState/Id")) == (True, False)
            assert await r.node("U1.S1.CO2Minute").read_value() == 5200.0
            cond = r.node("Alarms.s1_rate")
            assert await (await cond.get_child("0:Severity")).read_value() == 800

            assert await refused(acknowledge(cond, f(ev, "EventId"), COMMENT)) == (
                StatusCodes.BadUserAccessDenied)
            # Also through the method of the type, and with arguments that are wrong anyway.
            assert await refused(cond.call_method(
                ua.NodeId(ObjectIds.AcknowledgeableConditionType_Acknowledge))) == (
                StatusCodes.BadUserAccessDenied)
            assert await on_server.none_within()
            assert [e.ack_state for e in alarms.alarm_list()] == ["active-unacknowledged"]
            assert await (await cond.get_child(["0:AckedState", "0:Id"])).read_value() is False
            assert audit.records == []
    finally:
        await sink.stop()


async def test_viewer_may_not_acknowledge_and_operator_may(port: int, users: UserStore) -> None:
    sink, alarms, audit = await started(port, users=users)
    try:
        await alarms.on_minute(record(T0, s1_kg=5200.0))
        async with client_as(port, VIEWER) as client:
            cond = client.get_node(ua.NodeId("Alarms.s1_rate",
                                             await client.get_namespace_index(NS_URI)))
            event_id = await last_event_id(cond)
            assert await refused(acknowledge(cond, event_id, COMMENT)) == (
                StatusCodes.BadUserAccessDenied)
        assert [e.ack_state for e in alarms.alarm_list()] == ["active-unacknowledged"]
        assert audit.records == []

        async with client_as(port, OPERATOR) as client:
            cond = client.get_node(ua.NodeId("Alarms.s1_rate",
                                             await client.get_namespace_index(NS_URI)))
            assert await last_event_id(cond) == event_id  # the refusal published nothing
            await acknowledge(cond, event_id, "checked on site")
            assert [(r.user, r.action, r.comment) for r in audit.records] == [
                ("opcua:olga", "acknowledge", "checked on site")]
            assert [e.ack_state for e in alarms.alarm_list()] == ["active-acknowledged"]
            assert await last_event_id(cond) != event_id
            assert await (await cond.get_child("0:ClientUserId")).read_value() == "opcua:olga"
    finally:
        await sink.stop()


async def test_wrong_password_cannot_connect(port: int, users: UserStore) -> None:
    sink, _, _ = await started(port, users=users)
    try:
        # An unknown name is refused exactly like a known one with a wrong password.
        for login in [("olga", "not-her-password"), ("nobody", OPERATOR[1]), ("olga", "")]:
            assert await refused(client_as(port, login).connect()) == (
                StatusCodes.BadUserAccessDenied), login
        async with client_as(port, OPERATOR) as client:  # the server is still fine
            assert await client.get_namespace_index(NS_URI) > 0
    finally:
        await sink.stop()


async def test_without_user_store_nobody_acknowledges(port: int) -> None:
    sink, alarms, audit = await started(port)
    try:
        await alarms.on_minute(record(T0, s1_kg=5200.0))
        # No user-name logins are offered at all.
        assert await refused(client_as(port, OPERATOR).connect()) == (
            StatusCodes.BadIdentityTokenRejected)
        async with client_as(port) as client:
            cond = client.get_node(ua.NodeId("Alarms.s1_rate",
                                             await client.get_namespace_index(NS_URI)))
            assert await refused(acknowledge(cond, await last_event_id(cond), COMMENT)) == (
                StatusCodes.BadUserAccessDenied)
        assert [e.ack_state for e in alarms.alarm_list()] == ["active-unacknowledged"]
        assert audit.records == []
    finally:
        await sink.stop()


def test_a_unit_named_alarms_clashes_with_the_alarms_folder() -> None:
    d = plant_dict()
    d["units"][0]["id"] = "Alarms"
    with pytest.raises(ConfigError, match="'Alarms' is already used by the Alarms folder"):
        OpcUaSink(parse_config(d, "test"))


# --- Part 9 methods: AddComment, Confirm, shelving, Enable / Disable; rules removed ----------

CONFIRM = ua.NodeId(ObjectIds.AcknowledgeableConditionType_Confirm)
TIMED_SHELVE = ua.NodeId(ObjectIds.ShelvedStateMachineType_TimedShelve)


def note_args(event_id: bytes, comment: str) -> tuple[ua.Variant, ua.Variant]:
    return (ua.Variant(event_id, ua.VariantType.ByteString),
            ua.Variant(ua.LocalizedText(comment), ua.VariantType.LocalizedText))


def ms(span: timedelta) -> ua.Variant:
    return ua.Variant(span.total_seconds() * 1000.0, ua.VariantType.Double)


async def raised(rig: Rig) -> tuple[Node, Events, Any]:
    """The condition, a subscription on the Server object, and the event of an alarm raised."""
    _, on_server, _ = await rig.subscribe(rig.client.nodes.server, [ALARM_TYPE])
    await rig.alarms.on_minute(record(T0, s1_kg=5200.0))  # type: ignore[union-attr]
    return rig.node("Alarms.s1_rate"), on_server, await on_server.next()


async def test_acknowledge_keeps_the_message_add_comment_and_confirm(rig: Rig) -> None:
    cond, on_server, ev = await raised(rig)
    what = "S1 co2_kg = 5200 ≥ alarm level 5000 [rule s1_rate: S1 rate]"
    assert f(ev, "Message").Text == what
    assert (f(ev, "ConfirmedState/Id"), f(ev, "EnabledState/Id")) == (False, True)

    await acknowledge(cond, f(ev, "EventId"), COMMENT)
    acked = await on_server.next()
    # What was wrong stays in Message; what the operator said is in Comment.
    assert (f(acked, "Message").Text, f(acked, "Comment").Text, f(acked, "AckedState/Id")) == (
        what, COMMENT, True)
    assert (await (await cond.get_child("0:Message")).read_value()).Text == what

    await cond.call_method("0:AddComment", *note_args(f(acked, "EventId"), "lab sample taken"))
    noted = await on_server.next()
    assert (f(noted, "Message").Text, f(noted, "Comment").Text, f(noted, "ClientUserId"),
            f(noted, "AckedState/Id"), f(noted, "ActiveState/Id"), f(noted, "Retain")) == (
        what, "lab sample taken", "opcua:olga", True, True, True)
    assert [e.ack_state for e in rig.alarms.alarm_list()] == [  # type: ignore[union-attr]
        "active-acknowledged"]
    assert await refused(cond.call_method("0:AddComment", *note_args(b"nope", "x"))) == (
        StatusCodes.BadEventIdUnknown)
    assert await refused(cond.call_method("0:AddComment", *note_args(f(noted, "EventId"),
                                                                     " "))) == (
        StatusCodes.BadInvalidArgument)

    # Confirm (optional in the type: called by the type's method on the condition).
    await cond.call_method(CONFIRM, *note_args(f(noted, "EventId"), "cause removed"))
    confirmed = await on_server.next()
    assert (f(confirmed, "ConfirmedState/Id"), f(confirmed, "Message").Text,
            f(confirmed, "Comment").Text) == (True, what, "cause removed")
    assert await (await cond.get_child(["0:ConfirmedState", "0:Id"])).read_value() is True
    assert await refused(cond.call_method(CONFIRM, *note_args(f(confirmed, "EventId"),
                                                              "again"))) == (
        StatusCodes.BadConditionBranchAlreadyConfirmed)
    assert [(r.user, r.action, r.comment) for r in rig.audit.records] == [
        ("opcua:olga", "acknowledge", COMMENT), ("opcua:olga", "comment", "lab sample taken"),
        ("opcua:olga", "confirm", "cause removed")]
    assert await on_server.none_within()


async def test_shelving_state_machine(rig: Rig) -> None:
    cond, on_server, ev = await raised(rig)
    shelving = await cond.get_child("0:ShelvingState")
    state = await shelving.get_child("0:CurrentState")
    assert (await state.read_value()).Text == "Unshelved"
    max_ms = await (await cond.get_child("0:MaxTimeShelved")).read_value()
    assert max_ms == 24 * 3600 * 1000.0

    before = datetime.now(UTC)
    await shelving.call_method("0:TimedShelve", ms(timedelta(minutes=30)))
    shelved = await on_server.next()
    assert (f(shelved, "ShelvingState/CurrentState").Text, f(shelved, "SuppressedOrShelved"),
            f(shelved, "Message").Text) == ("TimedShelved", True, f(ev, "Message").Text)
    assert f(shelved, "ShelvingState/CurrentState/Id") == ua.NodeId(
        ObjectIds.ShelvedStateMachineType_TimedShelved)
    assert 29 * 60_000 < f(shelved, "ShelvingState/UnshelveTime") <= 30 * 60_000
    assert (await state.read_value()).Text == "TimedShelved"
    (rec,) = rig.audit.records
    assert (rec.user, rec.action) == ("opcua:olga", "shelve")
    assert rec.until is not None
    assert before + timedelta(minutes=30) <= rec.until <= datetime.now(UTC) + timedelta(
        minutes=30)
    assert await refused(shelving.call_method("0:TimedShelve", ms(timedelta(minutes=5)))) == (
        StatusCodes.BadConditionAlreadyShelved)
    assert await refused(shelving.call_method("0:OneShotShelve")) == (
        StatusCodes.BadConditionAlreadyShelved)

    await shelving.call_method("0:Unshelve")
    unshelved = await on_server.next()
    assert (f(unshelved, "ShelvingState/CurrentState").Text,
            f(unshelved, "SuppressedOrShelved")) == ("Unshelved", False)
    assert await refused(shelving.call_method("0:Unshelve")) == (
        StatusCodes.BadConditionNotShelved)
    for span in (timedelta(hours=25), timedelta(0)):
        assert await refused(shelving.call_method("0:TimedShelve", ms(span))) == (
            StatusCodes.BadShelvingTimeOutOfRange)

    # OneShotShelve: no shelf ends at return to normal here; the longest one allowed.
    await shelving.call_method("0:OneShotShelve")
    one_shot = await on_server.next()
    assert f(one_shot, "ShelvingState/CurrentState").Text == "TimedShelved"
    assert 23.9 * 3600_000 < f(one_shot, "ShelvingState/UnshelveTime") <= 24 * 3600_000
    await shelving.call_method("0:Unshelve")
    await on_server.next()
    # The type's method, called on the ShelvingState object (Part 9: ObjectId).
    await shelving.call_method(TIMED_SHELVE, ms(timedelta(minutes=1)))
    assert f(await on_server.next(), "ShelvingState/CurrentState").Text == "TimedShelved"
    assert [(r.action, r.user) for r in rig.audit.records] == [
        ("shelve", "opcua:olga"), ("unshelve", "opcua:olga"), ("shelve", "opcua:olga"),
        ("unshelve", "opcua:olga"), ("shelve", "opcua:olga")]


async def test_disable_and_enable_take_the_rule_out_of_and_back_into_service(
        port: int, users: UserStore) -> None:
    sink, alarms, audit = await started(port, users=users)
    try:
        await alarms.on_minute(record(T0, s1_kg=5200.0))
        async with client_as(port, OPERATOR) as client:  # an operator may not
            cond = client.get_node(ua.NodeId("Alarms.s1_rate",
                                             await client.get_namespace_index(NS_URI)))
            for method in ("0:Disable", "0:Enable"):
                assert await refused(cond.call_method(method)) == (
                    StatusCodes.BadUserAccessDenied)
        async with client_as(port, ENGINEER) as client:
            r = Rig(alarms, sink, audit, client, await client.get_namespace_index(NS_URI))
            _, on_server, _ = await r.subscribe(client.nodes.server, [ALARM_TYPE])
            cond = r.node("Alarms.s1_rate")
            event_id = await last_event_id(cond)
            await cond.call_method("0:Disable")
            off = await on_server.next()
            assert (f(off, "EnabledState/Id"), f(off, "OutOfServiceState/Id"),
                    f(off, "Retain")) == (False, True, False)
            assert f(off, "EnabledState").Text == "Disabled"
            assert await (await cond.get_child(["0:EnabledState", "0:Id"])).read_value() is False
            assert [e.ack_state for e in alarms.alarm_list()] == ["out-of-service"]
            assert await refused(cond.call_method("0:Disable")) == (
                StatusCodes.BadConditionAlreadyDisabled)
            assert await refused(acknowledge(cond, event_id, COMMENT)) == (
                StatusCodes.BadConditionDisabled)
            await cond.call_method("0:Enable")
            on = await on_server.next()
            assert (f(on, "EnabledState/Id"), f(on, "OutOfServiceState/Id"),
                    f(on, "ActiveState/Id")) == (True, False, False)
            assert await refused(cond.call_method("0:Enable")) == (
                StatusCodes.BadConditionAlreadyEnabled)
        assert [(rec.user, rec.action) for rec in audit.records] == [
            ("opcua:erin", "out_of_service"), ("opcua:erin", "return_to_service")]
    finally:
        await sink.stop()


@pytest.mark.parametrize("login", [None, VIEWER])
async def test_viewer_and_anonymous_may_call_no_method(port: int, users: UserStore,
                                                      login: tuple[str, str] | None) -> None:
    sink, alarms, audit = await started(port, users=users)
    try:
        await alarms.on_minute(record(T0, s1_kg=5200.0))
        async with client_as(port, login) as client:
            cond = client.get_node(ua.NodeId("Alarms.s1_rate",
                                             await client.get_namespace_index(NS_URI)))
            event_id = await last_event_id(cond)
            shelving = await cond.get_child("0:ShelvingState")
            calls = [cond.call_method("0:AddComment", *note_args(event_id, COMMENT)),
                     cond.call_method(CONFIRM, *note_args(event_id, COMMENT)),
                     cond.call_method("0:Disable"), cond.call_method("0:Enable"),
                     shelving.call_method("0:TimedShelve", ms(timedelta(minutes=5))),
                     shelving.call_method("0:OneShotShelve"), shelving.call_method("0:Unshelve")]
            for call in calls:
                assert await refused(call) == StatusCodes.BadUserAccessDenied
            assert await last_event_id(cond) == event_id
        assert [e.ack_state for e in alarms.alarm_list()] == ["active-unacknowledged"]
        assert audit.records == []
    finally:
        await sink.stop()


async def test_conditions_of_removed_rules_go_after_a_final_event(port: int,
                                                                  users: UserStore) -> None:
    d = plant_dict(opcua_port=port)
    quiet = {**RULE, "id": "s1_quiet", "name": "S1 quiet", "warning": 9000.0, "alarm": 9500.0}
    d["alarms"] = {"rules": [RULE, quiet]}
    cfg = parse_config(d, "test_opcua_alarms")
    sink, alarms, audit = await started(port, AlarmSink(cfg), users, cfg)
    try:
        async with client_as(port, OPERATOR) as client:
            r = Rig(alarms, sink, audit, client, await client.get_namespace_index(NS_URI))
            _, on_server, _ = await r.subscribe(client.nodes.server, [ALARM_TYPE])
            await alarms.on_minute(record(T0, s1_kg=5200.0))
            assert f(await on_server.next(), "Retain") is True
            folder = r.node("Alarms")
            names = {(await n.read_browse_name()).Name for n in await folder.get_children()}
            assert names == {"s1_rate", "s1_quiet"}

            # s1_rate (in alarm) and s1_quiet (normal) both removed; nothing else changes.
            alarms.change_rules([], "erin", "rules replaced by the new set")
            finals = {f(e, "ConditionName"): e for e in [await on_server.next(),
                                                         await on_server.next()]}
            assert set(finals) == {"s1_rate", "s1_quiet"}
            for final in finals.values():
                assert (f(final, "Retain"), f(final, "ActiveState/Id"),
                        f(final, "AckedState/Id")) == (False, False, True)
                assert f(final, "Message").Text.startswith("rule removed by erin: rules "
                                                           "replaced by the new set")
            for _ in range(100):
                if not await folder.get_children():
                    break
                await asyncio.sleep(0.05)
            assert await folder.get_children() == []
            for ident in ("Alarms.s1_rate", "Alarms.s1_rate.ShelvingState.CurrentState",
                          "Alarms.s1_quiet.EventId"):
                assert await refused(r.node(ident).read_browse_name()) == (
                    StatusCodes.BadNodeIdUnknown)
            conditions = await r.node("testsite").get_referenced_nodes(
                ua.NodeId(ObjectIds.HasCondition))
            assert conditions == []
            assert await on_server.none_within()
            # Refresh replays nothing of them.
            sub, on_refresh, _ = await r.subscribe(client.nodes.server,
                                                   [ALARM_TYPE, REFRESH_START, REFRESH_END])
            await client.nodes.server.call_method(
                ua.NodeId(ObjectIds.ConditionType_ConditionRefresh),
                ua.Variant(sub.subscription_id, ua.VariantType.UInt32))
            assert [f(await on_refresh.next(), "EventType") for _ in range(2)] == [
                REFRESH_START, REFRESH_END]
    finally:
        await sink.stop()
