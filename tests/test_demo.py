"""The shipped demo plant: every simulated instrument is read over its real protocol.

The demo's fixed ports are moved to free ones and its RS-485 pty into the test's
directory; everything else is config/demo-plant.yaml as shipped. Values are read back
as an OPC UA client would (asyncua over TCP).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
from asyncua import Client, ua
from asyncua.ua.status_codes import StatusCodes

from server.config import parse_plant
from server.runtime import Runtime
from tests.fixtures.demo import demo_dict

REPO = Path(__file__).resolve().parent.parent


async def test_demo_meters_answer_over_their_protocols(tmp_path: Path) -> None:
    data = demo_dict(tmp_path)
    runtime = Runtime(parse_plant(data, "demo-plant.yaml (ports moved)", REPO / "config"))
    await runtime.start()
    try:
        async with Client(data["opcua"]["endpoint"]) as client:
            ns = await client.get_namespace_index("urn:carbonscada:demo")
            paths = {"u1_gen_power": "dcs", "u1_meter_power": "meter_g1",
                     "u1_meter_energy": "meter_g1", "u1_meter_freq": "meter_g1",
                     "u2_meter_power": "meter_g2", "station_service_power": "meter_station",
                     "station_service_energy": "meter_station",
                     "startup_gas_volume": "gas_startup", "startup_gas_status": "gas_startup"}
            nodes = {tag: client.get_node(ua.NodeId(f"Tags.{dev}.{tag}", ns))
                     for tag, dev in paths.items()}
            values: dict[str, float] = {}
            async with asyncio.timeout(20):
                while len(values) < len(nodes):
                    for tag, node in nodes.items():
                        dv = await node.read_data_value(raise_on_bad_status=False)
                        assert dv.StatusCode is not None and dv.Value is not None
                        if dv.StatusCode.value == StatusCodes.Good:
                            values[tag] = float(dv.Value.Value)
                    await asyncio.sleep(0.2)
        url = f"http://127.0.0.1:{data['web']['port']}/api/v1/devices"
        async with aiohttp.ClientSession() as http, http.get(url) as r:
            assert r.status == 200
            buses = (await r.json())["buses"]
    finally:
        await runtime.stop()
    # one bus per port / endpoint: cems1+cems2 share 15020, the three meters one pty
    by_bus = {b["bus"]: sorted(d["device"] for d in b["devices"]) for b in buses}
    assert sorted(by_bus.values()) == [["cems1", "cems2"], ["dcs"], ["gas_startup"],
                                       ["meter_g1", "meter_g2", "meter_station"]]
    assert all(b["connected"] and b["requests"] > 0 and b["errors"] == 0 for b in buses)
    devices = [d for b in buses for d in b["devices"]]
    assert all(d["online"] and d["polls"] > 0 and d["last_error"] == "" for d in devices)
    # load curve between the configured trough and peak (noise 1σ = 1 MW)
    assert 355.0 <= values["u1_meter_power"] <= 605.0
    assert 345.0 <= values["u2_meter_power"] <= 595.0
    # the generator meter and the DCS follow the same curve: within a few noise σ
    assert abs(values["u1_meter_power"] - values["u1_gen_power"]) < 10.0
    assert 49.9 <= values["u1_meter_freq"] <= 50.1
    assert 22.0 <= values["station_service_power"] <= 36.0
    # counters start where the demo says and only advance (resolution 0.01)
    assert 152340.25 <= values["u1_meter_energy"] < 152340.25 + 1.0
    assert 9120.40 <= values["station_service_energy"] < 9120.40 + 1.0
    assert 48211.30 <= values["startup_gas_volume"] < 48211.30 + 1.0
    assert values["startup_gas_status"] == 0.0  # valve open, battery ok
