"""REST API and WebSocket push of the web sink, against a real server on loopback."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import os
import re
import socket
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from model.flags import DataFlag
from model.records import (
    AlarmEvent,
    AllowancePosition,
    MinuteResult,
    PeriodRecords,
    PeriodResult,
    SiteMinute,
    SourceMinute,
    StreamPeriod,
    UnitMinute,
    UnitPeriod,
)
from server.config import parse_config
from server.historian import Historian
from tests.fixtures.plant import plant_config, plant_dict
from web.app import WebSink
from web.handlers import STATIC_DIR
from web.live import LiveState

T0 = datetime(2024, 5, 1, 2, 3, tzinfo=UTC)  # 10:03 in Asia/Shanghai


def source_minute(t: datetime = T0, source: str = "S1", **kw: Any) -> SourceMinute:
    """The calc_vectors.md CEMS worked example as one minute of S1."""
    values: dict[str, Any] = dict(
        source=source, unit="U1", t=t, flow_act_m3_h=1_080_000.0,
        flow_std_dry_m3_h=835_718.9, co2_dry_pct=12.0, co2_mg_m3=235_680.0,
        co2_rate_kg_h=196_962.2, co2_kg=3282.70, valid=True, flag=DataFlag.N,
        co2_hour_t=3.2827, co2_today_t=1234.5678, co2_ytd_t=456_789.0)
    values.update(kw)
    return SourceMinute(**values)


def minute_result(t: datetime = T0, *, sources: tuple[SourceMinute, ...] | None = None,
                  intensity: float = 0.32827) -> MinuteResult:
    """A hand-built minute of the test plant (one unit U1, one source S1)."""
    unit = UnitMinute(unit="U1", t=t, output_mwh=10.0, co2_kg=3282.70,
                      intensity_t_mwh=intensity, valid=True, flag=DataFlag.N,
                      co2_today_t=1234.5678, output_today_mwh=3761.25,
                      intensity_today_t_mwh=0.32824, co2_ytd_t=456_789.0)
    site = SiteMinute(t=t, co2_kg=3282.70, co2_today_t=1234.5678, co2_ytd_t=456_789.0,
                      allowance_annual_t=4_000_000.0, allowance_used_pct=11.4197,
                      allowance_headroom_t=3_543_211.0)
    return MinuteResult(t=t, sources=sources if sources is not None else (source_minute(t),),
                        units=(unit,), site=site)


def alarm_event(state: str = "alarm", t: datetime = T0) -> AlarmEvent:
    """An alarm on S1's CO2 rate."""
    return AlarmEvent(rule="s1_rate_high", t=t, state=state, previous="normal",
                      value=196.96, limit=190.0, target="source S1 co2_rate_t_h",
                      message="Stack 1 CO2 rate high", message_zh="1号烟囱 CO₂ 排放速率高")


def no_nan(text: str) -> Any:
    """Parse JSON strictly: NaN / Infinity are not JSON."""
    def refuse(name: str) -> Any:
        raise AssertionError(f"{name} in JSON: {text[:200]}")
    return json.loads(text, parse_constant=refuse)


