"""The HMI's carbon assets in the allowance view, in headless Chromium (issue 17): an
engineer entering an allocation, two purchases, a sale and a CCER acquisition through the
forms; the position figures equal the worked example below; a sale above the holdings
refused with the server's message next to the form; a reversal (refused without a reason);
the ledger newest first with the reversed entry marked; the holdings and the monthly trend;
a viewer seeing the figures and no forms.

A real web sink on loopback with the real carbon-asset keeper (server/assets.py) over a
real historian file and audit log, wired as server/runtime.py wires them. Screenshots go to
var/screenshots/allowance-carbon-<w>x<h>.png.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from playwright.async_api import Browser, Page, expect

from model.flags import DataFlag
from model.records import PeriodRecords, PeriodResult, UnitPeriod
from server.assets import AssetKeeper
from server.audit import AuditLog, verify
from server.config import parse_plant
from server.historian import Historian
from server.users import UserStore
from tests.fixtures.plant import plant_dict
from tests.web.test_hmi import (
    browser,  # noqa: F401  (the fixture)
    log_in,
)
from web.app import WebSink

SHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"
ZONE = ZoneInfo("Asia/Shanghai")
DAY_CO2_T = (100.0, 250.0, 175.0)  # S1's CO2 on 1, 2 and 3 January of this year: 525 t


def this_year() -> int:
    return datetime.now(UTC).astimezone(ZONE).year


def _day(t: datetime, co2_t: float) -> PeriodRecords:
    """A stored day of S1 and U1 starting at `t` (as tests/web/test_hmi_alarms.py's)."""
    src = PeriodResult("S1", t, 12.0, 835_718.9, co2_t / 24 * 1000, co2_t, co2_t, True,
                       DataFlag.N, 1440, False, "")
    unit = UnitPeriod("U1", t, co2_t, math.nan, 600.0 * 24, co2_t / (600.0 * 24), True,
                      DataFlag.N)
    return PeriodRecords("day", t, t + timedelta(days=1), (src,), (), (unit,))


class AssetRoom:
    """Web sink, users, audit log, historian and the carbon-asset keeper."""

    def __init__(self, port: int, tmp_path: Path) -> None:
        d = plant_dict(web_port=port, var_dir=str(tmp_path))
        d["carbon"] = {"intensity_target_t_mwh": 0.012}
        plant = parse_plant(d, str(tmp_path / "plant.yaml"))
        self.historian = Historian(plant.config.historian.path)
        self.users = UserStore(tmp_path / "users.sqlite")
        self.users.ensure_demo_users()
        self.audit_path = tmp_path / "audit.sqlite"
        self.audit = AuditLog(self.audit_path)
        self.assets = AssetKeeper(plant, self.historian, self.audit)
        self.sink = WebSink(plant.config, users=self.users, audit=self.audit,
                            history=self.historian, assets=self.assets)
        self.url = f"http://127.0.0.1:{port}/"

    async def __aenter__(self) -> AssetRoom:
        await self.historian.start()
        year0 = datetime(this_year(), 1, 1, tzinfo=ZONE).astimezone(UTC)
        for i, co2 in enumerate(DAY_CO2_T):
            await self.historian.on_period(_day(year0 + timedelta(days=i), co2))
        await self.assets.load()
        await self.sink.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.sink.stop()
        await self.historian.stop()


@pytest.fixture
async def room(port: int, tmp_path: Path) -> AsyncIterator[AssetRoom]:
    async with AssetRoom(port, tmp_path) as r:
        yield r


async def _page(browser: Browser, room: AssetRoom, user: str | None,  # noqa: F811
                width: int = 1920, height: int = 1080) -> Page:
    context = await browser.new_context(viewport={"width": width, "height": height},
                                        locale="zh-CN")
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors  # type: ignore[attr-defined]
    await page.goto(room.url + "#/allowance")
    await expect(page.locator("#conn")).to_have_attribute("data-state", "connected")
    if user:
        await log_in(page, user, f"demo-{user}")
    await expect(page.locator('#nav a[data-view="allowance"]')).to_have_class("active")
    return page


async def enter(page: Page, kind: str, **fields: Any) -> None:
    """Choose the form of `kind`, fill `fields` (selects by value) and submit it."""
    await page.locator("#carbon-kind").select_option(kind)
    form = page.locator(f"#carbon-form-{kind}")
    await expect(form).to_be_visible()
    for name, value in fields.items():
        box = form.locator(f'[name="{name}"]')
        if await box.evaluate("(n) => n.tagName") == "SELECT":
            await box.select_option(str(value))
        else:
            await box.fill(str(value))
    await page.locator(f"#carbon-{kind}-submit").click()


async def entered(page: Page, kind: str, entry_id: int) -> None:
    msg = page.locator(f"#carbon-{kind}-msg")
    await expect(msg).to_have_text(f"已记录 entered #{entry_id}")
    await expect(msg).to_have_class("status")
    await expect(page.locator("#carbon-entries-count")).to_have_text(str(entry_id))


async def figure(page: Page, field: str) -> str:
    return await page.locator(f'#carbon-figures [data-field="{field}"]').inner_text()


async def no_sideways_scroll(page: Page, what: str) -> None:
    scroll, client = await page.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert scroll <= client, f"{what} scrolls sideways: {scroll} > {client}"


async def test_engineer_enters_trades_and_sees_the_worked_position(
        browser: Browser, room: AssetRoom) -> None:  # noqa: F811
    year = this_year()
    page = await _page(browser, room, "engineer")
    await expect(page.locator("#carbon-forms")).to_be_visible()
    await expect(page.locator("#carbon-role")).to_be_hidden()
    await expect(page.locator("#allowance-year")).to_have_value(str(year))
    await expect(page.locator("#carbon-status")).to_contain_text(f"{year}")
    await expect(page.locator(".carbon-tz").first).to_have_text("Asia/Shanghai")
    # Nothing held yet; the live emissions are the three stored days, 525 t.
    await expect(page.locator('#carbon-figures [data-field="allowances_t"]')).to_have_text(
        "0.0t")
    await expect(page.locator('#carbon-figures [data-field="emissions_t"]')).to_have_text(
        "525.0t")
    await expect(page.locator('#carbon-figures [data-sub="emissions_t"]')).to_contain_text(
        "实时")

    await enter(page, "allocation", year=year, instrument="national_allowance",
                side="final", quantity_t=10000, document="MEE-ALLOC-1")
    await entered(page, "allocation", 1)
    await enter(page, "trade", year=year, instrument="national_allowance", side="buy",
                quantity_t=2000, price_cny_t=60, counterparty="上海环境能源交易所 SEEE")
    await entered(page, "trade", 2)
    await enter(page, "trade", year=year, instrument="national_allowance", side="buy",
                quantity_t=1000, price_cny_t=70, counterparty="SEEE")
    await entered(page, "trade", 3)
    await enter(page, "trade", year=year, instrument="national_allowance", side="sell",
                quantity_t=1500, price_cny_t=80, counterparty="Buyer Co")
    await entered(page, "trade", 4)
    await enter(page, "acquisition", year=year, instrument="ccer", quantity_t=800,
                price_cny_t=30, vintage=year - 1, counterparty="CCER seller")
    await entered(page, "acquisition", 5)

    # A sale of more than is held: 10 000 + 2 000 + 1 000 − 1 500 = 11 500 t held.
    await enter(page, "trade", year=year, instrument="national_allowance", side="sell",
                quantity_t=20000, price_cny_t=80)
    msg = page.locator("#carbon-trade-msg")
    await expect(msg).to_contain_text(
        f"trade: quantity_t: sale of 20000 t is more than the 11500 t of national_allowance "
        f"held for {year}")
    await expect(msg).to_have_class("status bad")
    assert len(room.assets.entries()) == 5

    await enter(page, "verified", year=year, quantity_t=13000, document="VER-1")
    await entered(page, "verified", 6)

    # Worked example. Allowances held 10 000 + 2 000 + 1 000 − 1 500 = 11 500 t; CCER held
    # 800 t, of which 5 % · 13 000 = 650 t count; 11 500 + 650 − 13 000 = −850 t: a deficit
    # of 850 t. Latest price: the last allowance trade, the sale at 80 CNY/t (no price
    # entry): closing costs 850 · 80 = 68 000 CNY; the allowances are worth 11 500 · 80 =
    # 920 000 CNY. Verified emissions: the year-end figure is the verified 13 000 t.
    await expect(page.locator("#carbon-status")).to_contain_text("按核查排放量")
    fig = page.locator("#carbon-figures")
    await expect(fig.locator('[data-field="emissions_t"]')).to_have_text("13,000.0t")
    await expect(fig.locator('[data-sub="emissions_t"]')).to_contain_text("核查")
    await expect(fig.locator('[data-field="allowances_t"]')).to_have_text("11,500.0t")
    await expect(fig.locator('[data-field="offsets_held_t"]')).to_have_text("800.0t")
    await expect(fig.locator('[data-field="offsets_eligible_t"]')).to_have_text("650.0t")
    await expect(fig.locator('[data-sub="offsets_eligible_t"]')).to_have_text(
        "上限 limit 5.0 %")
    await expect(fig.locator('[data-field="deficit_t"]')).to_have_text("850.0t")
    await expect(fig.locator('[data-field="deficit_t"]')).to_have_class("bad")
    await expect(fig.locator('[data-field="surplus_t"]')).to_have_count(0)
    await expect(fig.locator('[data-field="deficit_cost_cny"]')).to_have_text("68,000CNY")
    await expect(fig.locator('[data-field="price_cny_t"]')).to_have_text("80.00CNY/t")
    await expect(fig.locator('[data-field="holdings_value_cny"]')).to_have_text("920,000CNY")
    await expect(fig.locator('[data-field="forecast_year_end_t"]')).to_have_text("13,000t")
    await expect(fig.locator('[data-field="forecast_deficit_t"]')).to_have_text("850t")
    # Deadline 31 December of the next year, in whole plant-local days from today.
    today = datetime.now(UTC).astimezone(ZONE).date()
    days = (date(year + 1, 12, 31) - today).days
    await expect(fig.locator('[data-field="days_to_deadline_d"]')).to_have_text(f"{days:,}d")
    await expect(fig.locator('[data-sub="days_to_deadline_d"]')).to_have_text(
        f"{year + 1}-12-31")
    red = page.locator("#carbon-reductions")
    await expect(red.locator('[data-field="reductions_t"]')).to_have_text("0.0t CO₂")
    await expect(red.locator('[data-field="net_emissions_t"]')).to_have_text("13,000.0t")
    await expect(page.locator("#carbon-position-panel .tag-note")).to_contain_text(
        "不用于履约")

    # Holdings per instrument.
    nat = page.locator('#carbon-holdings-table tr[data-instrument="national_allowance"]')
    for field, text in (("allocated_t", "10,000.0"), ("bought_t", "3,000.0"),
                        ("sold_t", "1,500.0"), ("held_t", "11,500.0")):
        await expect(nat.locator(f'[data-field="{field}"]')).to_have_text(text)
    ccer = page.locator('#carbon-holdings-table tr[data-instrument="ccer"]')
    await expect(ccer.locator('[data-field="held_t"]')).to_have_text("800.0")

    # The reversal of the second purchase: refused without a reason, then entered.
    row3 = page.locator('#carbon-entries-table tr[data-entry="3"]')
    await row3.locator("button.reverse").click()
    await expect(page.locator("#carbon-form-reversal")).to_be_visible()
    await expect(page.locator("#carbon-reversal-reverses")).to_have_value("3")
    await page.locator("#carbon-reversal-submit").click()
    rmsg = page.locator("#carbon-reversal-msg")
    await expect(rmsg).to_contain_text("reason: String should have at least 1 character")
    await expect(rmsg).to_have_class("status bad")
    await page.locator("#carbon-reversal-reverses").fill("3")
    await page.locator("#carbon-reversal-reason").fill("重复录入 entered twice")
    await page.locator("#carbon-reversal-submit").click()
    await entered(page, "reversal", 7)
    # 11 500 − 1 000 = 10 500 t held: 10 500 + 650 − 13 000 = −1 850 t, × 80 = 148 000 CNY;
    # worth 10 500 · 80 = 840 000 CNY.
    await expect(fig.locator('[data-field="allowances_t"]')).to_have_text("10,500.0t")
    await expect(fig.locator('[data-field="deficit_t"]')).to_have_text("1,850.0t")
    await expect(fig.locator('[data-field="deficit_cost_cny"]')).to_have_text("148,000CNY")
    await expect(fig.locator('[data-field="holdings_value_cny"]')).to_have_text("840,000CNY")
    await expect(nat.locator('[data-field="bought_t"]')).to_have_text("2,000.0")

    # A reduction: 1 000 MWh of renewable generation at the grid factor 0.5703 t/MWh avoids
    # 570.3 t: net emissions 13 000 − 570.3 = 12 429.7 t, kept apart; the deficit stays.
    await enter(page, "reduction", year=year, side="renewable_mwh", quantity_t=1000)
    await entered(page, "reduction", 8)
    await expect(red.locator('[data-field="renewable_avoided_t"]')).to_have_text("570.3t CO₂")
    await expect(red.locator('[data-sub="renewable_avoided_t"]')).to_have_text("1,000.0 MWh")
    await expect(red.locator('[data-field="reductions_t"]')).to_have_text("570.3t CO₂")
    await expect(red.locator('[data-field="net_emissions_t"]')).to_have_text("12,429.7t")
    await expect(fig.locator('[data-field="emissions_t"]')).to_have_text("13,000.0t")
    await expect(fig.locator('[data-field="deficit_t"]')).to_have_text("1,850.0t")

    # The ledger: newest first; #3 marked reversed by #7 and has no reverse button now.
    rows = page.locator("#carbon-entries-table tbody tr")
    await expect(rows).to_have_count(8)
    ids = await rows.evaluate_all("(rs) => rs.map((r) => r.dataset.entry)")
    assert ids == ["8", "7", "6", "5", "4", "3", "2", "1"]
    row8 = page.locator('#carbon-entries-table tr[data-entry="8"]')
    await expect(row8.locator('[data-field="quantity_t"]')).to_have_text("1,000.0MWh")
    await expect(row3).to_have_class("reversed")
    await expect(row3.locator('[data-field="reversed_by"]')).to_have_text(
        "已冲销 #7 reversed by #7")
    await expect(row3.locator("button.reverse")).to_have_count(0)
    row7 = page.locator('#carbon-entries-table tr[data-entry="7"]')
    await expect(row7.locator('[data-field="reason"]')).to_have_text("重复录入 entered twice")
    await expect(row7.locator('[data-field="detail"]')).to_contain_text("#3")
    row2 = page.locator('#carbon-entries-table tr[data-entry="2"]')
    await expect(row2.locator('[data-field="detail"]')).to_contain_text(
        "上海环境能源交易所 SEEE")
    await expect(row2.locator('[data-field="price_cny_t"]')).to_have_text("60.00")
    await expect(row2.locator('[data-field="user"]')).to_have_text("engineer")

    # The monthly trend: January's stored days 100 + 250 + 175 = 525 t, none after; the
    # year's allowances (10 500 t) prorated by calendar days, January 10 500 · 31 / 365
    # (366 in a leap year) = 891.8 t; the gap is prorated − cumulative: 366.8 t in January,
    # 10 500 − 525 = 9 975 t in December.
    n_days = (date(year + 1, 1, 1) - date(year, 1, 1)).days
    jan_t = 10500 * 31 / n_days
    jan = page.locator('#carbon-trend-table tr[data-month="1"]')
    await expect(jan.locator('[data-field="emissions_t"]')).to_have_text("525.0")
    await expect(jan.locator('[data-field="allowance_prorated_t"]')).to_have_text(
        f"{jan_t:,.1f}")
    await expect(jan.locator('[data-field="gap_t"]')).to_have_text(f"{jan_t - 525:,.1f}")
    # January's output 3 · 14 400 MWh: 525 / 43 200 = 0.012153 t/MWh, 0.000153 over the
    # plant's target of 0.012 t/MWh; February has no output, so no intensity.
    await expect(jan.locator('[data-field="output_mwh"]')).to_have_text("43,200.0")
    await expect(jan.locator('[data-field="intensity_t_mwh"]')).to_have_text("0.0122")
    await expect(jan.locator('[data-field="intensity_target_t_mwh"]')).to_have_text("0.0120")
    await expect(jan.locator('[data-field="intensity_gap_t_mwh"]')).to_have_text("0.0002")
    await expect(jan.locator('[data-field="intensity_gap_t_mwh"]')).to_have_class("num bad")
    feb = page.locator('#carbon-trend-table tr[data-month="2"]')
    await expect(feb.locator('[data-field="intensity_t_mwh"]')).to_have_text("—")
    dec = page.locator('#carbon-trend-table tr[data-month="12"]')
    await expect(dec.locator('[data-field="emissions_t"]')).to_have_text("0.0")
    await expect(dec.locator('[data-field="cumulative_t"]')).to_have_text("525.0")
    await expect(dec.locator('[data-field="allowance_prorated_t"]')).to_have_text("10,500.0")
    await expect(dec.locator('[data-field="gap_t"]')).to_have_text("9,975.0")
    await page.wait_for_function("!!window.hmi.charts.carbonTrend")
    cols = await page.evaluate("window.hmi.charts.carbonTrend.data.map((s) => Array.from(s))")
    assert cols[0] == list(range(1, 13))
    assert cols[1] == [525.0] + [0.0] * 11 and cols[2] == [525.0] * 12
    assert cols[3][0] == pytest.approx(jan_t) and cols[3][11] == pytest.approx(10500.0)
    assert cols[4][0] == pytest.approx(jan_t - 525) and cols[4][11] == pytest.approx(9975.0)

    # The server kept it all, audited; the chain verifies.
    kinds = [e["kind"] for e in room.assets.entries()]
    assert kinds == ["allocation", "trade", "trade", "trade", "acquisition", "verified",
                     "reversal", "reduction"]
    assert verify(room.audit_path).ok
    # The export link gives the CSV.
    href = await page.locator("#carbon-csv-export").get_attribute("href")
    assert href == "/api/v1/carbon/entries.csv"
    async with aiohttp.ClientSession() as http, http.get(room.url + href.lstrip("/")) as r:
        assert r.status == 200
        assert (await r.text()).splitlines()[0].startswith("id,kind,t,year,instrument")

    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / "allowance-carbon-1920x1080.png"), full_page=True)
    await no_sideways_scroll(page, "1920x1080")
    assert page.errors == []  # type: ignore[attr-defined]
    await page.context.close()

    narrow = await _page(browser, room, "engineer", 768, 1024)
    await expect(narrow.locator('#carbon-figures [data-field="deficit_t"]')).to_have_text(
        "1,850.0t")
    await expect(narrow.locator("#carbon-entries-table tbody tr")).to_have_count(8)
    await narrow.screenshot(path=str(SHOTS / "allowance-carbon-768x1024.png"), full_page=True)
    await no_sideways_scroll(narrow, "768x1024")
    assert narrow.errors == []  # type: ignore[attr-defined]
    await narrow.context.close()


