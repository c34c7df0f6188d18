"""The platform (server) side of HJ 212-2017 over asyncio TCP, for tests and the demo.

`PlatformSimulator` accepts data loggers, validates every frame (CRC, syntax, known CN, CP
text), joins split packets, acknowledges uploads that ask for it with 9014 (unless told to
withhold them), and sends platform commands to the connected logger: history requests,
clock and interval reads / sets, timeout and resend count.

Command flow (HJ 212-2017): the platform sends the request with Flag = version | A; the
logger answers 9011 (QnRtn) with the request's QN, then for a read the data (the same QN:
1011 SystemTime, 1061 RtdInterval, 1063 MinInterval, 2051 / 2061 / 2031 history packets),
and last 9012 (ExeRtn) with the request's QN. Platform requests carry the logger's ST.

Acknowledgement of a split packet: one 9014 with its QN once all its pieces have arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TextIO

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
    format_cp,
    hj_qn,
    hj_time,
    join,
    parse_cp,
    parse_hj_time,
    split,
)

log = logging.getLogger("carbonscada.hj212.platform")

DATA_CNS = frozenset({CN_RTD, CN_MINUTE, CN_HOUR, CN_DAY})
HISTORY_CNS = frozenset({CN_MINUTE, CN_HOUR, CN_DAY})
# CNs a data logger sends to a platform: uploads, replies, the answers to reads, the
# logger's own time-calibration request (1013) and notifications (9013, 2081 start/stop)
KNOWN_CNS = DATA_CNS | frozenset({CN_REQUEST_REPLY, CN_EXEC_REPLY, "9013", CN_GET_TIME, "1013",
                                  CN_GET_RTD_INTERVAL, CN_GET_MIN_INTERVAL, "2081"})


@dataclass
class CommandResult:
    """A platform command's exchange: its QN, the 9011, the data packets and the 9012."""

    qn: str
    request_reply: Packet | None = None
    data: list[Packet] = field(default_factory=list)
    exec_reply: Packet | None = None

    @property
    def qn_rtn(self) -> int | None:
        """The logger's QnRtn (1 = accepted), None without a 9011."""
        return _int_item(self.request_reply, "QnRtn")

    @property
    def exe_rtn(self) -> int | None:
        """The logger's ExeRtn (1 = done), None without a 9012."""
        return _int_item(self.exec_reply, "ExeRtn")


def _int_item(p: Packet | None, key: str) -> int | None:
    if p is None:
        return None
    value = cp_items(p).get(key)
    return int(value) if value is not None and value.isdigit() else None


def cp_items(p: Packet) -> dict[str, str]:
    """All CP items of `p` in one mapping (later groups override earlier ones)."""
    out: dict[str, str] = {}
    for group in parse_cp(p.cp):
        out.update(group)
    return out


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.frames = FrameReader()
        self.pieces: dict[tuple[str, str, str], dict[int, Packet]] = {}
        self.mn = ""
        self.st = ""
        self.pw = ""
        self.task: asyncio.Task[None] | None = None

    async def send(self, frames: list[bytes]) -> None:
        for f in frames:
            self.writer.write(f)
        await self.writer.drain()


