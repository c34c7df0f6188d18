# asyncua annotates its fields with its own aliases (ua.DateTime, Int16, UInt32, ...) that
# plain datetimes and ints are at run time, and every DataValue field as Optional:
# mypy: disable-error-code="arg-type,union-attr"
"""server/opcua/writer.py against a real asyncua client over TCP and asyncua's own paths.

Each case writes through the writer (ValueWriter / SampleWriter, what the sink uses) and,
where asyncua has an answer of its own, the same values through plain asyncua
`write_attribute_value` on a sibling variable: the client must see the same.
"""

from __future__ import annotations

import asyncio
import gc
import math
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest_asyncio
from asyncua import ua
from asyncua.client.client import Client
from asyncua.server.internal_subscription import InternalSubscription
from asyncua.server.server import Server
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.ua_binary import struct_to_binary

from model.flags import DataFlag
from model.records import SampleBlock, TagTable
from server.heap import freeze_heap, thaw_heap
from server.opcua.writer import (
    EncodedSubscription,
    SampleWriter,
    ValueWriter,
    double_variant,
    encode_data_changes,
)
from tests.conftest import free_port

NS = "urn:carbonscada:test:writer"
TAGS = ("a", "b", "c", "d")
T0 = 1_700_000_000.25  # 2023-11-14 22:13:20.25 UTC
T0_UTC = datetime(2023, 11, 14, 22, 13, 20, 250000, tzinfo=UTC)
SERVER_T = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
GOOD = ua.StatusCode(StatusCodes.Good)


class _Collect:
    """A subscription handler that queues (node id string, DataValue) per notification."""

    def __init__(self) -> None:
        self.got: asyncio.Queue[tuple[str, ua.DataValue]] = asyncio.Queue()

    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        self.got.put_nowait((str(node.nodeid.Identifier), data.monitored_item.Value))

    async def take(self, n: int, timeout_s: float = 5.0) -> list[tuple[str, ua.DataValue]]:
        return [await asyncio.wait_for(self.got.get(), timeout_s) for _ in range(n)]

    async def quiet(self, wait_s: float = 0.4) -> list[tuple[str, ua.DataValue]]:
        """Whatever else arrives within wait_s (should be nothing)."""
        await asyncio.sleep(wait_s)
        out = []
        while not self.got.empty():
            out.append(self.got.get_nowait())
        return out


@dataclass
class _Env:
    server: Server
    client: Client
    nids: dict[str, ua.NodeId]
    writer: ValueWriter
    samples: SampleWriter
    table: TagTable

    async def subscribe(self, names: list[str], *, queue: int = 10, flt: Any = None,
                        interval_ms: float = 50) -> _Collect:
        handler = _Collect()
        sub = await self.client.create_subscription(interval_ms, handler)
        nodes = [self.client.get_node(self.nids[n]) for n in names]
        handles = await sub._subscribe(nodes, ua.AttributeIds.Value, flt, queuesize=queue)  # type: ignore[attr-defined]
        assert all(isinstance(h, int) for h in handles), handles
        await handler.take(len(names))  # the initial values
        return handler


@pytest_asyncio.fixture
async def env() -> AsyncIterator[_Env]:
    port = free_port()
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    ns = await server.register_namespace(NS)
    folder = await server.nodes.objects.add_folder(ua.NodeId("f", ns), "f")
    names = [*TAGS, "plain", "plain2"]
    nids: dict[str, ua.NodeId] = {}
    for name in names:
        var = await folder.add_variable(ua.NodeId(name, ns), name, 0.0, ua.VariantType.Double)
        nids[name] = var.nodeid
    await server.start()
    client = Client(f"opc.tcp://127.0.0.1:{port}", timeout=10)
    await client.connect()
    writer = ValueWriter(server)
    table = TagTable(TAGS)
    try:
        yield _Env(server, client, nids, writer,
                   SampleWriter(writer, {t: nids[t] for t in TAGS}), table)
    finally:
        await client.disconnect()
        await server.stop()


def _dv(value: float | None, status: int = StatusCodes.Good, t: datetime = T0_UTC) -> ua.DataValue:
    var = ua.Variant(value, ua.VariantType.Double if value is not None else ua.VariantType.Null)
    return ua.DataValue(var, ua.StatusCode(status), SourceTimestamp=t, ServerTimestamp=SERVER_T)


