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


async def started(port: int, alarms: AlarmSink | None = None, users: UserStore | None = None
                  ) -> tuple[OpcUaSink, AlarmSink, RecordingAudit]:
    cfg = plant(port)
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
