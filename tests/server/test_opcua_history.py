"""HistoryRead of the source minute variables, answered from the historian, over TCP."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
import pytest_asyncio
from asyncua import ua
from asyncua.client.client import Client
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes

from model.flags import DataFlag
from model.records import (
    AlarmEvent,
    AllowancePosition,
    MinuteResult,
    PeriodRecords,
    PeriodResult,
    SiteMinute,
    SourceMinute,
    UnitMinute,
    UnitPeriod,
)
from server.historian import Historian
from server.opcua.sink import OpcUaSink
from tests.conftest import free_port
from tests.fixtures.plant import plant_config

NS_URI = "urn:carbonscada:testsite"
T0 = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)
KG = [3282.7, 3000.0, math.nan, 1.5, 2000.0]  # minute 2 failed: flag B, no value
FLAGS = [DataFlag.N, DataFlag.N, DataFlag.B, DataFlag.S, DataFlag.N]

# Three transitions of one rule, two of them in the same millisecond.
JOURNAL = [
    AlarmEvent("s1_rate", T0, "alarm", "normal", 250.0, 200.0, "source S1 co2_rate_t_h",
               "S1 rate high", "S1速率高", "active-unacknowledged", "normal"),
    AlarmEvent("s1_rate", T0 + timedelta(minutes=1), "alarm", "alarm", 250.0, 200.0,
               "source S1 co2_rate_t_h", "S1 rate high", "S1速率高", "active-acknowledged",
               "active-unacknowledged", cause="acknowledge", user="op1", comment="seen"),
    AlarmEvent("s1_rate", T0 + timedelta(minutes=1), "normal", "alarm", 150.0, 200.0,
               "source S1 co2_rate_t_h", "S1 rate normal", "S1速率正常", "normal",
               "active-acknowledged"),
]

H1, H2 = T0 + timedelta(hours=1), T0 + timedelta(hours=2)
HOURS = [PeriodResult("S1", T0, 12.0, 835_718.9, 196_962.23, 196.96223, 196.96223, True,
                      DataFlag.N, 60),
         PeriodResult("S1", H1, 12.0, 835_718.9, 221_582.5, 221.58251, 150.0, False,
                      DataFlag.S, 40, True, "hourly_mean", 20)]
POSITIONS = [AllowancePosition(
    annual_t=4_000_000.0, ytd_t=ytd, year_fraction=0.2, days_left=295.0,
    trailing_30d_t=21_000.0, prorated_t=767_123.29, used_pct=ytd / 40_000, headroom_t=4e6 - ytd,
    forecast_year_end_t=456_500.0, forecast_shortfall_t=0.0, carbon_price_cny_t=80.0,
    shortfall_cost_cny=0.0) for ytd in (250_000.0, 250_196.0)]
DAY = datetime(2026, 11, 20, 16, 0, tzinfo=UTC)  # a plant-local day
# A CEMS unit: its accounted CO2 (co2_t, served as CO2Day) is its CEMS figure.
DAYS = [UnitPeriod("U1", DAY, 4727.09, 4622.76, 14_400.0, 0.32827, True, DataFlag.N, 8.0,
                   True, co2_t=4727.09)]
PERIODS = [PeriodRecords("hour", T0, H1, (HOURS[0],), (), (), POSITIONS[0]),
           PeriodRecords("hour", H1, H2, (HOURS[1],), (), (), POSITIONS[1]),
           PeriodRecords("day", DAY, DAY + timedelta(days=1), (), (), tuple(DAYS))]

pytestmark = pytest.mark.asyncio(loop_scope="module")


def minute(i: int) -> MinuteResult:
    t = T0 + timedelta(minutes=i)
    kg, flag = KG[i], FLAGS[i]
    src = SourceMinute(source="S1", unit="U1", t=t, flow_act_m3_h=1_080_000.0 + i,
                       flow_std_dry_m3_h=835_718.9 + i, co2_dry_pct=12.0, co2_mg_m3=235_680.0,
                       co2_rate_kg_h=kg * 60, co2_kg=kg, valid=flag is DataFlag.N, flag=flag)
    unit = UnitMinute(unit="U1", t=t, output_mwh=10.0, co2_kg=kg, intensity_t_mwh=math.nan,
                      valid=True, flag=DataFlag.N)
    site = SiteMinute(t=t, co2_kg=kg, co2_today_t=0, co2_ytd_t=0, allowance_annual_t=0,
                      allowance_used_pct=math.nan, allowance_headroom_t=math.nan)
    return MinuteResult(t=t, sources=(src,), units=(unit,), site=site)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def running(tmp_path_factory: pytest.TempPathFactory,
                  ) -> AsyncIterator[tuple[OpcUaSink, Client, int]]:
    path: Path = tmp_path_factory.mktemp("hist") / "h.sqlite"
    historian = Historian(path)
    await historian.start()
    for i in range(len(KG)):
        await historian.on_minute(minute(i))
    for event in JOURNAL:
        await historian.record_alarm(event)
    for rec in PERIODS:
        await historian.on_period(rec)
    port = free_port()
    sink = OpcUaSink(plant_config(opcua_port=port), history=historian)
    await sink.start()
    try:
        async with Client(f"opc.tcp://127.0.0.1:{port}") as client:
            ns = await client.get_namespace_index(NS_URI)
            yield sink, client, ns
    finally:
        await sink.stop()
        await historian.stop()


def nid(ns: int, name: str) -> ua.NodeId:
    return ua.NodeId(cast("ua.String", f"U1.S1.{name}"), cast("ua.Int16", ns))


def ns0(ident: int) -> ua.NodeId:
    return ua.NodeId(cast("ua.Int32", ident))


def val(dv: ua.DataValue) -> Any:
    assert dv.Value is not None
    return dv.Value.Value


def code(dv: ua.DataValue | ua.HistoryReadResult) -> int:
    assert dv.StatusCode is not None
    return int(dv.StatusCode.value)


def raw_details(start: datetime, end: datetime, n: int = 0) -> ua.ReadRawModifiedDetails:
    d = ua.ReadRawModifiedDetails()
    d.IsReadModified = False
    d.StartTime, d.EndTime, d.NumValuesPerNode, d.ReturnBounds = start, end, n, False
    return d


async def history_read(client: Client, details: object, nodes: list[ua.NodeId],
                       cps: list[bytes | None] | None = None) -> list[ua.HistoryReadResult]:
    params = ua.HistoryReadParameters()
    params.HistoryReadDetails = details
    params.TimestampsToReturn = ua.TimestampsToReturn.Source
    params.ReleaseContinuationPoints = False  # its default is True
    for i, node in enumerate(nodes):
        rv = ua.HistoryReadValueId()
        rv.NodeId = node
        rv.ContinuationPoint = cps[i] if cps else None
        params.NodesToRead.append(rv)
    return await client.uaclient.history_read(params)


async def test_minute_variables_are_historizing(running: tuple[OpcUaSink, Client, int]) -> None:
    _sink, client, ns = running
    node = client.get_node(nid(ns, "CO2Minute"))
    assert val(await node.read_attribute(AttributeIds.Historizing)) is True
    level = val(await node.read_attribute(AttributeIds.AccessLevel))
    assert level & ua.AccessLevel.HistoryRead.mask and level & ua.AccessLevel.CurrentRead.mask
    total = client.get_node(nid(ns, "CO2Today"))  # a running total: not in the historian
    assert val(await total.read_attribute(AttributeIds.Historizing)) is False


async def test_raw_history_equals_the_historian_rows(
        running: tuple[OpcUaSink, Client, int]) -> None:
    _sink, client, ns = running
    values = await client.get_node(nid(ns, "CO2Minute")).read_raw_history(
        T0, T0 + timedelta(hours=1))
    # asyncua asks for bounds by default: the row at T0 is the start bound; nothing at or
    # after the end, so the end bound is BadBoundNotFound stamped with the end (Part 11, 4.4).
    *values, after = values
    assert after.SourceTimestamp == T0 + timedelta(hours=1)
    assert code(after) == StatusCodes.BadBoundNotFound
    assert [v.SourceTimestamp for v in values] == [T0 + timedelta(minutes=i) for i in range(5)]
    got = [val(v) for v in values]
    assert got[:2] == KG[:2] and got[3:] == KG[3:] and got[2] is None
    assert [code(v) for v in values] == [
        StatusCodes.Good, StatusCodes.Good, StatusCodes.BadCommunicationError,
        StatusCodes.UncertainSubstituteValue, StatusCodes.Good]
    flows = await client.get_node(nid(ns, "FlowStdDry")).read_raw_history(
        T0, T0 + timedelta(hours=1), return_bounds=False)
    assert [val(v) for v in flows] == [835_718.9 + i for i in range(5)]
    rates = await client.get_node(nid(ns, "CO2Rate")).read_raw_history(
        T0, T0 + timedelta(minutes=1))
    assert val(rates[0]) == pytest.approx(KG[0] * 60 / 1000)  # t/h, stored in kg/h


async def test_num_values_per_node_and_continuation_points(
        running: tuple[OpcUaSink, Client, int]) -> None:
    _sink, client, ns = running
    node = nid(ns, "CO2Minute")
    details = raw_details(T0, T0 + timedelta(hours=1), n=2)
    seen: list[datetime] = []
    cp: bytes | None = None
    calls = 0
    while True:
        (res,) = await history_read(client, details, [node], [cp])
        assert res.StatusCode.is_good()
        seen += [v.SourceTimestamp for v in res.HistoryData.DataValues]
        assert len(res.HistoryData.DataValues) <= 2
        calls += 1
        cp = res.ContinuationPoint
        if not cp:
            break
    assert calls == 3 and seen == [T0 + timedelta(minutes=i) for i in range(5)]
    # Newest first when StartTime is after EndTime: start included, end excluded.
    (back,) = await history_read(client, raw_details(T0 + timedelta(minutes=3), T0, 0), [node])
    assert [v.SourceTimestamp for v in back.HistoryData.DataValues] == [
        T0 + timedelta(minutes=i) for i in (3, 2, 1)]
    (bad,) = await history_read(client, details, [node], [b"not ours"])
    assert bad.StatusCode.value == StatusCodes.BadContinuationPointInvalid


async def test_not_historized_node_is_refused(running: tuple[OpcUaSink, Client, int]) -> None:
    _sink, client, ns = running
    (res,) = await history_read(client, raw_details(T0, T0 + timedelta(hours=1)),
                                [nid(ns, "CO2Today")])
    assert res.StatusCode.value == StatusCodes.BadHistoryOperationUnsupported


async def test_processed_aggregates(running: tuple[OpcUaSink, Client, int]) -> None:
    _sink, client, ns = running
    aggs = {"Average": ObjectIds.AggregateFunction_Average,
            "Minimum": ObjectIds.AggregateFunction_Minimum,
            "Maximum": ObjectIds.AggregateFunction_Maximum,
            "Count": ObjectIds.AggregateFunction_Count,
            "Total": ObjectIds.AggregateFunction_Total}
    d = ua.ReadProcessedDetails()
    d.StartTime, d.EndTime = T0, T0 + timedelta(minutes=4)
    d.ProcessingInterval = 2 * 60_000.0
    d.AggregateType = [ns0(i) for i in aggs.values()]
    res = await history_read(client, d, [nid(ns, "CO2Minute")] * len(aggs))
    by = {name: r.HistoryData.DataValues for name, r in zip(aggs, res, strict=True)}
    for values in by.values():
        assert [v.SourceTimestamp for v in values] == [T0, T0 + timedelta(minutes=2)]
    # Interval 1: two Good minutes; interval 2: one Bad and one Uncertain → no Good data.
    assert by["Average"][0].Value.Value == pytest.approx((KG[0] + KG[1]) / 2)
    assert by["Minimum"][0].Value.Value == KG[1] and by["Maximum"][0].Value.Value == KG[0]
    assert by["Count"][0].Value.Value == 2 and by["Count"][1].Value.Value == 0
    assert by["Total"][0].Value.Value == pytest.approx((KG[0] + KG[1]) * 60)
    assert by["Average"][0].StatusCode.is_good()
    assert by["Average"][1].StatusCode.value == StatusCodes.BadNoData
    d.AggregateType = [ns0(ObjectIds.AggregateFunction_Interpolative)]
    (unsupported,) = await history_read(client, d, [nid(ns, "CO2Minute")])
    assert unsupported.StatusCode.value == StatusCodes.BadAggregateNotSupported


async def test_history_server_capabilities(running: tuple[OpcUaSink, Client, int]) -> None:
    _sink, client, _ns = running
    caps = ObjectIds.HistoryServerCapabilities_AccessHistoryDataCapability
    assert await client.get_node(ns0(caps)).read_value() is True
    events = ObjectIds.HistoryServerCapabilities_AccessHistoryEventsCapability
    assert await client.get_node(ns0(events)).read_value() is True
    folder = client.get_node(ns0(ObjectIds.HistoryServerCapabilities_AggregateFunctions))
    names = {(await n.read_browse_name()).Name for n in await folder.get_children()}
    assert {"Average", "Minimum", "Maximum", "Count", "Total"} <= names


async def test_read_at_time(running: tuple[OpcUaSink, Client, int]) -> None:
    _sink, client, ns = running
    d = ua.ReadAtTimeDetails()
    d.ReqTimes = [T0, T0 + timedelta(seconds=90), T0 + timedelta(minutes=30)]
    (res,) = await history_read(client, d, [nid(ns, "CO2Minute")])
    exact, inside, none = res.HistoryData.DataValues
    assert val(exact) == KG[0] and code(exact) == StatusCodes.Good
    assert val(inside) == KG[1] and inside.SourceTimestamp == d.ReqTimes[1]
    assert code(inside) == StatusCodes.Good | 0x2  # HistorianInterpolated (stepped)
    assert code(none) == StatusCodes.BadNoData


async def test_uncertain_interval(running: tuple[OpcUaSink, Client, int]) -> None:
    _sink, client, ns = running
    d = ua.ReadProcessedDetails()
    d.StartTime, d.EndTime = T0 + timedelta(minutes=1), T0 + timedelta(minutes=3)
    d.ProcessingInterval = 0.0  # one interval over the whole range
    d.AggregateType = [ns0(ObjectIds.AggregateFunction_Average)]
    (res,) = await history_read(client, d, [nid(ns, "CO2Minute")])
    (avg,) = res.HistoryData.DataValues
    # Minute 1 Good, minute 2 Bad: the average of the Good one, Uncertain, calculated.
    assert val(avg) == KG[1]
    assert code(avg) == StatusCodes.UncertainDataSubNormal | 0x1


async def test_alarm_event_history_from_the_journal(
        running: tuple[OpcUaSink, Client, int]) -> None:
    sink, client, _ns = running
    assert sink.server is not None
    site = client.get_node(sink._layout.site)
    events = await site.read_event_history(T0, T0 + timedelta(hours=1),
                                           evtypes=ObjectIds.AlarmConditionType)
    def fields(name: str) -> list[Any]:
        return [getattr(e, name) for e in events]  # asyncua's Event: fields as attributes

    assert fields("Time") == [j.t for j in JOURNAL]
    assert [m.Text for m in fields("Message")] == [j.message for j in JOURNAL]
    assert fields("ConditionName") == ["s1_rate"] * 3
    assert fields("Comment")[1].Text == "seen" and fields("ClientUserId")[1] == "op1"
    # One event per call: the continuation point must not lose the second of equal times.
    details = ua.ReadEventDetails()
    details.StartTime, details.EndTime = T0, T0 + timedelta(hours=1)
    details.NumValuesPerNode = 1
    details.Filter = ua.EventFilter()
    details.Filter.SelectClauses = [ua.SimpleAttributeOperand(
        TypeDefinitionId=ns0(ObjectIds.BaseEventType),
        BrowsePath=[ua.QualifiedName("Message", 0)], AttributeId=AttributeIds.Value)]
    server_node = ns0(ObjectIds.Server)
    texts: list[str] = []
    cp: bytes | None = None
    for _ in range(5):
        (res,) = await history_read(client, details, [server_node], [cp])
        assert res.StatusCode.is_good()
        texts += [val_text(f.EventFields[0]) for f in res.HistoryData.Events]
        cp = res.ContinuationPoint
        if not cp:
            break
    assert texts == [j.message for j in JOURNAL]
    notifier = val(await site.read_attribute(AttributeIds.EventNotifier))
    assert notifier & 0x4  # HistoryRead


def val_text(v: ua.Variant) -> str:
    text = v.Value
    assert isinstance(text, ua.LocalizedText) and text.Text is not None
    return text.Text


async def test_hour_day_unit_and_allowance_history(
        running: tuple[OpcUaSink, Client, int]) -> None:
    _sink, client, ns = running

    async def raw(ident: str) -> list[ua.DataValue]:
        node = client.get_node(ua.NodeId(cast("ua.String", ident), cast("ua.Int16", ns)))
        start, end = DAY - timedelta(days=1), T0 + timedelta(days=1)
        first, *values, last = await node.read_raw_history(start, end)
        # asyncua asks for bounds by default: nothing before the start nor after the end.
        assert (first.SourceTimestamp, last.SourceTimestamp) == (start, end)
        assert code(first) == code(last) == StatusCodes.BadBoundNotFound
        return values

    hours = await raw("U1.S1.CO2Hour")
    assert [(val(v), code(v), v.SourceTimestamp) for v in hours] == [
        (196.96223, StatusCodes.Good, T0),
        (221.58251, StatusCodes.UncertainSubstituteValue, H1)]
    annual = await raw("Allowance.EmittedYTD")  # stamped with the end of its hour
    assert [(val(v), v.SourceTimestamp) for v in annual] == [(250_000.0, H1), (250_196.0, H2)]
    (diff,) = await raw("U1.ReconciliationDiff")
    assert (val(diff), code(diff), diff.SourceTimestamp) == (
        8.0, StatusCodes.UncertainEngineeringUnitsExceeded, DAY)
    (day,) = await raw("U1.CO2Day")
    assert (val(day), code(day)) == (4727.09, StatusCodes.Good)
    output = await raw("U1.Output")
    assert [val(v) for v in output] == [10.0] * 5
