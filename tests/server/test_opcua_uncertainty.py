"""Each source's CO2 uncertainty from its instruments (issue 15) on OPC UA, read by a real
asyncua client: U1.S1.CO2RelUncertainty, Good with the register's value, or
Bad_ConfigurationError while an input tag has no instrument."""

from __future__ import annotations

from typing import Any

from asyncua import ua
from asyncua.client.client import Client
from asyncua.ua.status_codes import StatusCodes

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
