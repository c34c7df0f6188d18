"""The boundaries sheet of the emission reports (server/reports/boundaries.py): per period the
site, each process and its facilities with CO2, CO2e and shares, from a real historian file,
written to XLSX and read back; figures worked by hand."""

from __future__ import annotations

import io
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from openpyxl import load_workbook

from server.config import parse_plant
from server.historian import Historian
from server.reports.engine import ReportMaker
from tests.fixtures.boundaries import boundary_plant_dict, period, unit_period

D0 = datetime(2026, 11, 20, 16, tzinfo=UTC)  # 2026-11-21 00:00 plant time
DAY = timedelta(days=1)


def rel(a: Any, b: float) -> bool:
    # openpyxl reads a whole number written as a float back as an int
    return (isinstance(a, int | float) and not isinstance(a, bool)
            and math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0))


async def _maker(tmp_path: Path) -> tuple[ReportMaker, Historian]:
    plant = parse_plant(boundary_plant_dict(var_dir=str(tmp_path)),
                        str(tmp_path / "plant.yaml"))
    h = Historian(plant.config.historian.path)
    await h.start()
    # 21 November: BF1 300, BF2 100, G1 600 t (G1 1440 MWh); 22 November: BF1 200, BF2 invalid
    # without a value, G1 500 t.
    d1 = D0 + DAY
    await h.on_period(period("day", D0, d1, [
        unit_period("BF1", D0, 300.0), unit_period("BF2", D0, 100.0),
        unit_period("G1", D0, 600.0, output_mwh=1440.0)]))
    await h.on_period(period("day", d1, d1 + DAY, [
        unit_period("BF1", d1, 200.0), unit_period("BF2", d1, math.nan, valid=False),
        unit_period("G1", d1, 500.0)]))
    return ReportMaker(plant.config, h, lambda: plant.factors), h


def sheet(body: bytes) -> tuple[list[str], list[dict[str, Any]]]:
    wb = load_workbook(io.BytesIO(body))
    (ws,) = [wb[n] for n in wb.sheetnames if n.endswith("boundaries")]
    rows = list(ws.iter_rows(values_only=True))
    en = [str(c) for c in rows[1]]
    return en, [dict(zip(en, r, strict=True)) for r in rows[2:]]


def key(row: dict[str, Any]) -> tuple[Any, ...]:
    return (row["Period (plant time)"], row["Level"], row["Process (accounting unit)"],
            row["Facility"])


async def test_daily_report_has_the_boundaries_of_each_day(tmp_path: Path) -> None:
    maker, h = await _maker(tmp_path)
    try:
        f = await maker.make("daily", D0, D0 + 2 * DAY, "xlsx")
    finally:
        await h.stop()
    en, rows = sheet(f.body)
    assert en[:4] == ["Period (plant time)", "Start (UTC)", "Level", "Process (accounting unit)"]
    assert [key(r) for r in rows[:6]] == [
        ("2026-11-21", "厂区 site", None, None), ("2026-11-21", "工序 process", "iron", None),
        ("2026-11-21", "设施 facility", "iron", "BF1"),
        ("2026-11-21", "设施 facility", "iron", "BF2"),
        ("2026-11-21", "工序 process", "power", None),
        ("2026-11-21", "设施 facility", "power", "G1")]
    assert len(rows) == 12
    # 21 November: site 1000 t; iron 400 t = 40 %, BF1 300/400 = 75 % of iron, 30 % of the
    # site; power 600 t = 60 %, its 1440 MWh.
    site, iron, bf1, _, power, _ = rows[:6]
    assert rel(site["CO2 (t)"], 1000.0) and rel(site["CO2e (t)"], 1000.0)
    assert site["Share of parent (%)"] is None and rel(site["Share of site (%)"], 100.0)
    assert rel(iron["CO2 (t)"], 400.0) and rel(iron["Share of site (%)"], 40.0)
    assert iron["Name"] == "炼铁 Ironmaking" and iron["Kind"] == "ironmaking"
    assert rel(bf1["Share of parent (%)"], 75.0) and rel(bf1["Share of site (%)"], 30.0)
    assert rel(power["Share of site (%)"], 60.0) and rel(power["Output (MWh)"], 1440.0)
    assert iron["Complete"] is True and iron["Children valid"] == 2
    # 22 November: BF2 without a value: iron 200 t known, incomplete, no shares.
    iron2, bf2 = rows[7], rows[9]
    assert rel(iron2["CO2 (t)"], 200.0) and iron2["Complete"] is False
    assert iron2["Share of site (%)"] is None and iron2["Facilities without data"] == "BF2"
    assert bf2["CO2 (t)"] is None and iron2["Children invalid"] == 1


async def test_monthly_report_rolls_up_the_month(tmp_path: Path) -> None:
    maker, h = await _maker(tmp_path)
    try:
        f = await maker.make("monthly", D0, D0 + DAY, "xlsx")
    finally:
        await h.stop()
    _, rows = sheet(f.body)
    # November: BF1 500, BF2 100 (22 November missing), G1 1100 t: iron 600 t known,
    # incomplete; power 1100 t complete, G1 100 % of it; site 1700 t known, incomplete.
    by = {r["Facility"] or r["Process (accounting unit)"] or "site": r for r in rows}
    assert {r["Period (plant time)"] for r in rows} == {"2026-11"} and len(rows) == 6
    assert rel(by["site"]["CO2 (t)"], 1700.0) and by["site"]["Complete"] is False
    assert rel(by["iron"]["CO2 (t)"], 600.0) and by["iron"]["Facilities without data"] == "BF2"
    assert rel(by["power"]["CO2 (t)"], 1100.0) and by["power"]["Complete"] is True
    assert rel(by["G1"]["Share of parent (%)"], 100.0) and by["G1"]["Share of site (%)"] is None
