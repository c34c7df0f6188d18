"""HJ 212-2017 uplink: the data logger's (数采仪) client role towards each configured platform.

One `Hj212Sink` holds one `PlatformUplink` per `hj212:` entry. The sink's minute and
period calls only hand each platform its rows (no I/O, no waiting); each platform has its
own tasks: a writer that moves the uploads into its durable outbox (server/hj212/outbox.py,
SQLite in its own worker thread) and a connection that sends the outbox oldest first.
So a dead or slow platform never delays the minute cycle or another platform.

Sending: one upload in flight at a time, so the order is kept. With `ack`, the Flag asks
for a 9014 and the upload stays in the outbox until the 9014 with its QN arrives; without
one within OverTime it is sent again, up to ReCount times, then the connection is dropped
and the upload waits in the outbox for the next one. Reconnection backs off exponentially
(1 s doubling up to `reconnect_max_s`). Without `ack`, an upload is forgotten once it is on
the socket.

Platform commands answered (HJ 212-2017 §6.6): a 9011 request reply (QnRtn 1; 3 for a wrong
PW, 8 for an unknown CN), then the command's own reply and a 9012 execution reply (ExeRtn 1
done, 100 no data, 2 failed): 1000 OverTime / ReCount, 1011 / 1012 clock (the clock is
NTP's: 1012 is refused with ExeRtn 2 and the offset logged), 1061 / 1062 RtdInterval, 1063 /
1064 MinInterval, 2031 / 2051 / 2061 history with BeginTime / EndTime, answered from the
historian with the same rows the live uploads carry. Values the platform sets last until
the server restarts (the plant file wins then; the log says so).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from model.errors import CarbonScadaError
from model.flags import DataFlag
from model.records import (
    DeviceEvent,
    MinuteResult,
    PeriodRecords,
    PeriodResult,
    RevisedPeriod,
    SampleBlock,
)
from server.hj212 import messages
from server.hj212.codec import (
    CN_ACK_DATA,
    CN_DAY,
    CN_EXEC_REPLY,
    CN_GET_MIN_INTERVAL,
    CN_GET_RTD_INTERVAL,
    CN_GET_TIME,
    CN_HOUR,
    CN_MINUTE,
    CN_REQUEST_REPLY,
    CN_RTD,
    CN_SET_MIN_INTERVAL,
    CN_SET_RTD_INTERVAL,
    CN_SET_TIME,
    CN_TIMEOUT,
    FLAG_ACK,
    ST_SYSTEM,
    VERSION_2017,
    FrameReader,
    Hj212Error,
    Packet,
    encode,
    hj_qn,
    hj_time,
    parse_cp,
    parse_hj_time,
    split,
)
from server.hj212.config import Hj212Config, source_tags, uplink_device
from server.hj212.messages import Channel, MinuteRow
from server.hj212.outbox import Outbox, Upload

log = logging.getLogger(__name__)
T = TypeVar("T")

_BACKOFF_FIRST_S = 1.0
_READ_CHUNK = 4096
_MS = timedelta(milliseconds=1)
# HJ 212-2017 reply codes.
QNRTN_READY = "1"
QNRTN_BAD_PW = "3"
QNRTN_BAD_CN = "8"
EXERTN_DONE = "1"
EXERTN_FAILED = "2"
EXERTN_NO_DATA = "100"


class HistoryReader(Protocol):
    """What history requests are answered from (server/historian.py's Historian)."""

    async def source_minutes(self, source: str, start: datetime,
                             end: datetime) -> list[dict[str, Any]]:
        """Stored minute rows of one source with start ≤ t < end."""
        ...

    async def history_rows(self, table: str, ident: str, start: datetime, end: datetime, *,
                           time_column: str = "t_ms", limit: int | None = None,
                           newest_first: bool = False) -> list[dict[str, Any]]:
        """Stored rows of one tag (table tag_minute) with start ≤ t < end."""
        ...

    async def periods(self, level: str, start: datetime, end: datetime) -> list[PeriodRecords]:
        """Stored hours or days with start ≤ t < end."""
        ...


class PlantLike(Protocol):
    """What the sink reads of the plant configuration (server.config.PlantConfig)."""

    @property
    def hj212(self) -> Sequence[Hj212Config]:
        """The platforms."""
        ...

    def sources(self) -> Sequence[tuple[Any, Any]]:
        """(unit, source) pairs."""
        ...

    @property
    def site(self) -> Any:
        """The site (timezone)."""
        ...

    @property
    def clock(self) -> Any:
        """The clock (minute_seconds)."""
        ...

    @property
    def constants(self) -> Any:
        """The constants (co2_density_kg_m3)."""
        ...


class _Reconnect(CarbonScadaError):
    """The session ends (no acknowledgement after ReCount resends)."""


@dataclass(slots=True)
class _Pending:
    """An upload made, not yet in the outbox."""

    qn: str
    cn: str
    cp: str
    data_ms: int | None


class PlatformUplink:
    """One platform: its rows, its outbox, its connection and the commands it sends."""

    def __init__(self, cfg: Hj212Config, source_id: str, tags: Mapping[str, str | None],
                 tz: str, minute_s: float, density_kg_m3: float,
                 history: HistoryReader | None,
                 on_event: Callable[[DeviceEvent], None] | None = None) -> None:
        """`tags`: the source's CEMS inputs' tags; `history`: the historian, for history
        requests (None: they are answered with ExeRtn 100, no data); `on_event`: where the
        uplink's alarm goes (the runtime's device-event path)."""
        self.cfg = cfg
        self.on_event = on_event
        self._progress = time.monotonic()  # nothing waiting, or the platform took one
        self._alarm: bool | None = None  # as last sent; None: nothing sent since start
        self.name = f"hj212:{cfg.id}"
        self.source_id = source_id
        self.chans: tuple[Channel, ...] = messages.channels(cfg, tags)
        self._lookup = messages.RowLookup(source_id, self.chans)
        self.tz = tz
        self.minute_s = minute_s
        self.density = density_kg_m3
        self.history = history
        # What the platform may change (1000, 1062, 1064) until the next start.
        self.overtime_s = cfg.overtime_s
        self.recount = cfg.recount
        self.rtd_interval_s = cfg.rtd_interval_s
        self.min_interval = cfg.min_interval_min
        self._pending: list[_Pending] = []
        self._wake_writer = asyncio.Event()
        self._wake_sender = asyncio.Event()
        self._acked = asyncio.Event()
        self._waiting_qn = ""
        self._last_qn_t: datetime | None = None
        self._window: list[MinuteRow] = []
        self._window_key: int | None = None
        self._window_t: datetime | None = None
        self._latest: dict[str, tuple[float, DataFlag]] = {}
        self._last_period_ms: dict[str, int] = {}  # CN → DataTime of the last one queued
        self._rtd_rows: tuple[int, npt.NDArray[np.int32], tuple[str, ...]] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._outbox: Outbox | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._writer: asyncio.StreamWriter | None = None
        self._write_lock = asyncio.Lock()
        self._failing = False
        self._bad_frames = ""
        self.stats: dict[str, float] = dict.fromkeys(STAT_NAMES, 0.0)

    # --- the sink's side: make rows, never wait ------------------------------------------

    def _next_qn(self) -> str:
        """A QN (request time, ms) later than every QN given before: it names the upload."""
        now = datetime.now(UTC)
        now -= timedelta(microseconds=now.microsecond % 1000)  # a QN holds milliseconds
        if self._last_qn_t is not None and now <= self._last_qn_t:
            now = self._last_qn_t + _MS
        self._last_qn_t = now
        return hj_qn(now, self.tz)

    def _queue(self, cn: str, cp: str, t: datetime) -> None:
        self._pending.append(_Pending(self._next_qn(), cn, cp, int(t.timestamp() * 1000)))
        self._wake_writer.set()

    def minute(self, result: MinuteResult) -> None:
        """Take one minute: an upload when its interval (MinInterval minutes) is complete."""
        row, found = messages.live_minute_row(self.chans, self._lookup, result)
        if not found:
            return
        index = round(result.t.timestamp() / self.minute_s)
        key = index // self.min_interval
        if self._window_key is not None and key != self._window_key:
            self._close_window()  # a minute of a later interval came: close the last one
        if self._window_key is None:
            self._window_key = key
            self._window_t = result.t - timedelta(
                seconds=(index - key * self.min_interval) * self.minute_s)
        self._window.append(row)
        if (index + 1) % self.min_interval == 0:
            self._close_window()

    def _close_window(self) -> None:
        if self._window and self._window_t is not None:
            row = self._window[0] if len(self._window) == 1 else messages.aggregate(
                self._window)
            self._queue(CN_MINUTE, messages.row_cp(self._window_t, self.tz, self.chans, row),
                        self._window_t)
        self._window, self._window_key, self._window_t = [], None, None

    def period(self, records: PeriodRecords, revised: bool = False) -> None:
        """Take one closed hour (2061) or day (2031); `revised`: calculated again after an
        entry, so sent again with what the entry changed (flags S where set by hand)."""
        if (records.level == "hour" and not self.cfg.hour) or (
                records.level == "day" and not self.cfg.day):
            return
        rec = next((s for s in records.sources if s.source == self.source_id), None)
        if rec is None:
            return
        cn = CN_HOUR if records.level == "hour" else CN_DAY
        # The runtime hands sinks the last stored hour and day again at start (for the
        # clients' displays): uploaded already, they are not queued twice.
        t_ms = int(records.t.timestamp() * 1000)
        if not revised:
            if t_ms <= self._last_period_ms.get(cn, -(2**62)):
                return
            self._last_period_ms[cn] = t_ms
        self._queue(cn, self._period_cp(records, rec), records.t)

    def _period_cp(self, records: PeriodRecords, rec: PeriodResult) -> str:
        hours = (records.t_end - records.t).total_seconds() / (60 * self.minute_s)
        row = messages.period_row(self.chans, rec, hours, self.density)
        return messages.row_cp(records.t, self.tz, self.chans, row)

    def samples(self, block: SampleBlock) -> None:
        """Keep the latest reading of each of the platform's tags (for 2011)."""
        if self.rtd_interval_s <= 0 or not len(block):
            return
        table = block.table
        if self._rtd_rows is None or self._rtd_rows[0] != id(table):
            tags = tuple(ch.tag for ch in self.chans if ch.tag is not None
                         and ch.tag in table.index)
            self._rtd_rows = (id(table), table.rows(tags), tags)
        _, rows, tags = self._rtd_rows
        if not len(rows):
            return
        at = np.flatnonzero(np.isin(block.rows, rows))
        if not len(at):
            return
        # The last reading of each row: the first of each in the reversed selection.
        rev = at[::-1]
        got, first = np.unique(block.rows[rev], return_index=True)
        names = dict(zip(rows.tolist(), tags, strict=True))
        for row, k in zip(got.tolist(), rev[first].tolist(), strict=True):
            self._latest[names[row]] = (float(block.values[k]), DataFlag(int(block.flags[k])))

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the outbox and start the writer and the connection."""
        self._executor = ThreadPoolExecutor(max_workers=1,
                                            thread_name_prefix=f"hj212-{self.cfg.id}")
        self._outbox = await self._run(Outbox, self.cfg.outbox_file())
        last = await self._run(self._outbox.last_qn)
        if last:
            with contextlib.suppress(Hj212Error):
                self._last_qn_t = parse_hj_time(last, self.tz)
        for cn in (CN_HOUR, CN_DAY):
            ms = await self._run(self._outbox.last_data_ms, cn)
            if ms is not None:
                self._last_period_ms[cn] = ms
        if self._outbox.count:
            log.info("HJ 212 %s: %d uploads in the outbox from before", self.cfg.id,
                     self._outbox.count)
        self.stats["outbox_uploads"] = float(self._outbox.count)
        self._tasks = [asyncio.create_task(self._write_loop(), name=f"{self.name}:outbox"),
                       asyncio.create_task(self._connect_loop(), name=f"{self.name}:conn"),
                       asyncio.create_task(self._watch_loop(), name=f"{self.name}:alarm")]

    async def stop(self) -> None:
        """Store what is pending, close the connection and the outbox."""
        self._close_window()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._outbox is not None:
            try:
                await self._store_pending()
            except Exception as exc:  # the historian still has them
                log.error("HJ 212 %s: cannot store %d uploads on stop: %s", self.cfg.id,
                          len(self._pending), exc)
            if self._outbox.count:
                log.warning("HJ 212 %s: %d uploads left in the outbox for the next start",
                            self.cfg.id, self._outbox.count)
            await self._run(self._outbox.close)
            self._outbox = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        assert self._executor is not None, "PlatformUplink used before start()"
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # --- the outbox -----------------------------------------------------------------------

    async def _store_pending(self) -> None:
        box = self._outbox
        assert box is not None
        if self._pending:
            batch = self._pending[:]
            await self._run(box.append, [(p.qn, p.cn, p.cp, p.data_ms) for p in batch])
            del self._pending[:len(batch)]  # only once stored: a failure keeps them
            self._wake_sender.set()
        drops = await self._run(box.enforce, self.cfg.outbox_max_frames,
                                int(self.cfg.outbox_max_age_h * 3600 * 1000))
        for d in drops:
            self.stats["outbox_dropped_total"] += d.uploads
            log.error("HJ 212 %s: the outbox reached its %s cap (%s) while %s:%d does not "
                      "take uploads: DROPPED the oldest %s (recorded in the outbox's "
                      "'dropped' table; the historian has them, the platform can ask again)",
                      self.cfg.id, d.reason, f"{self.cfg.outbox_max_frames} uploads"
                      if d.reason == "count" else f"{self.cfg.outbox_max_age_h:g} h",
                      self.cfg.host, self.cfg.port, d.describe())
        self.stats["outbox_uploads"] = float(box.count)

    async def _write_loop(self) -> None:
        last_error = ""
        while True:
            await self._wake_writer.wait()
            self._wake_writer.clear()
            try:
                await self._store_pending()
                last_error = ""
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # disk full, permissions: keep them, try again
                text = f"{type(exc).__name__}: {exc}"
                if text != last_error:
                    log.error("HJ 212 %s: cannot store uploads in the outbox: %s",
                              self.cfg.id, text)
                    last_error = text
                await asyncio.sleep(1.0)
                self._wake_writer.set()

    # --- the connection -------------------------------------------------------------------

    async def _connect_loop(self) -> None:
        cfg = self.cfg
        delay = min(_BACKOFF_FIRST_S, cfg.reconnect_max_s)
        while True:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(cfg.host, cfg.port), cfg.connect_timeout_s)
            except (OSError, TimeoutError) as exc:
                self._report_failure(f"cannot connect: {type(exc).__name__}: {exc}")
                await asyncio.sleep(delay)
                delay = min(delay * 2, cfg.reconnect_max_s)
                continue
            self.stats["connects_total"] += 1
            log.info("HJ 212 %s: connected to %s:%d", cfg.id, cfg.host, cfg.port)
            self._writer = writer
            try:
                if await self._session(reader):
                    delay = min(_BACKOFF_FIRST_S, cfg.reconnect_max_s)
            except (OSError, ConnectionError, _Reconnect) as exc:
                self._report_failure(f"{type(exc).__name__}: {exc}")
            except Exception as exc:  # a fault of ours: logged, and the uplink goes on
                log.exception("HJ 212 %s: the session failed: %s", cfg.id, exc)
            finally:
                self._writer = None
                writer.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(writer.wait_closed(), 1.0)
            self.stats["connected"] = 0.0
            await asyncio.sleep(delay)
            delay = min(delay * 2, cfg.reconnect_max_s)

    def _report_failure(self, reason: str) -> None:
        """Log the first failure of an outage (and the recovery) only."""
        if not self._failing:
            self._failing = True
            log.warning("HJ 212 %s: platform %s:%d unreachable (%s); uploads wait in the "
                        "outbox", self.cfg.id, self.cfg.host, self.cfg.port, reason)

    async def _session(self, reader: asyncio.StreamReader) -> bool:
        """Send and receive until the connection ends; True if the platform answered."""
        self.stats["connected"] = 1.0
        answered = False

        def on_answer() -> None:
            nonlocal answered
            answered = True
            if self._failing:
                self._failing = False
                log.info("HJ 212 %s: platform %s:%d reachable again; %d uploads to send",
                         self.cfg.id, self.cfg.host, self.cfg.port,
                         self._outbox.count if self._outbox else 0)
        tasks = [asyncio.create_task(self._receive(reader, on_answer)),
                 asyncio.create_task(self._send_loop(on_answer))]
        if self.rtd_interval_s > 0:
            tasks.append(asyncio.create_task(self._rtd_loop()))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
        for t in done:
            exc = t.exception()
            if exc is not None:
                raise exc
        raise ConnectionError("the platform closed the connection")

    async def _write(self, packets: Sequence[Packet]) -> None:
        writer = self._writer
        if writer is None:
            raise ConnectionError("not connected")
        frames = b"".join(encode(q) for p in packets for q in split(p))
        async with self._write_lock:
            writer.write(frames)
            await writer.drain()
        self.stats["frames_sent_total"] += len(packets)

    def _packet(self, qn: str, cn: str, cp: str, *, st: str | None = None,
                ack: bool = False) -> Packet:
        return Packet(qn=qn, st=self.cfg.st if st is None else st, cn=cn, pw=self.cfg.pw,
                      mn=self.cfg.mn, flag=VERSION_2017 | (FLAG_ACK if ack else 0), cp=cp)

    async def _next_upload(self) -> Upload:
        assert self._outbox is not None
        while True:
            self._wake_sender.clear()  # before looking: an upload added meanwhile wakes us
            up = await self._run(self._outbox.oldest)
            if up is not None:
                return up
            await self._wake_sender.wait()

    async def _send_loop(self, on_answer: Callable[[], None]) -> None:
        assert self._outbox is not None
        while True:
            up = await self._next_upload()
            packet = self._packet(up.qn, up.cn, up.cp, ack=self.cfg.ack)
            try:
                for piece in split(packet):
                    encode(piece)
            except Hj212Error as exc:  # it can never be sent: it must not block the rest
                log.error("HJ 212 %s: upload QN %s (CN %s) cannot be framed and is dropped "
                          "(the historian has its data): %s", self.cfg.id, up.qn, up.cn, exc)
                await self._run(self._outbox.delete, up.id)
                continue
            if self.cfg.ack:
                for attempt in range(self.recount + 1):
                    self._waiting_qn = up.qn
                    self._acked.clear()
                    if attempt:
                        self.stats["resent_total"] += 1
                        log.info("HJ 212 %s: no 9014 for QN %s within %g s: sent again "
                                 "(%d of %d)", self.cfg.id, up.qn, self.overtime_s, attempt,
                                 self.recount)
                    await self._write([packet])
                    try:
                        await asyncio.wait_for(self._acked.wait(), self.overtime_s)
                        break
                    except TimeoutError:
                        continue
                else:
                    self._waiting_qn = ""
                    raise _Reconnect(f"no 9014 for QN {up.qn} (CN {up.cn}) after "
                                     f"{self.recount} resends; it stays in the outbox")
                self._waiting_qn = ""
                on_answer()
            else:
                await self._write([packet])
            await self._run(self._outbox.delete, up.id)
            self.stats["uploads_done_total"] += 1
            self.stats["outbox_uploads"] = float(self._outbox.count)
            self._progress = time.monotonic()

    async def _watch_loop(self) -> None:
        """Raise the uplink's alarm once uploads waited `alarm_after_s` with none taken by
        the platform, clear it when they are taken; the first check after start always
        reports (an alarm restored from the last run is confirmed or cleared)."""
        every_s = min(5.0, self.cfg.alarm_after_s / 4)
        while True:
            waiting = int(self.stats["outbox_uploads"]) + len(self._pending)
            now = time.monotonic()
            if not waiting:
                self._progress = now
            stalled = now - self._progress
            fault = waiting > 0 and stalled >= self.cfg.alarm_after_s
            if fault != self._alarm:
                self._alarm = fault
                address = f"{self.cfg.host}:{self.cfg.port}"
                message = (f"HJ 212 platform {self.cfg.id} ({address}) has taken no upload "
                           f"for {stalled / 60:.0f} min; {waiting} uploads wait in the outbox "
                           "(nothing is lost until its caps)" if fault else
                           f"HJ 212 platform {self.cfg.id} ({address}) takes the uploads")
                if self.on_event is not None:
                    try:
                        self.on_event(DeviceEvent(uplink_device(self.cfg.id), address,
                                                  datetime.now(UTC), fault, message))
                    except Exception:  # the uplink goes on whatever the alarm path does
                        log.exception("HJ 212 %s: alarm not delivered: %s", self.cfg.id,
                                      message)
            await asyncio.sleep(every_s)

    async def _rtd_loop(self) -> None:
        while True:
            await asyncio.sleep(self.rtd_interval_s)
            cp = messages.rtd_cp(datetime.now(UTC), self.tz, self.chans, self._latest)
            if cp is not None:  # real-time data is of the moment: not kept in the outbox
                await self._write([self._packet(self._next_qn(), CN_RTD, cp)])

    async def _receive(self, reader: asyncio.StreamReader,
                       on_answer: Callable[[], None]) -> None:
        frames = FrameReader()
        commands: asyncio.Queue[Packet] = asyncio.Queue()
        worker = asyncio.create_task(self._command_loop(commands))
        try:
            while True:
                data = await reader.read(_READ_CHUNK)
                if not data:
                    return
                for item in frames.feed(data):
                    if isinstance(item, Hj212Error):
                        self.stats["bad_frames_total"] += 1
                        text = str(item)
                        if text != self._bad_frames:
                            log.warning("HJ 212 %s: bad frame from the platform: %s",
                                        self.cfg.id, text)
                            self._bad_frames = text
                        continue
                    if item.cn == CN_ACK_DATA:
                        on_answer()
                        qn = item.qn or _cp_value(item.cp, "QN")
                        if qn and qn == self._waiting_qn:
                            self._acked.set()
                        continue
                    # Commands one after another, apart from the acks: a history answer
                    # being read never holds up the 9014 of the upload in flight.
                    commands.put_nowait(item)
        finally:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker

    async def _command_loop(self, commands: asyncio.Queue[Packet]) -> None:
        while True:
            p = await commands.get()
            try:
                await self._command(p)
            except (OSError, ConnectionError):
                return
            except Exception as exc:  # one bad command must not end the session
                log.error("HJ 212 %s: command CN %s failed: %s: %s", self.cfg.id, p.cn,
                          type(exc).__name__, exc)

    async def _reply(self, p: Packet, cn: str, cp: str, *, system: bool = True) -> None:
        await self._write([self._packet(p.qn, cn, cp, st=ST_SYSTEM if system else None)])

    async def _command(self, p: Packet) -> None:
        """Answer one platform command (HJ 212-2017 §6.6 request / reply flows)."""
        self.stats["commands_total"] += 1
        known = (CN_TIMEOUT, CN_GET_TIME, CN_SET_TIME, CN_GET_RTD_INTERVAL,
                 CN_SET_RTD_INTERVAL, CN_GET_MIN_INTERVAL, CN_SET_MIN_INTERVAL, CN_MINUTE,
                 CN_HOUR, CN_DAY)
        if p.pw != self.cfg.pw:
            log.warning("HJ 212 %s: command CN %s with a wrong PW refused", self.cfg.id, p.cn)
            await self._reply(p, CN_REQUEST_REPLY, f"QnRtn={QNRTN_BAD_PW}")
            return
        if p.cn not in known:
            await self._reply(p, CN_REQUEST_REPLY, f"QnRtn={QNRTN_BAD_CN}")
            return
        await self._reply(p, CN_REQUEST_REPLY, f"QnRtn={QNRTN_READY}")
        try:
            fields = _cp_fields(p.cp)
            exe = await self._execute(p, fields)
        except (Hj212Error, ValueError, KeyError) as exc:
            log.warning("HJ 212 %s: command CN %s refused: %s", self.cfg.id, p.cn, exc)
            exe = EXERTN_FAILED
        await self._reply(p, CN_EXEC_REPLY, f"ExeRtn={exe}")

    async def _execute(self, p: Packet, fields: dict[str, str]) -> str:
        cn = p.cn
        if cn == CN_TIMEOUT:
            overtime, recount = int(fields["OverTime"]), int(fields["ReCount"])
            if overtime <= 0 or not 0 <= recount <= 20:
                raise ValueError(f"OverTime={overtime}, ReCount={recount} out of range")
            self.overtime_s, self.recount = float(overtime), recount
            self._set_by_platform(f"OverTime {overtime} s, ReCount {recount}")
        elif cn == CN_GET_TIME:
            await self._reply(p, CN_GET_TIME, f"SystemTime={hj_time(datetime.now(UTC), self.tz)}",
                              system=False)
        elif cn == CN_SET_TIME:
            asked = parse_hj_time(fields["SystemTime"], self.tz)
            log.warning("HJ 212 %s: the platform asked to set the clock to %s (%.1f s from "
                        "ours); the server's clock is kept by NTP, not by the platform",
                        self.cfg.id, asked.isoformat(),
                        (asked - datetime.now(UTC)).total_seconds())
            return EXERTN_FAILED
        elif cn == CN_GET_RTD_INTERVAL:
            await self._reply(p, CN_GET_RTD_INTERVAL,
                              f"RtdInterval={round(self.rtd_interval_s)}", system=False)
        elif cn == CN_SET_RTD_INTERVAL:
            value = int(fields["RtdInterval"])
            if not 30 <= value <= 3600:  # HJ 212-2017: 30 s to 3600 s
                raise ValueError(f"RtdInterval={value} outside 30..3600")
            self.rtd_interval_s = float(value)
            self._set_by_platform(f"RtdInterval {value} s")
        elif cn == CN_GET_MIN_INTERVAL:
            await self._reply(p, CN_GET_MIN_INTERVAL, f"MinInterval={self.min_interval}",
                              system=False)
        elif cn == CN_SET_MIN_INTERVAL:
            value = int(fields["MinInterval"])
            if not 1 <= value <= 60:
                raise ValueError(f"MinInterval={value} outside 1..60")
            self.min_interval = value
            self._set_by_platform(f"MinInterval {value} min")
        else:
            begin = parse_hj_time(fields["BeginTime"], self.tz)
            end = parse_hj_time(fields["EndTime"], self.tz) + timedelta(seconds=1)
            n = await self._answer_history(p, begin, end)
            return EXERTN_DONE if n else EXERTN_NO_DATA
        return EXERTN_DONE

    def _set_by_platform(self, what: str) -> None:
        log.warning("HJ 212 %s: the platform set %s; the plant file's value applies again "
                    "at the next start", self.cfg.id, what)

    async def _answer_history(self, p: Packet, begin: datetime, end: datetime) -> int:
        """Send the stored data of [begin, end) with the request's QN; how many uploads."""
        if self.history is None:
            return 0
        if p.cn == CN_MINUTE:
            items = await self.history_minutes(begin, end)
        else:
            level = "hour" if p.cn == CN_HOUR else "day"
            items = []
            for rec in await self.history.periods(level, begin, end):
                src = next((s for s in rec.sources if s.source == self.source_id), None)
                if src is not None:
                    items.append(self._period_cp(rec, src))
        for cp in items:
            await self._write([self._packet(p.qn, p.cn, cp)])
        self.stats["history_uploads_total"] += len(items)
        return len(items)

    async def history_minutes(self, begin: datetime, end: datetime) -> list[str]:
        """CP texts of the stored minutes (MinInterval intervals) of [begin, end)."""
        assert self.history is not None
        rows = await self.history.source_minutes(self.source_id, begin, end)
        tag_rows: dict[str, dict[datetime, tuple[float, float, float, DataFlag]]] = {}
        for ch in self.chans:
            if ch.tag is not None and ch.tag not in tag_rows:
                got = await self.history.history_rows("tag_minute", ch.tag, begin, end)
                tag_rows[ch.tag] = {r["t"]: (_f(r["min"]), _f(r["mean"]), _f(r["max"]),
                                             r["flag"]) for r in got}
        out: list[str] = []
        window: list[MinuteRow] = []
        window_key: int | None = None
        window_t: datetime | None = None

        def close() -> None:
            if window and window_t is not None:
                row = window[0] if len(window) == 1 else messages.aggregate(window)
                out.append(messages.row_cp(window_t, self.tz, self.chans, row))
        n = self.min_interval
        for r in rows:
            t = r["t"]
            source = {k: _f(r.get(k)) for k in ("flow_act_m3_h", "flow_std_dry_m3_h",
                                                 "co2_dry_pct", "co2_mg_m3", "co2_kg")}
            tags = {tag: by_t[t] for tag, by_t in tag_rows.items() if t in by_t}
            row = messages.minute_row(self.chans, source, r["flag"], tags)
            index = round(t.timestamp() / self.minute_s)
            key = index // n
            if window_key is not None and key != window_key:
                close()
                window, window_key = [], None
            if window_key is None:
                window_key = key
                window_t = t - timedelta(seconds=(index - key * n) * self.minute_s)
            window.append(row)
        close()
        return out


def _f(v: Any) -> float:
    return float("nan") if v is None else float(v)


def _cp_fields(cp: str) -> dict[str, str]:
    """The CP's items as one mapping (commands carry one group, or a few of one item)."""
    out: dict[str, str] = {}
    for group in parse_cp(cp):
        out.update(group)
    return out


def _cp_value(cp: str, key: str) -> str:
    try:
        return _cp_fields(cp).get(key, "")
    except Hj212Error:
        return ""


# What PlatformUplink.stats holds (for monitoring): outbox_uploads and connected describe
# now, *_total count since start.
STAT_NAMES = ("outbox_uploads", "outbox_dropped_total", "connected", "connects_total",
              "frames_sent_total", "uploads_done_total", "resent_total", "commands_total",
              "history_uploads_total", "bad_frames_total")


class Hj212Sink:
    """The HJ 212 uplinks of the plant: one PlatformUplink per `hj212:` entry."""

    name = "hj212"

    def __init__(self, cfg: PlantLike, history: HistoryReader | None = None,
                 on_event: Callable[[DeviceEvent], None] | None = None) -> None:
        """Build one uplink per platform (the entries were checked by check_plant);
        `on_event`: where their alarms go."""
        tags = source_tags(cfg)
        only = next(iter(tags)) if len(tags) == 1 else None
        self.platforms = []
        for p in cfg.hj212:
            source = p.source or only
            assert source is not None, "check_plant lets no such entry through"
            self.platforms.append(PlatformUplink(
                p, source, tags[source], cfg.site.timezone, cfg.clock.minute_seconds,
                cfg.constants.co2_density_kg_m3, history, on_event))

    async def start(self) -> None:
        """Open every platform's outbox and start its connection."""
        for p in self.platforms:
            await p.start()

    async def on_samples(self, block: SampleBlock) -> None:
        """Keep the latest readings for real-time data."""
        for p in self.platforms:
            p.samples(block)

    async def on_minute(self, result: MinuteResult) -> None:
        """Hand each platform its minute (no I/O here)."""
        for p in self.platforms:
            p.minute(result)

    async def on_period(self, records: PeriodRecords) -> None:
        """Hand each platform its closed hour or day (no I/O here)."""
        for p in self.platforms:
            p.period(records)

    async def on_revised_period(self, revised: RevisedPeriod) -> None:
        """Hand each platform an hour or day calculated again after an entry: the platform
        gets it again, whenever it was first sent (no I/O here)."""
        for p in self.platforms:
            p.period(revised.records, revised=True)

    def pending_batches(self) -> int:
        """Uploads stored in the platforms' outboxes and not yet acknowledged (/metrics)."""
        return int(sum(p.stats["outbox_uploads"] for p in self.platforms))

    def stats(self) -> dict[str, float]:
        """The platforms' figures summed, named as in STAT_NAMES ("connected": how many
        are), for the metrics endpoint (carbonscada_sink_*{sink="hj212"})."""
        return {key: float(sum(p.stats[key] for p in self.platforms)) for key in STAT_NAMES}

    async def stop(self) -> None:
        """Stop every platform (what is pending goes to its outbox)."""
        for p in self.platforms:
            await p.stop()
