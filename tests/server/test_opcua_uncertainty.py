"""Each source's CO2 uncertainty from its instruments (issue 15) on OPC UA, read by a real
asyncua client: U1.S1.CO2RelUncertainty, Good with the register's value, or
Bad_ConfigurationError while an input tag has no instrument; and the units' and the site's
(Totals) CO2RelUncertaintyHour / Day / YTD of their totals, worked out by hand below."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import numpy as np
from asyncua import ua
from asyncua.client.client import Client
from asyncua.ua.status_codes import StatusCodes

from model.flags import DataFlag
from model.records import (
    MinuteResult,
    PeriodRecords,
    PeriodResult,
    SiteMinute,
    SourceColumns,
    SourceMinute,
)
from server.config import parse_config
from server.opcua.sink import OpcUaSink
from tests.conftest import free_port
from tests.fixtures.plant import plant_dict

NS_URI = "urn:carbonscada:testsite"
ACCURACY = {"s1_co2": 1.5, "s1_velocity": 3.0, "s1_temp": 0.6, "s1_static": 0.9,
            "s1_moisture": 1.2}


def _plant(port: int, skip: str = "") -> dict[str, Any]:
    d = plant_dict(opcua_port=port)
    for tag in d["devices"][0]["tags"]:
        if tag["id"] in ACCURACY and tag["id"] != skip:
            tag["instrument"] = {"serial": "x", "accuracy_pct": ACCURACY[tag["id"]],
                                 "calibrated_on": "2026-11-01",
                                 "calibration_interval_days": 180}
    return d


async def _read(d: dict[str, Any], port: int) -> ua.DataValue:
    sink = OpcUaSink(parse_config(d, "test_opcua_uncertainty"))
    await sink.start()
    try:
        async with Client(f"opc.tcp://127.0.0.1:{port}") as client:
            ns = await client.get_namespace_index(NS_URI)
            node = client.get_node(f"ns={ns};s=U1.S1.CO2RelUncertainty")
            dv: ua.DataValue = await node.read_data_value(raise_on_bad_status=False)
            name = await node.read_display_name()
            assert name.Text == "CO2RelUncertainty"
            return dv
    finally:
        await sink.stop()


async def test_source_uncertainty_published() -> None:
    port = free_port()
    dv = await _read(_plant(port), port)
    # By hand (as tests/web/test_instruments.py): u_c = √((1.5² + 3² + 0.6² + 0.9² + 1.2²)/3)
    #   = √(13.86/3) = √4.62 = 2.1494185 %
    assert dv.StatusCode is not None and dv.StatusCode.value == StatusCodes.Good
    assert dv.Value is not None and abs(dv.Value.Value - 2.1494185) < 1e-6


async def test_unknown_without_every_instrument() -> None:
    port = free_port()
    dv = await _read(_plant(port, skip="s1_static"), port)
    assert dv.StatusCode is not None
    assert dv.StatusCode.value == StatusCodes.BadConfigurationError


# --- the units' and the site's totals: hour, day, year to date ---------------------------

# S1 (U1) as above: u = √4.62 = 2.1494185 %.
# S2 (U1): CO2 1.8 %, velocity 2.4 %, the shared barometer 0.3 %; the rest constants
#   u² = (1.8² + 2.4² + 0.3²)/3 = 1.08 + 1.92 + 0.03 = 3.03
# S3 (U2): CO2 1.5 %, velocity 3.0 %, the same barometer 0.3 %
#   u² = 0.75 + 3.0 + 0.03 = 3.78 → u = 1.9442222 %
MORE = {"s2_co2": 1.8, "s2_velocity": 2.4, "baro": 0.3, "s3_co2": 1.5, "s3_velocity": 3.0}
HOUR_T0 = datetime(2026, 12, 7, 3, tzinfo=UTC)
HOUR_T1 = datetime(2026, 12, 7, 4, tzinfo=UTC)
DAY_T0 = datetime(2026, 12, 5, 16, tzinfo=UTC)
DAY_T1 = datetime(2026, 12, 6, 16, tzinfo=UTC)


def _three_sources(port: int, skip: str = "") -> dict[str, Any]:
    d = _plant(port)
    tags = d["devices"][0]["tags"]
    for i, tag in enumerate([*MORE, "u2_power"]):
        entry: dict[str, Any] = {"id": tag, "register": 30 + 2 * i,
                                 "unit": "Pa" if tag == "baro" else "%", "sim": {"value": 1.0}}
        if tag in MORE and tag != skip:
            entry["instrument"] = {"serial": tag, "accuracy_pct": MORE[tag],
                                   "calibrated_on": "2026-11-01",
                                   "calibration_interval_days": 180}
        tags.append(entry)

    def source(sid: str) -> dict[str, Any]:
        low = sid.lower()
        return {"id": sid, "name": sid, "area_m2": 20.0, "inputs": {
            "velocity_m_s": {"tag": f"{low}_velocity"}, "co2_pct": {"tag": f"{low}_co2"},
            "temp_c": {"value": 120.0}, "static_pa": {"value": 0.0},
            "baro_pa": {"tag": "baro"}, "moisture_pct": {"value": 8.0}}}

    d["units"][0]["sources"].append(source("S2"))
    d["units"].append({"id": "U2", "name": "Unit 2", "output": {"power_mw": {"tag": "u2_power"}},
                       "sources": [source("S3")]})
    return d


def _hour(source: str, co2_t: float, t: datetime = HOUR_T0) -> PeriodResult:
    return PeriodResult(source, t, 12.0, 800_000.0, 1000.0 * co2_t, co2_t, co2_t, True,
                        DataFlag.N, 60)


def _minute(source: str, unit: str, ytd_t: float) -> SourceMinute:
    return SourceMinute(source=source, unit=unit, t=HOUR_T1, flow_act_m3_h=1.0,
                        flow_std_dry_m3_h=1.0, co2_dry_pct=12.0, co2_mg_m3=1.0,
                        co2_rate_kg_h=1.0, co2_kg=1.0, valid=True, flag=DataFlag.N,
                        co2_hour_t=1.0, co2_today_t=1.0, co2_ytd_t=ytd_t)


def _columns(*sources: SourceMinute) -> SourceColumns:
    def col(name: str) -> np.ndarray[Any, np.dtype[np.float64]]:
        return np.array([getattr(s, name) for s in sources], np.float64)

    return SourceColumns(
        sources=tuple(s.source for s in sources), units=tuple(s.unit for s in sources),
        flow_act_m3_h=col("flow_act_m3_h"), flow_std_dry_m3_h=col("flow_std_dry_m3_h"),
        co2_dry_pct=col("co2_dry_pct"), co2_mg_m3=col("co2_mg_m3"),
        co2_rate_kg_h=col("co2_rate_kg_h"), co2_kg=col("co2_kg"),
        flag=np.zeros(len(sources), np.uint8), substitution=np.zeros(len(sources), np.int64),
        rules=("",), co2_hour_t=col("co2_hour_t"), co2_today_t=col("co2_today_t"),
        co2_ytd_t=col("co2_ytd_t"))


async def _values(client: Client, idents: list[str],
                  ) -> dict[str, tuple[float | None, int, datetime | None]]:
    ns = await client.get_namespace_index(NS_URI)
    out: dict[str, tuple[float | None, int, datetime | None]] = {}
    for ident in idents:
        dv = await client.get_node(f"ns={ns};s={ident}").read_data_value(
            raise_on_bad_status=False)
        assert dv.StatusCode is not None
        value = None if dv.Value is None else dv.Value.Value
        out[ident] = (value, dv.StatusCode.value, dv.SourceTimestamp)
    return out


def _close(a: tuple[float | None, int, datetime | None], value: float, status: int,
           t: datetime) -> bool:
    # With a Bad status the server sends no value (OPC UA Part 4, 7.7.1): None or NaN.
    if math.isnan(value):
        same = a[0] is None or math.isnan(a[0])
    else:
        same = a[0] is not None and abs(a[0] - value) < 1e-6
    return same and (a[1], a[2]) == (status, t)


SITE = SiteMinute(t=HOUR_T1, co2_kg=1.0, co2_today_t=1.0, co2_ytd_t=500_000.0,
                  allowance_annual_t=4_000_000.0, allowance_used_pct=12.5,
                  allowance_headroom_t=3_500_000.0)
LEVELS = ("Hour", "Day", "YTD")
NODES = [f"{who}.CO2RelUncertainty{level}" for who in ("U1", "U2", "Totals")
         for level in LEVELS]


async def test_unit_and_site_totals_hour_day_year() -> None:
    port = free_port()
    sink = OpcUaSink(parse_config(_three_sources(port), "test_opcua_uncertainty"))
    await sink.start()
    try:
        async with Client(f"opc.tcp://127.0.0.1:{port}") as client:
            ns = await client.get_namespace_index(NS_URI)
            name = await client.get_node(f"ns={ns};s=Totals.CO2RelUncertaintyHour"
                                         ).read_browse_name()
            assert name.Name == "CO2RelUncertaintyHour"
            before = await _values(client, NODES)  # nothing closed yet
            assert all(v[1] == StatusCodes.BadWaitingForInitialData for v in before.values())

            # The running year totals come with the minutes (as columns, the runtime's way):
            # S1 200 000 t, S2 200 000 t, S3 100 000 t.
            await sink.on_minute(MinuteResult(t=HOUR_T1, site=SITE, source_columns=_columns(
                _minute("S1", "U1", 200_000.0), _minute("S2", "U1", 200_000.0),
                _minute("S3", "U2", 100_000.0))))
            # Hour: S1 100 t, S2 300 t, S3 200 t.
            await sink.on_period(PeriodRecords("hour", HOUR_T0, HOUR_T1, (
                _hour("S1", 100.0), _hour("S2", 300.0), _hour("S3", 200.0)), (), ()))
            got = await _values(client, NODES)
            good = StatusCodes.Good
            # U1 hour (no instrument in common): √(100²·4.62 + 300²·3.03) = √318 900
            #   = 564.71232 t·% → / 400 t = 1.4117808 %
            assert _close(got["U1.CO2RelUncertaintyHour"], 1.4117808, good, HOUR_T0)
            # U2 hour: S3 alone, 1.9442222 %
            assert _close(got["U2.CO2RelUncertaintyHour"], 1.9442222, good, HOUR_T0)
            # Site hour, the barometer once for S2 and S3: (300 + 200)²·0.03 = 7 500, beside
            #   S1 46 200, S2 co2 90 000·1.08 = 97 200, vel 90 000·1.92 = 172 800,
            #   S3 co2 40 000·0.75 = 30 000, vel 40 000·3 = 120 000: Σ = 473 700
            #   √473 700 = 688.25867 / 600 t = 1.1470978 %
            assert _close(got["Totals.CO2RelUncertaintyHour"], 1.1470978, good, HOUR_T0)
            # Year to date, as of the end of the hour:
            #   U1 √(200 000²·(4.62 + 3.03)) / 400 000 = √7.65 / 2 = 1.3829317 %
            #   U2 1.9442222 %; site: 4·10¹⁰·(4.62 + 1.08 + 1.92) + 10¹⁰·(0.75 + 3)
            #   + (300 000)²·0.03 = 3.45·10¹¹ → √ / 500 000 = √34.5 / 5 = 1.1747340 %
            assert _close(got["U1.CO2RelUncertaintyYTD"], 1.3829317, good, HOUR_T1)
            assert _close(got["U2.CO2RelUncertaintyYTD"], 1.9442222, good, HOUR_T1)
            assert _close(got["Totals.CO2RelUncertaintyYTD"], 1.1747340, good, HOUR_T1)
            # No day closed yet.
            assert got["U1.CO2RelUncertaintyDay"][1] == StatusCodes.BadWaitingForInitialData

            # Day: S1 2 400 t, S2 without data, S3 4 800 t. U1 is S1's alone, incomplete.
            day = (_hour("S1", 2400.0, DAY_T0), _hour("S2", math.nan, DAY_T0),
                   _hour("S3", 4800.0, DAY_T0))
            await sink.on_period(PeriodRecords("day", DAY_T0, DAY_T1, day, (), ()))
            got = await _values(client, NODES)
            sub = StatusCodes.UncertainSubNormal
            assert _close(got["U1.CO2RelUncertaintyDay"], 2.1494185, sub, DAY_T0)
            assert _close(got["U2.CO2RelUncertaintyDay"], 1.9442222, good, DAY_T0)
            # Site: 2 400²·4.62 + 4 800²·3.78 = 26 611 200 + 87 091 200 = 113 702 400
            #   √ = 10 663.133 / 7 200 t = 1.4809907 %
            assert _close(got["Totals.CO2RelUncertaintyDay"], 1.4809907, sub, DAY_T0)
            # The hour's values stay as they were.
            assert _close(got["U1.CO2RelUncertaintyHour"], 1.4117808, good, HOUR_T0)
    finally:
        await sink.stop()


async def test_unit_and_site_totals_unknown_and_zero() -> None:
    port = free_port()
    # S3's velocity has no instrument: S3's figure, and so U2's and the site's, unknown.
    sink = OpcUaSink(parse_config(_three_sources(port, skip="s3_velocity"),
                                  "test_opcua_uncertainty"))
    await sink.start()
    try:
        async with Client(f"opc.tcp://127.0.0.1:{port}") as client:
            await sink.on_period(PeriodRecords("hour", HOUR_T0, HOUR_T1, (
                _hour("S1", 100.0), _hour("S2", 300.0), _hour("S3", 200.0)), (), ()))
            got = await _values(client, NODES)
            bad = StatusCodes.BadConfigurationError
            assert _close(got["U1.CO2RelUncertaintyHour"], 1.4117808, StatusCodes.Good, HOUR_T0)
            assert _close(got["U2.CO2RelUncertaintyHour"], math.nan, bad, HOUR_T0)
            assert _close(got["Totals.CO2RelUncertaintyHour"], math.nan, bad, HOUR_T0)
            # S3 stopped (0 t): it adds nothing; U2's total is zero, no relative figure;
            # the site's is U1's, 1.4117808 %.
            await sink.on_period(PeriodRecords("hour", HOUR_T1, HOUR_T1, (
                _hour("S1", 100.0, HOUR_T1), _hour("S2", 300.0, HOUR_T1),
                _hour("S3", 0.0, HOUR_T1)), (), ()))
            got = await _values(client, NODES)
            assert _close(got["U2.CO2RelUncertaintyHour"], math.nan, StatusCodes.BadNoData,
                          HOUR_T1)
            assert _close(got["Totals.CO2RelUncertaintyHour"], 1.4117808, StatusCodes.Good,
                          HOUR_T1)
    finally:
        await sink.stop()
