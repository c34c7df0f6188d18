"""Carbon performance from a real historian file (server/performance.py): the stored unit
days summed per quarter in SQL, the baseline from history, the `performance` report (XLSX
read back with openpyxl) and GET /api/v1/performance on a real HTTP server. The numbers
are the worked example of tests/compute/test_performance.py divided by 1000.
"""

from __future__ import annotations

import copy
import io
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from openpyxl import load_workbook

from compute.factors import FactorTable
from model.flags import DataFlag
from model.records import PeriodRecords, UnitPeriod
from server.config import parse_plant
from server.historian import Historian
from server.performance import PerformanceKeeper, unit_sums
from server.reports.engine import ReportMaker
from tests.compute.test_performance import PERF, two_units
from web.app import WebSink

# 2026-05-11 12:00 in Shanghai: the days before 11 May count (130 days, 40 of Q2).
NOW = datetime(2026, 5, 11, 4, 0, tzinfo=UTC)
REL = 1e-9


def local_day(y: int, m: int, d: int) -> datetime:
    """UTC start of a Shanghai day."""
    return datetime(y, m, d, tzinfo=UTC) - timedelta(hours=8)


def approx(x: float) -> Any:
    return pytest.approx(x, rel=REL, abs=0.0)


class FixedKeeper(PerformanceKeeper):
    """The keeper at a fixed time."""

    at = NOW

    def now(self) -> datetime:
        return self.at


def perf_kt() -> dict[str, Any]:
    """The worked example's section in thousands of tonnes and MWh."""
    p = copy.deepcopy(PERF)
    p["baseline"] = {"year": 2024, "from_history": True}
    p["targets"][0]["site_co2_t"] = 4_380.0
    return p


async def store(h: Historian, day: tuple[int, int, int], unit: str, co2_t: float,
                output_mwh: float, *, cems_t: float | None = None) -> None:
    t = local_day(*day)
    u = UnitPeriod(unit, t, co2_t if cems_t is None else cems_t, math.nan, output_mwh,
                   co2_t / output_mwh, True, DataFlag.N, co2_t=co2_t)
    await h.on_period(PeriodRecords("day", t, t + timedelta(days=1), (), (), (u,)))


@dataclass
class Plant:
    keeper: FixedKeeper
    historian: Historian
    config: Any


@pytest.fixture
async def plant(tmp_path: Path) -> AsyncIterator[Plant]:
    data = two_units(perf_kt())
    data["historian"] = {"path": str(tmp_path / "h.sqlite")}
    cfg = parse_plant(data, str(tmp_path / "plant.yaml")).config
    h = Historian(cfg.historian.path)
    await h.start()
    # 2026 to date: U1 700 t / 880 MWh (Q1) and 300 / 390 (Q2); U2 420 / 480 and 190 / 200
    # (10 May, the last closed day). The accounted CO2 is co2_t; the CEMS figure differs
    # on purpose (+1 t) so that summing the wrong column shows.
    await store(h, (2026, 1, 15), "U1", 400.0, 500.0, cems_t=401.0)
    await store(h, (2026, 3, 31), "U1", 300.0, 380.0, cems_t=301.0)
    await store(h, (2026, 4, 1), "U1", 300.0, 390.0, cems_t=301.0)
    await store(h, (2026, 2, 1), "U2", 420.0, 480.0, cems_t=421.0)
    await store(h, (2026, 5, 10), "U2", 190.0, 200.0, cems_t=191.0)
    # Not counted: today (11 May, not closed), 31 Dec 2025.
    await store(h, (2026, 5, 11), "U2", 5_000.0, 1.0)
    await store(h, (2025, 12, 31), "U1", 9_000.0, 1.0)
    # The baseline year 2024: U1 3000 t / 3600 MWh, U2 1800 / 2000 (1 Jan and 31 Dec).
    await store(h, (2024, 1, 1), "U1", 1_000.0, 1_600.0)
    await store(h, (2024, 12, 31), "U1", 2_000.0, 2_000.0)
    await store(h, (2024, 6, 30), "U2", 1_800.0, 2_000.0)
    keeper = FixedKeeper(cfg)
    try:
        yield Plant(keeper, h, cfg)
    finally:
        await h.stop()


async def test_wall_of_a_plant_day_on_a_fast_clock() -> None:
    from compute.clock import PlantClock

    for minute_s in (60.0, 0.5):
        clock = PlantClock(minute_s, "Asia/Shanghai")
        t = clock.date_start(date(2026, 5, 11))
        assert clock.scaled_local(t).replace(tzinfo=None) == datetime(2026, 5, 11)
        before = t - timedelta(seconds=minute_s / 2)
        assert clock.scaled_local(before).date() == date(2026, 5, 10)


