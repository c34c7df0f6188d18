"""The units' and the site's Performance objects (compute/performance.py) read back over
TCP by a real asyncua client after the sink got a performance worked by hand."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from asyncua.client.client import Client
from asyncua.ua.status_codes import StatusCodes

from compute.performance import PerformanceConfig, Sums, baseline_sums, performance
from server.config import parse_plant
from server.opcua.sink import OpcUaSink
from server.runtime import Runtime
from tests.conftest import free_port
from tests.fixtures.plant import plant_config, plant_dict

NS_URI = "urn:carbonscada:testsite"
T = datetime(2026, 5, 10, 16, 0, tzinfo=UTC)  # 2026-05-11 00:00 plant time
# U1 alone: baseline 2024 3 000 000 t over 3 600 000 MWh (5/6 t/MWh); the 2026 target
# 4 380 000 t (U1 100 %), 0.82 t/MWh for the site, quarters 27/23/24/26 %. As of
# 2026-05-11: 130 of 365 days, Q2 with 40 of 91 days; stored: Q1 700 000 t over
# 880 000 MWh, Q2 300 000 t over 390 000 MWh.
PERF = {"baseline": {"year": 2024, "source": "2024 verified emission report",
                     "units": {"U1": {"co2_t": 3_000_000.0, "output_mwh": 3_600_000.0}}},
        "targets": [{"year": 2026, "site_co2_t": 4_380_000.0, "intensity_t_mwh": 0.82,
                     "units": {"U1": {"share_pct": 100}}, "quarters_pct": [27, 23, 24, 26],
                     "source": "group target 2026"}]}
QUARTERS = {"U1": [Sums(700_000.0, 880_000.0), Sums(300_000.0, 390_000.0), Sums(), Sums()]}
# By hand: CO2 to date 1 000 000 t; target to date 4 380 000 · 130/365 = 1 560 000 t,
# deviation −560 000 t = −35.897 435 … %; 1 000 000 / 4 380 000 = 22.831 050 … % used;
# Q2's target 4 380 000 · 23 % · 40/91 = 40 296 000/91 t, actual 300 000 = 27 300 000/91:
# −12 996 000/91 t; the baseline normalised 1 270 000 · 5/6 t, −350 000/6 t = −700/127 %;
# intensity 1 000 000 / 1 270 000 = 100/127 t/MWh.
HAND = {"CO2YTD": 1_000_000.0, "TargetYTD": 1_560_000.0, "DeviationYTD": -560_000.0,
        "DeviationYTDPercent": -56_000_000 / 1_560_000, "TargetUsedPercent": 1e8 / 4_380_000,
        "DeviationQTD": -12_996_000 / 91, "VsBaseline": -350_000 / 6,
        "VsBaselinePercent": -700 / 127, "IntensityYTD": 100 / 127}


@pytest.mark.asyncio
async def test_performance_is_written_and_read_back(port: int) -> None:
    cfg = PerformanceConfig.model_validate(PERF)
    perf = performance(cfg, ["U1"], 2026, date(2026, 5, 11), QUARTERS, baseline_sums(cfg))
    sink = OpcUaSink(plant_config(opcua_port=port))
    await sink.start()
    try:
        async with Client(f"opc.tcp://127.0.0.1:{port}") as client:
            ns = await client.get_namespace_index(NS_URI)
            await sink.on_carbon_performance(perf, T)
            for prefix in ("U1.Performance", "Performance"):  # the unit, the site
                for name, value in HAND.items():
                    dv = await client.get_node(f"ns={ns};s={prefix}.{name}").read_data_value()
                    assert dv.Value is not None and dv.StatusCode is not None
                    assert dv.Value.Value == pytest.approx(value, rel=1e-12), (prefix, name)
                    assert (dv.StatusCode.value, dv.SourceTimestamp) == (StatusCodes.Good, T)
            eu = await client.get_node(f"ns={ns};s=U1.Performance.IntensityYTD").get_child(
                "0:EngineeringUnits")
            assert (await eu.read_value()).DisplayName.Text == "t/MWh"
            # The intensity target is the site's: the unit has none (not a Good 0); the
            # site's is 0.82, and (100/127 − 0.82) / 0.82 · 100 % above it.
            unit_target = await client.get_node(
                f"ns={ns};s=U1.Performance.TargetIntensity").read_data_value(
                    raise_on_bad_status=False)
            assert unit_target.StatusCode is not None and not unit_target.StatusCode.is_good()
            site = await client.get_node(
                f"ns={ns};s=Performance.IntensityDeviationPercent").read_data_value()
            assert site.Value is not None
            assert site.Value.Value == pytest.approx((100 / 127 - 0.82) / 0.82 * 100, rel=1e-12)
    finally:
        await sink.stop()


async def test_the_runtime_writes_the_performance_at_start(port: int, tmp_path: Path) -> None:
    # 60-s minutes: the plant year is the calendar's. No day stored yet: 0 t to date; the
    # target of this year prorated by the days before today.
    tz = ZoneInfo("Asia/Shanghai")
    today = datetime.now(tz).date()
    d = plant_dict(free_port(), opcua_port=port, var_dir=str(tmp_path / "var"))
    d["web"]["enabled"] = False
    d["performance"] = {"targets": [{"year": today.year, "site_co2_t": 3_650_000.0,
                                     "source": "group target"}]}
    runtime = Runtime(parse_plant(d, "test"))
    await runtime.start()
    try:
        async with Client(f"opc.tcp://127.0.0.1:{port}") as client:
            ns = await client.get_namespace_index(NS_URI)
            node = client.get_node(f"ns={ns};s=Performance.TargetYTD")
            async with asyncio.timeout(30):
                while True:
                    dv = await node.read_data_value(raise_on_bad_status=False)
                    assert dv.StatusCode is not None
                    if dv.StatusCode.is_good():
                        break
                    await asyncio.sleep(0.2)
            year = date(today.year + 1, 1, 1) - date(today.year, 1, 1)
            elapsed = today - date(today.year, 1, 1)  # whole days before today
            assert dv.Value is not None
            assert dv.Value.Value == pytest.approx(3_650_000.0 * elapsed.days / year.days,
                                                   rel=1e-12)
            co2 = await client.get_node(f"ns={ns};s=U1.Performance.CO2YTD").read_value()
            assert co2 == 0.0
    finally:
        await runtime.stop()
