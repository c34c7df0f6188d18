"""Start-up of a large address space: AddNodes in linear time, the event loop kept running.

asyncua's AddNodes scans the parent's references for every new node (O(n²) for a folder
of n tags: 60 s for 10 000 raw tags here); server.opcua.bulk adds the same nodes without
the scans. Proof that nothing changes for a client: the address space made both ways is
the same, attribute by attribute and reference by reference, and a browse over TCP of
both servers gives the same tree; the refusals (existing NodeId, unknown parent or type,
duplicated property) are asyncua's. bench/test_opcua_startup.py measures the time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
from collections.abc import Iterator
from typing import Any, cast

import pytest
from asyncua import ua
from asyncua.client.client import Client
from asyncua.server.server import Server
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes

from server.config import PlantConfig, parse_config
from server.opcua.bulk import add_nodes_bulk
from server.opcua.history import historized_series, mark_event_history, mark_historized
from server.opcua.layout import _Layout, build_layout, build_layout_async
from tests.conftest import free_port
from tests.fixtures.plant import plant_dict

pytestmark = pytest.mark.asyncio

NS_URI = "urn:carbonscada:testsite"


@pytest.fixture(autouse=True)
def _thaw() -> Iterator[None]:
    """add_nodes_bulk freezes the heap (the sink thaws it at stop): thaw after each test."""
    yield
    gc.unfreeze()


def big_plant(n_tags: int, per_device: int = 25_000, *, port: int = 4840) -> PlantConfig:
    """The test plant plus `n_tags` raw tags on devices of `per_device` (half in %)."""
    d = plant_dict(opcua_port=port)
    base = d["devices"][0]
    devices = [base]
    done = 0
    while done < n_tags:
        i = len(devices)
        n = min(per_device, n_tags - done)
        devices.append({**{k: v for k, v in base.items() if k != "tags"},
                        "id": f"dev{i}", "port": 6000 + i, "simulate": False,
                        "tags": [{"id": f"d{i}_t{j}", "register": 100 + 2 * j,
                                  "unit": "%" if j % 2 else "m/s"} for j in range(n)]})
        done += n
    d["devices"] = devices
    return parse_config(d, "big plant")


async def server_with(layout_of: PlantConfig, *, bulk: bool,
                      port: int | None = None) -> tuple[Server, _Layout]:
    """An asyncua server (not started) with the plant's nodes added one way or the other."""
    server = Server()
    await server.init()
    if port is not None:
        server.set_endpoint(f"opc.tcp://127.0.0.1:{port}")
    layout = build_layout(layout_of, await server.register_namespace(NS_URI))
    mark_historized(layout, historized_series(layout).keys())
    mark_event_history(layout)
    if bulk:
        results = await add_nodes_bulk(server.iserver, layout.items, chunk=7)
    else:
        results = await server.iserver.isession.add_nodes(layout.items)
    assert all(r.StatusCode.is_good() for r in results)
    return server, layout


def attributes(server: Server, nid: ua.NodeId) -> list[tuple[Any, ...]]:
    """Every attribute of a node: id, value, status (timestamps left out: made at 'now')."""
    data = server.iserver.aspace[nid]
    out = []
    for attr_id, av in data.attributes.items():
        dv = av.value
        assert dv is not None
        out.append((attr_id, repr(dv.Value), dv.StatusCode,  # repr: NaN equals NaN
                    dv.SourceTimestamp is None, dv.ServerTimestamp is None))
    return out


async def test_bulk_address_space_equals_asyncuas() -> None:
    cfg = big_plant(40, per_device=15)  # three devices, tags with and without EURange
    plain, layout = await server_with(cfg, bulk=False)
    fast, _ = await server_with(cfg, bulk=True)
    a, b = plain.iserver.aspace, fast.iserver.aspace
    assert list(a.keys()) == list(b.keys())  # the same nodes, added in the same order
    for nid in list(a.keys()):  # every reference of every node, standard ones included
        assert a[nid].references == b[nid].references, nid
    new = [item.RequestedNewNodeId for item in layout.items]
    assert len(new) > 100
    for nid in new:
        assert attributes(plain, nid) == attributes(fast, nid), nid
    site_notifier = b.read_attribute_value(layout.site, AttributeIds.EventNotifier)
    assert site_notifier.Value is not None and site_notifier.Value.Value == 0x5


