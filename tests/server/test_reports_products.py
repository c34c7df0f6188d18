"""The units and site sheets of the emission reports for a unit whose output is a product
(t of hot metal): its output in t and its intensity in t CO2/t over the accounted CO2, from a
real historian file, written to XLSX and read back; figures worked by hand."""

from __future__ import annotations

import io
import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from openpyxl import load_workbook

from server.config import parse_plant
from server.historian import Historian
from server.reports.engine import ReportMaker
from tests.fixtures.boundaries import boundary_plant_dict, period, unit_period

D0 = datetime(2026, 11, 20, 16, tzinfo=UTC)  # 2026-11-21 00:00 plant time
DAY = timedelta(days=1)


def hand(value: float) -> Any:
    """Equality to a hand-worked figure, to 1e-9 relative."""
    return pytest.approx(value, rel=1e-9, abs=0)


def rows_of(body: bytes, suffix: str) -> list[dict[str, Any]]:
    wb = load_workbook(io.BytesIO(body))
    (ws,) = [wb[n] for n in wb.sheetnames if n.endswith(suffix)]
    rows = list(ws.iter_rows(values_only=True))
    en = [str(c) for c in rows[1]]
    return [dict(zip(en, r, strict=True)) for r in rows[2:]]


async def test_a_product_unit_reports_t_and_t_per_t(tmp_path: Path) -> None:
    plant = parse_plant(boundary_plant_dict(var_dir=str(tmp_path)), str(tmp_path / "plant.yaml"))
    h = Historian(plant.config.historian.path)
    await h.start()
    try:
        # BF1 by its carbon balance (no CEMS): 21 November 300 t CO2 over 4000 t of hot
        # metal (0.075 t/t), 22 November 200 t over 3000 t (0.066 666 … t/t). G1 a power
        # unit: 600 t over 1440 MWh, then 500 t over 1200 MWh.
        for t, bf_t, hm_t, g_t, g_mwh in ((D0, 300.0, 4000.0, 600.0, 1440.0),
                                          (D0 + DAY, 200.0, 3000.0, 500.0, 1200.0)):
            bf = replace(unit_period("BF1", t, bf_t, output_t=hm_t), co2_cems_t=math.nan,
                         co2_factor_t=bf_t, basis="factor", intensity_t_t=bf_t / hm_t)
            g1 = replace(unit_period("G1", t, g_t, output_mwh=g_mwh),
                         intensity_t_mwh=g_t / g_mwh)
            await h.on_period(period("day", t, t + DAY, [bf, g1]))
        maker = ReportMaker(plant.config, h, lambda: plant.factors)
        body = (await maker.make("monthly", D0, D0 + DAY, "xlsx")).body
    finally:
        await h.stop()
    units = {r["Unit"]: r for r in rows_of(body, "units")}
    bf1, g1 = units["BF1"], units["G1"]
    # November: BF1 500 t over 7000 t = 0.071 428 571 428 … t/t; nothing in MWh, no CEMS.
    assert (bf1["CO2 accounted (t)"], bf1["CO2 by factor method (t)"]) == (hand(500.0),
                                                                             hand(500.0))
    assert bf1["Output (t)"] == hand(7000.0)
    assert bf1["Intensity (t CO2/t)"] == hand(500.0 / 7000.0)
    assert (bf1["Output (MWh)"], bf1["Intensity (t/MWh)"], bf1["CO2 by CEMS (t)"]) == (
        None, None, None)
    # G1: 1100 t over 2640 MWh = 0.416 666 … t/MWh; no product.
    assert g1["Intensity (t/MWh)"] == hand(1100.0 / 2640.0)
    assert (g1["Output (t)"], g1["Intensity (t CO2/t)"]) == (None, None)
    # The site: 1600 t accounted; its t/MWh over the power unit alone (t and MWh don't add).
    (site,) = rows_of(body, "site")
    assert site["CO2 accounted (t)"] == hand(1600.0)
    assert site["Intensity (t/MWh)"] == hand(1100.0 / 2640.0)


async def test_the_platform_workbook_gives_a_product_unit_its_output_in_t(
        tmp_path: Path) -> None:
    d = boundary_plant_dict(var_dir=str(tmp_path))
    d["units"][0]["output"] = {"rate_t_h": {"value": 150.0}}  # BF1 makes hot metal, t/h
    plant = parse_plant(d, str(tmp_path / "plant.yaml"))
    h = Historian(plant.config.historian.path)
    await h.start()
    try:
        for t, hm_t in ((D0, 4000.0), (D0 + DAY, 3000.0)):
            bf = replace(unit_period("BF1", t, 300.0, output_t=hm_t), co2_cems_t=math.nan,
                         co2_factor_t=300.0, basis="factor")
            await h.on_period(period("day", t, t + DAY, [bf]))
        maker = ReportMaker(plant.config, h, lambda: plant.factors)
        nov = datetime(2026, 10, 31, 16, tzinfo=UTC)  # 2026-11-01 00:00 plant time
        body = (await maker.make("platform", nov, datetime(2026, 11, 30, 16, tzinfo=UTC),
                                 "xlsx")).body
    finally:
        await h.stop()
    got = {(r["Key"], r["Unit or fuel"]): r for r in rows_of(body, "platform")}
    # The hot metal of the month, 4000 + 3000 t, where a generating unit has its MWh.
    out = got[("product_output_t", "BF1")]
    assert (out["Value"], out["Unit of the value"]) == (hand(7000.0), "t")
    assert ("generation_mwh", "BF1") not in got
    load = got[("load_factor_pct", "BF1")]
    assert load["Value"] is None and "product unit" in load["Document, tag or reason"]
    assert got[("co2_factor_t", "BF1")]["Value"] == hand(600.0)