async def test_values_and_timestamps_reach_the_client(env: _Env) -> None:
    got = await env.subscribe(list(TAGS))
    rows = np.array([0, 1, 2, 3, 0], np.int32)  # "a" twice: its later reading wins
    block = SampleBlock(env.table, np.array([T0, T0, T0 + 1, T0, T0 + 2]), rows,
                        np.array([1.5, -2.25, 1e6, float("nan"), 7.75]),
                        np.array([DataFlag.N] * 5, np.uint8))
    await env.samples.write(block, SERVER_T)
    seen = dict(await got.take(4))
    assert seen["a"].Value.Value == 7.75
    assert seen["a"].SourceTimestamp == datetime(2023, 11, 14, 22, 13, 22, 250000, tzinfo=UTC)
    assert seen["b"].Value.Value == -2.25
    assert seen["b"].SourceTimestamp == T0_UTC
    assert seen["c"].Value.Value == 1e6
    assert seen["c"].SourceTimestamp == datetime(2023, 11, 14, 22, 13, 21, 250000, tzinfo=UTC)
    assert all(seen[t].ServerTimestamp == SERVER_T for t in TAGS)
    assert all(seen[t].StatusCode.is_good() for t in "abc")
    assert not seen["d"].StatusCode.is_good()  # NaN: never Good
    assert await got.quiet() == []  # one notification per tag: "a"'s 1.5 was superseded
    # What a Read answers is the same value.
    assert await env.client.get_node(env.nids["b"]).read_value() == -2.25


async def test_a_subscriber_that_mutates_its_value_changes_nothing_else(env: _Env) -> None:
    tcp = await env.subscribe(["a"])
    seen: list[float] = []

    class Mutator:
        def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
            dv = data.monitored_item.Value
            seen.append(dv.Value.Value)
            dv.Value.Value = -999.0  # an in-process subscriber scribbles on what it got
            dv.StatusCode = ua.StatusCode(StatusCodes.BadInternalError)

    class Watcher(Mutator):
        def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
            seen.append(data.monitored_item.Value.Value.Value)

    node = env.server.get_node(env.nids["a"])
    for handler in (Mutator(), Watcher()):
        sub = await env.server.create_subscription(0, handler)  # in-process, no copy on the wire
        await sub.subscribe_data_change(node)
    await asyncio.sleep(0.1)
    seen.clear()
    await env.writer.write(env.nids["a"], _dv(3.5))
    await asyncio.sleep(0.2)
    assert seen == [3.5, 3.5]  # the second subscriber got the value, not the scribble
    held = env.server.read_attribute_value(env.nids["a"])
    assert held.Value.Value == 3.5 and held.StatusCode.is_good()
    ((_, dv),) = await tcp.take(1)
    assert dv.Value.Value == 3.5 and dv.StatusCode.is_good()


async def test_absolute_deadband_as_asyncua_applies_it(env: _Env) -> None:
    flt = ua.DataChangeFilter(Trigger=ua.DataChangeTrigger.StatusValue,
                              DeadbandType=ua.DeadbandType.Absolute, DeadbandValue=1.0)
    got = await env.subscribe(["a", "plain"], flt=flt)
    writes = [10.0, 10.5, 12.0, 12.4, 14.0]  # a step <= 1.0 is not reported
    await env.writer.write_nodes([(env.nids["a"], _dv(v)) for v in writes])
    for v in writes:
        await env.server.write_attribute_value(env.nids["plain"], _dv(v))
    seen = await got.take(6)
    assert [dv.Value.Value for n, dv in seen if n == "a"] == [10.0, 12.0, 14.0]
    assert [dv.Value.Value for n, dv in seen if n == "plain"] == [10.0, 12.0, 14.0]
    assert await got.quiet() == []


async def test_queue_size_one_keeps_the_newest(env: _Env) -> None:
    one = await env.subscribe(["a", "plain"], queue=1, interval_ms=300)
    three = await env.subscribe(["b"], queue=3, interval_ms=300)
    # In one publishing interval: three values each (no await between the writer's).
    await env.writer.write_nodes([(env.nids[n], _dv(v)) for v in (1.0, 2.0, 3.0)
                                  for n in ("a", "b")])
    for v in (1.0, 2.0, 3.0):
        await env.server.write_attribute_value(env.nids["plain"], _dv(v))
    got_one = await one.take(2)
    assert sorted((n, dv.Value.Value) for n, dv in got_one) == [("a", 3.0), ("plain", 3.0)]
    assert [dv.Value.Value for _, dv in await three.take(3)] == [1.0, 2.0, 3.0]
    assert await one.quiet() == [] and await three.quiet() == []


