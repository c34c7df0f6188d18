"""InfluxSink: line protocol, outbox, batching and outages, against a real VictoriaMetrics."""

from __future__ import annotations

import asyncio
import gzip
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from model.flags import DataFlag
from model.records import (
    MinuteResult,
    Sample,
    SampleBlock,
    SiteMinute,
    SourceMinute,
    TagTable,
    UnitMinute,
)
from server.influx.config import InfluxConfig
from server.influx.sink import (
    InfluxSink,
    escape_key,
    escape_measurement,
    format_field,
    line,
    result_lines,
    sample_lines,
    timestamp_ns,
)
from tests.conftest import free_port
from tests.fixtures.victoria import VictoriaMetrics


def block(samples: list[Sample]) -> SampleBlock:
    """The samples as one block, over a table of their tags."""
    return SampleBlock.of_samples(TagTable(tuple(dict.fromkeys(s.tag for s in samples))), samples)

NAN = float("nan")
T0 = datetime(2024, 3, 1, 8, 0, tzinfo=UTC)
T0_MS = 1_709_280_000_000  # 2024-03-01T08:00:00Z


def minute(t: datetime = T0, co2_kg: float = 3282.70) -> MinuteResult:
    """The calc_vectors.md CEMS example as one minute's results."""
    src = SourceMinute(
        source="S1", unit="U1", t=t, flow_act_m3_h=1_080_000.0, flow_std_dry_m3_h=835718.9,
        co2_dry_pct=12.0, co2_mg_m3=235680.0, co2_rate_kg_h=196962.2, co2_kg=co2_kg,
        valid=True, flag=DataFlag.N, co2_hour_t=3.2827, co2_today_t=1575.7,
        co2_ytd_t=98765.4)
    unit = UnitMinute(
        unit="U1", t=t, output_mwh=10.0, co2_kg=co2_kg, intensity_t_mwh=0.32827, valid=True,
        flag=DataFlag.N, co2_today_t=1575.7, output_today_mwh=4800.0,
        intensity_today_t_mwh=NAN, co2_ytd_t=98765.4)
    site = SiteMinute(
        t=t, co2_kg=co2_kg, co2_today_t=1575.7, co2_ytd_t=98765.4,
        allowance_annual_t=4_000_000.0, allowance_used_pct=2.469135,
        allowance_headroom_t=3_901_234.6)
    return MinuteResult(t=t, sources=(src,), units=(unit,), site=site)


def make_config(tmp_path: Path, url: str, **kw: Any) -> InfluxConfig:
    values: dict[str, Any] = {"url": url, "outbox_path": str(tmp_path / "out" / "outbox.sqlite"),
                              "flush_interval_s": 60.0}
    values.update(kw)
    return InfluxConfig(**values)


