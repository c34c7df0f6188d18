"""The shipped demo plant's hours: substitution rules, coal feeders by the emission-factor
method with the shipped factor table, the allowance position, over OPC UA and the web API.

config/demo-plant.yaml as shipped, with its ports and RS-485 pty moved, its calculation
minute shortened to 0.5 s (an hour is 30 s) and the Modbus polls quickened to match.
"""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from asyncua import Client, ua
from asyncua.ua.status_codes import StatusCodes

from compute.periods import MinuteBatch, PeriodCycle, Readings
from server.config import load_config, load_plant, parse_plant
from server.runtime import Runtime
from tests.fixtures.demo import demo_dict

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "config" / "demo-plant.yaml"


def test_demo_accounts_every_feeder_and_the_startup_gas() -> None:
    cfg = load_config(DEMO)
    streams = {s.id: s for _, s in cfg.streams()}
    assert sorted(streams) == ["U1_coal_a", "U1_coal_b", "U1_coal_c", "U1_coal_d",
                               "U1_startup_gas", "U2_coal_a", "U2_coal_b", "U2_coal_c",
                               "U2_coal_d"]
    assert {s.rate_per_h.tag for s in streams.values() if s.rate_per_h} == {
        f"u{u}_feeder_{x}" for u in (1, 2) for x in "abcd"}
    gas = streams["U1_startup_gas"]
    assert gas.counter is not None and gas.counter.tag == "startup_gas_volume"
    assert (gas.quantity_unit, gas.counter.quantity_per_count) == ("1e4m3", 0.0001)
    assert [s.substitution.rule for _, s in cfg.sources()] == ["mrr_mean_2sigma"] * 2
    assert cfg.allowance.carbon_price_cny_t == 95.0
    assert cfg.reconciliation is not None and cfg.reconciliation.limit_pct == 5.0


def test_a_demo_day_at_full_load() -> None:
    # Unit 1 at full load all day: 4 feeders × 62 t/h × 24 h = 5 952 t of coal; the
    # 2026-11 coal (NCV 17.0 GJ/t, 0.03085 tC/GJ, OF 0.99):
    # 5 952 · 17.0 · 0.03085 · 0.99 · 44/12 = 11 331.1408 t CO2. The start-up gas meter,
    # read once a minute, starts at 48 211.30 m³ and grows 2.5 m³ an hour; the day's first
    # reading opens the register, so 1 439 deltas of 2.5/60 m³ = 59.9583 m³ =
    # 0.00599583 × 10⁴ m³; · 389.31 · 0.0153 · 0.99 · 44/12 = 0.1296 t CO2.
    cfg = load_config(DEMO)
    tags = [t.id for d in cfg.devices for t in d.tags]
    day0 = datetime(2026, 11, 20, 16, tzinfo=UTC)  # 2026-11-21 00:00 in Shanghai
    n = 24 * 60
    t_s = day0.timestamp() + 60.0 * np.arange(n)
    means = np.zeros((n, len(tags)))
    for x in "abcd":
        means[:, tags.index(f"u1_feeder_{x}")] = 62.0
        means[:, tags.index(f"u2_feeder_{x}")] = 61.0
    means[:, tags.index("u1_gen_power")] = 600.0
    means[:, tags.index("u2_gen_power")] = 590.0
    gas = Readings(t_s + 30.0, 48_211.30 + 2.5 * np.arange(n) / 60.0, np.zeros(n, np.uint8))
    # CEMS: S1 at 12.9 % dry and 2.0 million m³/h, S2 at 12.4 % and 2.0 million m³/h
    conc = np.tile([12.9, 12.4], (n, 1))
    batch = MinuteBatch(t_s, conc, np.full((n, 2), 2.0e6), np.zeros((n, 2), np.uint8), means,
                        np.zeros((n, len(tags)), np.uint8), (gas,))
    out = PeriodCycle(load_plant(DEMO).plan()).add(batch)
    day = next(r for r in out if r.level == "day")
    coal = [s for s in day.streams if s.stream.startswith("U1_coal")]
    assert [s.factor_version for s in coal] == ["demo-coal-2026-11"] * 4
    assert math.fsum(s.co2_t for s in coal) == pytest.approx(11_331.1408, abs=5e-5)
    (gas_day,) = [s for s in day.streams if s.stream == "U1_startup_gas"]
    assert gas_day.quantity == pytest.approx(0.00599583, abs=5e-9)
    assert gas_day.co2_t == pytest.approx(0.1296, abs=5e-5)
    u1, u2 = day.units
    # CEMS: 24 · 12.9 · 1.964 · 2.0e6 / 1e5 = 12 161.088 t; factor 11 331.1408 + 0.1296 =
    # 11 331.2705 t: (12 161.088 − 11 331.2705) / 11 331.2705 · 100 = 7.3233 % > 5 %
    assert u1.co2_cems_t == pytest.approx(12_161.088, abs=5e-4)
    assert u1.co2_factor_t == pytest.approx(11_331.2705, abs=5e-5)
    assert u1.reconciliation_diff_pct == pytest.approx(7.3233, abs=5e-5)
    assert u1.reconciliation_exceeded
    # U2: 4 · 61 · 24 = 5 856 t coal → 5 856 · 17.0 · 0.03085 · 0.99 · 44/12 = 11 148.3805 t;
    # CEMS 24 · 12.4 · 1.964 · 2e6 / 1e5 = 11 689.728 t → 4.8558 %, within the limit
    assert u2.co2_factor_t == pytest.approx(11_148.3805, abs=5e-5)
    assert u2.reconciliation_diff_pct == pytest.approx(4.8558, abs=5e-5)
    assert not u2.reconciliation_exceeded


