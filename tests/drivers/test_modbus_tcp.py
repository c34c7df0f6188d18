"""The Modbus TCP fast path (drivers/modbus_tcp.py) against pymodbus and scripted servers."""

from __future__ import annotations

import asyncio
import contextlib
import math
import struct
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

import numpy as np
import pytest
from pydantic import ValidationError
from pymodbus.client import AsyncModbusTcpClient

from drivers.base import create_drivers
from drivers.bus import Bus
from drivers.codec import ArrayDecoder, BlockDecoder, plan_reads
from drivers.config import ModbusTagConfig, ModbusTcpDeviceConfig
from drivers.link import LinkDown
from drivers.modbus_sim import ModbusTcpSimulator
from drivers.modbus_tcp import BadReply, ModbusTcpLink, ModbusTcpPoller
from model.flags import DataFlag

DT = AsyncModbusTcpClient.DATATYPE
TYPES = {"int16": DT.INT16, "uint16": DT.UINT16, "int32": DT.INT32, "uint32": DT.UINT32,
         "float32": DT.FLOAT32, "float64": DT.FLOAT64}
ORDERS = ["ABCD", "CDAB", "BADC", "DCBA"]
# A worked value per type, exactly representable in it
VALUES = {"int16": -12345.0, "uint16": 54321.0, "int32": -123456789.0,
          "uint32": 3_000_000_000.0, "float32": 123.456, "float64": 600.25}
WIDTH = {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2, "float64": 4}


def pymodbus_value(registers: list[int], type_: str, order: str) -> float:
    """pymodbus's decoding; it knows word order (big/little) only, so the byte-swapped
    orders BADC / DCBA swap each register's bytes first."""
    if order in ("BADC", "DCBA"):
        registers = [((r & 0xFF) << 8) | (r >> 8) for r in registers]
    word: Literal["big", "little"] = "little" if order in ("CDAB", "DCBA") else "big"
    value = AsyncModbusTcpClient.convert_from_registers(registers, TYPES[type_], word)
    assert isinstance(value, int | float)
    return float(value)


def device(port: int, tags: list[dict[str, Any]], **kw: Any) -> ModbusTcpDeviceConfig:
    return ModbusTcpDeviceConfig.model_validate({
        "id": kw.pop("id_", "d1"), "protocol": "modbus_tcp", "host": "127.0.0.1",
        "port": port, "poll_interval_s": 0.05, "timeout_s": 0.3, "tags": tags, **kw})


def test_array_decoder_equals_pymodbus_for_every_type_and_order() -> None:
    """Random registers (NaN and inf patterns included) packed at odd offsets."""
    rng = np.random.default_rng(7)
    tags, layout = [], []
    off = 1
    for type_ in TYPES:
        for order in ORDERS:
            for k in range(40):
                tags.append(ModbusTagConfig.model_validate(
                    {"id": f"{type_}_{order}_{k}", "register": off, "type": type_,
                     "order": order}))
                layout.append((off, type_, order))
                off += WIDTH[type_] + (k % 2)  # gaps of 0 or 1 register
    regs = [int(r) for r in rng.integers(0, 0x10000, off + 1)]
    nan_at = next(i for i, (_, t, o) in enumerate(layout) if (t, o) == ("float32", "ABCD"))
    o = layout[nan_at][0]
    regs[o:o + 2] = [0x7FC0, 0x0000]  # a float32 ABCD NaN
    o = layout[nan_at + 1][0]
    regs[o:o + 2] = [0x7F80, 0x0000]  # +inf for the next one
    blocks = plan_reads(tags, max_gap=8)
    assert len(blocks) > 1
    pos = {t.id: i for i, t in enumerate(tags)}
    at = [[pos[t.id] for t, _ in b.tags] for b in blocks]
    decoder = ArrayDecoder(blocks, at, len(tags))
    data = [struct.pack(f">{b.count}H", *regs[b.start:b.start + b.count]) for b in blocks]
    got = decoder(data)
    want = [pymodbus_value(regs[o:o + WIDTH[t]], t, order) for o, t, order in layout]
    np.testing.assert_array_equal(got, np.array(want))  # NaN equals NaN here
    assert math.isnan(got[nan_at]) and got[nan_at + 1] == math.inf
    # and the struct decoder, block by block
    for b, where in zip(blocks, at, strict=True):
        assert BlockDecoder(b)(regs[b.start:b.start + b.count]) == pytest.approx(
            list(got[where]), nan_ok=True)
    # a block not read decodes as zeros (the poller flags it B)
    assert not decoder([None] * len(blocks)).any()


