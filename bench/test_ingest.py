"""Ingest throughput: points/s from Modbus TCP devices into the tag store.

Run with `make bench`. For 1, 10 and 100 devices, each measured in the same run:

* driver: the production drivers (`make_drivers`: drivers.base.create_drivers, one bus
  per endpoint; plain Modbus TCP goes through drivers/modbus_tcp.py, every block of a
  poll in flight at once) polling back to back (poll interval 0.1 ms, so every poll
  overruns), each emitted SampleBlock going into a compute.tagstore.TagStore the way
  server/runtime.py's `_ingest` feeds it (sinks left out);
* gateway: the same with every device behind one endpoint (one bus, one connection;
  the bus polls its devices one after another);
* pymodbus: the same Bus and poller on pymodbus's client (drivers.modbus.ModbusLink,
  the TCP path before drivers/modbus_tcp.py and still the RTU path);
* naive: one pymodbus AsyncModbusTcpClient reading every block of every device one after
  another, decoding with struct, a SampleBlock per device poll into the same ingest
  (so naive and driver differ in the Modbus client only).

Both read the same register blocks (drivers.codec.plan_reads) from the same simulator:
bench/fast_modbus_sim.py in a separate process, on free loopback ports (one per device;
every port serves every unit id, so the naive loop needs one connection). Each device
has 400 points in 7 reads: 150 float32 ABCD, 100 int16 ×0.1, 100 float32 CDAB (input
registers), 50 uint16 (input registers, every other register). The pymodbus server of
drivers/modbus_sim.py costs ~190 µs of CPU a request (≈ 0.4-0.6 core at 120 000
points/s, on the 2 cores the client needs too); this one ~35 µs.

A round ends when POINTS_PER_ROUND[devices] more points have been emitted; pytest-benchmark
times the round, and `extra_info` (also printed as a table at the end of the session)
holds points/s, CPU µs per point and CPU % of this process and of the simulator.
Between rounds, untimed, the tag store is drained and checked: every sample flagged N,
every value equal to the one the simulator serves (so a broken driver cannot look
fast), and as many samples stored as were counted.

Target (issue 12): ≥ 400 000 points/s with 100 devices on 2 cores, ≥ 4× naive (the table
printed at the end gives each implementation's ratio to naive, median / min).

With `--benchmark-disable` (make test) every case runs one short round, as a check.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from pymodbus.client import AsyncModbusTcpClient

from bench.fast_modbus_sim import RegisterBank, serve
from bench.simproc import SimProcess
from compute.tagstore import TagStore
from drivers.base import Driver, create_drivers
from drivers.bus import Bus
from drivers.codec import plan_reads
from drivers.config import ModbusTagConfig, ModbusTcpDeviceConfig, bus_key
from drivers.modbus import ModbusLink, ModbusPoller
from model.flags import DataFlag
from model.records import SampleBlock, TagTable

DEVICE_COUNTS = [1, 10, 100]
# driver: the production drivers (plain Modbus TCP: drivers/modbus_tcp.py); pymodbus: the
# same Bus and poller on pymodbus's client; naive: one pymodbus client, one request at a
# time; gateway: the production drivers with every device behind one endpoint (one bus,
# one connection, devices polled one after another, each poll's blocks pipelined)
IMPLS = ["driver", "gateway", "pymodbus", "naive"]
TARGET = 400_000  # points/s with 100 devices on 2 cores (issue 12), and ≥ 4× naive
TARGET_RATIO = 4.0
HOST = "127.0.0.1"
POLL_S = 1e-4  # far below the time a poll takes: every device polls back to back
TIMEOUT_S = 5.0  # a request's timeout: on a loaded 2-core machine, replies can lag
DEVICES_PER_ENDPOINT = 1  # devices sharing a (host, port), each with its own unit id
POINTS_PER_ROUND = {1: 60_000, 10: 100_000, 100: 200_000}
ROUNDS = 5
CHECK_POINTS = {1: 4_000, 10: 8_000, 100: 80_000}  # one round with --benchmark-disable
FC = {"holding": 3, "input": 4}


# --- the register map of one device ------------------------------------------------------

@dataclass(frozen=True)
class Run:
    """A run of same-typed points: `count` values from `first`, one every `stride` registers."""

    name: str
    function: str
    first: int
    type: str
    order: str
    scale: float
    count: int
    stride: int


RUNS = [
    Run("pv", "holding", 0, "float32", "ABCD", 1.0, 150, 2),  # process values: 3 reads
    Run("ai", "holding", 1000, "int16", "ABCD", 0.1, 100, 1),  # scaled analog inputs: 1
    Run("en", "input", 0, "float32", "CDAB", 1.0, 100, 2),  # energy / flow totals: 2
    Run("st", "input", 3000, "uint16", "ABCD", 1.0, 50, 2),  # status words: 1
]
TAGS_PER_DEVICE = sum(r.count for r in RUNS)
_WIRE = {("float32", "ABCD"): ">f4", ("float32", "CDAB"): ">f4", ("int16", "ABCD"): ">i2",
         ("uint16", "ABCD"): ">u2"}


@dataclass
class DeviceMap:
    """Tags of one simulated device, the registers served and the values they decode to."""

    unit: int
    tags: list[dict[str, Any]] = field(default_factory=list)
    expected: list[float] = field(default_factory=list)  # engineering value, tag by tag
    tables: list[tuple[int, int, int, str]] = field(default_factory=list)  # sim tables


def device_map(unit: int) -> DeviceMap:
    """Random but reproducible values; registers encoded with numpy, not drivers.codec."""
    rng = np.random.default_rng(unit)
    dev = DeviceMap(unit)
    for run in RUNS:
        if run.type == "float32":
            raw: npt.NDArray[Any] = rng.uniform(-1e5, 1e5, run.count).astype(np.float32)
        elif run.type == "int16":
            raw = rng.integers(-0x8000, 0x8000, run.count).astype(np.int16)
        else:
            raw = rng.integers(0, 0x10000, run.count).astype(np.uint16)
        words = raw.astype(_WIRE[run.type, run.order]).view(">u2").reshape(run.count, -1)
        if run.order == "CDAB":
            words = words[:, ::-1]
        regs = np.zeros(run.count * run.stride, ">u2")  # unused registers read as 0
        for k in range(words.shape[1]):
            regs[k::run.stride] = words[:, k]
        dev.tables.append((unit, FC[run.function], run.first, regs.tobytes().hex()))
        for i, r in enumerate(raw.tolist()):
            dev.tags.append({"id": f"u{unit}_{run.name}{i}", "register": run.first + i * run.stride,
                             "type": run.type, "order": run.order, "function": run.function,
                             "scale": run.scale})
            dev.expected.append(float(r) * run.scale + 0.0)  # what the driver computes
    return dev


MAPS = [device_map(unit) for unit in range(1, max(DEVICE_COUNTS) + 1)]


def device_configs(n: int, ports: Sequence[int], per_endpoint: int = DEVICES_PER_ENDPOINT,
                   ) -> list[ModbusTcpDeviceConfig]:
    return [ModbusTcpDeviceConfig.model_validate({
        "id": f"dev{m.unit}", "protocol": "modbus_tcp", "host": HOST,
        "port": ports[k // per_endpoint], "device_id": m.unit,
        "poll_interval_s": POLL_S, "timeout_s": TIMEOUT_S, "tags": m.tags})
        for k, m in enumerate(MAPS[:n])]


# --- the simulator process ----------------------------------------------------------------

@pytest.fixture(scope="module")
def sim() -> Iterator[SimProcess]:
    endpoints = math.ceil(len(MAPS) / DEVICES_PER_ENDPOINT)
    proc = SimProcess({"endpoints": endpoints, "tables": [t for m in MAPS for t in m.tables]})
    try:
        yield proc
    finally:
        proc.stop()
    assert proc.served.get("exceptions") == 0, proc.served


# --- what is measured ---------------------------------------------------------------------

def make_drivers(devices: Sequence[ModbusTcpDeviceConfig]) -> list[Driver]:
    """The production drivers of `devices` (one per endpoint); call in a running loop."""
    return create_drivers(devices)


def pymodbus_drivers(devices: Sequence[ModbusTcpDeviceConfig]) -> list[Driver]:
    """The production Bus and poller on pymodbus's client (the TCP path before
    drivers/modbus_tcp.py; still the RTU path): one bus per endpoint."""
    table = TagTable(tuple(t.id for d in devices for t in d.tags))
    buses: dict[str, list[ModbusTcpDeviceConfig]] = {}
    for dev in devices:
        buses.setdefault(bus_key(dev), []).append(dev)
    drivers: list[Driver] = []
    for devs in buses.values():
        link = ModbusLink(devs)
        drivers.append(Bus(link, [ModbusPoller(d, link) for d in devs], None, table))
    return drivers


_NAIVE_FORMAT = {"float32": (">f", 2), "int16": (">h", 1), "uint16": (">H", 1)}


async def naive_loop(devices: Sequence[ModbusTcpDeviceConfig], port: int,
                     emit: Callable[[SampleBlock], None]) -> None:
    """One client, every block of every device one after another, struct to decode.

    Each device's poll becomes one SampleBlock (one timestamp, as the tag store's rings
    want), so that the same ingest follows and the two differ in the Modbus client only.
    """
    client = AsyncModbusTcpClient(HOST, port=port, timeout=TIMEOUT_S, retries=0,
                                  reconnect_delay=0)
    if not await client.connect():
        raise ConnectionError(f"cannot connect to {HOST}:{port}")
    table = TagTable(tuple(t.id for d in devices for t in d.tags))
    plans = []
    for dev in devices:
        blocks = []
        for b in plan_reads(dev.tags, dev.max_gap):
            read = (client.read_holding_registers if b.function == "holding"
                    else client.read_input_registers)
            blocks.append((read, b.start, b.count, b.tags))
        plans.append((dev.device_id, table.rows([t.id for t, _ in
                                                  (x for b in blocks for x in b[3])]), blocks))
    try:
        while True:
            for unit, rows, blocks in plans:
                values: list[float] = []
                flags: list[int] = []
                for read, start, count, tags in blocks:
                    reply = await read(start, count=count, device_id=unit)
                    if reply.isError() or len(reply.registers) < count:
                        values += [math.nan] * len(tags)
                        flags += [int(DataFlag.B)] * len(tags)
                        continue
                    data = struct.pack(f">{count}H", *reply.registers)
                    for tag, off in tags:
                        value, flag = naive_value(tag, data, off)
                        values.append(value)
                        flags.append(flag)
                emit(SampleBlock.of_poll(table, time.time(), rows, np.array(values),
                                         np.array(flags, np.uint8)))
    finally:
        client.close()


def naive_value(tag: ModbusTagConfig, data: bytes, off: int) -> tuple[float, int]:
    fmt, n = _NAIVE_FORMAT[tag.type]
    raw = data[2 * off:2 * off + 2 * n]
    if tag.order == "CDAB":
        raw = raw[2:] + raw[:2]
    value = struct.unpack(fmt, raw)[0]
    if not math.isfinite(value):
        return value, int(DataFlag.D)
    return value * tag.scale + tag.offset, int(DataFlag.N)


class Ingest:
    """What Runtime._ingest does with a driver's blocks (minus the sinks), plus counting."""

    def __init__(self, store: TagStore) -> None:
        self.store = store
        self.points = 0  # samples stored (flag N or not; the store check tells)
        self.bad = 0  # samples flagged other than N
        self.clean_since = 0  # self.points at the last sample flagged other than N
        self.goal = math.inf
        self.reached: asyncio.Future[None] | None = None

    def __call__(self, block: SampleBlock) -> None:
        self.store.append_block(block)  # what Runtime._ingest does
        n = len(block)
        bad = int(np.count_nonzero(block.flags))
        self.points += n
        if bad:
            self.bad += bad
            self.clean_since = self.points
        if self.points >= self.goal and self.reached is not None and not self.reached.done():
            self.reached.set_result(None)


