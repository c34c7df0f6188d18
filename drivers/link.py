"""Byte links for framed protocols: a serial port or a TCP gateway, one request in flight."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import serial_asyncio_fast

from drivers.config import LinkConfig, SerialLinkConfig
from model.errors import DriverError

FindFrame = Callable[[bytearray], tuple[int, int] | None]

BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 10.0


class LinkDown(DriverError):
    """The bus cannot be used: not connected, connection lost, or waiting to reconnect."""


class NoReply(DriverError):
    """The device did not answer with a complete frame in time."""


@dataclass(slots=True)
class BusStats:
    """Counters of one bus (serial port or TCP endpoint)."""

    bus: str
    requests: int = 0
    errors: int = 0
    connects: int = 0
    bytes_out: int = 0
    bytes_in: int = 0
    connected: bool = False


class Backoff:
    """Capped exponential delay between connection attempts."""

    def __init__(self, first_s: float = BACKOFF_MIN_S, cap_s: float = BACKOFF_MAX_S) -> None:
        self.first_s, self.cap_s = first_s, cap_s
        self.delay_s = first_s
        self.next_at = 0.0  # loop time before which no attempt starts

    def failed(self, now: float) -> None:
        """An attempt failed: wait the current delay, then double it up to the cap."""
        self.next_at = now + self.delay_s
        self.delay_s = min(self.delay_s * 2, self.cap_s)

    def reset(self) -> None:
        """Success: the next failure waits the shortest delay again."""
        self.delay_s = self.first_s
        self.next_at = 0.0


class _Receiver(asyncio.Protocol):
    """Collects received bytes and wakes the waiting request."""

    def __init__(self, stats: BusStats) -> None:
        self.stats = stats
        self.buf = bytearray()
        self.event = asyncio.Event()
        self.lost: str | None = None
        self.transport: asyncio.WriteTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # serial_asyncio_fast's transport writes but does not subclass WriteTransport
        self.transport = cast(asyncio.WriteTransport, transport)

    def data_received(self, data: bytes) -> None:
        # Every byte that arrives counts, also echoes, noise and late replies: the bus's
        # real load, not just the frames a request took.
        self.stats.bytes_in += len(data)
        self.buf += data
        self.event.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = str(exc) if exc else "closed by the other end"
        self.event.set()


def link_name(link: LinkConfig) -> str:
    """How logs and messages name a link: the serial port path or host:port."""
    return link.serial if isinstance(link, SerialLinkConfig) else f"{link.host}:{link.port}"


class StreamLink:
    """One serial port or TCP gateway; requests are serialised by a lock.

    Reconnects with capped exponential backoff; while waiting, requests fail at once
    with LinkDown instead of blocking the bus.
    """

    def __init__(self, config: LinkConfig, *, default_baudrate: int,
                 connect_timeout_s: float = 3.0, turnaround_s: float = 0.0) -> None:
        self.config = config
        self.name = link_name(config)
        self._baudrate = (config.baudrate if isinstance(config, SerialLinkConfig)
                          and config.baudrate else default_baudrate)
        self._connect_timeout_s = connect_timeout_s
        self._turnaround_s = turnaround_s
        self._lock = asyncio.Lock()
        self._rx: _Receiver | None = None
        self._backoff = Backoff()
        self._last_error = ""
        self.stats = BusStats(self.name)

    @property
    def connected(self) -> bool:
        """True while the port is open / the TCP connection is up."""
        return self._rx is not None and self._rx.lost is None

    async def open(self) -> None:
        """Open the link if it is closed; raises LinkDown while it cannot be opened."""
        if self.connected:
            return
        self._drop()
        loop = asyncio.get_running_loop()
        if loop.time() < self._backoff.next_at:
            raise LinkDown(f"{self._last_error} (retrying in "
                           f"{self._backoff.next_at - loop.time():.1f} s)")
        rx = _Receiver(self.stats)
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                transport: asyncio.BaseTransport
                if isinstance(self.config, SerialLinkConfig):
                    cfg = self.config
                    transport, _ = await serial_asyncio_fast.create_serial_connection(
                        loop, lambda: rx, cfg.serial, baudrate=self._baudrate,
                        parity=cfg.parity, bytesize=cfg.bytesize, stopbits=cfg.stopbits)
                else:
                    transport, _ = await loop.create_connection(
                        lambda: rx, self.config.host, self.config.port)
        except (OSError, TimeoutError, ValueError) as exc:
            self._backoff.failed(loop.time())
            self.stats.errors += 1
            what = "timed out" if isinstance(exc, TimeoutError) else (
                getattr(exc, "strerror", None) or str(exc))
            self._last_error = f"cannot open {self.name}: {what}"
            raise LinkDown(self._last_error) from exc
        # serial_asyncio_fast calls connection_made only on the next loop iteration
        rx.connection_made(transport)
        self._rx = rx
        self.stats.connects += 1
        self.stats.connected = True

    async def close(self) -> None:
        """Close the link (a later request reopens it)."""
        self._drop()
        await asyncio.sleep(0)  # let the transport's close callbacks run

    def _drop(self) -> None:
        if self._rx is not None and self._rx.transport is not None:
            self._rx.transport.close()
        self._rx = None
        self.stats.connected = False

    async def transact(self, request: bytes, find_frame: FindFrame, timeout_s: float) -> bytes:
        """Send one request and return the first complete frame of the reply.

        Raises LinkDown when the link is closed or lost, NoReply when no complete frame
        arrived within `timeout_s` (the message shows what did arrive).
        """
        async with self._lock:
            await self.open()
            rx = self._rx
            assert rx is not None and rx.transport is not None
            loop = asyncio.get_running_loop()
            rx.buf.clear()  # a late reply to an earlier request must not be taken for this one
            rx.event.clear()
            rx.transport.write(request)
            self.stats.requests += 1
            self.stats.bytes_out += len(request)
            deadline = loop.time() + timeout_s
            try:
                while True:
                    span = find_frame(rx.buf)
                    if span is not None:
                        start, end = span
                        frame = bytes(rx.buf[start:end])
                        del rx.buf[:end]
                        return frame
                    if rx.lost is not None:
                        got = len(rx.buf)
                        self._drop()  # the next request reconnects at once, then backs off
                        self._last_error = f"connection to {self.name} lost: {rx.lost}"
                        raise LinkDown(self._last_error + (
                            f" after {got} bytes of the reply" if got else ""))
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        raise NoReply(_no_reply(rx.buf, timeout_s))
                    rx.event.clear()
                    try:
                        async with asyncio.timeout(remaining):
                            await rx.event.wait()
                    except TimeoutError:
                        pass
            except DriverError:
                self.stats.errors += 1
                raise
            finally:
                if self._turnaround_s > 0:
                    await asyncio.sleep(self._turnaround_s)

    def reset_backoff(self) -> None:
        """The devices answer again: a later loss retries quickly."""
        self._backoff.reset()


def _no_reply(buf: bytearray, timeout_s: float) -> str:
    if not buf:
        return f"no reply within {timeout_s:g} s"
    shown = buf[:32].hex(" ").upper() + (" …" if len(buf) > 32 else "")
    return f"no complete frame within {timeout_s:g} s; received {len(buf)} bytes: {shown}"
