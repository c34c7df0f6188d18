"""The carbon-asset sheets of the monthly and annual reports (issue 17), read back with
openpyxl: holdings at the period's end, the compliance position, the ledger of the period.

A real historian file (the worked day of tests/server/test_reports.py), a real audit log
and the real carbon-asset keeper (server/assets.py); its clock fixed at 2026-03-31 12:00
plant time so that the days to the deadline are known.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from openpyxl import load_workbook

from server.assets import AssetKeeper
from server.audit import AuditLog
from server.config import Plant, parse_plant
from server.historian import Historian
from server.reports.engine import ReportMaker
from server.reports.local import make_from_files
from tests.compute.test_periods import DAY0
from tests.server.test_reports import DAY1, by_en, plant_data, sheet_rows, store

NOW = datetime(2026, 3, 31, 4, tzinfo=UTC)  # 12:00 Asia/Shanghai


def local(day: str) -> dict[str, str]:
    """`t` of an entry: noon of a plant-local day (Asia/Shanghai, UTC+8)."""
    return {"t": f"{day}T12:00:00+08:00"}


class FixedKeeper(AssetKeeper):
    """The keeper with its clock at NOW."""

    def now(self) -> datetime:
        """NOW."""
        return NOW


async def ledger(tmp_path: Path) -> tuple[Plant, Historian, AssetKeeper]:
    """The worked day stored and the worked entries made, the historian running."""
    p = parse_plant(plant_data(tmp_path), str(tmp_path / "plant.yaml"))
    await store(p)
    h = Historian(p.config.historian.path)
    await h.start()
    keeper = FixedKeeper(p, h, AuditLog(tmp_path / "audit.sqlite"))
    await keeper.load()
    entries: list[dict[str, Any]] = [
        {"kind": "allocation", "year": 2026, "instrument": "national_allowance",
         "side": "final", "quantity_t": 1000.0, "document": "MEE-2026-001",
         **local("2026-01-05")},
        {"kind": "trade", "year": 2026, "instrument": "national_allowance", "side": "buy",
         "quantity_t": 200.0, "price_cny_t": 60.0, "counterparty": "CEEX A",
         **local("2026-01-10")},
        {"kind": "trade", "year": 2026, "instrument": "national_allowance", "side": "buy",
         "quantity_t": 100.0, "price_cny_t": 70.0, "counterparty": "CEEX B",
         **local("2026-01-20")},
        {"kind": "trade", "year": 2026, "instrument": "national_allowance", "side": "sell",
         "quantity_t": 150.0, "price_cny_t": 80.0, "counterparty": "CEEX C",
         **local("2026-01-25")},
        {"kind": "acquisition", "year": 2026, "instrument": "ccer", "quantity_t": 100.0,
         "price_cny_t": 30.0, "vintage": 2025, **local("2026-01-28")},
        {"kind": "trade", "year": 2026, "instrument": "national_allowance", "side": "buy",
         "quantity_t": 50.0, "price_cny_t": 90.0, **local("2026-02-10")},
        {"kind": "reversal", "reverses": 3, "reason": "重复录入 entered twice",
         **local("2026-02-15")},
        {"kind": "verified", "year": 2026, "quantity_t": 1500.0, "document": "VER-2026",
         **local("2026-02-20")},
        {"kind": "price", "instrument": "national_allowance", "price_cny_t": 85.0,
         **local("2026-03-01")},
    ]
    for body in entries:
        await keeper.enter("engineer", body)
    return p, h, keeper


@pytest.fixture
async def made(tmp_path: Path) -> AsyncIterator[tuple[Plant, ReportMaker, AssetKeeper]]:
    p, h, keeper = await ledger(tmp_path)
    maker = ReportMaker(p.config, h, lambda: p.factors, assets=keeper)
    try:
        yield p, maker, keeper
    finally:
        await h.stop()


async def test_monthly_report_has_the_carbon_sheets(
        made: tuple[Plant, ReportMaker, AssetKeeper]) -> None:
    _, maker, _ = made
    body = (await maker.make("monthly", DAY0, DAY1, "xlsx")).body

    # Holdings at the end of January (entries before 2026-02-01 00:00 plant time; the
    # February purchase and the February reversal of #3 not yet made):
    # national 1 000 allocated + 200 + 100 bought − 150 sold = 1 150 t; CCER 100 t.
    zh, en, rows = sheet_rows(body, "carbon_holdings")
    assert zh[0] == "截至(厂区时间)" and en[-1] == "Held (t)"
    held = {r["Instrument"]: r for r in (by_en(en, x) for x in rows)}
    assert len(held) == 4 and {r["Compliance year"] for r in held.values()} == {2026}
    nat = held["全国配额 national_allowance"]
    assert nat["As of (plant time)"] == "2026-02-01 00:00"
    assert (nat["Allocated (t)"], nat["Bought and acquired (t)"], nat["Sold (t)"],
            nat["Surrendered (t)"], nat["Held (t)"]) == (1000.0, 300.0, 150.0, 0.0, 1150.0)
    assert held["CCER ccer"]["Held (t)"] == 100.0
    assert held["地方配额 local_allowance"]["Held (t)"] == 0.0

    # The position of 2026 as made (2026-03-31): allowances 1 000 + 200 − 150 + 50 = 1 100 t
    # (#3 reversed); verified 1 500 t; CCER 100 t held, limit 5 % · 1 500 = 75 t eligible;
    # 1 100 + 75 − 1 500 = −325 t: a deficit of 325 t. Latest price: the price entry of
    # 1 March, 85 CNY/t (it beats the trades): 325 · 85 = 27 625 CNY to close it, holdings
    # 1 100 · 85 = 93 500 CNY. Deadline 2027-12-31, 640 days after 2026-03-31.
    _, en, rows = sheet_rows(body, "carbon_position")
    (pos,) = [by_en(en, r) for r in rows]
    assert (pos["Compliance year"], pos["Emissions basis"], pos["Emissions (t)"]) == (
        2026, "核查 verified", 1500.0)
    assert (pos["Allowances held (t)"], pos["Offsets held (t)"], pos["Offset limit (%)"],
            pos["Offsets eligible (t)"]) == (1100.0, 100.0, 5.0, 75.0)
    assert (pos["Surplus (t)"], pos["Deficit (t)"]) == (0.0, 325.0)
    assert pos["Latest price (CNY/t)"] == 85.0
    assert pos["Price as of (plant time)"] == "2026-03-01 12:00"
    assert pos["Cost of closing the deficit (CNY)"] == 27_625.0
    assert pos["Value of allowances held (CNY)"] == 93_500.0
    assert (pos["Surrender deadline"], pos["Days to the deadline (d)"]) == ("2027-12-31", 640)
    assert pos["Year-end forecast (t)"] == 1500.0  # verified: the year is known
    assert pos["Reductions (t, not for compliance)"] == 0.0

    # The ledger of January: entries 1–5, oldest first; #3 marked reversed.
    _, en, rows = sheet_rows(body, "carbon_ledger")
    ledger = [by_en(en, r) for r in rows]
    assert [r["Entry"] for r in ledger] == [1, 2, 3, 4, 5]
    assert [r["Reversed"] for r in ledger] == [False, False, True, False, False]
    assert ledger[0]["Time (plant time)"] == "2026-01-05 12:00:00"
    assert ledger[0]["Time (UTC)"] == "2026-01-05T04:00:00Z"
    assert (ledger[0]["Kind"], ledger[0]["Side"], ledger[0]["Document"]) == (
        "配额分配 allocation", "final", "MEE-2026-001")
    sale = ledger[3]
    assert (sale["Side"], sale["Quantity (t; MWh for renewable reductions)"],
            sale["Price (CNY/t)"], sale["Counterparty"], sale["User"]) == (
        "sell", 150.0, 80.0, "CEEX C", "engineer")
    assert (ledger[4]["Instrument"], ledger[4]["Vintage"]) == ("CCER ccer", 2025)


async def test_annual_report_ledger_holds_the_year_and_the_daily_none(
        made: tuple[Plant, ReportMaker, AssetKeeper]) -> None:
    _, maker, _ = made
    body = (await maker.make("annual", DAY0, DAY1, "xlsx")).body
    _, en, rows = sheet_rows(body, "carbon_ledger")
    ledger = [by_en(en, r) for r in rows]
    assert [r["Entry"] for r in ledger] == list(range(1, 10))
    rev = ledger[6]
    assert (rev["Kind"], rev["Reverses entry"], rev["Reason"]) == (
        "冲销 reversal", 3, "重复录入 entered twice")
    # Holdings at the end of 2026 (every entry): national 1 100 t, CCER 100 t.
    _, en, rows = sheet_rows(body, "carbon_holdings")
    held = {r["Instrument"]: r["Held (t)"] for r in (by_en(en, x) for x in rows)}
    assert held["全国配额 national_allowance"] == 1100.0 and held["CCER ccer"] == 100.0
    # The daily report carries no carbon sheets; nor a maker without the keeper.
    daily = (await maker.make("daily", DAY0, DAY1, "xlsx")).body
    assert not [n for n in load_workbook(io.BytesIO(daily)).sheetnames if "carbon" in n]
    bare = ReportMaker(maker.config, maker._historian, maker._factors)
    monthly = (await bare.make("monthly", DAY0, DAY1, "xlsx")).body
    assert not [n for n in load_workbook(io.BytesIO(monthly)).sheetnames if "carbon" in n]
    # CSV carries the same sections.
    text = (await maker.make("monthly", DAY0, DAY1, "csv")).body.decode("utf-8-sig")
    assert "# 碳资产台账 Carbon asset ledger of the period" in text


async def test_report_from_the_files_has_the_carbon_sheets(tmp_path: Path) -> None:
    # `carbonscada report` (server/reports/local.py) reads the carbon ledger of the
    # historian file too: January's closing holdings as in the worked example above.
    p, h, _ = await ledger(tmp_path)
    await h.stop()
    body = (await make_from_files(p, "plant.yaml", "monthly", DAY0, DAY1, "xlsx")).body
    _, en, rows = sheet_rows(body, "carbon_holdings")
    held = {r["Instrument"]: r["Held (t)"] for r in (by_en(en, x) for x in rows)}
    assert held["全国配额 national_allowance"] == 1150.0 and held["CCER ccer"] == 100.0
    _, en, rows = sheet_rows(body, "carbon_position")
    (pos,) = [by_en(en, r) for r in rows]
    assert (pos["Deficit (t)"], pos["Cost of closing the deficit (CNY)"]) == (325.0, 27_625.0)
