# asyncua annotates its fields with its own aliases (ua.DateTime, Int16, UInt32, ...) that
# plain datetimes and ints are at run time, and every DataValue field as Optional:
# mypy: disable-error-code="arg-type,union-attr"
"""OPC UA throughput: data-change notifications/s that subscribed clients receive (issues 12, 13).

An asyncua Server on a free port of 127.0.0.1 holds N_TAGS Double variables (500 per
folder: asyncua scans a parent's references on every add) and runs on its own event loop
in a thread of this process. SESSIONS client sessions, each in its own process
(bench/opcua_count_client.py), subscribe N_TAGS / SESSIONS variables each (publishing
interval PUBLISH_MS, queue size QUEUE so that nothing is dropped) and count every
MonitoredItemNotification they decode (asyncua's own client decoding; only its per-item
dispatch to a handler is replaced by the count).

In the same run, for the same nodes and the same clients, a round writes PASSES passes of
new values over all N_TAGS nodes, one pass per publishing interval at most (what a block
per poll or minute is), and ends when the clients got every notification:

* write_value (the baseline of the issue): plain asyncua, `await server.write_attribute_value
  (nid, DataValue)` (what `Node.write_value` does on the server) for every node;
* writer: the sink's own path, `SampleWriter.write(block, server_time)` (server/opcua/writer.py,
  what `OpcUaSink.on_samples` calls) with a SampleBlock of N_TAGS readings.

Reported (extra_info, printed): notifications/s of each round (min and median over the
rounds: the round's notifications over the time from its first write to the last
notification counted), the ratio writer / write_value of the medians, the CPU % of this
process and of the clients, the longest garbage collection, and the longest time the
server's event loop did not run a probe task during the writer rounds: wall time, wall
time without an old-generation collection, and the loop thread's CPU time in such a gap
(what the loop's own work held it for; target < 20 ms for a 10 000-value block).

Sizes and tools: BENCH_OPCUA_TAGS (10 000), BENCH_OPCUA_PASSES (20), BENCH_OPCUA_ROUNDS (3);
BENCH_OPCUA_PROFILE=FILE dumps a cProfile of the server's loop thread per case
(FILE.writer, FILE.write_value); BENCH_OPCUA_SLOW=1 logs every loop callback over 20 ms.

Targets: >= 50 000 notifications/s with 10 000 monitored items over 4 sessions, >= 3x
write_value. With `--benchmark-disable` (make test) a short check: 2 000 variables, one
round of 2 passes each.
"""

from __future__ import annotations

import asyncio
import cProfile
import gc
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
from asyncua import ua
from asyncua.server.server import Server
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes

from bench.simproc import process_cpu_s
from model.flags import DataFlag
from model.records import SampleBlock, TagTable
from server.heap import freeze_heap, thaw_heap
from server.opcua.writer import SampleWriter, ValueWriter
from tests.conftest import free_port

HOST = "127.0.0.1"
CLIENT = Path(__file__).with_name("opcua_count_client.py")
SESSIONS = 4
PER_FOLDER = 500
PUBLISH_MS = 100.0
QUEUE = 10  # per monitored item: more than the writes of one publishing interval
NS_URI = "urn:carbonscada:bench:throughput"  # the client's too
_R = TypeVar("_R")


@dataclass(frozen=True)
class Size:
    """What one run measures."""

    tags: int
    passes: int  # per round
    rounds: int

    @classmethod
    def of_run(cls, disabled: bool) -> Size:
        """The short check under --benchmark-disable, else the full case."""
        if disabled:
            return cls(tags=2_000, passes=2, rounds=1)
        return cls(tags=int(os.environ.get("BENCH_OPCUA_TAGS", 10_000)),
                   passes=int(os.environ.get("BENCH_OPCUA_PASSES", 20)),
                   rounds=int(os.environ.get("BENCH_OPCUA_ROUNDS", 3)))


# --- client processes (bench/opcua_count_client.py) ------------------------------------------


