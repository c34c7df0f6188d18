"""After a restart, an alarm acknowledged before it keeps its own text as Message.

The last journaled transition of such a rule is the acknowledgement ("acknowledged by …");
the OPC UA condition must still say what is wrong, with the comment in Comment.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

from asyncua import ua
from asyncua.client.client import Client
from asyncua.ua.object_ids import ObjectIds

from alarms.engine import AlarmSink
from model.records import AlarmEvent
from server.historian import Historian
from server.opcua.sink import OpcUaSink
from server.users import UserStore
from tests.alarms.test_rules import record
from tests.conftest import free_port
from tests.server.test_opcua_alarms import ALARM_TYPE, REFRESH_END, REFRESH_START, Events, f, plant

NS_URI = "urn:carbonscada:testsite"
T0 = datetime(2024, 5, 1, 0, 0, tzinfo=UTC)
MESSAGE = "S1 co2_kg = 5200 ≥ alarm level 5000 [rule s1_rate: S1 rate]"
MESSAGE_ZH = "S1 co2_kg = 5200 ≥ 报警限值 5000［规则 s1_rate：S1 rate］"
COMMENT = "load ramp, expected"


async def test_acknowledged_alarm_keeps_its_message_after_restart(tmp_path: Path) -> None:
    port = free_port()
    cfg = plant(port)
    historian = Historian(tmp_path / "h.sqlite")
    await historian.start()
    users = UserStore(tmp_path / "users.sqlite")
    users.add("olga", "operator", "olga-pass-1")
    try:
        # Before the restart: the alarm rises and is acknowledged; both are journaled.
        before = AlarmSink(cfg)
        journaled: list[AlarmEvent] = []
        before.subscribe(journaled.append)
        await before.on_minute(record(T0, s1_kg=5200.0))
        before.acknowledge("s1_rate", "opcua:olga", COMMENT, T0 + timedelta(seconds=30))
        assert [e.cause for e in journaled] == ["condition", "acknowledge"]
        for event in journaled:
            await historian.record_alarm(event)
        origin = await historian.last_alarm_event("s1_rate", skip_causes=("acknowledge",))
        assert origin is not None and origin.message == MESSAGE

        # The restart: the engine is restored from the journal, its last event the ack.
        alarms = AlarmSink(cfg)
        alarms.restore(await historian.last_alarm_events())
        (current,) = alarms.alarm_list()
        assert current.cause == "acknowledge" and current.message != MESSAGE
        sink = OpcUaSink(cfg, alarms=alarms, users=users, history=historian)
        alarms.subscribe(sink.on_alarm)
        await sink.start()
        try:
            async with Client(f"opc.tcp://127.0.0.1:{port}") as client:
                ns = await client.get_namespace_index(NS_URI)

                def node(ident: str) -> ua.NodeId:
                    return ua.NodeId(cast("ua.String", ident), cast("ua.Int16", ns))

                message = client.get_node(node("Alarms.s1_rate.Message"))
                for _ in range(100):  # the current alarms are published just after start
                    if (await message.read_value()).Text:
                        break
                    await asyncio.sleep(0.05)
                assert await message.read_value() == ua.LocalizedText(MESSAGE, "en")
                assert (await client.get_node(node("Alarms.s1_rate.Comment")).read_value()
                        ).Text == COMMENT
                assert await client.get_node(
                    node("Alarms.s1_rate.AckedState.Id")).read_value() is True
                assert (await client.get_node(node("Alarms.s1_rate.MessageZh")).read_value()
                        ).Text == MESSAGE_ZH

                # A client that connects now gets the same from ConditionRefresh.
                handler = Events()
                sub = await client.create_subscription(20, handler)
                await sub.subscribe_events(client.nodes.server,
                                           [ALARM_TYPE, REFRESH_START, REFRESH_END])
                await client.nodes.server.call_method(
                    ua.NodeId(cast("ua.Int32", ObjectIds.ConditionType_ConditionRefresh)),
                    ua.Variant(sub.subscription_id, ua.VariantType.UInt32))
                start, ev, end = [await handler.next() for _ in range(3)]
                assert (f(start, "EventType"), f(end, "EventType")) == (REFRESH_START,
                                                                        REFRESH_END)
                assert f(ev, "Message") == ua.LocalizedText(MESSAGE, "en")
                assert (f(ev, "Comment").Text, f(ev, "ClientUserId")) == (COMMENT, "opcua:olga")
                assert (f(ev, "ActiveState/Id"), f(ev, "AckedState/Id")) == (True, True)

                # The event history from the acknowledgement on says the same.
                (acked,) = await client.nodes.server.read_event_history(
                    T0 + timedelta(seconds=30), T0 + timedelta(hours=1), evtypes=ALARM_TYPE)
                assert f(acked, "Message").Text == MESSAGE
                assert f(acked, "Comment").Text == COMMENT
        finally:
            await sink.stop()
    finally:
        await historian.stop()