def test_array_decoder_bits() -> None:
    tags = [ModbusTagConfig.model_validate(t) for t in [
        {"id": "c0", "register": 0, "function": "coil"},
        {"id": "c9", "register": 9, "function": "coil"},
        {"id": "b0", "register": 5, "type": "uint16", "bit": 0},
        {"id": "b15", "register": 5, "type": "uint16", "bit": 15},
        {"id": "b8", "register": 5, "type": "int16", "bit": 8},
        {"id": "w", "register": 6, "type": "uint16"}]]
    blocks = plan_reads(tags, 8)
    pos = {t.id: i for i, t in enumerate(tags)}
    decoder = ArrayDecoder(blocks, [[pos[t.id] for t, _ in b.tags] for b in blocks],
                           len(tags))
    holding = next(i for i, b in enumerate(blocks) if b.function == "holding")
    replies: list[bytes | None] = [None, None]
    replies[holding] = bytes.fromhex("8001 BEEF")  # bits 15 and 0 set, bit 8 clear
    replies[1 - holding] = bytes([0b0000_0001, 0b0000_0010])  # coils 0 and 9 on
    assert list(decoder(replies)) == [1.0, 1.0, 1.0, 1.0, 0.0, 0xBEEF]


async def test_values_over_the_wire_equal_pymodbus(port: int) -> None:
    """Every type and word order served by the pymodbus simulator, read through the fast
    path and by pymodbus's own client with its convert_from_registers."""
    tags: list[dict[str, Any]] = []
    off = 0
    for type_ in TYPES:
        for order in ORDERS:
            tags.append({"id": f"{type_}_{order}", "register": off, "type": type_,
                         "order": order, "sim": {"value": VALUES[type_]}})
            off += WIDTH[type_]
    dev = device(port, tags, simulate=True)
    [bus] = create_drivers([dev])
    assert isinstance(bus, Bus) and isinstance(bus.link, ModbusTcpLink)
    async with running(ModbusTcpSimulator([dev], "UTC")):
        client = AsyncModbusTcpClient("127.0.0.1", port=port)
        assert await client.connect()
        rr = await client.read_holding_registers(0, count=off, device_id=1)
        client.close()
        assert not rr.isError()
        blocks: list[Any] = []
        task = asyncio.create_task(bus.run(blocks.append))
        async with asyncio.timeout(5):
            while len(blocks) < 2:
                await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    got = {s.tag: s for s in blocks[-1].samples()}
    o = 0
    for type_ in TYPES:
        for order in ORDERS:
            regs = list(rr.registers[o:o + WIDTH[type_]])
            o += WIDTH[type_]
            s = got[f"{type_}_{order}"]
            assert s.flag is DataFlag.N
            assert s.value == pymodbus_value(regs, type_, order)
            # the worked value itself (float32 123.456 as its nearest float32)
            want = float(np.float32(VALUES[type_])) if type_ == "float32" else VALUES[type_]
            assert s.value == want


# --- a scripted Modbus TCP server -----------------------------------------------------

Policy = Callable[[list[tuple[int, int, bytes]]], list[bytes]]


def reply_frame(tid: int, unit: int, pdu: bytes) -> bytes:
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu


def registers_reply(unit: int, pdu: bytes) -> bytes:
    """Register i holds i (FC 3) or 1000 + i (FC 4)."""
    fc, start, count = struct.unpack(">BHH", pdu)
    base = 0 if fc == 3 else 1000
    return bytes((fc, 2 * count)) + struct.pack(f">{count}H",
                                                *range(base + start, base + start + count))


