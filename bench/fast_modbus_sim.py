"""A small, fast Modbus TCP server for the ingest benchmark (bench/test_ingest.py).

It speaks real Modbus TCP: MBAP header, read holding registers (FC 3) and read input
registers (FC 4), exception replies (illegal function 01, illegal data address 02,
illegal data value 03, gateway target failed to respond 0B for an unknown unit id).
The register tables are static, so every reply PDU is built once and cached; a request
costs a dict look-up and one write. That keeps the simulator far below the client's
cost per request (pymodbus's own server, which drivers/modbus_sim.py uses, is not; see
the module docstring of bench/test_ingest.py).

Every listening port serves every unit id (like a gateway), so a client may reach any
simulated device through any port.

Run as a process:  python bench/fast_modbus_sim.py  (or python -m bench.fast_modbus_sim)
  stdin, first line: JSON {"endpoints": <number of ports>,
                           "tables": [[unit, function code, start, "<hex of registers>"], …]}
  stdout, one line once listening: JSON {"ports": [port, …]}
  then serves until stdin reaches end of file (the parent closed it or died) or SIGTERM.
  On exit it prints {"requests": n, "exceptions": n} to stdout.
"""

from __future__ import annotations

import asyncio
import json
import signal
import struct
import sys
import threading
from collections.abc import Iterable
from typing import Any

MAX_READ = 125
READ_HOLDING = 3
READ_INPUT = 4
ILLEGAL_FUNCTION = 0x01
ILLEGAL_DATA_ADDRESS = 0x02
ILLEGAL_DATA_VALUE = 0x03
GATEWAY_TARGET_FAILED = 0x0B

_CACHE_MAX = 100_000
_MBAP = struct.Struct(">HHHB")  # transaction id, protocol id (0), length, unit id
_READ = struct.Struct(">BHH")  # function code, start address, register count


class RegisterBank:
    """Static register tables: (unit, function code) → contiguous ranges of registers."""

    def __init__(self, tables: Iterable[tuple[int, int, int, bytes]]) -> None:
        # (unit, fc) → [(start, big-endian register bytes)]
        self._ranges: dict[tuple[int, int], list[tuple[int, bytes]]] = {}
        for unit, fc, start, data in tables:
            if fc not in (READ_HOLDING, READ_INPUT) or len(data) % 2:
                raise ValueError(f"bad table for unit {unit} function {fc}")
            if start < 0 or start + len(data) // 2 > 0x10000:
                raise ValueError(f"table of unit {unit} runs past register 65535")
            self._ranges.setdefault((unit, fc), []).append((start, bytes(data)))
        self._units = {unit for unit, _ in self._ranges}
        # (unit, request PDU) → reply after the MBAP transaction and protocol ids
        self._cache: dict[tuple[int, bytes], bytes] = {}
        self.requests = 0
        self.exceptions = 0

    def reply(self, unit: int, pdu: bytes) -> bytes:
        """Reply frame after the transaction id: protocol id, length, unit, PDU."""
        self.requests += 1
        key = (unit, pdu)
        cached = self._cache.get(key)
        if cached is None:
            if len(self._cache) >= _CACHE_MAX:  # a client scanning addresses: start over
                self._cache.clear()
            cached = self._cache[key] = self._answer(unit, pdu)
        if cached[5] & 0x80:  # function code of the reply
            self.exceptions += 1
        return cached

    def _answer(self, unit: int, pdu: bytes) -> bytes:
        body = self._read(unit, pdu)
        return _MBAP.pack(0, 0, len(body) + 1, unit)[2:] + body

    def _read(self, unit: int, pdu: bytes) -> bytes:
        fc = pdu[0]
        if fc not in (READ_HOLDING, READ_INPUT):
            return bytes((fc | 0x80, ILLEGAL_FUNCTION))
        if len(pdu) != _READ.size:
            return bytes((fc | 0x80, ILLEGAL_DATA_VALUE))
        _, start, count = _READ.unpack(pdu)
        if not 1 <= count <= MAX_READ:
            return bytes((fc | 0x80, ILLEGAL_DATA_VALUE))
        if unit not in self._units:
            return bytes((fc | 0x80, GATEWAY_TARGET_FAILED))
        for first, data in self._ranges.get((unit, fc), ()):
            if first <= start and start + count <= first + len(data) // 2:
                off = 2 * (start - first)
                return bytes((fc, 2 * count)) + data[off:off + 2 * count]
        return bytes((fc | 0x80, ILLEGAL_DATA_ADDRESS))


class _Connection(asyncio.Protocol):
    """One client connection: parses MBAP frames, answers each in arrival order."""

    def __init__(self, bank: RegisterBank) -> None:
        self._bank = bank
        self._buf = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        buf = self._buf + data if self._buf else data
        out: list[bytes] = []
        pos = 0
        while len(buf) - pos >= 7:
            _, protocol, length, unit = _MBAP.unpack_from(buf, pos)
            if protocol != 0 or not 2 <= length <= 254:  # not Modbus: drop the client
                self._transport.close()
                self._buf = b""
                return
            end = pos + 6 + length
            if end > len(buf):
                break
            out.append(buf[pos:pos + 2])  # transaction id, echoed
            out.append(self._bank.reply(unit, buf[pos + 7:end]))
            pos = end
        self._buf = buf[pos:]
        if out:
            self._transport.write(b"".join(out))


async def serve(bank: RegisterBank, endpoints: int, host: str = "127.0.0.1",
                ports: list[int] | None = None) -> tuple[list[asyncio.Server], list[int]]:
    """Listen on `endpoints` ports (free ones unless `ports` names them)."""
    loop = asyncio.get_running_loop()
    servers: list[asyncio.Server] = []
    bound: list[int] = []
    for i in range(endpoints):
        server = await loop.create_server(lambda: _Connection(bank), host,
                                          ports[i] if ports else 0, backlog=1024)
        servers.append(server)
        bound.append(int(server.sockets[0].getsockname()[1]))
    return servers, bound


def _bank_from_spec(spec: dict[str, Any]) -> RegisterBank:
    return RegisterBank((int(u), int(fc), int(start), bytes.fromhex(data))
                        for u, fc, start, data in spec["tables"])


async def _main() -> None:
    spec = json.loads(sys.stdin.readline())
    bank = _bank_from_spec(spec)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def wait_for_eof() -> None:  # the parent closing stdin (or dying) stops the simulator
        sys.stdin.read()
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=wait_for_eof, daemon=True).start()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    servers, ports = await serve(bank, int(spec["endpoints"]))
    print(json.dumps({"ports": ports}), flush=True)
    await stop.wait()
    for server in servers:
        server.close()
    print(json.dumps({"requests": bank.requests, "exceptions": bank.exceptions}), flush=True)


if __name__ == "__main__":
    asyncio.run(_main())