@dataclass
class Round:
    points: int
    wall_s: float
    cpu_s: float  # this process
    sim_cpu_s: float


class Bench:
    """`n` devices read by `impl` (one of IMPLS) into a fresh tag store."""

    def __init__(self, sim: SimProcess, n: int, impl: str, points_per_round: int) -> None:
        self.sim = sim
        self.devices = device_configs(n, sim.ports, n if impl == "gateway" else
                                      DEVICES_PER_ENDPOINT)
        tag_ids = [t.id for d in self.devices for t in d.tags]
        self.expected = np.array([v for m in MAPS[:n] for v in m.expected])
        per_tag = points_per_round / len(tag_ids)
        # Room for a round at four times the average poll rate of a device; checked below.
        capacity = int(min(4 * per_tag, points_per_round / TAGS_PER_DEVICE)) + 64
        self.store = TagStore(tag_ids, capacity, groups=[len(d.tags) for d in self.devices])
        self.ingest = Ingest(self.store)
        self.points_per_round = points_per_round
        self.impl = impl
        self.loop = asyncio.new_event_loop()
        self.tasks: list[asyncio.Task[None]] = []
        self.rounds: list[Round] = []
        self.stored = 0  # points taken from the store and checked
        self.lost_cancellations = 0
        self.drivers: list[Driver] = []
        self.loop.run_until_complete(self._start(impl))

    async def _start(self, impl: str) -> None:
        if impl != "naive":
            self.drivers = (pymodbus_drivers(self.devices) if impl == "pymodbus"
                            else make_drivers(self.devices))
            self.tasks = [asyncio.create_task(d.run(self.ingest)) for d in self.drivers]
        else:
            self.tasks = [asyncio.create_task(
                naive_loop(self.devices, self.sim.ports[0], self.ingest))]

    def warm_up(self) -> None:
        """Until every device is connected: 2 sweeps of all tags with no B/D sample."""
        target = 2 * len(self.expected)
        self._run_until(lambda: self.ingest.points - self.ingest.clean_since >= target)
        self.store.take(-math.inf, math.inf)
        self.overflowed = self.store.overflowed  # a device that connected first may overflow
        self.bad_after_warm_up = self.ingest.bad
        self.stored = self.ingest.points

    def round(self) -> None:
        """The timed part: run until `points_per_round` more points were emitted."""
        start_points = self.ingest.points
        cpu0, sim0, t0 = time.process_time(), self.sim.cpu_s(), time.perf_counter()
        self._run_until(None, start_points + self.points_per_round)
        wall = time.perf_counter() - t0
        self.rounds.append(Round(self.ingest.points - start_points, wall,
                                 time.process_time() - cpu0, self.sim.cpu_s() - sim0))

    def check(self) -> None:
        """Drain the store: every sample flagged N with the value the simulator serves."""
        assert self.ingest.bad == self.bad_after_warm_up, "samples flagged B/D"
        assert self.store.overflowed == self.overflowed, "a device ran far ahead of the rest"
        w = self.store.take(-math.inf, math.inf)
        held = np.arange(w.values.shape[1]) < w.counts[:, None]
        flags = w.flags[held]
        assert (flags == DataFlag.N).all(), np.unique(flags)
        want = np.broadcast_to(self.expected[:, None], w.values.shape)[held]
        got = w.values[held]
        wrong = np.flatnonzero(got != want)
        assert not wrong.size, (f"{wrong.size} values differ, "
                                f"e.g. {got[wrong[0]]} ≠ {want[wrong[0]]}")
        assert int(held.sum()) == self.ingest.points - self.stored
        self.stored = self.ingest.points

    def _run_until(self, done: Callable[[], bool] | None, goal: float = math.inf) -> None:
        async def wait() -> None:
            reached = self.loop.create_future()
            self.ingest.goal, self.ingest.reached = goal, reached
            try:
                async with asyncio.timeout(60):
                    while not reached.done():
                        finished, _ = await asyncio.wait(
                            [reached, *self.tasks], timeout=0.01 if done else None,
                            return_when=asyncio.FIRST_COMPLETED)
                        for task in self.tasks:
                            if task in finished:  # run() must never return
                                task.result()
                                raise AssertionError("ingest task returned")
                        if done is not None and done():
                            break
            finally:
                self.ingest.goal, self.ingest.reached = math.inf, None
        self.loop.run_until_complete(wait())

    def close(self) -> None:
        # Cancel until done: on Python 3.11, asyncio.wait_for (which pymodbus awaits each
        # reply with) drops a cancellation that races with the reply's arrival, and a
        # driver polling back to back loses that race often.
        pending = set(self.tasks)
        for _ in range(100):
            for task in pending:
                task.cancel()
            _, pending = self.loop.run_until_complete(asyncio.wait(pending, timeout=0.1))
            if not pending:
                break
        self.lost_cancellations = sum(t.cancelling() for t in self.tasks) - len(self.tasks)
        self.loop.close()
        assert not pending, "ingest tasks ignore cancellation"

    def summary(self) -> dict[str, Any]:
        pts = sum(r.points for r in self.rounds)
        wall = sum(r.wall_s for r in self.rounds)
        rates = [r.points / r.wall_s for r in self.rounds]
        requests = sum(s.requests for d in self.drivers for s in d.stats())
        return {
            "impl": self.impl, "devices": len(self.devices), "points_per_device": TAGS_PER_DEVICE,
            "reads_per_device_poll": len(plan_reads(self.devices[0].tags,
                                                    self.devices[0].max_gap)),
            "points": pts,
            "points_per_s_median": round(statistics.median(rates)),
            "points_per_s_min": round(min(rates)), "points_per_s_max": round(max(rates)),
            "cpu_us_per_point": round(1e6 * sum(r.cpu_s for r in self.rounds) / pts, 2),
            "cpu_pct": round(100 * sum(r.cpu_s for r in self.rounds) / wall),
            "sim_cpu_pct": round(100 * sum(r.sim_cpu_s for r in self.rounds) / wall),
            "driver_buses": len(self.drivers), "driver_requests": requests,
            "lost_cancellations": self.lost_cancellations,
        }