async def wait_until(cond: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


def outbox_lines(path: str) -> list[str]:
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT lines FROM batches ORDER BY id").fetchall()
    return [ln for (text,) in rows for ln in text.split("\n")]


def series(vm: VictoriaMetrics, match: str) -> dict[tuple[str, frozenset[tuple[str, str]]],
                                                    list[tuple[int, float]]]:
    """Exported series as {(name, labels): [(ms, value), ...]}."""
    out = {}
    for s in vm.export(match):
        labels = dict(s["metric"])
        name = labels.pop("__name__")
        out[(name, frozenset(labels.items()))] = list(
            zip(s["timestamps"], s["values"], strict=True))
    return out


# --- line protocol -------------------------------------------------------------------


def test_escaping_and_nan() -> None:
    assert escape_measurement("co2 source,x=1") == r"co2\ source\,x=1"
    assert escape_key("Plant A,B=1") == r"Plant\ A\,B\=1"
    assert escape_key("line\nbreak") == r"line\nbreak"
    assert escape_key("ends\\") == "ends\\ "
    got = line("co2 source", {"site": "Plant A,B=1", "unit": "U1", "empty": ""},
               {"co2 kg": 1.5, "bad": NAN, "inf": float("inf"), "n": 3, "ok": True,
                "off": False},
               1_000_000_000_000_000_000)
    assert got == (r"co2\ source,site=Plant\ A\,B\=1,unit=U1 co2\ kg=1.5,n=3i,ok=true,off=false"
                   " 1000000000000000000")
    assert line("m", {"site": "s"}, {"a": NAN, "b": NAN}, 1) is None


def test_field_and_time_formats() -> None:
    assert format_field(3282.0) == "3282"
    assert format_field(835718.9) == "835718.9"
    assert format_field(1e20) == "1e+20"
    assert format_field(-0.25) == "-0.25"
    assert format_field(float("-inf")) is None
    assert format_field(7) == "7i"
    # 2001-09-09T01:46:40Z is 1e9 s after the epoch.
    assert timestamp_ns(datetime(2001, 9, 9, 1, 46, 40, 123456, tzinfo=UTC)) == (
        1_000_000_000_123_456_000)
    assert timestamp_ns(T0) == T0_MS * 1_000_000


def test_result_and_sample_lines() -> None:
    ns = "1709280000000000000"
    assert result_lines(minute(), "plant 1") == [
        r"co2_source,site=plant\ 1,unit=U1,source=S1,flag=N flow_act_m3_h=1080000,"
        "flow_std_dry_m3_h=835718.9,co2_dry_pct=12,co2_mg_m3=235680,co2_rate_kg_h=196962.2,"
        "co2_kg=3282.7,co2_hour_t=3.2827,co2_today_t=1575.7,co2_ytd_t=98765.4,valid=true "
        + ns,
        # intensity_today_t_mwh is NaN: left out
        r"co2_unit,site=plant\ 1,unit=U1,flag=N output_mwh=10,co2_kg=3282.7,"
        "intensity_t_mwh=0.32827,co2_today_t=1575.7,output_today_mwh=4800,co2_ytd_t=98765.4,"
        "valid=true " + ns,
        r"co2_site,site=plant\ 1 co2_kg=3282.7,co2_today_t=1575.7,co2_ytd_t=98765.4,"
        "allowance_annual_t=4000000,allowance_used_pct=2.469135,"
        "allowance_headroom_t=3901234.6 " + ns,
    ]
    samples = [Sample("s1_co2", T0 + timedelta(milliseconds=1500), 12.25),
               Sample("s1 temp", T0, 50.0, DataFlag.D),
               Sample("s1_co2", T0, NAN, DataFlag.B)]
    assert sample_lines(samples, "site1") == [
        "sample,site=site1,tag=s1_co2,flag=N value=12.25 1709280001500000000",
        r"sample,site=site1,tag=s1\ temp,flag=D value=50 1709280000000000000",
    ]


# --- against VictoriaMetrics -----------------------------------------------------------


async def test_results_and_samples_round_trip(
        tmp_path: Path, victoria_metrics: VictoriaMetrics) -> None:
    sink = InfluxSink(make_config(tmp_path, victoria_metrics.url), "site 1")
    await sink.start()
    try:
        await sink.on_minute(minute())
        await sink.on_samples(block([
            Sample("s1_co2", T0 + timedelta(seconds=1), 12.0),
            Sample("s1_co2", T0 + timedelta(milliseconds=2500), 12.1),
            Sample("odd tag,x=1", T0 + timedelta(seconds=3), -500.0, DataFlag.D),
            Sample("s1_co2", T0 + timedelta(seconds=4), NAN, DataFlag.B),  # not writable
        ]))
        await sink.flush()
        await wait_until(lambda: sink.pending_batches() == 0)
    finally:
        await sink.stop()

    got = series(victoria_metrics, '{__name__=~"co2_.*|sample_.*"}')
    src = frozenset({("site", "site 1"), ("unit", "U1"), ("source", "S1"), ("flag", "N")})
    unit = frozenset({("site", "site 1"), ("unit", "U1"), ("flag", "N")})
    site = frozenset({("site", "site 1")})
    expected = {
        ("co2_source_flow_act_m3_h", src): 1_080_000.0,
        ("co2_source_flow_std_dry_m3_h", src): 835718.9,
        ("co2_source_co2_dry_pct", src): 12.0,
        ("co2_source_co2_mg_m3", src): 235680.0,
        ("co2_source_co2_rate_kg_h", src): 196962.2,
        ("co2_source_co2_kg", src): 3282.70,
        ("co2_source_co2_hour_t", src): 3.2827,
        ("co2_source_co2_today_t", src): 1575.7,
        ("co2_source_co2_ytd_t", src): 98765.4,
        ("co2_source_valid", src): 1.0,
        ("co2_unit_output_mwh", unit): 10.0,
        ("co2_unit_co2_kg", unit): 3282.70,
        ("co2_unit_intensity_t_mwh", unit): 0.32827,
        ("co2_unit_co2_today_t", unit): 1575.7,
        ("co2_unit_output_today_mwh", unit): 4800.0,
        ("co2_unit_co2_ytd_t", unit): 98765.4,
        ("co2_unit_valid", unit): 1.0,
        ("co2_site_co2_kg", site): 3282.70,
        ("co2_site_co2_today_t", site): 1575.7,
        ("co2_site_co2_ytd_t", site): 98765.4,
        ("co2_site_allowance_annual_t", site): 4_000_000.0,
        ("co2_site_allowance_used_pct", site): 2.469135,
        ("co2_site_allowance_headroom_t", site): 3_901_234.6,
    }
    results = {k: v for k, v in got.items() if k[0].startswith("co2_")}
    assert results == {k: [(T0_MS, v)] for k, v in expected.items()}

    co2 = frozenset({("site", "site 1"), ("tag", "s1_co2"), ("flag", "N")})
    odd = frozenset({("site", "site 1"), ("tag", "odd tag,x=1"), ("flag", "D")})
    samples = {k: v for k, v in got.items() if k[0] == "sample_value"}
    assert samples == {
        ("sample_value", co2): [(T0_MS + 1000, 12.0), (T0_MS + 2500, 12.1)],
        ("sample_value", odd): [(T0_MS + 3000, -500.0)],
    }


async def test_outage_keeps_everything_then_delivers(
        tmp_path: Path, victoria_metrics_factory: Callable[..., VictoriaMetrics],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="server.influx")
    port = free_port()  # nothing listens here yet
    config = make_config(tmp_path, f"http://127.0.0.1:{port}", batch_lines=4)
    sink = InfluxSink(config, "site1")
    await sink.start()
    try:
        for i, kg in enumerate((3282.70, 3290.10, 3275.35)):
            await sink.on_minute(minute(T0 + timedelta(minutes=i), kg))
        await sink.flush()
        # 3 minutes × 3 lines = 9 lines in batches of 4, 4 and 1.
        assert sink.pending_batches() == 3
        await wait_until(lambda: "InfluxDB write to" in caplog.text)
        lines = outbox_lines(config.outbox_path)
        assert len(lines) == 9
        assert [ln.split(" co2_kg=")[1].split(",")[0] for ln in lines
                if ln.startswith("co2_site")] == ["3282.7", "3290.1", "3275.35"]

        vm = victoria_metrics_factory(port)
        await wait_until(lambda: sink.pending_batches() == 0)
        assert "InfluxDB reachable again" in caplog.text
        assert caplog.text.count("InfluxDB write to") == 1  # the outage is logged once
    finally:
        await sink.stop()

    got = series(vm, '{__name__="co2_site_co2_kg"}')
    assert got == {("co2_site_co2_kg", frozenset({("site", "site1")})): [
        (T0_MS, 3282.70), (T0_MS + 60_000, 3290.10), (T0_MS + 120_000, 3275.35)]}
    assert outbox_lines(config.outbox_path) == []


async def test_outbox_survives_restart(
        tmp_path: Path, victoria_metrics: VictoriaMetrics) -> None:
    dead = make_config(tmp_path, f"http://127.0.0.1:{free_port()}")
    first = InfluxSink(dead, "site1")
    await first.start()
    await first.on_minute(minute(T0, 3282.70))
    await first.on_minute(minute(T0 + timedelta(minutes=1), 3290.10))
    await first.stop()  # flushes to the outbox; the last send fails
    assert len(outbox_lines(dead.outbox_path)) == 6

    live = make_config(tmp_path, victoria_metrics.url)  # same outbox path
    second = InfluxSink(live, "site1")
    await second.start()
    try:
        assert second.pending_batches() == 1
        await wait_until(lambda: second.pending_batches() == 0)
    finally:
        await second.stop()
    got = series(victoria_metrics, '{__name__="co2_source_co2_kg"}')
    assert list(got.values()) == [[(T0_MS, 3282.70), (T0_MS + 60_000, 3290.10)]]


async def test_batches_of_batch_lines(
        tmp_path: Path, victoria_metrics: VictoriaMetrics) -> None:
    # flush_interval_s is 60 s: only reaching batch_lines makes batches within the test.
    sink = InfluxSink(make_config(tmp_path, victoria_metrics.url, batch_lines=100), "site1")
    await sink.start()
    try:
        samples = [Sample("s1_co2", T0 + timedelta(milliseconds=100 * i), 10.0 + i / 8)
                   for i in range(1000)]
        for k in range(0, 1000, 250):
            await sink.on_samples(block(samples[k:k + 250]))
        await wait_until(lambda: sink.pending_batches() == 0)
        got = series(victoria_metrics, '{__name__="sample_value"}')
        (points,) = got.values()
        assert len(points) == 1000
        assert points[0] == (T0_MS, 10.0)
        assert points[999] == (T0_MS + 99_900, 10.0 + 999 / 8)
        assert outbox_lines(sink.config.outbox_path) == []
    finally:
        await sink.stop()


# --- against a recording HTTP server (order, batch sizes, retries, token) ----------------


@dataclass
class Recorder:
    """A tiny /api/v2/write server that answers with scripted statuses and records bodies."""

    statuses: list[int] = field(default_factory=list)  # answers to the first requests
    bodies: list[list[str]] = field(default_factory=list)
    answered: list[int] = field(default_factory=list)
    auth: list[str] = field(default_factory=list)
    query: list[dict[str, str]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if body[:2] == b"\x1f\x8b":
            body = gzip.decompress(body)
        status = self.statuses.pop(0) if self.statuses else 204
        self.answered.append(status)
        self.auth.append(request.headers.get("Authorization", ""))
        self.query.append(dict(request.query))
        if status == 204:
            self.bodies.append(body.decode().split("\n"))
        return web.Response(status=status)


@pytest.fixture
async def recorder() -> AsyncIterator[tuple[Recorder, str]]:
    rec = Recorder()
    app = web.Application()
    app.router.add_post("/api/v2/write", rec.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield rec, f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_retries_keep_order(tmp_path: Path, recorder: tuple[Recorder, str],
                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="server.influx")
    rec, url = recorder
    rec.statuses = [503, 503]  # 1 s then 2 s of backoff
    sink = InfluxSink(make_config(tmp_path, url, batch_lines=3), "site1")
    await sink.start()
    try:
        for i in range(3):
            await sink.on_minute(minute(T0 + timedelta(minutes=i), 3000.0 + i))
        await wait_until(lambda: sink.pending_batches() == 0)
    finally:
        await sink.stop()
    assert rec.answered == [503, 503, 204, 204, 204]
    assert [b[2].split(" ")[1].split(",")[0] for b in rec.bodies] == [
        "co2_kg=3000", "co2_kg=3001", "co2_kg=3002"]
    assert [b[2].split(" ")[2] for b in rec.bodies] == [
        "1709280000000000000", "1709280060000000000", "1709280120000000000"]
    assert rec.query[0] == {"org": "carbonscada", "bucket": "carbonscada", "precision": "ns"}
    assert "HTTP 503" in caplog.text
    assert "InfluxDB reachable again" in caplog.text


async def test_batch_sizes(tmp_path: Path, recorder: tuple[Recorder, str]) -> None:
    rec, url = recorder
    sink = InfluxSink(make_config(tmp_path, url, batch_lines=100), "site1")
    await sink.start()
    try:
        await sink.on_samples(block([Sample("t", T0 + timedelta(seconds=i), float(i))
                               for i in range(1050)]))
        await wait_until(lambda: len(rec.bodies) == 10)
        assert sink.pending_batches() == 0
    finally:
        await sink.stop()  # sends the last 50
    assert [len(b) for b in rec.bodies] == [100] * 10 + [50]
    values = [ln.split(" ")[1] for b in rec.bodies for ln in b]
    assert values == [f"value={i}" for i in range(1050)]


async def test_rejected_batch_is_set_aside(tmp_path: Path, recorder: tuple[Recorder, str]
                                           ) -> None:
    rec, url = recorder
    rec.statuses = [400]
    config = make_config(tmp_path, url, batch_lines=3)
    sink = InfluxSink(config, "site1")
    await sink.start()
    try:
        await sink.on_minute(minute(T0, 1.0))
        await sink.on_minute(minute(T0 + timedelta(minutes=1), 2.0))
        await wait_until(lambda: sink.pending_batches() == 0 and len(rec.bodies) == 1)
    finally:
        await sink.stop()
    assert rec.bodies[0][2].startswith("co2_site,site=site1 co2_kg=2,")
    with sqlite3.connect(config.outbox_path) as db:
        rows = db.execute("SELECT status, lines FROM rejected").fetchall()
    assert len(rows) == 1
    assert rows[0][0] == 400
    assert "co2_kg=1," in rows[0][1]


async def test_token_from_environment_not_logged(
        tmp_path: Path, recorder: tuple[Recorder, str], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    rec, url = recorder
    rec.statuses = [401]
    monkeypatch.setenv("TEST_INFLUX_TOKEN", "s3cret-t0ken")
    sink = InfluxSink(make_config(tmp_path, url, token_env="TEST_INFLUX_TOKEN"), "site1")
    await sink.start()
    try:
        await sink.on_minute(minute())
        await sink.flush()
        await wait_until(lambda: sink.pending_batches() == 0)
    finally:
        await sink.stop()
    assert rec.auth == ["Token s3cret-t0ken", "Token s3cret-t0ken"]
    assert rec.answered == [401, 204]
    assert "s3cret-t0ken" not in caplog.text
