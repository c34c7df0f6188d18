"""Modbus TCP of our own: MBAP framing, several requests in flight, numpy decoding.

Why this is not pymodbus: pymodbus's client (3.x, TransactionManager.execute) holds one
lock per connection around every request, so a connection carries one request per round
trip; each reply becomes a ModbusPDU with a Python list of ints, and a request costs
about 60-90 µs of CPU. Against bench/fast_modbus_sim.py that capped the project near
its naive pymodbus loop (issue 12: 76-91k points/s against 66-76k). Modbus TCP itself
allows more: the MBAP transaction id matches replies to requests, so every block of a
poll goes out in one write and the replies are decoded straight from their bytes
(drivers.codec.ArrayDecoder). pymodbus stays where it is not the bottleneck: RTU and
RTU over TCP (drivers/modbus.py), the simulators, the probe, and as the reference the
tests compare this client against.
"""

from __future__ import annotations

import asyncio
import struct
from collections import deque
from collections.abc import Sequence
from typing import Generic, Protocol, TypeVar

import numpy as np
from pymodbus.constants import ExcCodes

from drivers.bus import DeviceStats, PollResult
from drivers.codec import BIT_FUNCTIONS, ArrayDecoder, Block, plan_reads, reply_bytes
from drivers.config import ModbusRtuDeviceConfig, ModbusTcpDeviceConfig, bus_key
from drivers.link import Backoff, BusStats, LinkDown
from model.errors import DriverError
from model.flags import DataFlag


class _Named(Protocol):
    name: str


# The configuration of the unit (TCP or RTU) and the link (this module's or pymodbus').
DeviceT = TypeVar("DeviceT", bound=ModbusTcpDeviceConfig | ModbusRtuDeviceConfig)
LinkT = TypeVar("LinkT", bound=_Named)

FUNCTION_CODES = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}
MBAP_BYTES = 6  # transaction id, protocol id, length (the unit id is counted in length)
MAX_FRAME_LENGTH = 254  # MBAP length: unit id + PDU of at most 253 bytes
# Consecutive requests timed out with no byte received in between after which the
# connection is taken for dead (half-open TCP) and reopened; pymodbus closes after 3 too.
UNANSWERED_BEFORE_RECONNECT = 3

_REQUEST = struct.Struct(">HHHBBHH")  # MBAP, then function code, start, count
_HEADER = struct.Struct(">HHH")


class BadReply(DriverError):
    """The device answered, but not with the registers asked for."""


class Silent(DriverError):
    """The device did not answer in time."""


class _Request:
    """One read on the wire (or waiting for a window slot)."""

    __slots__ = ("count", "fc", "future", "label", "size", "start", "tid", "timeout_s",
                 "timer", "unit")

    def __init__(self, future: asyncio.Future[bytes], unit: int, block: Block,
                 timeout_s: float) -> None:
        self.future = future
        self.unit = unit
        self.fc = FUNCTION_CODES[block.function]
        self.start = block.start
        self.count = block.count
        self.size = reply_bytes(block)
        self.label = block.label
        self.timeout_s = timeout_s
        self.tid = 0
        self.timer: asyncio.TimerHandle | None = None


class _Protocol(asyncio.Protocol):
    """The connection's receiving side: cuts MBAP frames and hands them to the link."""

    def __init__(self, link: ModbusTcpLink) -> None:
        self.link = link
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        link = self.link
        # Every byte counts, also late replies to timed-out requests: the real load.
        link.stats.bytes_in += len(data)
        link._unanswered = 0
        buf = self.buf + data if self.buf else data
        pos = 0
        end = len(buf)
        while end - pos > MBAP_BYTES:
            tid, protocol, length = _HEADER.unpack_from(buf, pos)
            if protocol != 0 or not 2 <= length <= MAX_FRAME_LENGTH:
                self.buf = b""
                link._framing_lost(buf[pos:pos + 16])
                return
            stop = pos + MBAP_BYTES + length
            if stop > end:
                break
            link._reply(tid, buf[pos + MBAP_BYTES:stop])
            pos = stop
        self.buf = buf[pos:] if pos else buf

    def connection_lost(self, exc: Exception | None) -> None:
        self.link._lost(self, exc)