# --- the figures, at the end of the session ------------------------------------------------

class _Table:
    """A pytest plugin printing the driver and naive figures side by side."""

    def __init__(self) -> None:
        self.rows: dict[tuple[int, str], dict[str, Any]] = {}

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.rows:
            return
        tr = terminalreporter
        tr.section(f"ingest throughput, points/s into the tag store (target {TARGET:,} "
                   f"with 100 devices and {TARGET_RATIO:g}x naive)")
        tr.write_line(f"{'devices':>7} {'impl':>8} {'median':>8} {'min':>8} {'max':>8} "
                      f"{'CPU µs/pt':>9} {'CPU %':>5} {'sim CPU %':>9} "
                      f"{'x naive (median/min)':>20}")
        for (n, impl), r in sorted(self.rows.items()):
            base = self.rows.get((n, "naive"))
            ratio = "" if base is None else (
                f"{r['points_per_s_median'] / base['points_per_s_median']:.2f} / "
                f"{r['points_per_s_min'] / base['points_per_s_min']:.2f}")
            tr.write_line(f"{n:>7} {impl:>8} {r['points_per_s_median']:>8} "
                          f"{r['points_per_s_min']:>8} {r['points_per_s_max']:>8} "
                          f"{r['cpu_us_per_point']:>9.2f} {r['cpu_pct']:>5} "
                          f"{r['sim_cpu_pct']:>9} {ratio:>20}")


