"""DL/T 645 and CJ/T 188 meter drivers: pollers over a shared serial port or TCP gateway."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable
from typing import Generic, TypeVar

import numpy as np
import numpy.typing as npt

from drivers import cjt188, dlt645
from drivers.bus import Bus, DeviceStats, OnEvent, PollResult, flagged
from drivers.config import (
    Cjt188DeviceConfig,
    Dlt645DeviceConfig,
    LinkConfig,
    SerialLinkConfig,
)
from drivers.link import FindFrame, NoReply, StreamLink
from model.errors import ProtocolError
from model.flags import DataFlag
from model.records import TagTable

METER_DEFAULT_BAUDRATE = 2400
MAX_FOLLOW_UPS = 16  # a 2007 reply split over more frames than this is refused


def meter_link(config: LinkConfig) -> StreamLink:
    """The byte link of a meter bus; on serial, a pause of 4 character times between frames."""
    turnaround = 0.0
    if isinstance(config, SerialLinkConfig):
        baud = config.baudrate or METER_DEFAULT_BAUDRATE
        turnaround = max(0.005, 4 * 11 / baud)
    return StreamLink(config, default_baudrate=METER_DEFAULT_BAUDRATE, turnaround_s=turnaround)


async def _transact(link: StreamLink, stats: DeviceStats, retries: int, request: bytes,
                    find_frame: FindFrame, timeout_s: float) -> bytes:
    """One request, repeated up to `retries` times without reply while the device is online."""
    for _ in range(retries if stats.online else 0):
        stats.requests += 1
        try:
            return await link.transact(request, find_frame, timeout_s)
        except NoReply:
            stats.errors += 1
    stats.requests += 1
    return await link.transact(request, find_frame, timeout_s)


def _put(values: npt.NDArray[np.float64], flags: npt.NDArray[np.uint8], i: int, value: float,
         scale: float, offset: float) -> None:
    """Reading i of a poll, scaled; a value that is not a number is an instrument fault."""
    if math.isfinite(value):
        values[i], flags[i] = value * scale + offset, DataFlag.N
    else:
        values[i], flags[i] = math.nan, DataFlag.D


_Meter = TypeVar("_Meter", Dlt645DeviceConfig, Cjt188DeviceConfig)


class _MeterPoller(Generic[_Meter]):
    """What every meter poller has: its device, the bus link, counters and tag ids."""

    def __init__(self, device: _Meter, link: StreamLink) -> None:
        self.device: _Meter = device
        self.device_id = device.id
        self.poll_interval_s = device.poll_interval_s
        self.link = link
        self.where = f"device {device.id} ({link.name} address {device.address})"
        self.stats = DeviceStats(device=device.id)
        self._tags = [t.id for t in device.tags]

    def tag_ids(self) -> list[str]:
        """Every tag the device emits."""
        return self._tags


class Dlt645Poller(_MeterPoller[Dlt645DeviceConfig]):
    """Reads one DL/T 645 meter: one request per tag (DI), follow-up frames joined."""

    async def read(self, di: int) -> dlt645.Reading:
        """One data item, following up multi-frame replies; raises NoReply/ProtocolError."""
        dev = self.device
        frame = await self._transact(dlt645.encode_read(dev.address, di, dev.version))
        reading = dlt645.decode_reply(frame, address=dev.address, di=di, version=dev.version)
        if not reading.more:
            return reading
        data = bytearray(reading.data)
        seq = 0
        while reading.more:
            seq += 1
            if seq > MAX_FOLLOW_UPS:
                raise ProtocolError(f"reply longer than {MAX_FOLLOW_UPS} follow-up frames")
            frame = await self._transact(dlt645.encode_read_next(dev.address, di, seq))
            reading = dlt645.decode_reply(frame, address=dev.address, di=di,
                                          version=dev.version, seq=seq)
            data += reading.data
        decoded = dlt645.decode_values(di, bytes(data), dev.version)
        values, unit = decoded if decoded is not None else ((), "")
        return dlt645.Reading(values[0] if len(values) == 1 else None, unit, bytes(data),
                              False, None, values)

    async def _transact(self, request: bytes) -> bytes:
        return await _transact(self.link, self.stats, self.device.retries, request,
                               dlt645.find_frame, self.device.timeout_s)

    async def poll(self) -> PollResult:
        """Read every tag once; B readings for what could not be read."""
        loop = asyncio.get_running_loop()
        values, flags = flagged(len(self._tags))
        error: str | None = None
        for i, tag in enumerate(self.device.tags):
            sent = loop.time()
            try:
                reading = await self.read(int(tag.di, 16))
            except NoReply as exc:  # a silent meter: do not spend a timeout per tag
                self.stats.errors += 1
                return PollResult(values, flags, f"DI {tag.di}: {exc}", silent=i == 0)
            except ProtocolError as exc:
                self.stats.errors += 1
                error = error or f"DI {tag.di}: {exc}"
                continue
            self.stats.last_latency_s = loop.time() - sent
            # None: a DI not in the format table, or a block: an instrument fault (D)
            _put(values, flags, i, math.nan if reading.value is None else reading.value,
                 tag.scale, tag.offset)
        return PollResult(values, flags, error)


class Cjt188Poller(_MeterPoller[Cjt188DeviceConfig]):
    """Reads one CJ/T 188 meter: one 901F request gives every tag of the device."""

    async def read(self) -> cjt188.Reading:
        """The meter's 901F reading; raises NoReply/ProtocolError."""
        dev = self.device
        request = cjt188.encode_read(dev.meter_type, dev.address, di_order=dev.di_order)
        frame = await _transact(self.link, self.stats, dev.retries, request, cjt188.find_frame,
                                dev.timeout_s)
        return cjt188.decode_reply(frame, meter_type=dev.meter_type, address=dev.address)

    async def poll(self) -> PollResult:
        """Read the meter once; tags the meter did not supply (FF) are flagged B."""
        loop = asyncio.get_running_loop()
        sent = loop.time()
        try:
            reading = await self.read()
        except NoReply as exc:
            self.stats.errors += 1
            return PollResult.failed(len(self._tags), str(exc), silent=True)
        except ProtocolError as exc:
            self.stats.errors += 1
            return PollResult.failed(len(self._tags), str(exc))
        self.stats.last_latency_s = loop.time() - sent
        supplied = cjt188.reading_values(reading)
        values, flags = flagged(len(self._tags))  # what the meter does not supply stays B
        missing: list[str] = []
        for i, tag in enumerate(self.device.tags):
            if tag.field == "status":
                values[i], flags[i] = float(reading.status), DataFlag.N
            elif tag.field in supplied:
                _put(values, flags, i, supplied[tag.field][0], tag.scale, tag.offset)
            else:
                missing.append(tag.field)
        error = f"meter does not supply {', '.join(missing)}" if missing else None
        return PollResult(values, flags, error)


def make_dlt645_bus(devices: Iterable[Dlt645DeviceConfig], on_event: OnEvent | None = None,
                    table: TagTable | None = None) -> Bus:
    """The driver of one DL/T 645 bus."""
    devs = list(devices)
    link = meter_link(devs[0].link)
    return Bus(link, [Dlt645Poller(d, link) for d in devs], on_event, table)


def make_cjt188_bus(devices: Iterable[Cjt188DeviceConfig], on_event: OnEvent | None = None,
                    table: TagTable | None = None) -> Bus:
    """The driver of one CJ/T 188 bus."""
    devs = list(devices)
    link = meter_link(devs[0].link)
    return Bus(link, [Cjt188Poller(d, link) for d in devs], on_event, table)