class _Session:
    """A client process with one session."""

    def __init__(self, url: str, nodes: list[str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(CLIENT)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"url": url, "nodes": nodes, "publish_ms": PUBLISH_MS,
                                          "queue": QUEUE}) + "\n")
        self.proc.stdin.flush()

    def ready(self) -> dict[str, int]:
        """Wait until subscribed: {"subscribed": n, "initial": notifications so far}."""
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"client exited with {self.proc.wait()}")
        return dict(json.loads(line))

    def ask(self) -> None:
        """Ask for the count (answered by `count`)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()

    def count(self) -> int:
        """The answer to `ask`."""
        assert self.proc.stdout is not None
        return int(self.proc.stdout.readline())

    def cpu_s(self) -> float:
        """CPU seconds the client process used so far (user + system)."""
        return process_cpu_s(self.proc.pid)

    def stop(self) -> None:
        """Close stdin (the session disconnects), kill it if it does not end."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# --- server in this process -----------------------------------------------------------------


@dataclass
class _Bench:
    """The server on its own loop (thread), the client sessions and the writer path."""

    size: Size
    server: Server
    loop: asyncio.AbstractEventLoop
    sessions: list[_Session]
    nids: list[ua.NodeId]
    table: TagTable
    samples: SampleWriter
    counted: int = 0
    k: int = 0  # passes written so far (each a new value per node)
    # The loop's longest stall (_probe)
    lag_max_s: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])

    def run(self, coro: Coroutine[Any, Any, _R]) -> _R:
        """Run `coro` on the server's loop and wait for it."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def clients_cpu_s(self) -> float:
        """CPU seconds of all client processes."""
        return sum(s.cpu_s() for s in self.sessions)

    def count(self) -> int:
        """Notifications every session counted so far."""
        for s in self.sessions:
            s.ask()
        return sum(s.count() for s in self.sessions)


async def _start_server(port: int, tags: int) -> tuple[Server, list[ua.NodeId]]:
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://{HOST}:{port}")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    ns = await server.register_namespace(NS_URI)
    items: list[ua.AddNodesItem] = []
    nids: list[ua.NodeId] = []
    for f in range(0, tags, PER_FOLDER):
        folder = ua.NodeId(f"f{f // PER_FOLDER}", ns)
        items.append(_add_item(folder, ua.NodeId(ObjectIds.ObjectsFolder),
                               ua.NodeClass.Object, ua.ObjectAttributes()))
        for i in range(f, min(f + PER_FOLDER, tags)):
            attrs = ua.VariableAttributes()
            attrs.Value = ua.Variant(0.0, ua.VariantType.Double)
            attrs.DataType = ua.NodeId(ObjectIds.Double)
            nid = ua.NodeId(f"t{i:05d}", ns)
            nids.append(nid)
            items.append(_add_item(nid, folder, ua.NodeClass.Variable, attrs))
    results = await server.iserver.isession.add_nodes(items)
    assert all(r.StatusCode.is_good() for r in results)
    await server.start()
    freeze_heap()  # as the runtime does once started (and its collector tuning), both cases
    return server, nids


def _add_item(nid: ua.NodeId, parent: ua.NodeId, cls: ua.NodeClass, attrs: Any) -> ua.AddNodesItem:
    item = ua.AddNodesItem()
    item.RequestedNewNodeId = nid
    item.BrowseName = ua.QualifiedName(str(nid.Identifier), nid.NamespaceIndex)
    item.NodeClass = cls
    item.ParentNodeId = parent
    if cls == ua.NodeClass.Object:
        item.ReferenceTypeId = ua.NodeId(ObjectIds.Organizes)
        item.TypeDefinition = ua.NodeId(ObjectIds.FolderType)
    else:
        item.ReferenceTypeId = ua.NodeId(ObjectIds.HasComponent)
        item.TypeDefinition = ua.NodeId(ObjectIds.BaseDataVariableType)
    attrs.DisplayName = ua.LocalizedText(str(nid.Identifier))
    item.NodeAttributes = attrs
    return item


_OLD_GCS = [0]  # collections of generation 1 or 2 so far (while measured)


async def _probe(lag_max_s: list[float], running: list[bool]) -> None:
    """The event loop's longest gap between two wake-ups of a 1-ms sleep, while running.

    lag_max_s: [wall time, wall time of the gaps without an old-generation GC, CPU time of
    the loop's thread in such a gap]. The CPU time is the work that held the loop, whatever
    else the two shared cores ran meanwhile (other processes stretch the wall time).
    """
    last, last_cpu = time.perf_counter(), time.thread_time()
    gcs = _OLD_GCS[0]
    while True:
        await asyncio.sleep(0.001)
        now, cpu = time.perf_counter(), time.thread_time()
        if running[0]:
            lag = now - last - 0.001
            lag_max_s[0] = max(lag_max_s[0], lag)
            if _OLD_GCS[0] == gcs:
                lag_max_s[1] = max(lag_max_s[1], lag)
                lag_max_s[2] = max(lag_max_s[2], cpu - last_cpu)
        last, last_cpu, gcs = now, cpu, _OLD_GCS[0]


@pytest.fixture(scope="module")
def bench(request: pytest.FixtureRequest) -> Iterator[_Bench]:
    size = Size.of_run(bool(request.config.getoption("benchmark_disable")))
    loop = asyncio.new_event_loop()
    if os.environ.get("BENCH_OPCUA_SLOW"):  # asyncio's debug mode: log callbacks over 20 ms
        loop.set_debug(True)
        loop.slow_callback_duration = 0.02
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    port = free_port()
    server, nids = asyncio.run_coroutine_threadsafe(_start_server(port, size.tags),
                                                    loop).result()
    share = size.tags // SESSIONS
    sessions = [_Session(f"opc.tcp://{HOST}:{port}",
                         [str(n.Identifier) for n in nids[k * share:(k + 1) * share]])
                for k in range(SESSIONS)]
    table = TagTable(tuple(str(n.Identifier) for n in nids))
    samples = SampleWriter(ValueWriter(server), dict(zip(table.ids, nids, strict=True)))
    b = _Bench(size, server, loop, sessions, nids, table, samples)
    try:
        ready = [s.ready() for s in sessions]
        assert sum(r["subscribed"] for r in ready) == share * SESSIONS
        b.counted = b.count()
        assert b.counted == share * SESSIONS  # every item's initial value
        yield b
    finally:
        for s in sessions:
            s.stop()
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(30)
        thaw_heap()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


async def _write_value_pass(b: _Bench, k: int, t: float) -> None:
    """Plain asyncua: one write_attribute_value per node (the baseline)."""
    stamp = datetime.fromtimestamp(t, UTC)
    now = datetime.now(UTC)
    server = b.server
    for i, nid in enumerate(b.nids):
        await server.write_attribute_value(nid, ua.DataValue(
            ua.Variant(i + 0.5 * k, ua.VariantType.Double), ua.StatusCode(StatusCodes.Good),
            SourceTimestamp=stamp, ServerTimestamp=now))


async def _writer_pass(b: _Bench, k: int, t: float) -> None:
    """The sink's path: a SampleBlock of every tag through SampleWriter.write."""
    rows = np.arange(b.size.tags, dtype=np.int32)
    block = SampleBlock.of_poll(b.table, t, rows, rows.astype(np.float64) + 0.5 * k,
                                np.full(b.size.tags, int(DataFlag.N), np.uint8))
    await b.samples.write(block, datetime.now(UTC))


async def _passes(b: _Bench, impl: str) -> None:
    """size.passes passes, at most one per publishing interval."""
    running = [impl == "writer"]
    probe = asyncio.create_task(_probe(b.lag_max_s, running))
    period = PUBLISH_MS / 1000
    next_t = time.monotonic()
    try:
        for _ in range(b.size.passes):
            b.k += 1
            await (_writer_pass if impl == "writer" else _write_value_pass)(b, b.k, time.time())
            next_t += period
            await asyncio.sleep(max(0.0, next_t - time.monotonic()))
    finally:
        probe.cancel()


def _round(b: _Bench, impl: str) -> float:
    """One round; its notifications/s (after checking that each write was delivered)."""
    target = b.counted + b.size.passes * len(b.sessions) * (b.size.tags // SESSIONS)
    t0 = time.perf_counter()
    b.run(_passes(b, impl))
    last_n, last_t = b.count(), time.perf_counter()
    while last_n < target:
        time.sleep(0.005)
        n = b.count()
        now = time.perf_counter()
        if n != last_n:
            last_n, last_t = n, now
        elif now - last_t > 5.0:
            break
    elapsed = last_t - t0
    time.sleep(3 * PUBLISH_MS / 1000)
    final = b.count()
    assert final == target, (impl, final - b.counted, target - b.counted)  # nothing lost
    n = final - b.counted
    b.counted = final
    _NOTIFIED[0] += n
    return n / elapsed


_RATES: dict[str, list[float]] = {}
_NOTIFIED = [0]  # notifications of the current case's rounds


@pytest.mark.timeout(900)
@pytest.mark.parametrize("impl", ["write_value", "writer"])
def test_notifications_per_s(benchmark: Any, bench: _Bench, impl: str) -> None:
    size = bench.size
    benchmark.group = (f"OPC UA: {size.passes} x {size.tags:,} values, {size.tags:,} monitored "
                       f"items over {SESSIONS} sessions")
    rates = _RATES.setdefault(impl, [])
    rates.clear()
    _NOTIFIED[0] = 0
    bench.lag_max_s[:] = [0.0, 0.0, 0.0]
    profile = os.environ.get("BENCH_OPCUA_PROFILE")  # a file: cProfile of the server's loop
    prof = cProfile.Profile() if profile else None
    if prof is not None:
        bench.loop.call_soon_threadsafe(prof.enable)  # the loop's thread only
    gc_max_s = [0.0]
    gc_start = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:  # the longest collection
        if phase == "start":
            gc_start[0] = time.perf_counter()
        else:
            gc_max_s[0] = max(gc_max_s[0], time.perf_counter() - gc_start[0])
            _OLD_GCS[0] += info["generation"] > 0

    gc.callbacks.append(on_gc)
    cpu0, ccpu0, wall0 = time.process_time(), bench.clients_cpu_s(), time.perf_counter()
    try:
        benchmark.pedantic(lambda: rates.append(_round(bench, impl)), rounds=size.rounds)
    finally:
        gc.callbacks.remove(on_gc)
    wall = time.perf_counter() - wall0
    if prof is not None:
        bench.loop.call_soon_threadsafe(prof.disable)
        time.sleep(0.1)
        prof.dump_stats(f"{profile}.{impl}")
    info: dict[str, Any] = {"notifications_per_s_min": round(min(rates)),
                            "notifications_per_s_median": round(statistics.median(rates)),
                            "server_cpu_pct": round(100 * (time.process_time() - cpu0) / wall),
                            # CPU of this process per notification: what the two shared
                            # cores' other load does not change (the rates it does)
                            "server_cpu_us_per_notification": round(
                                1e6 * (time.process_time() - cpu0) / _NOTIFIED[0], 1),
                            "clients_cpu_pct": round(100 * (bench.clients_cpu_s() - ccpu0) / wall),
                            "gc_pause_max_ms": round(1000 * gc_max_s[0], 1)}
    if impl == "writer":
        info["loop_lag_max_ms"] = round(1000 * bench.lag_max_s[0], 1)
        info["loop_lag_max_ms_without_gc"] = round(1000 * bench.lag_max_s[1], 1)
        info["loop_busy_max_ms_cpu_without_gc"] = round(1000 * bench.lag_max_s[2], 1)
        base = _RATES.get("write_value")
        if base:
            info["ratio_median_vs_write_value"] = round(
                statistics.median(rates) / statistics.median(base), 2)
    benchmark.extra_info.update(info)
    print(f"\n{impl}: {info}")
