"""An OPC UA client in its own process: raw tag → client latency (bench/test_whole_path.py).

It subscribes to a few raw tag variables of a running carbonscada OPC UA server and, for
every data-change notification, records the time it arrived minus the value's
SourceTimestamp (the poll time the driver stamped on it). Same machine, same clock.

The simulator's registers are static, so a tag's value never changes: the monitored items
ask for DataChangeTrigger StatusValueTimestamp, so that every new SourceTimestamp is
notified (with the default StatusValue trigger only the first value would be).

Run as a process:  python bench/opcua_latency_client.py
  stdin, first line: JSON {"url": "opc.tcp://…", "namespace": "urn:carbonscada:<site>",
                           "nodes": ["<string NodeId>", …], "publishing_ms": 50}
  stdout, one line once subscribed: JSON {"subscribed": n}
  then records until stdin reaches end of file, and prints one line:
  JSON {"latencies_ms": [...], "values": {"<node>": last value}, "bad": n}
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import threading
import time
from typing import Any

from asyncua import ua
from asyncua.client.client import Client
from asyncua.ua.attribute_ids import AttributeIds


class _Handler:
    """Collects the latency of every notification."""

    def __init__(self) -> None:
        self.latencies_ms: list[float] = []
        self.values: dict[str, Any] = {}
        self.bad = 0

    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        """One notification: arrival time minus SourceTimestamp."""
        now = time.time()
        dv = data.monitored_item.Value
        if dv.StatusCode is not None and not dv.StatusCode.is_good():
            self.bad += 1
        self.values[str(node.nodeid.Identifier)] = val
        if dv.SourceTimestamp is not None:
            self.latencies_ms.append(1000.0 * (now - dv.SourceTimestamp.timestamp()))


async def _main() -> None:
    # asyncua logs the publish loop's end on disconnect as a crash, and revised values
    logging.getLogger("asyncua").setLevel(logging.CRITICAL)
    spec = json.loads(sys.stdin.readline())
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def wait_for_eof() -> None:  # the parent closing stdin (or dying) ends the measurement
        sys.stdin.read()
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=wait_for_eof, daemon=True).start()
    handler = _Handler()
    async with Client(spec["url"], timeout=30) as client:
        ns = await client.get_namespace_index(spec["namespace"])
        nodes = [client.get_node(ua.NodeId(ident, ua.Int16(ns))) for ident in spec["nodes"]]
        sub = await client.create_subscription(float(spec.get("publishing_ms", 50)), handler)
        flt = ua.DataChangeFilter()
        flt.Trigger = ua.DataChangeTrigger.StatusValueTimestamp
        handles = await sub._subscribe(nodes, AttributeIds.Value, flt, queuesize=100)
        ok = sum(isinstance(h, int) for h in handles)
        print(json.dumps({"subscribed": ok}), flush=True)
        handler.latencies_ms.clear()  # the initial values are not fresh polls
        await stop.wait()
        await sub.delete()
    print(json.dumps({"latencies_ms": handler.latencies_ms, "values": handler.values,
                      "bad": handler.bad}), flush=True)


if __name__ == "__main__":
    asyncio.run(_main())
