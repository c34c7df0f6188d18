"""The HMI's boundaries view in headless Chromium: the site → process → facility tree of a
chosen day with CO2, CO2e and shares from a real web sink over a real historian (the stored
days of tests/web/test_boundaries_api.py), the month with a facility missing a day marked
incomplete without shares, both languages. Screenshots go to var/screenshots/."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, expect

from tests.web.test_boundaries_api import Room
from tests.web.test_hmi import browser  # noqa: F401  (the fixture)

SHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"


@pytest.fixture
async def room(port: int, tmp_path: Path) -> AsyncIterator[Room]:
    async with Room(port, tmp_path) as r:
        yield r


def cell(page: Page, node: str, field: str) -> object:
    return page.locator(f'#bnd-table tr[data-node="{node}"] [data-field="{field}"]')


async def test_the_tree_of_a_day_and_of_a_month(browser: Browser, room: Room  # noqa: F811
                                                ) -> None:
    context = await browser.new_context(viewport={"width": 1600, "height": 900},
                                        locale="zh-CN")
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        await page.goto(room.base.removesuffix("/api/v1") + "/#/boundaries")
        await expect(page.locator("#conn")).to_have_attribute("data-state", "connected")
        await expect(page.locator('#nav a[data-view="boundaries"]')).to_have_class("active")
        # Without a day the server shows yesterday (plant time) and the page says which.
        await expect(page.locator("#bnd-day")).to_have_value(re.compile(r"^\d{4}-\d{2}-\d{2}$"))

        await page.locator("#bnd-day").fill("2026-11-21")
        await page.locator("#bnd-load").click()
        await expect(page.locator("#bnd-period")).to_have_text("2026-11-21 (Asia/Shanghai)")
        # 21 November, worked by hand: BF1 300, BF2 100, G1 600 t; iron 400 t = 40 % of the
        # 1000 t site, BF1 300/400 = 75 % of iron and 30 % of the site, G1 60 %.
        rows = page.locator("#bnd-table tbody tr")
        await expect(rows).to_have_count(6)  # site, iron, BF1, BF2, power, G1: tree order
        assert [await r.get_attribute("data-node") for r in await rows.all()] == [
            "testsite", "iron", "BF1", "BF2", "power", "G1"]
        await expect(cell(page, "testsite", "co2_t")).to_have_text("1,000.000")
        await expect(cell(page, "iron", "co2_t")).to_have_text("400.000")
        await expect(cell(page, "iron", "co2e_t")).to_have_text("400.000")
        await expect(cell(page, "iron", "share_of_site_pct")).to_have_text("40.00 %")
        await expect(cell(page, "BF1", "share_of_parent_pct")).to_have_text("75.00 %")
        await expect(cell(page, "BF1", "share_of_site_pct")).to_have_text("30.00 %")
        await expect(cell(page, "G1", "share_of_site_pct")).to_have_text("60.00 %")
        await expect(cell(page, "iron", "children")).to_have_text("2 / 0")
        await expect(cell(page, "iron", "state")).to_contain_text("完整有效")
        width = await page.locator('#bnd-table tr[data-node="iron"] .bnd-bar i').evaluate(
            "(n) => n.style.width")
        assert width == "40%"
        await expect(page.locator("#bnd-status")).not_to_have_class(re.compile(r"\bbad\b"))
        SHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SHOTS / "boundaries-day-1600x900.png"), full_page=True)

        # The month: BF2 has no value on 22 November. iron = 300 + 200 + 100 = 600 t of what
        # is known, incomplete, no shares; power 1100 t complete, G1 100 % of it.
        await page.locator("#bnd-level").select_option("month")
        await expect(page.locator("#bnd-period")).to_have_text("2026-11 (Asia/Shanghai)")
        await expect(cell(page, "iron", "co2_t")).to_have_text("600.000")
        await expect(page.locator('#bnd-table tr[data-node="iron"]')).to_have_attribute(
            "data-complete", "false")
        await expect(cell(page, "iron", "state")).to_contain_text("不完整")
        await expect(cell(page, "iron", "state")).to_contain_text("BF2")
        await expect(cell(page, "iron", "share_of_site_pct")).to_have_text("—")
        await expect(cell(page, "G1", "share_of_parent_pct")).to_have_text("100.00 %")
        await expect(cell(page, "iron", "children")).to_have_text("1 / 1")
        await expect(page.locator("#bnd-status")).to_have_class(re.compile(r"\bbad\b"))
        await expect(page.locator("#bnd-status")).to_contain_text("已存 stored 2 / ")

        await page.locator("#lang-switch").click()
        await expect(page.locator("#bnd-table thead")).to_contain_text("Share of site")
        # The status line is built again in English alone.
        await expect(page.locator("#bnd-status")).to_have_text(re.compile(r"^stored 2 / \d+ days"))
        await page.screenshot(path=str(SHOTS / "boundaries-month-en-1600x900.png"),
                              full_page=True)
        # A tablet: the tree's table scrolls within its panel, the page not sideways.
        await page.set_viewport_size({"width": 768, "height": 1024})
        await expect(cell(page, "iron", "co2_t")).to_have_text("600.000")
        scroll, client = await page.evaluate(
            "[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        assert scroll <= client, f"the boundaries view scrolls sideways: {scroll} > {client}"
        await page.screenshot(path=str(SHOTS / "boundaries-month-en-768x1024.png"),
                              full_page=True)
        assert errors == []
    finally:
        await context.close()