class ModbusTcpLink:
    """One Modbus TCP connection shared by the devices of an endpoint, with up to
    `requests_in_flight` requests on the wire, replies matched by transaction id.

    Same contract as drivers.modbus.ModbusLink: open() raises LinkDown while it cannot
    connect or waits to retry (a lost connection is retried at once, then backed off);
    a request raises LinkDown when the connection is lost, Silent on its timeout,
    BadReply for an exception reply or one that does not fit the request.
    """

    def __init__(self, devices: Sequence[ModbusTcpDeviceConfig]) -> None:
        first = devices[0]
        self.name = bus_key(first)
        self.host, self.port = first.host, first.port
        self.timeout_s = max(d.timeout_s for d in devices)
        self.window = min(d.requests_in_flight for d in devices)
        self._in_flight = self.window  # what this connection's server takes (see open())
        self._probe = (plan_reads(first.tags, first.max_gap)[0], first.device_id)
        self.stats = BusStats(self.name)
        self._backoff = Backoff()
        self._error = ""
        self._was_up = False
        self._protocol: _Protocol | None = None
        self._pending: dict[int, _Request] = {}  # on the wire, by transaction id
        self._queue: deque[_Request] = deque()  # waiting for a window slot
        self._out: list[bytes] = []  # frames to write at the end of this loop iteration
        self._tid = 0
        self._unanswered = 0

    @property
    def connected(self) -> bool:
        """True while the TCP connection is up."""
        return self._protocol is not None

    async def open(self) -> None:
        """Connect if not connected; raises LinkDown while that fails or backoff waits."""
        if self._protocol is not None:
            return
        loop = asyncio.get_running_loop()
        lost = self._was_up
        if lost:  # lost since the last request: reconnect at once, then back off
            self._was_up = False
            self.stats.connected = False
            self._backoff.next_at = 0.0
        if loop.time() < self._backoff.next_at:
            raise LinkDown(self._error or "waiting to reconnect")
        try:
            await self._connect()
            if self.window == 1 or await self._pipelines():
                self._in_flight = self.window
            else:
                # It answered one of two requests sent together: a server that handles one
                # frame per TCP segment (pymodbus's own server does; so may old gateways).
                # Its buffer holds the other one now: start afresh, one request at a time.
                self._drop(f"connection to {self.name} reopened")
                await self._connect()
                self._in_flight = 1
        except (OSError, TimeoutError, LinkDown) as exc:
            self._drop(f"cannot connect to {self.name}")
            self.stats.errors += 1
            self._backoff.failed(loop.time())
            self._error = (f"connection to {self.name} lost; cannot reconnect" if lost
                           else f"cannot connect to {self.name}")
            raise LinkDown(self._error) from exc
        self._unanswered = 0
        self.stats.connects += 1
        self.stats.connected = self._was_up = True

    async def _connect(self) -> None:
        protocol = _Protocol(self)
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.timeout_s):
            await loop.create_connection(lambda: protocol, self.host, self.port)
        self._protocol = protocol

    async def _pipelines(self) -> bool:
        """Whether the server answers two requests written together (the first device's
        first block, read twice). No reply at all counts as no: one request at a time is
        safe with any server, and the next connection asks again."""
        block, unit = self._probe
        self._in_flight = 2
        first = self.request(block, unit)
        second = self.request(block, unit)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        try:
            await first
        except (Silent, BadReply) as exc:
            if isinstance(exc, Silent):
                self._abandon(second)
                return False
        rtt_s = loop.time() - t0
        # A server that pipelines sends the second reply right after the first.
        await asyncio.wait([second], timeout=max(0.05, 4 * rtt_s))
        if not second.done():
            self._abandon(second)
            return False
        if not second.cancelled():
            second.exception()  # retrieved: a bad reply here is only the probe's
        return True

    def _abandon(self, future: asyncio.Future[bytes]) -> None:
        """Forget a request (its reply, if any comes, is dropped as unknown)."""
        for tid, req in list(self._pending.items()):
            if req.future is future:
                del self._pending[tid]
                if req.timer is not None:
                    req.timer.cancel()
        future.cancel()

    async def close(self) -> None:
        """Close the connection (a later poll reconnects); requests on it fail LinkDown."""
        self._drop(f"connection to {self.name} closed")
        self._was_up = False
        self.stats.connected = False
        await asyncio.sleep(0)

    def reset_backoff(self) -> None:
        """Devices answer: a later loss reconnects quickly."""
        self._backoff.reset()

    def request(self, block: Block, unit: int, timeout_s: float | None = None,
                ) -> asyncio.Future[bytes]:
        """Send a read of `block` to `unit` (now, or when a window slot frees); the future
        gets the reply's data bytes (exactly reply_bytes(block) of them)."""
        if self._protocol is None:
            self.stats.errors += 1
            raise LinkDown(f"connection to {self.name} lost reading {block.label}")
        req = _Request(asyncio.get_running_loop().create_future(), unit, block,
                       self.timeout_s if timeout_s is None else timeout_s)
        if len(self._pending) < self._in_flight:
            self._send(req)
        else:
            self._queue.append(req)
        return req.future

    def _send(self, req: _Request) -> None:
        tid = self._tid
        while True:  # the next transaction id not on the wire (0 is skipped: 1..65535)
            tid = tid % 0xFFFF + 1
            if tid not in self._pending:
                break
        self._tid = tid
        req.tid = tid
        frame = _REQUEST.pack(tid, 0, 6, req.unit, req.fc, req.start, req.count)
        self._pending[tid] = req
        loop = asyncio.get_running_loop()
        req.timer = loop.call_later(req.timeout_s, self._expire, req)
        if not self._out:  # one write (one system call) for every frame of this iteration
            loop.call_soon(self._flush)
        self._out.append(frame)
        self.stats.requests += 1

    def _flush(self) -> None:
        out, self._out = self._out, []
        protocol = self._protocol
        if protocol is None or protocol.transport is None or not out:
            return
        data = b"".join(out)
        protocol.transport.write(data)
        self.stats.bytes_out += len(data)

    def _done(self, req: _Request) -> None:
        """`req` left the wire: free its slot for a waiting request."""
        if req.timer is not None:
            req.timer.cancel()
        while self._queue and len(self._pending) < self._in_flight:
            nxt = self._queue.popleft()
            if not nxt.future.done():  # its poll was cancelled meanwhile: drop it
                self._send(nxt)

    def _fail(self, req: _Request, exc: Exception) -> None:
        if not req.future.done():  # not one its poll gave up on (cancelled)
            self.stats.errors += 1
            req.future.set_exception(exc)

    def _expire(self, req: _Request) -> None:
        if self._pending.get(req.tid) is not req:
            return
        del self._pending[req.tid]
        req.timer = None
        self._fail(req, Silent(f"no reply reading {req.label} within {req.timeout_s:g} s"))
        self._unanswered += 1
        if self._unanswered >= UNANSWERED_BEFORE_RECONNECT:
            # Nothing at all came back for a while: the connection may be half open
            # (gateway rebooted, cable cut). Reopen it; the device is still only silent.
            self._drop(f"connection to {self.name} dropped after "
                       f"{self._unanswered} requests without a reply")
        self._done(req)

    def _reply(self, tid: int, frame: bytes) -> None:
        """A complete frame after its MBAP header (unit id, then the PDU)."""
        req = self._pending.pop(tid, None)
        if req is None:  # a late reply to a request that timed out, or garbage
            return
        try:
            data = self._check(req, frame)
        except BadReply as exc:
            self._fail(req, exc)
        else:
            if not req.future.done():
                req.future.set_result(data)
        self._done(req)

    @staticmethod
    def _check(req: _Request, frame: bytes) -> bytes:
        unit, fc = frame[0], frame[1]  # the MBAP length is at least 2
        if unit != req.unit:
            raise BadReply(f"reply from unit {unit} reading {req.label} of unit {req.unit}")
        if fc == req.fc | 0x80 and len(frame) >= 3:
            code = frame[2]
            try:
                name = ExcCodes(code).name
            except ValueError:
                name = "unknown"
            raise BadReply(f"exception reply reading {req.label}: {name} ({code})")
        if fc != req.fc or len(frame) < 3 or len(frame) != 3 + frame[2]:
            raise BadReply(f"malformed reply reading {req.label}: {frame[:16].hex(' ')}")
        n = frame[2]
        if n < req.size:
            got = min(8 * n, req.count) if req.fc in (1, 2) else n // 2
            raise BadReply(f"short reply reading {req.label}: {got} of {req.count} values")
        return frame[3:3 + req.size]

    def _framing_lost(self, head: bytes) -> None:
        self._drop(f"connection to {self.name} lost: not a Modbus TCP frame: {head.hex(' ')}")

    def _lost(self, protocol: _Protocol, exc: Exception | None) -> None:
        if protocol is self._protocol:
            self._drop(f"connection to {self.name} lost" + (f": {exc}" if exc else ""))

    def _drop(self, why: str) -> None:
        """Close the connection; every request on it or waiting fails LinkDown."""
        protocol, self._protocol = self._protocol, None
        self.stats.connected = False
        self._out = []
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()
        pending = [*self._pending.values(), *self._queue]
        self._pending.clear()
        self._queue.clear()
        for req in pending:
            if req.timer is not None:
                req.timer.cancel()
            self._fail(req, LinkDown(f"{why} reading {req.label}"))


