"""DL/T 645 and CJ/T 188 meter drivers: pollers over a shared serial port or TCP gateway."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Generic, TypeVar

from drivers import cjt188, dlt645
from drivers.bus import Bus, DeviceStats, OnEvent, PollResult, flagged
from drivers.config import (
    Cjt188DeviceConfig,
    Dlt645DeviceConfig,
    Dlt645TagConfig,
    LinkConfig,
    SerialLinkConfig,
)
from drivers.link import FindFrame, NoReply, StreamLink
from model.errors import ProtocolError
from model.flags import DataFlag
from model.records import Sample

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


def _scaled(tag_id: str, value: float, scale: float, offset: float, t: datetime) -> Sample:
    if not math.isfinite(value):
        return Sample(tag_id, t, math.nan, DataFlag.D)
    return Sample(tag_id, t, value * scale + offset, DataFlag.N)


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
        """Read every tag once; B samples for what could not be read."""
        loop = asyncio.get_running_loop()
        samples: list[Sample] = []
        error: str | None = None
        tags = self.device.tags
        for i, tag in enumerate(tags):
            sent = loop.time()
            try:
                reading = await self.read(int(tag.di, 16))
            except NoReply as exc:  # a silent meter: do not spend a timeout per tag
                self.stats.errors += 1
                samples.extend(flagged([t.id for t in tags[i:]]))
                return PollResult(samples, f"DI {tag.di}: {exc}", silent=i == 0)
            except ProtocolError as exc:
                self.stats.errors += 1
                error = error or f"DI {tag.di}: {exc}"
                samples.extend(flagged([tag.id]))
                continue
            self.stats.last_latency_s = loop.time() - sent
            samples.append(self._sample(tag, reading))
        return PollResult(samples, error)

    def _sample(self, tag: Dlt645TagConfig, reading: dlt645.Reading) -> Sample:
        t = datetime.now(UTC)
        if reading.value is None:  # a DI not in the format table, or a block
            return Sample(tag.id, t, math.nan, DataFlag.D)
        return _scaled(tag.id, reading.value, tag.scale, tag.offset, t)


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
            return PollResult(flagged(self._tags), str(exc), silent=True)
        except ProtocolError as exc:
            self.stats.errors += 1
            return PollResult(flagged(self._tags), str(exc))
        self.stats.last_latency_s = loop.time() - sent
        t = datetime.now(UTC)
        values = cjt188.reading_values(reading)
        samples: list[Sample] = []
        missing: list[str] = []
        for tag in self.device.tags:
            if tag.field == "status":
                samples.append(Sample(tag.id, t, float(reading.status), DataFlag.N))
            elif tag.field in values:
                samples.append(_scaled(tag.id, values[tag.field][0], tag.scale, tag.offset, t))
            else:
                samples.append(Sample(tag.id, t, math.nan, DataFlag.B))
                missing.append(tag.field)
        error = f"meter does not supply {', '.join(missing)}" if missing else None
        return PollResult(samples, error)


def make_dlt645_bus(devices: Iterable[Dlt645DeviceConfig],
                    on_event: OnEvent | None = None) -> Bus:
    """The driver of one DL/T 645 bus."""
    devs = list(devices)
    link = meter_link(devs[0].link)
    return Bus(link, [Dlt645Poller(d, link) for d in devs], on_event)


def make_cjt188_bus(devices: Iterable[Cjt188DeviceConfig],
                    on_event: OnEvent | None = None) -> Bus:
    """The driver of one CJ/T 188 bus."""
    devs = list(devices)
    link = meter_link(devs[0].link)
    return Bus(link, [Cjt188Poller(d, link) for d in devs], on_event)
