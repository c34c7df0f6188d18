"""Hours the server did not run for (issue 11): they keep HJ 212 flag B (compute/periods.py)
but OPC UA gives them BadNoData, live and in HistoryRead, and the web API says "server not
running", so that no one reads them as a communication failure. Real historian, OPC UA sink
and web sink on loopback."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
from asyncua import ua
from asyncua.client.client import Client
from asyncua.ua.status_codes import StatusCodes

from compute.periods import NOT_RUNNING
from model.flags import DataFlag
from model.records import PeriodRecords, PeriodResult
from server.config import parse_config
from server.historian import Historian
from server.opcua import layout
from server.opcua.sink import OpcUaSink
from tests.conftest import free_port
from tests.fixtures.plant import plant_config, plant_dict
from web.app import WebSink

NS_URI = "urn:carbonscada:testsite"
T0 = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)
H1, H2, H3 = (T0 + timedelta(hours=i) for i in (1, 2, 3))
# 08:00 valid; 09:00 39 minutes then the server was down (not running); 10:00 a device
# failed for 30 minutes (B, no reason: a communication failure). Neither has a substitute.
VALID = PeriodResult("S1", T0, 12.0, 835_718.9, 196_962.23, 196.96223, 196.96223, True,
                     DataFlag.N, 60)
DOWN = dataclasses.replace(VALID, t=H1, co2_t=math.nan, co2_measured_t=math.nan, valid=False,
                           flag=DataFlag.B, n_valid=39, missing_reason=NOT_RUNNING)
FAILED = dataclasses.replace(DOWN, t=H2, n_valid=30, missing_reason="")
PERIODS = [PeriodRecords("hour", t, t + timedelta(hours=1), (h,), (), ())
           for t, h in ((T0, VALID), (H1, DOWN), (H2, FAILED))]


def test_the_layout_names_the_compute_reason() -> None:
    assert layout.NOT_RUNNING == NOT_RUNNING  # copied to keep numba out of its import


@pytest.fixture
async def historian(tmp_path: Path) -> AsyncIterator[Historian]:
    h = Historian(tmp_path / "h.sqlite")
    await h.start()
    for rec in PERIODS:
        await h.on_period(rec)
    yield h
    await h.stop()


def code(dv: ua.DataValue) -> int:
    assert dv.StatusCode is not None
    return int(dv.StatusCode.value)


async def test_opcua_hour_status_live_and_in_history(historian: Historian) -> None:
    port = free_port()
    sink = OpcUaSink(plant_config(opcua_port=port), history=historian)
    await sink.start()
    try:
        async with Client(f"opc.tcp://127.0.0.1:{port}") as client:
            ns = await client.get_namespace_index(NS_URI)
            node = client.get_node(ua.NodeId(cast("ua.String", "U1.S1.CO2Hour"),
                                             cast("ua.Int16", ns)))
            live = []
            for rec in PERIODS:
                await sink.on_period(rec)
                dv = await node.read_data_value(raise_on_bad_status=False)
                live.append(code(dv))
            assert live == [StatusCodes.Good, StatusCodes.BadNoData,
                            StatusCodes.BadCommunicationError]
            history = await node.read_raw_history(T0, H3)
            assert [(v.SourceTimestamp, code(v)) for v in history] == [
                (T0, StatusCodes.Good), (H1, StatusCodes.BadNoData),
                (H2, StatusCodes.BadCommunicationError),
                (H3, StatusCodes.BadBoundNotFound)]  # asyncua asks for bounds: none after
    finally:
        await sink.stop()


async def test_web_api_says_server_not_running(historian: Historian) -> None:
    port = free_port()
    d: dict[str, Any] = plant_dict(web_port=port)
    sink = WebSink(parse_config(d, "test"), history=historian)
    await sink.start()
    try:
        async with aiohttp.ClientSession() as http, http.get(
                f"http://127.0.0.1:{port}/api/v1/sources/S1/hours"
                "?from=2026-11-21T08:00:00Z&to=2026-11-21T11:00:00Z") as r:
            assert r.status == 200
            rows = await r.json()
    finally:
        await sink.stop()
    assert [(row["t"], row["flag"], row["missing_reason"], row["missing_text"])
            for row in rows] == [
        ("2026-11-21T08:00:00Z", "N", "", None),
        ("2026-11-21T09:00:00Z", "B", "not_running",
         {"zh": "服务器未运行", "en": "server not running"}),
        ("2026-11-21T10:00:00Z", "B", "", None)]
