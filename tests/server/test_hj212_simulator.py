"""The HJ 212 platform simulator against a raw asyncio data logger speaking codec frames."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from server.hj212.codec import (
    FLAG_ACK,
    VERSION_2017,
    FrameReader,
    Hj212Error,
    Packet,
    crc16,
    encode,
    format_cp,
    parse_cp,
    split,
)
from server.hj212.simulator import PlatformSimulator, cp_items, describe

MN = "010000A8900016F000169DC0"
PW = "123456"


def upload(qn: str, cn: str = "2051", *, ack: bool = True, n_codes: int = 2,
           data_time: str = "20240301080000") -> Packet:
    """A data upload of `n_codes` codes whose values are 1.5 × the code's number."""
    groups: list[dict[str, str]] = [{"DataTime": data_time}]
    groups += [{f"a{i:05d}-Avg": f"{1.5 * i:.2f}", f"a{i:05d}-Flag": "N"} for i in range(n_codes)]
    return Packet(qn=qn, st="31", cn=cn, pw=PW, mn=MN,
                  flag=VERSION_2017 | (FLAG_ACK if ack else 0), cp=format_cp(groups))


class Logger:
    """A bare data logger: sends frames, keeps what the platform sends, answers commands."""

    def __init__(self) -> None:
        self.got: list[Packet] = []
        self.errors: list[Hj212Error] = []
        self.clock = "20240301083000"
        self.answer = True
        self.closed = asyncio.Event()

    async def connect(self, port: int) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", port)
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        self.writer.close()
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)

    async def send(self, *frames: bytes) -> None:
        for f in frames:
            self.writer.write(f)
        await self.writer.drain()

    async def _run(self) -> None:
        frames = FrameReader()
        try:
            while data := await self.reader.read(4096):
                for item in frames.feed(data):
                    if isinstance(item, Hj212Error):
                        self.errors.append(item)
                        continue
                    self.got.append(item)
                    if self.answer and item.cn != "9014":
                        await self._answer(item)
        except ConnectionError:
            pass
        finally:
            self.closed.set()

    def _reply(self, req: Packet, cn: str, cp: str, st: str = "91") -> bytes:
        return encode(Packet(qn=req.qn, st=st, cn=cn, pw=PW, mn=MN, flag=VERSION_2017, cp=cp))

    async def _answer(self, req: Packet) -> None:
        out = [self._reply(req, "9011", "QnRtn=1")]
        items = cp_items(req)
        if req.cn in ("2051", "2061", "2031"):
            # two history records, with the request's QN, the second one split in pieces
            out.append(encode(upload(req.qn, req.cn, ack=False, data_time=items["BeginTime"])))
            # the logger's own real-time upload of the same millisecond: the same QN
            out.append(encode(upload(req.qn, "2011", ack=False, data_time=items["BeginTime"])))
            out += [encode(q) for q in split(upload(req.qn, req.cn, ack=False, n_codes=60,
                                                    data_time=items["EndTime"]))]
        elif req.cn == "1011":
            out.append(self._reply(req, "1011", f"SystemTime={self.clock}", st="31"))
        elif req.cn == "1062":
            self.rtd_interval = items["RtdInterval"]
        out.append(self._reply(req, "9012", "ExeRtn=1"))
        await self.send(*out)

    async def wait(self, n: int, timeout: float = 5.0) -> None:
        async def until() -> None:
            while len(self.got) < n:
                await asyncio.sleep(0.01)
        await asyncio.wait_for(until(), timeout)


@pytest.fixture
async def sim() -> AsyncIterator[PlatformSimulator]:
    s = PlatformSimulator(tz="Asia/Shanghai", pw=PW, mn=MN)
    await s.start()
    yield s
    await s.stop()


@pytest.fixture
async def logger(sim: PlatformSimulator) -> AsyncIterator[Logger]:
    lg = Logger()
    await lg.connect(sim.port)
    await sim.wait_connected()
    yield lg
    await lg.close()


