"""Modbus TCP driver: polls one device (one unit id on one endpoint) over its own connection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import ModbusException, ModbusIOException
from pymodbus.pdu import ModbusPDU

from drivers.base import DeviceStats, Emit
from drivers.codec import Block, decode, plan_reads, register_count
from server.config import ModbusTagConfig, ModbusTcpDeviceConfig
from server.records import DataFlag, Sample

log = logging.getLogger(__name__)

BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 10.0


class _LinkDown(Exception):
    """The connection is unusable: the rest of this poll's reads are skipped."""


class _BadReply(Exception):
    """The device answered, but not with the registers asked for."""


class ModbusTcpDriver:
    """Polls the configured registers of one Modbus TCP device at its poll interval."""

    def __init__(self, device: ModbusTcpDeviceConfig) -> None:
        self.device = device
        self.device_id = device.id
        self._blocks = plan_reads(device.tags, device.max_gap)
        self._where = (f"device {device.id} ({device.host}:{device.port} "
                       f"unit {device.device_id})")
        self._stats = DeviceStats(device=device.id)
        self._client: AsyncModbusTcpClient | None = None
        self._connect_task: asyncio.Task[None] | None = None
        self._connect_error: str | None = None  # why the link is down, once known
        self._next_connect = 0.0  # loop time before which no new attempt starts
        self._backoff = BACKOFF_MIN_S
        self._link_up = False  # the last connect attempt succeeded
        self._logged: str | None = None  # error last logged; None while online

    def stats(self) -> DeviceStats:
        """Current request / error counters of the device (a copy)."""
        return replace(self._stats)

    async def run(self, emit: Emit) -> None:
        """Poll until cancelled, emitting one list of samples per poll."""
        loop = asyncio.get_running_loop()
        dev = self.device
        # reconnect_delay=0: pymodbus must not reconnect on its own, this driver paces it.
        # retries=0: a dead device costs one timeout per poll, not four.
        self._client = AsyncModbusTcpClient(
            dev.host, port=dev.port, name=f"modbus {dev.id}", timeout=dev.timeout_s,
            retries=0, reconnect_delay=0)
        interval = dev.poll_interval_s
        next_tick = loop.time()
        try:
            while True:
                try:
                    samples = await self._poll()
                except Exception as exc:  # a bug must not kill the device's polling
                    log.exception("%s: poll failed", self._where)
                    self._report(f"internal error: {exc!r}")
                    samples = self._bad(self.device.tags)
                try:
                    emit(samples)
                except Exception:
                    log.exception("%s: emit failed", self._where)
                next_tick += interval
                now = loop.time()
                if next_tick <= now:  # overran: skip missed ticks, stay on the schedule grid
                    next_tick += (math.floor((now - next_tick) / interval) + 1) * interval
                await asyncio.sleep(next_tick - now)
        finally:
            if self._connect_task is not None:
                self._connect_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._connect_task
                self._connect_task = None
            self._client.close()
            self._stats.online = False
            self._link_up = False
            self._connect_error = None
            self._next_connect = 0.0

    async def _poll(self) -> list[Sample]:
        """Read every block once; B samples for what could not be read."""
        assert self._client is not None
        if not self._client.connected:
            if self._link_up:  # it was up at the last poll: say so before retrying
                self._link_up = False
                self._connect_error = "connection lost"
            await self._connect_soon()
            if not self._client.connected:
                if self._connect_error is not None:
                    self._report(self._connect_error)
                # else: first attempt still under way, nothing new to report yet
                return self._bad(self.device.tags)
        samples: list[Sample] = []
        error: str | None = None
        for i, block in enumerate(self._blocks):
            try:
                samples.extend(await self._read(block))
            except _LinkDown as exc:
                error = error or str(exc)
                samples.extend(self._bad(t for b in self._blocks[i:] for t, _ in b.tags))
                break
            except _BadReply as exc:  # the device answers: only this block is lost
                error = error or str(exc)
                samples.extend(self._bad(t for t, _ in block.tags))
        self._report(error)
        return samples

    async def _read(self, block: Block) -> list[Sample]:
        """One read request; raises _LinkDown or _BadReply on failure."""
        assert self._client is not None
        loop = asyncio.get_running_loop()
        unit = self.device.device_id
        read = (self._client.read_holding_registers if block.function == "holding"
                else self._client.read_input_registers)
        self._stats.requests += 1
        sent = loop.time()
        try:
            reply: ModbusPDU = await read(block.start, count=block.count, device_id=unit)
        except ModbusIOException as exc:
            self._stats.errors += 1
            reason = (f"timed out after {self.device.timeout_s:g} s"
                      if "No response" in str(exc) else str(exc))
            raise _LinkDown(f"no reply reading {block.label}: {reason}") from exc
        except (ModbusException, OSError) as exc:
            self._stats.errors += 1
            raise _LinkDown(f"connection lost reading {block.label}: {exc}") from exc
        t = datetime.now(UTC)
        if reply.isError():
            self._stats.errors += 1
            code = reply.exception_code
            try:
                name = ExcCodes(code).name
            except ValueError:
                name = "unknown"
            raise _BadReply(f"exception reply reading {block.label}: {name} ({code})")
        regs = list(reply.registers)
        if len(regs) < block.count:
            self._stats.errors += 1
            raise _BadReply(f"short reply reading {block.label}: "
                            f"{len(regs)} of {block.count} registers")
        self._stats.last_latency_s = loop.time() - sent
        return [self._sample(tag, regs[off:off + register_count(tag.type)], t)
                for tag, off in block.tags]

    @staticmethod
    def _sample(tag: ModbusTagConfig, regs: list[int], t: datetime) -> Sample:
        raw = decode(regs, tag.type, tag.order)
        if not math.isfinite(raw):
            return Sample(tag.id, t, raw, DataFlag.D)
        return Sample(tag.id, t, raw * tag.scale + tag.offset, DataFlag.N)

    @staticmethod
    def _bad(tags: Iterable[ModbusTagConfig]) -> list[Sample]:
        t = datetime.now(UTC)
        return [Sample(tag.id, t, math.nan, DataFlag.B) for tag in tags]

    async def _connect_soon(self) -> None:
        """Start a connect attempt if the backoff allows; wait briefly for it."""
        loop = asyncio.get_running_loop()
        task = self._connect_task
        if (task is None or task.done()) and loop.time() >= self._next_connect:
            task = self._connect_task = asyncio.create_task(
                self._connect(), name=f"modbus connect {self.device.id}")
        if task is not None and not task.done():
            # Wait at most half a poll interval so B samples keep flowing at the poll rate.
            await asyncio.wait([task], timeout=self.device.poll_interval_s / 2)

    async def _connect(self) -> None:
        """One connect attempt; schedules the next one with backoff."""
        assert self._client is not None
        loop = asyncio.get_running_loop()
        ok = False
        try:
            ok = await self._client.connect()
        except Exception as exc:  # pymodbus catches OSError itself; anything else is odd
            log.debug("%s: connect raised %r", self._where, exc)
        # Every attempt, successful or not, pushes the next one out: a device that
        # accepts and immediately drops connections is retried with backoff too.
        self._next_connect = loop.time() + self._backoff
        self._backoff = min(self._backoff * 2, BACKOFF_MAX_S)
        self._link_up = ok
        if ok:
            self._connect_error = None
        else:
            self._stats.errors += 1
            self._connect_error = "cannot connect"

    def _report(self, error: str | None) -> None:
        """Update online state; log a new error once and the recovery once."""
        if error is None:
            self._stats.online = True
            self._backoff = BACKOFF_MIN_S
            if self._logged is not None:
                log.warning("device %s back online", self.device.id)
                self._logged = None
            return
        self._stats.online = False
        self._stats.last_error = error
        if error != self._logged:
            log.warning("%s: %s", self._where, error)
            self._logged = error