class PlatformSimulator:
    """An HJ 212-2017 platform: accepts loggers, validates and keeps what they send, acks, asks."""

    def __init__(self, *, tz: str = "Asia/Shanghai", pw: str = "", mn: str = "",
                 withhold_acks: bool = False, ack_delay_s: float = 0.0,
                 on_packet: Callable[[Packet], None] | None = None,
                 on_error: Callable[[str], None] | None = None) -> None:
        """A simulator of plant time zone `tz`; `pw` / `mn` when set are checked on every frame."""
        self.tz = tz
        self.pw = pw
        self.mn = mn
        self.withhold_acks = withhold_acks
        self.ack_delay_s = ack_delay_s
        self.on_packet = on_packet
        self.on_error = on_error
        self.received: list[Packet] = []      # valid packets, split ones joined, in order
        self.frames: list[Packet] = []        # every valid frame as it came (pieces too)
        self.errors: list[str] = []
        self.acks_sent: list[str] = []        # QNs acknowledged with 9014
        self.connections_accepted = 0
        self._conns: list[_Conn] = []
        self._server: asyncio.Server | None = None
        self._host = "127.0.0.1"
        self._port = 0
        self._refuse = False
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._qn_last = ""
        self._listen_task: asyncio.Task[None] | None = None

    # --- life cycle ---

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on host:port (0: a free port, see `port`)."""
        self._host = host
        self._port = port
        await self._listen()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, self._host, self._port)
        self._port = self._server.sockets[0].getsockname()[1]
        self._notify()

    @property
    def port(self) -> int:
        """The TCP port listened on."""
        return self._port

    @property
    def listening(self) -> bool:
        """Whether connections are accepted now."""
        return self._server is not None

    async def stop(self) -> None:
        """Stop listening and close every connection."""
        if self._listen_task is not None:
            self._listen_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listen_task
        await self._close_listener()
        await self.drop_connections()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _close_listener(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    async def drop_connections(self) -> None:
        """Close every logger connection (the listener stays)."""
        conns, self._conns = self._conns, []
        for conn in conns:
            conn.writer.close()
        for conn in conns:
            with contextlib.suppress(ConnectionError, OSError):
                await conn.writer.wait_closed()
            if conn.task is not None and conn.task is not asyncio.current_task():
                conn.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await conn.task
        self._notify()

    @property
    def refuse_connections(self) -> bool:
        """An outage: while True nothing listens (connects are refused) and no link stays up."""
        return self._refuse

    @refuse_connections.setter
    def refuse_connections(self, value: bool) -> None:
        if value == self._refuse:
            return
        self._refuse = value
        if value:
            server, self._server = self._server, None
            if server is not None:
                server.close()   # stops listening at once; connects are refused from now on
            for conn in self._conns:
                conn.writer.close()
            self._conns = []
        else:
            # listening again on the same port needs the loop; wait_for(lambda: sim.listening)
            self._listen_task = asyncio.get_running_loop().create_task(self._listen())
        self._notify()

    @property
    def connected(self) -> bool:
        """Whether a data logger is connected."""
        return bool(self._conns)

    # --- waiting ---

    def _notify(self) -> None:
        self._changed.set()

    async def wait_for(self, pred: Callable[[], bool], timeout: float = 5.0) -> None:
        """Return once `pred()` holds; TimeoutError (naming what arrived) after `timeout` s."""
        deadline = time.monotonic() + timeout
        while not pred():
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"HJ 212 platform: condition not met within {timeout} s; "
                                   f"received CNs {[p.cn for p in self.received][-20:]}, "
                                   f"errors {self.errors[-5:]}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 0.5))

    async def wait_connected(self, timeout: float = 5.0) -> None:
        """Return once a data logger is connected."""
        await self.wait_for(lambda: self.connected, timeout)

    # --- receiving ---

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._refuse:
            writer.close()
            return
        conn = _Conn(reader, writer)
        conn.task = asyncio.current_task()
        self._conns.append(conn)
        self.connections_accepted += 1
        self._notify()
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                for item in conn.frames.feed(data):
                    if isinstance(item, Hj212Error):
                        self._error(str(item))
                    else:
                        await self._on_frame(conn, item)
        except (ConnectionError, OSError):
            pass
        finally:
            if conn in self._conns:
                self._conns.remove(conn)
            writer.close()
            self._notify()

    def _error(self, text: str) -> None:
        self.errors.append(text)
        if self.on_error is not None:
            self.on_error(text)
        else:
            log.warning("%s", text)
        self._notify()

    def _check(self, p: Packet) -> str | None:
        if p.cn not in KNOWN_CNS:
            return f"HJ 212 platform: unknown CN={p.cn} (QN={p.qn})"
        if self.mn and p.mn != self.mn:
            return f"HJ 212 platform: MN={p.mn} is not the expected {self.mn} (CN={p.cn})"
        if self.pw and p.pw != self.pw:
            return f"HJ 212 platform: wrong PW {p.pw!r} (CN={p.cn} QN={p.qn})"
        if p.flag & 0xFC != VERSION_2017:
            return f"HJ 212 platform: Flag={p.flag} is not protocol version HJ 212-2017"
        if not p.qn:
            return f"HJ 212 platform: CN={p.cn} without QN"
        try:
            items = cp_items(p)
            if p.cn in DATA_CNS and p.pno in (None, 1):
                if "DataTime" not in items:
                    return f"HJ 212 platform: CN={p.cn} QN={p.qn} without DataTime"
                parse_hj_time(items["DataTime"], self.tz)
        except Hj212Error as exc:
            return f"{exc} (CN={p.cn} QN={p.qn})"
        return None

    async def _on_frame(self, conn: _Conn, p: Packet) -> None:
        problem = self._check(p)
        if problem is not None:
            self._error(problem)
            return
        conn.mn, conn.pw = p.mn, p.pw
        if p.st != ST_SYSTEM:
            conn.st = p.st
        self.frames.append(p)
        whole: Packet | None = p
        if p.pnum is not None and p.pno is not None:
            key = (p.mn, p.qn, p.cn)
            pieces = conn.pieces.setdefault(key, {})
            pieces[p.pno] = p       # a resent piece replaces its first copy
            whole = None
            if len(pieces) == p.pnum:
                del conn.pieces[key]
                try:
                    whole = join(pieces.values())
                except Hj212Error as exc:
                    self._error(str(exc))
                    return
        if whole is None:
            self._notify()
            return
        self.received.append(whole)
        if self.on_packet is not None:
            self.on_packet(whole)
        self._notify()
        if whole.flag & FLAG_ACK and whole.cn in DATA_CNS and not self.withhold_acks:
            ack = Packet(qn=whole.qn, st=ST_SYSTEM, cn=CN_ACK_DATA, pw=whole.pw, mn=whole.mn,
                         flag=VERSION_2017, cp="")
            if self.ack_delay_s > 0:
                task = asyncio.get_running_loop().create_task(self._ack_later(conn, ack))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            else:
                await self._send_ack(conn, ack)

    async def _ack_later(self, conn: _Conn, ack: Packet) -> None:
        await asyncio.sleep(self.ack_delay_s)
        if conn in self._conns and not self.withhold_acks:
            await self._send_ack(conn, ack)

    async def _send_ack(self, conn: _Conn, ack: Packet) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            await conn.send([encode(ack)])
            self.acks_sent.append(ack.qn)
            self._notify()

    # --- commands to the logger ---

    def _new_qn(self) -> str:
        qn = hj_qn(datetime.now(UTC), self.tz)
        # QNs identify exchanges: keep them strictly increasing within a millisecond
        if qn <= self._qn_last:
            qn = str(int(self._qn_last) + 1)
        self._qn_last = qn
        return qn

    async def send(self, p: Packet) -> None:
        """Send `p` (split when long) to the connected logger; Hj212Error when none is."""
        if not self._conns:
            raise Hj212Error("HJ 212 platform: no data logger connected")
        await self._conns[-1].send([encode(q) for q in split(p)])

    async def command(self, cn: str, cp: str = "", timeout: float = 10.0) -> CommandResult:
        """Send command `cn` with CP text `cp`; return the exchange once the 9012 arrived.

        Waits for the 9011 and, for a refused request (QnRtn ≠ 1), returns without a 9012.
        """
        if not self._conns:
            await self.wait_connected(timeout)
        conn = self._conns[-1]
        if not (conn.mn or self.mn):
            raise Hj212Error("HJ 212 platform: the logger's MN is not known yet (it has sent "
                             "nothing): give the simulator mn=")
        qn = self._new_qn()
        req = Packet(qn=qn, st=conn.st or "31", cn=cn, pw=conn.pw or self.pw, mn=conn.mn or self.mn,
                     flag=VERSION_2017 | FLAG_ACK, cp=cp)
        start = len(self.received)
        await self.send(req)
        result = CommandResult(qn=qn)

        def done() -> bool:
            result.data = []
            for q in self.received[start:]:
                if q.qn != qn:
                    continue
                if q.cn == CN_REQUEST_REPLY:
                    result.request_reply = q
                elif q.cn == CN_EXEC_REPLY:
                    result.exec_reply = q
                elif q.cn == cn:
                    # QNs are request times in ms, so the logger's own upload of the same
                    # millisecond may share ours: its answers carry our CN, its uploads not
                    result.data.append(q)
            refused = result.qn_rtn not in (None, 1)
            return result.exec_reply is not None or refused

        await self.wait_for(done, timeout)
        return result

    async def request_history(self, cn: str, begin: datetime, end: datetime,
                              timeout: float = 10.0) -> CommandResult:
        """Ask the logger for its minute (2051), hour (2061) or day (2031) data of [begin, end]."""
        if cn not in HISTORY_CNS:
            raise Hj212Error(f"HJ 212 platform: CN={cn} is not a history request "
                             f"({', '.join(sorted(HISTORY_CNS))})")
        cp = format_cp([{"BeginTime": hj_time(begin, self.tz), "EndTime": hj_time(end, self.tz)}])
        return await self.command(cn, cp, timeout)

    async def get_time(self, timeout: float = 10.0) -> datetime:
        """The logger's clock (1011 SystemTime), as UTC."""
        result = await self.command(CN_GET_TIME, "", timeout)
        return parse_hj_time(self._item(result, "SystemTime"), self.tz)

    async def set_time(self, t: datetime, timeout: float = 10.0) -> CommandResult:
        """Set the logger's clock to `t` (1012)."""
        return await self.command(CN_SET_TIME, format_cp([{"SystemTime": hj_time(t, self.tz)}]),
                                  timeout)

    async def get_rtd_interval(self, timeout: float = 10.0) -> int:
        """The logger's real-time upload interval in seconds (1061 RtdInterval)."""
        return int(self._item(await self.command(CN_GET_RTD_INTERVAL, "", timeout),
                              "RtdInterval"))

    async def set_rtd_interval(self, interval_s: int, timeout: float = 10.0) -> CommandResult:
        """Set the real-time upload interval in seconds (1062)."""
        return await self.command(CN_SET_RTD_INTERVAL,
                                  format_cp([{"RtdInterval": str(interval_s)}]), timeout)

    async def get_min_interval(self, timeout: float = 10.0) -> int:
        """The logger's minute-data interval in minutes (1063 MinInterval)."""
        return int(self._item(await self.command(CN_GET_MIN_INTERVAL, "", timeout),
                              "MinInterval"))

    async def set_min_interval(self, interval_min: int, timeout: float = 10.0) -> CommandResult:
        """Set the minute-data interval in minutes (1064)."""
        return await self.command(CN_SET_MIN_INTERVAL,
                                  format_cp([{"MinInterval": str(interval_min)}]), timeout)

    async def set_timeout(self, overtime_s: int, recount: int,
                          timeout: float = 10.0) -> CommandResult:
        """Set the logger's reply timeout in seconds and resend count (1000)."""
        return await self.command(
            CN_TIMEOUT, format_cp([{"OverTime": str(overtime_s), "ReCount": str(recount)}]),
            timeout)

    @staticmethod
    def _item(result: CommandResult, key: str) -> str:
        for p in result.data:
            value = cp_items(p).get(key)
            if value is not None:
                return value
        raise Hj212Error(f"HJ 212 platform: the reply to QN={result.qn} has no {key} "
                         f"(got {[p.cn for p in result.data]})")