async def test_sums_and_progress_from_the_historian(plant: Plant) -> None:
    p = await plant.keeper.performance()
    assert (p.calendar.year, p.calendar.days_elapsed_d, p.calendar.quarter) == (2026, 130, 2)
    u1, u2 = p.units
    assert (u1.co2_ytd_t, u1.output_ytd, u1.co2_qtd_t) == (1_000.0, 1_270.0, 300.0)
    assert (u2.co2_ytd_t, u2.output_ytd, u2.co2_qtd_t) == (610.0, 680.0, 190.0)
    # Baseline from 2024's stored days: U1 3000/3600 = 5/6, U2 0.9.
    assert p.baseline_source == "historian 2024"
    assert u1.baseline_intensity == approx(5 / 6)
    assert u2.normalised_baseline_ytd_t == approx(612.0)
    # 4 380 · 130/365 = 1 560 t; actual 1 610: +50 t.
    assert p.site.target_ytd_t == approx(1_560.0)
    assert p.site.deviation_ytd_t == approx(50.0)
    assert p.site.deviation_qtd_t == approx(4_294 / 91)
    # A past year: all its days, Q4; the year before the data: nothing.
    p25 = await plant.keeper.performance(2025)
    assert (p25.units[0].co2_ytd_t, p25.calendar.days_elapsed_d) == (9_000.0, 365)
    assert (await plant.keeper.performance(2023)).site.co2_ytd_t == 0.0


async def test_cems_basis_sums_the_cems_column(plant: Plant, tmp_path: Path) -> None:
    perf = perf_kt()
    perf["co2_basis"] = "cems"
    data = two_units(perf)
    data["historian"] = {"path": str(tmp_path / "h.sqlite")}
    keeper = FixedKeeper(parse_plant(data, "plant.yaml").config)
    p = await keeper.performance()
    assert (p.units[0].co2_ytd_t, p.units[1].co2_ytd_t) == (1_003.0, 612.0)


def test_unit_sums_of_no_historian(tmp_path: Path) -> None:
    t = datetime(2026, 1, 1, tzinfo=UTC)
    assert unit_sums(tmp_path / "none.sqlite", "co2_cems_t", [(t, t)]) == {}


async def test_quarter_ends(plant: Plant) -> None:
    q1, q2 = await plant.keeper.quarter_ends(2026)
    # Q1 whole: 90 days; U1 700 t against 2 628 · 27 % = 709.56 t: −9.56 t.
    assert (q1.calendar.quarter, q1.calendar.quarter_days_elapsed_d) == (1, 90)
    assert q1.units[0].co2_qtd_t == 700.0
    assert q1.units[0].deviation_qtd_t == approx(700 - 709.56)
    assert (q2.calendar.quarter, q2.calendar.quarter_days_elapsed_d) == (2, 40)


def sheet(body: bytes, name: str) -> list[dict[str, Any]]:
    wb = load_workbook(io.BytesIO(body))
    (ws,) = [wb[n] for n in wb.sheetnames if n.endswith(f" {name}")]
    rows = list(ws.iter_rows(values_only=True))
    en = [str(c) for c in rows[1]]
    return [dict(zip(en, r, strict=True)) for r in rows[2:]]


async def test_performance_report_xlsx(plant: Plant) -> None:
    maker = ReportMaker(plant.config, plant.historian, lambda: FactorTable(()))
    maker.performance = plant.keeper
    start = local_day(2026, 1, 1)
    rep = await maker.make("performance", start, start + timedelta(days=1), "xlsx")
    assert rep.filename == "testsite-performance-2026.xlsx"
    rows = sheet(rep.body, "performance")
    site = next(r for r in rows if r["Unit"] == "全厂 site")
    assert site["CO2 year to date (t)"] == approx(1_610.0)
    assert site["Target to date, by days (t)"] == approx(1_560.0)
    assert site["Deviation (%)"] == approx(5_000 / 1_560)
    u1 = next(r for r in rows if r["Unit"] == "U1")
    assert u1["Output unit"] == "MWh"
    assert u1["Baseline normalised to output (t)"] == approx(1_270 * 5 / 6)
    quarters = sheet(rep.body, "performance_quarters")
    assert [(r["Quarter"], r["Unit"]) for r in quarters][:3] == [("Q1", "U1"), ("Q1", "U2"),
                                                                 ("Q1", "全厂 site")]
    bench = sheet(rep.body, "performance_benchmarks")
    assert [(r["Rank"], r["Unit"]) for r in bench] == [(1, "U2"), (2, "全厂 site"),
                                                       (3, "U1"), (4, "U1")]
    assert bench[0]["Source"] == "allocation plan"
    assert bench[0]["Gap (%)"] == approx((61 / 68 - 0.8218) / 0.8218 * 100)


