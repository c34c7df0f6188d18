"""HistoryRead of the raw tags (Tags/<device>/<tag>) from the historian's minute statistics.

The history of a raw tag is its minute mean with the minute's HJ 212 flag as status;
Minimum / Maximum are the samples' extremes, Count the samples of the Good minutes.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import pytest
import pytest_asyncio
from asyncua import ua
from asyncua.client.client import Client
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes

from model.flags import DataFlag
from model.records import MinuteResult, Sample, SampleBlock, SiteMinute, TagMinute, TagTable
from server.historian import Historian
from server.opcua.sink import OpcUaSink
from tests.conftest import free_port
from tests.fixtures.plant import plant_config
from tests.server.test_opcua_history import code, history_read, ns0, raw_details, val

NS_URI = "urn:carbonscada:testsite"
T0 = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)
NAN = math.nan
# (mean, min, max, count, flag) of s1_co2 for minutes 0..4; minute 2 failed (no samples).
STATS = [(12.0, 11.8, 12.3, 60, DataFlag.N), (12.4, 12.1, 12.9, 58, DataFlag.N),
         (NAN, NAN, NAN, 0, DataFlag.B), (11.0, 10.5, 11.6, 30, DataFlag.S),
         (12.6, 12.2, 13.1, 60, DataFlag.N)]

pytestmark = pytest.mark.asyncio(loop_scope="module")


def minute(i: int) -> MinuteResult:
    t = T0 + timedelta(minutes=i)
    mean, lo, hi, count, flag = STATS[i]
    site = SiteMinute(t=t, co2_kg=0.0, co2_today_t=0, co2_ytd_t=0, allowance_annual_t=0,
                      allowance_used_pct=NAN, allowance_headroom_t=NAN)
    # Another tag in the same minutes, to show each tag reads only its own rows.
    other = TagMinute("s1_temp", t, 50.0 + i, 49.0, 51.0, 60, DataFlag.N)
    return MinuteResult(t=t, sources=(), units=(), site=site,
                        tags=(TagMinute("s1_co2", t, mean, lo, hi, count, flag), other))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def running(tmp_path_factory: pytest.TempPathFactory,
                  ) -> AsyncIterator[tuple[OpcUaSink, Client, int]]:
    path: Path = tmp_path_factory.mktemp("taghist") / "h.sqlite"
    historian = Historian(path)
    await historian.start()
    for i in range(len(STATS)):
        await historian.on_minute(minute(i))
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


def tag(ns: int, name: str = "s1_co2") -> ua.NodeId:
    return ua.NodeId(cast("ua.String", f"Tags.cems1.{name}"), cast("ua.Int16", ns))


async def test_raw_tag_is_historizing_and_keeps_its_live_value(
        running: tuple[OpcUaSink, Client, int]) -> None:
    sink, client, ns = running
    node = client.get_node(tag(ns))
    assert val(await node.read_attribute(AttributeIds.Historizing)) is True
    level = val(await node.read_attribute(AttributeIds.AccessLevel))
    assert level & ua.AccessLevel.HistoryRead.mask and level & ua.AccessLevel.CurrentRead.mask
    # The live value stays the last sample polled, not a minute mean.
    await sink.on_samples(SampleBlock.of_samples(TagTable(("s1_co2",)),
                                                 [Sample("s1_co2", datetime.now(UTC), 11.93)]))
    assert await node.read_value() == 11.93


async def test_raw_history_is_the_minute_mean_with_the_flag_status(
        running: tuple[OpcUaSink, Client, int]) -> None:
    _sink, client, ns = running
    values = await client.get_node(tag(ns)).read_raw_history(T0, T0 + timedelta(hours=1),
                                                             return_bounds=False)
    assert [v.SourceTimestamp for v in values] == [T0 + timedelta(minutes=i) for i in range(5)]
    assert [val(v) for v in values] == [12.0, 12.4, None, 11.0, 12.6]
    assert [code(v) for v in values] == [
        StatusCodes.Good, StatusCodes.Good, StatusCodes.BadCommunicationError,
        StatusCodes.UncertainSubstituteValue, StatusCodes.Good]
    temps = await client.get_node(tag(ns, "s1_temp")).read_raw_history(
        T0, T0 + timedelta(hours=1), return_bounds=False)
    assert [val(v) for v in temps] == [50.0, 51.0, 52.0, 53.0, 54.0]
    untouched = await client.get_node(tag(ns, "s1_static")).read_raw_history(
        T0, T0 + timedelta(hours=1), return_bounds=False)
    assert untouched == []


async def test_raw_tag_continuation_points(running: tuple[OpcUaSink, Client, int]) -> None:
    _sink, client, ns = running
    details = raw_details(T0, T0 + timedelta(hours=1), n=2)
    seen: list[float | None] = []
    cp: bytes | None = None
    calls = 0
    while True:
        (res,) = await history_read(client, details, [tag(ns)], [cp])
        assert res.StatusCode.is_good() and len(res.HistoryData.DataValues) <= 2
        seen += [val(v) for v in res.HistoryData.DataValues]
        calls += 1
        cp = res.ContinuationPoint
        if not cp:
            break
    assert calls == 3 and seen == [12.0, 12.4, None, 11.0, 12.6]


async def test_raw_tag_processed_aggregates(running: tuple[OpcUaSink, Client, int]) -> None:
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
    res = await history_read(client, d, [tag(ns)] * len(aggs))
    by = {name: r.HistoryData.DataValues for name, r in zip(aggs, res, strict=True)}
    # [08:00, 08:02): minutes 0 and 1, both Good.
    assert val(by["Average"][0]) == pytest.approx(12.2)  # (12.0 + 12.4) / 2
    assert val(by["Minimum"][0]) == 11.8  # the lowest sample, below both means
    assert val(by["Maximum"][0]) == 12.9
    assert val(by["Count"][0]) == 118  # 60 + 58 samples
    assert val(by["Total"][0]) == pytest.approx(1464.0)  # (12.0 + 12.4) × 60 s
    assert code(by["Average"][0]) == StatusCodes.Good | 0x1  # calculated
    # [08:02, 08:04): a Bad and an Uncertain minute: no Good data.
    assert code(by["Average"][1]) == StatusCodes.BadNoData
    assert val(by["Count"][1]) == 0
    # The whole five minutes: Good minutes 0, 1 and 4, so Uncertain.
    d.StartTime, d.EndTime, d.ProcessingInterval = T0, T0 + timedelta(minutes=5), 0.0
    res = await history_read(client, d, [tag(ns)] * len(aggs))
    whole = {name: r.HistoryData.DataValues[0] for name, r in zip(aggs, res, strict=True)}
    assert val(whole["Average"]) == pytest.approx(37.0 / 3)  # (12.0 + 12.4 + 12.6) / 3
    assert (val(whole["Minimum"]), val(whole["Maximum"])) == (11.8, 13.1)
    assert val(whole["Count"]) == 178  # 60 + 58 + 60
    assert code(whole["Average"]) == StatusCodes.UncertainDataSubNormal | 0x1


async def test_raw_tag_read_at_time(running: tuple[OpcUaSink, Client, int]) -> None:
    _sink, client, ns = running
    d = ua.ReadAtTimeDetails()
    d.ReqTimes = [T0 + timedelta(minutes=4), T0 + timedelta(seconds=90),
                  T0 + timedelta(minutes=9)]
    (res,) = await history_read(client, d, [tag(ns)])
    exact, inside, none = res.HistoryData.DataValues
    assert (val(exact), code(exact)) == (12.6, StatusCodes.Good)
    assert val(inside) == 12.4 and code(inside) == StatusCodes.Good | 0x2  # interpolated
    assert inside.SourceTimestamp == d.ReqTimes[1]
    assert code(none) == StatusCodes.BadNoData

