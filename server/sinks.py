"""Sinks: independent consumers of minute results and raw samples.

Every sink gets its own queue and task, so a slow or dead sink never delays the
minute calculation or another sink. A sink's failure is logged once per kind of
error and the sink keeps going.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol, runtime_checkable

from model.records import (
    AlarmEvent,
    MinuteResult,
    PeriodRecords,
    RevisedMinutes,
    RevisedPeriod,
    SampleBlock,
)

log = logging.getLogger(__name__)


class Sink(Protocol):
    """A consumer of what the server produces."""

    name: str

    async def start(self) -> None:
        """Open connections, bind ports."""
        ...

    async def on_samples(self, block: SampleBlock) -> None:
        """Take the raw readings of a short interval, in arrival order, as columns."""
        ...

    async def on_minute(self, result: MinuteResult) -> None:
        """Take the results of one minute cycle."""
        ...

    async def stop(self) -> None:
        """Flush what can be flushed and release everything."""
        ...


@runtime_checkable
class PeriodSink(Protocol):
    """A sink that also takes closed hours and days."""

    async def on_period(self, records: PeriodRecords) -> None:
        """Take the records of one closed hour or day."""
        ...


@runtime_checkable
class RevisedPeriodSink(Protocol):
    """A period sink that tells a recalculated hour or day from a newly closed one."""

    async def on_revised_period(self, revised: RevisedPeriod) -> None:
        """Take an hour or day calculated again after an entry."""
        ...


@runtime_checkable
class RevisionSink(Protocol):
    """A sink that keeps minutes and takes them again when a person corrected them."""

    async def on_revised(self, revised: RevisedMinutes) -> None:
        """Take the minutes one entry revised."""
        ...


@runtime_checkable
class AlarmListener(Protocol):
    """A sink that shows alarm events (OPC UA conditions, the HMI's alarm list)."""

    def on_alarm(self, event: AlarmEvent) -> None:
        """Take one alarm transition, at once and without waiting."""
        ...


class QueuedSink:
    """Runs a sink behind its own bounded queue and task."""

    def __init__(self, sink: Sink, maxsize: int = 10_000) -> None:
        self.sink = sink
        self._queue: asyncio.Queue[
            MinuteResult | PeriodRecords | RevisedPeriod | RevisedMinutes | SampleBlock] = (
                asyncio.Queue(maxsize))
        self._task: asyncio.Task[None] | None = None
        self._last_error = ""
        self.dropped_sample_batches = 0

    async def start(self) -> None:
        """Start the sink and its consumer task."""
        await self.sink.start()
        self._task = asyncio.create_task(self._consume(), name=f"sink:{self.sink.name}")

    def submit_samples(self, block: SampleBlock) -> None:
        """Queue raw readings; if the sink is hopelessly behind, drop them for this sink only."""
        try:
            self._queue.put_nowait(block)
        except asyncio.QueueFull:
            self.dropped_sample_batches += 1

    def submit_minute(self, result: MinuteResult | PeriodRecords | RevisedPeriod | RevisedMinutes,
                      ) -> None:
        """Queue a minute result; results are never dropped."""
        try:
            self._queue.put_nowait(result)
        except asyncio.QueueFull:
            # Results matter more than raw samples: make room by dropping the oldest batch.
            with contextlib.suppress(asyncio.QueueEmpty):
                self._queue.get_nowait()
                self._queue.task_done()
                self.dropped_sample_batches += 1
            self._queue.put_nowait(result)

    @property
    def queue_depth(self) -> int:
        """Items waiting for the sink now."""
        return self._queue.qsize()

    @property
    def queue_capacity(self) -> int:
        """How many items the queue holds before raw samples are dropped."""
        return self._queue.maxsize

    @property
    def takes_periods(self) -> bool:
        """Whether the sink wants closed hours and days."""
        return isinstance(self.sink, PeriodSink)

    def submit_period(self, records: PeriodRecords | RevisedPeriod) -> None:
        """Queue a closed (or recalculated) hour or day; like minute results, never dropped."""
        self.submit_minute(records)

    @property
    def takes_revisions(self) -> bool:
        """Whether the sink wants minutes corrected after they were sent."""
        return isinstance(self.sink, RevisionSink)

    def submit_revised(self, revised: RevisedMinutes) -> None:
        """Queue corrected minutes; like minute results, never dropped."""
        self.submit_minute(revised)

    async def _consume(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                if isinstance(item, MinuteResult):
                    await self.sink.on_minute(item)
                elif isinstance(item, PeriodRecords):
                    assert isinstance(self.sink, PeriodSink)
                    await self.sink.on_period(item)
                elif isinstance(item, RevisedPeriod):
                    if isinstance(self.sink, RevisedPeriodSink):
                        await self.sink.on_revised_period(item)
                    else:
                        assert isinstance(self.sink, PeriodSink)
                        await self.sink.on_period(item.records)
                elif isinstance(item, RevisedMinutes):
                    assert isinstance(self.sink, RevisionSink)
                    await self.sink.on_revised(item)
                else:
                    await self.sink.on_samples(item)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a sink's fault must not end the sink
                text = f"{type(exc).__name__}: {exc}"
                if text != self._last_error:
                    log.error("sink %s failed: %s", self.sink.name, text)
                    self._last_error = text
            finally:
                self._queue.task_done()

    async def drain(self, timeout_s: float = 5.0) -> None:
        """Wait until everything queued so far was handled (or the timeout passes)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout_s)

    async def stop(self) -> None:
        """Drain briefly, cancel the consumer and stop the sink."""
        await self.drain()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.sink.stop()
