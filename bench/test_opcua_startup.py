"""OPC UA address-space start-up for plants of 10 000 and 100 000 raw tags (issue 13).

What the sink does at start for the nodes: build the layout, AddNodes, write the initial
values (BadWaitingForInitialData). Measured with server.opcua.bulk against the code path
it replaced, asyncua's own AddNodes (isession.add_nodes, the path add_variable takes too)
and one awaited write per variable, in the same run. asyncua's AddNodes is quadratic in
the children of a folder, so its baseline is measured at 10 000 tags only, one round.
Each round starts from a fresh initialised server (not timed).

With `--benchmark-disable` (make test) every case runs once at 300 tags, as a check.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

import pytest
from asyncua import ua
from asyncua.server.server import Server

from server.config import PlantConfig
from server.opcua.bulk import add_nodes_bulk, write_initial
from server.opcua.layout import _WAITING, _ts, build_layout
from tests.server.test_opcua_startup import NS_URI, big_plant


def fresh_server() -> Server:
    """An initialised asyncua server with the site namespace (index 2)."""
    async def make() -> Server:
        server = Server()
        await server.init()
        assert await server.register_namespace(NS_URI) == 2
        return server
    return asyncio.run(make())


async def bulk_start(server: Server, cfg: PlantConfig) -> int:
    """Layout, bulk AddNodes, initial values: the sink's start-up of the nodes."""
    layout = build_layout(cfg, 2)
    results = await add_nodes_bulk(server.iserver, layout.items)
    assert all(r.StatusCode.is_good() for r in results)
    await write_initial(server.iserver, layout.initial, _WAITING, _ts(datetime.now(UTC)))
    return len(layout.items)


async def asyncua_start(server: Server, cfg: PlantConfig) -> int:
    """The same with asyncua's AddNodes and a write per variable (the old code path)."""
    layout = build_layout(cfg, 2)
    results = await server.iserver.isession.add_nodes(layout.items)
    assert all(r.StatusCode.is_good() for r in results)
    now = _ts(datetime.now(UTC))
    for nid, initial in layout.initial:
        await server.write_attribute_value(nid, ua.DataValue(initial, _WAITING,
                                                             ServerTimestamp=now))
    return len(layout.items)


Start = Callable[[Server, PlantConfig], Coroutine[Any, Any, int]]


def run(benchmark: Any, start: Start, n_tags: int, rounds: int, group: str) -> None:
    """`rounds` start-ups of a plant of `n_tags` raw tags, each on a fresh server."""
    if benchmark.disabled:
        n_tags, rounds = 300, 1
    cfg = big_plant(n_tags)  # parsing the plant file is not the OPC UA start-up

    def setup() -> tuple[tuple[Server], dict[str, Any]]:
        gc.unfreeze()  # the previous round's server goes: its nodes may be collected
        gc.collect()
        return (fresh_server(),), {}

    def once(server: Server) -> int:
        return asyncio.run(start(server, cfg))

    benchmark.group = group
    nodes = benchmark.pedantic(once, setup=setup, rounds=rounds, iterations=1)
    benchmark.extra_info.update(tags=n_tags, nodes=nodes)


@pytest.mark.parametrize("start", [bulk_start, asyncua_start], ids=["bulk", "asyncua"])
def test_start_10k_tags(benchmark: Any, start: Start) -> None:
    """10 000 raw tags on one device: one folder of 10 000 variables."""
    run(benchmark, start, 10_000, 3 if start is bulk_start else 1,
        "OPC UA start-up, 10k raw tags")


def test_start_100k_tags_bulk(benchmark: Any) -> None:
    """100 000 raw tags, 4 devices of 25 000: the bulk path only (asyncua's takes hours)."""
    run(benchmark, bulk_start, 100_000, 1, "OPC UA start-up, 100k raw tags")