async def test_upload_is_kept_and_acknowledged(sim: PlatformSimulator, logger: Logger) -> None:
    await logger.send(encode(upload("20240301080000001")))
    await sim.wait_for(lambda: len(sim.received) == 1)
    p = sim.received[0]
    assert p.cn == "2051" and p.mn == MN
    assert parse_cp(p.cp)[2] == {"a00001-Avg": "1.50", "a00001-Flag": "N"}
    await logger.wait(1)
    ack = logger.got[0]
    assert (ack.qn, ack.st, ack.cn, ack.mn, ack.flag, ack.cp) == (
        "20240301080000001", "91", "9014", MN, 4, "")
    # no acknowledgement asked, none sent
    await logger.send(encode(upload("20240301080000002", ack=False)))
    await sim.wait_for(lambda: len(sim.received) == 2)
    assert sim.acks_sent == ["20240301080000001"]
    assert sim.errors == []


async def test_withheld_and_delayed_acks(sim: PlatformSimulator, logger: Logger) -> None:
    sim.withhold_acks = True
    await logger.send(encode(upload("20240301080000001")))
    await sim.wait_for(lambda: len(sim.received) == 1)
    await asyncio.sleep(0.2)
    assert logger.got == [] and sim.acks_sent == []
    sim.withhold_acks = False
    sim.ack_delay_s = 0.6
    await logger.send(encode(upload("20240301080000002")))
    await sim.wait_for(lambda: len(sim.received) == 2)
    assert logger.got == []            # not yet: the ack is delayed
    await logger.wait(1)
    assert [p.qn for p in logger.got] == ["20240301080000002"]


async def test_split_upload_is_joined_and_acked_once(sim: PlatformSimulator,
                                                     logger: Logger) -> None:
    whole = upload("20240301080000003", n_codes=80)
    pieces = split(whole)
    assert len(pieces) >= 3
    frames = [encode(q) for q in pieces]
    # out of order, the first piece resent before the set is complete, fed byte-chunked
    stream = b"".join([frames[1], frames[0], frames[0], *frames[2:]])
    for i in range(0, len(stream), 333):
        await logger.send(stream[i:i + 333])
    await sim.wait_for(lambda: len(sim.received) == 1)
    assert sim.received[0] == whole
    assert len(sim.frames) == len(pieces) + 1
    await logger.wait(1)
    assert [p.cn for p in logger.got] == ["9014"]


def _frame(seg: bytes) -> bytes:
    return b"##%04d%s%04X\r\n" % (len(seg), seg, crc16(seg))


async def test_invalid_frames_are_errors_and_the_next_one_is_kept(sim: PlatformSimulator,
                                                                  logger: Logger) -> None:
    good = encode(upload("20240301080000004"))
    bad_crc = good[:-6] + b"0000\r\n"
    unknown_cn = encode(Packet(qn="20240301080000005", st="31", cn="4321", pw=PW, mn=MN,
                               flag=5, cp=""))
    wrong_pw = encode(Packet(qn="20240301080000006", st="31", cn="2051", pw="999999", mn=MN,
                             flag=5, cp="DataTime=20240301080000"))
    no_time = encode(Packet(qn="20240301080000007", st="31", cn="2051", pw=PW, mn=MN,
                            flag=5, cp="a05001-Avg=1"))
    await logger.send(b"noise" + bad_crc + unknown_cn + wrong_pw + no_time + good)
    await sim.wait_for(lambda: len(sim.received) == 1)
    assert sim.received[0].qn == "20240301080000004"
    text = "\n".join(sim.errors)
    assert "garbage" in text and "CRC" in text and "unknown CN=4321" in text
    assert "wrong PW '999999'" in text and "without DataTime" in text
    assert len(sim.errors) == 5