async def test_status_codes_pass_through(env: _Env) -> None:
    got = await env.subscribe(["a"])
    # A Bad status: the value is not sent (Part 4, 7.7.1), whatever was written with it.
    await env.writer.write(env.nids["a"], _dv(5.0, StatusCodes.BadWaitingForInitialData))
    ((_, first),) = await got.take(1)
    assert first.StatusCode.value == StatusCodes.BadWaitingForInitialData
    assert first.Value is None or first.Value.Value is None
    await env.writer.write(env.nids["a"], _dv(5.0, StatusCodes.UncertainLastUsableValue))
    await env.writer.write(env.nids["a"], _dv(6.5))
    second, third = [dv for _, dv in await got.take(2)]
    assert second.StatusCode.value == StatusCodes.UncertainLastUsableValue
    assert second.Value.Value == 5.0
    assert third.StatusCode.is_good() and third.Value.Value == 6.5


async def test_client_subscriptions_use_the_fast_encoder(env: _Env) -> None:
    await env.subscribe(["a"])
    await env.writer.write(env.nids["a"], _dv(1.0))
    subs = env.server.iserver.subscription_service.subscriptions.values()
    assert any(type(s) is EncodedSubscription for s in subs)
    assert all(isinstance(s, InternalSubscription) for s in subs)


def test_encoding_is_asyncua_s_byte_for_byte() -> None:
    t1 = datetime(2025, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)
    values = [
        ua.DataValue(double_variant(12.5), GOOD, SourceTimestamp=T0_UTC, ServerTimestamp=t1),
        ua.DataValue(ua.Variant(-0.0, ua.VariantType.Double),
                     ua.StatusCode(StatusCodes.UncertainLastUsableValue),
                     SourceTimestamp=t1, ServerTimestamp=t1),
        ua.DataValue(ua.Variant(None, ua.VariantType.Null),
                     ua.StatusCode(StatusCodes.BadWaitingForInitialData), ServerTimestamp=t1),
        ua.DataValue(ua.Variant("N", ua.VariantType.String), GOOD, SourceTimestamp=t1),
        ua.DataValue(ua.Variant(3, ua.VariantType.Double), GOOD, SourceTimestamp=t1,
                     ServerTimestamp=t1),  # an int as Double: asyncua's own path
        ua.DataValue(ua.Variant(1.0, ua.VariantType.Double), GOOD, SourceTimestamp=t1,
                     ServerTimestamp=t1, SourcePicoseconds=7),
        ua.DataValue(ua.Variant([1.0, 2.0], ua.VariantType.Double), GOOD,
                     SourceTimestamp=t1, ServerTimestamp=t1),
    ]
    items = [ua.MonitoredItemNotification(ClientHandle=100 + i, Value=v)
             for i, v in enumerate(values)]
    expected = struct_to_binary(ua.DataChangeNotification(MonitoredItems=items))
    assert encode_data_changes(items) == expected
    assert encode_data_changes([]) == struct_to_binary(ua.DataChangeNotification())
    # The fast path's record: handle 100, mask 0x0F, Double 12.5, Good, the two timestamps
    # in 100 ns since 1601-01-01.
    record = struct.pack("<IBBdIqq", 100, 0x0F, 11, 12.5, 0, _win(T0_UTC), _win(t1))
    assert _win(T0_UTC) == (11_644_473_600 + 1_700_000_000) * 10_000_000 + 2_500_000
    assert expected[4:4 + len(record)] == record
    assert double_variant(2.5) == ua.Variant(2.5, ua.VariantType.Double)