async def test_refusals_are_asyncuas() -> None:
    cfg = big_plant(4, per_device=4)
    results = []
    for bulk in (False, True):
        server, layout = await server_with(cfg, bulk=bulk)
        tag = next(iter(layout.tags.values()))
        var = next(i for i in layout.items if i.RequestedNewNodeId == tag)
        prop = next(i for i in layout.items if i.ParentNodeId == tag)

        def again(var: ua.AddNodesItem = var, **changes: Any) -> ua.AddNodesItem:
            return dataclasses.replace(var, **changes)

        def fresh(name: str, ns: int = layout.ns) -> ua.NodeId:
            return ua.NodeId(cast("ua.String", name), cast("ua.Int16", ns))

        items = [
            again(),  # the NodeId exists
            again(RequestedNewNodeId=fresh("x1"), ParentNodeId=fresh("nowhere")),
            again(RequestedNewNodeId=fresh("x2"),
                  TypeDefinition=ua.NodeId(cast("ua.Int32", 999_999))),
            # A second child named like an existing property of the same parent.
            again(RequestedNewNodeId=fresh("x3"), ParentNodeId=tag,
                  BrowseName=prop.BrowseName),
            again(RequestedNewNodeId=fresh("x4")),  # fine: a new sibling
        ]
        if bulk:
            got = await add_nodes_bulk(server.iserver, items)
        else:
            got = await server.iserver.isession.add_nodes(items)
        results.append([(r.StatusCode.value, r.AddedNodeId) for r in got])
    assert results[0] == results[1]
    assert [code for code, _nid in results[1]] == [
        StatusCodes.BadNodeIdExists, StatusCodes.BadParentNodeIdInvalid,
        StatusCodes.BadTypeDefinitionInvalid, StatusCodes.BadBrowseNameDuplicated,
        StatusCodes.Good]


async def browse_tree(url: str) -> list[tuple[str, ...]]:
    """Every reference below Objects/CarbonSCADA as a client sees it, depth first."""
    out: list[tuple[str, ...]] = []
    async with Client(url) as client:
        ns = await client.get_namespace_index(NS_URI)
        root = client.get_node(ua.NodeId(cast("ua.String", "CarbonSCADA"),
                                         cast("ua.Int16", ns)))
        todo = [root]
        seen = set()
        while todo:
            node = todo.pop()
            if node.nodeid in seen:
                continue
            seen.add(node.nodeid)
            for ref in await node.get_references(refs=ObjectIds.References,
                                                  direction=ua.BrowseDirection.Both):
                out.append((node.nodeid.to_string(), ref.ReferenceTypeId.to_string(),
                            str(ref.IsForward), ref.NodeId.to_string(), str(ref.BrowseName),
                            str(ref.DisplayName), str(ref.NodeClass),
                            ref.TypeDefinition.to_string()))
                if ref.IsForward and ref.NodeId.NamespaceIndex == ns:
                    todo.append(client.get_node(ref.NodeId))
    return out


async def test_browse_over_tcp_is_the_same() -> None:
    cfg = big_plant(6, per_device=3)
    trees = []
    for bulk in (False, True):
        port = free_port()
        server, _layout = await server_with(cfg, bulk=bulk, port=port)
        await server.start()
        try:
            trees.append(await browse_tree(f"opc.tcp://127.0.0.1:{port}"))
        finally:
            await server.stop()
    assert len(trees[0]) > 100 and trees[0] == trees[1]


async def test_the_event_loop_runs_during_the_build() -> None:
    cfg = big_plant(2000, per_device=1000)
    layout = await build_layout_async(cfg, 2)  # in a thread: the loop runs meanwhile
    server = Server()
    await server.init()
    assert await server.register_namespace(NS_URI) == 2
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    before = ticks
    results = await add_nodes_bulk(server.iserver, layout.items, chunk=500)
    stop.set()
    await task
    chunks = -(-len(layout.items) // 500)
    assert len(results) == len(layout.items) > 4000
    assert all(r.StatusCode.is_good() for r in results)
    assert ticks - before >= chunks - 1  # the loop had a turn between every two chunks
    tags = [n for n in layout.tags.values()]
    assert all(server.iserver.aspace.get(n) is not None for n in tags)