async def test_csv_import_and_a_viewer_sees_no_forms(
        browser: Browser, room: AssetRoom, tmp_path: Path) -> None:  # noqa: F811
    year = this_year()
    page = await _page(browser, room, "engineer")
    header = "id,kind,t,year,instrument,quantity_t,side,price_cny_t,counterparty,vintage," \
             "reverses,document,user,reason"
    good = tmp_path / "good.csv"
    good.write_text(f"{header}\n,allocation,,{year},national_allowance,5000,pre,,,,,A-1,,\n"
                    f",price,,{year},national_allowance,,,92.5,,,,P-1,,\n", encoding="utf-8")
    await page.locator("#carbon-csv-file").set_input_files(str(good))
    await page.locator("#carbon-csv-submit").click()
    await expect(page.locator("#carbon-csv-msg")).to_have_text("已导入 imported 2 条记录 entries")
    # 5 000 t held at 92.50 CNY/t: worth 462 500 CNY.
    fig = page.locator("#carbon-figures")
    await expect(fig.locator('[data-field="allowances_t"]')).to_have_text("5,000.0t")
    await expect(fig.locator('[data-field="holdings_value_cny"]')).to_have_text("462,500CNY")
    bad = tmp_path / "bad.csv"
    bad.write_text(f"{header}\n,trade,,{year},national_allowance,9000,sell,80,,,,,,\n",
                   encoding="utf-8")
    await page.locator("#carbon-csv-file").set_input_files(str(bad))
    await page.locator("#carbon-csv-submit").click()
    cmsg = page.locator("#carbon-csv-msg")
    await expect(cmsg).to_contain_text("导入被拒绝 import refused: line 2:")
    await expect(cmsg).to_contain_text("more than the 5000 t of national_allowance")
    await expect(cmsg).to_have_class("status bad")
    assert len(room.assets.entries()) == 2
    await page.context.close()

    viewer = await _page(browser, room, "viewer")
    await expect(viewer.locator("#carbon-forms")).to_be_hidden()
    await expect(viewer.locator("#carbon-role")).to_be_visible()
    await expect(viewer.locator('#carbon-figures [data-field="allowances_t"]')).to_have_text(
        "5,000.0t")
    await expect(viewer.locator("#carbon-entries-table tbody tr")).to_have_count(2)
    await expect(viewer.locator("#carbon-entries-table button.reverse")).to_have_count(0)
    sub = viewer.locator('#carbon-figures [data-sub="offsets_eligible_t"]')
    await expect(sub).to_have_text("上限 limit 5.0 %")
    await viewer.locator("#lang-switch").click()  # English: the figures drawn again
    await expect(sub).to_have_text("limit 5.0 %")
    assert viewer.errors == []  # type: ignore[attr-defined]
    await viewer.context.close()