def describe(p: Packet) -> str:
    """One line for a received packet: CN, QN, DataTime and the CP items."""
    try:
        items = cp_items(p)
    except Hj212Error:
        items = {"CP": p.cp}
    data_time = items.pop("DataTime", "")
    values = " ".join(f"{k}={v}" for k, v in items.items())
    return f"CN={p.cn} QN={p.qn} MN={p.mn} DataTime={data_time or '-'} {values}"


async def serve(host: str, port: int, *, tz: str, withhold_acks: bool = False,
                ack_delay_s: float = 0.0, out: TextIO = sys.stdout,
                err: TextIO = sys.stderr) -> None:
    """Run a simulator until SIGINT / SIGTERM, printing each received packet on one line."""

    def printed(p: Packet) -> None:
        print(f"{hj_time(datetime.now(UTC), tz)} {describe(p)}", file=out, flush=True)

    def failed(text: str) -> None:
        print(f"{hj_time(datetime.now(UTC), tz)} ERROR {text}", file=err, flush=True)

    sim = PlatformSimulator(tz=tz, withhold_acks=withhold_acks, ack_delay_s=ack_delay_s,
                            on_packet=printed, on_error=failed)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await sim.start(host, port)
    print(f"HJ 212 platform simulator listening on {host}:{sim.port}", file=out, flush=True)
    try:
        await stop.wait()
    finally:
        await sim.stop()