async def test_annual_report_carries_the_performance_sheets(plant: Plant) -> None:
    maker = ReportMaker(plant.config, plant.historian, lambda: FactorTable(()))
    maker.performance = plant.keeper
    start = local_day(2026, 1, 1)
    rep = await maker.report("annual", start, start + timedelta(days=1))
    keys = [t.key for t in rep.tables]
    assert {"performance", "performance_quarters", "performance_benchmarks"} <= set(keys)
    monthly = await maker.report("monthly", start, start + timedelta(days=1))
    assert "performance" not in [t.key for t in monthly.tables]


async def test_api(plant: Plant, port: int) -> None:
    cfg = plant.config.model_copy(update={"web": plant.config.web.model_copy(
        update={"port": port, "host": "127.0.0.1"})})
    sink = WebSink(cfg, performance=plant.keeper)
    await sink.start()
    base = f"http://127.0.0.1:{sink.port}/api/v1/performance"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(base) as r:
                assert r.status == 200
                body = await r.json()
            async with http.get(f"{base}?year=2025") as r:
                past = await r.json()
            bad = []
            for q in ("year=20x6", "year=1999", "year=" + "9" * 40):
                async with http.get(f"{base}?{q}") as r:
                    bad.append((r.status, (await r.json())["error"]))
    finally:
        await sink.stop()
    assert body["year"] == 2026 and body["days_elapsed_d"] == 130
    assert body["site"]["co2_ytd_t"] == 1_610.0
    assert body["site"]["output_ytd_mwh"] == 1_950.0
    assert body["site"]["deviation_ytd_t"] == approx(50.0)
    assert body["units"][0]["intensity_ytd_t_mwh"] == approx(100 / 127)
    assert body["benchmarks"][0]["unit"] == "U2"
    assert past["year"] == 2025 and past["site"]["target_ytd_t"] is None
    assert all(status == 400 and "query parameter 'year'" in msg for status, msg in bad), bad
    assert "'20x6'" in bad[0][1] and "…" in bad[2][1]


async def test_runtime_gives_the_rules_the_performance(plant: Plant, tmp_path: Path) -> None:
    """What the runtime runs once a day closed (server/runtime.py _carbon_performance):
    the keeper's performance to the carbon_performance rules."""
    from alarms.engine import AlarmSink
    from model.records import AlarmEvent
    from server.runtime import Runtime

    data = two_units(perf_kt())
    data["historian"] = {"path": str(tmp_path / "h.sqlite")}
    data["web"] = {"enabled": False}
    data["alarms"] = {"rules": [{"id": "dev", "kind": "carbon_performance",
                                 "measure": "target_deviation_pct", "warning": 3.0}]}
    rt = Runtime(parse_plant(data, "plant.yaml"))
    rt.performance = FixedKeeper(rt.config)
    sink = AlarmSink(rt.config)
    journal: list[AlarmEvent] = []
    sink.subscribe(journal.append)
    rt._alarms = sink
    await rt._carbon_performance()
    # 1 610 t against 1 560 t: +3.205 % ≥ 3.
    (ev,) = journal
    assert (ev.rule, ev.state) == ("dev", "warning")
    assert ev.value == approx(5_000 / 1_560)


async def test_report_from_files(plant: Plant, tmp_path: Path) -> None:
    """`carbonscada report performance` (the server need not run) reads the same file."""
    from server.reports.local import make_from_files

    data = two_units(perf_kt())
    data["historian"] = {"path": str(tmp_path / "h.sqlite")}
    p = parse_plant(data, str(tmp_path / "plant.yaml"))
    start = local_day(2025, 1, 1)
    rep = await make_from_files(p, "plant.yaml", "performance", start,
                                start + timedelta(days=1), "xlsx")
    rows = sheet(rep.body, "performance")
    # 2025: only U1's 31 December, 9 000 t (no target for 2025).
    u1 = next(r for r in rows if r["Unit"] == "U1")
    assert u1["CO2 year to date (t)"] == 9_000 and u1["Target to date, by days (t)"] is None


async def test_api_unreadable_historian(tmp_path: Path, port: int) -> None:
    data = two_units(perf_kt())
    bad = tmp_path / "h.sqlite"
    bad.write_bytes(b"not a database, just bytes" * 100)
    data["historian"] = {"path": str(bad)}
    data["web"] = {"host": "127.0.0.1", "port": port}
    cfg = parse_plant(data, "plant.yaml").config
    sink = WebSink(cfg, performance=FixedKeeper(cfg))
    await sink.start()
    try:
        async with aiohttp.ClientSession() as http, \
                http.get(f"http://127.0.0.1:{sink.port}/api/v1/performance") as r:
            status, body = r.status, await r.json()
    finally:
        await sink.stop()
    assert status == 503
    assert body["error"].startswith(f"historian {bad}: ") and "Traceback" not in body["error"]
