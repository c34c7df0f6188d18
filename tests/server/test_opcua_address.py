"""OPC UA address space (issue 13): languages by LocaleIds, BuildInfo, statuses, EURange,
server diagnostics; real asyncua clients over TCP against the real OpcUaSink."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib.metadata
import math
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes

from model.records import PeriodRecords
from server.opcua.layout import _ns0
from server.opcua.locales import choose_locale
from server.opcua.sink import OpcUaSink
from tests.conftest import free_port
from tests.fixtures.plant import plant_config
from tests.server.test_opcua import HOUR, HOUR_T0, HOUR_T1, NS_URI, POSITION

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def served() -> AsyncIterator[tuple[OpcUaSink, str]]:
    port = free_port()
    sink = OpcUaSink(plant_config(opcua_port=port))
    await sink.start()
    try:
        yield sink, f"opc.tcp://127.0.0.1:{port}"
    finally:
        await sink.stop()


@pytest.fixture
def sink(served: tuple[OpcUaSink, str]) -> OpcUaSink:
    return served[0]


@pytest.fixture
def url(served: tuple[OpcUaSink, str]) -> str:
    return served[1]


async def node(client: Client, ident: str) -> Node:
    ns = await client.get_namespace_index(NS_URI)
    return client.get_node(f"ns={ns};s={ident}")


def ns0(ident: int) -> ua.NodeId:
    return _ns0(ident)


async def test_build_info_is_carbonscadas(url: str) -> None:
    async with Client(url) as client:
        info = await client.get_node(ns0(ObjectIds.Server_ServerStatus_BuildInfo)).read_value()
        status = await client.get_node(ns0(ObjectIds.Server_ServerStatus)).read_value()
        name = await client.get_node(
            ns0(ObjectIds.Server_ServerStatus_BuildInfo_ProductName)).read_value()
    version = importlib.metadata.version("carbonscada")
    assert (info.ProductName, info.SoftwareVersion) == ("carbonscada", version)
    assert info.ProductUri == "urn:carbonscada"
    assert info.ManufacturerName and "FreeOpcUa" not in info.ManufacturerName
    assert info.BuildDate.year >= 2024
    assert name == "carbonscada"
    assert status.BuildInfo.ProductName == "carbonscada"
    assert status.State == ua.ServerState.Running


async def test_names_follow_the_sessions_locale_ids(url: str) -> None:
    zh, en = Client(url), Client(url)
    zh.set_locale(["zh-CN", "en"])
    en.set_locale(["en"])
    async with zh, en:
        zh_node, en_node = await node(zh, "U1.S1.CO2Minute"), await node(en, "U1.S1.CO2Minute")
        assert await zh_node.read_display_name() == ua.LocalizedText("上一分钟CO2排放量", "zh-CN")
        assert await zh_node.read_description() == ua.LocalizedText(
            "上一分钟CO2排放量（kg）", "zh-CN")
        assert await en_node.read_display_name() == ua.LocalizedText("CO2Minute", "en")
        assert await en_node.read_description() == ua.LocalizedText(
            "CO2 emitted in the last minute (kg)", "en")
        # Objects too: the site's configured Chinese name; browse names stay English.
        zh_site = await node(zh, "testsite")
        assert await zh_site.read_display_name() == ua.LocalizedText("测试电厂", "zh-CN")
        en_site = await node(en, "testsite")
        assert await en_site.read_display_name() == ua.LocalizedText("Test Plant", "en")
        assert (await zh_node.read_browse_name()).Name == "CO2Minute"
        # Browse results carry the session's DisplayName.
        refs = await (await node(zh, "U1.S1")).get_references(ObjectIds.HasComponent)
        shown = {r.BrowseName.Name: r.DisplayName for r in refs}
        assert shown["CO2Dry"] == ua.LocalizedText("CO2浓度（干基）", "zh-CN")
        refs = await (await node(en, "U1.S1")).get_references(ObjectIds.HasComponent)
        assert {r.BrowseName.Name: r.DisplayName for r in refs}["CO2Dry"] == ua.LocalizedText(
            "CO2Dry", "en")
        # A tag without a Chinese description: English, whatever the session asks for.
        assert (await (await node(zh, "Tags.cems1.s1_temp")).read_display_name()).Locale == "en"


async def test_locale_choice() -> None:
    assert choose_locale([]) == "en"
    assert choose_locale(["de-DE", "zh"]) == "zh-CN"
    assert choose_locale(["zh_Hans_CN"]) == "zh-CN"
    assert choose_locale(["en-US", "zh-CN"]) == "en"
    assert choose_locale(["fr"]) == "en"


async def test_no_value_is_never_good(url: str, sink: OpcUaSink) -> None:
    async with Client(url) as client:
        forecast = await node(client, "Allowance.ForecastYearEnd")
        dv = await forecast.read_data_value(raise_on_bad_status=False)
        assert dv.StatusCode is not None
        assert dv.StatusCode.value == StatusCodes.BadWaitingForInitialData
        # Fewer than 30 days of data: no forecast (NaN), the rest of the position is good.
        early = dataclasses.replace(POSITION, forecast_year_end_t=math.nan,
                                    forecast_shortfall_t=math.nan, shortfall_cost_cny=math.nan)
        await sink.on_period(PeriodRecords("hour", HOUR_T0, HOUR_T1, (HOUR,), (), (), early))
        for ident in ("ForecastYearEnd", "ForecastShortfall", "ShortfallCost"):
            dv = await (await node(client, f"Allowance.{ident}")).read_data_value(
                raise_on_bad_status=False)
            assert dv.StatusCode is not None
            assert dv.StatusCode.value == StatusCodes.BadWaitingForInitialData, ident
        annual = await (await node(client, "Allowance.Annual")).read_data_value()
        assert annual.StatusCode is not None and annual.StatusCode.is_good()
        assert annual.Value is not None and annual.Value.Value == 4_000_000.0


async def test_eu_range_where_known(url: str) -> None:
    async with Client(url) as client:
        for ident in ("U1.S1.CO2Dry", "Tags.cems1.s1_moisture", "Tags.cems1.s1_co2"):
            eu_range = await (await (await node(client, ident)).get_child("0:EURange")
                              ).read_value()
            assert (eu_range.Low, eu_range.High) == (0.0, 100.0), ident
        # No range is invented where none is known.
        children = await (await node(client, "U1.S1.CO2Minute")).get_properties()
        names = {(await c.read_browse_name()).Name for c in children}
        assert names == {"EngineeringUnits"}


async def read_summary(client: Client) -> ua.ServerDiagnosticsSummaryDataType:
    value = await client.get_node(
        ns0(ObjectIds.Server_ServerDiagnostics_ServerDiagnosticsSummary)).read_value()
    assert isinstance(value, ua.ServerDiagnosticsSummaryDataType)
    return value


async def test_server_diagnostics_are_counted(url: str) -> None:
    async with Client(url) as client:
        enabled = await client.get_node(
            ns0(ObjectIds.Server_ServerDiagnostics_EnabledFlag)).read_value()
        assert enabled is True
        before = await read_summary(client)
        # A user-name login where the server takes anonymous sessions only: refused.
        refused = Client(url)
        refused.set_user("nobody")
        refused.set_password("wrong")
        with pytest.raises(Exception):  # noqa: B017 - asyncua's error, whatever its class
            await refused.connect()
        with contextlib.suppress(Exception):
            await refused.disconnect()
        subscription = await client.create_subscription(100, None)
        await asyncio.sleep(1.5)  # written once a second
        after = await read_summary(client)
        assert after.CurrentSessionCount >= 1
        assert after.CumulatedSessionCount >= before.CumulatedSessionCount + 1
        assert after.SecurityRejectedSessionCount == before.SecurityRejectedSessionCount + 1
        assert after.RejectedSessionCount == before.RejectedSessionCount + 1
        assert after.CurrentSubscriptionCount >= 1
        assert after.CumulatedSubscriptionCount >= before.CumulatedSubscriptionCount + 1
        count = await client.get_node(ns0(
            ObjectIds.Server_ServerDiagnostics_ServerDiagnosticsSummary_CurrentSessionCount)
        ).read_value()
        assert count == after.CurrentSessionCount
        await subscription.delete()
