"""One bus, many devices: polls each device at its own rate, one request at a time.

A device that stops answering is polled less and less often (capped exponential
backoff) so that its timeouts do not eat the bus time of the devices that answer;
while it is backed off its tags are emitted flagged B at its poll rate.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Protocol

import numpy as np
import numpy.typing as npt

from drivers.link import BACKOFF_MAX_S, Backoff, BusStats, LinkDown
from model.flags import DataFlag
from model.records import DeviceEvent, SampleBlock, TagTable

log = logging.getLogger("drivers")

Emit = Callable[[SampleBlock], None]
OnEvent = Callable[[DeviceEvent], None]

SILENT_POLLS_BEFORE_BACKOFF = 2


@dataclass(slots=True)
class DeviceStats:
    """Counters of one device, exposed to the rest of the server."""

    device: str
    bus: str = ""
    polls: int = 0
    requests: int = 0
    errors: int = 0
    last_error: str = ""
    last_latency_s: float = 0.0
    online: bool = False


@dataclass(slots=True)
class PollResult:
    """The readings of one poll (every tag once, in `tag_ids()` order, flagged) and what
    went wrong, if anything. Columns, not a record per tag: this is the ingest hot path."""

    values: npt.NDArray[np.float64]
    flags: npt.NDArray[np.uint8]
    error: str | None = None
    silent: bool = False  # the device did not answer at all: back off from it
    t: float = field(default_factory=time.time)  # epoch seconds (UTC) the values were read

    @classmethod
    def failed(cls, n_tags: int, error: str | None, *, silent: bool = False) -> PollResult:
        """Every tag NaN, flagged B (communication failure), stamped now."""
        values, flags = flagged(n_tags)
        return cls(values, flags, error, silent)


class Poller(Protocol):
    """Reads one device through its bus's link."""

    device_id: str
    where: str  # e.g. "device m1 (dlt645 address 000000000161 on /dev/ttyUSB0)"
    poll_interval_s: float
    stats: DeviceStats

    async def poll(self) -> PollResult:
        """Read every tag once; raises LinkDown when the link itself is unusable."""
        ...

    def tag_ids(self) -> list[str]:
        """Every tag the device emits."""
        ...


class BusLink(Protocol):
    """The connection a bus owns (StreamLink, or a pymodbus client wrapper)."""

    name: str
    stats: BusStats

    async def open(self) -> None:
        """Open if closed; raises LinkDown while that is impossible."""
        ...

    async def close(self) -> None:
        """Release the port or connection."""
        ...

    def reset_backoff(self) -> None:
        """Devices answer: a later loss reconnects quickly."""
        ...


def flagged(n_tags: int, flag: DataFlag = DataFlag.B,
            ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.uint8]]:
    """Values (NaN) and flags (`flag`) of `n_tags` readings that could not be made."""
    return np.full(n_tags, np.nan), np.full(n_tags, int(flag), np.uint8)


def _kind(error: str) -> str:
    """An error without its numbers and received bytes: what makes two errors the same."""
    return re.sub(r"[0-9A-Fa-f]{2,}|\d", "#", error.split(";")[0])


@dataclass(slots=True)
class _State:
    poller: Poller
    backoff: Backoff
    rows: npt.NDArray[np.int32]  # the poller's tags in the plant's tag table
    silent: int = 0
    logged: str | None = None  # error last logged and raised as an event; None while fine
    faulted: bool = False  # a fault event was raised and not yet cleared