def _win(dt: datetime) -> int:
    return (dt - datetime(1601, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) * 10


async def test_a_big_block_yields_to_the_loop_between_chunks(env: _Env) -> None:
    n = 20_000
    server = env.server
    ns = env.nids["a"].NamespaceIndex
    folder = server.get_node(ua.NodeId("f", ns))
    tags = tuple(f"x{i}" for i in range(n))
    nids = {}
    for t in tags[-50:]:  # a few variables; the other rows of the block have none
        nids[t] = (await folder.add_variable(ua.NodeId(t, ns), t, 0.0,
                                             ua.VariantType.Double)).nodeid
    rows = np.arange(n, dtype=np.int32)
    samples = SampleWriter(env.writer, nids)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0)
            ticks += 1

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    before = ticks
    await samples.write(SampleBlock.of_poll(TagTable(tags), T0, rows, rows * 0.5,
                                            np.zeros(n, np.uint8)), SERVER_T)
    during = ticks - before
    task.cancel()
    assert during >= 3  # 20 000 rows looked at 5 000 at a time: the loop ran between
    held = server.read_attribute_value(nids["x19999"])  # not watched: served on read
    assert (held.Value.Value, held.SourceTimestamp) == (9999.5, T0_UTC)


async def test_watched_rows_are_written_in_chunks(env: _Env) -> None:
    n = 1_200
    ns = env.nids["a"].NamespaceIndex
    folder = env.server.get_node(ua.NodeId("f", ns))
    tags = tuple(f"w{i}" for i in range(n))
    for t in tags:
        env.nids[t] = (await folder.add_variable(ua.NodeId(t, ns), t, 0.0,
                                                 ua.VariantType.Double)).nodeid
    got = await env.subscribe(list(tags), interval_ms=50)
    samples = SampleWriter(env.writer, {t: env.nids[t] for t in tags})
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0)
            ticks += 1

    rows = np.arange(n, dtype=np.int32)
    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    before = ticks
    await samples.write(SampleBlock.of_poll(TagTable(tags), T0, rows, rows * 2.0 + 1.0,
                                            np.zeros(n, np.uint8)), SERVER_T)
    during = ticks - before
    task.cancel()
    assert during >= 2  # 1 200 DataValues in chunks of 500
    values = {name: dv.Value.Value for name, dv in await got.take(n)}
    assert values == {t: 2.0 * i + 1.0 for i, t in enumerate(tags)}


async def test_unwatched_tags_are_read_as_latest_then_notified_once_watched(
        env: _Env) -> None:
    # Nobody watches "a": a block updates only the store the reads are answered from.
    t1 = TagTable(TAGS)

    def block(t_s: float, value: float, flag: int = 0) -> SampleBlock:
        return SampleBlock.of_poll(t1, t_s, np.array([0], np.int32), np.array([value]),
                                   np.array([flag], np.uint8))

    await env.samples.write(block(T0, 41.5), SERVER_T)
    await env.samples.write(block(T0 + 1, 42.5), SERVER_T)
    node = env.client.get_node(env.nids["a"])
    dv = await node.read_data_value()
    assert (dv.Value.Value, dv.StatusCode.value, dv.SourceTimestamp, dv.ServerTimestamp) == (
        42.5, StatusCodes.Good, T0_UTC + timedelta(seconds=1), SERVER_T)
    await env.samples.write(block(T0 + 2, math.nan, int(DataFlag.D)), SERVER_T)
    dv = await node.read_data_value(raise_on_bad_status=False)
    assert (dv.Value.Value, dv.StatusCode.value) == (None, StatusCodes.BadSensorFailure)
    await env.samples.write(block(T0 + 3, 43.5), SERVER_T)
    # A new monitored item's first value is the latest; from then on every block notifies.
    handler = _Collect()
    sub = await env.client.create_subscription(50, handler)
    await sub.subscribe_data_change(node)
    (_, first), = await handler.take(1)
    assert (first.Value.Value, first.SourceTimestamp) == (43.5, T0_UTC + timedelta(seconds=3))
    await env.samples.write(block(T0 + 4, 44.5), SERVER_T)
    (_, second), = await handler.take(1)
    assert (second.Value.Value, second.SourceTimestamp) == (44.5,
                                                           T0_UTC + timedelta(seconds=4))
    await sub.delete()
    await asyncio.sleep(0.1)
    await env.samples.write(block(T0 + 5, 45.5), SERVER_T)  # unwatched again: served
    assert (await node.read_value()) == 45.5


def test_freeze_heap_is_undone_by_thaw_heap() -> None:
    before = gc.get_threshold()
    freeze_heap()
    try:
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (10_000, 50, 10)
    finally:
        thaw_heap()
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == before
