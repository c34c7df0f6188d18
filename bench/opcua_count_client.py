"""An OPC UA client session in its own process that counts data-change notifications.

Used by bench/test_opcua_throughput.py (one process per session, so that decoding does not
share the server's process). It imports asyncua only, so that it starts fast.

Run as a process:  python bench/opcua_count_client.py
  stdin, first line: JSON {"url": "opc.tcp://…", "nodes": ["<string identifier>", …],
                           "publish_ms": 100, "queue": 10}
  stdout, one line once subscribed: JSON {"subscribed": n, "initial": notifications so far}
  then every line on stdin is answered by one line: the notifications counted so far;
  end of file on stdin disconnects and ends the process.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import threading
from typing import Any

from asyncua import ua
from asyncua.client.client import Client

NS_URI = "urn:carbonscada:bench:throughput"


async def _client(spec: dict[str, Any]) -> None:
    """One session: subscribe, print ready, then answer every stdin line with the count."""
    count = [0]

    def on_publish(result: ua.PublishResult) -> None:
        for notif in result.NotificationMessage.NotificationData or ():
            if isinstance(notif, ua.DataChangeNotification):
                count[0] += len(notif.MonitoredItems)

    # The watchdog's probe (1 s) would give up while a pass of plain write_value holds the
    # server's loop (it never yields), and disconnect.
    client = Client(spec["url"], timeout=60, watchdog_intervall=60.0)
    await client.connect()
    try:
        sub = await client.create_subscription(spec["publish_ms"], _NoHandler())
        ns = await client.get_namespace_index(NS_URI)
        nodes = [client.get_node(ua.NodeId(ident, ua.Int16(ns))) for ident in spec["nodes"]]
        handles = await sub.subscribe_data_change(nodes, queuesize=spec["queue"])
        assert isinstance(handles, list)
        assert all(isinstance(h, int) for h in handles), handles
        # The count replaces asyncua's per-item dispatch to a handler (not what is measured).
        assert sub.subscription_id is not None
        client.uaclient._subscription_callbacks[sub.subscription_id] = on_publish
        await asyncio.sleep(2 * spec["publish_ms"] / 1000)  # the initial values
        loop = asyncio.get_running_loop()
        done = asyncio.Event()

        def serve() -> None:  # a line in → the count out; end of file ends the session
            for _ in sys.stdin:
                print(count[0], flush=True)
            loop.call_soon_threadsafe(done.set)

        print(json.dumps({"subscribed": len(handles), "initial": count[0]}), flush=True)
        threading.Thread(target=serve, daemon=True).start()
        await done.wait()
    finally:
        await client.disconnect()


class _NoHandler:
    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        """Unused: the publish callback is replaced."""


if __name__ == "__main__":
    logging.getLogger("asyncua").setLevel(logging.ERROR)  # revised values, session timeout
    asyncio.run(_client(json.loads(sys.stdin.readline())))
