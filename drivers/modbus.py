"""Modbus TCP, RTU over serial and RTU over a TCP gateway: one client per bus.

Plain Modbus TCP uses drivers.modbus_tcp (several requests in flight, numpy decoding; its
docstring says why it is not pymodbus); RTU and RTU over TCP use pymodbus (ModbusLink,
ModbusPoller), as does the probe.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence

import numpy as np
from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import ModbusException, ModbusIOException
from pymodbus.pdu import ModbusPDU

from drivers.bus import Bus, OnEvent, PollResult, flagged
from drivers.codec import BIT_FUNCTIONS, Block, BlockDecoder
from drivers.config import ModbusRtuDeviceConfig, ModbusTcpDeviceConfig, SerialLinkConfig, bus_key
from drivers.link import Backoff, BusStats, LinkDown
from drivers.modbus_tcp import ModbusTcpLink, ModbusTcpPoller, ModbusUnit
from model.errors import DriverError
from model.flags import DataFlag
from model.records import TagTable

ModbusDevice = ModbusTcpDeviceConfig | ModbusRtuDeviceConfig
RTU_DEFAULT_BAUDRATE = 9600
# What pymodbus says when it closes the connection itself after unanswered requests
# (pymodbus/transaction/transaction.py)
_GAVE_UP = "CLOSING CONNECTION"
MBAP_HEADER_BYTES = 7  # Modbus TCP: transaction id, protocol id, length, unit id
RTU_OVERHEAD_BYTES = 3  # Modbus RTU: address byte + CRC-16


def _data_bytes(pdu: ModbusPDU) -> int:
    """Bytes after the function code of a reply, from its decoded values.

    Not pdu.encode(): re-encoding a 125-register reply costs 18.5 µs against 0.07 µs for
    this, on every reply of the ingest path.
    """
    if pdu.registers:  # FC 3 / 4: byte count, then 2 bytes a register
        return 1 + 2 * len(pdu.registers)
    if pdu.bits:  # FC 1 / 2: byte count, then the bits packed 8 a byte
        return 1 + (len(pdu.bits) + 7) // 8
    return len(pdu.encode())  # exception replies and the rest: rare


class _BadReply(DriverError):
    """The device answered, but not with the registers asked for."""


class _Silent(DriverError):
    """The device did not answer in time."""


class ModbusLink:
    """One pymodbus client (TCP socket, serial port or TCP gateway) shared by a bus's devices."""

    def __init__(self, devices: Sequence[ModbusDevice]) -> None:
        first = devices[0]
        self.name = bus_key(first)
        timeout = max(d.timeout_s for d in devices)
        # reconnect_delay=0: pymodbus must not reconnect on its own, the bus paces it.
        # retries=0: a dead device costs one timeout per poll, not four.
        name = f"modbus {self.name}"
        # pymodbus hides the socket: bytes are counted through its trace hooks (see _sent).
        self.client: AsyncModbusTcpClient | AsyncModbusSerialClient
        if isinstance(first, ModbusTcpDeviceConfig):
            self.client = AsyncModbusTcpClient(first.host, port=first.port, name=name,
                                               timeout=timeout, retries=0, reconnect_delay=0,
                                               trace_packet=self._sent,
                                               trace_pdu=self._received)
            self._frame_overhead = MBAP_HEADER_BYTES
        elif isinstance(first.link, SerialLinkConfig):
            s = first.link
            self.client = AsyncModbusSerialClient(
                s.serial, framer=FramerType.RTU, baudrate=s.baudrate or RTU_DEFAULT_BAUDRATE,
                parity=s.parity, bytesize=s.bytesize, stopbits=s.stopbits, name=name,
                timeout=timeout, retries=0, reconnect_delay=0, trace_packet=self._sent,
                trace_pdu=self._received)
            self._frame_overhead = RTU_OVERHEAD_BYTES
        else:
            self.client = AsyncModbusTcpClient(first.link.host, port=first.link.port,
                                               framer=FramerType.RTU, name=name,
                                               timeout=timeout, retries=0, reconnect_delay=0,
                                               trace_packet=self._sent,
                                               trace_pdu=self._received)
            self._frame_overhead = RTU_OVERHEAD_BYTES
        self.timeout_s = timeout
        self.stats = BusStats(self.name)
        self._backoff = Backoff()
        self._error = ""
        self._was_up = False

    def _sent(self, sending: bool, data: bytes) -> bytes:
        """pymodbus's packet trace: the exact bytes of every request frame it writes.

        Received packets are not counted here: pymodbus hands this hook its whole receive
        buffer each time data arrives, so a reply split over two reads would count twice.
        """
        if sending:
            self.stats.bytes_out += len(data)
        return data

    def _received(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        """pymodbus's PDU trace: each decoded reply counts as the frame it came in.

        Header (MBAP, or address) + function code + data (+ CRC), re-encoded from the PDU:
        exact for every reply frame, but bytes no frame took (noise, a cut-off reply) are
        not seen by pymodbus's hooks, so not counted.
        """
        if not sending:
            self.stats.bytes_in += self._frame_overhead + 1 + _data_bytes(pdu)
        return pdu

    async def open(self) -> None:
        """Connect if not connected; raises LinkDown while that fails or backoff waits."""
        if self.client.connected:
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
            ok = await self.client.connect()
        except Exception:  # pymodbus catches OSError itself; anything else is odd
            ok = False
        if not ok:
            self.client.close()
            self.stats.errors += 1
            self._backoff.failed(loop.time())
            self._error = (f"connection to {self.name} lost; cannot reconnect" if lost
                           else f"cannot connect to {self.name}")
            raise LinkDown(self._error)
        self.stats.connects += 1
        self.stats.connected = self._was_up = True

    async def close(self) -> None:
        """Close the connection (a later poll reconnects)."""
        self.client.close()
        self.stats.connected = self._was_up = False
        await asyncio.sleep(0)

    def reset_backoff(self) -> None:
        """Devices answer: a later loss reconnects quickly."""
        self._backoff.reset()

    async def read(self, block: Block, unit: int) -> list[int]:
        """Registers (or bits, 0/1) of one block; raises LinkDown, _Silent or _BadReply."""
        c = self.client
        read = {"holding": c.read_holding_registers, "input": c.read_input_registers,
                "coil": c.read_coils, "discrete": c.read_discrete_inputs}[block.function]
        self.stats.requests += 1
        try:
            reply: ModbusPDU = await read(block.start, count=block.count, device_id=unit)
        except ModbusIOException as exc:
            self.stats.errors += 1
            # pymodbus closes the connection itself after retries + 3 requests without a
            # reply ("No response received of the last requests … CLOSING CONNECTION"):
            # the device is still silent, not gone, and a hung device is one fault.
            if not c.connected and _GAVE_UP not in str(exc):
                raise LinkDown(f"connection to {self.name} lost reading {block.label}"
                               ) from exc
            raise _Silent(f"no reply reading {block.label} within {self.timeout_s:g} s"
                          ) from exc
        except (ModbusException, OSError) as exc:
            self.stats.errors += 1
            raise LinkDown(f"connection to {self.name} lost reading {block.label}: {exc}"
                           ) from exc
        if reply.isError():
            self.stats.errors += 1
            code = reply.exception_code
            try:
                name = ExcCodes(code).name
            except ValueError:
                name = "unknown"
            raise _BadReply(f"exception reply reading {block.label}: {name} ({code})")
        if block.function in BIT_FUNCTIONS:
            values = [int(b) for b in reply.bits[:block.count]]
        else:
            values = list(reply.registers)
        if len(values) < block.count:
            self.stats.errors += 1
            raise _BadReply(f"short reply reading {block.label}: "
                            f"{len(values)} of {block.count} values")
        return values


class ModbusPoller(ModbusUnit[ModbusDevice, "ModbusLink"]):
    """Reads the planned blocks of one Modbus unit."""

    def __init__(self, device: ModbusDevice, link: ModbusLink) -> None:
        super().__init__(device, link)
        # decoder, positions of its tags in tag_ids() order, scales and offsets, per block,
        # worked out once: a reply is then decoded, scaled and placed by array operations.
        self._decoders = [
            (BlockDecoder(b), at, np.array([t.scale for t, _ in b.tags]),
             np.array([t.offset for t, _ in b.tags]))
            for b, at in zip(self._blocks, self._at, strict=True)]

    async def poll(self) -> PollResult:
        """Read every block once; B readings for what could not be read."""
        loop = asyncio.get_running_loop()
        values, flags = flagged(len(self._tags))
        error: str | None = None
        silent = False
        for i, block in enumerate(self._blocks):
            sent = loop.time()
            try:
                registers = await self._read(block)
            except (_Silent, LinkDown) as exc:  # nothing more to get from it this poll
                self.stats.errors += 1
                error = error or str(exc)
                silent = isinstance(exc, _Silent) and i == 0
                break  # the rest stay B
            except _BadReply as exc:  # the device answers: only this block is lost
                self.stats.errors += 1
                error = error or str(exc)
                continue
            self.stats.last_latency_s = loop.time() - sent
            decoder, at, scale, offset = self._decoders[i]
            raw = np.asarray(decoder(registers), np.float64)
            ok = np.isfinite(raw)
            # A value the codec cannot make a number of (NaN, inf) is an instrument fault.
            values[at] = np.where(ok, raw * scale + offset, raw)
            flags[at] = np.where(ok, int(DataFlag.N), int(DataFlag.D))
        return PollResult(values, flags, error, silent)

    async def _read(self, block: Block) -> list[int]:
        """One block, repeated up to `retries` times without reply while the unit is online."""
        for _ in range(self.device.retries if self.stats.online else 0):
            self.stats.requests += 1
            try:
                return await self.link.read(block, self.device.device_id)
            except _Silent:
                self.stats.errors += 1
        self.stats.requests += 1
        return await self.link.read(block, self.device.device_id)


def make_bus(devices: Iterable[ModbusDevice], on_event: OnEvent | None = None,
             table: TagTable | None = None) -> Bus:
    """The driver of one Modbus bus (all devices share its connection).

    Plain Modbus TCP goes through drivers.modbus_tcp (requests pipelined by transaction
    id, numpy decoding; its docstring says why); RTU and RTU over TCP through pymodbus.
    """
    devs = list(devices)
    tcp = [d for d in devs if isinstance(d, ModbusTcpDeviceConfig)]
    if tcp and len(tcp) == len(devs):
        tcp_link = ModbusTcpLink(tcp)
        return Bus(tcp_link, [ModbusTcpPoller(d, tcp_link) for d in tcp], on_event, table)
    link = ModbusLink(devs)
    return Bus(link, [ModbusPoller(d, link) for d in devs], on_event, table)
