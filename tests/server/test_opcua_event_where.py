"""HistoryRead of alarm events honours the EventFilter's WhereClause (asyncua client, TCP).

The journal: two rules, six transitions; Severity is 800 in alarm, 500 in warning, 100 in
normal (conditions.SEVERITY), so Severity >= 700 selects exactly the three alarm-state
transitions (E1, E2, E3; E1 and E2 in the same millisecond).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from asyncua import ua
from asyncua.client.client import Client
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes

from model.records import AlarmEvent
from server.historian import Historian
from server.opcua.sink import OpcUaSink
from tests.conftest import free_port
from tests.fixtures.plant import plant_config
from tests.server.test_opcua_history import history_read, ns0

T0 = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)
M = [T0 + timedelta(minutes=i) for i in range(6)]
TARGET = "source S1 co2_rate_t_h"


def ev(rule: str, t: datetime, state: str, previous: str, ack: str, message: str,
       **kw: Any) -> AlarmEvent:
    return AlarmEvent(rule, t, state, previous, 250.0, 200.0, TARGET, message, message,
                      ack, "", **kw)


JOURNAL = [
    ev("r1", M[0], "warning", "normal", "active-unacknowledged", "E0 r1 warning"),
    ev("r1", M[1], "alarm", "warning", "active-unacknowledged", "E1 r1 alarm"),
    ev("r2", M[1], "alarm", "normal", "active-unacknowledged", "E2 r2 alarm"),
    ev("r1", M[2], "alarm", "alarm", "active-acknowledged", "E3 r1 acknowledged",
       cause="acknowledge", user="op1", comment="seen"),
    ev("r2", M[3], "normal", "alarm", "returned-unacknowledged", "E4 r2 normal"),
    ev("r1", M[4], "normal", "alarm", "normal", "E5 r1 normal"),
]

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Client]:
    path: Path = tmp_path_factory.mktemp("where") / "h.sqlite"
    historian = Historian(path)
    await historian.start()
    for e in JOURNAL:
        await historian.record_alarm(e)
    port = free_port()
    sink = OpcUaSink(plant_config(opcua_port=port), history=historian)
    await sink.start()
    try:
        async with Client(f"opc.tcp://127.0.0.1:{port}") as c:
            yield c
    finally:
        await sink.stop()
        await historian.stop()


def field(name: str) -> ua.SimpleAttributeOperand:
    return ua.SimpleAttributeOperand(
        TypeDefinitionId=ns0(ObjectIds.BaseEventType),
        BrowsePath=[ua.QualifiedName(name, 0)], AttributeId=AttributeIds.Value)


def lit(value: Any, vtype: ua.VariantType) -> ua.LiteralOperand:
    return ua.LiteralOperand(Value=ua.Variant(value, vtype))


def element(op: ua.FilterOperator, *operands: Any) -> ua.ContentFilterElement:
    return ua.ContentFilterElement(FilterOperator=op, FilterOperands=list(operands))


def of_type(ident: int) -> ua.ContentFilterElement:
    return element(ua.FilterOperator.OfType, lit(ns0(ident), ua.VariantType.NodeId))


def severity(op: ua.FilterOperator, limit: int) -> ua.ContentFilterElement:
    return element(op, field("Severity"), lit(limit, ua.VariantType.UInt16))


def details(*elements: ua.ContentFilterElement, n: int = 0) -> ua.ReadEventDetails:
    d = ua.ReadEventDetails()
    d.StartTime, d.EndTime, d.NumValuesPerNode = T0, T0 + timedelta(hours=1), n
    d.Filter = ua.EventFilter()
    d.Filter.SelectClauses = [field("Message"), field("Severity")]
    d.Filter.WhereClause = ua.ContentFilter(Elements=list(elements))
    return d


async def read(client: Client, d: ua.ReadEventDetails) -> tuple[list[tuple[str, int]], int]:
    """(message, severity) of every event over all pages, and the number of calls."""
    out: list[tuple[str, int]] = []
    cp: bytes | None = None
    for calls in range(1, 20):
        (res,) = await history_read(client, d, [ns0(ObjectIds.Server)], [cp])
        assert res.StatusCode.is_good(), res.StatusCode
        events = res.HistoryData.Events
        assert d.NumValuesPerNode == 0 or len(events) <= d.NumValuesPerNode
        out += [(f.EventFields[0].Value.Text, f.EventFields[1].Value) for f in events]
        cp = res.ContinuationPoint
        if not cp:
            return out, calls
    raise AssertionError("no end of continuation points")


# The Message each transition's event carries: an acknowledge keeps the alarm's message.
SHOWN = ["E0 r1 warning", "E1 r1 alarm", "E2 r2 alarm", "E1 r1 alarm", "E4 r2 normal",
         "E5 r1 normal"]


def messages(indexes: list[int]) -> list[tuple[str, int]]:
    sev = {"alarm": 800, "warning": 500, "normal": 100}
    return [(SHOWN[i], sev[JOURNAL[i].state]) for i in indexes]


async def test_severity_at_least_700_selects_the_alarm_transitions(client: Client) -> None:
    got, _ = await read(client, details(severity(ua.FilterOperator.GreaterThanOrEqual, 700)))
    assert got == messages([1, 2, 3])
    # As node-opcua and most DCS build it: OfType AlarmConditionType And Severity >= 700.
    got, _ = await read(client, details(
        element(ua.FilterOperator.And, ua.ElementOperand(1), ua.ElementOperand(2)),
        of_type(ObjectIds.AlarmConditionType),
        severity(ua.FilterOperator.GreaterThanOrEqual, 700)))
    assert got == messages([1, 2, 3])


async def test_or_equals_and_less_than_or_equal(client: Client) -> None:
    got, _ = await read(client, details(
        element(ua.FilterOperator.Or, ua.ElementOperand(1), ua.ElementOperand(2)),
        element(ua.FilterOperator.Equals, field("ConditionName"),
                lit("r2", ua.VariantType.String)),
        severity(ua.FilterOperator.LessThanOrEqual, 100)))
    assert got == messages([2, 4, 5])
    got, _ = await read(client, details(element(
        ua.FilterOperator.Equals, field("ClientUserId"), lit("op1", ua.VariantType.String))))
    assert got == messages([3, 5])  # r1's condition keeps who acknowledged it last
    got, _ = await read(client, details(element(
        ua.FilterOperator.Equals, field("Message"), lit("E2 r2 alarm", ua.VariantType.String))))
    assert got == messages([2])


async def test_of_type_follows_subtypes(client: Client) -> None:
    everything, _ = await read(client, details(of_type(ObjectIds.BaseEventType)))
    assert everything == messages(list(range(6)))
    none, _ = await read(client, details(of_type(ObjectIds.AuditEventType)))
    assert none == []
    # No WhereClause: every transition (as before).
    plain, _ = await read(client, details())
    assert plain == everything


async def test_where_clause_across_continuation_points(client: Client) -> None:
    # One event per call; E1 and E2 share a millisecond, E0 is skipped before them.
    got, calls = await read(client, details(
        severity(ua.FilterOperator.GreaterThanOrEqual, 700), n=1))
    assert got == messages([1, 2, 3])
    assert calls in (3, 4)  # a last empty page is allowed after E3
    got, calls = await read(client, details(severity(ua.FilterOperator.LessThan, 200), n=1))
    assert got == messages([4, 5])


async def test_asyncua_read_event_history_type_filter(client: Client) -> None:
    # asyncua sends a WhereClause InList(EventType, subtypes of the asked type).
    server = client.get_node(ns0(ObjectIds.Server))
    alarms = await server.read_event_history(T0, T0 + timedelta(hours=1),
                                             evtypes=ObjectIds.AlarmConditionType)
    assert [e.Message.Text for e in alarms] == SHOWN  # type: ignore[attr-defined]


async def test_unsupported_operator_is_refused(client: Client) -> None:
    d = details(element(ua.FilterOperator.BitwiseAnd, field("Severity"),
                        lit(512, ua.VariantType.UInt16)))
    (res,) = await history_read(client, d, [ns0(ObjectIds.Server)])
    assert res.StatusCode.value == StatusCodes.BadFilterOperatorUnsupported
