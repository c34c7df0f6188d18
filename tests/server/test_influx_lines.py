"""server/influx/lines.py: line protocol of whole blocks and minutes, and how the sink sends it."""

from __future__ import annotations

import contextlib
import gzip
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from aiohttp import web

from model.flags import DataFlag
from model.records import (
    MinuteResult,
    RevisedMinute,
    RevisedMinutes,
    Sample,
    SampleBlock,
    SourceColumns,
    TagTable,
)
from server.influx.config import InfluxConfig
from server.influx.lines import (
    block_lines,
    minute_lines,
    revised_lines,
    timestamps_ns,
    value_texts,
)
from server.influx.sink import InfluxSink, result_lines, sample_lines
from tests.conftest import free_port
from tests.fixtures.victoria import VictoriaMetrics
from tests.server.test_influx import T0, T0_MS, make_config, minute, series, wait_until

NAN = float("nan")
T0_S = T0.timestamp()  # 1709280000.0


def test_value_texts_are_repr_without_point_zero() -> None:
    got = value_texts(np.array([3282.0, 835718.9, 1e20, -0.25, -0.0, 0.0, 1e16,
                                9999999999999998.0, 0.1 + 0.2, 1e-7, -12.0,
                                float(np.float32(1.1))]))
    assert got == ["3282", "835718.9", "1e+20", "-0.25", "-0", "0", "1e+16",
                   "9999999999999998", "0.30000000000000004", "1e-07", "-12",
                   "1.100000023841858"]
    assert value_texts(np.array([1.5, 2.25])) == ["1.5", "2.25"]  # none integral
    assert value_texts(np.array([7.0, -3.0])) == ["7", "-3"]  # all integral