class ModbusUnit(Generic[DeviceT, LinkT]):
    """What every Modbus poller knows of its unit: the device, its link, the blocks it is
    read in and where each block's tags go in the poll's arrays (tag_ids() order)."""

    def __init__(self, device: DeviceT, link: LinkT) -> None:
        self.device: DeviceT = device
        self.device_id = device.id
        self.poll_interval_s = device.poll_interval_s
        self.link = link
        self.where = f"device {device.id} ({link.name} unit {device.device_id})"
        self.stats = DeviceStats(device=device.id)
        self._blocks = plan_reads(device.tags, device.max_gap)
        self._tags = [t.id for t in device.tags]
        pos = {t: i for i, t in enumerate(self._tags)}
        self._at = [np.array([pos[t.id] for t, _ in b.tags], np.intp) for b in self._blocks]

    def tag_ids(self) -> list[str]:
        """Every tag the device emits."""
        return self._tags


class ModbusTcpPoller(ModbusUnit[ModbusTcpDeviceConfig, "ModbusTcpLink"]):
    """Reads the planned blocks of one Modbus TCP unit, all of them in flight at once."""

    def __init__(self, device: ModbusTcpDeviceConfig, link: ModbusTcpLink) -> None:
        super().__init__(device, link)
        self._decode = ArrayDecoder(self._blocks, self._at, len(self._tags))
        scale = np.array([t.scale for t in device.tags])
        offset = np.array([t.offset for t in device.tags])
        self._scale = None if (scale == 1.0).all() else scale
        self._offset = None if (offset == 0.0).all() else offset
        self._bits = all(b.function in BIT_FUNCTIONS for b in self._blocks)

    async def poll(self) -> PollResult:
        """Read every block once (pipelined); B readings for the blocks not read."""
        loop = asyncio.get_running_loop()
        link, unit = self.link, self.device.device_id
        sent = loop.time()
        n = len(self._blocks)
        replies: list[bytes | None] = [None] * n
        errors: list[DriverError | None] = [None] * n
        todo = list(range(n))
        # Repeats of blocks without a reply while the unit is online (as ModbusPoller).
        attempts = 1 + (self.device.retries if self.stats.online else 0)
        for attempt in range(attempts):
            futures: list[tuple[int, asyncio.Future[bytes]]] = []
            try:
                for i in todo:
                    futures.append((i, link.request(self._blocks[i], unit)))
                    self.stats.requests += 1
            except LinkDown as exc:
                for i in todo[len(futures):]:
                    errors[i] = exc
            try:
                for i, fut in futures:
                    try:
                        replies[i] = await fut
                        errors[i] = None
                    except (Silent, BadReply, LinkDown) as exc:
                        errors[i] = exc
            finally:  # cancelled: the link drops replies nobody waits for
                for _, fut in futures:
                    if not fut.done():
                        fut.cancel()
            todo = [i for i in todo if isinstance(errors[i], Silent)]
            if not todo:
                break
            if attempt + 1 < attempts:
                self.stats.errors += len(todo)
        failed = [i for i in range(n) if errors[i] is not None]
        raw = self._decode(replies)
        values = raw if self._scale is None else raw * self._scale
        if self._offset is not None:
            values = values + self._offset
        if self._bits:
            flags = np.zeros(len(self._tags), np.uint8)
        else:
            ok = np.isfinite(raw)
            # A value the codec cannot make a number of (NaN, inf) is an instrument fault.
            flags = np.where(ok, np.uint8(DataFlag.N), np.uint8(DataFlag.D))
            if not ok.all():
                values = np.where(ok, values, raw)
        if not failed:
            self.stats.last_latency_s = loop.time() - sent
            return PollResult(values, flags)
        self.stats.errors += len(failed)
        for i in failed:
            values[self._at[i]] = np.nan
            flags[self._at[i]] = DataFlag.B
        if len(failed) < n:
            self.stats.last_latency_s = loop.time() - sent
        first = errors[failed[0]]
        # No reply at all: the unit is silent (the bus backs off from it).
        silent = len(failed) == n and all(isinstance(e, Silent) for e in errors)
        return PollResult(values, flags, str(first), silent)