@pytest.fixture(scope="module")
def table(request: pytest.FixtureRequest) -> Iterator[_Table]:
    t = _Table()
    request.config.pluginmanager.register(t, "ingest-throughput-table")
    yield t


# --- the tests ----------------------------------------------------------------------------

@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("n", DEVICE_COUNTS)
def test_ingest(benchmark: Any, sim: SimProcess, table: _Table, n: int, impl: str) -> None:
    points = CHECK_POINTS[n] if benchmark.disabled else POINTS_PER_ROUND[n]
    benchmark.group = (f"ingest {n} device(s) x {TAGS_PER_DEVICE} points: "
                       f"{points} points per round")
    bench = Bench(sim, n, impl, points)
    try:
        bench.warm_up()
        benchmark.pedantic(bench.round, setup=bench.check,
                           rounds=1 if benchmark.disabled else ROUNDS)
        bench.check()
    finally:
        bench.close()
    info = bench.summary()
    benchmark.extra_info.update(info)
    if not benchmark.disabled:
        table.rows[n, impl] = info
    assert info["points"] >= points * len(bench.rounds)


def frame(tid: int, unit: int, pdu: bytes, protocol: int = 0) -> bytes:
    return struct.pack(">HHHB", tid, protocol, len(pdu) + 1, unit) + pdu