async def wait_until(cond: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


@pytest.fixture
async def sink(port: int) -> AsyncIterator[WebSink]:
    s = WebSink(plant_config(web_port=port))
    await s.start()
    yield s
    await s.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


def base(sink: WebSink) -> str:
    return f"http://127.0.0.1:{sink.port}"


async def get_json(http: aiohttp.ClientSession, url: str, status: int = 200) -> Any:
    async with http.get(url) as r:
        assert r.status == status, await r.text()
        assert r.content_type == "application/json"
        return no_nan(await r.text())


# --------------------------------------------------------------------------- REST


async def test_sources_listed_with_nulls_before_first_minute(
        sink: WebSink, http: aiohttp.ClientSession) -> None:
    body = await get_json(http, f"{base(sink)}/api/v1/sources")
    assert [s["id"] for s in body] == ["S1"]
    s1 = body[0]
    assert s1["name"] == "Stack 1" and s1["name_zh"] == "1号烟囱" and s1["unit"] == "U1"
    assert s1["t"] is None and s1["co2_kg"] is None and s1["flag"] is None


async def test_sources_return_latest_minute(sink: WebSink, http: aiohttp.ClientSession) -> None:
    await sink.on_minute(minute_result())
    body = await get_json(http, f"{base(sink)}/api/v1/sources")
    assert len(body) == 1
    s1 = body[0]
    assert s1["id"] == "S1" and s1["name_zh"] == "1号烟囱" and s1["unit"] == "U1"
    assert s1["t"] == "2024-05-01T02:03:00Z"
    assert s1["co2_kg"] == 3282.70
    assert s1["flow_std_dry_m3_h"] == 835_718.9
    assert s1["co2_dry_pct"] == 12.0
    assert s1["co2_mg_m3"] == 235_680.0
    assert s1["co2_rate_kg_h"] == 196_962.2
    assert s1["co2_rate_t_h"] == pytest.approx(196.9622)
    assert s1["co2_today_t"] == 1234.5678
    assert s1["flag"] == "N" and s1["valid"] is True

    one = await get_json(http, f"{base(sink)}/api/v1/sources/S1")
    assert one == s1


async def test_unknown_source_is_404_json(sink: WebSink, http: aiohttp.ClientSession) -> None:
    body = await get_json(http, f"{base(sink)}/api/v1/sources/X", status=404)
    assert body == {"error": "unknown source 'X'"}


async def test_other_client_errors_share_the_json_shape(
        sink: WebSink, http: aiohttp.ClientSession) -> None:
    assert await get_json(http, f"{base(sink)}/api/v1/nope", status=404) == {"error": "not found"}
    async with http.post(f"{base(sink)}/api/v1/sources") as r:
        assert r.status == 405
        assert "GET" in r.headers["Allow"]
        assert no_nan(await r.text()) == {"error": "method not allowed"}
    # A plain GET of the WebSocket endpoint is a bad request, still as JSON.
    body = await get_json(http, f"{base(sink)}/ws", status=400)
    assert set(body) == {"error"}


async def test_unexpected_error_is_500_without_traceback(
        sink: WebSink, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    def boom(self: LiveState) -> Any:
        raise ZeroDivisionError("secret internals")
    monkeypatch.setattr(LiveState, "units_json", boom)
    with caplog.at_level(logging.ERROR, logger="web.handlers"):
        async with http.get(f"{base(sink)}/api/v1/units") as r:
            text = await r.text()
            assert r.status == 500
    assert no_nan(text) == {"error": "internal error"}
    assert "secret" not in text and "Traceback" not in text
    assert any("ZeroDivisionError" in (rec.exc_text or "") for rec in caplog.records)


async def test_units_site_and_alarms(sink: WebSink, http: aiohttp.ClientSession) -> None:
    site = await get_json(http, f"{base(sink)}/api/v1/site")
    assert site["timezone"] == "Asia/Shanghai" and site["name_zh"] == "测试电厂"
    assert site["allowance_annual_t"] == 4_000_000.0 and site["co2_today_t"] is None

    await sink.on_minute(minute_result())
    units = await get_json(http, f"{base(sink)}/api/v1/units")
    assert units[0]["id"] == "U1" and units[0]["name_zh"] == "1号机组"
    assert units[0]["sources"] == ["S1"]
    assert units[0]["output_mwh"] == 10.0 and units[0]["intensity_t_mwh"] == 0.32827
    site = await get_json(http, f"{base(sink)}/api/v1/site")
    assert site["t"] == "2024-05-01T02:03:00Z"
    # No hour closed yet: no allowance position, whatever the minute's running figure says
    # (issue 14: /site gives the answer /allowance gives).
    assert site["allowance_used_pct"] is None and site["co2_ytd_t"] == 456_789.0
    assert site["allowance"] == {"t": None}

    assert await get_json(http, f"{base(sink)}/api/v1/alarms") == []
    sink.on_alarm(alarm_event("warning", T0))
    sink.on_alarm(alarm_event("alarm", T0 + timedelta(minutes=1)))
    alarms = await get_json(http, f"{base(sink)}/api/v1/alarms")
    assert len(alarms) == 1
    assert alarms[0]["rule"] == "s1_rate_high" and alarms[0]["state"] == "alarm"
    assert alarms[0]["t"] == "2024-05-01T02:04:00Z" and alarms[0]["limit"] == 190.0
    sink.on_alarm(alarm_event("normal", T0 + timedelta(minutes=2)))
    assert await get_json(http, f"{base(sink)}/api/v1/alarms") == []

    sink.set_active_alarms([alarm_event("warning")])
    alarms = await get_json(http, f"{base(sink)}/api/v1/alarms")
    assert [a["state"] for a in alarms] == ["warning"]


async def test_nan_serialized_as_null(sink: WebSink, http: aiohttp.ClientSession) -> None:
    bad = source_minute(co2_dry_pct=float("nan"), co2_mg_m3=float("nan"),
                        co2_rate_kg_h=float("inf"), valid=False, flag=DataFlag.D)
    await sink.on_minute(minute_result(sources=(bad,), intensity=float("nan")))
    async with http.get(f"{base(sink)}/api/v1/sources/S1") as r:
        text = await r.text()
    assert "NaN" not in text and "Infinity" not in text
    s1 = no_nan(text)
    assert s1["co2_dry_pct"] is None and s1["co2_mg_m3"] is None
    assert s1["co2_rate_kg_h"] is None and s1["co2_rate_t_h"] is None
    assert s1["co2_kg"] == 3282.70 and s1["flag"] == "D" and s1["valid"] is False
    units = await get_json(http, f"{base(sink)}/api/v1/units")
    assert units[0]["intensity_t_mwh"] is None


async def test_units_co2e_today(sink: WebSink, http: aiohttp.ClientSession) -> None:
    units = await get_json(http, f"{base(sink)}/api/v1/units")
    assert units[0]["co2_today_t"] is None and units[0]["co2e_today_t"] is None
    await sink.on_minute(minute_result())
    units = await get_json(http, f"{base(sink)}/api/v1/units")
    # No hour of the day (1 May, Asia/Shanghai) closed yet: co2_today_t, 1 234.5678 t.
    assert units[0]["co2e_today_t"] == 1234.5678
    # An hour of the day (01:00 UTC, 09:00 local) with the steel demo's lime-kiln figures
    # (tests/test_demo_steel.py): CO2 26.307 466 094 726 t, CO2e 26.315 057 639 726 t, its
    # CH4 and N2O + 0.007 591 545 t: 1 234.5678 + 0.007 591 545 = 1 234.575 391 545 t.
    start = datetime(2024, 5, 1, 1, tzinfo=UTC)
    unit = UnitPeriod("U1", start, 26.307466094726, 26.307466094726, 0.0, float("nan"), True,
                      DataFlag.N, co2_t=26.307466094726, co2e_t=26.315057639726,
                      gwp_set="SAR")
    await sink.on_period(PeriodRecords("hour", start, start + timedelta(hours=1), (), (),
                                       (unit,)))
    units = await get_json(http, f"{base(sink)}/api/v1/units")
    assert units[0]["co2e_today_t"] == pytest.approx(1234.575391545, rel=1e-9, abs=0)
    assert units[0]["co2_today_t"] == 1234.5678
    assert list(units[0]).index("co2e_today_t") == list(units[0]).index("co2_today_t") + 1
    # The next plant day (from 1 May 16:00 UTC) starts again at its co2_today_t.
    await sink.on_minute(minute_result(datetime(2024, 5, 1, 16, tzinfo=UTC)))
    units = await get_json(http, f"{base(sink)}/api/v1/units")
    assert units[0]["co2e_today_t"] == 1234.5678


async def test_static_page_is_served_without_external_resources(
        sink: WebSink, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{base(sink)}/") as r:
        assert r.status == 200 and r.content_type == "text/html"
        html = await r.text()
        assert "default-src 'self'" in r.headers["Content-Security-Policy"]
    for ref in re.findall(r'(?:src|href)="([^"]+)"', html):
        if ref.startswith("#/"):  # a view of the page itself (hash route)
            continue
        if ref.startswith("/api/v1/"):  # a download from this server's own API
            continue
        assert ref.startswith("/static/"), ref
        async with http.get(f"{base(sink)}{ref}") as r:
            assert r.status == 200, ref
    for path in STATIC_DIR.rglob("*"):
        if not path.is_file():
            continue
        # The chart library's licence banner names its home page; nothing else may.
        text = re.sub(r"^/\*!?.*?\*/", "", path.read_text(encoding="utf-8"), flags=re.S)
        assert not re.search(r"https?://|url\(\s*['\"]?//", text), path.name


async def test_a_static_name_too_long_for_a_file_is_404_not_a_fault(
        sink: WebSink, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture) -> None:
    # schemathesis found it: aiohttp stats the name, the OS refuses (ENAMETOOLONG)
    name = "Ṱ̺̺̕o͞" * 60
    async with http.get(f"{base(sink)}/static/{name}") as r:
        assert r.status == 404
    assert "unhandled error" not in caplog.text
    async with http.get(f"{base(sink)}/static/{'x' * 300}.js") as r:
        assert r.status == 404


# ---------------------------------------------------------------------- WebSocket


async def test_websocket_sends_snapshot_then_minutes(
        sink: WebSink, http: aiohttp.ClientSession) -> None:
    await sink.on_minute(minute_result(T0 - timedelta(minutes=1)))
    async with http.ws_connect(f"{base(sink)}/ws") as ws:
        snap = await ws.receive_json(timeout=5)
        assert snap["type"] == "snapshot"
        assert snap["t"] == "2024-05-01T02:02:00Z"
        assert snap["site"]["timezone"] == "Asia/Shanghai"
        assert snap["sources"][0]["id"] == "S1" and snap["sources"][0]["co2_kg"] == 3282.70
        assert snap["units"][0]["id"] == "U1" and snap["alarms"] == []
        assert snap["server_time"].endswith("Z")

        await sink.on_minute(minute_result())
        msg = no_nan((await ws.receive(timeout=5)).data)
        assert msg["type"] == "minute" and msg["t"] == "2024-05-01T02:03:00Z"
        assert set(msg) == {"type", "t", "sources", "units", "site"}
        assert msg["sources"][0]["co2_kg"] == 3282.70
        assert msg["sources"][0]["flow_std_dry_m3_h"] == 835_718.9
        assert msg["units"][0]["output_mwh"] == 10.0
        assert msg["site"]["co2_today_t"] == 1234.5678

        sink.on_alarm(alarm_event())
        alarm = await ws.receive_json(timeout=5)
        assert alarm["type"] == "alarm" and alarm["rule"] == "s1_rate_high"
        assert alarm["message_zh"] == "1号烟囱 CO₂ 排放速率高" and alarm["value"] == 196.96


async def test_websocket_minute_with_nan_is_null(
        sink: WebSink, http: aiohttp.ClientSession) -> None:
    async with http.ws_connect(f"{base(sink)}/ws") as ws:
        await ws.receive_json(timeout=5)
        bad = source_minute(co2_kg=float("nan"), valid=False, flag=DataFlag.B)
        await sink.on_minute(minute_result(sources=(bad,)))
        text = (await ws.receive(timeout=5)).data
        assert "NaN" not in text
        msg = no_nan(text)
        assert msg["sources"][0]["co2_kg"] is None and msg["sources"][0]["flag"] == "B"


async def open_stuck_client(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A WebSocket client that completes the handshake and then never reads."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    # A tiny stream limit: the transport stops reading as soon as 2 KiB are buffered.
    reader, writer = await asyncio.open_connection(sock=sock, limit=1024)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


async def test_stuck_client_does_not_block_others(
        port: int, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture) -> None:
    # Big messages (300 sources, ~200 kB each) fill the stuck client's socket quickly.
    d = plant_dict(web_port=port)
    stack = d["units"][0]["sources"][0]
    d["units"][0]["sources"] = [stack, *({**stack, "id": f"X{i}"} for i in range(300))]
    sink = WebSink(parse_config(d, "test"), send_timeout_s=0.5, client_queue_size=16)
    await sink.start()
    _, stuck = await open_stuck_client(port)
    try:
        await wait_until(lambda: sink.client_count == 1)
        # Big messages (300 sources, ~200 kB each) fill the stuck client's socket quickly.
        many = tuple(source_minute(source=f"X{i}") for i in range(300))
        n = 40
        async with http.ws_connect(f"{base(sink)}/ws", max_msg_size=0) as good:
            assert (await good.receive_json(timeout=5))["type"] == "snapshot"
            assert sink.client_count == 2
            got: list[str] = []

            async def read_all() -> None:
                while len(got) < n:
                    msg = await good.receive_json(timeout=5)
                    got.append(msg["t"])

            reading = asyncio.create_task(read_all())
            sent: list[str] = []
            with caplog.at_level(logging.WARNING, logger="web.hub"):
                for i in range(n):
                    t = T0 + timedelta(minutes=i)
                    started = time.perf_counter()
                    await sink.on_minute(minute_result(t).replace(sources=many))
                    assert time.perf_counter() - started < 0.5, "on_minute waited on a client"
                    sent.append(t.isoformat().replace("+00:00", "Z"))
                    await asyncio.sleep(0.05)
                await asyncio.wait_for(reading, 15)
                assert got == sent
                # The stuck client was dropped; the good one is still there.
                await wait_until(lambda: sink.client_count == 1, 10)
            assert any("dropping WebSocket client" in r.getMessage() for r in caplog.records)
            await sink.on_minute(minute_result(T0 + timedelta(minutes=n)))
            msg = await good.receive_json(timeout=5)
            assert msg["t"] == (T0 + timedelta(minutes=n)).isoformat().replace("+00:00", "Z")
    finally:
        stuck.close()
        await sink.stop()


async def test_stop_closes_websockets_and_releases_port(
        port: int, http: aiohttp.ClientSession) -> None:
    sink = WebSink(plant_config(web_port=port))
    await sink.start()
    assert sink.port == port
    ws = await http.ws_connect(f"http://127.0.0.1:{port}/ws")
    await ws.receive_json(timeout=5)
    closing = asyncio.create_task(ws.receive(timeout=5))  # a client that keeps reading
    await asyncio.sleep(0)
    started = time.perf_counter()
    await sink.stop()
    assert time.perf_counter() - started < 1.5  # the client answered the close at once
    msg = await closing
    assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == aiohttp.WSCloseCode.GOING_AWAY
    assert sink.client_count == 0
    await ws.close()
    with socket.socket() as s:  # the port is free again
        s.bind(("127.0.0.1", port))
    await sink.stop()  # a second stop is harmless


# ------------------------------------------------------------------- hours and days


HOUR0 = datetime(2026, 1, 1, 0, tzinfo=UTC)


def stored_hour(t: datetime, co2_t: float, *, substituted: bool = False) -> PeriodRecords:
    """A closed hour of S1, its coal stream and U1, as the period stage produces it."""
    end = t + timedelta(hours=1)
    # 12.0 % · 1.964 · 835 718.9 m³/h / 100 = 196 962.23 kg/h → 196.96223 t in the hour
    src = PeriodResult("S1", t, 12.0, 835_718.9, 196_962.23, co2_t,
                       math.nan if substituted else co2_t, not substituted,
                       DataFlag.D if substituted else DataFlag.N, 0 if substituted else 60,
                       substituted, "mrr_mean_2sigma" if substituted else "")
    coal = StreamPeriod("U1_coal", "U1", t, end, 100.0, "t", 192.61506, "demo-coal-2020-01",
                        "ncv_cc_of", True, DataFlag.N, 60)
    unit = UnitPeriod("U1", t, co2_t, 192.61506, 600.0, co2_t / 600.0, True, DataFlag.N)
    # 4 973.29632 t of 1 000 000 t: 0.4973296 % used, 995 026.70368 t left
    pos = AllowancePosition(1e6, 4973.29632, 25 / 8760, 363.958333, 143_290.0, 2853.88,
                            0.4973296, 995_026.70368, 1_743_359.890, 743_359.890, 80.0,
                            59_468_791.2)
    return PeriodRecords("hour", t, end, (src,), (coal,), (unit,), pos)


@pytest.fixture
async def history_sink(port: int, tmp_path: Path) -> AsyncIterator[WebSink]:
    h = Historian(tmp_path / "h.sqlite")
    await h.start()
    d = plant_dict(web_port=port)
    d["factor_table"] = str(Path(__file__).resolve().parents[2] / "config" / "factors.yaml")
    d["reconciliation"] = {"limit_pct": 5.0}
    d["units"][0]["streams"] = [{"id": "U1_coal", "kind": "solid_fuel", "factors": "demo_coal",
                                 "rate_per_h": {"tag": "u1_power"}}]
    s = WebSink(parse_config(d, "test"), history=h)
    await s.start()
    for i, (co2, sub) in enumerate([(196.96223, False), (221.58251, True), (196.96223, False)]):
        rec = stored_hour(HOUR0 + timedelta(hours=i), co2, substituted=sub)
        await h.on_period(rec)
        await s.on_period(rec)
    yield s
    await s.stop()
    await h.stop()


async def test_source_hours(history_sink: WebSink, http: aiohttp.ClientSession) -> None:
    url = (f"{base(history_sink)}/api/v1/sources/S1/hours"
           "?from=2026-01-01T08:00:00%2B08:00&to=2026-01-01T02:00:00Z")
    rows = await get_json(http, url)
    assert [r["t"] for r in rows] == ["2026-01-01T00:00:00Z", "2026-01-01T01:00:00Z"]
    first, second = rows
    assert first["co2_t"] == 196.96223 and first["valid"] is True and first["flag"] == "N"
    assert first["co2_dry_pct"] == 12.0 and first["n_valid"] == 60
    assert second["co2_t"] == 221.58251 and second["co2_measured_t"] is None
    assert (second["substituted"], second["substitution_rule"], second["flag"]) == (
        True, "mrr_mean_2sigma", "D")


async def test_unit_and_stream_hours_and_days(history_sink: WebSink,
                                              http: aiohttp.ClientSession) -> None:
    q = "?from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z"
    units = await get_json(http, f"{base(history_sink)}/api/v1/units/U1/hours{q}")
    assert [u["co2_factor_t"] for u in units] == [192.61506] * 3
    streams = await get_json(http, f"{base(history_sink)}/api/v1/streams/U1_coal/hours{q}")
    assert streams[0]["factor_version"] == "demo-coal-2020-01"
    assert streams[0]["t_end"] == "2026-01-01T01:00:00Z" and streams[0]["quantity"] == 100.0
    # a record without CO2e (none computed): null, no GWP set; no other gas (0 t)
    assert (streams[0]["co2e_t"], streams[0]["gwp_set"], streams[0]["ch4_t"]) == (None, "", 0.0)
    assert await get_json(http, f"{base(history_sink)}/api/v1/sources/S1/days{q}") == []


async def test_allowance_position(history_sink: WebSink, http: aiohttp.ClientSession) -> None:
    pos = await get_json(http, f"{base(history_sink)}/api/v1/allowance")
    assert pos["t"] == "2026-01-01T03:00:00Z"  # the end of the latest closed hour
    assert pos["ytd_t"] == 4973.29632 and pos["used_pct"] == 0.4973296
    assert pos["forecast_year_end_t"] == 1_743_359.890
    assert pos["shortfall_cost_cny"] == 59_468_791.2 and pos["carbon_price_cny_t"] == 80.0


async def test_allowance_before_the_first_hour(sink: WebSink,
                                               http: aiohttp.ClientSession) -> None:
    pos = await get_json(http, f"{base(sink)}/api/v1/allowance")
    assert pos["t"] is None and "ytd_t" not in pos


@pytest.mark.parametrize(("query", "status", "message"), [
    ("", 400, "query parameter 'from' is required (ISO 8601 with offset, e.g. "
     "2026-11-21T00:00:00+08:00)"),
    ("?from=2026-01-01T00:00:00Z", 400, "query parameter 'to' is required (ISO 8601 with "
     "offset, e.g. 2026-11-21T00:00:00+08:00)"),
    ("?from=yesterday&to=2026-01-02T00:00:00Z", 400,
     "query parameter 'from': 'yesterday' is not an ISO 8601 time"),
    ("?from=2026-01-01T00:00:00&to=2026-01-02T00:00:00Z", 400, "query parameter 'from': "
     "'2026-01-01T00:00:00' needs a UTC offset, e.g. 2026-01-01T00:00:00+08:00"),
    ("?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", 400, "'to' must be after 'from'"),
    ("?from=2026-01-01T00:00:00Z&to=2026-03-01T00:00:00Z", 400,
     "at most 31 days of hours per request"),
    # issue 11: year 0 and year 10000 in UTC were a 500 (OverflowError)
    ("?from=0001-01-01T00:00%2B08:00&to=2026-01-02T00:00:00Z", 400,
     "query parameter 'from': '0001-01-01T00:00+08:00' is outside the allowed range "
     "1970-01-01T00:00:00Z to 2200-01-01T00:00:00Z"),
    ("?from=9999-12-30T00:00-14:00&to=9999-12-31T00:00-14:00", 400,
     "query parameter 'from': '9999-12-30T00:00-14:00' is outside the allowed range "
     "1970-01-01T00:00:00Z to 2200-01-01T00:00:00Z"),
    ("?from=2026-01-01T00:00:00Z&to=9999-12-31T23:59-14:00", 400,
     "query parameter 'to': '9999-12-31T23:59-14:00' is outside the allowed range "
     "1970-01-01T00:00:00Z to 2200-01-01T00:00:00Z"),
    ("?from=1969-12-31T23:59:59.999Z&to=1970-01-02T00:00:00Z", 400,
     "query parameter 'from': '1969-12-31T23:59:59.999Z' is outside the allowed range "
     "1970-01-01T00:00:00Z to 2200-01-01T00:00:00Z"),
    (f"?from={'9' * 5000}&to=2026-01-02T00:00:00Z", 400,  # not echoed whole
     f"query parameter 'from': '{'9' * 60}'… is not an ISO 8601 time"),
])
async def test_bad_hour_queries(history_sink: WebSink, http: aiohttp.ClientSession, query: str,
                                status: int, message: str) -> None:
    body = await get_json(http, f"{base(history_sink)}/api/v1/sources/S1/hours{query}", status)
    assert body == {"error": message}


async def test_unknown_ids(history_sink: WebSink, http: aiohttp.ClientSession) -> None:
    q = "?from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z"
    assert await get_json(http, f"{base(history_sink)}/api/v1/sources/S9/hours{q}", 404) == {
        "error": "unknown source 'S9'"}
    assert await get_json(http, f"{base(history_sink)}/api/v1/streams/S1/days{q}", 404) == {
        "error": "unknown stream 'S1'"}


async def test_no_historian(sink: WebSink, http: aiohttp.ClientSession) -> None:
    q = "?from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z"
    assert await get_json(http, f"{base(sink)}/api/v1/sources/S1/hours{q}", 503) == {
        "error": "no historian: stored hours and days are not available"}