def test_timestamps_round_to_microseconds_like_datetime() -> None:
    # Half to even on the microseconds, as datetime.fromtimestamp rounds them.
    got = timestamps_ns(np.array([1709280001.5, 1709280000.0000005, 2.5e-6, 3.5e-6, -1.5e-6,
                                  1709280000.123456789]))
    assert got.tolist() == [1709280001_500000000, 1709280000_000000000, 2000, 4000, -2000,
                            1709280000_123457000]
    rng = np.random.default_rng(7)
    times = np.concatenate([1.7e9 + rng.random(2000) * 1e7, rng.random(500) * 1e-3 - 5e-4,
                            np.round(1.7e9 + rng.random(500) * 100, 6) + 5e-7])
    expected = [(datetime.fromtimestamp(t, UTC) - datetime(1970, 1, 1, tzinfo=UTC))
                // timedelta(microseconds=1) * 1000 for t in times.tolist()]
    assert timestamps_ns(times).tolist() == expected


def test_block_lines_worked_example() -> None:
    table = TagTable(("s1_co2", "s1 temp", "odd tag,x=1", "", "ends\\", "s1_o2"))
    block = SampleBlock(
        table,
        times=np.array([T0_S + 1.5, T0_S, T0_S, T0_S + 2, T0_S + 2, T0_S + 3, T0_S + 3]),
        rows=np.array([0, 1, 2, 3, 4, 0, 5], np.int32),
        values=np.array([12.25, 50.0, -0.5, 1e20, NAN, float("inf"), -0.0]),
        flags=np.array([DataFlag.N, DataFlag.D, DataFlag.B, DataFlag.N, DataFlag.N,
                        DataFlag.N, DataFlag.M], np.uint8))
    assert block_lines(block, "site 1") == [
        r"sample,site=site\ 1,tag=s1_co2,flag=N value=12.25 1709280001500000000",
        r"sample,site=site\ 1,tag=s1\ temp,flag=D value=50 1709280000000000000",
        r"sample,site=site\ 1,tag=odd\ tag\,x\=1,flag=B value=-0.5 1709280000000000000",
        r"sample,site=site\ 1,flag=N value=1e+20 1709280002000000000",  # empty tag: no tag=
        # NaN and inf are left out
        r"sample,site=site\ 1,tag=s1_o2,flag=M value=-0 1709280003000000000",
    ]
    assert block_lines(block, "")[0] == (
        "sample,tag=s1_co2,flag=N value=12.25 1709280001500000000")
    empty = SampleBlock(table, np.array([T0_S]), np.array([0], np.int32), np.array([NAN]),
                        np.array([0], np.uint8))
    assert block_lines(empty, "site1") == []


def test_block_lines_unknown_flag() -> None:
    block = SampleBlock(TagTable(("a",)), np.array([T0_S]), np.array([0], np.int32),
                        np.array([1.0]), np.array([200], np.uint8))
    with pytest.raises(ValueError, match="200 is not a DataFlag"):
        block_lines(block, "site1")


def test_block_lines_match_per_sample_lines() -> None:
    rng = np.random.default_rng(3)
    tags = (*[f"dev{i // 10}_t{i % 10}" for i in range(60)], "a b,c=d", "x\\", "", "new\nline")
    table = TagTable(tags)
    n = 6000
    values = rng.normal(0, 1e3, n)
    values[::3] = np.round(values[::3])
    values[::11] = NAN
    values[::13] = -np.inf
    times = np.repeat(T0_S + np.arange(n // 50) * 0.1, 50)  # polls: runs of equal times
    times[::7] += rng.random(len(times[::7]))
    block = SampleBlock(table, times, rng.integers(0, len(tags), n).astype(np.int32), values,
                        rng.integers(0, len(DataFlag), n).astype(np.uint8))
    expected = sample_lines(block.samples(), "plant A,1")
    assert len(expected) == n - len(range(0, n, 11)) - len(range(0, n, 13)) + len(
        range(0, n, 143))
    assert block_lines(block, "plant A,1") == expected


def test_prefix_cache_is_per_table_and_site() -> None:
    # Tables come and go (tests, tools): a later table never gets an earlier one's names.
    for k in range(20):
        table = TagTable((f"tag{k}",))
        block = SampleBlock(table, np.array([T0_S]), np.array([0], np.int32),
                            np.array([float(k)]), np.array([0], np.uint8))
        assert block_lines(block, f"site{k % 3}") == [
            f"sample,site=site{k % 3},tag=tag{k},flag=N value={k} 1709280000000000000"]


def _columns(n: int) -> SourceColumns:
    rng = np.random.default_rng(11)

    def col() -> npt.NDArray[np.float64]:
        c = np.round(rng.normal(1000, 500, n), 2)
        c[rng.random(n) < 0.05] = NAN
        return c

    return SourceColumns(
        sources=tuple(f"S {i}" if i % 5 else f"S,{i}=" for i in range(n)),
        units=tuple("" if i % 13 == 0 else f"U{i // 10}" for i in range(n)),
        flow_act_m3_h=col(), flow_std_dry_m3_h=col(), co2_dry_pct=col(), co2_mg_m3=col(),
        co2_rate_kg_h=col(), co2_kg=col(), flag=rng.integers(0, 8, n).astype(np.uint8),
        substitution=np.zeros(n, np.int64), rules=("",), co2_hour_t=col(), co2_today_t=col(),
        co2_ytd_t=col())


def test_minute_lines_worked_example() -> None:
    ns = "1709280000000000000"
    assert minute_lines(minute(), "plant 1") == [
        r"co2_source,site=plant\ 1,unit=U1,source=S1,flag=N flow_act_m3_h=1080000,"
        "flow_std_dry_m3_h=835718.9,co2_dry_pct=12,co2_mg_m3=235680,co2_rate_kg_h=196962.2,"
        "co2_kg=3282.7,co2_hour_t=3.2827,co2_today_t=1575.7,co2_ytd_t=98765.4,valid=true "
        + ns,
        r"co2_unit,site=plant\ 1,unit=U1,flag=N output_mwh=10,co2_kg=3282.7,"
        "intensity_t_mwh=0.32827,co2_today_t=1575.7,output_today_mwh=4800,co2_ytd_t=98765.4,"
        "valid=true " + ns,
        r"co2_site,site=plant\ 1 co2_kg=3282.7,co2_today_t=1575.7,co2_ytd_t=98765.4,"
        "allowance_annual_t=4000000,allowance_used_pct=2.469135,"
        "allowance_headroom_t=3901234.6 " + ns,
    ]
    base = minute()
    nan_source = base.replace(sources=(base.sources[0].__class__(
        source="S2", unit="", t=T0, flow_act_m3_h=NAN, flow_std_dry_m3_h=NAN, co2_dry_pct=NAN,
        co2_mg_m3=NAN, co2_rate_kg_h=NAN, co2_kg=NAN, valid=False, flag=DataFlag.B,
        co2_hour_t=NAN, co2_today_t=NAN, co2_ytd_t=NAN),))
    assert minute_lines(nan_source, "s")[0] == (
        "co2_source,site=s,source=S2,flag=B valid=false " + ns)


def test_minute_lines_match_result_lines() -> None:
    base = minute()
    cols = _columns(800)
    from_columns = MinuteResult(t=T0, units=base.units, site=base.site, source_columns=cols)
    expected = result_lines(from_columns, "plant A")  # records built from the columns
    assert len(expected) == 802
    assert minute_lines(from_columns, "plant A") == expected
    from_records = MinuteResult(t=T0, sources=from_columns.sources, units=base.units,
                                site=base.site)
    assert minute_lines(from_records, "plant A") == expected
    assert minute_lines(from_records, "") == result_lines(from_records, "")


# --- the sink --------------------------------------------------------------------------------


async def test_big_block_round_trip(tmp_path: Path, victoria_metrics: VictoriaMetrics) -> None:
    # 50 tags x 200 polls = 10 000 readings: built in a worker thread, sent uncompressed.
    table = TagTable(tuple(f"t{i:02d}" for i in range(50)))
    polls = 200
    rows = np.tile(np.arange(50, dtype=np.int32), polls)
    times = T0_S + np.repeat(np.arange(polls) * 0.5, 50)
    values = rows * 10.0 + np.repeat(np.arange(polls), 50) / 4
    block = SampleBlock(table, times, rows, values, np.zeros(len(rows), np.uint8))
    config = InfluxConfig(url=victoria_metrics.url, outbox_path=str(tmp_path / "o.sqlite"),
                          flush_interval_s=60.0, batch_lines=3000)
    sink = InfluxSink(config, "site1")
    await sink.start()
    try:
        await sink.on_samples(block)
        await sink.on_minute(minute())
        await sink.flush()
        await wait_until(lambda: sink.pending_batches() == 0)
        assert sink.stats()["sent_lines_total"] == 10_000 + 3
    finally:
        await sink.stop()
    got = series(victoria_metrics, '{__name__="sample_value"}')
    assert len(got) == 50
    t07 = got[("sample_value", frozenset({("site", "site1"), ("tag", "t07"), ("flag", "N")}))]
    assert len(t07) == polls
    assert t07[0] == (T0_MS, 70.0)
    assert t07[-1] == (T0_MS + 199 * 500, 70.0 + 199 / 4)


@dataclass
class _Bodies:
    raw: list[bytes] = field(default_factory=list)  # aiohttp undoes a gzip encoding
    encodings: list[str] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)  # bytes on the wire

    async def handle(self, request: web.Request) -> web.Response:
        self.raw.append(await request.read())
        self.encodings.append(request.headers.get("Content-Encoding", ""))
        self.sizes.append(int(request.headers["Content-Length"]))
        return web.Response(status=204)


@contextlib.asynccontextmanager
async def _server(host: str) -> AsyncIterator[tuple[_Bodies, str]]:
    bodies = _Bodies()
    app = web.Application()
    app.router.add_post("/api/v2/write", bodies.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, host, port).start()
    yield bodies, f"http://{host}:{port}"
    await runner.cleanup()


def _own_address() -> str | None:
    """An address of this machine's that is not loopback, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET: nothing is sent, a route is chosen
            host = str(s.getsockname()[0])
        except OSError:
            return None
    return None if host.startswith("127.") else host


@pytest.mark.parametrize("where", ["loopback", "network"])
async def test_gzip_only_off_loopback(tmp_path: Path, where: str) -> None:
    host = "127.0.0.1" if where == "loopback" else _own_address()
    if host is None:
        pytest.skip("this machine has no address but loopback")
    async with _server(host) as (bodies, url):
        config = InfluxConfig(url=url, outbox_path=str(tmp_path / "o.sqlite"))
        sink = InfluxSink(config, "site1")
        await sink.start()
        try:
            await sink.on_samples(SampleBlock.of_samples(TagTable(("a",)), [
                Sample("a", T0 + timedelta(seconds=i), 1.5 + i) for i in range(100)]))
            await sink.flush()
            await wait_until(lambda: sink.pending_batches() == 0)
        finally:
            await sink.stop()
    (body,) = bodies.raw
    text = "\n".join(f"sample,site=site1,tag=a,flag=N value={1.5 + i} {T0_MS + 1000 * i}000000"
                     for i in range(100)).encode()
    assert body == text
    if where == "loopback":
        assert bodies.encodings == [""]
        assert bodies.sizes == [len(text)]
    else:
        assert bodies.encodings == ["gzip"]
        assert bodies.sizes[0] == len(gzip.compress(text, compresslevel=1, mtime=0))
        assert bodies.sizes[0] < len(text) / 4


def _revised() -> RevisedMinutes:
    return RevisedMinutes((
        RevisedMinute("source", "S1", "U1", T0, DataFlag.N, DataFlag.S,
                      {"co2_dry_pct": 20.0, "flow_std_dry_m3_h": 835718.9,
                       "co2_kg": 5471.2, "co2_mg_m3": None}, entry=7),
        RevisedMinute("unit", "U1", "U1", T0, DataFlag.S, DataFlag.S,
                      {"co2_kg": 5471.2, "intensity_t_mwh": None}, entry=7)))


def test_revised_minute_lines_supersede_the_point_first_sent() -> None:
    assert revised_lines(_revised(), "site 1") == [
        r"co2_source,site=site\ 1,unit=U1,source=S1,flag=N superseded=true,valid=false "
        "1709280000000000000",
        r"co2_source,site=site\ 1,unit=U1,source=S1,flag=S co2_dry_pct=20,co2_kg=5471.2,"
        "flow_std_dry_m3_h=835718.9,valid=true 1709280000000000000",
        # the unit was S already: its series is the same, nothing to supersede
        r"co2_unit,site=site\ 1,unit=U1,flag=S co2_kg=5471.2,valid=true 1709280000000000000",
    ]


async def test_revised_minutes_reach_victoria_metrics(
        tmp_path: Path, victoria_metrics: VictoriaMetrics) -> None:
    sink = InfluxSink(make_config(tmp_path, victoria_metrics.url), "site 1")
    await sink.start()
    try:
        await sink.on_minute(minute())
        await sink.on_revised(_revised())
        await sink.flush()
        await wait_until(lambda: sink.pending_batches() == 0)
    finally:
        await sink.stop()
    got = series(victoria_metrics, '{__name__=~"co2_source_.*"}')
    src = {("site", "site 1"), ("unit", "U1"), ("source", "S1")}
    first, now = frozenset({*src, ("flag", "N")}), frozenset({*src, ("flag", "S")})
    assert got[("co2_source_co2_kg", first)] == [(T0_MS, 3282.70)]  # the original stays
    assert got[("co2_source_superseded", first)] == [(T0_MS, 1.0)]
    assert got[("co2_source_co2_kg", now)] == [(T0_MS, 5471.2)]
    assert got[("co2_source_co2_dry_pct", now)] == [(T0_MS, 20.0)]
    assert got[("co2_source_valid", now)] == [(T0_MS, 1.0)]