class Bus:
    """The driver of one bus: owns its link and polls its devices in deadline order."""

    def __init__(self, link: BusLink, pollers: Sequence[Poller],
                 on_event: OnEvent | None = None, table: TagTable | None = None) -> None:
        self.link = link
        self.name = link.name
        # The plant's tag table (its rows name the tags of emitted blocks); a bus on its
        # own (tools, tests) makes one of its devices' tags.
        self.table = table if table is not None else TagTable(
            tuple(t for p in pollers for t in p.tag_ids()))
        self._states = [_State(p, Backoff(first_s=max(p.poll_interval_s, 0.5),
                                          cap_s=BACKOFF_MAX_S),
                               self.table.rows(p.tag_ids())) for p in pollers]
        for p in pollers:
            p.stats.bus = link.name
        self._on_event = on_event

    @property
    def device_ids(self) -> list[str]:
        """The devices on this bus."""
        return [s.poller.device_id for s in self._states]

    def stats(self) -> list[DeviceStats]:
        """Current counters of every device on the bus (copies)."""
        return [replace(s.poller.stats) for s in self._states]

    def bus_stats(self) -> BusStats:
        """Current counters of the bus itself (a copy)."""
        return replace(self.link.stats)

    async def run(self, emit: Emit) -> None:
        """Poll until cancelled; device faults become flagged samples, never exceptions."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        queue = [(start, i) for i in range(len(self._states))]
        heapq.heapify(queue)
        try:
            while queue:
                due, i = heapq.heappop(queue)
                now = loop.time()
                # The selector rounds shorter waits up to 1 ms: only yield for those.
                await asyncio.sleep(due - now if due - now > 0.001 else 0)
                state = self._states[i]
                result = await self._poll(state, loop.time())
                task = asyncio.current_task()
                # pymodbus's wait_for can swallow a cancel that arrives with a reply
                # (Python 3.11): honour it here so that stopping never hangs.
                if task is not None and task.cancelling():
                    raise asyncio.CancelledError
                state.poller.stats.polls += 1
                try:
                    emit(SampleBlock.of_poll(self.table, result.t, state.rows, result.values,
                                             result.flags))
                except Exception:
                    log.exception("bus %s: emit failed", self.name)
                interval = state.poller.poll_interval_s
                nxt = due + interval
                now = loop.time()
                if nxt <= now:  # overran: skip missed ticks, stay on the schedule grid
                    nxt += (math.floor((now - nxt) / interval) + 1) * interval
                heapq.heappush(queue, (nxt, i))
        finally:
            for s in self._states:
                s.poller.stats.online = False
            await self.link.close()

    async def _poll(self, state: _State, now: float) -> PollResult:
        poller = state.poller
        if now < state.backoff.next_at:  # backed off: no bus time, tags stay B
            return PollResult.failed(len(state.rows), state.logged, silent=True)
        try:
            await self.link.open()
            result = await poller.poll()
        except LinkDown as exc:
            poller.stats.errors += 1
            result = PollResult.failed(len(state.rows), str(exc), silent=True)
            self._report(state, result)
            return result
        except Exception as exc:  # a bug must not kill the bus's polling
            log.exception("%s: poll failed", poller.where)
            result = PollResult.failed(len(state.rows), f"internal error: {exc!r}")
        if result.silent:
            state.silent += 1
            if state.silent >= SILENT_POLLS_BEFORE_BACKOFF:
                state.backoff.failed(now)
        else:
            state.silent = 0
            state.backoff.reset()
            self.link.reset_backoff()
        self._report(state, result)
        return result

    def _report(self, state: _State, result: PollResult) -> None:
        """Update online state; log and raise an event once per new error and on recovery."""
        poller = state.poller
        error = result.error
        if error is None:
            poller.stats.online = True
            if state.logged is not None:
                log.warning("%s back online", poller.where)
                state.logged = None
            if state.faulted:
                state.faulted = False
                self._event(poller, False, "communication restored")
            return
        poller.stats.online = False
        poller.stats.last_error = error
        # Once per kind of error: a reply's varying bytes must not flood the log.
        if state.logged is None or _kind(error) != _kind(state.logged):
            log.warning("%s: %s", poller.where, error)
            state.logged = error
            state.faulted = True
            self._event(poller, True, error)

    def _event(self, poller: Poller, fault: bool, message: str) -> None:
        if self._on_event is None:
            return
        event = DeviceEvent(device=poller.device_id, bus=self.name, t=datetime.now(UTC),
                            fault=fault, message=message)
        try:
            self._on_event(event)
        except Exception:
            log.exception("bus %s: event handler failed", self.name)