async def test_request_history(sim: PlatformSimulator, logger: Logger) -> None:
    await logger.send(encode(upload("20240301080000001")))      # the logger's ST is learnt
    await sim.wait_for(lambda: len(sim.received) == 1)
    begin = datetime(2024, 3, 1, 0, 0, tzinfo=UTC)                # 08:00 in Shanghai
    end = datetime(2024, 3, 1, 0, 59, tzinfo=UTC)
    result = await sim.request_history("2051", begin, end)
    req = next(p for p in logger.got if p.cn == "2051")
    assert req.st == "31" and req.flag == 5 and req.mn == MN and req.pw == PW
    assert parse_cp(req.cp) == [{"BeginTime": "20240301080000", "EndTime": "20240301085900"}]
    assert result.qn == req.qn and result.qn_rtn == 1 and result.exe_rtn == 1
    assert [p.cn for p in result.data] == ["2051", "2051"]      # not the 2011 of that QN
    assert any(p.cn == "2011" and p.qn == result.qn for p in sim.received)
    assert cp_items(result.data[0])["DataTime"] == "20240301080000"
    assert cp_items(result.data[1])["a00059-Avg"] == "88.50"       # the split one, joined
    with pytest.raises(Hj212Error, match="CN=2011 is not a history request"):
        await sim.request_history("2011", begin, end)


async def test_clock_and_interval_commands(sim: PlatformSimulator, logger: Logger) -> None:
    logger.clock = "20240301083015"
    assert await sim.get_time() == datetime(2024, 3, 1, 0, 30, 15, tzinfo=UTC)
    result = await sim.set_rtd_interval(45)
    assert result.exe_rtn == 1 and logger.rtd_interval == "45"
    req = next(p for p in logger.got if p.cn == "1062")
    assert req.cp == "RtdInterval=45"
    with pytest.raises(Hj212Error, match="has no MinInterval"):
        await sim.get_min_interval()
    logger.answer = False
    with pytest.raises(TimeoutError, match=r"not met within 0\.3 s"):
        await sim.set_timeout(5, 3, timeout=0.3)
    assert next(p for p in logger.got if p.cn == "1000").cp == "OverTime=5,ReCount=3"


async def test_drop_and_refuse_connections(sim: PlatformSimulator, logger: Logger) -> None:
    await sim.drop_connections()
    await asyncio.wait_for(logger.closed.wait(), 5)
    assert not sim.connected
    port = sim.port
    sim.refuse_connections = True
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)
    with pytest.raises(Hj212Error, match="no data logger connected"):
        await sim.send(upload("20240301080000001"))
    sim.refuse_connections = False
    await sim.wait_for(lambda: sim.listening)
    again = Logger()
    await again.connect(port)
    await again.send(encode(upload("20240301080000009")))
    await sim.wait_for(lambda: len(sim.received) == 1)
    assert sim.connections_accepted == 2
    assert "CN=2051 QN=20240301080000009" in describe(sim.received[0])
    await again.close()


async def test_cli_platform_prints_each_packet() -> None:
    exe = str(Path(sys.executable).parent / "carbonscada")
    proc = await asyncio.create_subprocess_exec(
        exe, "hj212-platform", "--port", "0", stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        first = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        port = int(first.rsplit(":", 1)[1])
        lg = Logger()
        await lg.connect(port)
        await lg.send(b"junk" + encode(upload("20240301080000001", n_codes=2)))
        line = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode()
        assert ("CN=2051 QN=20240301080000001 MN=010000A8900016F000169DC0 "
                "DataTime=20240301080000 a00000-Avg=0.00 a00000-Flag=N a00001-Avg=1.50 "
                "a00001-Flag=N") in line
        error = (await asyncio.wait_for(proc.stderr.readline(), 10)).decode()
        assert "ERROR HJ 212 stream: 4 bytes of garbage" in error
        await lg.wait(1)
        assert lg.got[0].cn == "9014"
        await lg.close()
    finally:
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 30) == 0


async def test_outage_closes_the_link_and_refuses_until_over(sim: PlatformSimulator,
                                                             logger: Logger) -> None:
    sim.refuse_connections = True
    await asyncio.wait_for(logger.closed.wait(), 5)
    assert not sim.listening and not sim.connected
    for _ in range(3):
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", sim.port)
    sim.refuse_connections = False
    await sim.wait_for(lambda: sim.listening)
    again = Logger()
    await again.connect(sim.port)
    await sim.wait_connected()
    assert await sim.get_time() == datetime(2024, 3, 1, 0, 30, tzinfo=UTC)
    await again.close()