def demo(tmp_path: Path) -> dict[str, Any]:
    """The shipped demo with half-second minutes and fast Modbus polls."""
    data = demo_dict(tmp_path)
    for dev in data["devices"]:
        if dev["protocol"] == "modbus_tcp":
            dev["poll_interval_s"] = 0.05
    data["clock"] = {"minute_seconds": 0.5, "min_samples_per_minute": 3}
    return data


async def test_demo_publishes_hours_and_the_allowance(tmp_path: Path) -> None:
    data = demo(tmp_path)
    runtime = Runtime(parse_plant(data, "demo-plant.yaml (ports moved)", REPO / "config"))
    begin = datetime.now(UTC)
    await runtime.start()
    try:
        async with Client(data["opcua"]["endpoint"]) as client:
            ns = await client.get_namespace_index("urn:carbonscada:demo")

            def node(ident: str) -> Any:
                return client.get_node(ua.NodeId(ident, ns))

            async with asyncio.timeout(75):  # an hour is 30 s
                while True:
                    dv = await node("Allowance.EmittedYTD").read_data_value(
                        raise_on_bad_status=False)
                    if dv.StatusCode is not None and dv.StatusCode.is_good():
                        break
                    await asyncio.sleep(0.5)
            hours = {}
            for ident in ("U1.S1.CO2Hour", "U2.S2.CO2Hour"):
                dv = await node(ident).read_data_value(raise_on_bad_status=False)
                assert dv.StatusCode is not None and dv.Value is not None
                hours[ident] = (dv.StatusCode.value, dv.Value.Value)
            annual = await node("Allowance.Annual").read_value()
            ytd = await node("Allowance.EmittedYTD").read_value()
        base = f"http://127.0.0.1:{data['web']['port']}/api/v1"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/streams/U1_coal_a/hours", params={
                    "from": (begin - timedelta(hours=1)).isoformat(),
                    "to": (begin + timedelta(hours=1)).isoformat()}) as r:
                assert r.status == 200, await r.text()
                coal = await r.json()
            async with http.get(f"{base}/allowance") as r:
                position = await r.json()
        # The HJ 212 uplinks of both stacks delivered to the simulated platform (acknowledged)
        (uplink,) = [s.sink for s in runtime._sinks if s.sink.name == "hj212"]
        async with asyncio.timeout(10):
            while uplink.stats()["uploads_done_total"] < 4:  # type: ignore[attr-defined]
                await asyncio.sleep(0.2)
        hj212 = uplink.stats()  # type: ignore[attr-defined]
    finally:
        await runtime.stop()
    assert hj212["connected"] == 2 and hj212["bad_frames_total"] == 0
    assert annual == 6_500_000.0
    # The first hour began with the server, part way in: it has fewer than 45 valid minutes
    # unless the server started at its very beginning, and with nothing to look back at
    # no substitute: a value only when valid. Invalid only for the minutes before the
    # server ran, it is BadNoData — not BadCommunicationError, no device failed (issue 11).
    for status, value in hours.values():
        assert status in (StatusCodes.Good, StatusCodes.BadNoData)
        if status == StatusCodes.Good:
            assert 100.0 < value < 600.0  # t in a plant hour at 360–600 MW
    assert ytd >= 0.0 and position["annual_t"] == 6_500_000.0
    assert position["carbon_price_cny_t"] == 95.0
    assert coal and coal[0]["factor_version"] == "demo-coal-2026-11"
    assert coal[0]["quantity_unit"] == "t" and coal[0]["quantity"] > 0