class Scripted:
    """A Modbus TCP server whose replies a policy decides, batch by batch of requests."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.requests: list[tuple[int, int, bytes]] = []
        self.batches: list[int] = []
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self, port: int) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", port)

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in self.writers:
            w.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        buf = b""
        try:
            while data := await reader.read(65536):
                buf += data
                batch = []
                while len(buf) >= 7:
                    tid, _, length, unit = struct.unpack(">HHHB", buf[:7])
                    if len(buf) < 6 + length:
                        break
                    batch.append((tid, unit, buf[7:6 + length]))
                    buf = buf[6 + length:]
                if batch:
                    self.requests += batch
                    self.batches.append(len(batch))
                    out = self.policy(batch)
                    if out:
                        writer.write(b"".join(out))
        except ConnectionError:
            pass
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def running(server: Any, port: int | None = None) -> AsyncIterator[Any]:
    if port is None:
        await server.start()
    else:
        await server.start(port)
    try:
        yield server
    finally:
        await server.stop()


def in_order(batch: list[tuple[int, int, bytes]]) -> list[bytes]:
    return [reply_frame(tid, unit, registers_reply(unit, pdu)) for tid, unit, pdu in batch]


def reversed_order(batch: list[tuple[int, int, bytes]]) -> list[bytes]:
    return in_order(batch)[::-1]


BLOCK_TAGS = [{"id": f"t{k}", "register": 200 * k, "type": "uint16"} for k in range(5)]
BLOCK_TAGS += [{"id": "in7", "register": 7, "type": "uint16", "function": "input"}]


async def test_replies_out_of_order_matched_by_transaction_id(port: int) -> None:
    dev = device(port, BLOCK_TAGS)
    link = ModbusTcpLink([dev])
    poller = ModbusTcpPoller(dev, link)
    server = Scripted(reversed_order)
    async with running(server, port):
        await link.open()
        server.requests.clear()
        server.batches.clear()
        result = await poller.poll()
        await link.close()
    assert result.error is None
    assert list(result.values) == [0, 200, 400, 600, 800, 1007]
    assert (result.flags == DataFlag.N).all()
    # all six blocks went out in one write and were answered last first
    assert server.batches == [6]
    tids = [tid for tid, _, _ in server.requests]
    assert len(set(tids)) == 6
    # bytes counted exactly: 6 requests of 12 bytes, replies of 9 + 2·1 bytes each
    # plus the two probe reads (12 bytes out, 11 in each) made on connecting
    assert link.stats.bytes_out == 8 * 12
    assert link.stats.bytes_in == 8 * 11
    assert link.stats.requests == 8


async def test_window_limits_requests_in_flight(port: int) -> None:
    dev = device(port, BLOCK_TAGS, requests_in_flight=2)
    link = ModbusTcpLink([dev])
    poller = ModbusTcpPoller(dev, link)
    server = Scripted(in_order)
    async with running(server, port):
        await link.open()
        server.batches.clear()
        result = await poller.poll()
        await link.close()
    assert list(result.values) == [0, 200, 400, 600, 800, 1007]
    assert max(server.batches) <= 2 and sum(server.batches) == 6
    # devices sharing an endpoint: the smallest window of theirs
    other = device(port, BLOCK_TAGS, requests_in_flight=5, id_="d2", device_id=2)
    assert ModbusTcpLink([other, dev]).window == 2
    assert ModbusTcpLink([device(port, BLOCK_TAGS)]).window == 8  # the default
    with pytest.raises(ValidationError):
        device(port, BLOCK_TAGS, requests_in_flight=0)
    with pytest.raises(ValidationError):
        device(port, BLOCK_TAGS, requests_in_flight=33)


async def test_one_request_times_out_while_the_others_succeed(port: int) -> None:
    def drop_400(batch: list[tuple[int, int, bytes]]) -> list[bytes]:
        return [f for (_, _, pdu), f in zip(batch, in_order(batch), strict=True)
                if struct.unpack(">H", pdu[1:3])[0] != 400]

    dev = device(port, BLOCK_TAGS, retries=0)
    link = ModbusTcpLink([dev])
    poller = ModbusTcpPoller(dev, link)
    async with running(Scripted(drop_400), port):
        await link.open()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        result = await poller.poll()
        waited = loop.time() - t0
        # a late reply with an unknown transaction id is dropped, the link stays usable
        assert link.connected
        again = await poller.poll()
        await link.close()
    assert 0.29 < waited < 1.2  # one timeout (0.3 s), not one per block (5 × 0.3 s)
    assert result.error == "no reply reading holding 400..400 within 0.3 s"
    assert not result.silent  # the device answers: no backoff
    assert list(result.flags) == [0, 0, 3, 0, 0, 0]
    assert list(np.nan_to_num(result.values, nan=-1)) == [0, 200, -1, 600, 800, 1007]
    assert list(again.flags) == [0, 0, 3, 0, 0, 0]


async def test_all_silent_is_silent_and_half_open_connection_reopens(port: int) -> None:
    server = Scripted(lambda batch: [])
    dev = device(port, BLOCK_TAGS[:2], retries=0, requests_in_flight=1)
    link = ModbusTcpLink([dev])
    poller = ModbusTcpPoller(dev, link)
    async with running(server, port):
        await link.open()
        first = await poller.poll()
        assert first.silent and first.error == "no reply reading holding 0..0 within 0.3 s"
        assert link.connected
        await poller.poll()  # three requests without a byte back: taken for half open
        assert not link.connected
        await link.open()
        assert link.stats.connects == 2
        await link.close()


async def test_exception_and_short_replies(port: int) -> None:
    def policy(batch: list[tuple[int, int, bytes]]) -> list[bytes]:
        out = []
        for tid, unit, pdu in batch:
            start = struct.unpack(">H", pdu[1:3])[0]
            if start == 200:
                out.append(reply_frame(tid, unit, bytes((0x83, 0x02))))
            elif start == 400:
                out.append(reply_frame(tid, unit, bytes((0x83, 0x0B))))
            elif start == 600:  # asked for 1 register, got a byte count of 0
                out.append(reply_frame(tid, unit, bytes((0x03, 0x00))))
            elif start == 800:  # another unit answers
                out.append(reply_frame(tid, unit + 1, registers_reply(unit, pdu)))
            else:
                out.append(reply_frame(tid, unit, registers_reply(unit, pdu)))
        return out

    dev = device(port, BLOCK_TAGS, requests_in_flight=16)
    link = ModbusTcpLink([dev])
    poller = ModbusTcpPoller(dev, link)
    async with running(Scripted(policy), port):
        await link.open()
        result = await poller.poll()
        with pytest.raises(BadReply, match="GATEWAY_NO_RESPONSE"):
            await link.request(plan_reads(dev.tags, 8)[2], 1)
        await link.close()
    assert list(result.flags) == [0, 3, 3, 3, 3, 0]
    assert result.error == "exception reply reading holding 200..200: ILLEGAL_ADDRESS (2)"
    assert not result.silent
    assert result.values[0] == 0 and result.values[5] == 1007


async def test_connection_loss_fails_in_flight_and_reconnects(port: int) -> None:
    held: list[list[tuple[int, int, bytes]]] = []

    def hold(batch: list[tuple[int, int, bytes]]) -> list[bytes]:
        if len(batch) == 2 and batch[0][2] == batch[1][2]:  # the probe on connecting
            return in_order(batch)
        held.append(batch)
        return []

    dev = device(port, BLOCK_TAGS)
    link = ModbusTcpLink([dev])
    server = Scripted(hold)
    await server.start(port)
    await link.open()
    block = plan_reads(dev.tags, 8)[0]
    futures = [link.request(block, 1) for _ in range(3)]
    async with asyncio.timeout(2):
        while not held:
            await asyncio.sleep(0.01)
    await server.stop()  # closes the connection with three requests on it
    for f in futures:
        with pytest.raises(LinkDown, match=f"connection to 127.0.0.1:{port} lost"):
            await f
    assert not link.connected
    with pytest.raises(LinkDown, match="lost; cannot reconnect"):
        await link.open()  # at once, and the server is gone
    with pytest.raises(LinkDown, match="lost; cannot reconnect"):
        await link.open()  # backing off: no new attempt
    assert link.stats.errors == 3 + 1
    server.policy = in_order
    await server.start(port)
    link._backoff.next_at = 0.0  # skip the 0.5 s wait
    await link.open()
    assert await link.request(block, 1) == b"\x00\x00"
    assert link.stats.connects == 2
    await link.close()
    await server.stop()


async def test_server_answering_one_frame_per_segment_gets_one_at_a_time(port: int) -> None:
    """pymodbus's server leaves a second frame of a segment unread: the probe on
    connecting notices, and the link reconnects with one request in flight."""
    dev = device(port, [{"id": "a", "register": 0, "sim": {"value": 1.5}},
                        {"id": "b", "register": 100, "sim": {"value": 2.5}}], simulate=True)
    link = ModbusTcpLink([dev])
    poller = ModbusTcpPoller(dev, link)
    async with running(ModbusTcpSimulator([dev], "UTC")):
        await link.open()
        assert link.stats.connects == 1 and link._in_flight == 1
        for _ in range(3):
            result = await poller.poll()
            assert result.error is None and list(result.values) == [1.5, 2.5]
        await link.close()
    server = Scripted(in_order)
    async with running(server, port):
        await link.open()
        assert link._in_flight == 8
        await link.close()
