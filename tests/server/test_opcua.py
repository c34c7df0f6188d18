"""OPC UA sink against a real asyncua client over TCP."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaStatusCodeError

from model.errors import ConfigError
from model.flags import DataFlag
from model.records import (
    AllowancePosition,
    MinuteResult,
    PeriodRecords,
    PeriodResult,
    Sample,
    SampleBlock,
    SiteMinute,
    SourceColumns,
    SourceMinute,
    TagTable,
    UnitMinute,
    UnitPeriod,
)
from server.config import parse_config
from server.opcua.layout import unece_unit_id
from server.opcua.sink import OpcUaSink
from tests.conftest import free_port
from tests.fixtures.plant import plant_config, plant_dict


def block(samples: list[Sample]) -> SampleBlock:
    """The samples as one block, over a table of their tags."""
    return SampleBlock.of_samples(TagTable(tuple(dict.fromkeys(s.tag for s in samples))), samples)

NS_URI = "urn:carbonscada:testsite"
T = datetime(2025, 3, 14, 6, 30, tzinfo=UTC)  # minute start

# The calc_vectors.md CEMS worked example, typed in by hand; totals are made-up round numbers.
SOURCE = SourceMinute(
    source="S1", unit="U1", t=T, flow_act_m3_h=1_080_000.0, flow_std_dry_m3_h=835_718.9,
    co2_dry_pct=12.0, co2_mg_m3=235_680.0, co2_rate_kg_h=196_962.2, co2_kg=3282.70,
    valid=True, flag=DataFlag.N, co2_hour_t=98.5, co2_today_t=1520.25, co2_ytd_t=250_000.5)
UNIT = UnitMinute(
    unit="U1", t=T, output_mwh=10.0, co2_kg=3282.70, intensity_t_mwh=0.32827, valid=True,
    flag=DataFlag.N, co2_today_t=1520.25, output_today_mwh=4500.0,
    intensity_today_t_mwh=0.3378, co2_ytd_t=250_000.5)
SITE = SiteMinute(t=T, co2_kg=3282.70, co2_today_t=1520.25, co2_ytd_t=250_000.5,
                  allowance_annual_t=4_000_000.0, allowance_used_pct=6.25,
                  allowance_headroom_t=3_749_999.5)
RESULT = MinuteResult(t=T, sources=(SOURCE,), units=(UNIT,), site=SITE)

SITE_PATH = ["CarbonSCADA", "testsite"]
SOURCE_PATH = [*SITE_PATH, "Units", "U1", "Sources", "S1"]

KGM = 0x4B_47_4D  # "K" 0x4B, "G" 0x47, "M" 0x4D (OPC UA Part 8, 5.6.3) = 4 933 453
P1 = 0x50_31  # "P" 0x50, "1" 0x31 = 20 529
CEL = 0x43_45_4C  # "C" 0x43, "E" 0x45, "L" 0x4C

# One server for the tests that write and read back: each start costs over a second.
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def running() -> AsyncIterator[tuple[OpcUaSink, Client]]:
    port = free_port()
    sink = OpcUaSink(plant_config(opcua_port=port))
    await sink.start()
    try:
        async with Client(f"opc.tcp://127.0.0.1:{port}") as client:
            yield sink, client
    finally:
        await sink.stop()


@pytest.fixture
def sink(running: tuple[OpcUaSink, Client]) -> OpcUaSink:
    return running[0]


@pytest.fixture
def client(running: tuple[OpcUaSink, Client]) -> Client:
    return running[1]


async def child(client: Client, path: list[str]) -> Node:
    ns = await client.get_namespace_index(NS_URI)
    return await client.nodes.objects.get_child([f"{ns}:{p}" for p in path])


async def by_id(client: Client, ident: str) -> Node:
    ns = await client.get_namespace_index(NS_URI)
    return client.get_node(f"ns={ns};s={ident}")


@dataclasses.dataclass
class Read:
    value: Any
    status: int
    source_t: datetime | None
    vtype: ua.VariantType


async def read(node: Node) -> Read:
    dv = await node.read_data_value(raise_on_bad_status=False)
    assert dv.Value is not None and dv.StatusCode is not None
    return Read(dv.Value.Value, dv.StatusCode.value, dv.SourceTimestamp, dv.Value.VariantType)


async def test_unece_unit_id_is_the_codes_ascii_bytes() -> None:
    assert unece_unit_id("KGM") == 4_933_453 == KGM
    assert unece_unit_id("P1") == 20_529 == P1


async def test_endpoint_namespace_and_server_name(client: Client) -> None:
    assert NS_URI in await client.get_namespace_array()
    endpoints = await client.get_endpoints()
    # The test plant allows None beside the secured endpoints (issue 13), each policy
    # in Sign and SignAndEncrypt.
    policy = "http://opcfoundation.org/UA/SecurityPolicy#"
    assert {(e.SecurityPolicyUri, e.SecurityMode) for e in endpoints} == {
        (policy + "None", ua.MessageSecurityMode.None_),
        *((policy + p, m) for p in ("Basic256Sha256", "Aes128_Sha256_RsaOaep",
                                    "Aes256_Sha256_RsaPss")
          for m in (ua.MessageSecurityMode.Sign, ua.MessageSecurityMode.SignAndEncrypt))}
    assert all(len(e.ServerCertificate) > 500 for e in endpoints)  # no 0-byte certificate
    assert {t.TokenType for e in endpoints for t in e.UserIdentityTokens} == {
        ua.UserTokenType.Anonymous}
    assert endpoints[0].Server.ApplicationName.Text == "carbonscada Test Plant"


async def test_browse_source_and_read_minute_values(client: Client, sink: OpcUaSink) -> None:
    s1 = await child(client, SOURCE_PATH)
    names = {(await n.read_browse_name()).Name for n in await s1.get_children()}
    assert names == {"CO2Dry", "CO2MgM3", "FlowActual", "FlowStdDry", "CO2Rate", "CO2Minute",
                     "CO2Hour", "CO2Today", "CO2YTD", "CO2RelUncertainty", "DataFlag"}

    await sink.on_minute(RESULT)

    minute = await read(await child(client, [*SOURCE_PATH, "CO2Minute"]))
    assert minute.value == 3282.70
    assert minute.vtype == ua.VariantType.Double
    assert minute.source_t == T
    assert minute.status == StatusCodes.Good
    expected = {"CO2Dry": 12.0, "CO2MgM3": 235_680.0, "FlowActual": 1_080_000.0,
                "FlowStdDry": 835_718.9, "CO2Today": 1520.25, "CO2YTD": 250_000.5}
    for name, value in expected.items():
        r = await read(await child(client, [*SOURCE_PATH, name]))
        assert (r.value, r.status, r.source_t) == (value, StatusCodes.Good, T), name
    rate = await read(await child(client, [*SOURCE_PATH, "CO2Rate"]))
    assert rate.value == pytest.approx(196.9622, rel=1e-12)  # t/h from 196 962.2 kg/h
    assert (await read(await child(client, [*SOURCE_PATH, "DataFlag"]))).value == "N"

    # Stable string NodeIds built from the path, as a DCS binds to them.
    unit = {"U1.S1.CO2Minute": 3282.70, "U1.Output": 10.0, "U1.Intensity": 0.32827,
            "U1.OutputToday": 4500.0, "U1.IntensityToday": 0.3378, "U1.CO2Today": 1520.25,
            "U1.CO2YTD": 250_000.5, "U1.DataFlag": "N"}
    for ident, expected_value in unit.items():
        assert (await read(await by_id(client, ident))).value == expected_value, ident
    # Hour and allowance variables change with closed hours only (test_hour_and_allowance).
    assert (await read(await by_id(client, "U1.S1.CO2Hour"))).status == (
        StatusCodes.BadWaitingForInitialData)


async def test_flags_map_to_status_codes(client: Client, sink: OpcUaSink) -> None:
    bad = dataclasses.replace(SOURCE, valid=False, flag=DataFlag.B)
    no_output = dataclasses.replace(UNIT, output_mwh=0.0, intensity_t_mwh=math.nan)
    await sink.on_minute(RESULT.replace(sources=(bad,), units=(no_output,)))

    minute = await read(await by_id(client, "U1.S1.CO2Minute"))
    assert minute.status == StatusCodes.BadCommunicationError
    assert minute.value is None  # OPC UA Part 4, 7.7.1: a Bad value is not delivered
    assert minute.source_t == T
    flag = await read(await by_id(client, "U1.S1.DataFlag"))
    assert (flag.value, flag.status) == ("B", StatusCodes.Good)
    # A running total keeps its value; one failed minute only makes it incomplete.
    today = await read(await by_id(client, "U1.S1.CO2Today"))
    assert (today.value, today.status) == (1520.25, StatusCodes.UncertainSubNormal)
    # No output, no intensity: a NaN is no value, never Good (issue 13).
    intensity = await read(await by_id(client, "U1.Intensity"))
    assert intensity.value is None
    assert intensity.status == StatusCodes.BadWaitingForInitialData

    cases = {DataFlag.S: StatusCodes.UncertainSubstituteValue,
             DataFlag.T: StatusCodes.UncertainEngineeringUnitsExceeded,
             DataFlag.D: StatusCodes.BadSensorFailure,
             DataFlag.C: StatusCodes.BadOutOfService,
             DataFlag.M: StatusCodes.BadOutOfService,
             DataFlag.F: StatusCodes.BadOutOfService}
    for data_flag, code in cases.items():
        src = dataclasses.replace(SOURCE, valid=False, flag=data_flag)
        await sink.on_minute(RESULT.replace(sources=(src,)))
        assert (await read(await by_id(client, "U1.S1.CO2Dry"))).status == code, data_flag
    # A stopped unit's totals are complete.
    today = await read(await by_id(client, "U1.S1.CO2Today"))
    assert (today.value, today.status) == (1520.25, StatusCodes.Good)


def columns(*sources: SourceMinute) -> SourceColumns:
    """The sources as the minute cycle hands them over: columns, no records."""
    def col(name: str) -> np.ndarray[Any, np.dtype[np.float64]]:
        return np.array([getattr(s, name) for s in sources], np.float64)

    return SourceColumns(
        sources=tuple(s.source for s in sources), units=tuple(s.unit for s in sources),
        flow_act_m3_h=col("flow_act_m3_h"), flow_std_dry_m3_h=col("flow_std_dry_m3_h"),
        co2_dry_pct=col("co2_dry_pct"), co2_mg_m3=col("co2_mg_m3"),
        co2_rate_kg_h=col("co2_rate_kg_h"), co2_kg=col("co2_kg"),
        flag=np.array([int(s.flag) for s in sources], np.uint8),
        substitution=np.zeros(len(sources), np.int64), rules=("",),
        co2_hour_t=col("co2_hour_t"), co2_today_t=col("co2_today_t"),
        co2_ytd_t=col("co2_ytd_t"))


async def test_minute_from_columns_reads_as_from_records(client: Client,
                                                         sink: OpcUaSink) -> None:
    # The runtime's minutes come as columns (server/opcua/minutes.py): the same values,
    # statuses and timestamps as the records path above. A source unknown to this server
    # (S9) is skipped.
    other = dataclasses.replace(SOURCE, source="S9", co2_kg=1.0)
    await sink.on_minute(MinuteResult(t=T, units=(UNIT,), site=SITE,
                                      source_columns=columns(other, SOURCE)))
    expected = {"CO2Minute": 3282.70, "CO2Dry": 12.0, "CO2MgM3": 235_680.0,
                "FlowActual": 1_080_000.0, "FlowStdDry": 835_718.9, "CO2Today": 1520.25,
                "CO2YTD": 250_000.5}
    for name, value in expected.items():
        r = await read(await by_id(client, f"U1.S1.{name}"))
        assert (r.value, r.status, r.source_t) == (value, StatusCodes.Good, T), name
    rate = await read(await by_id(client, "U1.S1.CO2Rate"))
    assert rate.value == pytest.approx(196.9622, rel=1e-12)  # t/h from 196 962.2 kg/h
    flag = await read(await by_id(client, "U1.S1.DataFlag"))
    assert (flag.value, flag.status, flag.source_t) == ("N", StatusCodes.Good, T)

    bad = dataclasses.replace(SOURCE, valid=False, flag=DataFlag.B, co2_mg_m3=math.nan)
    await sink.on_minute(MinuteResult(t=T, units=(UNIT,), site=SITE,
                                      source_columns=columns(bad)))
    minute = await read(await by_id(client, "U1.S1.CO2Minute"))
    assert (minute.value, minute.status) == (None, StatusCodes.BadCommunicationError)
    today = await read(await by_id(client, "U1.S1.CO2Today"))
    assert (today.value, today.status) == (1520.25, StatusCodes.UncertainSubNormal)
    assert (await read(await by_id(client, "U1.S1.DataFlag"))).value == "B"
    substitute = dataclasses.replace(SOURCE, valid=False, flag=DataFlag.S, co2_mg_m3=math.nan)
    await sink.on_minute(MinuteResult(t=T, units=(UNIT,), site=SITE,
                                      source_columns=columns(substitute)))
    assert (await read(await by_id(client, "U1.S1.CO2Dry"))).status == (
        StatusCodes.UncertainSubstituteValue)
    # A NaN is no value, never Uncertain or Good.
    assert (await read(await by_id(client, "U1.S1.CO2MgM3"))).status == (
        StatusCodes.BadWaitingForInitialData)
    await sink.on_minute(RESULT)  # as the other tests expect to find it


async def test_raw_sample_updates_tag(client: Client, sink: OpcUaSink) -> None:
    node = await child(client, [*SITE_PATH, "Tags", "cems1", "s1_co2"])
    t1 = datetime(2025, 3, 14, 6, 30, 1, tzinfo=UTC)
    t2 = datetime(2025, 3, 14, 6, 30, 2, tzinfo=UTC)
    await sink.on_samples(block([Sample("s1_co2", t1, 11.9), Sample("no_such_tag", t1, 1.0),
                           Sample("s1_co2", t2, 12.1)]))
    r = await read(node)
    assert (r.value, r.status, r.source_t) == (12.1, StatusCodes.Good, t2)

    await sink.on_samples(block([Sample("s1_temp", t2, 50.0, DataFlag.D)]))
    r = await read(await by_id(client, "Tags.cems1.s1_temp"))
    assert r.status == StatusCodes.BadSensorFailure


async def test_engineering_units_and_names(client: Client) -> None:
    node = await child(client, [*SOURCE_PATH, "CO2Minute"])
    assert (await node.read_display_name()).Text == "CO2Minute"
    # English for this client's LocaleIds ["en"]; Chinese by locale (test_opcua_address.py).
    assert await node.read_description() == ua.LocalizedText(
        "CO2 emitted in the last minute (kg)", "en")

    eu = await (await node.get_child("0:EngineeringUnits")).read_value()
    assert eu.NamespaceUri == "http://www.opcfoundation.org/UA/units/un/cefact"
    assert eu.UnitId == 4_933_453  # KGM
    assert eu.DisplayName.Text == "kg"

    co2 = await child(client, [*SOURCE_PATH, "CO2Dry"])
    assert (await (await co2.get_child("0:EngineeringUnits")).read_value()).UnitId == P1
    eu_range = await (await co2.get_child("0:EURange")).read_value()
    assert (eu_range.Low, eu_range.High) == (0.0, 100.0)

    intensity = await by_id(client, "U1.Intensity")
    eu = await (await intensity.get_child("0:EngineeringUnits")).read_value()
    assert eu.UnitId == -1  # UNECE has no code for t/MWh
    assert eu.Description.Text == "tonne per megawatt hour"

    temp = await by_id(client, "Tags.cems1.s1_temp")
    eu = await (await temp.get_child("0:EngineeringUnits")).read_value()
    assert (eu.UnitId, eu.DisplayName.Text) == (CEL, "°C")


async def test_variables_are_read_only(client: Client) -> None:
    node = await by_id(client, "U1.S1.CO2Minute")
    with pytest.raises(UaStatusCodeError):
        await node.write_value(ua.DataValue(ua.Variant(1.0, ua.VariantType.Double)))


class _Handler:
    def __init__(self) -> None:
        self.values: asyncio.Queue[Any] = asyncio.Queue()

    def datachange_notification(self, node: Node, val: Any, data: Any) -> None:
        self.values.put_nowait(val)


async def test_subscription_receives_update(client: Client, sink: OpcUaSink) -> None:
    handler = _Handler()
    subscription = await client.create_subscription(50, handler)
    await subscription.subscribe_data_change(await by_id(client, "U1.S1.CO2Minute"))
    await asyncio.wait_for(handler.values.get(), 5)  # the current value, whatever it is

    src = dataclasses.replace(SOURCE, co2_kg=3300.25)
    await sink.on_minute(RESULT.replace(sources=(src,)))
    assert await asyncio.wait_for(handler.values.get(), 5) == 3300.25
    await subscription.delete()


async def test_fresh_server_waits_for_data_and_stop_releases_port(port: int) -> None:
    sink = OpcUaSink(plant_config(opcua_port=port))
    await sink.start()
    async with Client(f"opc.tcp://127.0.0.1:{port}") as client:
        for ident in ("U1.S1.CO2Minute", "U1.DataFlag", "Allowance.Headroom",
                      "Tags.cems1.s1_co2"):
            r = await read(await by_id(client, ident))
            assert r.status == StatusCodes.BadWaitingForInitialData, ident
    await sink.stop()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
    await sink.stop()  # a second stop is harmless


async def test_clashing_node_ids_are_a_config_error() -> None:
    data = plant_dict()
    data["units"][0]["id"] = "Tags"  # the unit's NodeId would be the Tags folder's
    with pytest.raises(ConfigError, match="'Tags'"):
        OpcUaSink(parse_config(data, "test"))


HOUR_T0 = datetime(2025, 3, 14, 6, tzinfo=UTC)
HOUR_T1 = datetime(2025, 3, 14, 7, tzinfo=UTC)
# An hour of the worked example: 12.0 · 1.964 · 835 718.9 / 100 = 196 962.23 kg/h → 196.96223 t
HOUR = PeriodResult("S1", HOUR_T0, 12.0, 835_718.9, 196_962.23, 196.96223, 196.96223, True,
                    DataFlag.N, 60)
# annual 4 000 000 t, 250 000 t so far, 70 days of 365 passed, last 30 days 21 000 t:
# forecast 250 000 + 700 · 295 = 456 500 t; no shortfall
POSITION = AllowancePosition(
    annual_t=4_000_000.0, ytd_t=250_000.0, year_fraction=70 / 365, days_left=295.0,
    trailing_30d_t=21_000.0, prorated_t=767_123.29, used_pct=6.25, headroom_t=3_750_000.0,
    forecast_year_end_t=456_500.0, forecast_shortfall_t=0.0, carbon_price_cny_t=80.0,
    shortfall_cost_cny=0.0)


async def test_hour_and_allowance(client: Client, sink: OpcUaSink) -> None:
    await sink.on_period(PeriodRecords("hour", HOUR_T0, HOUR_T1, (HOUR,), (), (), POSITION))
    r = await read(await by_id(client, "U1.S1.CO2Hour"))
    assert (r.value, r.status, r.source_t) == (196.96223, StatusCodes.Good, HOUR_T0)
    eu = await (await (await by_id(client, "U1.S1.CO2Hour")).get_child(
        "0:EngineeringUnits")).read_value()
    assert eu.DisplayName.Text == "t"
    allowance = {"Annual": 4_000_000.0, "EmittedYTD": 250_000.0, "UsedPercent": 6.25,
                 "Headroom": 3_750_000.0, "ForecastYearEnd": 456_500.0,
                 "ForecastShortfall": 0.0, "ShortfallCost": 0.0}
    for name, value in allowance.items():
        r = await read(await child(client, [*SITE_PATH, "Allowance", name]))
        assert (r.value, r.status, r.source_t) == (value, StatusCodes.Good, HOUR_T1), name
    cost = await (await by_id(client, "Allowance.ShortfallCost")).get_child("0:EngineeringUnits")
    assert (await cost.read_value()).DisplayName.Text == "CNY"

    # An invalid hour (D) with a substitute: its value, flagged as a substitute.
    sub = dataclasses.replace(HOUR, co2_t=221.58251, co2_measured_t=math.nan, valid=False,
                              flag=DataFlag.D, n_valid=0, substituted=True,
                              substitution_rule="mrr_mean_2sigma")
    await sink.on_period(PeriodRecords("hour", HOUR_T1, HOUR_T1, (sub,), (), ()))
    r = await read(await by_id(client, "U1.S1.CO2Hour"))
    assert (r.value, r.status) == (221.58251, StatusCodes.UncertainSubstituteValue)
    # Without a substitute: the hour's flag, no value.
    none = dataclasses.replace(sub, co2_t=math.nan, substituted=False, substitution_rule="")
    await sink.on_period(PeriodRecords("hour", HOUR_T1, HOUR_T1, (none,), (), ()))
    assert (await read(await by_id(client, "U1.S1.CO2Hour"))).status == (
        StatusCodes.BadSensorFailure)


async def test_day_values_and_reconciliation(port: int) -> None:
    d = plant_dict(opcua_port=port)
    d["reconciliation"] = {"limit_pct": 5.0}
    sink = OpcUaSink(parse_config(d, "test"))
    await sink.start()
    day = datetime(2025, 3, 13, 16, tzinfo=UTC)
    # CEMS 4 727.09 t vs factor 4 622.76 t: (4 727.09 − 4 622.76) / 4 622.76 = 2.2569 %
    unit = UnitPeriod("U1", day, 4727.09, 4622.76, 14_400.0, 0.32827, True, DataFlag.N,
                      2.2569, False)
    # CO2e: + 2 400 t coal's CH4 0.0501792 t · 21 + N2O 0.0752688 t · 310 (SAR) = 24.3870912
    unit = dataclasses.replace(unit, co2_t=4727.09, co2e_t=4727.09 + 24.3870912,
                               gwp_set="SAR")
    try:
        async with Client(f"opc.tcp://127.0.0.1:{port}") as client:
            await sink.on_period(PeriodRecords("day", day, day, (), (), (unit,)))
            for ident, value in {"U1.CO2Day": 4727.09, "U1.CO2FactorDay": 4622.76,
                                 "U1.ReconciliationDiff": 2.2569,
                                 "U1.CO2eDay": 4727.09 + 24.3870912}.items():
                r = await read(await by_id(client, ident))
                assert (r.value, r.status, r.source_t) == (value, StatusCodes.Good, day), ident
            # An hour: the unit's CO2e of it (CEMS 196.96223 t + 1.0161288 t of CH4 / N2O).
            hour = dataclasses.replace(unit, co2e_t=196.96223 + 1.0161288)
            await sink.on_period(PeriodRecords("hour", day, day + timedelta(hours=1), (), (),
                                               (hour,)))
            r = await read(await by_id(client, "U1.CO2eLastHour"))
            assert (r.value, r.status, r.source_t) == (196.96223 + 1.0161288,
                                                       StatusCodes.Good, day)
            diff = await by_id(client, "U1.ReconciliationDiff")
            rng = await (await diff.get_child("0:EURange")).read_value()
            assert (rng.Low, rng.High) == (-5.0, 5.0)
            # 8 % beyond the ±5 % limit: the value, out of its engineering range
            await sink.on_period(PeriodRecords("day", day, day, (), (), (dataclasses.replace(
                unit, reconciliation_diff_pct=8.0, reconciliation_exceeded=True),)))
            r = await read(diff)
            assert (r.value, r.status) == (8.0, StatusCodes.UncertainEngineeringUnitsExceeded)
    finally:
        await sink.stop()


async def test_co2e_today_adds_the_closed_hours_other_gases(client: Client,
                                                            sink: OpcUaSink) -> None:
    # A plant day of its own (the test plant is in Asia/Shanghai, UTC+8): 16 March 2025 is
    # [15 Mar 16:00, 16 Mar 16:00) UTC; 06:30 UTC is 14:30 local.
    day = datetime(2025, 3, 15, 16, tzinfo=UTC)
    t = datetime(2025, 3, 16, 6, 30, tzinfo=UTC)
    u1 = await child(client, [*SITE_PATH, "Units", "U1"])
    assert "CO2eToday" in {(await n.read_browse_name()).Name for n in await u1.get_children()}
    node = await by_id(client, "U1.CO2eToday")
    assert (await (await node.get_child("0:EngineeringUnits")).read_value()
            ).DisplayName.Text == "t"
    # No hour of the day closed yet: CO2eToday is CO2Today, 1 520.25 t, with its status.
    await sink.on_minute(RESULT.replace(t=t, units=(dataclasses.replace(UNIT, t=t),)))
    r = await read(node)
    assert (r.value, r.status, r.source_t) == (1520.25, StatusCodes.Good, t)
    # Two closed hours of the day with the steel demo's lime-kiln figures (test_demo_steel):
    # CO2 26.307 466 094 726 t, CO2e 26.315 057 639 726 t: + 0.007 591 545 t each, counted
    # at once with the latest minute's CO2Today: 1 520.25 + 2 · 0.007 591 545 = 1 520.265 183 09
    for h in (4, 5):
        start = datetime(2025, 3, 16, h, tzinfo=UTC)
        unit = UnitPeriod("U1", start, 26.307466094726, 26.307466094726, 0.0, math.nan, True,
                          DataFlag.N, co2_t=26.307466094726, co2e_t=26.315057639726,
                          gwp_set="SAR")
        await sink.on_period(PeriodRecords("hour", start, start + timedelta(hours=1), (), (),
                                           (unit,)))
    r = await read(node)
    assert r.value == pytest.approx(1520.26518309, rel=1e-9, abs=0)
    assert (r.status, r.source_t) == (StatusCodes.Good, t)
    # The next minute: its CO2Today 1 521.75 t + 0.015 183 09 t = 1 521.765 183 09 t; a
    # substituted minute (D) makes it less than complete, as CO2Today.
    t2 = t + timedelta(minutes=1)
    await sink.on_minute(RESULT.replace(t=t2, units=(dataclasses.replace(
        UNIT, t=t2, co2_today_t=1521.75, flag=DataFlag.D, valid=False),)))
    r = await read(node)
    assert r.value == pytest.approx(1521.76518309, rel=1e-9, abs=0)
    assert r.status == (await read(await by_id(client, "U1.CO2Today"))).status
    assert r.status == StatusCodes.UncertainSubNormal
    # The next plant day's first minute starts again at its CO2Today (0.5 t); yesterday's
    # last hour, closed after it, does not count today.
    t3 = day + timedelta(days=1)
    await sink.on_minute(RESULT.replace(t=t3, units=(dataclasses.replace(
        UNIT, t=t3, co2_today_t=0.5),)))
    last = day + timedelta(hours=23)
    await sink.on_period(PeriodRecords("hour", last, t3, (), (), (UnitPeriod(
        "U1", last, 26.307466094726, 26.307466094726, 0.0, math.nan, True, DataFlag.N,
        co2_t=26.307466094726, co2e_t=26.315057639726, gwp_set="SAR"),)))
    r = await read(node)
    assert (r.value, r.status, r.source_t) == (0.5, StatusCodes.Good, t3)
    await sink.on_minute(RESULT)  # as the other tests expect to find it
