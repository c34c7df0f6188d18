"""The InfluxDB outbox's alarm (issue 11: "a loud alarm before dropping"): with a real
VictoriaMetrics stopped under a running server, the outbox's system alarm rises in the web
alarm list and as an OPC UA condition before its size cap drops anything, says what the cap
dropped, and clears once VictoriaMetrics is back and the outbox has drained."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
from asyncua import ua
from asyncua.client.client import Client

from server.config import parse_plant
from server.influx.config import OUTBOX_RULE_ID
from server.influx.sink import InfluxSink
from server.runtime import Runtime
from tests.conftest import free_port
from tests.fixtures.plant import plant_dict
from tests.fixtures.victoria import VictoriaMetrics

pytestmark = pytest.mark.reliability

NS_URI = "urn:carbonscada:testsite"
CAP_MB = 0.04  # 40 kB: a few seconds of the 1 s plant minutes and their raw samples


async def until(what: str, cond: Callable[[], Awaitable[bool]], timeout_s: float = 40.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await cond():
        assert time.monotonic() < deadline, f"not in {timeout_s} s: {what}"
        await asyncio.sleep(0.1)


async def test_outbox_alarm_rises_before_dropping_and_clears(
        tmp_path: Path, victoria_metrics: VictoriaMetrics) -> None:
    web_port, ua_port = free_port(), free_port()
    d = plant_dict(free_port(), opcua_port=ua_port, web_port=web_port,
                   var_dir=str(tmp_path / "var"), minute_seconds=1.0)
    d["clock"]["min_samples_per_minute"] = 1
    d["influx"] = {"url": victoria_metrics.url, "flush_interval_s": 0.2,
                   "outbox_path": str(tmp_path / "var" / "outbox.sqlite"),
                   "outbox_max_mb": CAP_MB, "outbox_warn_pct": 50.0}
    runtime = Runtime(parse_plant(d, "test_influx_outbox_alarm"))
    assert OUTBOX_RULE_ID not in [r.id for r in runtime.config.alarms.rules]  # not the file's
    base = f"http://127.0.0.1:{web_port}"
    await runtime.start()
    try:
        # The rule the runtime adds for the outbox is one of the alarm rules in force.
        assert runtime._alarms is not None
        assert [r["id"] for r in runtime._alarms.rules_config()].count(OUTBOX_RULE_ID) == 1
        sink = next(s.sink for s in runtime._sinks if isinstance(s.sink, InfluxSink))
        async with aiohttp.ClientSession() as http, \
                Client(f"opc.tcp://127.0.0.1:{ua_port}") as client:
            ns = await client.get_namespace_index(NS_URI)
            cond = client.get_node(ua.NodeId(cast("ua.String", f"Alarms.{OUTBOX_RULE_ID}"),
                                             cast("ua.Int16", ns)))
            active = await cond.get_child(["0:ActiveState", "0:Id"])
            message = await cond.get_child("0:Message")

            async def listed() -> list[dict[str, Any]]:
                async with http.get(f"{base}/api/v1/alarms") as r:
                    assert r.status == 200
                    body: list[dict[str, Any]] = await r.json()
                    return [a for a in body if a["rule"] == OUTBOX_RULE_ID]

            async def delivered() -> bool:
                return sink.stats()["outbox_batches"] == 0 and sink.stats()["outbox_bytes"] == 0

            await until("first batches delivered", delivered)
            assert await listed() == []
            assert await active.read_value() is False

            victoria_metrics.stop()
            await until("alarm listed", lambda: _nonempty(listed()))
            alarm, = await listed()
            at_alarm = sink.stats()
            # Raised at 50 % of the cap, before anything was dropped.
            assert at_alarm["outbox_dropped_lines_total"] == 0
            assert 50.0 <= at_alarm["outbox_fill_pct"] < 100.0
            assert (alarm["state"], alarm["ack_state"], alarm["kind"]) == (
                "alarm", "active-unacknowledged", "comm_loss")
            assert alarm["message"].startswith("InfluxDB outbox at ")
            assert "of 0.04 MB" in alarm["message"]
            assert "the oldest batches are dropped at 100%" in alarm["message"]
            assert await active.read_value() is True
            text = await message.read_value()
            assert "InfluxDB outbox at" in (text.Text or "")

            async def dropped() -> bool:
                return sink.stats()["outbox_dropped_lines_total"] > 0
            await until("the size cap drops", dropped)
            # The alarm engine stays on its active alarm; what was dropped is its note.
            assert runtime._alarms is not None
            bank = runtime._alarms.engine.bank
            note = bank.fault_message[bank.devices.index("influx")]
            lines = int(sink.stats()["outbox_dropped_lines_total"])
            assert "DROPPED size cap: " in note and " lines (" in note and "points from " in note
            assert lines > 0

            victoria_metrics.start()
            await until("outbox drained", delivered, timeout_s=60)
            await until("alarm cleared", lambda: _cleared(listed()), timeout_s=20)
            assert await active.read_value() is False
    finally:
        await runtime.stop()


async def _nonempty(rows: Awaitable[list[dict[str, Any]]]) -> bool:
    return bool(await rows)


async def _cleared(rows: Awaitable[list[dict[str, Any]]]) -> bool:
    return all(a["state"] == "normal" for a in await rows)