async def test_simulator_speaks_modbus_tcp() -> None:
    """The bytes on the wire: replies, exception replies, frames split and batched."""
    bank = RegisterBank([(1, 3, 10, bytes.fromhex("0001 0002 0003")),
                         (1, 4, 0, bytes.fromhex("1234"))])
    servers, [port] = await serve(bank, 1)
    reader, writer = await asyncio.open_connection(HOST, port)

    async def ask(*frames: bytes, split: int | None = None) -> list[bytes]:
        data = b"".join(frames)
        for part in ([data] if split is None else [data[:split], data[split:]]):
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(0.01)
        out = []
        for _ in frames:
            head = await reader.readexactly(6)
            out.append(head + await reader.readexactly(struct.unpack(">H", head[4:])[0]))
        return out

    try:
        ok = frame(7, 1, bytes.fromhex("03 000A 0002"))
        assert await ask(ok) == [bytes.fromhex("0007 0000 0007 01 03 04 0001 0002")]
        assert await ask(ok, frame(8, 1, bytes.fromhex("04 0000 0001")), split=9) == [
            bytes.fromhex("0007 0000 0007 01 03 04 0001 0002"),
            bytes.fromhex("0008 0000 0005 01 04 02 1234")]
        errors = {  # request PDU (unit) → exception function code and exception code
            ("03 000B 0003", 1): "83 02",  # runs past the table: illegal data address
            ("03 000A 0000", 1): "83 03",  # count 0: illegal data value
            ("03 000A 007E", 1): "83 03",  # count 126 > 125
            ("06 000A 0001", 1): "86 01",  # write single register: illegal function
            ("03 000A 0001", 9): "83 0B",  # unknown unit: gateway target failed to respond
        }
        for (pdu, unit), reply in errors.items():
            assert await ask(frame(1, unit, bytes.fromhex(pdu))) == [
                bytes.fromhex(f"0001 0000 0003 {unit:02X} {reply}")]
        assert (bank.requests, bank.exceptions) == (8, 5)
        writer.write(frame(2, 1, bytes.fromhex("03 000A 0001"), protocol=1))  # not Modbus
        assert await reader.read() == b""  # the server hung up
    finally:
        writer.close()
        for server in servers:
            server.close()
