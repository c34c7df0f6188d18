"""The runtime's carbon wiring: the asset keeper built and loaded, the compliance position
computed at start and after entries are made, handed to the alarm rules and to OPC UA
(read back by a real client over TCP), in a task of its own."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from asyncua.client.client import Client
from asyncua.ua.status_codes import StatusCodes

from server import runtime as rt
from server.config import parse_plant
from tests.conftest import free_port
from tests.fixtures.plant import plant_dict


async def settle(runtime: rt.Runtime) -> None:
    """Until the position task running now has handed its position over."""
    for _ in range(200):
        if not runtime._carbon_busy:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the carbon position task did not finish")


async def test_position_reaches_alarms_and_opcua(tmp_path: Path) -> None:
    opcua_port = free_port()
    d = plant_dict(free_port(), opcua_port=opcua_port, var_dir=str(tmp_path / "var"))
    d["web"]["enabled"] = False
    d["alarms"] = {"rules": [{"id": "short", "kind": "carbon_position", "measure": "deficit_t",
                              "warning": 1_000.0, "alarm": 10_000.0}]}
    runtime = rt.Runtime(parse_plant(d, "test"))
    await runtime.start()
    try:
        assert runtime._alarms is not None
        year = runtime.assets.current_year()
        async with Client(f"opc.tcp://127.0.0.1:{opcua_port}") as client:
            ns = await client.get_namespace_index("urn:carbonscada:testsite")

            async def read(name: str) -> tuple[float, int]:
                dv = await client.get_node(f"ns={ns};s=Allowance.{name}").read_data_value(
                    raise_on_bad_status=False)
                assert dv.Value is not None and dv.StatusCode is not None
                return dv.Value.Value, dv.StatusCode.value

            # At start: an empty ledger and no stored emissions, written at once.
            await settle(runtime)
            assert await read("Holdings") == (0.0, StatusCodes.Good)
            assert await read("Deficit") == (0.0, StatusCodes.Good)
            # 100 000 t allocated, 112 000 t verified: 12 000 t short ≥ 10 000: alarm. The
            # entries alone bring the new position (the keeper's on_change), no hour closing.
            before = datetime.now(UTC)
            await runtime.assets.enter("eng", {"kind": "allocation", "year": year,
                                               "side": "final", "quantity_t": 100_000.0})
            await runtime.assets.enter("eng", {"kind": "verified", "year": year,
                                               "quantity_t": 112_000.0})
            await settle(runtime)
            assert await read("Holdings") == (100_000.0, StatusCodes.Good)
            assert await read("Deficit") == (12_000.0, StatusCodes.Good)
            (ev,) = [e for e in runtime._alarms.events if e.rule == "short"]
            assert (ev.state, ev.value) == ("alarm", 12_000.0)
            assert ev.t >= before
            # asked again while one runs: no second task, one more run after it
            runtime._carbon_position_soon()
            runtime._carbon_position_soon()
            assert runtime._carbon_again
            assert sum(1 for t in runtime._side_tasks
                       if "_carbon_positions" in repr(t.get_coro())) == 1
            await settle(runtime)
    finally:
        await runtime.stop()
